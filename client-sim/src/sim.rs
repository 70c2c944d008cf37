//! A simulated IPv4 Internet in one process (DESIGN.md, "Three ways to run the same
//! components", mode 1).
//!
//! The sans-IO Teredo server, any number of sans-IO Teredo clients (each behind its own
//! [`Nat`], or directly on the Internet) and optional on-path observers exchange datagrams
//! through an event queue. Nothing touches a socket or a clock: time is an [`Instant`]
//! chosen by the caller that jumps to the next queued delivery or the next
//! `poll_timeout()` of any node, so two minutes of protocol run in microseconds and an hour
//! of idling costs nothing.
//!
//! # Model
//! * The **Internet** delivers every datagram after a fixed one-way latency
//!   ([`Sim::new`]), in order of (delivery time, sequence number): same inputs, same order.
//!   Routing is by destination IPv4: the server's two addresses, a NAT's external
//!   addresses, or a client without NAT; anything else is counted as `no_route`.
//! * A **NAT** sits between a client and the Internet: outbound datagrams go through
//!   [`Nat::outbound`] (mapping, hairpinning, loss), inbound ones through [`Nat::inbound`]
//!   (filtering!). Its drops are counted by the NAT itself ([`Nat::counters`]).
//! * The **server** is [`teredo::server::Server`]; it can be switched off
//!   ([`Sim::set_server_up`]) to model an unreachable server, and restarted with its state
//!   lost ([`Sim::restart_server`]).
//! * **Faults** on the path: optional jitter ([`Sim::set_jitter`]) adds a random extra delay
//!   per datagram, so datagrams overtake each other (counted as `reordered`); loss is the
//!   NATs' (`NatConfig::loss`); a relay restart replaces the relay core
//!   ([`Sim::replace_relay`]).
//! * An optional **native IPv6 segment** ([`Sim::add_native`]) carries what the server
//!   forwards natively: an [`EchoHost`] (e.g. 2001:db8::99) answers ICMPv6 echo and UDP echo
//!   (port 7), and the segment routes 2001::/32 to a sans-IO [`teredo::relay::Relay`] that
//!   also sits on the IPv4 Internet at its own address and port. Native packets take the
//!   same one-way latency. Without it, the server's native output is discarded
//!   (`native_discarded`).
//! * **Applications**: [`Sim::send_ipv6`] hands a packet to a client's data path; packets
//!   delivered to a client are logged in [`ClientNode::delivered`], and a client with
//!   [`ClientNode::echo_responder`] answers echo requests as a host's stack would.
//! * An **observer** ([`Sim::set_observer`]) sees every datagram put on the Internet (as an
//!   on-path attacker or a tap would) and may inject datagrams of its own.
//! * Every datagram on the Internet is logged ([`Sim::trace`]) and, if asked, captured as a
//!   pcap file ([`Sim::enable_pcap`]), native IPv6 packets too.
//!
//! # Bounds
//! The run loop stops after [`Sim::step_limit`] steps (an error, never a hang), every
//! datagram is at most 65,507 bytes, the queue only grows by what nodes send, and the log of
//! delivered packets keeps at most [`MAX_DELIVERED_LOG`] per client.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use netsim::{Nat, Outbound};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use teredo::addr::is_teredo;
use teredo::client::{Client, Event};
use teredo::io::{Local, Output};
use teredo::relay::{Handled as RelayHandled, Relay};
use teredo::server::{Server, ServerConfig};
use teredo::DropReason;

use crate::packets;
use crate::pcap::{PcapLog, MAX_UDP_PAYLOAD};

/// Default one-way latency of the simulated Internet.
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(10);

/// Default bound on [`Sim::run_until`] steps (deliveries plus timer firings).
pub const DEFAULT_STEP_LIMIT: u64 = 1_000_000;

/// Cap on the datagrams an observer may inject per observed datagram.
pub const MAX_INJECTED_PER_DATAGRAM: usize = 16;

/// Packets kept per client in [`ClientNode::delivered`]; later ones are counted only.
pub const MAX_DELIVERED_LOG: usize = 4096;

/// Bound on the datagrams and deliveries drained from one client per input (the client's
/// own output queue holds at most 256).
const MAX_DRAIN: usize = 4096;

/// One UDP datagram on the simulated Internet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Source address and port as the receiver sees them.
    pub from: SocketAddrV4,
    /// Destination.
    pub to: SocketAddrV4,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// Who put a datagram on the Internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sender {
    /// The server (a router advertisement or a relayed packet).
    Server,
    /// Client `n` (through its NAT, if any).
    Client(usize),
    /// The relay (bubbles and packets for clients).
    Relay,
    /// An observer's injection.
    Injected,
}

/// One datagram of the Internet log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// Virtual time it was sent, since the start.
    pub at: Duration,
    /// Who sent it.
    pub sender: Sender,
    /// Source on the wire.
    pub from: SocketAddrV4,
    /// Destination.
    pub to: SocketAddrV4,
    /// UDP payload length.
    pub len: usize,
}

/// Counters of the simulated Internet itself (the NATs and the nodes count their own).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimCounters {
    /// Datagrams put on the Internet.
    pub datagrams: u64,
    /// Datagrams to an address nobody has.
    pub no_route: u64,
    /// Datagrams to the server's addresses while it is down, or to another port.
    pub server_unreachable: u64,
    /// Datagrams the server refused, per drop reason.
    pub server_dropped: BTreeMap<&'static str, u64>,
    /// Packets the server handed to its native IPv6 side while there is no native segment.
    pub native_discarded: u64,
    /// Packets put on the native IPv6 segment (by the server, the relay, the echo host).
    pub native_packets: u64,
    /// Native packets for an address nobody has (neither the echo host nor 2001::/32).
    pub native_no_route: u64,
    /// Observer injections refused because they exceeded [`MAX_INJECTED_PER_DATAGRAM`] or
    /// 65,507 bytes.
    pub injections_refused: u64,
    /// Datagrams that arrived after one put on the Internet later than them (jitter).
    pub reordered: u64,
    /// Server restarts ([`Sim::restart_server`]).
    pub server_restarts: u64,
    /// Relay restarts ([`Sim::replace_relay`]).
    pub relay_restarts: u64,
}

/// Why a run stopped early.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The step bound was reached before the end time.
    #[error("simulation stopped after {steps} steps at {at:?} of virtual time (step limit)")]
    StepLimit {
        /// Steps taken.
        steps: u64,
        /// Virtual time reached.
        at: Duration,
    },
}

/// A client on the simulated network.
#[derive(Debug)]
pub struct ClientNode {
    /// The state machine.
    pub client: Client,
    /// Its NAT; `None` = the client's own address is on the Internet.
    pub nat: Option<Nat>,
    /// Every event the client emitted, with its virtual time.
    pub events: Vec<(Duration, Event)>,
    /// Packets the client delivered to its application, with their virtual time (the first
    /// [`MAX_DELIVERED_LOG`]).
    pub delivered: Vec<(Duration, Vec<u8>)>,
    /// Deliveries beyond [`MAX_DELIVERED_LOG`] (not logged).
    pub delivered_unlogged: u64,
    /// Answer ICMPv6 echo requests delivered to the client (as a host's stack would).
    pub echo_responder: bool,
}

/// The host on the native segment: answers ICMPv6 echo requests and UDP datagrams to
/// [`packets::UDP_ECHO_PORT`] sent to its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoHost {
    /// Its IPv6 address.
    pub addr: Ipv6Addr,
    /// Answering (a host that is down receives and counts, but answers nothing).
    pub up: bool,
    /// Echo requests received.
    pub echo_requests: u64,
    /// UDP datagrams received.
    pub udp_datagrams: u64,
    /// Packets answered.
    pub answered: u64,
    /// Echo replies received (answers to [`Sim::send_native`] echo requests).
    pub echo_replies: u64,
}

impl EchoHost {
    /// A host at `addr`, up.
    pub fn new(addr: Ipv6Addr) -> Self {
        Self {
            addr,
            up: true,
            echo_requests: 0,
            udp_datagrams: 0,
            answered: 0,
            echo_replies: 0,
        }
    }
}

/// The relay and its address on the IPv4 Internet.
struct RelayNode {
    relay: Relay,
    addr: SocketAddrV4,
}

impl ClientNode {
    /// The client's own socket address (private behind a NAT).
    pub fn local(&self) -> SocketAddrV4 {
        self.client.local()
    }
}

/// An on-path observer: sees each datagram put on the Internet (with its virtual send time)
/// and returns datagrams to inject, which leave [`Sim`]'s latency later.
pub type Observer = Box<dyn FnMut(Duration, &Datagram) -> Vec<Datagram> + Send>;

enum Delivery {
    /// Put a datagram on the Internet (a delayed send).
    Launch(Sender, Datagram),
    /// A datagram reaches its destination on the Internet; the number is its launch order.
    Arrive(Datagram, u64),
    /// A datagram reaches a client behind its NAT.
    Inside {
        node: usize,
        from: SocketAddrV4,
        payload: Vec<u8>,
    },
    /// A packet reaches its destination on the native IPv6 segment.
    Native(Vec<u8>),
}

struct Queued {
    at: Instant,
    seq: u64,
    what: Delivery,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest (time, seq) must come first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The simulated network. See the module documentation.
pub struct Sim {
    t0: Instant,
    now: Instant,
    latency: Duration,
    queue: BinaryHeap<Queued>,
    seq: u64,
    server: Server,
    server_up: bool,
    clients: Vec<ClientNode>,
    trace: Vec<TraceEntry>,
    pcap: Option<PcapLog>,
    observer: Option<Observer>,
    counters: SimCounters,
    steps: u64,
    step_limit: u64,
    server_buf: Vec<u8>,
    relay: Option<RelayNode>,
    echo_host: Option<EchoHost>,
    /// Largest extra delay per datagram, and the RNG drawing it.
    jitter: Option<(Duration, ChaCha8Rng)>,
    /// Datagrams launched so far, and the latest launch number that arrived.
    launched: u64,
    latest_arrived: u64,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("elapsed", &self.elapsed())
            .field("queued", &self.queue.len())
            .field("clients", &self.clients.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A network with a server (up) and no clients, at virtual time `t0`.
    pub fn new(t0: Instant, server: ServerConfig, latency: Duration) -> Self {
        Self {
            t0,
            now: t0,
            latency,
            queue: BinaryHeap::new(),
            seq: 0,
            server: Server::new(server),
            server_up: true,
            clients: Vec::new(),
            trace: Vec::new(),
            pcap: None,
            observer: None,
            counters: SimCounters::default(),
            steps: 0,
            step_limit: DEFAULT_STEP_LIMIT,
            server_buf: vec![0; MAX_UDP_PAYLOAD],
            relay: None,
            echo_host: None,
            jitter: None,
            launched: 0,
            latest_arrived: 0,
        }
    }

    /// Restarts the server: a fresh core with the same configuration (every piece of state
    /// lost), up or down as before. Use with [`Self::set_server_up`] for the downtime.
    pub fn restart_server(&mut self) {
        self.server = Server::new(*self.server.config());
        self.counters.server_restarts += 1;
    }

    /// Restarts the relay: `relay` (a fresh core) replaces the current one at the same
    /// address; no effect without a native segment.
    pub fn replace_relay(&mut self, relay: Relay) {
        if let Some(r) = self.relay.as_mut() {
            r.relay = relay;
            self.counters.relay_restarts += 1;
        }
    }

    /// Adds a uniformly drawn extra delay in `0..=max` to every datagram put on the
    /// Internet from now on (drawn from an RNG seeded with `seed`), so that datagrams sent
    /// close together may overtake each other. A zero `max` turns it off.
    pub fn set_jitter(&mut self, max: Duration, seed: u64) {
        self.jitter = (!max.is_zero()).then(|| (max, ChaCha8Rng::seed_from_u64(seed)));
    }

    /// The native host sends `packet` (an IPv6 packet) now on the native segment: to a
    /// Teredo address it goes through the relay. Nothing without a native segment.
    pub fn send_native(&mut self, packet: Vec<u8>) {
        if self.relay.is_some() {
            self.native_send(packet);
        }
    }

    /// Adds the native IPv6 segment: `echo_host`, and `relay` (reached over IPv4 at
    /// `relay_addr`, routed 2001::/32 on the native side). Replaces any previous one.
    pub fn add_native(&mut self, relay: Relay, relay_addr: SocketAddrV4, echo_host: EchoHost) {
        self.relay = Some(RelayNode {
            relay,
            addr: relay_addr,
        });
        self.echo_host = Some(echo_host);
    }

    /// The relay core, if there is a native segment.
    pub fn relay(&self) -> Option<&Relay> {
        self.relay.as_ref().map(|r| &r.relay)
    }

    /// The relay's IPv4 address and port, if there is a native segment.
    pub fn relay_addr(&self) -> Option<SocketAddrV4> {
        self.relay.as_ref().map(|r| r.addr)
    }

    /// The echo host, if there is a native segment.
    pub fn echo_host(&self) -> Option<&EchoHost> {
        self.echo_host.as_ref()
    }

    /// The echo host, mutably (e.g. to take it down).
    pub fn echo_host_mut(&mut self) -> Option<&mut EchoHost> {
        self.echo_host.as_mut()
    }

    /// The application of client `i` sends `packet` now (through
    /// [`Client::handle_ipv6`]); whatever the client emits leaves at once. `Err` is the
    /// client's drop reason (`not_qualified` for an unknown client).
    pub fn send_ipv6(&mut self, i: usize, packet: &[u8]) -> Result<(), DropReason> {
        let now = self.now;
        let Some(node) = self.clients.get_mut(i) else {
            return Err(DropReason::NotQualified);
        };
        let r = node.client.handle_ipv6(now, packet);
        self.pump_client(i);
        r.map(|_| ())
    }

    /// Adds a client, behind `nat` or (with `None`) directly on the Internet at its own
    /// address; returns its index. Its first RS leaves at the next [`Self::run_until`].
    pub fn add_client(&mut self, client: Client, nat: Option<Nat>) -> usize {
        self.clients.push(ClientNode {
            client,
            nat,
            events: Vec::new(),
            delivered: Vec::new(),
            delivered_unlogged: 0,
            echo_responder: false,
        });
        self.clients.len() - 1
    }

    /// Switches the server on or off (off: datagrams to it are lost, counted as
    /// `server_unreachable`).
    pub fn set_server_up(&mut self, up: bool) {
        self.server_up = up;
    }

    /// Installs an on-path observer (replacing any previous one).
    pub fn set_observer(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    /// Starts capturing every datagram on the Internet.
    pub fn enable_pcap(&mut self) {
        self.pcap = Some(PcapLog::new());
    }

    /// Changes the step bound of [`Self::run_until`].
    pub fn set_step_limit(&mut self, limit: u64) {
        self.step_limit = limit;
    }

    /// The step bound.
    pub fn step_limit(&self) -> u64 {
        self.step_limit
    }

    /// Puts `datagram` on the Internet at `at` (not before now), as an injection.
    pub fn inject(&mut self, at: Instant, datagram: Datagram) {
        if datagram.payload.len() > MAX_UDP_PAYLOAD {
            self.counters.injections_refused += 1;
            return;
        }
        let at = at.max(self.now);
        self.push(at, Delivery::Launch(Sender::Injected, datagram));
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.t0)
    }

    /// The clients.
    pub fn clients(&self) -> &[ClientNode] {
        &self.clients
    }

    /// One client.
    pub fn client(&self, i: usize) -> Option<&ClientNode> {
        self.clients.get(i)
    }

    /// One client, mutably (e.g. to call `note_activity`; run the sim afterwards so that
    /// what it queued is sent).
    pub fn client_mut(&mut self, i: usize) -> Option<&mut ClientNode> {
        self.clients.get_mut(i)
    }

    /// The server core.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Every datagram put on the Internet so far.
    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }

    /// The network's counters.
    pub fn counters(&self) -> &SimCounters {
        &self.counters
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The capture, if [`Self::enable_pcap`] was called; stops capturing.
    pub fn take_pcap(&mut self) -> Option<Vec<u8>> {
        self.pcap.take().map(PcapLog::into_bytes)
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) -> Result<(), SimError> {
        let end = self.now.checked_add(d).unwrap_or(self.now);
        self.run_until(end)
    }

    /// Runs until virtual time `end`: delivers queued datagrams and fires every node's
    /// timers in time order, then sets the clock to `end`. Events at exactly `end` are
    /// processed.
    pub fn run_until(&mut self, end: Instant) -> Result<(), SimError> {
        for i in 0..self.clients.len() {
            self.pump_client(i);
        }
        loop {
            let queued = self.queue.peek().map(|q| q.at);
            let next = earliest(queued, self.next_timer());
            let Some(next) = next.filter(|n| *n <= end) else {
                break;
            };
            self.steps += 1;
            if self.steps > self.step_limit {
                return Err(SimError::StepLimit {
                    steps: self.steps - 1,
                    at: self.elapsed(),
                });
            }
            self.now = self.now.max(next);
            if queued.is_some_and(|q| q <= self.now) {
                if let Some(q) = self.queue.pop() {
                    self.process(q.what);
                }
            } else {
                self.fire_timers();
            }
        }
        self.now = self.now.max(end);
        Ok(())
    }

    fn next_timer(&self) -> Option<Instant> {
        let relay = self.relay.as_ref().and_then(|r| r.relay.poll_timeout());
        self.clients.iter().fold(relay, |acc, c| {
            let nat = c.nat.as_ref().and_then(Nat::poll_timeout);
            earliest(earliest(acc, c.client.poll_timeout()), nat)
        })
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        if let Some(r) = self.relay.as_mut() {
            if r.relay.poll_timeout().is_some_and(|t| t <= now) {
                r.relay.handle_timeout(now);
                self.drain_relay();
            }
        }
        for i in 0..self.clients.len() {
            let node = &mut self.clients[i];
            if let Some(nat) = node.nat.as_mut() {
                if nat.poll_timeout().is_some_and(|t| t <= now) {
                    nat.expire(now);
                }
            }
            if node.client.poll_timeout().is_some_and(|t| t <= now) {
                node.client.handle_timeout(now);
                self.pump_client(i);
            }
        }
    }

    fn push(&mut self, at: Instant, what: Delivery) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            what,
        });
    }

    /// Sends a datagram now: logs it, shows it to the observer, schedules its arrival.
    fn launch(&mut self, sender: Sender, d: Datagram) {
        let at = self.elapsed();
        self.counters.datagrams += 1;
        self.trace.push(TraceEntry {
            at,
            sender,
            from: d.from,
            to: d.to,
            len: d.payload.len(),
        });
        if let Some(pcap) = self.pcap.as_mut() {
            pcap.record(at, d.from, d.to, &d.payload);
        }
        if sender != Sender::Injected {
            if let Some(observer) = self.observer.as_mut() {
                let injected = observer(at, &d);
                let inject_at = self.now + self.latency;
                for (k, i) in injected.into_iter().enumerate() {
                    if k >= MAX_INJECTED_PER_DATAGRAM || i.payload.len() > MAX_UDP_PAYLOAD {
                        self.counters.injections_refused += 1;
                        continue;
                    }
                    self.push(inject_at, Delivery::Launch(Sender::Injected, i));
                }
            }
        }
        let extra = match self.jitter.as_mut() {
            Some((max, rng)) => {
                let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.random_range(0..=nanos))
            }
            None => Duration::ZERO,
        };
        self.launched += 1;
        let arrive = self.now + self.latency + extra;
        self.push(arrive, Delivery::Arrive(d, self.launched));
    }

    /// Sends `d` at `at`: now, or queued for later.
    fn send_at(&mut self, at: Instant, sender: Sender, d: Datagram) {
        if at <= self.now {
            self.launch(sender, d);
        } else {
            self.push(at, Delivery::Launch(sender, d));
        }
    }

    fn process(&mut self, what: Delivery) {
        match what {
            Delivery::Launch(sender, d) => self.launch(sender, d),
            Delivery::Arrive(d, n) => {
                if n < self.latest_arrived {
                    self.counters.reordered += 1;
                }
                self.latest_arrived = self.latest_arrived.max(n);
                self.arrive(d);
            }
            Delivery::Inside {
                node,
                from,
                payload,
            } => self.deliver_inside(node, from, &payload),
            Delivery::Native(packet) => self.native_arrive(&packet),
        }
    }

    /// Puts a packet on the native segment: logged, captured, delivered a latency later.
    fn native_send(&mut self, packet: Vec<u8>) {
        self.counters.native_packets += 1;
        let at = self.elapsed();
        if let Some(pcap) = self.pcap.as_mut() {
            pcap.record_ipv6(at, &packet);
        }
        let arrive = self.now + self.latency;
        self.push(arrive, Delivery::Native(packet));
    }

    /// A native packet reaches the echo host, the relay (2001::/32), or nobody.
    fn native_arrive(&mut self, packet: &[u8]) {
        let Some(dst) = packet
            .get(24..40)
            .and_then(|d| <[u8; 16]>::try_from(d).ok())
            .map(Ipv6Addr::from)
        else {
            self.counters.native_no_route += 1;
            return;
        };
        if let Some(h) = self.echo_host.as_mut().filter(|h| h.addr == dst) {
            match packets::parse(packet) {
                Some(packets::Parsed::Echo { reply: false, .. }) => h.echo_requests += 1,
                Some(packets::Parsed::Echo { reply: true, .. }) => h.echo_replies += 1,
                Some(packets::Parsed::Udp { .. }) => h.udp_datagrams += 1,
                _ => {}
            }
            let answer = if h.up {
                packets::answer(packet, true)
            } else {
                None
            };
            if let Some(a) = answer {
                h.answered += 1;
                self.native_send(a);
            }
            return;
        }
        let now = self.now;
        match self.relay.as_mut() {
            Some(r) if is_teredo(&dst) => {
                // Refusals are counted by the relay (`RelayCounters::dropped`).
                let r = r.relay.handle_ipv6(now, packet);
                self.drain_relay();
                self.relay_in_place(r, packet);
            }
            _ => self.counters.native_no_route += 1,
        }
    }

    /// Sends what the relay produced: datagrams on the Internet, packets on the native side.
    fn drain_relay(&mut self) {
        let mut buf = std::mem::take(&mut self.server_buf);
        buf.resize(MAX_UDP_PAYLOAD, 0);
        while let Some(r) = self.relay.as_mut() {
            let from = r.addr;
            let Some(out) = r.relay.poll_output(&mut buf) else {
                break;
            };
            let bytes = buf.get(..out.len()).unwrap_or_default().to_vec();
            self.relay_send(from, out, bytes);
        }
        self.server_buf = buf;
    }

    /// Sends what the relay forwards out of the input itself (zero copy in a driver; the
    /// contract of [`RelayHandled`]), after its queued outputs.
    fn relay_in_place(&mut self, r: Result<RelayHandled, DropReason>, input: &[u8]) {
        let Some(ip) = r.ok().and_then(|h| h.in_place()) else {
            return;
        };
        if let Some(from) = self.relay.as_ref().map(|r| r.addr) {
            self.relay_send(from, ip.output, ip.bytes(input).to_vec());
        }
    }

    fn relay_send(&mut self, from: SocketAddrV4, out: Output, bytes: Vec<u8>) {
        match out {
            Output::Udp { to, .. } => {
                self.launch(
                    Sender::Relay,
                    Datagram {
                        from,
                        to,
                        payload: bytes,
                    },
                );
            }
            _ => self.native_send(bytes),
        }
    }

    fn server_local(&self, ip: Ipv4Addr) -> Option<Local> {
        let cfg = self.server.config();
        if ip == cfg.primary {
            Some(Local::Primary)
        } else if ip == cfg.secondary {
            Some(Local::Secondary)
        } else {
            None
        }
    }

    fn arrive(&mut self, d: Datagram) {
        let now = self.now;
        if let Some(local) = self.server_local(*d.to.ip()) {
            if !self.server_up || d.to.port() != self.server.config().port {
                self.counters.server_unreachable += 1;
                return;
            }
            match self.server.handle_udp(now, local, d.from, &d.payload) {
                Ok(_) => {
                    let port = self.server.config().port;
                    let mut buf = std::mem::take(&mut self.server_buf);
                    while let Some(out) = self.server.poll_output(&mut buf) {
                        match out {
                            Output::Udp {
                                local: from_local,
                                to,
                                len,
                                ..
                            } => {
                                let from = SocketAddrV4::new(self.server.address(from_local), port);
                                let payload = buf[..len].to_vec();
                                self.launch(Sender::Server, Datagram { from, to, payload });
                            }
                            Output::Ipv6 { len, .. } if self.relay.is_some() => {
                                self.native_send(buf[..len].to_vec());
                            }
                            Output::Ipv6 { .. } => self.counters.native_discarded += 1,
                            // The server emits no other output.
                            _ => {}
                        }
                    }
                    self.server_buf = buf;
                }
                Err(reason) => {
                    *self
                        .counters
                        .server_dropped
                        .entry(reason.as_str())
                        .or_default() += 1;
                }
            }
            return;
        }
        if let Some(r) = self.relay.as_mut().filter(|r| r.addr == d.to) {
            // Refusals are counted by the relay (`RelayCounters::dropped`).
            let r = r.relay.handle_udp(now, Local::Primary, d.from, &d.payload);
            self.drain_relay();
            self.relay_in_place(r, &d.payload);
            return;
        }
        let ip = *d.to.ip();
        let target = self.clients.iter().position(|c| match &c.nat {
            Some(nat) => nat.is_external(ip),
            None => c.local() == d.to,
        });
        let Some(i) = target else {
            self.counters.no_route += 1;
            return;
        };
        let node = &mut self.clients[i];
        match node.nat.as_mut() {
            None => self.deliver_inside(i, d.from, &d.payload),
            Some(nat) => match nat.inbound(now, d.to, d.from) {
                Ok(t) if t.delay.is_zero() && t.internal == node.client.local() => {
                    self.deliver_inside(i, d.from, &d.payload);
                }
                Ok(t) if t.internal == node.client.local() => {
                    self.push(
                        now + t.delay,
                        Delivery::Inside {
                            node: i,
                            from: d.from,
                            payload: d.payload,
                        },
                    );
                }
                // A mapping of another internal host: nobody lives there in this model.
                Ok(_) => self.counters.no_route += 1,
                // Counted by the NAT.
                Err(_) => {}
            },
        }
    }

    fn deliver_inside(&mut self, i: usize, from: SocketAddrV4, payload: &[u8]) {
        let now = self.now;
        let Some(node) = self.clients.get_mut(i) else {
            return;
        };
        // Refusals are counted by the client (`ClientCounters::rejected`).
        let _ = node.client.handle_udp(now, Local::Primary, from, payload);
        self.pump_client(i);
    }

    /// Sends whatever client `i` queued, hands its deliveries to the application (which
    /// answers echo requests when it is an echo responder), and collects its events.
    fn pump_client(&mut self, i: usize) {
        let now = self.now;
        let elapsed = self.elapsed();
        let mut out: Vec<(Instant, Datagram)> = Vec::new();
        let mut inside: Vec<(Instant, SocketAddrV4, Vec<u8>)> = Vec::new();
        {
            let Some(node) = self.clients.get_mut(i) else {
                return;
            };
            let mut buf = std::mem::take(&mut self.server_buf);
            buf.resize(MAX_UDP_PAYLOAD, 0);
            // Answers to deliveries may queue more datagrams: drain both until quiet.
            let mut transmits = Vec::new();
            // The client hands out its datagrams before its deliveries, so an answer is
            // sent before the next delivery is read.
            for _ in 0..MAX_DRAIN {
                let n = match node.client.poll_output(&mut buf) {
                    Some(Output::Udp { to, len, .. }) => {
                        transmits.push((to, buf.get(..len).unwrap_or_default().to_vec()));
                        continue;
                    }
                    Some(Output::Ipv6 { len, .. }) => len,
                    Some(_) => continue,
                    None => break,
                };
                let packet = buf.get(..n).unwrap_or_default().to_vec();
                if node.echo_responder {
                    if let Some(answer) = packets::answer(&packet, false) {
                        // Refusals are counted by the client.
                        let _ = node.client.handle_ipv6(now, &answer);
                    }
                }
                if node.delivered.len() < MAX_DELIVERED_LOG {
                    node.delivered.push((elapsed, packet));
                } else {
                    node.delivered_unlogged += 1;
                }
            }
            self.server_buf = buf;
            for (to, payload) in transmits {
                let local = node.client.local();
                match node.nat.as_mut() {
                    None => out.push((
                        now,
                        Datagram {
                            from: local,
                            to,
                            payload,
                        },
                    )),
                    Some(nat) => match nat.outbound(now, local, to) {
                        Ok(Outbound::Forward(tr)) => out.push((
                            now + tr.delay,
                            Datagram {
                                from: tr.external,
                                to,
                                payload,
                            },
                        )),
                        Ok(Outbound::Hairpin(h)) => {
                            if h.to == local {
                                inside.push((now + h.delay, h.from, payload));
                            }
                        }
                        // Counted by the NAT.
                        Err(_) => {}
                    },
                }
            }
            while let Some(e) = node.client.poll_event() {
                node.events.push((elapsed, e));
            }
        }
        for (at, d) in out {
            self.send_at(at, Sender::Client(i), d);
        }
        for (at, from, payload) in inside {
            self.push(
                at,
                Delivery::Inside {
                    node: i,
                    from,
                    payload,
                },
            );
        }
    }
}

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use teredo::client::{ClientConfig, Profile, State};

    use super::*;
    use netsim::NatPreset;

    const P: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

    fn sim() -> Sim {
        Sim::new(Instant::now(), ServerConfig::new(P), DEFAULT_LATENCY)
    }

    #[test]
    fn queue_orders_by_time_then_sequence() {
        let t = Instant::now();
        let mut heap = BinaryHeap::new();
        let d = || {
            Delivery::Arrive(
                Datagram {
                    from: SocketAddrV4::new(P, 1),
                    to: SocketAddrV4::new(P, 2),
                    payload: vec![],
                },
                0,
            )
        };
        for (at, seq) in [(3, 1), (1, 2), (1, 3), (2, 4)] {
            heap.push(Queued {
                at: t + Duration::from_secs(at),
                seq,
                what: d(),
            });
        }
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|q| q.seq)).collect();
        assert_eq!(order, [2, 3, 4, 1]);
    }

    #[test]
    fn client_behind_nat_qualifies_and_trace_is_complete() {
        let mut s = sim();
        let t0 = s.now();
        let nat = NatPreset::PortRestricted
            .config(vec![Ipv4Addr::new(203, 0, 113, 1)], 1)
            .unwrap()
            .unwrap();
        let local = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 50000);
        let c = Client::new(
            ClientConfig::profile(Profile::Rfc5991, P),
            ChaCha8Rng::seed_from_u64(1),
            local,
            t0,
        );
        s.enable_pcap();
        let i = s.add_client(c, Some(Nat::new(nat)));
        s.run_for(Duration::from_secs(1)).unwrap();
        let node = s.client(i).unwrap();
        assert_eq!(node.client.state(), State::Qualified);
        assert_eq!(
            node.client.mapping(),
            Some(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 50000))
        );
        // RS → primary, RA, RS → secondary, RA: 4 datagrams, 10 ms apart.
        let t: Vec<_> = s.trace().iter().map(|e| (e.at, e.sender)).collect();
        assert_eq!(
            t,
            [
                (Duration::ZERO, Sender::Client(0)),
                (Duration::from_millis(10), Sender::Server),
                (Duration::from_millis(20), Sender::Client(0)),
                (Duration::from_millis(30), Sender::Server),
            ]
        );
        assert!(s.take_pcap().unwrap().len() > 24 + 4 * 16);
        assert_eq!(s.elapsed(), Duration::from_secs(1));
    }

    #[test]
    fn step_limit_is_an_error() {
        let mut s = sim();
        let t0 = s.now();
        let c = Client::new(
            ClientConfig::profile(Profile::Miredo, P),
            ChaCha8Rng::seed_from_u64(1),
            SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 4000),
            t0,
        );
        s.add_client(c, None);
        s.set_step_limit(3);
        let e = s.run_for(Duration::from_secs(3600)).unwrap_err();
        assert!(matches!(e, SimError::StepLimit { steps: 3, .. }), "{e}");
    }

    #[test]
    fn unroutable_and_server_down_are_counted() {
        let mut s = sim();
        let now = s.now();
        s.inject(
            now,
            Datagram {
                from: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1),
                to: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 2),
                payload: vec![1, 2, 3],
            },
        );
        s.set_server_up(false);
        s.inject(
            now,
            Datagram {
                from: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1),
                to: SocketAddrV4::new(P, 3544),
                payload: vec![1, 2, 3],
            },
        );
        s.inject(
            now,
            Datagram {
                from: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1),
                to: SocketAddrV4::new(P, 3544),
                payload: vec![0; MAX_UDP_PAYLOAD + 1],
            },
        );
        s.run_for(Duration::from_secs(1)).unwrap();
        let c = s.counters();
        assert_eq!((c.datagrams, c.no_route, c.server_unreachable), (2, 1, 1));
        assert_eq!(c.injections_refused, 1);
        // Garbage to a running server is counted per reason.
        s.set_server_up(true);
        let now = s.now();
        s.inject(
            now,
            Datagram {
                from: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1),
                to: SocketAddrV4::new(P, 3544),
                payload: vec![1, 2, 3],
            },
        );
        s.run_for(Duration::from_secs(1)).unwrap();
        assert_eq!(s.counters().server_dropped.values().sum::<u64>(), 1);
    }

    #[test]
    fn jitter_reorders_and_is_reproducible() {
        let run = |jitter: Duration| {
            let mut s = sim();
            s.set_jitter(jitter, 7);
            let t0 = s.now();
            for k in 0..100u64 {
                s.inject(
                    t0 + Duration::from_millis(k),
                    Datagram {
                        from: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1),
                        to: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 2),
                        payload: vec![1],
                    },
                );
            }
            s.run_for(Duration::from_secs(1)).unwrap();
            assert_eq!(s.counters().no_route, 100, "every datagram arrives once");
            s.counters().reordered
        };
        assert_eq!(run(Duration::ZERO), 0);
        let r = run(Duration::from_millis(30));
        assert!(
            r > 10,
            "30 ms of jitter on datagrams 1 ms apart: {r} reordered"
        );
        assert_eq!(run(Duration::from_millis(30)), r, "same seed, same order");
    }

    #[test]
    fn restarts_keep_the_address_and_count() {
        let mut s = sim();
        s.restart_server();
        assert_eq!(s.counters().server_restarts, 1);
        assert_eq!(s.server().config().primary, P);
        // Without a native segment there is no relay to replace.
        let relay = Relay::new(
            teredo::relay::RelayConfig::default(),
            ChaCha8Rng::seed_from_u64(1),
            s.now(),
        );
        s.replace_relay(relay);
        assert_eq!(s.counters().relay_restarts, 0);
    }
}
