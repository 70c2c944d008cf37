//! The NAT's UPnP Internet Gateway Device (UPnP WANIPConnection, as RFC 6081 §5.3.3 uses
//! it): a simulated control channel on which an inside host asks for a port mapping
//! (`AddPortMapping`), learns the external address (`GetExternalIPAddress`) and gives the
//! mapping back (`DeletePortMapping`). Off unless [`NatConfig::upnp`] (spec key `upnp`).
//!
//! A lease is a *static inbound* mapping: a datagram to its external endpoint reaches the
//! internal endpoint whatever the filtering says (RFC 6081 §3.2: "independent of the source
//! of the packets"). It does not change how outbound datagrams are translated, with one
//! exception the RFC relies on ("the Teredo server reflects back the reserved mapped
//! address/port"): the holder's first dynamic mapping, when it has none on the leased port,
//! is created *on* the leased port. Later sessions of a symmetric NAT still get fresh
//! ports ("continues to function as a symmetric NAT in this respect"). Dynamic mappings of
//! other hosts never take a leased port.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::leases::Lease;
use crate::nat::Nat;
use crate::ports::paired_index;
use crate::table::passed;
#[cfg(doc)]
use crate::NatConfig;
use crate::Pooling;

/// Leases an IGD holds at most (a home router's port-forwarding table is small).
pub const MAX_LEASES: usize = 32;

/// Why a UPnP request failed (the UPnP error codes where one exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum UpnpError {
    /// The NAT has no IGD (UPnP off): discovery finds nothing.
    #[error("no UPnP Internet Gateway Device")]
    NoIgd,
    /// Error 718 ConflictInMappingEntry: the external port is leased to, or dynamically
    /// mapped for, another internal endpoint.
    #[error("external port already mapped to another client (718)")]
    Conflict,
    /// Error 728 NoPortMapsAvailable: the lease table is full.
    #[error("no port mappings available (728)")]
    TableFull,
    /// Error 714 NoSuchEntryInArray: nothing to delete.
    #[error("no such port mapping (714)")]
    NoSuchEntry,
    /// Error 402 InvalidArgs (external port 0, internal port 0).
    #[error("invalid arguments (402)")]
    InvalidArgs,
}

impl Nat {
    /// UPnP `AddPortMapping` (NewRemoteHost "", NewProtocol UDP, NewEnabled true): maps
    /// `external_port` on this host's external address to `internal` for `lease`
    /// (`Duration::ZERO` = until deleted). Re-adding one's own mapping renews it. Returns
    /// the external endpoint. Every request is counted (`upnp_requests`), refusals too
    /// (`upnp_refused`).
    pub fn add_port_mapping(
        &mut self,
        now: Instant,
        external_port: u16,
        internal: SocketAddrV4,
        lease: Duration,
    ) -> Result<SocketAddrV4, UpnpError> {
        self.counters.upnp_requests += 1;
        let r = self.try_add(now, external_port, internal, lease);
        match r {
            Ok(external) => {
                self.counters.upnp_mappings_added += 1;
                tracing::debug!(%internal, %external, ?lease, "upnp port mapping added");
            }
            Err(_) => self.counters.upnp_refused += 1,
        }
        r
    }

    fn try_add(
        &mut self,
        now: Instant,
        external_port: u16,
        internal: SocketAddrV4,
        lease: Duration,
    ) -> Result<SocketAddrV4, UpnpError> {
        if !self.config.upnp {
            return Err(UpnpError::NoIgd);
        }
        if external_port == 0 || internal.port() == 0 {
            return Err(UpnpError::InvalidArgs);
        }
        self.expire(now);
        self.igd.prune(now);
        let external = SocketAddrV4::new(self.external_ip_for(*internal.ip()), external_port);
        if self.igd.reserved_for_other(external, internal, now) {
            return Err(UpnpError::Conflict);
        }
        if let Some(m) = self.table.get_mut(external) {
            if m.key.internal != internal {
                return Err(UpnpError::Conflict);
            }
        }
        let expires = if lease.is_zero() {
            None
        } else {
            now.checked_add(lease)
        };
        let entry = Lease {
            external,
            internal,
            expires,
        };
        if let Some(l) = self.igd.leases.iter_mut().find(|l| l.external == external) {
            *l = entry;
        } else if self.igd.leases.len() >= MAX_LEASES {
            return Err(UpnpError::TableFull);
        } else {
            self.igd.leases.push(entry);
        }
        Ok(external)
    }

    /// UPnP `GetExternalIPAddress`: the external address the IGD reports to `internal`
    /// (paired pooling's address for it, else the first).
    pub fn get_external_ip_address(&mut self, internal: Ipv4Addr) -> Result<Ipv4Addr, UpnpError> {
        self.counters.upnp_requests += 1;
        if !self.config.upnp || self.config.external_ips.is_empty() {
            self.counters.upnp_refused += 1;
            return Err(UpnpError::NoIgd);
        }
        Ok(self.external_ip_for(internal))
    }

    /// UPnP `DeletePortMapping` of `external_port` (RFC 6081 §5.3.5.1, at shutdown).
    pub fn delete_port_mapping(
        &mut self,
        now: Instant,
        external_port: u16,
        internal: Ipv4Addr,
    ) -> Result<(), UpnpError> {
        self.counters.upnp_requests += 1;
        if !self.config.upnp {
            self.counters.upnp_refused += 1;
            return Err(UpnpError::NoIgd);
        }
        self.igd.prune(now);
        let external = SocketAddrV4::new(self.external_ip_for(internal), external_port);
        let before = self.igd.leases.len();
        self.igd.leases.retain(|l| l.external != external);
        if self.igd.leases.len() == before {
            self.counters.upnp_refused += 1;
            return Err(UpnpError::NoSuchEntry);
        }
        Ok(())
    }

    /// The live UPnP leases at `now`.
    pub fn leases(&self, now: Instant) -> Vec<Lease> {
        let mut v = self.igd.leases.clone();
        v.retain(|l| !passed(l.expires, now));
        v
    }

    fn external_ip_for(&self, internal: Ipv4Addr) -> Ipv4Addr {
        let ips = &self.config.external_ips;
        let idx = match self.config.pooling {
            Pooling::Paired if !ips.is_empty() => {
                paired_index(self.config.seed, internal, ips.len())
            }
            _ => 0,
        };
        ips.get(idx).copied().unwrap_or(Ipv4Addr::UNSPECIFIED)
    }
}
