//! `client-sim qualify`: one Teredo client qualifying against a real server over real UDP
//! sockets, optionally behind the NAT model (DESIGN.md modes 2 and 3).
//!
//! * **No NAT**: one socket bound to `--bind:--port`. The client must know its real address
//!   (it reports NAT `none` when the server sees exactly that), so with `--bind 0.0.0.0` the
//!   local address is found by `connect`ing a probe socket toward the server and reading
//!   its local address.
//! * **Behind a simulated NAT**: the client state machine lives at the virtual internal
//!   address `10.0.0.2:<port>`. Every datagram it sends goes through [`Nat::outbound`]; for each
//!   external mapping the NAT allocates, a real UDP socket is bound to that external
//!   address and port (the `--bind` address unless the NAT spec lists its own `ips=`), so
//!   the server sees genuine NAT behaviour on the wire. What arrives on a mapping socket
//!   goes through [`Nat::inbound`] (filtering) before the client sees it. The internal port is
//!   the port of a socket bound first on the external address, so a port-preserving NAT's
//!   first mapping already has its socket. If a later mapping's port cannot be bound, the
//!   attempt is counted and qualification starts over with a freshly seeded NAT, up to
//!   [`MAX_ATTEMPTS`] times, then fails with the bind error.
//!
//! The run ends when the client is qualified or offline, or after the timeout. The
//! [`crate::ping`] commands keep the driver after qualifying and send data through it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use netsim::{Nat, NatConfig, NatConfigError, NatDrop, NatPreset, Outbound};
use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use teredo::addr::TEREDO_PORT;
use teredo::client::{Client, ClientConfig, ClientType, Event, Profile};
use teredo::io::{Kind, Local, Output};
use teredo::wire::packet::MAX_UDP_PAYLOAD;
use teredo_rt::{bind_udp, Shutdown, UdpOptions, MAX_DATAGRAM};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::hold::{Held, HoldQueue};
use crate::report::{Outcome, StatusReport};
use crate::wire_trace::{DropSite, WireTrace};

/// How many times qualification starts over after a mapping's port could not be bound.
pub const MAX_ATTEMPTS: u32 = 3;

/// The virtual internal address of a client behind the simulated NAT.
pub const INTERNAL_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// Capacity of the channel from the socket tasks to the driver.
const CHANNEL: usize = 1024;

/// Packets delivered by the client and not yet read by [`Driver::take_delivered`]; older
/// ones are dropped beyond this.
const MAX_DELIVERED: usize = 1024;

/// Events kept for [`Driver::take_events`].
const MAX_EVENTS: usize = 1024;

/// Which NAT sits in front of the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NatChoice {
    /// None: the client's socket is on the network directly.
    #[default]
    None,
    /// A preset, on the `--bind` (or detected) address.
    Preset(NatPreset),
    /// A free combination ([`NatConfig::apply_spec`] keys) on top of the port-restricted
    /// default on the `--bind` address.
    Spec(String),
}

/// What `qualify` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QualifyOptions {
    /// The server's primary address.
    pub server: Ipv4Addr,
    /// The server's secondary address (`None`: primary + 1).
    pub secondary: Option<Ipv4Addr>,
    /// Client behaviour.
    pub profile: Profile,
    /// NAT in front of the client.
    pub nat: NatChoice,
    /// Local address to bind (`0.0.0.0`: the address the route to the server uses).
    pub bind: Ipv4Addr,
    /// Local port (0: any). Behind a NAT: the internal port.
    pub port: u16,
    /// Give up after this long while still probing.
    pub timeout: Duration,
    /// The host is on a managed (domain) network.
    pub managed_network: bool,
    /// Windows client type.
    pub client_type: ClientType,
    /// Windows' `DefaultQualified` (never dormant).
    pub default_qualified: bool,
    /// Seed of the client's nonces and flags and of the NAT model; `None`: random.
    pub seed: Option<u64>,
}

impl QualifyOptions {
    /// Defaults: profile vista, no NAT, any local address and port, 30 s timeout,
    /// unmanaged network, type `client`.
    pub fn new(server: Ipv4Addr) -> Self {
        Self {
            server,
            secondary: None,
            profile: Profile::Vista,
            nat: NatChoice::None,
            bind: Ipv4Addr::UNSPECIFIED,
            port: 0,
            timeout: Duration::from_secs(30),
            managed_network: false,
            client_type: ClientType::Client,
            default_qualified: false,
            seed: None,
        }
    }
}

/// Counters of one `qualify` run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QualifyCounters {
    /// Qualification attempts (more than 1 after bind failures).
    pub attempts: u32,
    /// Router solicitations sent.
    pub rs_sent: u64,
    /// Router advertisements accepted.
    pub ra_accepted: u64,
    /// Datagrams the client refused on the qualification path.
    pub ra_rejected: u64,
    /// Datagrams the client refused on the data path.
    pub data_rejected: u64,
    /// NAT drops per reason (empty without NAT).
    pub nat_drops: BTreeMap<&'static str, u64>,
    /// Real UDP sockets opened (one per external mapping behind a NAT).
    pub sockets: usize,
    /// External mappings whose port could not be bound.
    pub bind_failures: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// Datagrams the client emitted from one of its random ports (RFC 6081 §5.4, §5.5,
    /// [`teredo::io::Local::Port`]): dropped, this driver opens no socket for them (the
    /// extensions run in the in-process lab, `client-sim lab`).
    pub random_port_dropped: u64,
    /// Datagrams larger than the largest UDP payload (dropped).
    pub oversized: u64,
    /// Datagrams held for the NAT model's latency (`delay`, `jitter`) before they were
    /// sent or handed to the client.
    pub held: u64,
    /// Held datagrams released after one that entered the NAT later in the same direction:
    /// reordering by the model's jitter, over real sockets.
    pub reordered: u64,
}

/// The result of `qualify`: how it ended, the status block and the counters.
#[derive(Clone, Debug, Serialize)]
pub struct QualifyReport {
    /// How it ended.
    pub outcome: Outcome,
    /// The exit status for that outcome.
    pub exit_code: u8,
    /// The client profile.
    pub profile: String,
    /// `none`, or the NAT model's full spec.
    pub nat_simulator: String,
    /// The status block.
    #[serde(flatten)]
    pub status: StatusReport,
    /// Wall time, milliseconds.
    pub elapsed_ms: u128,
    /// Counters.
    pub counters: QualifyCounters,
    /// The datagrams of the attempt that reached the outcome (for `--html`).
    #[serde(skip)]
    pub trace: Option<WireTrace>,
}

impl fmt::Display for QualifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.status.fmt(f)
    }
}

/// Why one attempt ended without an outcome.
enum AttemptError {
    /// A mapping's external port could not be bound: retry with another NAT.
    Bind {
        addr: SocketAddrV4,
        error: io::Error,
    },
    /// Anything else: give up.
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for AttemptError {
    fn from(e: anyhow::Error) -> Self {
        Self::Fatal(e)
    }
}

/// Qualifies once; see the module documentation. Errors are configuration or socket
/// problems (one line each) and an interruption by `shutdown`; every protocol outcome,
/// including the timeout, is a [`QualifyReport`].
pub async fn qualify(opts: QualifyOptions, shutdown: Shutdown) -> anyhow::Result<QualifyReport> {
    let (mut report, driver) = qualify_driver(&opts, &shutdown).await?;
    report.trace = Some(driver.trace);
    Ok(report)
}

/// As [`qualify`], and also returns the driver of the attempt that reached the outcome, so
/// that a data session can go on with the same client, NAT and sockets.
pub(crate) async fn qualify_driver(
    opts: &QualifyOptions,
    shutdown: &Shutdown,
) -> anyhow::Result<(QualifyReport, Driver)> {
    let opts = opts.clone();
    let started = Instant::now();
    anyhow::ensure!(
        !(opts.server.is_unspecified() || opts.server.is_multicast() || opts.server.is_broadcast()),
        "server address {} is not a unicast address",
        opts.server
    );
    let local_ip = if opts.bind.is_unspecified() {
        local_ip_toward(opts.server)?
    } else {
        opts.bind
    };
    let base_seed = opts.seed.unwrap_or_else(|| rand::rng().random());
    let mut counters = QualifyCounters::default();
    let mut last_bind_error = None;
    for attempt in 0..MAX_ATTEMPTS {
        counters.attempts = attempt + 1;
        let seed = base_seed.wrapping_add(u64::from(attempt));
        let nat = nat_config(&opts.nat, local_ip, seed)?;
        if let Some(c) = &nat {
            let secondary = opts
                .secondary
                .unwrap_or_else(|| Ipv4Addr::from(u32::from(opts.server).wrapping_add(1)));
            if let Some(ip) = [opts.server, secondary]
                .into_iter()
                .find(|ip| c.external_ips.contains(ip))
            {
                bail!(
                    "server address {ip} is also the simulated NAT's external address: \
                     the NAT would hairpin the router solicitations; bind the client to \
                     another address (--bind)"
                );
            }
        }
        let nat_simulator = nat.as_ref().map_or("none".to_owned(), NatConfig::to_spec);
        let mut driver = Driver::start(&opts, local_ip, nat, seed)?;
        tracing::info!(
            server = %opts.server,
            profile = %opts.profile,
            nat = %nat_simulator,
            local = %driver.client.local(),
            attempt = attempt + 1,
            "qualifying"
        );
        let result = driver.run(&opts, shutdown).await;
        driver.add_counters(&mut counters);
        match result {
            Ok(outcome) => {
                tracing::info!(outcome = outcome.as_str(), state = %driver.client.state(), "qualification finished");
                let report = QualifyReport {
                    outcome,
                    exit_code: outcome.exit_code(),
                    profile: opts.profile.to_string(),
                    nat_simulator,
                    status: StatusReport::of(&driver.client),
                    elapsed_ms: started.elapsed().as_millis(),
                    counters,
                    trace: None,
                };
                return Ok((report, driver));
            }
            Err(AttemptError::Bind { addr, error }) => {
                counters.bind_failures += 1;
                tracing::warn!(%addr, %error, "cannot bind the UDP socket of a NAT mapping; starting over with another NAT");
                last_bind_error = Some((addr, error));
            }
            Err(AttemptError::Fatal(e)) => return Err(e),
        }
    }
    match last_bind_error {
        Some((addr, error)) => bail!(
            "cannot bind UDP socket {addr} for a NAT mapping ({MAX_ATTEMPTS} attempts): {error}"
        ),
        None => bail!("qualification did not run"),
    }
}

/// The local address the kernel would use toward `server`.
pub fn local_ip_toward(server: Ipv4Addr) -> anyhow::Result<Ipv4Addr> {
    let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .context("cannot open a probe UDP socket")?;
    probe
        .connect((server, TEREDO_PORT))
        .with_context(|| format!("no route to server {server}"))?;
    match probe
        .local_addr()
        .context("cannot read the probe socket's address")?
    {
        SocketAddr::V4(a) if !a.ip().is_unspecified() => Ok(*a.ip()),
        other => bail!("no local IPv4 address toward {server} (got {other})"),
    }
}

/// The NAT configuration for `choice` on `external` (unless the spec lists its own `ips=`).
pub fn nat_config(
    choice: &NatChoice,
    external: Ipv4Addr,
    seed: u64,
) -> anyhow::Result<Option<NatConfig>> {
    let hint = |e: NatConfigError| -> anyhow::Error {
        match e {
            NatConfigError::TooFewExternalIps { .. } => anyhow::anyhow!(
                "{e}; give the NAT's external addresses (local addresses of this host) with \
                 --nat-spec preset=symmetric-address,ips=A+B"
            ),
            e => anyhow::anyhow!("{e}"),
        }
    };
    match choice {
        NatChoice::None => Ok(None),
        NatChoice::Preset(p) => p.config(vec![external], seed).map_err(hint),
        NatChoice::Spec(spec) => {
            let mut c = NatConfig::new(vec![external], seed);
            c.apply_spec(spec).map_err(hint)?;
            Ok(Some(c))
        }
    }
}

/// The real sockets of one attempt and their receive tasks.
struct Sockets {
    map: BTreeMap<SocketAddrV4, Arc<UdpSocket>>,
    tasks: JoinSet<()>,
    tx: mpsc::Sender<Received>,
    oversized: Arc<AtomicU64>,
}

/// A datagram read from one of the sockets: (socket address, source, payload).
type Received = (SocketAddrV4, SocketAddr, Vec<u8>);

impl Sockets {
    /// Binds a socket on `addr` and starts its receive task; returns the bound address.
    fn bind(&mut self, addr: SocketAddrV4) -> io::Result<SocketAddrV4> {
        let socket = bind_udp(addr, &UdpOptions::default())?;
        let bound = match socket.local_addr()? {
            SocketAddr::V4(a) => a,
            other => {
                return Err(io::Error::other(format!(
                    "socket bound to non-IPv4 address {other}"
                )))
            }
        };
        let socket = Arc::new(socket);
        self.map.insert(bound, Arc::clone(&socket));
        let tx = self.tx.clone();
        let oversized = Arc::clone(&self.oversized);
        self.tasks.spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM + 1];
            loop {
                let (n, from) = match socket.recv_from(&mut buf).await {
                    Ok(r) => r,
                    Err(e) => {
                        // ICMP errors of earlier sends can surface here; do not spin.
                        tracing::debug!(%bound, error = %e, "recv_from failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if n == buf.len() {
                    oversized.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if tx.send((bound, from, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        });
        Ok(bound)
    }
}

/// One qualification attempt's state: the client, its NAT model and the real sockets.
pub(crate) struct Driver {
    pub(crate) client: Client,
    nat: Option<Nat>,
    /// The client's own address (real without NAT, virtual behind one).
    internal: SocketAddrV4,
    sockets: Sockets,
    rx: mpsc::Receiver<Received>,
    send_errors: u64,
    /// Datagrams from a random port, dropped (no socket for them here).
    random_port_dropped: u64,
    /// Transmit / delivery buffer (one datagram).
    buf: Vec<u8>,
    /// Packets the client delivered, with their arrival time.
    delivered: VecDeque<(Instant, Vec<u8>)>,
    delivered_dropped: u64,
    /// Events since the last [`Self::take_events`].
    events: VecDeque<Event>,
    /// Datagrams waiting for the NAT model's latency.
    hold: HoldQueue,
    /// What went over the sockets, for `--html`.
    pub(crate) trace: WireTrace,
}

/// What one [`Driver::step`] saw.
pub(crate) enum Step {
    /// Input handled or a timer fired.
    Progress,
    /// The deadline passed.
    Deadline,
    /// The shutdown signal.
    Shutdown,
}

impl Driver {
    fn start(
        opts: &QualifyOptions,
        local_ip: Ipv4Addr,
        nat: Option<NatConfig>,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let mut sockets = Sockets {
            map: BTreeMap::new(),
            tasks: JoinSet::new(),
            tx,
            oversized: Arc::default(),
        };
        // Without NAT: the client's socket. Behind a NAT: the first external socket, whose
        // port becomes the internal port (a preserving NAT maps it to itself).
        let bound = sockets.bind(SocketAddrV4::new(local_ip, opts.port))?;
        let internal = if nat.is_some() {
            SocketAddrV4::new(INTERNAL_IP, bound.port())
        } else {
            bound
        };
        let mut cfg = ClientConfig::profile(opts.profile, opts.server);
        cfg.secondary = opts.secondary;
        cfg.managed_network = opts.managed_network;
        cfg.client_type = opts.client_type;
        cfg.default_qualified = opts.default_qualified;
        let started = teredo_rt::now();
        let client = Client::new(cfg, ChaCha8Rng::seed_from_u64(seed), internal, started);
        let trace = WireTrace::new(started, nat.is_some());
        Ok(Self {
            client,
            nat: nat.map(Nat::new),
            internal,
            sockets,
            rx,
            send_errors: 0,
            random_port_dropped: 0,
            buf: vec![0u8; MAX_UDP_PAYLOAD],
            delivered: VecDeque::new(),
            delivered_dropped: 0,
            events: VecDeque::new(),
            hold: HoldQueue::default(),
            trace,
        })
    }

    /// Packets delivered to the application since the last call, with their arrival time.
    pub(crate) fn take_delivered(&mut self) -> Vec<(Instant, Vec<u8>)> {
        self.delivered.drain(..).collect()
    }

    /// Client events since the last call.
    pub(crate) fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Waits for one input (a datagram, a client or NAT timer, `deadline`, or `shutdown`),
    /// handles it, and sends what the client produced.
    pub(crate) async fn step(
        &mut self,
        deadline: Option<tokio::time::Instant>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Step> {
        let timer = self.next_timer();
        let step = tokio::select! {
            biased;
            () = shutdown.wait() => Step::Shutdown,
            () = sleep_until_opt(deadline) => Step::Deadline,
            got = self.rx.recv() => match got {
                Some(r) => {
                    self.receive(r);
                    Step::Progress
                }
                None => anyhow::bail!("socket tasks ended"),
            },
            () = sleep_until_opt(timer) => {
                let now = teredo_rt::now();
                if let Some(nat) = self.nat.as_mut() {
                    nat.expire(now);
                }
                self.client.handle_timeout(now);
                Step::Progress
            }
        };
        self.pump().await?;
        Ok(step)
    }

    /// Sends what the client queued and collects its deliveries and events.
    pub(crate) async fn pump(&mut self) -> anyhow::Result<()> {
        match self.flush().await {
            Ok(()) => Ok(()),
            Err(AttemptError::Bind { addr, error }) => Err(anyhow::anyhow!(
                "cannot bind UDP socket {addr} for a NAT mapping: {error}"
            )),
            Err(AttemptError::Fatal(e)) => Err(e),
        }
    }

    /// Counters of the run so far.
    pub(crate) fn counters(&self) -> QualifyCounters {
        let mut c = QualifyCounters::default();
        self.add_counters(&mut c);
        c
    }

    /// The socket for an external mapping, binding it on first use.
    fn socket_for(&mut self, ext: SocketAddrV4) -> Result<Arc<UdpSocket>, AttemptError> {
        if let Some(s) = self.sockets.map.get(&ext) {
            return Ok(Arc::clone(s));
        }
        match self.sockets.bind(ext) {
            Ok(bound) => self
                .sockets
                .map
                .get(&bound)
                .cloned()
                .ok_or_else(|| AttemptError::Fatal(anyhow::anyhow!("socket {ext} vanished"))),
            Err(error) => Err(AttemptError::Bind { addr: ext, error }),
        }
    }

    /// Sends what the client queued, through the NAT; collects deliveries and events.
    async fn flush(&mut self) -> Result<(), AttemptError> {
        self.release_held().await?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(MAX_UDP_PAYLOAD, 0);
        let r = self.flush_with(&mut buf).await;
        self.buf = buf;
        while let Some(e) = self.client.poll_event() {
            tracing::debug!(event = ?e, "client event");
            self.trace.event(teredo_rt::now(), e);
            if self.events.len() >= MAX_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(e);
        }
        r
    }

    async fn flush_with(&mut self, buf: &mut [u8]) -> Result<(), AttemptError> {
        // Bounded: the client's output queue holds at most 256 datagrams (plus an RS).
        for _ in 0..1024 {
            let (to, len) = match self.client.poll_output(buf) {
                // The client is alone on its (virtual or real) link here, and the driver joins
                // no multicast group: a local discovery bubble (RFC 4380 §5.2.8) is not sent,
                // and never crosses the NAT model.
                Some(Output::Udp {
                    kind: Kind::DiscoveryBubble,
                    ..
                }) => continue,
                // A random port of RFC 6081 §5.4/§5.5: never sent from the primary socket.
                Some(Output::Udp {
                    local: Local::Port(port),
                    ..
                }) => {
                    self.random_port_dropped += 1;
                    tracing::info!(
                        port,
                        "datagram from a random port dropped: the port-preserving and \
                         sequential extensions need the in-process lab"
                    );
                    continue;
                }
                Some(Output::Udp { to, len, .. }) => (to, len),
                Some(Output::Ipv6 { len, .. }) => {
                    if self.delivered.len() >= MAX_DELIVERED {
                        self.delivered.pop_front();
                        self.delivered_dropped += 1;
                    }
                    let packet = buf.get(..len).unwrap_or_default().to_vec();
                    self.delivered.push_back((teredo_rt::now(), packet));
                    continue;
                }
                // Only the in-process NAT model has an IGD to ask; a kernel NAT is not asked
                // (no UPnP client here), the answer is a failure and the client goes on
                // without the extension.
                Some(Output::Upnp(request)) => {
                    let now = teredo_rt::now();
                    if let Some(a) = netsim::sim::perform_upnp(self.nat.as_mut(), now, request) {
                        self.client.handle_upnp(now, a);
                    }
                    continue;
                }
                Some(_) => continue,
                None => break,
            };
            let now = teredo_rt::now();
            let from = match self.nat.as_mut() {
                None => self.internal,
                Some(nat) => match nat.outbound(now, self.internal, to) {
                    // Held for its latency (with jitter, datagrams overtake each other).
                    Ok(Outbound::Forward(tr)) if !tr.delay.is_zero() || !self.hold.is_empty() => {
                        let data = buf.get(..len).unwrap_or_default().to_vec();
                        let (from, due) = (tr.external, now + tr.delay);
                        // Recorded when it leaves (release_held).
                        self.hold.push(due, Held::Out { from, to, data });
                        continue;
                    }
                    Ok(Outbound::Forward(tr)) => tr.external,
                    // The server is never one of our NAT's own addresses; counted by the NAT
                    // otherwise. An outcome this driver does not know has no mapping socket
                    // to leave from: not sent, like a hairpin (the NAT's counters say what it
                    // did).
                    other => {
                        let reason = match other {
                            Err(e) => e.to_string(),
                            Ok(_) => "hairpin: not sent".to_owned(),
                        };
                        let data = buf.get(..len).unwrap_or_default();
                        let (c, d) = (self.internal, Some((DropSite::Nat, reason)));
                        self.trace.sent(now, c, c, to, false, d, data);
                        continue;
                    }
                },
            };
            let new_mapping = self.nat.is_some() && !self.sockets.map.contains_key(&from);
            let socket = self.socket_for(from)?;
            let data = buf.get(..len).unwrap_or_default();
            self.trace
                .sent(now, self.internal, from, to, new_mapping, None, data);
            if let Err(e) = socket.send_to(data, to).await {
                self.send_errors += 1;
                tracing::warn!(%from, %to, error = %e, "send failed");
            }
        }
        Ok(())
    }

    fn receive(&mut self, (at, from, data): Received) {
        let SocketAddr::V4(from) = from else {
            return;
        };
        let now = teredo_rt::now();
        if let Some(nat) = self.nat.as_mut() {
            let dropped = match nat.inbound(now, at, from) {
                Ok(t) if t.internal == self.internal => {
                    if !t.delay.is_zero() || !self.hold.is_empty() {
                        // Recorded when it is handed to the client (release_held).
                        self.hold.push(now + t.delay, Held::In { at, from, data });
                        return;
                    }
                    None
                }
                // Another internal host's mapping (none exist) or a NAT drop (counted).
                Ok(_) => Some("for another internal host".to_owned()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(reason) = dropped {
                let d = Some((DropSite::Nat, reason));
                self.trace.received(now, self.internal, at, from, d, &data);
                return;
            }
        }
        self.deliver(now, at, from, &data);
    }

    /// Hands a datagram to the client and records what it did with it (refusals are also
    /// counted by the client).
    fn deliver(&mut self, now: Instant, at: SocketAddrV4, from: SocketAddrV4, data: &[u8]) {
        let refused = self
            .client
            .handle_udp(now, Local::Primary, from, data)
            .err()
            .map(|r| (DropSite::Client, format!("refused by the client: {r}")));
        self.trace
            .received(now, self.internal, at, from, refused, data);
    }

    async fn run(
        &mut self,
        opts: &QualifyOptions,
        shutdown: &Shutdown,
    ) -> Result<Outcome, AttemptError> {
        let deadline = tokio::time::Instant::now() + opts.timeout;
        loop {
            self.flush().await?;
            if let Some(outcome) = Outcome::of(self.client.state(), self.client.error()) {
                return Ok(outcome);
            }
            let timer = self.next_timer();
            tokio::select! {
                biased;
                () = shutdown.wait() => {
                    return Err(AttemptError::Fatal(anyhow::anyhow!("interrupted")));
                }
                () = tokio::time::sleep_until(deadline) => return Ok(Outcome::Timeout),
                got = self.rx.recv() => match got {
                    Some(r) => self.receive(r),
                    None => return Err(AttemptError::Fatal(anyhow::anyhow!("socket tasks ended"))),
                },
                () = sleep_until_opt(timer) => {
                    let now = teredo_rt::now();
                    if let Some(nat) = self.nat.as_mut() {
                        nat.expire(now);
                    }
                    self.client.handle_timeout(now);
                }
            }
        }
    }

    /// The earliest of the client's, the NAT's and the held datagrams' deadlines.
    fn next_timer(&self) -> Option<tokio::time::Instant> {
        let nat = self.nat.as_ref().and_then(Nat::poll_timeout);
        earliest(
            self.client.poll_timeout(),
            earliest(nat, self.hold.next_due()),
        )
        .map(tokio::time::Instant::from_std)
    }

    /// Sends or hands to the client every held datagram that is due.
    async fn release_held(&mut self) -> Result<(), AttemptError> {
        let now = teredo_rt::now();
        while let Some(d) = self.hold.pop_due(now) {
            match d {
                Held::Out { from, to, data } => {
                    let new_mapping = !self.sockets.map.contains_key(&from);
                    let socket = self.socket_for(from)?;
                    self.trace
                        .sent(now, self.internal, from, to, new_mapping, None, &data);
                    if let Err(e) = socket.send_to(&data, to).await {
                        self.send_errors += 1;
                        tracing::warn!(%from, %to, error = %e, "send failed");
                    }
                }
                Held::In { at, from, data } => self.deliver(now, at, from, &data),
            }
        }
        Ok(())
    }

    fn add_counters(&self, c: &mut QualifyCounters) {
        let cc = self.client.counters();
        c.rs_sent += cc.rs_sent;
        c.ra_accepted += cc.ra_accepted;
        c.ra_rejected += cc.ra_rejected;
        c.data_rejected += cc.data_rejected;
        if let Some(nat) = &self.nat {
            for r in NatDrop::ALL {
                *c.nat_drops.entry(r.as_str()).or_default() += nat.counters().dropped(*r);
            }
        }
        c.sockets += self.sockets.map.len();
        c.send_errors += self.send_errors;
        c.random_port_dropped += self.random_port_dropped;
        c.oversized += self.sockets.oversized.load(Ordering::Relaxed);
        c.held += self.hold.held;
        c.reordered += self.hold.reordered;
    }
}

pub(crate) async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nobody listens there.
    const SERVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

    #[test]
    fn nat_choice_configs() {
        let ip = Ipv4Addr::new(198, 51, 100, 10);
        assert_eq!(nat_config(&NatChoice::None, ip, 1).unwrap(), None);
        let c = nat_config(&NatChoice::Preset(NatPreset::Symmetric), ip, 1)
            .unwrap()
            .unwrap();
        assert_eq!(c.external_ips, vec![ip]);
        let e = nat_config(&NatChoice::Preset(NatPreset::SymmetricAddress), ip, 1).unwrap_err();
        assert!(e.to_string().contains("ips=A+B"), "{e}");
        let c = nat_config(
            &NatChoice::Spec("preset=full-cone,timeout=20s".into()),
            ip,
            1,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.external_ips, vec![ip]);
        assert_eq!(c.timeout, Duration::from_secs(20));
        let c = nat_config(
            &NatChoice::Spec("preset=symmetric-address,ips=198.51.100.10+198.51.100.11".into()),
            ip,
            1,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.external_ips.len(), 2);
        assert!(nat_config(&NatChoice::Spec("bogus=1".into()), ip, 1).is_err());
        assert!(nat_config(&NatChoice::Spec("preset=none".into()), ip, 1).is_err());
    }

    #[tokio::test]
    async fn unreachable_server_times_out_or_goes_offline() {
        // A closed port on loopback: the RS never gets an answer (127.0.0.2 is not even a
        // valid Teredo server); a short timeout ends the run with exit status 6. (Not
        // 127.0.0.1: behind the NAT model that is the NAT's own address, and the RS would
        // be hairpinned.)
        let mut o = QualifyOptions::new(SERVER);
        o.timeout = Duration::from_millis(300);
        o.bind = Ipv4Addr::LOCALHOST;
        o.seed = Some(1);
        let (_trigger, shutdown) = Shutdown::new();
        let r = qualify(o.clone(), shutdown).await.unwrap();
        assert_eq!(r.outcome, Outcome::Timeout);
        assert_eq!(r.exit_code, 6);
        assert!(r.counters.rs_sent >= 1);
        assert_eq!(r.status.state, "probe (primary server)");
        // Behind a NAT too.
        o.nat = NatChoice::Preset(NatPreset::PortRestricted);
        let (_trigger, shutdown) = Shutdown::new();
        let r = qualify(o.clone(), shutdown).await.unwrap();
        assert_eq!(r.outcome, Outcome::Timeout);
        assert!(r.status.local_mapping.starts_with("10.0.0.2:"));
        assert_eq!(r.counters.sockets, 1);
        assert_eq!(r.counters.nat_drops.values().sum::<u64>(), 0);
        // Managed network: offline at once, exit 5, nothing sent.
        o.managed_network = true;
        let (_trigger, shutdown) = Shutdown::new();
        let r = qualify(o, shutdown).await.unwrap();
        assert_eq!(r.outcome, Outcome::ManagedNetwork);
        assert_eq!(r.exit_code, 5);
        assert_eq!(r.counters.rs_sent, 0);
    }

    /// The external port the symmetric preset's first mapping gets with `seed`.
    fn first_random_port(seed: u64) -> u16 {
        let cfg = nat_config(
            &NatChoice::Preset(NatPreset::Symmetric),
            Ipv4Addr::LOCALHOST,
            seed,
        )
        .unwrap()
        .unwrap();
        let mut nat = Nat::new(cfg);
        match nat.outbound(
            Instant::now(),
            SocketAddrV4::new(INTERNAL_IP, 40000),
            SocketAddrV4::new(SERVER, TEREDO_PORT),
        ) {
            Ok(Outbound::Forward(t)) => t.external.port(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn busy_mapping_port_starts_over_then_fails_clearly() {
        let mut o = QualifyOptions::new(SERVER);
        o.bind = Ipv4Addr::LOCALHOST;
        o.nat = NatChoice::Preset(NatPreset::Symmetric);
        o.timeout = Duration::from_millis(200);
        // Pick a seed whose first mapping port is free, occupy it: attempt 1 cannot bind it,
        // attempt 2 (seed + 1) gets another port.
        let blockers: Vec<std::net::UdpSocket> = (100..)
            .filter_map(|seed| {
                std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, first_random_port(seed)))
                    .ok()
                    .map(|s| (seed, s))
            })
            .take(1)
            .map(|(seed, s)| {
                o.seed = Some(seed);
                s
            })
            .collect();
        let (_trigger, shutdown) = Shutdown::new();
        let r = qualify(o.clone(), shutdown).await.unwrap();
        assert_eq!(r.outcome, Outcome::Timeout);
        assert_eq!((r.counters.attempts, r.counters.bind_failures), (2, 1));
        drop(blockers);

        // Every attempt's port busy: one clear error.
        let base = (200..)
            .find(|&s| {
                let ports: Vec<u16> = (0..3).map(|k| first_random_port(s + k)).collect();
                ports.iter().all(|p| {
                    std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, *p)).is_ok()
                        && ports.iter().filter(|q| *q == p).count() == 1
                })
            })
            .unwrap();
        let _blockers: Vec<std::net::UdpSocket> = (0..3)
            .filter_map(|k| {
                std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, first_random_port(base + k))).ok()
            })
            .collect();
        o.seed = Some(base);
        let (_trigger, shutdown) = Shutdown::new();
        let e = qualify(o, shutdown).await.unwrap_err().to_string();
        assert!(
            e.starts_with("cannot bind UDP socket 127.0.0.1:") && e.contains("(3 attempts)"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[tokio::test]
    async fn shutdown_interrupts() {
        let mut o = QualifyOptions::new(Ipv4Addr::LOCALHOST);
        o.bind = Ipv4Addr::LOCALHOST;
        let (trigger, shutdown) = Shutdown::new();
        trigger.trigger();
        let e = qualify(o, shutdown).await.unwrap_err();
        assert_eq!(e.to_string(), "interrupted");
    }
}
