//! The peer table (RFC 4380 §5.2 "list of recent peers", RFC 6081 §5.2.1): entries, their
//! queues, probes (bubbles and echo tests), pacing (RFC 4380 §5.2.6), trust and give-up.

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::addr::{TeredoAddr, TEREDO_PORT};
use crate::wire::ipv6::Echo;
use crate::wire::packet::IPV6_HEADER_LEN;
use crate::DropReason;

use super::bubbles::{bubble_bytes, bubble_with_port, discovery_bytes, with_alternates};
use super::random_port::{PeerPorts, ProbePlan};
use super::*;
use crate::io::{Kind, Local};
use crate::peer::{self, Gate, Pacing};

/// Where a peer is in its reachability procedure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerPhase {
    /// No probe running (trusted, or not contacted yet).
    Idle,
    /// Bubbles or echo tests sent, waiting for an answer; the retransmission timer runs.
    Probing,
    /// No answer to any probe: packets to the peer are refused until the probe window ends.
    Failed,
}

impl PeerPhase {
    /// snake_case label: `idle`, `probing`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Probing => "probing",
            Self::Failed => "failed",
        }
    }
}

/// A read-only view of a peer entry ([`Client::peer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// A Teredo address (reached with bubbles) rather than a native one (echo test).
    pub teredo: bool,
    /// Where packets to the peer go: the mapping embedded in a Teredo address or recorded on
    /// trust, or for a native peer the relay that answered its echo test (`None` before).
    pub mapping: Option<SocketAddrV4>,
    /// The peer proved its mapping (RFC 4380 §5.2.3).
    pub trusted: bool,
    /// Trusted and heard from within [`ClientConfig::peer_validity`].
    pub valid: bool,
    /// Probe state.
    pub phase: PeerPhase,
    /// Probes sent in the current window without an answer.
    pub probes: u8,
    /// Packets waiting for the peer to become reachable.
    pub queued_packets: usize,
    /// Their bytes.
    pub queued_bytes: usize,
    /// RFC 6081 §5.4/§5.5: our random local port for the peer, while open.
    pub random_port: Option<u16>,
    /// "Random Port": the external port we predict (and advertise) for it; 0 = none.
    pub predicted_port: u16,
    /// "Peer Random Port": the port it advertised; 0 = none.
    pub peer_random_port: u16,
    /// Its packets leave from the random port (it was reached there, not on the primary).
    pub via_random_port: bool,
}

/// The provisional state of a direct IPv6 connectivity test (RFC 4380 §5.2.9).
#[derive(Clone, Copy, Debug)]
pub(super) struct EchoTest {
    pub(super) nonce: [u8; ECHO_NONCE_LEN],
    pub(super) id: u16,
}

/// One peer (RFC 4380 §5.2 "list of recent peers", RFC 6081 §5.2.1).
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) teredo: bool,
    pub(super) mapping: Option<SocketAddrV4>,
    pub(super) trusted: bool,
    /// `None` = "30 s before creation" (RFC 4380 §5.2.3, §5.2.6): long enough ago.
    pub(super) last_rx: Option<Instant>,
    pub(super) last_tx: Option<Instant>,
    pub(super) last_used: Instant,
    pub(super) phase: PeerPhase,
    /// Probes in the current window (RFC 4380 §5.2.6 "bubbles").
    pub(super) probes: u8,
    /// Probes of the running exchange.
    pub(super) attempts: u8,
    pub(super) window_start: Instant,
    pub(super) last_probe: Option<Instant>,
    /// The live timer record in [`Client::timers`].
    pub(super) deadline: Option<Instant>,
    /// Native peers: the echo test of the current (or last) exchange.
    pub(super) echo: Option<EchoTest>,
    /// RFC 6081 "Nonce Sent": the latest indirect bubble's nonce and the one before (a late
    /// answer to a retransmission still counts).
    pub(super) nonce_sent: [Option<[u8; 4]>; 2],
    /// RFC 6081 "Nonce Received": echoed in our direct bubbles.
    pub(super) nonce_received: Option<[u8; 4]>,
    /// RFC 6081 §5.3.1 "Symmetric Peer flag": a direct bubble came from another mapping than
    /// the one embedded in its address.
    pub(super) symmetric: bool,
    pub(super) queue: VecDeque<Vec<u8>>,
    pub(super) queue_bytes: usize,
    /// RFC 4380 §5.2.8 "local peer address and port": where its discovery bubble came from.
    pub(super) local: Option<SocketAddrV4>,
    /// When its last discovery bubble arrived.
    pub(super) local_seen: Option<Instant>,
    /// RFC 6081 §5.6.1 "Alternate Address/Port list" (at most [`MAX_PEER_ALTERNATES`]).
    pub(super) alternates: Vec<SocketAddrV4>,
    /// RFC 6081 §5.7.1 "Count of Solicitations Transmitted"; 0 when not soliciting.
    pub(super) solicitations: u8,
    /// RFC 6081 §5.4.1/§5.5.1: random ports, echo test.
    pub(super) ports: PeerPorts,
}

impl Peer {
    pub(super) fn new(now: Instant, teredo: Option<TeredoAddr>) -> Self {
        Self {
            teredo: teredo.is_some(),
            mapping: teredo.map(|t| t.mapped),
            trusted: false,
            last_rx: None,
            last_tx: None,
            last_used: now,
            phase: PeerPhase::Idle,
            probes: 0,
            attempts: 0,
            window_start: now,
            last_probe: None,
            deadline: None,
            echo: None,
            nonce_sent: [None; 2],
            nonce_received: None,
            symmetric: false,
            queue: VecDeque::new(),
            queue_bytes: 0,
            local: None,
            local_seen: None,
            alternates: Vec::new(),
            solicitations: 0,
            ports: PeerPorts::default(),
        }
    }

    /// Trusted and heard from within `validity` ([`peer::is_valid`]), or within
    /// [`LOCAL_PEER_VALIDITY`] when trusted at its local (LAN) address.
    pub(super) fn valid(&self, now: Instant, validity: Duration) -> bool {
        let validity = if self.local.is_some() && self.mapping == self.local {
            validity.max(LOCAL_PEER_VALIDITY)
        } else {
            validity
        };
        peer::is_valid(now, self.trusted, self.last_rx, validity)
    }
}

impl Client {
    /// The entry for a peer, if any (`valid` as of `now`).
    pub fn peer(&self, addr: &Ipv6Addr, now: Instant) -> Option<PeerInfo> {
        let validity = self.cfg.peer_validity;
        self.peers.get(addr).map(|p| PeerInfo {
            teredo: p.teredo,
            mapping: p.mapping,
            trusted: p.trusted,
            valid: p.valid(now, validity),
            phase: p.phase,
            probes: p.probes,
            queued_packets: p.queue.len(),
            queued_bytes: p.queue_bytes,
            random_port: p.ports.local,
            predicted_port: p.ports.random,
            peer_random_port: p.ports.peer,
            via_random_port: self.send_local(addr) != Local::Primary,
        })
    }

    /// Entries in the peer table.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Queues a packet for a peer that is not trusted and valid, starting a probe exchange.
    pub(super) fn hold(
        &mut self,
        now: Instant,
        addr: Ipv6Addr,
        teredo: Option<TeredoAddr>,
        packet: &[u8],
    ) -> Result<(), DropReason> {
        self.ensure_peer(now, addr, teredo)?;
        let window = self.pacing().window;
        let Some(p) = self.peers.get_mut(&addr) else {
            return Err(DropReason::PeerTableFull);
        };
        p.last_used = now;
        if p.phase == PeerPhase::Failed {
            if peer::window_over(now, p.window_start, window) {
                p.phase = PeerPhase::Idle;
                p.probes = 0;
            } else {
                return Err(DropReason::PeerUnreachable);
            }
        }
        if p.phase == PeerPhase::Idle {
            p.phase = PeerPhase::Probing;
            p.attempts = 0;
            if !p.teredo {
                let mut nonce = [0u8; ECHO_NONCE_LEN];
                self.rng.fill_bytes(&mut nonce);
                let id = self.rng.next_u32() as u16;
                p.echo = Some(EchoTest { nonce, id });
            }
            // RFC 6081 §5.7.4.1: a quiet trusted peer is solicited directly first.
            if !self.start_solicitation(now, addr) {
                match self.gate(&addr, now) {
                    Gate::Now => self.send_probe(now, addr),
                    Gate::At(t) => self.set_deadline(addr, Some(t)),
                    Gate::Exhausted => {
                        self.give_up(now, addr);
                        return Err(DropReason::PeerUnreachable);
                    }
                }
            }
        }
        self.enqueue(addr, packet)
    }

    pub(super) fn enqueue(&mut self, addr: Ipv6Addr, packet: &[u8]) -> Result<(), DropReason> {
        let (max_packets, max_bytes) = (
            self.cfg.queue_packets_per_peer,
            self.cfg.queue_bytes_per_peer,
        );
        let global = self.queued_bytes;
        let Some(p) = self.peers.get_mut(&addr) else {
            return Err(DropReason::PeerTableFull);
        };
        if p.queue.len() >= max_packets || p.queue_bytes.saturating_add(packet.len()) > max_bytes {
            return Err(DropReason::QueueFull);
        }
        if global.saturating_add(packet.len()) > GLOBAL_QUEUE_BYTES {
            return Err(DropReason::GlobalQueueFull);
        }
        p.queue.push_back(packet.to_vec());
        p.queue_bytes += packet.len();
        self.queued_bytes += packet.len();
        self.counters.queued += 1;
        Ok(())
    }

    /// Creates the entry if it does not exist, reusing the least recently used one when the
    /// table is full (peers being probed last).
    pub(super) fn ensure_peer(
        &mut self,
        now: Instant,
        addr: Ipv6Addr,
        teredo: Option<TeredoAddr>,
    ) -> Result<(), DropReason> {
        if self.peers.contains_key(&addr) {
            return Ok(());
        }
        if self.peers.len() >= self.cfg.max_peers {
            let victim = self
                .peers
                .iter()
                .min_by_key(|(_, p)| (p.phase == PeerPhase::Probing, p.last_used))
                .map(|(a, _)| *a);
            let Some(victim) = victim else {
                return Err(DropReason::PeerTableFull);
            };
            self.remove_peer(victim, DropReason::PeerEvicted);
            self.counters.peers_evicted += 1;
        }
        self.peers.insert(addr, Peer::new(now, teredo));
        self.counters.peers_created += 1;
        Ok(())
    }

    pub(super) fn remove_peer(&mut self, addr: Ipv6Addr, reason: DropReason) {
        let Some(p) = self.peers.remove(&addr) else {
            return;
        };
        if let Some(d) = p.deadline {
            self.timers.remove(&(d, addr));
        }
        self.ports_forget(&addr, &p.ports);
        self.queued_bytes = self.queued_bytes.saturating_sub(p.queue_bytes);
        self.counters.count_drop(reason, p.queue.len() as u64);
    }

    /// Forgets every peer (the address changed or was lost); queued packets are counted as
    /// `address_lost`.
    pub(super) fn reset_data_path(&mut self) {
        let lost: u64 = self.peers.values().map(|p| p.queue.len() as u64).sum();
        self.counters.count_drop(DropReason::AddressLost, lost);
        self.peers.clear();
        self.timers.clear();
        self.ports_reset();
        self.queued_bytes = 0;
    }

    /// The pacing settings of the configuration, timers floored to [`MIN_TIMER`].
    pub(super) fn pacing(&self) -> Pacing<Duration> {
        Pacing {
            interval: self.cfg.bubble_interval.max(MIN_TIMER),
            window: self.cfg.bubble_window.max(MIN_TIMER),
            max_per_window: self.cfg.max_bubbles_per_window,
        }
    }

    /// The pacing rules (shared with the relay, [`crate::peer::pacing`]) for a peer's
    /// probes; `Exhausted` for an unknown peer.
    pub(super) fn gate(&mut self, addr: &Ipv6Addr, now: Instant) -> Gate<Instant> {
        let rules = self.pacing();
        let Some(p) = self.peers.get_mut(addr) else {
            return Gate::Exhausted;
        };
        peer::gate(now, &rules, p.window_start, &mut p.probes, p.last_probe)
    }

    pub(super) fn set_deadline(&mut self, addr: Ipv6Addr, at: Option<Instant>) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        if let Some(old) = p.deadline.take() {
            self.timers.remove(&(old, addr));
        }
        p.deadline = at;
        if let Some(t) = at {
            self.timers.insert((t, addr));
        }
    }

    /// Sends one probe: a direct and an indirect bubble to a Teredo peer, an echo request
    /// through our server for a native one; arms the retransmission timer.
    pub(super) fn send_probe(&mut self, now: Instant, addr: Ipv6Addr) {
        let Some(own) = self.address else {
            return;
        };
        let symmetric = self.cfg.symmetric_support;
        let interval = self.pacing().interval;
        // RFC 6081 §5.6.4.1: our alternates to a peer not reached yet, with a nonce.
        let alternates = self.own_alternates(&addr);
        let fresh = (symmetric || alternates.is_some()).then(|| self.rng.next_u32().to_be_bytes());
        // RFC 6081 §5.3.4.2: a symmetric peer at its embedded mapping, under UPnP.
        let direct_to = self
            .peers
            .get(&addr)
            .and_then(|p| p.mapping.map(|m| self.send_target(&addr, p.symmetric, m)));
        // RFC 4380 §5.2.4 case 3: a local peer gets a unicast bubble at its LAN address
        // and a discovery bubble (so that it learns ours), not the Internet pair.
        let local = self.fresh_local(&addr, now);
        let alternates = alternates.filter(|_| local.is_none());
        // RFC 6081 §5.4, §5.5 (`random_port`, `sequential`): random port, echo test.
        let plan = match (local, self.peers.get(&addr)) {
            (None, Some(p)) if p.teredo => {
                let echo = p.nonce_received.filter(|_| symmetric);
                self.ports_probe(now, addr, own, echo)
            }
            _ => ProbePlan::default(),
        };
        let from = self.send_local(&addr);
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        peer::count_bubble(now, &mut p.window_start, &mut p.probes);
        p.attempts = p.attempts.saturating_add(1);
        p.last_probe = Some(now);
        p.last_tx = Some(now);
        let mut out: Vec<(SocketAddrV4, Kind, Vec<u8>)> = Vec::with_capacity(2);
        if let (true, Some(lan)) = (p.teredo, local) {
            out.push((lan, Kind::Bubble, bubble_bytes(own, addr, None)));
            out.push((DISCOVERY_DEST, Kind::DiscoveryBubble, discovery_bytes(own)));
        } else if p.teredo {
            let t = TeredoAddr::from_octets_unchecked(&addr.octets());
            // RFC 6081 §5.2.4.2: echo the peer's nonce once it sent us an indirect bubble.
            let echo = if symmetric { p.nonce_received } else { None };
            if let Some(n) = fresh {
                p.nonce_sent = [Some(n), p.nonce_sent[0]];
            }
            let direct_to = direct_to.unwrap_or(t.mapped);
            out.push((direct_to, Kind::Bubble, bubble_bytes(own, addr, echo)));
            if !plan.defer {
                out.push((
                    SocketAddrV4::new(t.server, TEREDO_PORT),
                    Kind::IndirectBubble,
                    with_alternates(
                        bubble_with_port(own, addr, fresh, plan.trailer),
                        alternates.as_ref(),
                    ),
                ));
            }
        } else if let Some(test) = p.echo {
            let echo = Echo {
                reply: false,
                id: test.id,
                seq: u16::from(p.attempts),
                data: &test.nonce,
            };
            let mut b = vec![0u8; IPV6_HEADER_LEN + 8 + ECHO_NONCE_LEN];
            if let Ok(len) = echo.emit(&mut b, own, addr, ECHO_HOP_LIMIT) {
                b.truncate(len);
                out.push((
                    SocketAddrV4::new(self.cfg.server, TEREDO_PORT),
                    Kind::EchoRequest,
                    b,
                ));
            }
        }
        let teredo = p.teredo;
        for (to, kind, bytes) in out {
            let sock = if kind == Kind::Bubble {
                from
            } else {
                Local::Primary
            };
            if self.push_output_from(sock, to, kind, bytes).is_ok() {
                if kind == Kind::IndirectBubble && alternates.is_some() {
                    self.counters.hairpin_trailers_sent += 1;
                }
                if teredo {
                    self.counters.bubbles_sent += 1;
                } else {
                    self.counters.echo_tests_sent += 1;
                }
            }
        }
        self.push_extras(plan.extra);
        tracing::trace!(peer = %addr, teredo, "client probe");
        self.set_deadline(addr, after(now, interval));
    }

    /// Runs the due probe timers: retransmissions and give-ups.
    pub(super) fn fire_probe_timers(&mut self, now: Instant) {
        // The first probe and its repetitions. Unlike the relay, which counts an exchange's
        // bubbles in the window's count, the client counts the exchange's probes apart
        // (`attempts`) and leaves the window cap to the gate: no cap here.
        let limit = peer::attempt_limit(self.cfg.bubble_retries, u8::MAX);
        while let Some(&(at, addr)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, addr));
            let Some(p) = self.peers.get_mut(&addr) else {
                continue;
            };
            if p.deadline != Some(at) {
                continue;
            }
            p.deadline = None;
            if p.phase != PeerPhase::Probing {
                continue;
            }
            if self.solicitation_timer(now, addr) {
                continue;
            }
            let Some(p) = self.peers.get(&addr) else {
                continue;
            };
            if p.attempts >= limit {
                self.give_up(now, addr);
                continue;
            }
            match self.gate(&addr, now) {
                Gate::Now => self.send_probe(now, addr),
                Gate::At(t) => self.set_deadline(addr, Some(t)),
                Gate::Exhausted => self.give_up(now, addr),
            }
        }
    }

    /// No answer to the probes: drop the queue, refuse packets until the window ends.
    pub(super) fn give_up(&mut self, now: Instant, addr: Ipv6Addr) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        p.phase = PeerPhase::Failed;
        p.solicitations = 0;
        peer::start_window(now, &mut p.window_start, p.probes);
        p.trusted = false;
        let queue = std::mem::take(&mut p.queue);
        let bytes = std::mem::take(&mut p.queue_bytes);
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        self.counters
            .count_drop(DropReason::PeerUnreachable, queue.len() as u64);
        self.counters.give_ups += 1;
        self.set_deadline(addr, None);
        tracing::debug!(peer = %addr, dropped = queue.len(), "client gave up on peer");
        self.push_event(Event::PeerUnreachable { peer: addr });
    }

    /// Marks the peer trusted at `from` and releases its queue there.
    pub(super) fn trust(&mut self, now: Instant, addr: Ipv6Addr, from: SocketAddrV4) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let changed = !p.trusted || p.mapping != Some(from);
        let symmetric_peer = p.symmetric;
        p.trusted = true;
        p.mapping = Some(from);
        p.last_rx = Some(now);
        p.last_used = now;
        p.probes = 0;
        p.attempts = 0;
        p.phase = PeerPhase::Idle;
        p.solicitations = 0;
        p.nonce_sent = [None; 2];
        let queue = std::mem::take(&mut p.queue);
        let bytes = std::mem::take(&mut p.queue_bytes);
        if !queue.is_empty() {
            p.last_tx = Some(now);
        }
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        self.set_deadline(addr, None);
        let to = self.send_target(&addr, symmetric_peer, from);
        let sock = self.send_local(&addr);
        if changed {
            tracing::debug!(peer = %addr, mapping = %from, "client trusts peer");
            self.push_event(Event::PeerTrusted {
                peer: addr,
                mapping: from,
            });
        }
        for packet in queue {
            self.ports_data_sent(now, &addr);
            match self.push_output_from(sock, to, Kind::Data, packet) {
                Ok(()) => {
                    self.counters.flushed += 1;
                    self.counters.ipv6_sent += 1;
                }
                Err(reason) => self.counters.count_drop(reason, 1),
            }
        }
    }
}
