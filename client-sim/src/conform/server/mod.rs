//! Server checks (RFC 4380 §5.3, RFC 5991): TEREDO.md (b) 1–15 and the checks beside them.
//!
//! * `rs`: which address answers an RS, RS variants (S01–S03); `nonce` (S04);
//! * `bad_input`: non-global sources, malformed and hostile input (S05, S06, S24, S25);
//! * `forwarding`: relaying between clients (S07–S11); `native` (S13);
//! * `filters`: what is relayed at all, the loop guard (S12, S14, S15);
//! * `profiles`: whether each client family qualifies (S21–S23);
//! * `common`: qualified clients of the tool, skip and wording helpers.

mod bad_input;
mod common;
mod filters;
mod forwarding;
mod native;
mod nonce;
mod profiles;
mod rs;

use super::spec::Check;

/// The server checks, in id order.
pub fn checks() -> Vec<Check> {
    let mut all = Vec::new();
    for group in [
        rs::CHECKS,
        nonce::CHECKS,
        bad_input::CHECKS,
        forwarding::CHECKS,
        filters::CHECKS,
        native::CHECKS,
        profiles::CHECKS,
        bad_input::EXTRA,
    ] {
        all.extend_from_slice(group);
    }
    all.sort_by_key(|c| c.spec.id);
    all
}
