//! The Teredo client's qualification and maintenance state machine (RFC 4380 §5.2.1,
//! §5.2.2, §5.2.5; RFC 5991 §3; RFC 6081 §5.1.1, §5.2), sans-IO.
//!
//! The client sends router solicitations (RS) to its server and learns its NAT mapping from
//! the origin indication of the router advertisements (RA) that come back. Which RS it sends,
//! in which order, what it concludes and how it keeps the mapping alive are all knobs of
//! [`ClientConfig`], so that the behaviours of Windows XP SP2, Vista, Windows 7, an RFC 5991
//! client and Miredo are just configurations ([`ClientConfig::profile`]).
//!
//! # Qualification (TEREDO.md §5.1, §15)
//! 1. *Cone probe* ([`ClientConfig::cone_probe`]): RS from the cone link-local to the
//!    primary. A conforming server answers a cone RS from its **other** address, so an RA
//!    that gets through (and comes from the secondary address) proves the NAT lets
//!    unsolicited traffic in: **cone**, qualified. No answer after
//!    [`ClientConfig::attempts`] RSs [`ClientConfig::retransmit`] apart → phase 2.
//! 2. *Restricted*: RS from the restricted link-local to the primary; its RA gives the
//!    mapping M1. No answer → `Offline`, "cannot reach primary Teredo server over UDP".
//! 3. *Secondary check* ([`ClientConfig::secondary_check`]): restricted RS to the secondary
//!    address, mapping M2. M1 == M2 → restricted (or none), qualified; M1 ≠ M2 → symmetric
//!    ("(address)" if the IPv4 differs, "(port)" otherwise): qualified with M1 when
//!    [`ClientConfig::symmetric_support`] (RFC 6081 §5.2), else `Offline`, "client behind
//!    symmetric NAT". No answer → `Offline`, "cannot reach secondary Teredo server over UDP".
//!
//! The NAT type is `none` whenever the mapping equals the client's own socket address.
//!
//! # Maintenance (RFC 4380 §5.2.5, RFC 6081 §5.1.1)
//! Once qualified, the client sends an RS with the cone value that qualified to the primary
//! every refresh interval (fixed, Miredo; or randomized within
//! [`ClientConfig::refresh_jitter`]). A changed mapping gives a new address and
//! [`Event::AddressChanged`]; no answer after the retries → `Offline`. After any failure
//! except the managed-network rule the client starts over after
//! [`ClientConfig::offline_retry`].
//!
//! # Data path (RFC 4380 §5.2.3, §5.2.4, §5.2.6, §5.2.9; RFC 6081 §5.2; TEREDO.md §6, §15)
//! While qualified, the application hands IPv6 packets from the Teredo address to
//! [`Client::handle_ipv6`] and reads what arrives from [`Client::poll_output`]
//! ([`Output::Ipv6`](crate::io::Output::Ipv6)). A bounded peer
//! table ([`ClientConfig::max_peers`], least recently used evicted) remembers per IPv6
//! peer its mapping, whether it is trusted, the last reception/transmission, the probes
//! sent in the current 300 s window, the nonces and a bounded FIFO queue.
//! * **Trusted and valid** (last reception < [`ClientConfig::peer_validity`]): the packet
//!   goes straight to the peer's mapping.
//! * **Native destination** (not 2001::/32): the packet is queued and a *direct IPv6
//!   connectivity test* runs: an ICMPv6 echo request (src = our address, dst = the
//!   destination, data = an 8-byte random nonce, hop limit 128) goes to **our** server,
//!   which forwards it natively; the reply comes back through whichever relay serves the
//!   destination, and the client trusts that relay's address and port (the outer source of
//!   the reply) for the destination when the data equals the nonce, then flushes the queue
//!   there. A relay first sends an indirect bubble through our server (it has no entry for
//!   us); the client answers every bubble the server relays with a **direct bubble to the
//!   origin indication** (src = our address, dst = the bubble's IPv6 source, which is the
//!   relay's per-peer link-local for our relay), echoing the bubble's RFC 6081 nonce
//!   trailer when [`ClientConfig::symmetric_support`] is on. That bubble opens our NAT
//!   toward the relay and lets the relay trust us.
//! * **Teredo destination** (the cone bit is ignored, RFC 5991 §3.2): the packet is queued,
//!   a direct bubble goes to the peer's embedded mapping (opening our NAT) and an indirect
//!   bubble to the peer's server, port 3544 (with a fresh nonce trailer under symmetric
//!   support). The peer's direct answer from its embedded mapping — or, under symmetric
//!   support, from any mapping when it echoes our nonce, which is then recorded — makes it
//!   trusted and flushes the queue.
//! * **Pacing** (RFC 4380 §5.2.6): probes (a bubble pair, or an echo request) at least
//!   [`ClientConfig::bubble_interval`] apart, retransmitted on a timer up to
//!   [`ClientConfig::bubble_retries`] times, at most [`ClientConfig::max_bubbles_per_window`]
//!   per [`ClientConfig::bubble_window`] without an answer. After the last one the queue is
//!   dropped (`peer_unreachable`) and sends to the peer are refused until the window ends.
//!   Answers to relayed bubbles are rate-limited globally instead (10/s): they go to the
//!   address the server saw, so they cannot be aimed at a third party.
//! * **Reception** (RFC 4380 §5.2.3): from the server, bubbles are answered as above and
//!   other packets are delivered only when the server vouches for them (Teredo source whose
//!   embedded mapping is the origin indication). Otherwise: trusted entry and outer source
//!   == its mapping → accepted; echo reply carrying the nonce of our test → trusted;
//!   Teredo source whose embedded mapping == outer source → trusted (created if needed);
//!   else dropped — in particular no echo test is started for an unknown non-Teredo source
//!   (CVE-2006-6266). Packets with a routing header (CVE-2006-6263), with a link-local
//!   source (other than bubbles) or not addressed to our Teredo address are dropped.
//! * **Extensions**: [`ClientConfig::hairpinning`] (RFC 6081 §5.6: alternate addresses in
//!   the indirect bubble, direct bubbles to a peer's alternates, acceptance by nonce from a
//!   LAN address) and [`ClientConfig::server_load_reduction`] (§5.7: a quiet trusted peer is
//!   solicited with direct bubbles before any indirect bubble), in `hairpin` and
//!   `load_reduction`.
//! * **Random ports** (RFC 6081 §5.4, §5.5; [`ClientConfig::port_preserving`],
//!   [`ClientConfig::sequential`]): behind a port-preserving symmetric NAT, or a symmetric
//!   one whose next port an echo test predicts, a peer is reached through an extra local
//!   socket ([`Local::Port`], [`Client::extra_ports`]) advertised in a Random Port trailer;
//!   see `random_port` and `sequential` for the rules and this lab's readings of the RFC.
//! * Every packet sent or delivered counts as activity ([`Client::note_activity`]) for the
//!   Windows 7 dormant timer. Losing or changing the address empties the peer table.
//!
//! # Driving it
//! Feed every datagram received on the client's socket to [`Client::handle_udp`] and every
//! packet of the host to [`Client::handle_ipv6`], call [`Client::handle_timeout`] at
//! [`Client::poll_timeout`], and after every input drain [`Client::poll_output`] (first
//! the datagrams to send, each with its [`Kind`](crate::io::Kind): router solicitations,
//! bubbles, echo tests, data; then the packets for the host) and [`Client::poll_event`].
//! After every input, keep one socket open per port of [`Client::extra_ports`] (same IPv4),
//! send each datagram from the socket its [`Local`] names and hand what arrives on an extra
//! port to `handle_udp` with [`Local::Port`]. Time and randomness come from the caller.
//!
//! # Layout
//! `config` (profiles and knobs), `state` (state, NAT type, errors, status), `counters`,
//! `qualification` (RS/RA, probe phases, refresh, dormant), `peers` (peer table, probes,
//! pacing, trust), `data` (sending and receiving IPv6), `outputs` (the output and delivery
//! queues), `discovery` (RFC 4380 §5.2.8), `upnp` (RFC 6081 §5.3), `random_port` (§5.4),
//! `sequential` (§5.5), `hairpin` (§5.6 Hairpinning), `load_reduction` (§5.7 Server Load
//! Reduction); tests in `tests/`, their NAT, server and relay scaffolding in `tests/net.rs`.

mod bubbles;
mod config;
mod counters;
mod data;
mod discovery;
mod hairpin;
mod load_reduction;
mod outputs;
mod peers;
mod qualification;
mod random_port;
mod sequential;
mod state;
#[cfg(test)]
mod tests;
mod upnp;

pub use config::*;
pub use counters::ClientCounters;
pub use discovery::{
    ALL_NODES, DISCOVERY_DEST, DISCOVERY_GROUP, DISCOVERY_HOP_LIMIT, DISCOVERY_PERIOD,
    LOCAL_PEER_VALIDITY,
};
pub use hairpin::MAX_PEER_ALTERNATES;
pub use load_reduction::{MAX_SOLICITATIONS, SOLICITATION_INTERVAL};
pub use peers::{PeerInfo, PeerPhase};
pub use random_port::{
    MAX_CONNECTION_REFRESHES, MAX_RANDOM_PORTS, PEER_REFRESH_INTERVAL, RANDOM_PORTS,
    RANDOM_PORT_QUIET,
};
pub use sequential::{predict_port, ECHO_TEST_TRIES};
pub use state::*;
pub use upnp::{UpnpAnswer, UPNP_LEASE};

use counters::Path;
use outputs::Queued;
use peers::Peer;
use qualification::{Exchange, PendingRs, Step};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::addr::TEREDO_PORT;
use crate::io::Local;
use crate::peer;
use crate::wire::ndp::ICMPV6_ROUTER_ADVERTISEMENT;
use crate::wire::packet::{MAX_UDP_PAYLOAD, NEXT_HEADER_ICMPV6};
use crate::wire::TeredoPacket;
use crate::DropReason;

/// Smallest MTU an RA may announce (the IPv6 minimum link MTU).
pub const MIN_RA_MTU: u32 = 1280;
/// Largest MTU an RA may announce (Miredo's bound, the largest IPv6 payload without jumbograms).
pub const MAX_RA_MTU: u32 = 65_535;
/// How many RS nonces of one exchange are remembered: a late RA answering an earlier
/// retransmission of the same phase is still accepted.
pub const NONCE_RING: usize = 4;
/// Cap on queued events; when full the oldest is dropped (and counted).
pub const MAX_EVENTS: usize = 64;
/// Size of the largest RS the client emits (auth 13 + IPv6 40 + RS 8 + XP's option 16).
pub const MAX_RS_LEN: usize = 13 + 40 + 8 + 16;
/// Floor applied to the retransmission, refresh and offline-retry timers, so that a zero
/// in the configuration cannot make a driver spin without time advancing.
pub const MIN_TIMER: Duration = Duration::from_millis(100);
/// Default [`ClientConfig::max_peers`] (Miredo's peer list without libJudy).
pub const DEFAULT_MAX_PEERS: usize = 1024;
/// Default [`ClientConfig::queue_packets_per_peer`].
pub const DEFAULT_QUEUE_PACKETS_PER_PEER: usize = 16;
/// Default [`ClientConfig::queue_bytes_per_peer`].
pub const DEFAULT_QUEUE_BYTES_PER_PEER: usize = 4096;
/// Bytes queued for all peers together; beyond it packets are dropped (`global_queue_full`).
pub const GLOBAL_QUEUE_BYTES: usize = 256 * 1024;
/// Peer validity (RFC 4380 §5.2.4): 30 s since the last reception (the shared
/// [`peer::VALIDITY`]).
pub const PEER_VALIDITY: Duration = peer::VALIDITY;
/// The pacing defaults the client shares with the relay; for the client they apply to echo
/// tests as well as bubbles.
pub use crate::peer::{BUBBLE_INTERVAL, BUBBLE_RETRIES, BUBBLE_WINDOW, MAX_BUBBLES_PER_WINDOW};
/// Length of the echo-test nonce (RFC 4380 §5.2.9 recommends at least 64 bits).
pub const ECHO_NONCE_LEN: usize = 8;
/// Hop limit of the echo test (Miredo's value).
pub const ECHO_HOP_LIMIT: u8 = 128;
/// Hop limit of the client's bubbles: link-scope on the Teredo pseudo-link (as the relay's
/// default; Miredo sends 0, every known receiver accepts both).
pub const BUBBLE_HOP_LIMIT: u8 = 255;
/// Datagrams waiting in [`Client::poll_output`]; beyond it outputs are dropped
/// (`output_queue_full`).
pub const MAX_OUTPUTS: usize = 256;
/// Bytes waiting in [`Client::poll_output`].
pub const MAX_OUTPUT_BYTES: usize = 512 * 1024;
/// Host packets waiting in [`Client::poll_output`]; beyond it deliveries are dropped
/// (`output_queue_full`).
pub const MAX_DELIVERIES: usize = 256;
/// Bytes of host packets waiting in [`Client::poll_output`].
pub const MAX_DELIVERY_BYTES: usize = 512 * 1024;
/// Answers to relayed (indirect) bubbles per second, long-run ([`peer::take_token`]).
pub const REPLY_BUBBLE_RATE: u32 = 10;
/// Answers to relayed bubbles that may be sent back to back.
pub const REPLY_BUBBLE_BURST: u32 = 10;

/// Something the driver may want to log or act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The state changed (the first event is the initial probe state).
    StateChanged(State),
    /// The client (re)qualified; follows `StateChanged(Qualified)`.
    Qualified {
        /// The Teredo address.
        address: Ipv6Addr,
        /// The NAT type concluded.
        nat: NatType,
    },
    /// A refresh found a new mapping: `old` is invalid, use `new` (RFC 4380 §5.2.5).
    AddressChanged {
        /// The previous address.
        old: Ipv6Addr,
        /// The new address.
        new: Ipv6Addr,
    },
    /// The client went offline; follows `StateChanged(Offline)` when the state changed.
    Failed {
        /// Why.
        error: ClientError,
    },
    /// A peer became trusted, or its mapping changed: packets to it now go to `mapping`
    /// (for a native peer, the relay that answered the echo test).
    PeerTrusted {
        /// The peer's IPv6 address.
        peer: Ipv6Addr,
        /// Where its packets go.
        mapping: SocketAddrV4,
    },
    /// A peer did not answer any probe: its queue was dropped and packets to it are refused
    /// until the probe window ends.
    PeerUnreachable {
        /// The peer's IPv6 address.
        peer: Ipv6Addr,
    },
}

/// What an input was accepted as: the `Ok` of [`Client::handle_udp`] and
/// [`Client::handle_ipv6`]. What it produced waits in [`Client::poll_output`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Handled {
    /// A router advertisement answering one of our RSs (qualification or refresh).
    RouterAdvertisement,
    /// A bubble the server relayed: answered with a direct bubble to its origin, unless
    /// the answer rate limit held it back.
    RelayedBubble,
    /// A bubble straight from a peer: the peer is trusted.
    Bubble,
    /// The echo reply of our direct IPv6 connectivity test (or a late one): the relay that
    /// brought it is trusted for the peer.
    EchoReply,
    /// An IPv6 packet for the host: it waits in [`Client::poll_output`] as
    /// [`Output::Ipv6`](crate::io::Output::Ipv6).
    Delivered,
    /// An application packet to a trusted peer: it waits in [`Client::poll_output`].
    Sent,
    /// An application packet held in its peer's queue while the peer is being reached.
    Queued,
    /// A local discovery bubble ([`Client::handle_discovery`]): its sender is a local peer.
    DiscoveryBubble,
}

impl Handled {
    /// snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RouterAdvertisement => "router_advertisement",
            Self::RelayedBubble => "relayed_bubble",
            Self::Bubble => "bubble",
            Self::EchoReply => "echo_reply",
            Self::Delivered => "delivered",
            Self::Sent => "sent",
            Self::Queued => "queued",
            Self::DiscoveryBubble => "discovery_bubble",
        }
    }
}

/// `now + d`, or `None` when that overflows `Instant` (the timer then never fires).
fn after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The client state machine. See the module documentation.
pub struct Client {
    cfg: ClientConfig,
    rng: Box<dyn RngCore + Send>,
    local: SocketAddrV4,
    state: State,
    nat: NatType,
    error: Option<ClientError>,
    /// The mapping in use (qualified) or last learned.
    mapping: Option<SocketAddrV4>,
    /// The address; `Some` only while qualified.
    address: Option<Ipv6Addr>,
    /// Random flag bits and the mapping they were drawn for (RFC 5991: once per mapping).
    random_bits: Option<(SocketAddrV4, u16)>,
    /// The cone value of the RS that qualified (used for refreshes, RFC 4380 §5.2.5).
    qualified_cone: bool,
    exchange: Option<Exchange>,
    next_refresh: Option<Instant>,
    retry_at: Option<Instant>,
    last_activity: Instant,
    pending: Option<PendingRs>,
    events: VecDeque<Event>,
    counters: ClientCounters,
    /// The peer table (ordered, so that everything is a deterministic function of the
    /// inputs and the seed).
    peers: BTreeMap<Ipv6Addr, Peer>,
    /// Probe timers `(due, peer)`; a peer's live record is the one equal to its `deadline`.
    timers: BTreeSet<(Instant, Ipv6Addr)>,
    /// Bytes in all peer queues.
    queued_bytes: usize,
    /// Datagrams waiting in [`Self::poll_output`] after the RS.
    outputs: VecDeque<Queued>,
    output_bytes: usize,
    /// Host packets waiting in [`Self::poll_output`], after the datagrams.
    deliveries: VecDeque<Vec<u8>>,
    delivery_bytes: usize,
    /// Token bucket of the answers to relayed bubbles, in thousandths of a token.
    reply_tokens: u64,
    reply_last: Instant,
    /// RFC 6081 §5.3 state.
    upnp: upnp::UpnpState,
    /// RFC 6081 §5.4/§5.5 state: the Port-Preserving NAT flag, random ports, their timers.
    ports: random_port::PortsState,
    /// When the next local discovery bubble is due (RFC 4380 §5.2.8).
    next_discovery: Option<Instant>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("local", &self.local)
            .field("state", &self.state)
            .field("nat", &self.nat)
            .field("mapping", &self.mapping)
            .field("address", &self.address)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Creates a client bound to `local` (its own socket address, used to detect "no NAT"
    /// and port preservation: pass the real address, not 0.0.0.0) and starts qualifying:
    /// the first RS is waiting in [`Self::poll_output`] — unless the managed-network rule
    /// applies, in which case the client stays offline for good.
    pub fn new(
        config: ClientConfig,
        rng: impl RngCore + Send + 'static,
        local: SocketAddrV4,
        now: Instant,
    ) -> Self {
        let mut c = Self {
            cfg: config,
            rng: Box::new(rng),
            local,
            state: State::Offline,
            nat: NatType::Unknown,
            error: None,
            mapping: None,
            address: None,
            random_bits: None,
            qualified_cone: false,
            exchange: None,
            next_refresh: None,
            retry_at: None,
            last_activity: now,
            pending: None,
            events: VecDeque::new(),
            counters: ClientCounters::default(),
            peers: BTreeMap::new(),
            timers: BTreeSet::new(),
            queued_bytes: 0,
            outputs: VecDeque::new(),
            output_bytes: 0,
            deliveries: VecDeque::new(),
            delivery_bytes: 0,
            reply_tokens: u64::from(REPLY_BUBBLE_BURST) * 1000,
            reply_last: now,
            upnp: upnp::UpnpState::default(),
            ports: random_port::PortsState::default(),
            next_discovery: None,
        };
        c.start_qualification(now);
        c
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The client's socket address.
    pub fn local(&self) -> SocketAddrV4 {
        self.local
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The NAT type concluded so far (`Unknown` while qualifying).
    pub fn nat_type(&self) -> NatType {
        self.nat
    }

    /// The Teredo address; `Some` only while qualified.
    pub fn address(&self) -> Option<Ipv6Addr> {
        self.address
    }

    /// The NAT mapping in use, or the last one learned (e.g. M1 when offline behind a
    /// symmetric NAT, or while dormant). Cleared when qualification starts over and when
    /// the server became unreachable.
    pub fn mapping(&self) -> Option<SocketAddrV4> {
        self.mapping
    }

    /// Why the client is offline; `None` in every other state.
    pub fn error(&self) -> Option<ClientError> {
        self.error
    }

    /// The counters.
    pub fn counters(&self) -> &ClientCounters {
        &self.counters
    }

    /// A snapshot for `show state`-like output.
    pub fn status(&self) -> Status {
        Status {
            client_type: self.cfg.client_type,
            server_name: self
                .cfg
                .server_name
                .clone()
                .unwrap_or_else(|| self.cfg.server.to_string()),
            refresh_interval: self.cfg.refresh_interval,
            client_port: self.local.port(),
            state: self.state,
            managed_network: self.cfg.managed_network,
            nat: self.nat,
            upnp: self.upnp.enabled,
            port_preserving: self.mapping.map(|m| m.port() == self.local.port()),
            local_mapping: self.local,
            external_mapping: self.mapping,
            error: self.error,
            address: self.address,
        }
    }

    /// Records application activity (the data path calls this when it sends or receives
    /// through the tunnel). It pushes back the `dormant` deadline and, in `dormant`, wakes
    /// the client up (as Windows does when an application needs Teredo).
    pub fn note_activity(&mut self, now: Instant) {
        self.last_activity = self.last_activity.max(now);
        if self.state == State::Dormant {
            self.wake(now);
        }
    }

    /// Leaves `dormant` and qualifies again; no effect in other states.
    pub fn wake(&mut self, now: Instant) {
        if self.state == State::Dormant {
            self.last_activity = self.last_activity.max(now);
            tracing::debug!("teredo client waking up");
            self.start_qualification(now);
        }
    }

    /// When [`Self::handle_timeout`] wants to be called; `None` when nothing is scheduled
    /// (offline for good, dormant).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let exchange = self.exchange.and_then(|e| e.deadline);
        match self.state {
            State::Offline => earliest(exchange, self.retry_at),
            State::Probe(_) => exchange,
            State::Qualified => {
                let refresh = if self.exchange.is_some() {
                    exchange
                } else {
                    self.next_refresh
                };
                let probes = self.timers.first().map(|(t, _)| *t);
                let probes = earliest(probes, self.discovery_deadline());
                let probes = earliest(probes, self.ports_deadline());
                earliest(earliest(refresh, self.dormant_deadline()), probes)
            }
            State::Dormant => None,
        }
    }

    fn dormant_deadline(&self) -> Option<Instant> {
        if self.cfg.default_qualified {
            return None;
        }
        self.cfg
            .dormant_after
            .and_then(|d| after(self.last_activity, d))
    }

    /// Fires whatever timers are due at `now`: retransmissions, phase failures, refreshes,
    /// the dormant transition, the offline retry, and the probes of the data path
    /// (bubble and echo-test retransmissions, give-ups). Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Qualified {
            self.fire_probe_timers(now);
            self.ports_timers(now);
            self.discovery_timer(now);
        }
        if self.state == State::Offline {
            if self.retry_at.is_some_and(|t| t <= now) {
                tracing::debug!("teredo client retrying qualification");
                self.start_qualification(now);
            }
            return;
        }
        if self.state == State::Qualified && self.dormant_deadline().is_some_and(|t| t <= now) {
            self.enter_dormant();
            return;
        }
        if let Some(ex) = self.exchange {
            if ex.deadline.is_some_and(|t| t <= now) {
                if ex.sent < self.cfg.attempts.max(1) {
                    self.send_rs(now);
                } else {
                    self.exchange = None;
                    self.exchange_failed(now, ex.step);
                }
            }
            return;
        }
        if self.state == State::Qualified && self.next_refresh.is_some_and(|t| t <= now) {
            self.next_refresh = None;
            tracing::debug!(cone = self.qualified_cone, "teredo client refreshing");
            self.begin_exchange(now, Step::Refresh);
        }
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Handles a datagram received from `from` on the client's socket `local`:
    /// [`Local::Primary`], or one of its random ports ([`Local::Port`], see
    /// [`Self::extra_ports`]; a closed one refuses everything, `closed_port`): a router
    /// advertisement (qualification path), or — while
    /// qualified — a packet of the data path (see the module documentation; bubbles relayed
    /// by the server are answered, accepted packets wait in [`Self::poll_output`]). `Ok`
    /// says what it was accepted as. A refused datagram returns its counted [`DropReason`]
    /// (`ra_rejected` or `data_rejected`) and changes nothing — except a packet that proved
    /// its peer but did not fit the delivery queue (`output_queue_full`): the peer is
    /// trusted all the same.
    ///
    /// Which path: an ICMPv6 router advertisement (from anyone) is checked as an RA below;
    /// anything else from the server while not qualified is `not_router_advertisement`, from
    /// elsewhere `not_qualified`; malformed datagrams count on the qualification path when
    /// they come from the server or the client is not qualified.
    ///
    /// RA checks, in order: source is the primary or secondary server address with port 3544
    /// (`unexpected_source`); well-formed Teredo packet (wire reasons); ICMPv6 RA
    /// (`not_router_advertisement`); auth header whose nonce is one of the outstanding RSs'
    /// (`bad_nonce`); confirmation 0 (`bad_confirmation`); origin indication
    /// (`missing_origin`); valid RA with exactly one PIO (wire reasons); IPv6 destination
    /// == the RS's link-local (`wrong_destination`); PIO `2001:0:<server>::/64`, 3ffe:831f
    /// accepted and rewritten (`foreign_prefix`); MTU option in 1280..=65535 (`bad_mtu`);
    /// sent from the address the cone rule predicts — the other address for a cone RS, the
    /// same one otherwise (`unexpected_server_address`).
    pub fn handle_udp(
        &mut self,
        now: Instant,
        local: Local,
        from: SocketAddrV4,
        data: &[u8],
    ) -> Result<Handled, DropReason> {
        let (path, r) = self.dispatch(now, local, from, data);
        match (path, r) {
            (Path::Qualification, Ok(_)) => self.counters.ra_accepted += 1,
            (Path::Data, Ok(_)) => self.counters.data_accepted += 1,
            (path, Err(reason)) => {
                self.counters.count_reject(reason, path);
                tracing::debug!(%from, local = local.as_str(), reason = reason.as_str(), len = data.len(), state = %self.state, ?path, "client drop");
            }
        }
        r
    }

    fn is_server(&self, from: SocketAddrV4) -> bool {
        from.port() == TEREDO_PORT
            && (*from.ip() == self.cfg.server || *from.ip() == self.cfg.secondary_addr())
    }

    fn dispatch(
        &mut self,
        now: Instant,
        local: Local,
        from: SocketAddrV4,
        data: &[u8],
    ) -> (Path, Result<Handled, DropReason>) {
        let port = match local {
            Local::Port(p) if !self.listens_on(p) => {
                return (Path::Data, Err(DropReason::ClosedPort));
            }
            Local::Port(p) => Some(p),
            Local::Primary | Local::Secondary => None,
        };
        let from_server = self.is_server(from);
        let qualified = self.state == State::Qualified && self.address.is_some();
        let malformed_path = if from_server || !qualified {
            Path::Qualification
        } else {
            Path::Data
        };
        if data.len() > MAX_UDP_PAYLOAD {
            return (malformed_path, Err(DropReason::Oversized));
        }
        let pkt = match TeredoPacket::parse(data) {
            Ok(p) => p,
            Err(e) => return (malformed_path, Err(e.into())),
        };
        let is_ra = pkt.next_header() == NEXT_HEADER_ICMPV6
            && pkt.ipv6_payload().first() == Some(&ICMPV6_ROUTER_ADVERTISEMENT);
        if is_ra {
            return (
                Path::Qualification,
                self.router_advertisement(now, from, &pkt)
                    .map(|()| Handled::RouterAdvertisement),
            );
        }
        if !qualified {
            return if from_server {
                (Path::Qualification, Err(DropReason::NotRouterAdvertisement))
            } else {
                (Path::Data, Err(DropReason::NotQualified))
            };
        }
        if let Some(port) = port {
            // RFC 6081 §5.4.4.5: the random port of one peer.
            return (Path::Data, self.random_port_packet(now, port, from, &pkt));
        }
        (Path::Data, self.data_packet(now, from, &pkt, from_server))
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.counters.events_dropped += 1;
        }
        self.events.push_back(e);
    }
}
