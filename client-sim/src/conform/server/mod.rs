//! Server checks (RFC 4380 §5.3, RFC 5991): TEREDO.md (b) 1–15 and the checks beside them.

mod rs;

use super::spec::Check;

/// The server checks, in id order.
pub fn checks() -> Vec<Check> {
    let mut all = Vec::new();
    all.extend_from_slice(rs::CHECKS);
    all
}
