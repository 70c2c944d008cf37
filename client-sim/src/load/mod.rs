//! `client-sim load`: many simulated Teredo clients from one process, each with its own
//! client state machine, NAT model and sockets ([`worker`]), driven through phases by one
//! coordinator (here):
//!
//! 1. **qualify**: clients start at `--qualify-rate` (a token bucket), each qualifies against
//!    the server; success, outcome and latency are counted.
//! 2. **data**: a warm-up (each qualified client sends stamped probes until one is answered,
//!    which sets up the relay or peer path), then trials at a fixed total rate spread evenly
//!    over the clients, each followed by a drain time; with `--find-max`, a search for the
//!    highest rate whose loss stays within the threshold ([`findmax`]).
//!
//! `--ceiling` runs the same sockets, pacing and accounting as plain UDP against an
//! in-process echo on loopback, to show what the generator itself can do.
//!
//! `--phase rs` runs neither: an RS storm on the `mmsg` engine ([`rs_storm`]), trials of
//! router solicitations answered by the server's router advertisements, measured like the
//! data trials.
//!
//! Every packet carries a [`payload::Stamp`] (run, client, trial, sequence number, send
//! time); answers are tracked per client ([`seq`]) for loss, duplicates and reordering, RTTs
//! go into an HDR histogram, and everything is also exported as `loadgen_*` metrics.

pub mod charts;
pub mod csum;
pub mod engine;
pub mod findmax;
#[cfg(test)]
mod fixture;
pub mod handoff;
pub mod hist;
pub mod html;
pub mod junit;
pub mod merge;
pub mod metrics;
pub mod mmsg;
pub mod mmsg_pace;
pub mod mmsg_teredo;
pub mod pacing;
pub mod payload;
pub mod reflector;
pub mod report;
pub mod rs_storm;
pub mod rs_wire;
pub mod scrape;
pub mod seq;
pub mod sockets;
pub mod template;
pub mod timeline;
pub mod worker;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use prometheus::Registry;
use rand::Rng as _;
use teredo::client::Profile;
use teredo_rt::Shutdown;
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::engine::Engine;
use self::findmax::FindMax;
use self::metrics::{LoadMetrics, QUALIFY_RESULTS};
use self::pacing::TokenBucket;
use self::payload::HEADER_LEN;
use self::reflector::Echo;
use self::report::{
    loss_percent, mbit_per_s, micros_histogram, DataSummary, EngineSummary, FindMaxSummary,
    LoadReport, Percentiles, QualifySummary,
};
use self::timeline::{Reading, Timeline};
use self::worker::{run_client, ClientSetup, Control, Dest, RttHistograms, Shared};
use crate::qualify::{local_ip_toward, nat_config, NatChoice};

/// Exit status: some client did not qualify, or got no answer in the warm-up.
pub const EXIT_NOT_ALL_CLIENTS: u8 = 3;
/// Exit status: loss above the threshold (or `--find-max` found no passing rate).
pub const EXIT_LOSS: u8 = 4;

/// Largest `--size` (the 1280-byte Teredo MTU less IPv6 and ICMPv6/UDP headers).
pub const MAX_SIZE: usize = crate::ping::MAX_SIZE;

/// Which phases run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Qualification only.
    Qualify,
    /// Qualification as a prerequisite (not part of the verdict), then data.
    Data,
    /// Both, both part of the verdict.
    All,
    /// An RS storm: trials of router solicitations, each answered by a router
    /// advertisement ([`rs_storm`]); no client state machine.
    Rs,
}

impl Phase {
    /// Its `--phase` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qualify => "qualify",
            Self::Data => "data",
            Self::All => "all",
            Self::Rs => "rs",
        }
    }
}

/// The data destination chosen on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// ICMPv6 echo to this host.
    Icmp(std::net::Ipv6Addr),
    /// UDP echo service.
    Udp(SocketAddrV6),
    /// Teredo to Teredo, client `i` to `i + 1`.
    Pairs,
}

/// Everything `load` needs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Teredo server (not needed with `ceiling`).
    pub server: Option<Ipv4Addr>,
    /// Secondary server address (default primary + 1).
    pub secondary: Option<Ipv4Addr>,
    /// Clients.
    pub clients: u32,
    /// Clients started per second.
    pub qualify_rate: f64,
    /// Phases.
    pub phase: Phase,
    /// Data destination (`None` only for the qualify phase and `ceiling`).
    pub target: Option<Target>,
    /// Total packets per second (the first trial's with `find_max`).
    pub rate: f64,
    /// ICMPv6 data / UDP payload bytes (at least [`HEADER_LEN`]).
    pub size: usize,
    /// Length of a trial.
    pub duration: Duration,
    /// Search the highest passing rate.
    pub find_max: bool,
    /// Loss threshold, percent (default 0, or 0.1 with `find_max`).
    pub loss_threshold: Option<f64>,
    /// Ceiling of the search, pps.
    pub max_rate: f64,
    /// Local address of every socket (0.0.0.0: toward the server).
    pub bind: Ipv4Addr,
    /// NAT in front of each client.
    pub nat: NatChoice,
    /// Client behaviour.
    pub profile: Profile,
    /// Serve `/metrics` here.
    pub metrics_addr: Option<SocketAddr>,
    /// Keep serving `/metrics` this long after the run.
    pub metrics_linger: Duration,
    /// Seed of the clients and NATs (default random).
    pub seed: Option<u64>,
    /// No progress line.
    pub quiet: bool,
    /// Plain UDP against an in-process echo instead of Teredo.
    pub ceiling: bool,
    /// Per-client qualification timeout.
    pub qualify_timeout: Duration,
    /// Per-client warm-up timeout.
    pub warmup_timeout: Duration,
    /// Wait for answers after each trial.
    pub drain: Duration,
    /// `/metrics` endpoints read once a second during the run (for the `--html` page).
    pub scrape: Vec<scrape::Endpoint>,
    /// Index of this generator among several (in the report and the metrics).
    pub replica: Option<u32>,
    /// Global number of the first client: client `i` is client `client_offset + i` of all
    /// generators, with its own seed `seed + client_offset + i`.
    pub client_offset: u64,
    /// Data-path engine (`None`: the fastest available).
    pub engine: Option<Engine>,
    /// Pin the `mmsg` engine's thread to this CPU.
    pub cpu: Option<usize>,
    /// `mmsg` engine: `UDP_GRO` on the reflector's and the clients' sockets.
    pub gro: bool,
}

impl LoadOptions {
    /// Defaults of the command line.
    pub fn new(server: Option<Ipv4Addr>) -> Self {
        Self {
            server,
            secondary: None,
            clients: 1000,
            qualify_rate: 1000.0,
            phase: Phase::All,
            target: None,
            rate: 1000.0,
            size: 100,
            duration: Duration::from_secs(10),
            find_max: false,
            loss_threshold: None,
            max_rate: 1_000_000.0,
            bind: Ipv4Addr::UNSPECIFIED,
            nat: NatChoice::None,
            profile: Profile::Vista,
            metrics_addr: None,
            metrics_linger: Duration::ZERO,
            seed: None,
            quiet: false,
            ceiling: false,
            qualify_timeout: Duration::from_secs(30),
            warmup_timeout: Duration::from_secs(15),
            drain: Duration::from_secs(2),
            scrape: Vec::new(),
            replica: None,
            client_offset: 0,
            engine: None,
            cpu: None,
            gro: true,
        }
    }

    fn threshold(&self) -> f64 {
        self.loss_threshold
            .unwrap_or(if self.find_max { 0.1 } else { 0.0 })
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.clients > 0, "--clients must be at least 1");
        anyhow::ensure!(
            self.qualify_rate > 0.0 && self.qualify_rate.is_finite(),
            "--qualify-rate must be more than 0"
        );
        anyhow::ensure!(
            self.rate > 0.0 && self.rate.is_finite(),
            "--rate must be more than 0"
        );
        anyhow::ensure!(
            (HEADER_LEN..=MAX_SIZE).contains(&self.size),
            "--size must be {HEADER_LEN} to {MAX_SIZE} bytes (the load header is {HEADER_LEN})"
        );
        anyhow::ensure!(
            (0.0..=100.0).contains(&self.threshold()),
            "--loss-threshold must be 0 to 100 %"
        );
        if self.phase == Phase::Rs {
            anyhow::ensure!(
                self.target.is_none(),
                "--phase rs sends router solicitations to the server: no --target, --udp-echo or --pairs"
            );
            anyhow::ensure!(
                self.nat == NatChoice::None,
                "--phase rs sends from the generator's own sockets, without a NAT model: no --nat"
            );
            anyhow::ensure!(
                self.clients <= rs_storm::MAX_CLIENTS,
                "--phase rs takes at most {} clients (the nonce has 24 bits for the client)",
                rs_storm::MAX_CLIENTS
            );
        }
        if !self.ceiling {
            let Some(server) = self.server else {
                bail!("--server is required (unless --ceiling)");
            };
            anyhow::ensure!(
                !(server.is_unspecified() || server.is_multicast() || server.is_broadcast()),
                "server address {server} is not a unicast address"
            );
            if !matches!(self.phase, Phase::Qualify | Phase::Rs) && self.target.is_none() {
                bail!("the data phase needs --target, --udp-echo or --pairs (or --phase qualify)");
            }
            if self.target == Some(Target::Pairs) {
                anyhow::ensure!(self.clients >= 2, "--pairs needs at least 2 clients");
            }
        }
        Ok(())
    }
}

/// Raises the open-file limit toward `wanted` descriptors (the soft limit up to the hard
/// one, the hard one too when allowed); an error only when fewer than `needed` are possible.
/// Returns the limit in force.
pub fn raise_nofile(needed: u64, wanted: u64) -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
    if lim.rlim_cur >= wanted {
        return Ok(lim.rlim_cur);
    }
    for target in [wanted, wanted.min(lim.rlim_max)] {
        if target < needed.max(lim.rlim_cur) {
            continue;
        }
        let want = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max.max(target),
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            if target < wanted {
                tracing::warn!(
                    limit = target,
                    wanted,
                    "open-file limit below what every NAT mapping could take"
                );
            }
            return Ok(target);
        }
    }
    if lim.rlim_cur >= needed {
        return Ok(lim.rlim_cur);
    }
    bail!(
        "{needed} open files are needed (one socket per client) but the limit is {} (hard \
         {}) and cannot be raised: {}; raise `ulimit -n` (or run with CAP_SYS_RESOURCE)",
        lim.rlim_cur,
        lim.rlim_max,
        std::io::Error::last_os_error()
    )
}

/// Wall-clock time, seconds since the Unix epoch.
fn unix_now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The process's peak resident memory (`VmHWM`), bytes; `None` when unreadable.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The coordinator's view of the run.
struct Run {
    opts: LoadOptions,
    shared: Arc<Shared>,
    control: watch::Sender<Control>,
    shutdown: Shutdown,
    started: Instant,
    packet_bytes: usize,
    timeline: Arc<Mutex<Timeline>>,
    engine: Engine,
    /// The `mmsg` engine's generator, once started.
    mmsg: Option<mmsg::Generator>,
    /// The RS storm, once started.
    rs: Option<rs_storm::Storm>,
    /// `mmsg` engine, Teredo trials: the clients' sockets and packets, lent after the
    /// warm-up…
    handoffs: Option<std::sync::mpsc::Receiver<handoff::Handoff>>,
    /// …to this thread.
    lender: Option<mmsg_teredo::Generator>,
}

/// Samples the run into `timeline` once a second, and once more when `stop` fires.
async fn sample_timeline(
    shared: Arc<Shared>,
    timeline: Arc<Mutex<Timeline>>,
    started: Instant,
    stop: Shutdown,
) {
    let mut tick = tokio::time::interval_at(
        (started + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            () = stop.wait() => true,
        };
        let qualified = QUALIFY_RESULTS
            .iter()
            .position(|r| *r == "qualified")
            .and_then(|i| shared.outcomes.get(i))
            .map_or(0, |c| c.load(Ordering::Relaxed));
        let m = &shared.metrics;
        let now = Reading {
            t_s: started.elapsed().as_secs_f64(),
            sent: m.sent.get(),
            received: m.received.get(),
            qualified,
            nat_mappings: u64::try_from(m.nat_mappings.get()).unwrap_or(0),
            offered_pps: m.offered_rate.get() as f64,
            trial: shared.trial_no.load(Ordering::Relaxed),
        };
        if let Ok(mut rtt) = shared.rtt.lock() {
            if let Ok(mut tl) = timeline.lock() {
                tl.record(now, &rtt.second);
            }
            rtt.second.reset();
        }
        if last {
            return;
        }
    }
}

/// Runs the load; see the module documentation. Errors are configuration, socket and
/// interruption errors (one line); every measured outcome is in the report, with the exit
/// status it calls for. The metrics endpoint (with `metrics_addr`) is returned still
/// serving, so that the caller can print the report first and then linger.
pub async fn run_load(
    opts: LoadOptions,
    shutdown: Shutdown,
) -> anyhow::Result<(LoadReport, Option<MetricsServer>)> {
    opts.check()?;
    let pairs = opts.target == Some(Target::Pairs);
    let engine = if opts.phase == Phase::Rs {
        rs_storm::engine(opts.engine)?
    } else {
        Engine::choose(opts.engine, opts.ceiling, pairs)?
    };
    let started = Instant::now();
    let started_unix_s = unix_now_s();
    let seed = opts.seed.unwrap_or_else(|| rand::rng().random());
    let echo = if opts.ceiling {
        Some(Echo::start(engine, opts.gro)?)
    } else {
        None
    };
    let bind = if opts.ceiling {
        Ipv4Addr::LOCALHOST
    } else if opts.bind.is_unspecified() {
        local_ip_toward(opts.server.unwrap_or(Ipv4Addr::LOCALHOST))?
    } else {
        opts.bind
    };
    let nat = if opts.ceiling {
        None
    } else {
        nat_config(&opts.nat, bind, seed)?
    };
    let nat_name = nat
        .as_ref()
        .map_or("none".to_owned(), netsim::NatConfig::to_spec);
    let per_client = sockets::sockets_per_client(nat.as_ref(), opts.phase != Phase::Qualify);
    let clients = if engine == Engine::Mmsg && opts.ceiling {
        u64::from(opts.clients.min(mmsg::SOCKETS))
    } else {
        u64::from(opts.clients)
    };
    // The Teredo trials of the mmsg engine hold a duplicate of one socket per client.
    let lent = u64::from(engine == Engine::Mmsg && !opts.ceiling);
    raise_nofile(clients + 256, clients * (per_client + lent) + 1024)?;
    let dest = match (&echo, opts.phase, opts.target) {
        (Some(e), _, _) => Dest::Ceiling(e.addr),
        (None, Phase::Qualify, _) | (None, _, None) => Dest::None,
        (None, _, Some(Target::Icmp(a))) => Dest::Icmp(a),
        (None, _, Some(Target::Udp(a))) => Dest::Udp(a),
        (None, _, Some(Target::Pairs)) => Dest::Pairs,
    };
    let target = match dest {
        _ if opts.phase == Phase::Rs => rs_storm::target(dest, opts.server),
        Dest::Icmp(a) => format!("ICMPv6 echo {a}"),
        Dest::Udp(a) => format!("UDP echo {a}"),
        Dest::Pairs => "Teredo peers (client i -> i+1)".to_owned(),
        Dest::Ceiling(a) => format!("in-process UDP echo {a}"),
        Dest::None => "none (qualify only)".to_owned(),
    };
    let size = if opts.phase == Phase::Rs {
        rs_storm::rs_len(opts.profile)?
    } else {
        opts.size
    };
    let packet_bytes = if opts.ceiling || opts.phase == Phase::Rs {
        size + 28
    } else {
        size + 48
    };

    let registry = Registry::new();
    let metrics = LoadMetrics::register(&registry).context("cannot register the metrics")?;
    LoadMetrics::register_generator_info(&registry, opts.replica, opts.client_offset, opts.clients)
        .context("cannot register the metrics")?;
    metrics
        .clients
        .with_label_values(&["pending"])
        .set(i64::from(opts.clients));
    let (metrics_stop, metrics_shutdown) = Shutdown::new();
    let metrics_task = match opts.metrics_addr {
        Some(addr) => {
            let (local, task) =
                teredo_rt::spawn_metrics(addr, registry.clone(), metrics_shutdown.wait_owned())
                    .await?;
            tracing::info!(%local, "load metrics on /metrics");
            Some(task)
        }
        None => None,
    };

    let (control, control_rx) = watch::channel(Control::Qualify);
    // The mmsg engine runs the Teredo trials with the sockets the clients lend it.
    let (lend, handoffs) = match dest {
        Dest::Icmp(_) | Dest::Udp(_) if engine == Engine::Mmsg => {
            let (tx, rx) = std::sync::mpsc::channel();
            (Some(tx), Some(rx))
        }
        _ => (None, None),
    };
    let n = opts.clients as usize;
    let shared = Arc::new(Shared {
        setup: ClientSetup {
            server: opts.server.unwrap_or(Ipv4Addr::LOCALHOST),
            secondary: opts.secondary,
            profile: opts.profile,
            nat,
            bind,
            qualify_timeout: opts.qualify_timeout,
            dest,
            size: opts.size,
            run_tag: rand::rng().random(),
            seed: seed.wrapping_add(opts.client_offset),
            socket_buffer: (64 << 20) / n.max(1),
            warmup_timeout: opts.warmup_timeout,
        },
        epoch: Instant::now(),
        metrics,
        trial: worker::TrialCounters::default(),
        trial_no: AtomicU32::new(0),
        rtt: Mutex::new(RttHistograms {
            trial: micros_histogram(),
            second: micros_histogram(),
        }),
        jitter: Mutex::new((0.0, 0)),
        qualify_latency: Mutex::new(micros_histogram()),
        outcomes: QUALIFY_RESULTS.iter().map(|_| AtomicU64::new(0)).collect(),
        qualify_done: AtomicUsize::new(0),
        last_qualified_ns: AtomicU64::new(0),
        warm_ok: AtomicUsize::new(0),
        warm_failed: AtomicUsize::new(0),
        addresses: (0..n).map(|_| OnceLock::new()).collect(),
        control: control_rx,
        sockets: Arc::default(),
        lend,
    });
    let scraper = if opts.scrape.is_empty() {
        None
    } else {
        Some(scrape::Scraper::start(opts.scrape.clone(), started)?)
    };
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let (sampler_stop, sampler_shutdown) = Shutdown::new();
    let sampler = tokio::spawn(sample_timeline(
        Arc::clone(&shared),
        Arc::clone(&timeline),
        started,
        sampler_shutdown,
    ));
    let mut run = Run {
        opts: opts.clone(),
        shared: Arc::clone(&shared),
        control,
        shutdown: shutdown.clone(),
        started,
        packet_bytes,
        timeline: Arc::clone(&timeline),
        engine,
        mmsg: None,
        rs: None,
        handoffs,
        lender: None,
    };
    let mut tasks = JoinSet::new();
    let result = run.phases(&mut tasks).await;
    // The trials are over: the clients read their sockets again.
    let lent = run.lender.take().map(mmsg_teredo::Generator::finish);
    // While every socket is still open. Only with the reflector, whose verdict needs them,
    // or after the mmsg engine's Teredo trials (whose verdict tells the generator's drops
    // from the device's): reading /proc/net/udp costs the kernel a walk per chunk, minutes
    // with 100 000 sockets.
    let drops = match &echo {
        Some(e) => reflector::udp_drops(e.inode),
        None if lent.is_some() => reflector::udp_drops(None),
        None => None,
    };
    let fds = reflector::open_fds();
    sampler_stop.trigger();
    let _ = sampler.await;
    let scraped = scraper.map(scrape::Scraper::finish).unwrap_or_default();
    let _ = run.control.send(Control::Stop);
    let stop_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::timeout_at(stop_deadline, tasks.join_next())
        .await
        .ok()
        .flatten()
        .is_some()
    {}
    tasks.abort_all();
    drop(run.mmsg.take());
    let rs = run.rs.take().map(|storm| storm.finish(opts.ceiling));
    let echoed = echo.map(Echo::finish);
    let (qualify, warmup_failed, data, find_max) = result?;
    let mut engine_summary = EngineSummary::new(
        engine,
        (opts.cpu, opts.gro),
        echoed,
        drops,
        fds,
        opts.clients,
        report::limit(opts.ceiling, drops, data.as_ref(), find_max.as_ref()),
    )
    .with_sockets(&shared.sockets, opts.clients);
    engine_summary.lent = lent.map(|c| report::LentSummary {
        clients: c.clients,
        to_tasks: c.to_tasks,
        to_tasks_dropped: c.to_tasks_dropped,
    });
    let qualify_ok = qualify
        .as_ref()
        .is_none_or(|q| q.qualified == q.clients || opts.phase == Phase::Data);
    let warm_ok = warmup_failed.is_none_or(|w| w == 0);
    let loss_ok = match (&find_max, &data) {
        (Some(f), _) => f.best_rate.is_some(),
        (None, Some(d)) => d.passed,
        (None, None) => opts.phase == Phase::Qualify,
    };
    let exit_code = if !qualify_ok || !warm_ok {
        EXIT_NOT_ALL_CLIENTS
    } else if !loss_ok {
        EXIT_LOSS
    } else {
        0
    };
    let report = LoadReport {
        schema_version: report::SCHEMA_VERSION,
        mode: if opts.ceiling { "ceiling" } else { "teredo" },
        target,
        clients: u64::from(opts.clients),
        profile: (!opts.ceiling).then(|| opts.profile.to_string()),
        nat: nat_name,
        size,
        packet_bytes,
        seed,
        replica: opts.replica,
        client_offset: opts.client_offset,
        started_unix_s,
        finished_unix_s: unix_now_s(),
        qualify,
        warmup_failed,
        data,
        find_max,
        elapsed_s: started.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss_bytes(),
        exit_code,
        loss_threshold_percent: opts.threshold(),
        generators: Vec::new(),
        timeline: timeline.lock().map(|t| t.clone()).unwrap_or_default(),
        scraped,
        engine: Some(engine_summary),
        phase: Some(opts.phase.as_str().to_owned()),
        rs,
    };
    let metrics = metrics_task.map(|task| MetricsServer {
        stop: metrics_stop,
        task,
    });
    Ok((report, metrics))
}

/// The `/metrics` endpoint of a finished run, still serving the final values.
#[derive(Debug)]
pub struct MetricsServer {
    stop: teredo_rt::ShutdownTrigger,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl MetricsServer {
    /// Keeps serving for `linger` (or until `shutdown`), then stops.
    pub async fn linger(self, linger: Duration, shutdown: &Shutdown) {
        if !linger.is_zero() {
            tracing::info!(?linger, "run finished; still serving /metrics");
            tokio::select! {
                () = tokio::time::sleep(linger) => {}
                () = shutdown.wait() => {}
            }
        }
        self.stop.trigger();
        let _ = self.task.await;
    }
}

type Phases = (
    Option<QualifySummary>,
    Option<u64>,
    Option<DataSummary>,
    Option<FindMaxSummary>,
);

impl Run {
    fn progress(&self, line: &str) {
        if !self.opts.quiet {
            eprintln!("[{:>7.1}s] {line}", self.started.elapsed().as_secs_f64());
        }
    }

    fn interrupted(&self) -> anyhow::Result<()> {
        if self.shutdown.is_triggered() {
            bail!("interrupted");
        }
        Ok(())
    }

    fn count(&self, result: &str) -> u64 {
        QUALIFY_RESULTS
            .iter()
            .position(|r| *r == result)
            .and_then(|i| self.shared.outcomes.get(i))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    async fn phases(&mut self, tasks: &mut JoinSet<()>) -> anyhow::Result<Phases> {
        if self.opts.phase == Phase::Rs {
            // The server's primary address, port 3544 (or the reflector).
            let to = match self.shared.setup.dest {
                Dest::Ceiling(echo) => echo,
                _ => {
                    std::net::SocketAddrV4::new(self.shared.setup.server, teredo::addr::TEREDO_PORT)
                }
            };
            let bind = self.shared.setup.bind;
            let storm = rs_storm::Storm::start(
                Arc::clone(&self.shared),
                self.shutdown.clone(),
                rs_storm::StormSetup {
                    to,
                    bind,
                    clients: self.opts.clients,
                    profile: self.opts.profile,
                    ceiling: self.opts.ceiling,
                    cpu: self.opts.cpu,
                    gro: self.opts.gro,
                },
            )?;
            self.progress(&format!(
                "rs: {} clients on {} sockets, {} B router solicitations to {to}",
                self.opts.clients, storm.sockets, storm.rs_len
            ));
            self.rs = Some(storm);
            let (data, find_max) = self.trials(self.opts.clients).await?;
            return Ok((None, None, data, find_max));
        }
        let qualify = self.qualify(tasks).await?;
        let qualified = if self.opts.ceiling {
            u64::from(self.opts.clients)
        } else {
            self.count("qualified")
        };
        if self.opts.phase == Phase::Qualify || self.shared.setup.dest == Dest::None {
            return Ok((qualify, None, None, None));
        }
        let warmup_failed = if self.opts.ceiling {
            None
        } else {
            Some(self.warmup(qualified).await?)
        };
        self.lend_sockets().await?;
        let senders = self.shared.warm_ok.load(Ordering::Relaxed) as u32;
        if senders == 0 {
            self.progress("data: no client can send; no trial");
            return Ok((qualify, warmup_failed, None, None));
        }
        let (data, find_max) = self.trials(senders).await?;
        Ok((qualify, warmup_failed, data, find_max))
    }

    /// The fixed-rate trial, or the `--find-max` search, with `senders` clients.
    async fn trials(
        &mut self,
        senders: u32,
    ) -> anyhow::Result<(Option<DataSummary>, Option<FindMaxSummary>)> {
        let threshold = self.opts.threshold();
        if !self.opts.find_max {
            let d = self
                .trial(1, self.opts.rate, senders, threshold, false)
                .await?;
            return Ok((Some(d), None));
        }
        let mut search = FindMax::new(self.opts.rate, self.opts.max_rate, 0.02, 24);
        let mut trials: Vec<DataSummary> = Vec::new();
        let mut no = 0;
        while let Some(rate) = search.next_rate() {
            no += 1;
            let d = self.trial(no, rate, senders, threshold, true).await?;
            search.record(rate, d.passed);
            trials.push(d);
        }
        let best = search.best();
        let data = best.and_then(|b| {
            trials
                .iter()
                .rfind(|t| t.passed && t.offered_pps == b)
                .cloned()
        });
        Ok((
            data,
            Some(FindMaxSummary {
                loss_threshold_percent: threshold,
                max_rate: self.opts.max_rate,
                best_rate: best,
                trials,
            }),
        ))
    }

    /// The progress lines' name of a trial, its rate unit, and the suffixes of the sent
    /// and received rates.
    fn trial_words(&self) -> [&'static str; 4] {
        match (self.opts.phase, self.opts.ceiling) {
            (Phase::Rs, false) => ["rs trial", "RS/s", " RS/s", " RA/s"],
            (Phase::Rs, true) => ["rs trial", "RS/s", " RS/s", " echoed RS/s"],
            _ => ["data trial", "pps", "/s", "/s"],
        }
    }

    /// Starts the clients at the qualify rate and waits for every outcome.
    async fn qualify(&mut self, tasks: &mut JoinSet<()>) -> anyhow::Result<Option<QualifySummary>> {
        let n = self.opts.clients;
        let rate = if self.opts.ceiling {
            f64::from(n).max(1.0) * 100.0
        } else {
            self.opts.qualify_rate
        };
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(rate, TokenBucket::default_burst(rate), 1.0, t0);
        let mut next = 0u32;
        let mut last_line = t0;
        if let (Engine::Mmsg, Dest::Ceiling(echo)) = (self.engine, self.shared.setup.dest) {
            self.mmsg = Some(mmsg::Generator::start(
                Arc::clone(&self.shared),
                self.shutdown.clone(),
                n,
                echo,
                self.opts.cpu,
                self.opts.gro,
            )?);
            next = n;
        }
        while next < n {
            self.interrupted()?;
            let now = Instant::now();
            for _ in 0..bucket.take(now, n - next) {
                tasks.spawn(run_client(
                    next,
                    Arc::clone(&self.shared),
                    self.shutdown.clone(),
                ));
                next += 1;
            }
            if now.duration_since(last_line) >= Duration::from_secs(1) {
                last_line = now;
                self.qualify_line(next);
            }
            if next < n {
                let wake = bucket.next_at().min(now + Duration::from_millis(100));
                tokio::select! {
                    () = tokio::time::sleep_until(wake.into()) => {}
                    () = self.shutdown.wait() => {}
                }
            }
        }
        let spawned_in = t0.elapsed();
        let deadline = Instant::now() + self.opts.qualify_timeout + Duration::from_secs(1);
        while self.shared.qualify_done.load(Ordering::Relaxed) < n as usize
            && Instant::now() < deadline
        {
            self.interrupted()?;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                () = self.shutdown.wait() => {}
            }
            if last_line.elapsed() >= Duration::from_secs(1) {
                last_line = Instant::now();
                self.qualify_line(n);
            }
        }
        self.qualify_line(n);
        if self.opts.ceiling {
            return Ok(None);
        }
        let duration = t0.elapsed();
        let qualified = self.count("qualified");
        let results: BTreeMap<&'static str, u64> = QUALIFY_RESULTS
            .iter()
            .map(|r| (*r, self.count(r)))
            .collect();
        let last_ns = self.shared.last_qualified_ns.load(Ordering::Relaxed);
        let until_last = Duration::from_nanos(last_ns)
            .saturating_sub(t0.saturating_duration_since(self.shared.epoch))
            .as_secs_f64();
        let latency = self
            .shared
            .qualify_latency
            .lock()
            .map(|h| Percentiles::of_micros(&h))
            .unwrap_or_default();
        Ok(Some(QualifySummary {
            clients: u64::from(n),
            qualified,
            success_percent: 100.0 * qualified as f64 / f64::from(n.max(1)),
            results,
            offered_rate: self.opts.qualify_rate,
            achieved_rate: f64::from(n) / spawned_in.as_secs_f64().max(1e-9),
            qualified_rate: if until_last > 0.0 {
                qualified as f64 / until_last
            } else {
                0.0
            },
            duration_s: duration.as_secs_f64(),
            latency_ms: latency,
        }))
    }

    fn qualify_line(&self, started: u32) {
        let done = self.shared.qualify_done.load(Ordering::Relaxed);
        self.progress(&format!(
            "qualify: {started}/{} started, {} qualified, {} finished otherwise, {} pending",
            self.opts.clients,
            self.count("qualified"),
            done as u64 - self.count("qualified").min(done as u64),
            started as usize - done.min(started as usize),
        ));
    }

    /// Every qualified client probes until answered; returns how many gave up.
    async fn warmup(&mut self, qualified: u64) -> anyhow::Result<u64> {
        let start = Instant::now();
        let rate = self.opts.qualify_rate;
        let _ = self.control.send(Control::Warmup { start, rate });
        let spread = Duration::from_secs_f64(f64::from(self.opts.clients) / rate);
        let deadline = start + spread + self.opts.warmup_timeout + Duration::from_secs(2);
        let mut last_line = start;
        loop {
            self.interrupted()?;
            let ok = self.shared.warm_ok.load(Ordering::Relaxed) as u64;
            let failed = self.shared.warm_failed.load(Ordering::Relaxed) as u64;
            if ok + failed >= qualified || Instant::now() >= deadline {
                self.progress(&format!(
                    "warm-up: {ok}/{qualified} clients answered, {failed} gave up"
                ));
                let _ = self.control.send(Control::Drain);
                return Ok(qualified.saturating_sub(ok));
            }
            if last_line.elapsed() >= Duration::from_secs(1) {
                last_line = Instant::now();
                self.progress(&format!(
                    "warm-up: {ok}/{qualified} clients answered, {failed} gave up"
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                () = self.shutdown.wait() => {}
            }
        }
    }

    /// `mmsg` engine, Teredo trials: starts the engine's thread and waits (a few seconds at
    /// most) until every client answered in the warm-up has lent it its socket.
    async fn lend_sockets(&mut self) -> anyhow::Result<()> {
        let Some(handoffs) = self.handoffs.take() else {
            return Ok(());
        };
        let lender = mmsg_teredo::Generator::start(
            Arc::clone(&self.shared),
            self.shutdown.clone(),
            handoffs,
            self.opts.cpu,
            self.opts.gro,
        )?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.interrupted()?;
            let (lent, ok) = (lender.lent(), self.shared.warm_ok.load(Ordering::Relaxed));
            if lent >= ok || Instant::now() >= deadline {
                self.progress(&format!(
                    "mmsg engine: {lent}/{ok} clients lent their socket"
                ));
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
                () = self.shutdown.wait() => {}
            }
        }
        self.lender = Some(lender);
        Ok(())
    }

    /// One trial at `rate` pps in total.
    async fn trial(
        &mut self,
        no: u32,
        rate: f64,
        senders: u32,
        threshold: f64,
        must_offer: bool,
    ) -> anyhow::Result<DataSummary> {
        let sh = &self.shared;
        sh.trial.reset();
        if let Ok(mut h) = sh.rtt.lock() {
            h.trial.reset();
        }
        if let Ok(mut j) = sh.jitter.lock() {
            *j = (0.0, 0);
        }
        sh.trial_no.store(no, Ordering::Relaxed);
        sh.metrics.offered_rate.set(rate.round() as i64);
        let start = Instant::now();
        let _ = self.control.send(Control::Run {
            trial: no,
            rate: rate / f64::from(senders),
            start,
            senders,
        });
        let end = start + self.opts.duration;
        let mut last = (start, 0u64, 0u64);
        loop {
            self.interrupted()?;
            let now = Instant::now();
            if now >= end {
                break;
            }
            let wake = end.min(last.0 + Duration::from_secs(1));
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                () = self.shutdown.wait() => {}
            }
            let now = Instant::now();
            if now.duration_since(last.0) >= Duration::from_secs(1) {
                let sent = sh.trial.sent.load(Ordering::Relaxed);
                let recv = sh.trial.received.load(Ordering::Relaxed);
                let dt = now.duration_since(last.0).as_secs_f64();
                let p50 = sh
                    .rtt
                    .lock()
                    .map(|h| h.trial.value_at_quantile(0.5) as f64 / 1000.0)
                    .unwrap_or(0.0);
                let [what, unit, sent_s, recv_s] = self.trial_words();
                self.progress(&format!(
                    "{what} {no} at {rate:.0} {unit}: sent {:.0}{sent_s}, received {:.0}{recv_s}, rtt p50 {p50:.3} ms",
                    sent.saturating_sub(last.1) as f64 / dt,
                    recv.saturating_sub(last.2) as f64 / dt,
                ));
                last = (now, sent, recv);
            }
        }
        let _ = self.control.send(Control::Drain);
        let duration = start.elapsed().as_secs_f64();
        sh.metrics.offered_rate.set(0);
        tokio::select! {
            () = tokio::time::sleep(self.opts.drain) => {}
            () = self.shutdown.wait() => {}
        }
        self.interrupted()?;
        let t = &sh.trial;
        let sent = t.sent.load(Ordering::Relaxed);
        let received = t.received.load(Ordering::Relaxed);
        sh.trial_no.store(0, Ordering::Relaxed);
        let lost = sent.saturating_sub(received);
        sh.metrics.lost.inc_by(lost);
        let sent_pps = sent as f64 / duration;
        let received_pps = received as f64 / duration;
        let loss = loss_percent(sent, received);
        let passed = loss <= threshold && (!must_offer || sent_pps >= 0.9 * rate);
        let rtt = match sh.rtt.lock() {
            Ok(h) => {
                if let Ok(mut tl) = self.timeline.lock() {
                    tl.trial_done(no, rate, passed, &h.trial);
                }
                Percentiles::of_micros(&h.trial)
            }
            Err(_) => Percentiles::default(),
        };
        let jitter = sh
            .jitter
            .lock()
            .ok()
            .and_then(|j| (j.1 > 0).then(|| j.0 / j.1 as f64 / 1e6));
        let d = DataSummary {
            trial: no,
            senders: u64::from(senders),
            offered_pps: rate,
            offered_mbit_s: mbit_per_s(rate, self.packet_bytes),
            sent,
            sent_pps,
            sent_mbit_s: mbit_per_s(sent_pps, self.packet_bytes),
            received,
            received_pps,
            received_mbit_s: mbit_per_s(received_pps, self.packet_bytes),
            lost,
            loss_percent: loss,
            duplicates: t.duplicates.load(Ordering::Relaxed),
            out_of_order: t.out_of_order.load(Ordering::Relaxed),
            send_errors: t.send_errors.load(Ordering::Relaxed),
            late: t.late.load(Ordering::Relaxed),
            duration_s: duration,
            rtt_ms: rtt,
            jitter_ms: jitter,
            passed,
        };
        let [what, unit, ..] = self.trial_words();
        self.progress(&format!(
            "{what} {no} at {rate:.0} {unit}: lost/total {lost}/{sent} ({loss:.3} %), {}",
            if passed { "pass" } else { "FAIL" }
        ));
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofile_and_peak_rss() {
        // What we already have is always fine.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(raise_nofile(1, lim.rlim_cur).unwrap(), lim.rlim_cur);
        // Beyond the kernel's ceiling: a clear error (or, as root, a raised limit).
        match raise_nofile(u64::MAX / 2, u64::MAX / 2) {
            Ok(l) => assert!(l >= u64::MAX / 2),
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("open files are needed") && !e.contains('\n'),
                    "{e}"
                );
            }
        }
        assert!(peak_rss_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn option_checks() {
        let mut o = LoadOptions::new(Some(Ipv4Addr::new(198, 51, 100, 1)));
        o.target = Some(Target::Pairs);
        assert!(o.check().is_ok());
        o.clients = 1;
        assert!(o.check().unwrap_err().to_string().contains("at least 2"));
        o.clients = 10;
        o.target = None;
        assert!(o.check().unwrap_err().to_string().contains("--target"));
        o.phase = Phase::Qualify;
        assert!(o.check().is_ok());
        o.size = HEADER_LEN - 1;
        assert!(o.check().is_err());
        let mut c = LoadOptions::new(None);
        assert!(c.check().unwrap_err().to_string().contains("--server"));
        c.ceiling = true;
        assert!(c.check().is_ok());
        assert_eq!(c.threshold(), 0.0);
        c.find_max = true;
        assert_eq!(c.threshold(), 0.1);
        // The RS storm needs a server, no data destination and no NAT model.
        let mut rs = LoadOptions::new(Some(Ipv4Addr::new(198, 51, 100, 1)));
        rs.phase = Phase::Rs;
        assert!(rs.check().is_ok());
        rs.target = Some(Target::Pairs);
        assert!(rs.check().unwrap_err().to_string().contains("no --target"));
        rs.target = None;
        rs.nat = NatChoice::Preset(netsim::NatPreset::FullCone);
        assert!(rs.check().unwrap_err().to_string().contains("no --nat"));
        rs.nat = NatChoice::None;
        rs.clients = rs_storm::MAX_CLIENTS + 1;
        assert!(rs.check().unwrap_err().to_string().contains("at most"));
        rs.clients = 10;
        rs.server = None;
        assert!(rs.check().unwrap_err().to_string().contains("--server"));
        rs.ceiling = true;
        assert!(rs.check().is_ok());
        assert_eq!(Phase::Rs.as_str(), "rs");
    }
}
