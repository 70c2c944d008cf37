//! Relay checks (RFC 4380 §5.4): TEREDO.md (b) 16–20 and the checks beside them. The tool
//! plays a Teredo client X and X's server SX (on its own address, port 3544, so it sees the
//! relay's indirect bubbles) and, with `--native-local`, the native host (`lab.rs`).
//!
//! R16 first contact (`deliver.rs`), R17 pacing (`pacing.rs`), R18 egress filters
//! (`egress.rs`), R19 and R23 ingress anti-spoofing (`ingress.rs`), R20 staleness
//! (`stale.rs`), R21 queue (`queue.rs`), R22 malformed datagrams (`malformed.rs`).

mod deliver;
mod egress;
pub mod icmp;
mod ingress;
pub mod lab;
mod malformed;
mod pacing;
mod queue;
mod stale;

use super::spec::Check;

/// The relay checks, in id order.
pub fn checks() -> Vec<Check> {
    let mut all = Vec::new();
    for group in [
        deliver::CHECKS,
        pacing::CHECKS,
        egress::CHECKS,
        ingress::CHECKS,
        stale::CHECKS,
        queue::CHECKS,
        malformed::CHECKS,
    ] {
        all.extend_from_slice(group);
    }
    all.sort_by_key(|c| c.spec.id);
    all
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique_and_relay() {
        let all = super::checks();
        let mut ids: Vec<_> = all.iter().map(|c| c.spec.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        assert!(all
            .iter()
            .all(|c| c.spec.role == crate::conform::Role::Relay && c.spec.id.starts_with('R')));
    }
}
