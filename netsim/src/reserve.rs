//! Port reservations left by refused inbound datagrams: Linux conntrack's trap behind a bare
//! masquerade ([`NatConfig::unsolicited_reserve`](crate::NatConfig::unsolicited_reserve)).
//!
//! Linux confirms a conntrack entry for an inbound UDP datagram that matches no flow and is
//! delivered to the router itself (no firewall drops it first): `[UNREPLIED] src=<remote>
//! dst=<wan>:<port>`, 30 s (`nf_conntrack_udp_timeout`), renewed by every further such
//! datagram. While it lives, no outgoing flow may take the tuple `<wan>:<port> → <remote>`
//! (its reply tuple would clash), so masquerade gives a LAN host that now sends to `<remote>`
//! another external port. Here: a set of (external endpoint, remote endpoint) pairs with
//! deadlines, bounded like the mapping table.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddrV4;
use std::time::Instant;

/// A reserved pair: the NAT's external endpoint and the remote that may not be sent to from it.
type Pair = (SocketAddrV4, SocketAddrV4);

/// The live reservations of one NAT.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reservations {
    deadline: HashMap<Pair, Instant>,
    /// Expiry order, for deterministic expiry and eviction of the oldest at the cap.
    order: BTreeSet<(Instant, Pair)>,
}

impl Reservations {
    /// Reserves `external` toward `remote` until `until` (renewing an existing reservation),
    /// forgetting the reservation that lapses first when `cap` are already held.
    pub(crate) fn reserve(
        &mut self,
        external: SocketAddrV4,
        remote: SocketAddrV4,
        until: Instant,
        cap: usize,
    ) {
        let pair = (external, remote);
        if let Some(old) = self.deadline.insert(pair, until) {
            self.order.remove(&(old, pair));
        } else if self.deadline.len() > cap {
            if let Some(first) = self.order.pop_first() {
                self.deadline.remove(&first.1);
            }
        }
        self.order.insert((until, pair));
    }

    /// Whether `external` is reserved toward `remote` at `now`.
    pub(crate) fn is_reserved(
        &self,
        external: SocketAddrV4,
        remote: SocketAddrV4,
        now: Instant,
    ) -> bool {
        self.deadline
            .get(&(external, remote))
            .is_some_and(|d| now < *d)
    }

    /// Forgets every reservation that has lapsed at `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(d, pair)) = self.order.first() {
            if d > now {
                break;
            }
            self.order.pop_first();
            self.deadline.remove(&pair);
        }
    }

    /// Live (or lapsed but not yet expired) reservations.
    pub(crate) fn len(&self) -> usize {
        self.deadline.len()
    }

    /// Forgets everything (a NAT reboot).
    pub(crate) fn clear(&mut self) {
        self.deadline.clear();
        self.order.clear();
    }

    /// The two indexes agree and hold at most `cap` entries.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn check_invariants(&self, cap: usize) {
        assert!(self.deadline.len() <= cap.max(1));
        assert_eq!(self.deadline.len(), self.order.len());
        for (d, pair) in &self.order {
            assert_eq!(self.deadline.get(pair), Some(d));
        }
    }
}
