//! One simulated client: a tokio task owning its Teredo client state machine, its NAT model
//! (if any) and one real UDP socket per NAT mapping — or, for `--ceiling`, a plain UDP socket
//! talking to an in-process echo. It qualifies, then follows the coordinator's [`Control`]:
//! warm-up probes, paced trials, drain, stop. Everything it measures goes into [`Shared`].
//!
//! Per-client memory is small and bounded: the state machines, at most [`MAX_SOCKETS`]
//! sockets, a [`SeqTracker`] and a token bucket; the datagram buffers are per thread.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use netsim::packets::{self, Parsed};
use netsim::{Nat, NatConfig, NatDrop, Outbound};
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use teredo::client::{Client, ClientConfig, Profile, State};
use teredo::io::{Kind, Local, Output};
use teredo::wire::packet::MAX_UDP_PAYLOAD;
use teredo_rt::{Shutdown, UdpOptions, MAX_DATAGRAM};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::handoff::{Handoff, Inbound, INBOX};
use super::metrics::LoadMetrics;
use super::pacing::TokenBucket;
use super::payload::{filler, Stamp};
use super::seq::{SeqTracker, Verdict};
use super::sockets::{Binder, ClientSocket, SocketFailure, SocketGauge};
use super::template::Template;
use crate::qualify::{earliest, sleep_until_opt, INTERNAL_IP};
use crate::report::Outcome;

/// Sockets one client may hold (one per NAT mapping); beyond, the oldest mapping other than
/// the primary server's is ended with its socket (see `sockets`).
pub const MAX_SOCKETS: usize = 8;

/// Datagrams read per readiness event before yielding.
const RECV_BATCH: usize = 64;

/// Packets one wake-up may send.
const SEND_BATCH: u32 = 64;

/// Spacing of the warm-up probes of one client.
const WARMUP_RETRY: Duration = Duration::from_secs(1);

/// Source port of the UDP load packets (inside the tunnel).
pub const UDP_SOURCE_PORT: u16 = 40_000;

thread_local! {
    static RX: RefCell<Vec<u8>> = RefCell::new(vec![0u8; MAX_DATAGRAM + 1]);
    static TX: RefCell<Vec<u8>> = RefCell::new(vec![0u8; MAX_UDP_PAYLOAD]);
}

/// What the clients send their packets to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// ICMPv6 echo requests to a native (or any) IPv6 host.
    Icmp(Ipv6Addr),
    /// UDP datagrams to an echo service.
    Udp(SocketAddrV6),
    /// ICMPv6 echo requests to the next client's Teredo address (client `i` → `i + 1`, the
    /// last to the first); every client answers the requests it gets.
    Pairs,
    /// Plain UDP to an in-process echo on loopback (`--ceiling`).
    Ceiling(SocketAddrV4),
    /// No data phase.
    None,
}

/// What the coordinator wants the clients to do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Control {
    /// Qualify (and stay qualified).
    Qualify,
    /// Send warm-up probes (trial 0) until one is answered; client `i` starts at
    /// `start + i / rate`.
    Warmup {
        /// When the warm-up began.
        start: Instant,
        /// Clients per second starting their probes.
        rate: f64,
    },
    /// Send at `rate` pps per client from `start`, stamped with `trial`.
    Run {
        /// Trial number (from 1).
        trial: u32,
        /// Packets per second per client.
        rate: f64,
        /// When the trial began.
        start: Instant,
        /// Clients sending (to spread the first sends).
        senders: u32,
    },
    /// Stop sending, keep answering and counting.
    Drain,
    /// End the task.
    Stop,
}

/// Settings every client shares.
#[derive(Clone, Debug)]
pub struct ClientSetup {
    /// Teredo server (Teredo mode).
    pub server: Ipv4Addr,
    /// Secondary server address.
    pub secondary: Option<Ipv4Addr>,
    /// Client behaviour.
    pub profile: Profile,
    /// NAT in front of each client; each gets its own, seeded per client.
    pub nat: Option<NatConfig>,
    /// Local address of the sockets.
    pub bind: Ipv4Addr,
    /// Give up qualifying after this long.
    pub qualify_timeout: Duration,
    /// Data destination.
    pub dest: Dest,
    /// ICMPv6 data / UDP payload bytes.
    pub size: usize,
    /// Run tag carried by every packet.
    pub run_tag: u32,
    /// Base seed (client `i` uses `seed + i`).
    pub seed: u64,
    /// Kernel socket buffer per socket.
    pub socket_buffer: usize,
    /// Warm-up: give up on a client after this long without an answer.
    pub warmup_timeout: Duration,
}

/// Counters of the current trial (reset by the coordinator between trials).
#[derive(Debug, Default)]
pub struct TrialCounters {
    /// Packets sent.
    pub sent: AtomicU64,
    /// Distinct answers.
    pub received: AtomicU64,
    /// Duplicate answers.
    pub duplicates: AtomicU64,
    /// Reordered answers.
    pub out_of_order: AtomicU64,
    /// Failed sends.
    pub send_errors: AtomicU64,
    /// Answers to an earlier trial.
    pub late: AtomicU64,
}

impl TrialCounters {
    /// Zeroes every counter.
    pub fn reset(&self) {
        for c in [
            &self.sent,
            &self.received,
            &self.duplicates,
            &self.out_of_order,
            &self.send_errors,
            &self.late,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// RTTs (µs) of the current trial (for the report) and of the current second (for the
/// timeline), under one lock so that an answer costs one lock.
#[derive(Debug)]
pub struct RttHistograms {
    /// Since the trial began.
    pub trial: Histogram<u64>,
    /// Since the timeline's last sample.
    pub second: Histogram<u64>,
}

/// State shared by the coordinator and every client task.
#[derive(Debug)]
pub struct Shared {
    /// Common settings.
    pub setup: ClientSetup,
    /// The time origin of the payload timestamps.
    pub epoch: Instant,
    /// Prometheus handles.
    pub metrics: LoadMetrics,
    /// Counters of the current trial.
    pub trial: TrialCounters,
    /// Number of the current trial (0: none).
    pub trial_no: AtomicU32,
    /// RTTs of the current trial and of the current second, microseconds.
    pub rtt: Mutex<RttHistograms>,
    /// Per-client jitter (sum of nanoseconds, clients), added when a trial drains.
    pub jitter: Mutex<(f64, u64)>,
    /// Qualification latencies, microseconds.
    pub qualify_latency: Mutex<Histogram<u64>>,
    /// Outcome counts, indexed like [`super::metrics::QUALIFY_RESULTS`].
    pub outcomes: Vec<AtomicU64>,
    /// Clients whose qualification ended (any outcome).
    pub qualify_done: AtomicUsize,
    /// Time of the last qualification, nanoseconds since `epoch`.
    pub last_qualified_ns: AtomicU64,
    /// Clients answered during the warm-up.
    pub warm_ok: AtomicUsize,
    /// Clients that gave up during the warm-up.
    pub warm_failed: AtomicUsize,
    /// Each client's Teredo address once qualified (for `--pairs`).
    pub addresses: Vec<OnceLock<Ipv6Addr>>,
    /// The coordinator's orders.
    pub control: watch::Receiver<Control>,
    /// The clients' sockets: open, peak, failures.
    pub sockets: Arc<SocketGauge>,
    /// `mmsg` engine, Teredo trials: where warmed-up clients lend their socket and captured
    /// packet ([`super::handoff`]); `None`: the tasks send their own trial packets.
    pub lend: Option<std::sync::mpsc::Sender<Handoff>>,
}

impl Shared {
    pub(crate) fn record_outcome(&self, result: &str) {
        if let Some(i) = super::metrics::QUALIFY_RESULTS
            .iter()
            .position(|r| *r == result)
        {
            if let Some(c) = self.outcomes.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.metrics
            .qualifications
            .with_label_values(&[result])
            .inc();
        self.qualify_done.fetch_add(1, Ordering::Relaxed);
    }

    fn ns_since_epoch(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The gauge label of a client state.
fn state_label(s: State) -> &'static str {
    match s {
        State::Offline => "offline",
        State::Probe(_) => "probe",
        State::Qualified => "qualified",
        State::Dormant => "dormant",
        _ => s.as_str(),
    }
}

/// A Teredo client behind its NAT with its sockets.
struct TeredoEnd {
    client: Client,
    nat: Option<Nat>,
    internal: SocketAddrV4,
    sockets: Vec<ClientSocket>,
    /// The NAT's mappings as last added to `natsim_mappings`.
    mappings: usize,
    /// Its `mappings_created` as last added to `natsim_mappings_created_total`.
    created: u64,
    /// A mapping's socket could not be opened while qualifying.
    socket_failed: bool,
}

/// How a client reaches the network.
enum Transport {
    Teredo(Box<TeredoEnd>),
    Plain {
        socket: ClientSocket,
        echo: SocketAddrV4,
    },
}

/// A client's sockets, borrowed apart from the (not `Sync`) client state machine.
enum Sockets<'a> {
    One(&'a UdpSocket),
    /// The sockets, but the one lent to the `mmsg` engine (by address).
    Many(&'a [ClientSocket], Option<SocketAddrV4>),
}

/// Waits until one of the sockets is readable; its index.
async fn readable(sockets: Sockets<'_>) -> usize {
    poll_fn(|cx| {
        match sockets {
            Sockets::One(s) => {
                if s.poll_recv_ready(cx).is_ready() {
                    return Poll::Ready(0);
                }
            }
            Sockets::Many(all, lent) => {
                for (i, s) in all.iter().enumerate() {
                    if Some(s.addr) != lent && s.socket.poll_recv_ready(cx).is_ready() {
                        return Poll::Ready(i);
                    }
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// Where the client is in the warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Warm {
    Waiting,
    Ok,
    Failed,
}

struct Worker {
    id: u32,
    shared: Arc<Shared>,
    transport: Transport,
    tracker: SeqTracker,
    seq: u32,
    started: Instant,
    /// Qualification outcome reported.
    reported: bool,
    gauge: &'static str,
    warm: Warm,
    next_probe: Option<Instant>,
    warm_deadline: Option<Instant>,
    bucket: Option<TokenBucket>,
    control: Control,
    /// `mmsg` engine: the last warm-up probe (inner IPv6 packet), the datagram captured for
    /// it, and the socket lent while the engine runs the trials.
    probe: Option<Vec<u8>>,
    template: Option<Template>,
    lent_at: Option<SocketAddrV4>,
}

/// Runs client `id` until [`Control::Stop`] or `shutdown`.
pub async fn run_client(id: u32, shared: Arc<Shared>, shutdown: Shutdown) {
    let mut control = shared.control.clone();
    let ctl = *control.borrow_and_update();
    let mut w = match Worker::new(id, Arc::clone(&shared), ctl) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(client = id, error = %e, "cannot open the client's socket");
            count_socket_failure(
                &shared,
                SocketFailure::of(&e).unwrap_or(SocketFailure::PortsInUse),
            );
            shared.metrics.move_client("pending", "offline");
            shared.record_outcome("error");
            return;
        }
    };
    // Non-answers from the `mmsg` engine while it holds our socket.
    let mut inbox: Option<tokio::sync::mpsc::Receiver<Inbound>> = None;
    loop {
        let now = teredo_rt::now();
        w.after_input(now);
        if inbox.is_none() && w.lent_at.is_none() {
            inbox = w.lend();
        }
        let next = w.next_wake().map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            () = shutdown.wait() => break,
            changed = control.changed() => {
                if changed.is_err() {
                    break;
                }
                let ctl = *control.borrow_and_update();
                if w.on_control(ctl, teredo_rt::now()) {
                    break;
                }
            }
            i = readable(w.sockets()) => w.receive(i),
            m = next_inbound(&mut inbox) => match m {
                Some(m) => w.on_datagram(m.at, m.from, &m.data, teredo_rt::now()),
                // The engine is done: read the socket again.
                None => {
                    inbox = None;
                    w.template = None;
                    w.lent_at = None;
                }
            },
            () = sleep_until_opt(next) => w.on_timer(teredo_rt::now()),
        }
    }
    w.finish();
}

/// The next datagram the `mmsg` engine passes on; never, without a lent socket.
async fn next_inbound(inbox: &mut Option<tokio::sync::mpsc::Receiver<Inbound>>) -> Option<Inbound> {
    match inbox {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Worker {
    /// Lends the `mmsg` engine this client's socket and captured packet, once the trials
    /// are about to begin (after the warm-up) and the engine takes them; the channel on
    /// which the engine passes on what is not an answer.
    fn lend(&mut self) -> Option<tokio::sync::mpsc::Receiver<Inbound>> {
        let lend = self.shared.lend.as_ref()?;
        if self.warm != Warm::Ok || !matches!(self.control, Control::Drain | Control::Run { .. }) {
            return None;
        }
        let template = self.template.take()?;
        let Transport::Teredo(end) = &self.transport else {
            return None;
        };
        let lent = end.sockets.iter().find(|s| s.addr == template.from)?;
        let (at, socket) = (lent.addr, &lent.socket);
        let fd = match std::os::fd::AsFd::as_fd(socket).try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(client = self.id, error = %e, "cannot lend the socket");
                return None;
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(INBOX);
        let handoff = Handoff {
            client: self.id,
            fd,
            template,
            seq: self.seq,
            inbox: tx,
        };
        lend.send(handoff).ok()?;
        self.lent_at = Some(at);
        Some(rx)
    }

    fn new(id: u32, shared: Arc<Shared>, control: Control) -> io::Result<Self> {
        let s = &shared.setup;
        let opts = UdpOptions {
            recv_buffer_size: Some(s.socket_buffer),
            send_buffer_size: Some(s.socket_buffer),
            ..UdpOptions::default()
        };
        let socket = ClientSocket::bind(SocketAddrV4::new(s.bind, 0), &opts, &shared.sockets)?;
        let bound = socket.addr;
        let now = teredo_rt::now();
        let (transport, gauge) = match s.dest {
            Dest::Ceiling(echo) => (Transport::Plain { socket, echo }, "qualified"),
            _ => {
                let seed = s.seed.wrapping_add(u64::from(id));
                let nat = s.nat.clone().map(|mut c| {
                    c.seed = seed;
                    Nat::new(c)
                });
                let internal = if nat.is_some() {
                    SocketAddrV4::new(INTERNAL_IP, bound.port())
                } else {
                    bound
                };
                let mut cfg = ClientConfig::profile(s.profile, s.server);
                cfg.secondary = s.secondary;
                let client = Client::new(cfg, ChaCha8Rng::seed_from_u64(seed), internal, now);
                let gauge = state_label(client.state());
                (
                    Transport::Teredo(Box::new(TeredoEnd {
                        client,
                        nat,
                        internal,
                        sockets: vec![socket],
                        mappings: 0,
                        created: 0,
                        socket_failed: false,
                    })),
                    gauge,
                )
            }
        };
        shared.metrics.move_client("pending", gauge);
        let mut w = Self {
            id,
            shared,
            transport,
            tracker: SeqTracker::default(),
            seq: 0,
            started: now,
            reported: false,
            gauge,
            warm: Warm::Waiting,
            next_probe: None,
            warm_deadline: None,
            bucket: None,
            control: Control::Qualify,
            probe: None,
            template: None,
            lent_at: None,
        };
        if matches!(w.transport, Transport::Plain { .. }) {
            w.reported = true;
            w.warm = Warm::Ok;
            w.shared.warm_ok.fetch_add(1, Ordering::Relaxed);
            w.shared.record_outcome("qualified");
        }
        w.on_control(control, now);
        Ok(w)
    }

    /// Reacts to new orders; `true` to stop.
    fn on_control(&mut self, ctl: Control, now: Instant) -> bool {
        self.control = ctl;
        match ctl {
            Control::Qualify | Control::Drain => {
                if matches!(ctl, Control::Drain) && self.bucket.take().is_some() {
                    if let Some(j) = self.tracker.jitter_ns() {
                        if let Ok(mut g) = self.shared.jitter.lock() {
                            g.0 += j;
                            g.1 += 1;
                        }
                    }
                }
                self.bucket = None;
            }
            Control::Warmup { start, rate } => {
                if self.warm == Warm::Waiting {
                    let offset = f64::from(self.id) / rate.max(1e-3);
                    let first = start + Duration::from_secs_f64(offset);
                    self.next_probe = Some(first);
                    self.warm_deadline = Some(first + self.shared.setup.warmup_timeout);
                }
            }
            Control::Run {
                rate,
                start,
                senders,
                ..
            } => {
                let own = self.shared.lend.is_none();
                self.bucket = (own && self.warm == Warm::Ok && rate > 0.0).then(|| {
                    let frac = f64::from(self.id % senders.max(1)) / f64::from(senders.max(1));
                    TokenBucket::new(
                        rate,
                        TokenBucket::default_burst(rate),
                        1.0 - frac,
                        start.min(now),
                    )
                });
            }
            Control::Stop => return true,
        }
        false
    }

    /// When the task must wake up without input.
    fn next_wake(&self) -> Option<Instant> {
        let mut t = None;
        if let Transport::Teredo(end) = &self.transport {
            t = earliest(
                end.client.poll_timeout(),
                end.nat.as_ref().and_then(Nat::poll_timeout),
            );
            if !self.reported {
                t = earliest(t, Some(self.started + self.shared.setup.qualify_timeout));
            }
        }
        if matches!(self.control, Control::Warmup { .. }) && self.warm == Warm::Waiting {
            t = earliest(t, self.next_probe);
        }
        if let Some(b) = &self.bucket {
            t = earliest(t, Some(b.next_at()));
        }
        t
    }

    fn on_timer(&mut self, now: Instant) {
        if let Transport::Teredo(end) = &mut self.transport {
            if let Some(nat) = end.nat.as_mut() {
                nat.expire(now);
            }
            close_unmapped(end, &self.shared, now);
            end.client.handle_timeout(now);
        }
        if let Control::Warmup { .. } = self.control {
            if self.warm == Warm::Waiting && self.next_probe.is_some_and(|t| t <= now) {
                if self.warm_deadline.is_some_and(|d| now >= d) {
                    self.warm = Warm::Failed;
                    self.next_probe = None;
                    self.shared.warm_failed.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.send_one(0, now);
                    self.next_probe = Some(now + WARMUP_RETRY);
                }
            }
        }
        if let Control::Run { trial, .. } = self.control {
            let n = self.bucket.as_mut().map_or(0, |b| b.take(now, SEND_BATCH));
            for _ in 0..n {
                self.send_one(trial, now);
            }
        }
    }

    /// Sends one stamped load packet of `trial` (0: a warm-up probe).
    fn send_one(&mut self, trial: u32, now: Instant) {
        let shared = Arc::clone(&self.shared);
        let s = &shared.setup;
        let mut payload = filler(s.size);
        let stamp = Stamp {
            run: s.run_tag,
            client: self.id,
            trial,
            seq: self.seq,
            sent_ns: shared.ns_since_epoch(now),
        };
        self.seq = self.seq.wrapping_add(1);
        stamp.write(&mut payload);
        let counted = trial != 0 && trial == shared.trial_no.load(Ordering::Relaxed);
        if counted {
            shared.trial.sent.fetch_add(1, Ordering::Relaxed);
            shared.metrics.sent.inc();
        }
        let ok = match &mut self.transport {
            Transport::Plain { socket, echo } => {
                socket.socket.try_send_to(&payload, (*echo).into()).is_ok()
            }
            Transport::Teredo(end) => {
                let Some(src) = end.client.address() else {
                    return self.send_failed(counted);
                };
                let dst = match s.dest {
                    Dest::Icmp(a) => Some(a),
                    Dest::Udp(sa) => Some(*sa.ip()),
                    Dest::Pairs => {
                        let n = shared.addresses.len() as u32;
                        shared
                            .addresses
                            .get(((self.id + 1) % n.max(1)) as usize)
                            .and_then(|a| a.get().copied())
                    }
                    Dest::Ceiling(_) | Dest::None => None,
                };
                let packet = match (s.dest, dst) {
                    (Dest::Udp(sa), _) => packets::udp_datagram(
                        SocketAddrV6::new(src, UDP_SOURCE_PORT, 0, 0),
                        sa,
                        &payload,
                    ),
                    (_, Some(d)) => {
                        packets::echo_request(src, d, self.id as u16, stamp.seq as u16, &payload)
                    }
                    (_, None) => None,
                };
                match packet {
                    Some(p) => {
                        if trial == 0 && shared.lend.is_some() {
                            self.probe = Some(p.clone());
                        }
                        end.client.handle_ipv6(now, &p).is_ok()
                    }
                    None => false,
                }
            }
        };
        if !ok {
            self.send_failed(counted);
        }
    }

    fn send_failed(&self, counted: bool) {
        if counted {
            self.shared
                .trial
                .send_errors
                .fetch_add(1, Ordering::Relaxed);
        }
        self.shared.metrics.send_errors.inc();
    }

    /// After any input: send what the client queued, handle what it delivered, note state
    /// changes and the qualification outcome.
    fn after_input(&mut self, now: Instant) {
        if matches!(self.transport, Transport::Plain { .. }) {
            return;
        }
        self.flush(now);
        let Transport::Teredo(end) = &mut self.transport else {
            return;
        };
        let state = end.client.state();
        let label = state_label(state);
        if label != self.gauge {
            self.shared.metrics.move_client(self.gauge, label);
            self.gauge = label;
            if state == State::Qualified {
                end_secondary_mapping(end, &self.shared, now);
            }
        }
        if let (Some(a), Some(slot)) = (
            end.client.address(),
            self.shared.addresses.get(self.id as usize),
        ) {
            let _ = slot.set(a);
        }
        if !self.reported {
            let outcome = Outcome::of(state, end.client.error()).or_else(|| {
                (now >= self.started + self.shared.setup.qualify_timeout)
                    .then_some(Outcome::Timeout)
            });

            if let Some(o) = outcome {
                self.reported = true;
                if o == Outcome::Qualified {
                    let d = now.saturating_duration_since(self.started);
                    self.shared
                        .metrics
                        .qualification_duration
                        .observe(d.as_secs_f64());
                    if let Ok(mut h) = self.shared.qualify_latency.lock() {
                        let _ = h.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
                    }
                    self.shared
                        .last_qualified_ns
                        .fetch_max(self.shared.ns_since_epoch(now), Ordering::Relaxed);
                }
                // A mapping without a socket lost the client's datagrams: our failure, not
                // the server's (its reason is in `loadgen_socket_errors_total`).
                let failed = o != Outcome::Qualified && end.socket_failed;
                self.shared
                    .record_outcome(if failed { "error" } else { o.as_str() });
            }
        }
    }

    /// Drains the client's transmissions (through the NAT, onto the mapping's socket) and
    /// deliveries. Bounded: the client's queues are.
    fn flush(&mut self, now: Instant) {
        for _ in 0..4096 {
            let Transport::Teredo(end) = &mut self.transport else {
                return;
            };
            let delivered = TX.with_borrow_mut(|buf| match end.client.poll_output(buf)? {
                // No LAN neighbours here: a local discovery bubble stays on the link.
                Output::Udp {
                    kind: Kind::DiscoveryBubble,
                    ..
                } => Some(None),
                // A random port (RFC 6081 §5.4/§5.5): this driver opens no socket for it;
                // counted as a failed send.
                Output::Udp {
                    local: Local::Port(port),
                    ..
                } => {
                    tracing::debug!(port, "datagram from a random port: no socket, not sent");
                    self.shared
                        .trial
                        .send_errors
                        .fetch_add(1, Ordering::Relaxed);
                    Some(None)
                }
                Output::Udp { to, len, kind, .. } => {
                    let data = buf.get(..len).unwrap_or_default();
                    let sent = send_through_nat(end, &self.shared, now, to, data);
                    // The `mmsg` engine's template: the datagram emitted for our probe.
                    if let (Kind::Data, Some(from), Some(p)) = (kind, sent, &self.probe) {
                        if let Some(t) = Template::capture(data, p, from, to) {
                            self.template = Some(t);
                        }
                    }
                    Some(None)
                }
                Output::Ipv6 { len, .. } => Some(Some(buf.get(..len).unwrap_or_default().to_vec())),
                _ => Some(None),
            });
            match delivered {
                None => break,
                Some(None) => {}
                Some(Some(packet)) => self.on_delivery(&packet, now),
            }
        }
    }

    /// An IPv6 packet the Teredo client delivered.
    fn on_delivery(&mut self, pkt: &[u8], now: Instant) {
        let Transport::Teredo(end) = &mut self.transport else {
            return;
        };
        let Some(parsed) = packets::parse(pkt) else {
            return;
        };
        match parsed {
            Parsed::Echo {
                reply: false, dst, ..
            } if Some(dst) == end.client.address() => {
                if let Some(answer) = packets::answer(pkt, false) {
                    let _ = end.client.handle_ipv6(now, &answer);
                }
            }
            Parsed::Echo {
                reply: true, data, ..
            } => self.on_answer(data, now),
            Parsed::Udp { payload, .. } => self.on_answer(payload, now),
            Parsed::Echo { .. } => {}
        }
    }

    /// An answer's payload.
    fn on_answer(&mut self, data: &[u8], now: Instant) {
        let Some(stamp) = Stamp::read(data) else {
            return;
        };
        if stamp.run != self.shared.setup.run_tag || stamp.client != self.id {
            return;
        }
        if stamp.trial == 0 {
            if self.warm == Warm::Waiting && self.shared.lend.is_some() && self.template.is_none() {
                // Answered, but nothing to lend the `mmsg` engine (should not happen: the
                // answer echoes a probe the client sent).
                tracing::warn!(
                    client = self.id,
                    "warm-up answered without a captured packet"
                );
                self.warm = Warm::Failed;
                self.next_probe = None;
                self.shared.warm_failed.fetch_add(1, Ordering::Relaxed);
            } else if self.warm == Warm::Waiting {
                self.probe = None;
                self.warm = Warm::Ok;
                self.next_probe = None;
                self.shared.warm_ok.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let shared = &self.shared;
        let verdict = self.tracker.record(stamp.seq);
        let current = stamp.trial == shared.trial_no.load(Ordering::Relaxed);
        if verdict == Verdict::Duplicate {
            shared.metrics.duplicated.inc();
            if current {
                shared.trial.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let rtt_ns = shared.ns_since_epoch(now).saturating_sub(stamp.sent_ns);
        self.tracker.transit(rtt_ns);
        shared.metrics.received.inc();
        shared.metrics.rtt.observe(rtt_ns as f64 / 1e9);
        let reordered = matches!(verdict, Verdict::OutOfOrder | Verdict::TooOld);
        if reordered {
            shared.metrics.out_of_order.inc();
        }
        if !current {
            shared.trial.late.fetch_add(1, Ordering::Relaxed);
            return;
        }
        shared.trial.received.fetch_add(1, Ordering::Relaxed);
        if reordered {
            shared.trial.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut h) = shared.rtt.lock() {
            let us = (rtt_ns / 1000).max(1);
            let _ = h.trial.record(us);
            let _ = h.second.record(us);
        }
    }

    /// The sockets to wait on.
    fn sockets(&self) -> Sockets<'_> {
        match &self.transport {
            Transport::Plain { socket, .. } => Sockets::One(&socket.socket),
            Transport::Teredo(end) => Sockets::Many(&end.sockets, self.lent_at),
        }
    }

    /// Reads what socket `i` has (a batch) and handles it.
    fn receive(&mut self, i: usize) {
        for _ in 0..RECV_BATCH {
            let now = teredo_rt::now();
            let got = RX.with_borrow_mut(|buf| {
                let (n, from, at) = match &self.transport {
                    Transport::Plain { socket, .. } => {
                        let (n, from) = socket.socket.try_recv_from(buf).ok()?;
                        (n, from, None)
                    }
                    Transport::Teredo(end) => {
                        let s = end.sockets.get(i)?;
                        let (n, from) = s.socket.try_recv_from(buf).ok()?;
                        (n, from, Some(s.addr))
                    }
                };
                if n == buf.len() {
                    // Oversized: truncated by the kernel, not ours.
                    return Some(());
                }
                let data = buf.get(..n).unwrap_or_default();
                let Some(at) = at else {
                    self.on_answer(data, now);
                    return Some(());
                };
                if let SocketAddr::V4(from) = from {
                    self.on_datagram(at, from, data, now);
                }
                Some(())
            });
            if got.is_none() {
                break;
            }
        }
    }

    /// A datagram that arrived on the mapping socket `at` from `from`: through the NAT
    /// model to the client state machine, then what that queued.
    fn on_datagram(&mut self, at: SocketAddrV4, from: SocketAddrV4, data: &[u8], now: Instant) {
        let Transport::Teredo(end) = &mut self.transport else {
            return;
        };
        if let Some(nat) = end.nat.as_mut() {
            let m = &self.shared.metrics;
            match nat.inbound(now, at, from) {
                Ok(t) if t.internal == end.internal => {
                    m.nat_packets
                        .with_label_values(&["inbound", "translated"])
                        .inc();
                }
                Ok(_) => return,
                Err(reason) => {
                    if reason == NatDrop::NoMapping {
                        close_unmapped(end, &self.shared, now);
                    }
                    m.nat_packets
                        .with_label_values(&["inbound", "dropped"])
                        .inc();
                    m.nat_dropped.with_label_values(&[reason.as_str()]).inc();
                    return;
                }
            }
        }
        // Refusals are counted by the client.
        let _ = end.client.handle_udp(now, Local::Primary, from, data);
        self.flush(now);
    }

    fn finish(&mut self) {
        self.shared.metrics.move_client(self.gauge, "offline");
        if let Transport::Teredo(end) = &self.transport {
            self.shared
                .metrics
                .nat_mappings
                .sub(i64::try_from(end.mappings).unwrap_or(0));
        }
    }
}

/// Sends a datagram with one `sendto` call. Not `try_send_to`: tokio refuses that with
/// `WouldBlock` until its reactor has seen the new socket's first writable event, which
/// would lose a client's first router solicitation.
fn send_now(socket: &UdpSocket, to: SocketAddrV4, data: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(socket).send_to(data, &SocketAddr::V4(to).into())
}

/// Sends one datagram of the client through its NAT (translation, filtering state, a
/// socket per external mapping, bound when the model creates the mapping; see `sockets` for
/// the rules); the external address it went out from, `None` when it did not go out.
fn send_through_nat(
    end: &mut TeredoEnd,
    shared: &Shared,
    now: Instant,
    to: SocketAddrV4,
    data: &[u8],
) -> Option<SocketAddrV4> {
    let m = &shared.metrics;
    let opts = UdpOptions {
        recv_buffer_size: Some(shared.setup.socket_buffer),
        send_buffer_size: Some(shared.setup.socket_buffer),
        ..UdpOptions::default()
    };
    let from = match end.nat.as_mut() {
        None => end.internal,
        Some(nat) => {
            let mut binder = Binder::new(&opts, &shared.sockets, &end.sockets);
            let r = nat.outbound_checked(now, end.internal, to, &mut |e| binder.check(e));
            let (opened, failure) = (binder.opened, binder.failure);
            end.sockets.extend(opened);
            let from = match r {
                Ok(Outbound::Forward(t)) => {
                    m.nat_packets
                        .with_label_values(&["outbound", "translated"])
                        .inc();
                    Some(t.external)
                }
                Ok(Outbound::Hairpin(_)) => None,
                // An outcome the load generator does not know: not sent, and counted as an
                // outbound drop (no reason label; the NAT's own counters say what it did).
                Ok(_) => {
                    m.nat_packets
                        .with_label_values(&["outbound", "dropped"])
                        .inc();
                    None
                }
                Err(reason) => {
                    m.nat_packets
                        .with_label_values(&["outbound", "dropped"])
                        .inc();
                    m.nat_dropped.with_label_values(&[reason.as_str()]).inc();
                    if let (NatDrop::NoPort, Some(f)) = (reason, failure) {
                        socket_failed(end, shared, f);
                    }
                    None
                }
            };
            bound_sockets(end, shared);
            close_unmapped(end, shared, now);
            from?
        }
    };
    let idx = match end.sockets.iter().position(|s| s.addr == from) {
        Some(i) => i,
        // A mapping the host was not asked about (a UPnP-leased port): bound on first use.
        None => match ClientSocket::bind(from, &opts, &shared.sockets) {
            Ok(s) => {
                end.sockets.push(s);
                bound_sockets(end, shared);
                end.sockets.iter().position(|s| s.addr == from)?
            }
            Err(e) => {
                tracing::debug!(%from, error = %e, "cannot bind a NAT mapping's socket");
                let f = SocketFailure::of(&e).unwrap_or(SocketFailure::PortsInUse);
                socket_failed(end, shared, f);
                m.send_errors.inc();
                return None;
            }
        },
    };
    let s = end.sockets.get(idx)?;
    if send_now(&s.socket, to, data).is_err() {
        m.send_errors.inc();
        return None;
    }
    Some(from)
}

/// A socket that could not be opened, counted by reason (gauge and metric).
fn count_socket_failure(shared: &Shared, f: SocketFailure) {
    shared.sockets.failed(f);
    shared
        .metrics
        .socket_errors
        .with_label_values(&[f.as_str()])
        .inc();
}

/// A mapping got no socket: counted by reason, and remembered for the outcome.
fn socket_failed(end: &mut TeredoEnd, shared: &Shared, f: SocketFailure) {
    count_socket_failure(shared, f);
    if !matches!(end.client.state(), State::Qualified | State::Dormant) {
        end.socket_failed = true;
    }
}

/// Closes the sockets of mappings the NAT model no longer has (expired, removed) and brings
/// the mapping metrics up to date. The first socket stays until the model has created a
/// mapping (it holds the client's internal port).
fn close_unmapped(end: &mut TeredoEnd, shared: &Shared, now: Instant) {
    let Some(nat) = end.nat.as_ref() else {
        return;
    };
    let m = &shared.metrics;
    let created = nat.counters().mappings_created;
    m.nat_mappings_created
        .inc_by(created.saturating_sub(end.created));
    end.created = created;
    let live = nat.mappings();
    m.nat_mappings
        .add(i64::try_from(live).unwrap_or(0) - i64::try_from(end.mappings).unwrap_or(0));
    end.mappings = live;
    if created == 0 {
        return;
    }
    end.sockets.retain(|s| nat.receives_on(s.addr, now));
}

/// Keeps a client within [`MAX_SOCKETS`]: ends the oldest mappings other than the primary
/// server's, in the model and with their sockets.
fn bound_sockets(end: &mut TeredoEnd, shared: &Shared) {
    let primary = SocketAddrV4::new(shared.setup.server, teredo::addr::TEREDO_PORT);
    while end.sockets.len() > MAX_SOCKETS {
        let keep = end
            .nat
            .as_ref()
            .and_then(|n| n.mapping_for(end.internal, primary));
        let Some(i) = end.sockets.iter().position(|s| Some(s.addr) != keep) else {
            return;
        };
        let s = end.sockets.remove(i);
        if let Some(nat) = end.nat.as_mut() {
            nat.remove_mapping(s.addr);
        }
    }
}

/// On qualifying: ends the secondary check's mapping (toward the secondary server) when it
/// is not the client's own, in the model and with its socket; see `sockets` for why nothing
/// the client needs can arrive there any more.
fn end_secondary_mapping(end: &mut TeredoEnd, shared: &Shared, now: Instant) {
    let Some(nat) = end.nat.as_mut() else {
        return;
    };
    let cfg = end.client.config();
    let port = teredo::addr::TEREDO_PORT;
    let primary = nat.mapping_for(end.internal, SocketAddrV4::new(cfg.server, port));
    let secondary = nat.mapping_for(end.internal, SocketAddrV4::new(cfg.secondary_addr(), port));
    if let Some(m2) = secondary.filter(|m2| Some(*m2) != primary) {
        nat.remove_mapping(m2);
        close_unmapped(end, shared, now);
    }
}
