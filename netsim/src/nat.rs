//! [`Nat`], the state machine of one NAT device, and what its two entry points return.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::leases::Igd;
use crate::loss::lose;
use crate::ports::Ports;
use crate::reserve::Reservations;
use crate::table::{passed, Dest, MappingKey, Table};
use crate::{
    FilteringBehavior, MappingBehavior, NatConfig, NatConfigError, NatCounters, NatDrop, Pooling,
};

/// A host's answer when [`Nat::outbound_checked`] offers it the external endpoint of a new
/// mapping: whether that IP:port can really carry the mapping (a driver with one real socket
/// per mapping binds it). The model stays in charge of the choice; the host only vetoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortCheck {
    /// The host holds the endpoint now: the mapping goes there.
    Usable,
    /// Something else holds it (another NAT's mapping on a shared address, `EADDRINUSE`):
    /// the allocator goes on exactly as for a port one of its own mappings holds.
    Taken,
    /// The host cannot open anything (e.g. out of descriptors): no mapping, the datagram is
    /// dropped as [`NatDrop::NoPort`].
    Stop,
}

/// An outbound datagram translated for the Internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Translation {
    /// The source the remote sees: the mapping's external IP:port.
    pub external: SocketAddrV4,
    /// Latency to add before delivering it ([`NatConfig::delay`]).
    pub delay: Duration,
}

/// An inbound datagram translated for the inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InboundTranslation {
    /// The internal endpoint to deliver to (the source stays the remote's address).
    pub internal: SocketAddrV4,
    /// Latency to add before delivering it ([`NatConfig::delay`]).
    pub delay: Duration,
}

/// A datagram from one internal endpoint to one of the NAT's own external endpoints, turned
/// back inside (RFC 4787 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hairpin {
    /// The source the receiver sees: the *sender's* external mapping (REQ-9a, "external source
    /// IP address and port"), so it looks like any datagram from the Internet.
    pub from: SocketAddrV4,
    /// The internal endpoint behind the destination mapping.
    pub to: SocketAddrV4,
    /// Latency to add before delivering it ([`NatConfig::delay`], once).
    pub delay: Duration,
}

/// What [`Nat::outbound`] did with a datagram. Non-exhaustive: a NAT behaviour may add an
/// outcome (callers outside this crate say what an unknown one means to them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outbound {
    /// Send it to the remote, from the translated source.
    Forward(Translation),
    /// The remote was the NAT's own external endpoint: deliver it inside instead.
    Hairpin(Hairpin),
}

impl Outbound {
    /// The latency to add, whichever way the datagram goes.
    pub fn delay(&self) -> Duration {
        match self {
            Self::Forward(t) => t.delay,
            Self::Hairpin(h) => h.delay,
        }
    }
}

/// One simulated NAT device. See the crate docs for the model; all methods are
/// deterministic functions of the config, the seed and the inputs so far.
#[derive(Debug, Clone)]
pub struct Nat {
    pub(crate) config: NatConfig,
    rng: ChaCha8Rng,
    /// The mappings.
    pub(crate) table: Table,
    /// Port allocation state.
    ports: Ports,
    pub(crate) counters: NatCounters,
    /// The UPnP IGD's leases (empty unless [`NatConfig::upnp`]).
    pub(crate) igd: Igd,
    /// Ports reserved by refused inbound datagrams ([`NatConfig::unsolicited_reserve`]).
    reserved: Reservations,
}

impl Nat {
    /// A NAT with an empty table. Never panics, whatever the config: without external
    /// addresses or free ports every new mapping is [`NatDrop::NoPort`], a loss outside
    /// `0.0..=1.0` saturates, and a timeout too large for `Instant` never expires. Use
    /// [`Nat::try_new`] (or [`NatConfig::validate`]) to refuse such configs instead.
    pub fn new(config: NatConfig) -> Self {
        let n = config.external_ips.len();
        let track_endpoints = config.pooling == Pooling::Arbitrary && n >= 2;
        Self {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            table: Table::new(n, track_endpoints),
            ports: Ports::new(&config),
            reserved: Reservations::default(),
            counters: NatCounters::default(),
            igd: Igd::default(),
            config,
        }
    }

    /// [`NatConfig::validate`], then [`Nat::new`].
    pub fn try_new(config: NatConfig) -> Result<Self, NatConfigError> {
        config.validate()?;
        Ok(Self::new(config))
    }

    /// The configuration this NAT runs.
    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    /// Whether `ip` is one of this NAT's external addresses: where a lab routes inbound
    /// datagrams for this NAT, and what [`Nat::outbound`] hairpins.
    pub fn is_external(&self, ip: Ipv4Addr) -> bool {
        self.config.external_ips.contains(&ip)
    }

    /// An outbound datagram from `internal` to `remote` at `now`.
    ///
    /// Finds or creates the mapping the mapping behaviour selects, refreshes it, records
    /// `remote` for filtering, then draws loss. If `remote` is one of the NAT's own external
    /// addresses the datagram is hairpinned instead (see [`Hairpin`]): with hairpinning off it
    /// is dropped as [`NatDrop::HairpinOff`] without creating a mapping; otherwise the
    /// sender's mapping is created/refreshed as for any remote, and the destination mapping's
    /// filtering (and inbound refresh, if configured) applies as for an inbound datagram from
    /// the sender's external endpoint — so hole punching between two clients behind the same
    /// NAT works as it would across NATs.
    pub fn outbound(
        &mut self,
        now: Instant,
        internal: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Result<Outbound, NatDrop> {
        self.outbound_checked(now, internal, remote, &mut |_| PortCheck::Usable)
    }

    /// [`Nat::outbound`], offering the external endpoint of every new mapping to `host`
    /// first, in the order the allocator would try them (see [`PortCheck`]). For a driver whose
    /// mappings are real sockets on an address other NATs share: the model keeps its port
    /// assignment behaviour, and a port the host cannot bind is skipped as one in use. With a
    /// host that always answers [`PortCheck::Usable`] this is [`Nat::outbound`], draw for
    /// draw. `host` is not asked about existing mappings, nor about a UPnP-leased port.
    pub fn outbound_checked(
        &mut self,
        now: Instant,
        internal: SocketAddrV4,
        remote: SocketAddrV4,
        host: &mut dyn FnMut(SocketAddrV4) -> PortCheck,
    ) -> Result<Outbound, NatDrop> {
        if self.is_external(*remote.ip()) {
            return self
                .hairpin(now, internal, remote, host)
                .map(Outbound::Hairpin);
        }
        let external = self.map_outbound(now, internal, remote, host)?;
        if self.lose() {
            return self.reject(NatDrop::Lost);
        }
        self.counters.outbound_translated += 1;
        Ok(Outbound::Forward(Translation {
            external,
            delay: self.delay(),
        }))
    }

    /// An inbound datagram from `remote` to the NAT's `external` endpoint at `now`.
    ///
    /// Draws loss first (the datagram crosses the WAN link before the NAT), then looks the
    /// mapping up by `external` (expired mappings are removed on the spot: [`NatDrop::NoMapping`])
    /// and applies filtering: EIF admits anyone, ADF a remote IP this mapping has sent to, APDF
    /// a remote IP:port it has sent to, each permit lasting `timeout` after the last outbound
    /// datagram to that remote. Refreshes the mapping only with [`NatConfig::inbound_refresh`].
    /// With [`NatConfig::unsolicited_reserve`], a refused datagram (filtered or no mapping)
    /// reserves `external` toward `remote`.
    pub fn inbound(
        &mut self,
        now: Instant,
        external: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Result<InboundTranslation, NatDrop> {
        if self.lose() {
            return self.reject(NatDrop::Lost);
        }
        let internal = match self.deliver(now, external, remote) {
            Ok(internal) => internal,
            Err(e) => {
                self.reserve(now, external, remote);
                return Err(e);
            }
        };
        self.counters.inbound_translated += 1;
        Ok(InboundTranslation {
            internal,
            delay: self.delay(),
        })
    }

    /// Removes every mapping whose timer has run out at `now` (lookups also do this lazily for
    /// the mapping they meet). Call it when [`Nat::poll_timeout`] is reached.
    pub fn expire(&mut self, now: Instant) {
        while let Some((deadline, external)) = self.table.next_expiry() {
            if deadline > now {
                break;
            }
            self.table.remove(external);
            self.counters.mappings_expired += 1;
            tracing::debug!(%external, "nat mapping expired");
        }
        self.reserved.expire(now);
    }

    /// When the next mapping expires, if any: the instant to call [`Nat::expire`] at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.table.next_expiry().map(|(deadline, _)| deadline)
    }

    /// The "NAT reboot" fault: forgets every mapping (counted in `mappings_flushed`) and every
    /// UPnP lease (a home router keeps them in RAM; RFC 6081 §5.3.1's persisted port exists
    /// for that) and restarts sequential allocation from the bottom of the port range. The RNG is not
    /// reseeded, so a run stays a deterministic function of its seed.
    pub fn reboot(&mut self) {
        self.counters.mappings_flushed += self.table.len() as u64;
        self.counters.reboots += 1;
        self.table.clear();
        self.igd.clear();
        self.reserved.clear();
        self.ports.reset(&self.config);
        tracing::debug!("nat rebooted");
    }

    /// Mappings in the table, including expired ones not yet removed (call [`Nat::expire`]
    /// first for an exact live count).
    pub fn mappings(&self) -> usize {
        self.table.len()
    }

    /// Ends the mapping on `external` now, as `conntrack -D` would: its port is free, the next
    /// datagram of its flow gets a new mapping, inbound datagrams to it are
    /// [`NatDrop::NoMapping`]. Counted in `mappings_removed`; `false` when there was none. Not
    /// part of any NAT behaviour: for a driver whose client provably needs nothing more from
    /// a mapping and closes its socket, so that model and sockets keep agreeing.
    pub fn remove_mapping(&mut self, external: SocketAddrV4) -> bool {
        if !self.table.contains(external) {
            return false;
        }
        self.table.remove(external);
        self.counters.mappings_removed += 1;
        tracing::debug!(%external, "nat mapping removed");
        true
    }

    /// Whether a datagram arriving at `external` at `now` could get through: a mapping that
    /// has not expired, or a live UPnP lease, sits on it (whether its filtering admits a
    /// given remote is another matter). A driver keeps that endpoint's socket open exactly
    /// as long as this holds.
    pub fn receives_on(&self, external: SocketAddrV4, now: Instant) -> bool {
        (self.table.contains(external) && !self.table.is_expired(external, now))
            || self.igd.lease_on(external, now).is_some()
    }

    /// Port reservations held ([`NatConfig::unsolicited_reserve`]), including lapsed ones not
    /// yet removed (call [`Nat::expire`] first for an exact count).
    pub fn reservations(&self) -> usize {
        self.reserved.len()
    }

    /// The external endpoint an outbound datagram from `internal` to `remote` would use now,
    /// if the mapping exists (it may be expired but not yet removed; call [`Nat::expire`]
    /// first). Does not create anything. What a test compares with a Teredo client's mapped
    /// address.
    pub fn mapping_for(
        &self,
        internal: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Option<SocketAddrV4> {
        self.table.lookup(&self.key_for(internal, remote, None))
    }

    /// The counters so far.
    pub fn counters(&self) -> &NatCounters {
        &self.counters
    }

    fn hairpin(
        &mut self,
        now: Instant,
        internal: SocketAddrV4,
        dst: SocketAddrV4,
        host: &mut dyn FnMut(SocketAddrV4) -> PortCheck,
    ) -> Result<Hairpin, NatDrop> {
        if !self.config.hairpinning {
            return self.reject(NatDrop::HairpinOff);
        }
        let from = self.map_outbound(now, internal, dst, host)?;
        if self.lose() {
            return self.reject(NatDrop::Lost);
        }
        let to = self.deliver(now, dst, from)?;
        self.counters.hairpinned += 1;
        Ok(Hairpin {
            from,
            to,
            delay: self.delay(),
        })
    }

    /// One traversal's latency: `delay` plus a uniform draw in `0..=jitter` (no RNG use
    /// without jitter, so jitter-free runs keep the same draws).
    fn delay(&mut self) -> Duration {
        self.config.delay + crate::loss::jitter(&mut self.rng, self.config.jitter)
    }

    fn reject<T>(&mut self, reason: NatDrop) -> Result<T, NatDrop> {
        let c = &mut self.counters;
        match reason {
            NatDrop::Filtered => c.inbound_filtered += 1,
            NatDrop::NoMapping => c.inbound_no_mapping += 1,
            NatDrop::Lost => c.lost += 1,
            NatDrop::TableFull => c.table_full += 1,
            NatDrop::NoPort => c.no_port += 1,
            NatDrop::HairpinOff => c.hairpin_off += 1,
        }
        tracing::trace!(reason = reason.as_str(), "nat drop");
        Err(reason)
    }

    fn lose(&mut self) -> bool {
        lose(&mut self.rng, self.config.loss)
    }

    /// The key of the mapping an outbound datagram uses: a retired mapping of `internal` that
    /// holds a permit for `remote` (its flow goes on, as a conntrack entry would), else the
    /// mapping behaviour's. With `now`, a lapsed permit or an expired mapping does not count
    /// (so a retired key is never re-created).
    fn key_for(
        &self,
        internal: SocketAddrV4,
        remote: SocketAddrV4,
        now: Option<Instant>,
    ) -> MappingKey {
        if let Some(permit) = self.permit_key(remote) {
            for &external in self.table.retired(internal) {
                let unexpired = |d| now.is_none_or(|t| !passed(d, t));
                let live = self.table.get(external).is_some_and(|m| {
                    unexpired(m.expires)
                        && m.permits
                            .iter()
                            .any(|(r, lapses)| *r == permit && unexpired(*lapses))
                });
                if live {
                    return MappingKey {
                        internal,
                        dest: Dest::Retired(external),
                    };
                }
            }
        }
        let dest = match self.config.mapping {
            MappingBehavior::EndpointIndependent => Dest::Any,
            MappingBehavior::AddressDependent => Dest::Ip(*remote.ip()),
            MappingBehavior::AddressAndPortDependent => Dest::IpPort(remote),
        };
        MappingKey { internal, dest }
    }

    fn permit_key(&self, remote: SocketAddrV4) -> Option<SocketAddrV4> {
        match self.config.filtering {
            FilteringBehavior::EndpointIndependent => None,
            FilteringBehavior::AddressDependent => Some(SocketAddrV4::new(*remote.ip(), 0)),
            FilteringBehavior::AddressAndPortDependent => Some(remote),
        }
    }

    /// Finds or creates the mapping for an outbound datagram, refreshes it and records the
    /// remote; returns its external endpoint.
    fn map_outbound(
        &mut self,
        now: Instant,
        internal: SocketAddrV4,
        remote: SocketAddrV4,
        host: &mut dyn FnMut(SocketAddrV4) -> PortCheck,
    ) -> Result<SocketAddrV4, NatDrop> {
        let key = self.key_for(internal, remote, Some(now));
        let external = match self.table.lookup(&key) {
            Some(external) if !self.table.is_expired(external, now) => external,
            Some(external) => {
                self.table.remove(external);
                self.counters.mappings_expired += 1;
                self.create(now, key, remote, host)?
            }
            None => self.create(now, key, remote, host)?,
        };
        // The mapping's endpoint is reserved toward this remote (a refused inbound datagram
        // from it). Like masquerade: this remote gets another port, and since Linux gives a
        // new flow the mapping of the internal endpoint's most recent one, so does every new
        // remote after it; the old mapping keeps the remotes it already talks to.
        let external = if self.reserved.is_reserved(external, remote, now)
            && matches!(key.dest, Dest::Any | Dest::Ip(_))
        {
            self.table.retire(external);
            let external = self.create(now, key, remote, host)?;
            self.counters.mappings_diverted += 1;
            external
        } else {
            external
        };
        let until = now.checked_add(self.config.timeout);
        self.table.refresh(external, until);
        if let Some(permit) = self.permit_key(remote) {
            // The flow to `remote` now lives on `external`: retired mappings forget it, so that
            // only one mapping of `internal` ever holds a permit for a remote.
            if !matches!(key.dest, Dest::Retired(_)) {
                for retired in self.table.retired(internal).to_vec() {
                    if let Some(m) = self.table.get_mut(retired) {
                        m.permits.retain(|(r, _)| *r != permit);
                    }
                }
            }
            if let Some(m) = self.table.get_mut(external) {
                m.record_permit(permit, until);
            }
        }
        Ok(external)
    }

    /// Lookup and filtering of a datagram arriving at `external` from `remote`; returns the
    /// internal endpoint.
    fn deliver(
        &mut self,
        now: Instant,
        external: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Result<SocketAddrV4, NatDrop> {
        if let Some(lease) = self.igd.lease_on(external, now) {
            // A UPnP port mapping admits anyone (RFC 6081 §3.2).
            let internal = lease.internal;
            self.counters.upnp_inbound += 1;
            return Ok(internal);
        }
        if !self.table.contains(external) {
            return self.reject(NatDrop::NoMapping);
        }
        if self.table.is_expired(external, now) {
            self.table.remove(external);
            self.counters.mappings_expired += 1;
            return self.reject(NatDrop::NoMapping);
        }
        let permit = self.permit_key(remote);
        let refresh = self.config.inbound_refresh;
        let until = now.checked_add(self.config.timeout);
        let Some(m) = self.table.get_mut(external) else {
            return self.reject(NatDrop::NoMapping);
        };
        let internal = m.key.internal;
        if let Some(permit) = permit {
            let Some(pos) = m
                .permits
                .iter()
                .position(|(r, lapses)| *r == permit && !passed(*lapses, now))
            else {
                return self.reject(NatDrop::Filtered);
            };
            if refresh {
                m.permits.remove(pos);
                m.permits.push_back((permit, until));
            }
        }
        if refresh {
            self.table.refresh(external, until);
        }
        Ok(internal)
    }

    /// Reserves `external` toward `remote` after a refused inbound datagram, if configured.
    fn reserve(&mut self, now: Instant, external: SocketAddrV4, remote: SocketAddrV4) {
        let Some(d) = self.config.unsolicited_reserve else {
            return;
        };
        let Some(until) = now.checked_add(d) else {
            return;
        };
        self.reserved.expire(now);
        self.reserved
            .reserve(external, remote, until, self.config.max_mappings);
        tracing::debug!(%external, %remote, "nat port reserved by a refused datagram");
    }

    /// A new mapping for `key`, whose first datagram goes to `remote` (the new port is never
    /// one reserved toward it).
    fn create(
        &mut self,
        now: Instant,
        key: MappingKey,
        remote: SocketAddrV4,
        host: &mut dyn FnMut(SocketAddrV4) -> PortCheck,
    ) -> Result<SocketAddrV4, NatDrop> {
        // Reclaim expired mappings first: they must not hold table slots or ports that a
        // real NAT would already have freed. Amortised, each mapping expires once.
        self.expire(now);
        if self.table.len() >= self.config.max_mappings {
            return self.reject(NatDrop::TableFull);
        }
        if let Some(external) = self.leased_port_for(now, key.internal) {
            let pool_idx = self
                .config
                .external_ips
                .iter()
                .position(|ip| ip == external.ip())
                .unwrap_or(0);
            let expires = now.checked_add(self.config.timeout);
            self.table.insert(external, key, pool_idx, expires);
            self.counters.mappings_created += 1;
            tracing::debug!(internal = %key.internal, %external, "nat mapping created on the upnp lease");
            return Ok(external);
        }
        self.igd.prune(now);
        let leased = self.igd.reserved_ports(key.internal);
        self.table.set_reserved(leased);
        let reserved = &self.reserved;
        let avoid = |external: SocketAddrV4| reserved.is_reserved(external, remote, now);
        let allocated = self.ports.allocate(
            &self.config,
            &mut self.rng,
            &self.table,
            key.internal,
            &avoid,
            host,
        );
        let Some((pool_idx, port)) = allocated else {
            return self.reject(NatDrop::NoPort);
        };
        let external = SocketAddrV4::new(self.config.external_ips[pool_idx], port);
        let expires = now.checked_add(self.config.timeout);
        self.table.insert(external, key, pool_idx, expires);
        self.counters.mappings_created += 1;
        tracing::debug!(internal = %key.internal, %external, "nat mapping created");
        Ok(external)
    }
}

impl Nat {
    /// The leased external endpoint of `internal` when its next dynamic mapping goes there:
    /// it holds a live lease, the port is in the NAT's range and no mapping sits on it.
    fn leased_port_for(&self, now: Instant, internal: SocketAddrV4) -> Option<SocketAddrV4> {
        let lease = self.igd.lease_of(internal, now)?;
        let external = lease.external;
        (self.config.port_range.contains(&external.port())
            && self.is_external(*external.ip())
            && !self.table.contains(external))
        .then_some(external)
    }
}

/// Asserts the internal consistency of the tables: both indexes agree, pool and port
/// bookkeeping, expiry records, permit caps, counters. Used by the unit tests and the fuzz
/// harness.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_invariants(nat: &Nat) {
    let c = &nat.config;
    let n = c.external_ips.len();
    let paired = |ip: Ipv4Addr| {
        (c.pooling == Pooling::Paired).then(|| crate::ports::paired_index(c.seed, ip, n))
    };
    nat.table.check_invariants(c, paired);
    nat.reserved.check_invariants(c.max_mappings);
    let k = &nat.counters;
    assert_eq!(
        k.mappings_created,
        k.mappings_expired + k.mappings_flushed + k.mappings_removed + nat.mappings() as u64
    );
}
