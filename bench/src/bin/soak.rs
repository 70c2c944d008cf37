//! `soak`: our `teredo-server` and `teredo-relay` under steady load for minutes, in the
//! bench's network namespaces, at a fraction (default half) of the maximum measured at the
//! start of the same run; RSS and open descriptors of both processes and their drops by
//! reason at the start, every interval and at the end. Root required.
//!
//! ```sh
//! cargo build --release -p teredo-server -p teredo-relay -p teredo-bench
//! sudo ./target/release/soak                        # 10 minutes
//! sudo ./target/release/soak --duration-secs 30 --interval-secs 10 --json soak.json
//! ```

use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use teredo_bench::afpacket::{blast, FrameRing};
use teredo_bench::cli;
use teredo_bench::clientsim::LoadCommand;
use teredo_bench::frames::{peers, GEN_V4, MAX_PEERS, NATIVE_HOST, TEREDO_PORT};
use teredo_bench::procfs::{self, loadavg};
use teredo_bench::runner::{
    check_stop, establish_trust, frames, refresh_frames, run_cell, sleep, CellCtx, CellPlan,
    Direction, Generator, STOP,
};
use teredo_bench::search::{passes, RateSearch};
use teredo_bench::setup::{pin_current_thread, snapshot, stop_on_signals, RunDir};
use teredo_bench::soak::{
    interleave, load_line, rs_frame, table, ProcSample, Sample, MAX_RS_CLIENTS, SOAK_SERVER_V4,
};
use teredo_bench::topo::{Binaries, Device, RunningDevice, Topology, GEN_CPU, INET_IF, NATIVE_IF};
use testkit::netns::{remove_stale, ReturnHere};
use testkit::wait::wait_for;
use testkit::{metrics, Proc};

/// What drives the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Driver {
    /// `client-sim load`: real Teredo clients (qualification, refreshes, echo tests,
    /// bubbles) pinging the native host through our server and relay; its `--find-max`
    /// measures the maximum first.
    Load,
    /// The bench's AF_PACKET generator: ready-made Teredo→native frames of trusted peers to
    /// the relay and router solicitations to the server, each at half its own measured
    /// maximum.
    Afpacket,
}

/// Our server and relay under steady load for minutes; RSS, descriptors and drops over time.
#[derive(Debug, Parser)]
#[command(name = "soak", version)]
struct Args {
    /// What drives the load.
    #[arg(long, value_enum, default_value = "load")]
    driver: Driver,
    /// Simulated clients of `--driver load`.
    #[arg(long, default_value_t = 100)]
    clients: u32,
    /// Path of client-sim [default: next to this binary].
    #[arg(long)]
    client_sim_bin: Option<PathBuf>,
    /// How long the load runs, seconds.
    #[arg(long, default_value_t = 600)]
    duration_secs: u64,
    /// Sampling interval, seconds (plus a sample at the start and one at the end).
    #[arg(long, default_value_t = 60)]
    interval_secs: u64,
    /// Relay peers (trusted through the bubble exchange before the load).
    #[arg(long, default_value_t = 100)]
    peers: u32,
    /// Clients soliciting the server (one mapping and nonce each).
    #[arg(long, default_value_t = 100)]
    rs_clients: u32,
    /// The load as a fraction of each maximum.
    #[arg(long, default_value_t = 0.5)]
    fraction: f64,
    /// Relay maximum (Teredo→native pps) instead of measuring it.
    #[arg(long)]
    relay_max: Option<f64>,
    /// Server maximum (RS→RA per second) instead of measuring it.
    #[arg(long)]
    server_max: Option<f64>,
    /// Path of teredo-relay [default: next to this binary].
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// Path of teredo-server [default: next to this binary].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Also write the samples and the measured maxima as JSON to this file (`-`: stdout).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Fail (exit 1) if either process's RSS grew by more than this many KiB between the
    /// first sample under load and the end (CI's flatness check).
    #[arg(long)]
    max_rss_growth_kib: Option<u64>,
    /// Fail (exit 1) if either process's open descriptors grew by more than this from the
    /// start to the end.
    #[arg(long)]
    max_fd_growth: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::exit_code("soak", run(&args))
}

/// How to build what the soak runs, for a missing binary.
const BUILD_HINT: &str =
    "build with `cargo build --release -p teredo-server -p teredo-relay -p teredo-bench`";

const RELAY_METRICS: &str = "127.0.0.1:9100";
const SERVER_METRICS: &str = "127.0.0.1:9101";
const RELAY_DROPPED: &str = "teredo_relay_packets_dropped_total";
const SERVER_DROPPED: &str = "teredo_server_packets_dropped_total";

fn start_server(topo: &Topology, bin: &Path, dir: &Path, native: &str) -> Result<(Proc, u32)> {
    let mut cmd = topo.relay.command(&bin.display().to_string());
    cmd.args([
        "--primary",
        &SOAK_SERVER_V4.to_string(),
        "--native",
        native,
        "--metrics-addr",
        SERVER_METRICS,
    ])
    .env("RUST_LOG", "warn");
    let mut p = Proc::spawn_one_log(cmd, "server", dir).context("cannot start teredo-server")?;
    let pid = p.pid();
    let bind = SocketAddrV4::new(SOAK_SERVER_V4, TEREDO_PORT);
    wait_for("teredo-server to listen", Duration::from_secs(10), || {
        if let Some(st) = p.try_status()? {
            bail!("teredo-server exited ({st}): {}", p.stderr());
        }
        Ok(topo.relay.udp_bound(&[bind])?.then_some(()))
    })?;
    Ok((p, pid))
}

/// The pid of the process named `comm` in the relay namespace.
fn pid_of(topo: &Topology, comm: &str) -> Result<u32> {
    topo.relay
        .pids()?
        .into_iter()
        .find(|p| procfs::comm(*p).as_deref() == Some(comm))
        .with_context(|| format!("no {comm} process in the relay namespace"))
}

fn metrics(topo: &Topology, addr: &str) -> Option<String> {
    let addr: SocketAddr = addr.parse().ok()?;
    metrics::fetch_in(&topo.relay, addr).ok()
}

/// One paced step of RSs at `rate`: (offered, router advertisements received, offered per
/// second).
fn server_step(
    gen: &Generator,
    ring: &mut FrameRing,
    rate: f64,
    secs: f64,
) -> Result<(u64, u64, f64)> {
    check_stop()?;
    let before = procfs::dev_counters(INET_IF);
    let offered = blast(
        &gen.inet,
        ring,
        Some(rate),
        Duration::from_secs_f64(secs),
        &STOP,
    );
    sleep(Duration::from_millis(200))?;
    let after = procfs::dev_counters(INET_IF).since(&before);
    Ok((
        offered.sent,
        after.rx_packets + after.rx_dropped,
        offered.pps(),
    ))
}

#[derive(Debug, serde::Serialize)]
struct Output {
    duration_secs: u64,
    interval_secs: u64,
    fraction: f64,
    peers: u32,
    rs_clients: u32,
    relay_max_pps: f64,
    relay_max_measured: bool,
    server_max_per_s: f64,
    server_max_measured: bool,
    relay_rate: f64,
    server_rate: f64,
    load_at_start: [f64; 3],
    load_at_end: [f64; 3],
    samples: Vec<Sample>,
}

fn run(args: &Args) -> Result<()> {
    cli::preflight(
        "soak needs root: it creates network namespaces and sends with AF_PACKET",
        "soak needs 2 CPUs (relay on CPU1, generator on CPU0)",
    )?;
    if args.peers == 0 || args.peers > MAX_PEERS.min(30_000) {
        bail!("--peers must be 1..=30000");
    }
    if args.rs_clients == 0 || args.rs_clients > MAX_RS_CLIENTS {
        bail!("--rs-clients must be 1..={MAX_RS_CLIENTS}");
    }
    if !(args.fraction > 0.0 && args.fraction <= 1.0) {
        bail!("--fraction must be in (0, 1]");
    }
    if args.interval_secs == 0 || args.duration_secs == 0 {
        bail!("--duration-secs and --interval-secs must be positive");
    }
    let run_dir = RunDir::create("soak")?;
    let dir = run_dir.path().to_path_buf();
    let relay_bin = snapshot(
        &cli::bin_path(args.relay_bin.as_deref(), "teredo-relay")?,
        &dir,
        BUILD_HINT,
    )?;
    let server_bin = snapshot(
        &cli::bin_path(args.server_bin.as_deref(), "teredo-server")?,
        &dir,
        BUILD_HINT,
    )?;
    let bins = Binaries {
        relay: relay_bin,
        bare: PathBuf::new(),
        bare_xdp: PathBuf::new(),
        miredo: PathBuf::new(),
        dir: dir.clone(),
        workers: 1,
        max_peers: None,
    };
    stop_on_signals();
    let load_at_start = loadavg();
    remove_stale();
    let topo = Topology::build()?;
    for a in [SOAK_SERVER_V4, next(SOAK_SERVER_V4)] {
        topo.relay
            .ip(&["addr", "add", &format!("{a}/24"), "dev", INET_IF])?;
    }
    pin_current_thread(GEN_CPU)?;
    let _back = ReturnHere::remember()?;
    topo.gen.enter()?;
    let gen = Generator::open(teredo_bench::afxdp::GeneratorKind::Afpacket)?;

    let mut relay = RunningDevice::start(Device::Ours, &topo, &bins, args.peers)?;
    let native = match args.driver {
        Driver::Load => "raw",
        Driver::Afpacket => "none",
    };
    let (_server, server_pid) = start_server(&topo, &server_bin, &dir, native)?;
    let relay_pid = pid_of(&topo, "teredo-relay")?;
    if args.driver == Driver::Load {
        let client_sim = snapshot(
            &cli::bin_path(args.client_sim_bin.as_deref(), "client-sim")?,
            &dir,
            BUILD_HINT,
        )?;
        let pids = (relay_pid, server_pid);
        let samples = run_load(
            args,
            &topo,
            &gen,
            &mut relay,
            pids,
            &client_sim,
            &dir,
            load_at_start,
        )?;
        relay.stop(&topo)?;
        return check_growth(args, &samples);
    }
    let ps = peers(args.peers);
    let trust = establish_trust(&gen, &ps)?;
    eprintln!(
        "soak: {} peers trusted in {:.1} s; relay pid {relay_pid}, server pid {server_pid}",
        trust.peers, trust.secs
    );

    // The maxima, measured here unless given.
    let relay_max = match args.relay_max {
        Some(r) => r,
        None => {
            let plan = CellPlan {
                flood_secs: 0.0,
                start_rate: 100_000.0,
                step_secs: 1.0,
                steps: 6,
                up: 1.6,
                down: 0.625,
                resolution: 0.02,
                max_loss: 0.01,
                saturation_secs: 1.0,
                saturation_rate: None,
                saturation_factor: 1.0,
            };
            let mut ctx = CellCtx {
                topo: &topo,
                gen: &gen,
                dir: Direction::T2n,
                ring: FrameRing::new(frames(Direction::T2n, &ps)),
                refresh: refresh_frames(&ps),
            };
            let cell = run_cell(&mut ctx, &plan, None, 600_000.0)?;
            cell.throughput
                .context("the relay passed no step of the throughput search")?
        }
    };
    let rs: Vec<Vec<u8>> = (0..args.rs_clients).map(rs_frame).collect();
    let server_max = match args.server_max {
        Some(r) => r,
        None => measure_server_max(&gen, &rs)?,
    };
    relay.ensure_running()?;
    let relay_rate = args.fraction * relay_max;
    let server_rate = args.fraction * server_max;
    eprintln!(
        "soak: maxima relay {:.1} k pps, server {:.1} k RS/s; load {:.1} k + {:.1} k for {} s",
        relay_max / 1e3,
        server_max / 1e3,
        relay_rate / 1e3,
        server_rate / 1e3,
        args.duration_secs
    );
    let relay_frames = frames(Direction::T2n, &ps);
    let mixed = interleave(&relay_frames, &rs, relay_rate, server_rate);
    let relay_share = relay_frames.len() as f64 / mixed.len() as f64;
    let mut ring = FrameRing::new(mixed);
    let total_rate = relay_rate + server_rate;

    let take = |at: f64, offered: u64, secs: f64, out: (u64, u64)| -> Sample {
        let secs = secs.max(1e-9);
        Sample {
            at_secs: at,
            offered,
            offered_relay_pps: offered as f64 * relay_share / secs,
            offered_server_pps: offered as f64 * (1.0 - relay_share) / secs,
            relay_out_pps: out.0 as f64 / secs,
            server_out_pps: out.1 as f64 / secs,
            relay: ProcSample::take(relay_pid, || metrics(&topo, RELAY_METRICS), RELAY_DROPPED),
            server: ProcSample::take(
                server_pid,
                || metrics(&topo, SERVER_METRICS),
                SERVER_DROPPED,
            ),
            kernel_rcvbuf_errors: topo
                .relay
                .run_in(|| Ok(procfs::udp_rcvbuf_errors()))
                .unwrap_or(0),
        }
    };
    let mut samples = vec![take(0.0, 0, 1.0, (0, 0))];
    eprint!("{}", table(&samples));
    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration_secs);
    while Instant::now() < end {
        check_stop()?;
        let chunk = end
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(args.interval_secs));
        let native0 = procfs::dev_counters(NATIVE_IF);
        let inet0 = procfs::dev_counters(INET_IF);
        let offered = blast(&gen.inet, &mut ring, Some(total_rate), chunk, &STOP);
        let native = procfs::dev_counters(NATIVE_IF).since(&native0);
        let inet = procfs::dev_counters(INET_IF).since(&inet0);
        relay.ensure_running()?;
        let s = take(
            start.elapsed().as_secs_f64(),
            offered.sent,
            offered.secs,
            (
                native.rx_packets + native.rx_dropped,
                inet.rx_packets + inet.rx_dropped,
            ),
        );
        eprintln!(
            "soak: {:>4.0} s: relay {:.0}/{:.0} pps, server {:.0}/{:.0} per s, RSS {} / {} KiB, fds {} / {}",
            s.at_secs,
            s.offered_relay_pps,
            s.relay_out_pps,
            s.offered_server_pps,
            s.server_out_pps,
            s.relay.rss_kib,
            s.server.rss_kib,
            s.relay.fds,
            s.server.fds
        );
        samples.push(s);
    }
    let load_at_end = loadavg();
    println!(
        "soak: {} s at {:.0} % of the measured maxima (relay {:.1} k pps Teredo→native with {} \
         peers, server {:.1} k RS→RA/s from {} clients)",
        args.duration_secs,
        args.fraction * 100.0,
        relay_max / 1e3,
        args.peers,
        server_max / 1e3,
        args.rs_clients
    );
    print!("{}", table(&samples));
    println!("{}", load_line(load_at_start, load_at_end));
    if let Some(path) = &args.json {
        let out = Output {
            duration_secs: args.duration_secs,
            interval_secs: args.interval_secs,
            fraction: args.fraction,
            peers: args.peers,
            rs_clients: args.rs_clients,
            relay_max_pps: relay_max,
            relay_max_measured: args.relay_max.is_none(),
            server_max_per_s: server_max,
            server_max_measured: args.server_max.is_none(),
            relay_rate,
            server_rate,
            load_at_start,
            load_at_end,
            samples: samples.clone(),
        };
        cli::write_json(path, &out)?;
    }
    relay.stop(&topo)?;
    check_growth(args, &samples)
}

/// The flatness checks of `--max-rss-growth-kib` and `--max-fd-growth`.
fn check_growth(args: &Args, samples: &[Sample]) -> Result<()> {
    let (Some(first), Some(loaded), Some(last)) = (samples.first(), samples.get(1), samples.last())
    else {
        return Ok(());
    };
    for (name, a, b, c) in [
        ("relay", &first.relay, &loaded.relay, &last.relay),
        ("server", &first.server, &loaded.server, &last.server),
    ] {
        if let Some(max) = args.max_rss_growth_kib {
            let grew = c.rss_kib.saturating_sub(b.rss_kib);
            if grew > max {
                bail!("{name}: RSS grew by {grew} KiB under steady load (limit {max})");
            }
        }
        if let Some(max) = args.max_fd_growth {
            let grew = c.fds.saturating_sub(a.fds);
            if grew > max {
                bail!("{name}: {grew} more open descriptors at the end (limit {max})");
            }
        }
    }
    Ok(())
}

/// `client-sim load` in the generator's namespace against the soak's server (bound to the
/// generator's own address, pinging the native host); waits at most `limit` for it and
/// returns its JSON report, calling `tick` about every `every` meanwhile.
#[allow(clippy::too_many_arguments)]
fn client_sim_load(
    topo: &Topology,
    bin: &Path,
    dir: &Path,
    label: &str,
    args: &[String],
    limit: Duration,
    every: Duration,
    tick: &mut dyn FnMut() -> Result<()>,
) -> Result<serde_json::Value> {
    let mut all: Vec<String> = [
        "--server",
        &SOAK_SERVER_V4.to_string(),
        "--bind",
        &GEN_V4.to_string(),
        "--target",
        &NATIVE_HOST.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    all.extend_from_slice(args);
    LoadCommand {
        ns: &topo.gen,
        bin,
        dir,
        label,
        cpu: None,
        args: &all,
        limit,
    }
    .run(every, tick)
}

/// The `--driver load` soak: `client-sim load --find-max` for the maximum (unless
/// `--relay-max`), then `client-sim load --phase all` at `--fraction` of it for the
/// duration, sampling both processes every interval.
#[allow(clippy::too_many_arguments)]
fn run_load(
    args: &Args,
    topo: &Topology,
    gen: &Generator,
    relay: &mut RunningDevice,
    (relay_pid, server_pid): (u32, u32),
    client_sim: &Path,
    dir: &Path,
    load_at_start: [f64; 3],
) -> Result<Vec<Sample>> {
    // The native host is the generator's own kernel (it answers the echo requests).
    topo.gen_is_native_host()?;
    let clients = args.clients.to_string();
    let measured = args.relay_max.is_none();
    let (max, find_max) = match args.relay_max {
        Some(m) => (m, serde_json::Value::Null),
        None => {
            let a: Vec<String> = [
                "--clients",
                &clients,
                "--phase",
                "data",
                "--find-max",
                "--loss-threshold",
                "1%",
                "--rate",
                "20000",
                "--max-rate",
                "400000",
                "--duration",
                "3s",
            ]
            .map(str::to_owned)
            .to_vec();
            let r = client_sim_load(
                topo,
                client_sim,
                dir,
                "find-max",
                &a,
                Duration::from_secs(600),
                Duration::from_secs(3600),
                &mut || Ok(()),
            )?;
            let best = r["find_max"]["best_rate"]
                .as_f64()
                .with_context(|| format!("no passing rate: {}", r["find_max"]))?;
            (best, r["find_max"].clone())
        }
    };
    // The clients alone solicit the server only to qualify and refresh: the server gets
    // router solicitations from the AF_PACKET generator too, at the same fraction of its
    // own maximum.
    let rs: Vec<Vec<u8>> = (0..args.rs_clients).map(rs_frame).collect();
    let server_max = match args.server_max {
        Some(r) => r,
        None => measure_server_max(gen, &rs)?,
    };
    let server_rate = args.fraction * server_max;
    relay.ensure_running()?;
    let rate = (args.fraction * max).round().max(1.0);
    eprintln!(
        "soak: client-sim load maximum {:.1} k pps ({}), {} clients at {:.1} k pps for {} s; \
         server maximum {:.1} k RS/s, {:.1} k RS/s from the generator",
        max / 1e3,
        if measured { "measured" } else { "given" },
        args.clients,
        rate / 1e3,
        args.duration_secs,
        server_max / 1e3,
        server_rate / 1e3
    );
    let take = |at: f64, secs: f64, d: (u64, u64, u64, u64)| -> Sample {
        let secs = secs.max(1e-9);
        Sample {
            at_secs: at,
            offered: d.0,
            offered_relay_pps: d.0 as f64 / secs,
            offered_server_pps: d.2 as f64 / secs,
            relay_out_pps: d.1 as f64 / secs,
            server_out_pps: d.3 as f64 / secs,
            relay: ProcSample::take(relay_pid, || metrics(topo, RELAY_METRICS), RELAY_DROPPED),
            server: ProcSample::take(server_pid, || metrics(topo, SERVER_METRICS), SERVER_DROPPED),
            kernel_rcvbuf_errors: topo
                .relay
                .run_in(|| Ok(procfs::udp_rcvbuf_errors()))
                .unwrap_or(0),
        }
    };
    let server_counts = || {
        metrics(topo, SERVER_METRICS).map_or((0, 0), |m| {
            (
                metrics::sum_all(&m, "teredo_server_router_solicitations_total"),
                metrics::sum_all(&m, "teredo_server_router_advertisements_total"),
            )
        })
    };
    let mut samples = vec![take(0.0, 1.0, (0, 0, 0, 0))];
    eprint!("{}", table(&samples));
    let start = Instant::now();
    let mut last = (
        Instant::now(),
        procfs::dev_counters(INET_IF),
        procfs::dev_counters(NATIVE_IF),
        server_counts(),
    );
    let a: Vec<String> = [
        "--clients".to_owned(),
        clients.clone(),
        "--phase".to_owned(),
        "all".to_owned(),
        "--rate".to_owned(),
        format!("{rate}"),
        "--duration".to_owned(),
        format!("{}s", args.duration_secs),
    ]
    .to_vec();
    let mut tick = || -> Result<()> {
        relay.ensure_running()?;
        let now = (
            Instant::now(),
            procfs::dev_counters(INET_IF),
            procfs::dev_counters(NATIVE_IF),
            server_counts(),
        );
        let inet = now.1.since(&last.1);
        let native = now.2.since(&last.2);
        let s = take(
            start.elapsed().as_secs_f64(),
            now.0.duration_since(last.0).as_secs_f64(),
            (
                inet.tx_packets,
                native.rx_packets + native.rx_dropped,
                now.3 .0.saturating_sub(last.3 .0),
                now.3 .1.saturating_sub(last.3 .1),
            ),
        );
        eprintln!(
            "soak: {:>4.0} s: clients sent {:.0}/s, relay -> native {:.0}/s, RS/RA {:.0}/{:.0} per s, \
             RSS {} / {} KiB, fds {} / {}",
            s.at_secs,
            s.offered_relay_pps,
            s.relay_out_pps,
            s.offered_server_pps,
            s.server_out_pps,
            s.relay.rss_kib,
            s.server.rss_kib,
            s.relay.fds,
            s.server.fds
        );
        samples.push(s);
        last = now;
        Ok(())
    };
    let done = AtomicBool::new(false);
    let (report, rs_offered) = std::thread::scope(|sc| {
        let blaster = sc.spawn(|| {
            let mut ring = FrameRing::new(rs.clone());
            blast(
                &gen.inet,
                &mut ring,
                Some(server_rate),
                Duration::from_secs(args.duration_secs + 300),
                &done,
            )
        });
        let report = client_sim_load(
            topo,
            client_sim,
            dir,
            "soak",
            &a,
            Duration::from_secs(args.duration_secs + 300),
            Duration::from_secs(args.interval_secs),
            &mut tick,
        );
        done.store(true, Ordering::Relaxed);
        let offered = blaster.join().unwrap_or_default();
        (report, offered)
    });
    let report = report?;
    tick()?;
    let load_at_end = loadavg();
    let data = &report["data"];
    println!(
        "soak: {} s of client-sim load, {} clients at {:.0} % of the measured maximum ({:.1} k \
         pps through server and relay to the native host, <= 1 % loss), plus {:.1} k RS/s \
         ({:.0} % of the server's {:.1} k) from the generator ({:.1} k/s offered)",
        args.duration_secs,
        args.clients,
        args.fraction * 100.0,
        max / 1e3,
        server_rate / 1e3,
        args.fraction * 100.0,
        server_max / 1e3,
        rs_offered.pps() / 1e3
    );
    println!(
        "client-sim load: qualified {}/{}; data sent {} received {} lost {} ({:.3} %), \
         rtt p50 {} ms p99 {} ms",
        report["qualify"]["qualified"],
        report["qualify"]["clients"],
        data["sent"],
        data["received"],
        data["lost"],
        data["loss_percent"].as_f64().unwrap_or(f64::NAN),
        data["rtt_ms"]["p50"],
        data["rtt_ms"]["p99"]
    );
    println!(
        "columns: relay in = datagrams the clients and the generator sent (to relay and \
         server), out = packets the relay forwarded to the native host; server = RSs / RAs \
         per second (/metrics)"
    );
    print!("{}", table(&samples));
    println!("{}", load_line(load_at_start, load_at_end));
    if let Some(path) = &args.json {
        let out = serde_json::json!({
            "driver": args.driver,
            "duration_secs": args.duration_secs,
            "interval_secs": args.interval_secs,
            "fraction": args.fraction,
            "clients": args.clients,
            "max_pps": max,
            "max_measured": measured,
            "server_max_per_s": server_max,
            "server_rate": server_rate,
            "generator_rs_offered": rs_offered,
            "find_max": find_max,
            "rate": rate,
            "load_at_start": load_at_start,
            "load_at_end": load_at_end,
            "samples": samples,
            "client_sim_load": report,
        });
        cli::write_json(path, &out)?;
    }
    Ok(samples)
}

/// The server's RS→RA maximum: the highest paced rate of `rs` frames (1 s steps) with at
/// most 1 % unanswered.
fn measure_server_max(gen: &Generator, rs: &[Vec<u8>]) -> Result<f64> {
    let mut ring = FrameRing::new(rs.to_vec());
    let mut search = RateSearch::new(100_000.0, 6, 1.6, 0.625, 600_000.0, 0.02);
    let mut best: Option<f64> = None;
    while let Some(rate) = search.next_rate() {
        let (sent, got, achieved) = server_step(gen, &mut ring, rate, 1.0)?;
        let ok = passes(sent, got, 0.01);
        eprintln!(
            "soak: server step {:.1} k RS/s: {got} of {sent} answered{}",
            rate / 1e3,
            if ok { "" } else { " (fail)" }
        );
        if ok && best.is_none_or(|b| achieved > b) {
            best = Some(achieved);
        }
        search.record(achieved, ok);
    }
    best.context("the server passed no step of the throughput search")
}

fn next(a: std::net::Ipv4Addr) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(a).wrapping_add(1))
}
