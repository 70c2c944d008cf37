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
//!   pcap file ([`Sim::enable_pcap`]), native IPv6 packets too, or journaled with its path
//!   through the NATs and its fate ([`Sim::enable_journal`]).
//!
//! # Bounds
//! The run loop stops after [`Sim::step_limit`] steps (an error, never a hang), every
//! datagram is at most 65,507 bytes, the queue only grows by what nodes send, and the log of
//! delivered packets keeps at most [`MAX_DELIVERED_LOG`] per client.
//!
//! # Files
//! * this file: [`Sim`], its public API and the run loop; `queue`: the event queue;
//!   `trace`: the datagram, the Internet log and the counters; `journal`: each datagram's
//!   path and fate for sequence charts ([`Sim::enable_journal`]); `node`: the client node, the
//!   echo host and the relay node; `internet`: routing on the IPv4 Internet (server, relay,
//!   NATs, clients); `native`: the native IPv6 segment (echo host, relay); `tests`.

mod internet;
mod journal;
mod native;
mod node;
mod queue;
#[cfg(test)]
mod tests;
mod trace;
mod upnp;

/// A client's UPnP request performed on its NAT's IGD (also for drivers over real sockets
/// that run the NAT model in process).
pub use upnp::perform as perform_upnp;

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use teredo::client::Client;
use teredo::relay::Relay;
use teredo::server::{Server, ServerConfig};
use teredo::DropReason;

use crate::pcap::{PcapLog, MAX_UDP_PAYLOAD};
use crate::Nat;
use journal::Via;
pub use journal::{Fate, Hop, JournalEntry, Node};
use node::RelayNode;
pub use node::{ClientNode, EchoHost};
use queue::{earliest, Delivery, EventQueue};
pub use trace::{Datagram, Sender, SimCounters, TraceEntry};

/// Default one-way latency of the simulated Internet.
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(10);

/// One-way latency on a LAN behind a NAT.
pub const LAN_LATENCY: Duration = Duration::from_millis(1);

/// Default bound on [`Sim::run_until`] steps (deliveries plus timer firings).
pub const DEFAULT_STEP_LIMIT: u64 = 1_000_000;

/// Cap on the datagrams an observer may inject per observed datagram.
pub const MAX_INJECTED_PER_DATAGRAM: usize = 16;

/// Packets kept per client in [`ClientNode::delivered`]; later ones are counted only.
pub const MAX_DELIVERED_LOG: usize = 4096;

/// Bound on the datagrams and deliveries drained from one client per input (the client's
/// own output queue holds at most 256).
const MAX_DRAIN: usize = 4096;

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

/// An on-path observer: sees each datagram put on the Internet (with its virtual send time)
/// and returns datagrams to inject, which leave [`Sim`]'s latency later.
pub type Observer = Box<dyn FnMut(Duration, &Datagram) -> Vec<Datagram> + Send>;

/// The simulated network. See the module documentation.
pub struct Sim {
    t0: Instant,
    now: Instant,
    latency: Duration,
    queue: EventQueue,
    server: Server,
    server_up: bool,
    clients: Vec<ClientNode>,
    trace: Vec<TraceEntry>,
    journal: Option<Vec<JournalEntry>>,
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
            queue: EventQueue::default(),
            server: Server::new(server),
            server_up: true,
            clients: Vec::new(),
            trace: Vec::new(),
            journal: None,
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
        self.note(Node::ServerPrimary, "server restarted (state lost)");
    }

    /// Restarts the relay: `relay` (a fresh core) replaces the current one at the same
    /// address; no effect without a native segment.
    pub fn replace_relay(&mut self, relay: Relay) {
        if let Some(r) = self.relay.as_mut() {
            r.relay = relay;
            self.counters.relay_restarts += 1;
            self.note(Node::Relay, "relay restarted (peer table lost)");
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
            self.native_send(Node::NativeHost, packet);
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
            lan_of: None,
        });
        self.clients.len() - 1
    }

    /// Adds a client on the LAN of client `of` (behind the same NAT: it shares that NAT's
    /// mappings, filtering and hairpinning, and reaches the other clients there directly,
    /// unicast or by the local discovery group 224.0.0.253); returns its index. `of` must
    /// sit behind a NAT (or on such a LAN); otherwise the client is added without one.
    pub fn add_client_behind(&mut self, client: Client, of: usize) -> usize {
        let owner = self.nat_owner(of);
        let i = self.add_client(client, None);
        if let Some(node) = self.clients.get_mut(i) {
            node.lan_of = owner;
        }
        i
    }

    /// The client that owns the NAT client `i` sits behind, if any.
    fn nat_owner(&self, i: usize) -> Option<usize> {
        let c = self.clients.get(i)?;
        if c.nat.is_some() {
            Some(i)
        } else {
            c.lan_of
        }
    }

    /// The client and its socket at `addr` behind the NAT of `owner`: its primary socket, or
    /// one of its extra ports ([`Client::extra_ports`]). `Err(j)`: client `j` has that IPv4
    /// address but does not listen on that port.
    fn lan_socket(
        &self,
        owner: usize,
        addr: SocketAddrV4,
    ) -> Option<Result<(usize, teredo::io::Local), usize>> {
        let j = (0..self.clients.len()).find(|&j| {
            self.nat_owner(j) == Some(owner) && self.clients[j].local().ip() == addr.ip()
        })?;
        Some(self.clients[j].socket(addr.port()).map(|l| (j, l)).ok_or(j))
    }

    /// The other clients behind the NAT of `owner`, except `but`.
    fn lan_members(&self, owner: usize, but: usize) -> Vec<usize> {
        (0..self.clients.len())
            .filter(|&j| j != but && self.nat_owner(j) == Some(owner))
            .collect()
    }

    /// Switches the server on or off (off: datagrams to it are lost, counted as
    /// `server_unreachable`).
    pub fn set_server_up(&mut self, up: bool) {
        if self.server_up != up {
            self.note(
                Node::ServerPrimary,
                if up { "server up" } else { "server down" },
            );
        }
        self.server_up = up;
    }

    /// Starts the journal ([`JournalEntry`]): every datagram's path and fate from now on,
    /// with its payload, and the network's notes. Call it before the first run.
    pub fn enable_journal(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// The journal so far (empty unless [`Self::enable_journal`] was called).
    pub fn journal(&self) -> &[JournalEntry] {
        self.journal.as_deref().unwrap_or_default()
    }

    /// Adds a note about `node` at the current time to the journal (e.g. a fault a lab
    /// injects from outside, such as a NAT reboot).
    pub fn note(&mut self, node: Node, text: &str) {
        let at = self.elapsed();
        if let Some(j) = self.journal.as_mut() {
            j.push(JournalEntry::Note {
                at,
                node,
                text: text.to_owned(),
            });
        }
    }

    /// Records a hop; returns its index in the journal.
    fn journal_hop(&mut self, hop: Hop) -> Option<usize> {
        let j = self.journal.as_mut()?;
        j.push(JournalEntry::Hop(hop));
        Some(j.len() - 1)
    }

    /// Sets the fate of the hop at `index`.
    fn journal_fate(&mut self, index: Option<usize>, fate: Fate) {
        if let (Some(j), Some(i)) = (self.journal.as_mut(), index) {
            if let Some(JournalEntry::Hop(h)) = j.get_mut(i) {
                h.fate = fate;
            }
        }
    }

    /// The fate "dropped by `node` now because `reason`".
    fn dropped(&self, node: Node, reason: impl ToString) -> Fate {
        Fate::Dropped {
            at: self.elapsed(),
            node,
            reason: reason.to_string(),
        }
    }

    /// The fate "delivered to `node` now".
    fn delivered(&self, node: Node, inner_to: Option<SocketAddrV4>) -> Fate {
        Fate::Delivered {
            at: self.elapsed(),
            node,
            inner_to,
        }
    }

    /// The server's lane for one of its addresses.
    fn server_node(&self, ip: std::net::Ipv4Addr) -> Node {
        if ip == self.server.config().secondary {
            Node::ServerSecondary
        } else {
            Node::ServerPrimary
        }
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
        self.push(
            at,
            Delivery::Launch(Sender::Injected, datagram, Via::default()),
        );
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
            let queued = self.queue.next_at();
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
                if let Some(what) = self.queue.pop() {
                    self.process(what);
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
            let mut expired = 0;
            let node = &mut self.clients[i];
            if let Some(nat) = node.nat.as_mut() {
                if nat.poll_timeout().is_some_and(|t| t <= now) {
                    let before = nat.counters().mappings_expired;
                    nat.expire(now);
                    expired = nat.counters().mappings_expired - before;
                }
            }
            if expired > 0 {
                self.note(Node::Nat(i), &format!("{expired} mapping(s) expired"));
            }
            let node = &mut self.clients[i];
            if node.client.poll_timeout().is_some_and(|t| t <= now) {
                node.client.handle_timeout(now);
                self.pump_client(i);
            }
        }
    }

    fn push(&mut self, at: Instant, what: Delivery) {
        self.queue.push(at, what);
    }

    /// Sends a datagram now: logs it, shows it to the observer, schedules its arrival.
    fn launch(&mut self, sender: Sender, d: Datagram, via: Via) {
        let at = self.elapsed();
        let from_node = match sender {
            Sender::Server => self.server_node(*d.from.ip()),
            Sender::Client(i) => Node::Client(i),
            Sender::Relay => Node::Relay,
            Sender::Injected => Node::Injected,
        };
        let index = if self.journal.is_some() {
            self.journal_hop(Hop {
                at,
                from_node,
                inner_from: via.inner,
                from: Some(d.from),
                to: Some(d.to),
                new_mapping: via.new_mapping,
                native: false,
                payload: d.payload.clone(),
                fate: Fate::InFlight,
            })
        } else {
            None
        };
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
                    self.push(
                        inject_at,
                        Delivery::Launch(Sender::Injected, i, Via::default()),
                    );
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
        self.push(arrive, Delivery::Arrive(d, self.launched, index));
    }

    /// Sends `d` at `at`: now, or queued for later.
    fn send_at(&mut self, at: Instant, sender: Sender, d: Datagram, via: Via) {
        if at <= self.now {
            self.launch(sender, d, via);
        } else {
            self.push(at, Delivery::Launch(sender, d, via));
        }
    }

    fn process(&mut self, what: Delivery) {
        match what {
            Delivery::Launch(sender, d, via) => self.launch(sender, d, via),
            Delivery::Arrive(d, n, index) => {
                if n < self.latest_arrived {
                    self.counters.reordered += 1;
                }
                self.latest_arrived = self.latest_arrived.max(n);
                self.arrive(d, index);
            }
            Delivery::Inside {
                node,
                local,
                from,
                payload,
                journal,
            } => self.deliver_inside(node, local, from, &payload, journal),
            Delivery::Lan {
                node,
                local,
                from,
                payload,
                multicast,
            } => self.lan_arrive(node, local, from, &payload, multicast),
            Delivery::Native(packet, index) => self.native_arrive(&packet, index),
        }
    }
}
