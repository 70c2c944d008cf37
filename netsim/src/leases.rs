//! The lease table of a NAT's UPnP gateway ([`crate::Nat::add_port_mapping`] and its
//! siblings fill it): which external endpoint forwards to which internal one, until when.

use std::net::SocketAddrV4;
use std::time::Instant;

use crate::table::{passed, Deadline};

/// One UPnP port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The NAT's external endpoint.
    pub external: SocketAddrV4,
    /// Where datagrams to it go.
    pub internal: SocketAddrV4,
    /// When it lapses; `None` for a lease duration of 0 ("infinite", as RFC 6081 asks for).
    pub expires: Deadline,
}

/// The leases of one NAT.
#[derive(Debug, Clone, Default)]
pub(crate) struct Igd {
    pub(crate) leases: Vec<Lease>,
}

impl Igd {
    /// Drops the leases that lapsed by `now`.
    pub(crate) fn prune(&mut self, now: Instant) {
        self.leases.retain(|l| !passed(l.expires, now));
    }

    /// The live lease on `external`, if any.
    pub(crate) fn lease_on(&self, external: SocketAddrV4, now: Instant) -> Option<&Lease> {
        self.leases
            .iter()
            .find(|l| l.external == external && !passed(l.expires, now))
    }

    /// The live lease held by `internal`, if any.
    pub(crate) fn lease_of(&self, internal: SocketAddrV4, now: Instant) -> Option<&Lease> {
        self.leases
            .iter()
            .find(|l| l.internal == internal && !passed(l.expires, now))
    }

    /// Whether `external` is leased (live at `now`) to someone other than `internal`.
    pub(crate) fn reserved_for_other(
        &self,
        external: SocketAddrV4,
        internal: SocketAddrV4,
        now: Instant,
    ) -> bool {
        self.lease_on(external, now)
            .is_some_and(|l| l.internal != internal)
    }

    /// The leased external endpoints not held by `internal` (dynamic allocation skips them).
    pub(crate) fn reserved_ports(&self, internal: SocketAddrV4) -> Vec<SocketAddrV4> {
        self.leases
            .iter()
            .filter(|l| l.internal != internal)
            .map(|l| l.external)
            .collect()
    }

    pub(crate) fn clear(&mut self) {
        self.leases.clear();
    }
}
