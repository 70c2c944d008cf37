//! The Port-Preserving Symmetric NAT extension (RFC 6081 §3.3, §5.4), sans-IO, and the
//! random-port plumbing the Sequential Port-Symmetric NAT extension (§5.5, `sequential`)
//! shares with it. Enabled by [`ClientConfig::port_preserving`].
//!
//! Behind a symmetric NAT whose mapped port equals the local port (the "Port-Preserving NAT
//! flag", set on qualifying), the client reaches a peer it does not trust through a *random
//! port*: a second local UDP socket ([`Local::Port`], listed by [`Client::extra_ports`]),
//! whose external port the NAT will preserve. It advertises that port in a Random Port
//! trailer on its indirect bubbles (§5.4.4.2) and sends direct bubbles from it, with the
//! trailer (§5.4.4.3). A direct bubble that comes in on the random port makes the peer
//! trusted there (§5.4.4.5), and from then on the peer's data and bubbles leave from that
//! port; one accepted on the primary port closes the random port again, and a later one
//! there from another mapping, after 30 s without an exchange, means the peer's NAT
//! re-mapped: the peer is probed again (the same on the random port).
//!
//! Where the RFC's text is silent, this lab reads it so that RFC 6081 Figure 1's "SNS+PP"
//! and "SNS+SS" cells can hold; each reading is marked *Reading* below:
//! * *Reading (destination of the first bubble from a random port).* §3.3: "the challenge
//!   is to get the first direct bubble sent out from the random port to be destined to a
//!   valid destination". A random port's first bubble goes to the peer's random port once
//!   advertised, or to the peer's embedded mapping once the peer's indirect bubble came
//!   *without* a Random Port trailer (the peer listens where its address says). Before
//!   either, nothing leaves the random port: a bubble to the wrong destination would use up
//!   the port preservation (each destination of a symmetric NAT gets its own mapping).
//! * *Reading (the side behind a cone or restricted NAT).* §5.4.4.3 only tells a symmetric
//!   sender what to do with a peer's random port; a client whose mapping is
//!   endpoint-independent (qualified as not symmetric) sends its direct bubbles from its
//!   primary port to the peer's random port too. Without that, "port restricted ->
//!   port-preserving symmetric: SNS+PP" cannot work: the port-restricted NAT admits the
//!   peer's random port only after sending to it.
//! * *Reading (answers).* The direct bubble that answers a relayed bubble goes from the
//!   random port as well (to the same destination as above), and from the random port alone
//!   once the peer is trusted there.
//!
//! The Peer Refresh Timer (§5.4.2.1) runs while a random port is open: every 30 s, a direct
//! bubble from the random port to each peer reached through it to which no data went in
//! the last 30 s, at most 20 in a row. At most [`MAX_RANDOM_PORTS`] random ports are open
//! at once (one per peer; beyond it the extension is skipped for the peer, counted).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv6Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::addr::TeredoAddr;
use crate::io::{Kind, Local};
use crate::wire::trailer::{RandomPort, Trailers, TYPE_RANDOM_PORT};
use crate::wire::TeredoPacket;
use crate::DropReason;

use super::bubbles::{bubble_bytes, bubble_with_port, Extra};
use super::data::has_routing_header;
use super::sequential::EchoTest;
use super::*;
use crate::peer::{self, Gate};

/// Period of the Peer Refresh Timer (§5.4.2.1, §5.4.3: 30 s).
pub const PEER_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Direct bubbles the Peer Refresh Timer sends a peer without data in between (§5.4.2.1).
pub const MAX_CONNECTION_REFRESHES: u8 = 20;
/// "In the last 30 seconds": data sent recently (§5.4.2.1), or an exchange recent enough to
/// keep an advertised port (§5.4.4.4).
pub const RANDOM_PORT_QUIET: Duration = Duration::from_secs(30);
/// Random ports open at once (each is a socket of the driver).
pub const MAX_RANDOM_PORTS: usize = 64;
/// Where random local ports are drawn from (the dynamic range).
pub const RANDOM_PORTS: RangeInclusive<u16> = 49_152..=65_535;

/// The extensions' per-peer state (§5.4.1, §5.5.1).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PeerPorts {
    /// The local port we listen on for this peer (§5.4: equal to `random`; §5.5: the port
    /// whose external port `random` predicts).
    pub(super) local: Option<u16>,
    /// "Random Port": the external port we predict our NAT gives us towards the peer; 0 =
    /// none.
    pub(super) random: u16,
    /// "Peer Random Port"; 0 = none.
    pub(super) peer: u16,
    /// The peer's indirect bubble came without a Random Port trailer: it listens at its
    /// embedded mapping (*Reading*, module documentation).
    pub(super) plain: bool,
    /// "Direct Receive on Primary Port".
    pub(super) rx_primary: bool,
    /// "Direct Receive on Random Port".
    pub(super) rx_random: bool,
    /// "Connection Refresh Count".
    pub(super) refreshes: u8,
    /// "Last Data Packet Sent Timestamp".
    pub(super) last_data_tx: Option<Instant>,
    /// §5.5 Echo Test state.
    pub(super) echo: EchoTest,
}

/// The extensions' client-wide state.
#[derive(Debug, Default)]
pub(super) struct PortsState {
    /// "Port-Preserving NAT flag": the mapping learned from the primary server address has
    /// our local port (§5.4.3).
    pub(super) preserving: bool,
    /// Open random ports and the peer each serves.
    pub(super) open: BTreeMap<u16, Ipv6Addr>,
    /// The Peer Refresh Timer; armed while a random port is open.
    pub(super) next_refresh: Option<Instant>,
    /// Echo Test Failover Timers `(due, peer)`; a peer's live record is its
    /// `echo.failover`.
    pub(super) failovers: BTreeSet<(Instant, Ipv6Addr)>,
}

/// The first well-formed, non-zero Random Port trailer.
pub(super) fn trailer_random_port(trailers: &[u8]) -> Option<u16> {
    Trailers::new(trailers)
        .filter(|t| t.ty == TYPE_RANDOM_PORT)
        .find_map(|t| RandomPort::parse(&t).ok())
        .map(|r| r.port)
        .filter(|p| *p != 0)
}

impl Client {
    /// The extra local ports the client listens on (RFC 6081 random ports, [`Local::Port`]),
    /// ascending. A driver binds a socket for each (same IPv4 as the primary one) and hands
    /// what arrives there to [`Self::handle_udp`] with `Local::Port(port)`. The set changes
    /// only inside `handle_*` calls; at most [`MAX_RANDOM_PORTS`].
    pub fn extra_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.open.keys().copied()
    }

    /// Whether `port` is one of [`Self::extra_ports`].
    pub fn listens_on(&self, port: u16) -> bool {
        self.ports.open.contains_key(&port)
    }

    /// The Port-Preserving NAT flag (RFC 6081 §5.4.3), as last set on qualifying.
    pub fn port_preserving_nat(&self) -> bool {
        self.ports.preserving
    }

    /// The profile runs §5.4 (it depends on symmetric NAT support).
    pub(super) fn pp_active(&self) -> bool {
        self.cfg.port_preserving && self.cfg.symmetric_support
    }

    /// §5.4.3: the Port-Preserving NAT flag, from the mapping the primary address reported.
    pub(super) fn ports_qualified(&mut self, mapped: SocketAddrV4) {
        self.ports.preserving = mapped.port() == self.local.port();
    }

    /// Forgets every random port, and the Port-Preserving NAT flag until the next
    /// qualification (§5.4.3: FALSE at start); the data path was reset.
    pub(super) fn ports_reset(&mut self) {
        self.ports.preserving = false;
        let open = self.ports.open.len() as u64;
        self.counters.random_ports_closed += open;
        self.ports.open.clear();
        self.ports.failovers.clear();
        self.ports.next_refresh = None;
    }

    /// Draws a free random local port for `addr` and listens on it; `None` at the cap.
    pub(super) fn open_port(&mut self, now: Instant, addr: Ipv6Addr) -> Option<u16> {
        if self.ports.open.len() >= MAX_RANDOM_PORTS {
            self.counters.random_ports_refused += 1;
            return None;
        }
        let (lo, hi) = (*RANDOM_PORTS.start(), *RANDOM_PORTS.end());
        let span = u32::from(hi - lo) + 1;
        for _ in 0..16 {
            let port = lo + (self.rng.next_u32() % span) as u16;
            if port != self.local.port() && !self.ports.open.contains_key(&port) {
                self.ports.open.insert(port, addr);
                self.counters.random_ports_opened += 1;
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.ports.local = Some(port);
                }
                if self.ports.next_refresh.is_none() {
                    self.ports.next_refresh = after(now, PEER_REFRESH_INTERVAL);
                }
                tracing::debug!(peer = %addr, port, "client opened a random port");
                return Some(port);
            }
        }
        self.counters.random_ports_refused += 1;
        None
    }

    /// Stops listening on `addr`'s random port: Random Port zero, echo test cancelled.
    pub(super) fn close_port(&mut self, addr: &Ipv6Addr) {
        let Some(p) = self.peers.get_mut(addr) else {
            return;
        };
        if let Some(t) = p.ports.echo.failover.take() {
            self.ports.failovers.remove(&(t, *addr));
        }
        p.ports.echo = EchoTest::default();
        p.ports.random = 0;
        p.ports.rx_random = false;
        if let Some(l) = p.ports.local.take() {
            self.ports.open.remove(&l);
            self.counters.random_ports_closed += 1;
            tracing::debug!(peer = %addr, port = l, "client closed a random port");
        }
        if self.ports.open.is_empty() {
            self.ports.next_refresh = None;
        }
    }

    /// Forgets the random port of a peer whose entry is going away.
    pub(super) fn ports_forget(&mut self, addr: &Ipv6Addr, ports: &PeerPorts) {
        if let Some(l) = ports.local {
            self.ports.open.remove(&l);
            self.counters.random_ports_closed += 1;
        }
        if let Some(t) = ports.echo.failover {
            self.ports.failovers.remove(&(t, *addr));
        }
        if self.ports.open.is_empty() {
            self.ports.next_refresh = None;
        }
    }

    /// The socket a peer's data and bubbles leave from: its random port once the peer was
    /// trusted there and not on the primary port (§5.4.4.5), else the primary one.
    pub(super) fn send_local(&self, addr: &Ipv6Addr) -> Local {
        match self.peers.get(addr).map(|p| p.ports) {
            Some(PeerPorts {
                local: Some(l),
                rx_random: true,
                rx_primary: false,
                ..
            }) => Local::Port(l),
            _ => Local::Primary,
        }
    }

    /// §5.4.4.1: data went to the peer now.
    pub(super) fn ports_data_sent(&mut self, now: Instant, addr: &Ipv6Addr) {
        if let Some(p) = self.peers.get_mut(addr) {
            p.ports.last_data_tx = Some(now);
        }
    }

    /// Where a random port's bubbles to the peer go (*Reading*, module documentation): its
    /// random port, or its embedded mapping once it showed it has none; `None` before.
    pub(super) fn random_port_target(&self, addr: &Ipv6Addr) -> Option<SocketAddrV4> {
        let p = self.peers.get(addr)?;
        let t = TeredoAddr::from_ipv6(addr)?;
        if p.ports.peer != 0 {
            Some(SocketAddrV4::new(*t.mapped.ip(), p.ports.peer))
        } else {
            p.ports.plain.then_some(t.mapped)
        }
    }

    /// What the extensions do when a probe of the untrusted Teredo peer `addr` is about to
    /// send its indirect bubble (§5.4.4.2, §5.4.4.3, §5.5.4.1): open a random port, or start
    /// an echo test instead of the indirect bubble (`defer`), say which Random Port trailer
    /// the indirect bubble carries, and add direct bubbles (sent after the probe's own).
    /// `echo` is the nonce the probe's direct bubble echoes.
    pub(super) fn ports_probe(
        &mut self,
        now: Instant,
        addr: Ipv6Addr,
        own: Ipv6Addr,
        echo: Option<[u8; 4]>,
    ) -> ProbePlan {
        let mut plan = ProbePlan::default();
        if !self.pp_active() {
            return plan;
        }
        let symmetric = self.nat.is_symmetric();
        let preserving = self.ports.preserving;
        let Some(ports) = self
            .peers
            .get(&addr)
            .filter(|p| !p.trusted)
            .map(|p| p.ports)
        else {
            return plan;
        };
        if symmetric && !preserving && self.ss_active() && ports.random == 0 {
            // §5.5.4.1: an echo test replaces the indirect bubble (it sends it when done).
            plan.defer = ports.echo.failover.is_some();
            if ports.echo.retries == 0 {
                let local = ports.local.or_else(|| self.open_port(now, addr));
                if let Some(l) = local {
                    plan.extra = self.start_echo_test(now, addr, l, own, echo);
                    plan.defer = true;
                }
            }
            return plan;
        }
        if symmetric && preserving && ports.random == 0 {
            // §5.4.4.2: the NAT will preserve a fresh port; listen on it.
            if let Some(l) = self.open_port(now, addr) {
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.ports.random = l;
                }
            }
        }
        let Some(ports) = self.peers.get(&addr).map(|p| p.ports) else {
            return plan;
        };
        plan.trailer = (ports.random != 0).then_some(ports.random);
        let target = self.random_port_target(&addr);
        match (ports.local, target) {
            // §5.4.4.3: from the random port, with the trailer.
            (Some(l), Some(to)) if ports.random != 0 => plan.extra.push((
                Local::Port(l),
                to,
                Kind::Bubble,
                bubble_with_port(own, addr, echo, plan.trailer),
            )),
            // Reading: an endpoint-independent mapping reaches the peer's random port from
            // the primary port.
            (None, Some(to)) if !symmetric && ports.peer != 0 => {
                plan.extra.push((
                    Local::Primary,
                    to,
                    Kind::Bubble,
                    bubble_bytes(own, addr, echo),
                ));
            }
            _ => {}
        }
        plan
    }

    /// §5.4.4.4: a relayed (indirect) bubble from the Teredo peer `addr` came in with these
    /// trailers: learn or update its random port.
    pub(super) fn ports_indirect_received(
        &mut self,
        now: Instant,
        addr: &Ipv6Addr,
        trailers: &[u8],
    ) {
        if !self.pp_active() {
            return;
        }
        let advertised = trailer_random_port(trailers);
        let preserving = self.ports.preserving;
        let Some(p) = self.peers.get_mut(addr) else {
            return;
        };
        let Some(port) = advertised else {
            p.ports.plain = p.ports.peer == 0;
            return;
        };
        p.ports.plain = false;
        if p.ports.peer == 0 {
            p.ports.peer = port;
            return;
        }
        let quiet = |t: Option<Instant>| {
            t.is_none_or(|t| now.saturating_duration_since(t) > RANDOM_PORT_QUIET)
        };
        if p.ports.peer != port && quiet(p.last_tx) && quiet(p.last_rx) {
            p.ports.peer = port;
            if preserving {
                self.close_port(addr);
            }
        }
    }

    /// Extra answers to a relayed bubble from `addr` (*Reading*, module documentation): a
    /// direct bubble from our random port to the peer's random port or embedded mapping,
    /// or, behind an endpoint-independent mapping, from the primary port to the peer's
    /// random port. Nothing once the peer is trusted (the answer then leaves from
    /// [`Self::send_local`]).
    pub(super) fn ports_answer(
        &mut self,
        addr: Ipv6Addr,
        own: Ipv6Addr,
        echo: Option<[u8; 4]>,
    ) -> Option<Extra> {
        if !self.pp_active() {
            return None;
        }
        let p = self.peers.get(&addr).filter(|p| !p.trusted)?;
        let ports = p.ports;
        let to = self.random_port_target(&addr)?;
        let trailer = (ports.random != 0).then_some(ports.random);
        match ports.local {
            Some(l) if ports.random != 0 => Some((
                Local::Port(l),
                to,
                Kind::Bubble,
                bubble_with_port(own, addr, echo, trailer),
            )),
            None if !self.nat.is_symmetric() && ports.peer != 0 => Some((
                Local::Primary,
                to,
                Kind::Bubble,
                bubble_bytes(own, addr, echo),
            )),
            _ => None,
        }
    }

    /// §5.4.4.5, first and third rules (§5.5.4.3 too): a direct bubble from `addr` was
    /// accepted on the primary port: the peer is reached there, the random port closes.
    pub(super) fn ports_primary_rx(&mut self, addr: &Ipv6Addr) {
        let Some(p) = self.peers.get_mut(addr) else {
            return;
        };
        if p.ports.local.is_none() {
            return;
        }
        p.ports.rx_primary = true;
        self.close_port(addr);
    }

    /// §5.4.4.5, second rule: a direct bubble on the primary port from a peer trusted there
    /// (after its random port closed) but from another mapping, after 30 s without an
    /// exchange: the peer's NAT re-mapped; the peer is no longer trusted and is probed again
    /// (direct and indirect bubbles). True when it applied (the bubble is consumed).
    pub(super) fn ports_remapped(
        &mut self,
        now: Instant,
        addr: Ipv6Addr,
        from: SocketAddrV4,
    ) -> bool {
        if !self.pp_active() {
            return false;
        }
        let quiet = |t: Option<Instant>| {
            t.is_none_or(|t| now.saturating_duration_since(t) > RANDOM_PORT_QUIET)
        };
        let Some(p) = self.peers.get_mut(&addr) else {
            return false;
        };
        if !(p.trusted && p.ports.rx_primary && p.mapping != Some(from)) {
            return false;
        }
        if !(quiet(p.last_tx) && quiet(p.last_rx)) {
            return false;
        }
        tracing::debug!(peer = %addr, %from, "peer re-mapped: probing again");
        p.trusted = false;
        p.ports.rx_primary = false;
        p.phase = PeerPhase::Probing;
        p.attempts = 0;
        self.counters.bubbles_received += 1;
        match self.gate(&addr, now) {
            Gate::Now => self.send_probe(now, addr),
            Gate::At(t) => self.set_deadline(addr, Some(t)),
            Gate::Exhausted => self.give_up(now, addr),
        }
        true
    }

    /// A datagram on the random port `port` (the client is qualified; RAs went to the
    /// echo test before): only the port's peer may use it (`closed_port`). A direct bubble
    /// makes the peer trusted there (§5.4.4.5, fourth rule) or, trusted already, must come
    /// from its recorded mapping (fifth rule: otherwise the NAT re-mapped, the port closes
    /// and the peer is probed again); data is accepted from the trusted mapping only.
    pub(super) fn random_port_packet(
        &mut self,
        now: Instant,
        port: u16,
        from: SocketAddrV4,
        pkt: &TeredoPacket<'_>,
    ) -> Result<Handled, DropReason> {
        let Some(&addr) = self.ports.open.get(&port) else {
            return Err(DropReason::ClosedPort);
        };
        let Some(own) = self.address else {
            return Err(DropReason::NotQualified);
        };
        if pkt.dst() != own {
            return Err(DropReason::NotOurAddress);
        }
        if pkt.src() != addr {
            return Err(DropReason::ClosedPort);
        }
        if pkt.origin.is_some() {
            return Err(DropReason::UnexpectedOrigin);
        }
        if has_routing_header(pkt.ipv6) {
            return Err(DropReason::RoutingHeader);
        }
        if !peer::is_usable_mapping(from) {
            return Err(DropReason::NonGlobalMappedAddress);
        }
        let Some(p) = self.peers.get_mut(&addr) else {
            return Err(DropReason::ClosedPort);
        };
        let at_mapping = p.trusted && p.mapping == Some(from);
        if !pkt.is_bubble() {
            if !at_mapping {
                return Err(DropReason::SpoofedSource);
            }
            self.trust(now, addr, from);
            return self.deliver(now, pkt.ipv6).map(|()| Handled::Delivered);
        }
        if !p.trusted || at_mapping {
            p.ports.rx_random = true;
            self.counters.bubbles_received += 1;
            self.trust(now, addr, from);
            return Ok(Handled::Bubble);
        }
        self.counters.bubbles_received += 1;
        // Fifth rule: the NAT re-mapped; start over with a new random port.
        tracing::debug!(peer = %addr, %from, "random port mapping changed");
        self.close_port(&addr);
        if let Some(p) = self.peers.get_mut(&addr) {
            p.trusted = false;
            p.phase = PeerPhase::Probing;
            p.attempts = 0;
        }
        match self.gate(&addr, now) {
            Gate::Now => self.send_probe(now, addr),
            Gate::At(t) => self.set_deadline(addr, Some(t)),
            Gate::Exhausted => self.give_up(now, addr),
        }
        Ok(Handled::Bubble)
    }

    /// The extensions' next deadline: the Peer Refresh Timer, the earliest failover.
    pub(super) fn ports_deadline(&self) -> Option<Instant> {
        let failover = self.ports.failovers.first().map(|(t, _)| *t);
        earliest(self.ports.next_refresh, failover)
    }

    /// Fires the extensions' due timers (qualified only).
    pub(super) fn ports_timers(&mut self, now: Instant) {
        self.fire_failovers(now);
        if self.ports.next_refresh.is_some_and(|t| t <= now) {
            self.peer_refresh(now);
        }
    }

    /// §5.4.2.1 (and §5.5.2.1): keep the random ports' mappings alive.
    fn peer_refresh(&mut self, now: Instant) {
        let Some(own) = self.address else {
            return;
        };
        let mut out: Vec<Extra> = Vec::new();
        for (&l, addr) in &self.ports.open {
            let Some(p) = self.peers.get_mut(addr) else {
                continue;
            };
            // §5.5.2.1, except for a test in progress (its failover would find nothing).
            if p.ports.echo.failover.is_none() {
                p.ports.echo = EchoTest::default();
            }
            let (true, true, false, Some(to)) =
                (p.trusted, p.ports.rx_random, p.ports.rx_primary, p.mapping)
            else {
                continue;
            };
            let recent = p
                .ports
                .last_data_tx
                .is_some_and(|t| now.saturating_duration_since(t) < RANDOM_PORT_QUIET);
            if recent {
                p.ports.refreshes = 0;
            } else if p.ports.refreshes < MAX_CONNECTION_REFRESHES {
                p.ports.refreshes += 1;
                p.last_tx = Some(now);
                let trailer = (p.ports.random != 0).then_some(p.ports.random);
                let bytes = bubble_with_port(own, *addr, None, trailer);
                out.push((Local::Port(l), to, Kind::Bubble, bytes));
            }
        }
        for (local, to, kind, bytes) in out {
            if self.push_output_from(local, to, kind, bytes).is_ok() {
                self.counters.bubbles_sent += 1;
                self.counters.peer_refresh_bubbles += 1;
            }
        }
        self.ports.next_refresh = if self.ports.open.is_empty() {
            None
        } else {
            after(now, PEER_REFRESH_INTERVAL)
        };
    }

    /// Queues the extensions' datagrams; counted as bubbles (or RSs).
    pub(super) fn push_extras(&mut self, extras: Vec<Extra>) {
        for (local, to, kind, bytes) in extras {
            if self.push_output_from(local, to, kind, bytes).is_ok() {
                match kind {
                    Kind::RouterSolicitation => self.counters.rs_sent += 1,
                    _ => self.counters.bubbles_sent += 1,
                }
            }
        }
    }
}

/// What the extensions make of one probe ([`Client::ports_probe`]).
#[derive(Debug, Default)]
pub(super) struct ProbePlan {
    /// The Random Port trailer of the indirect bubble.
    pub(super) trailer: Option<u16>,
    /// No indirect bubble now: an echo test runs and sends it (§5.5.4.1).
    pub(super) defer: bool,
    /// Datagrams to send after the probe's own.
    pub(super) extra: Vec<Extra>,
}
