//! Relay checks (RFC 4380 §5.4): TEREDO.md (b) 16–20 and the checks beside them. The tool
//! plays a Teredo client X and X's server SX (on its own address, port 3544, so it sees the
//! relay's indirect bubbles) and, with `--native-local`, the native host ([`lab`]).

mod deliver;
pub mod lab;

use super::spec::Check;

/// The relay checks, in id order.
pub fn checks() -> Vec<Check> {
    let mut all = Vec::new();
    all.extend_from_slice(deliver::CHECKS);
    all.sort_by_key(|c| c.spec.id);
    all
}
