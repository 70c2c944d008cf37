//! `server-bench`: our `teredo-server` vs Debian's `miredo-server` answering router
//! solicitations, in network namespaces it builds itself, alternating devices in one run:
//! saturation RA/s, throughput (highest paced RS rate with ≤ 1 % loss), RS→RA latency
//! percentiles at a fixed paced rate (matched by the RS nonce), and memory. Root required.
//!
//! ```sh
//! cargo build --release -p teredo-server -p teredo-bench
//! sudo ./target/release/server-bench            # 3 rounds, < 5 min
//! sudo ./target/release/server-bench --quick    # 1 round, < 2 min
//! sudo ./target/release/server-bench --json out.json
//! ```

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use teredo_bench::afpacket::FrameRing;
use teredo_bench::afxdp::GeneratorKind;
use teredo_bench::cli;
use teredo_bench::latency::{self, LatencyRun};
use teredo_bench::procfs::{self, loadavg};
use teredo_bench::report::{ratios, summarise, table, InstanceRun};
use teredo_bench::rs::{rs_frames, RsKind, MAX_SOURCES};
use teredo_bench::runner::{check_stop, run_cell, CellCtx, CellPlan, Direction, Generator, STOP};
use teredo_bench::search::Summary;
use teredo_bench::servers::{start_server, ServerBins as Bins};
use teredo_bench::setup::{snapshot, RunDir};
use teredo_bench::topo::{ns_usage, Device, Topology, INET_IF};

/// Our Teredo server vs miredo-server in network namespaces (see README.md, "Benchmarks").
#[derive(Debug, Parser)]
#[command(name = "server-bench", version)]
struct Args {
    /// One round, shorter runs and fewer search steps (< 2 min).
    #[arg(long)]
    quick: bool,
    /// Rounds; the device that goes first alternates [default: 3, --quick: 1].
    #[arg(long)]
    rounds: Option<u32>,
    /// Clients sending router solicitations (203.0.113.1..=N), 1..=254.
    #[arg(long, default_value_t = 100)]
    sources: u32,
    /// Solicitations each client sends: cone (answered from the other address),
    /// restricted (from the address asked), or mix (both, alternately).
    #[arg(long, default_value = "mix", value_parser = ["cone", "restricted", "mix"])]
    rs: String,
    /// Devices compared in every round (ours, ours-xdp: ours with --fast-path xdp, miredo,
    /// bare-xdp: no server, every frame sent straight back by a protocol-free XDP program,
    /// the link's XDP ceiling; no latency run).
    #[arg(long, value_delimiter = ',', default_value = "ours,miredo")]
    devices: Vec<String>,
    /// First rate of the first round's throughput search (RS/s); later rounds start from
    /// the earlier rounds' median.
    #[arg(long, default_value_t = 120_000.0)]
    start_rate: f64,
    /// Skip the unpaced flood (1 s, first round).
    #[arg(long)]
    no_flood: bool,
    /// Search step length, seconds.
    #[arg(long, default_value_t = 1.0)]
    step_secs: f64,
    /// Search steps in the first round [default: 7, --quick: 5]; later rounds use 5 steps
    /// around the earlier result.
    #[arg(long)]
    steps: Option<u32>,
    /// Loss allowed at the throughput rate, percent.
    #[arg(long, default_value_t = 1.0)]
    max_loss: f64,
    /// Saturation run length, seconds [default: 5, --quick: 3].
    #[arg(long)]
    saturation_secs: Option<f64>,
    /// Offered load of the saturation runs (RS/s); 0: twice each device's own throughput
    /// (PERF.md: "about twice what the device takes").
    #[arg(long, default_value_t = 0.0)]
    saturation_rate: f64,
    /// Paced rate of the latency run (RS/s); 0 skips it.
    #[arg(long, default_value_t = 107_000.0)]
    latency_rate: f64,
    /// Latency run length, seconds [default: 5, --quick: 3].
    #[arg(long)]
    latency_secs: Option<f64>,
    /// The latency run sends bursts of about this many microseconds' worth of RS.
    #[arg(long, default_value_t = 50.0)]
    burst_us: f64,
    /// Wait until the 1-minute load average is at most this before starting...
    #[arg(long, default_value_t = 1.0)]
    max_load: f64,
    /// ...for at most this many seconds (then start anyway, with a warning).
    #[arg(long, default_value_t = 600)]
    wait_quiet: u64,
    /// What sends the measured traffic: afpacket (sendmmsg on AF_PACKET), or afxdp (the TX
    /// ring of an AF_XDP socket; the set-up traffic still goes by AF_PACKET).
    #[arg(long, value_enum, default_value_t = GeneratorKind::Afpacket)]
    generator: GeneratorKind,
    /// Path of teredo-server [default: next to this binary].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Path of miredo-server.
    #[arg(long, default_value = "/usr/sbin/miredo-server")]
    miredo_server_bin: PathBuf,
    /// Write everything (every step) as JSON to this file (`-`: stdout).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::exit_code("server-bench", run(&args))
}

/// One device in one round.
#[derive(Debug, serde::Serialize)]
struct ServerRun {
    #[serde(flatten)]
    run: InstanceRun,
    latency: Option<LatencyRun>,
}

#[derive(Debug, serde::Serialize)]
struct LatencySummary {
    device: Device,
    rate: f64,
    p50_us: Option<Summary>,
    p90_us: Option<Summary>,
    p99_us: Option<Summary>,
    p999_us: Option<Summary>,
    loss: Option<Summary>,
    offered_pps: Option<Summary>,
    other_cpu: Option<Summary>,
}

#[derive(Debug, serde::Serialize)]
struct Output<'a> {
    config: Config,
    load_at_start: [f64; 3],
    waited_for_quiet_secs: f64,
    load_at_end: [f64; 3],
    elapsed_secs: f64,
    runs: &'a [ServerRun],
    summary: Vec<teredo_bench::report::CellSummary>,
    ratios: Vec<teredo_bench::report::Ratio>,
    latency: Vec<LatencySummary>,
    rss_kib: Vec<(Device, Vec<u64>)>,
}

#[derive(Debug, serde::Serialize)]
struct Config {
    rounds: u32,
    first_round: CellPlan,
    later_rounds: CellPlan,
    sources: u32,
    rs: RsKind,
    devices: Vec<Device>,
    latency_rate: f64,
    latency_secs: f64,
    burst_us: f64,
    kernel: String,
    cpus: usize,
    generator: GeneratorKind,
}

fn run(args: &Args) -> Result<()> {
    cli::preflight(
        "server-bench needs root: it creates network namespaces and veth links, and sends with \
         AF_PACKET (run it with sudo)",
        "server-bench needs 2 CPUs (server on CPU1, generator on CPU0)",
    )?;
    if args.sources == 0 || args.sources > MAX_SOURCES {
        bail!("--sources must be 1..={MAX_SOURCES}");
    }
    let kind = RsKind::parse(&args.rs).context("--rs: cone, restricted or mix")?;
    let devices = cli::devices(
        &args.devices,
        &[
            Device::Ours,
            Device::OursXdp,
            Device::Miredo,
            Device::BareXdp,
        ],
    )?;
    if devices.is_empty() {
        bail!("--devices: at least one of ours, ours-xdp, miredo, bare-xdp");
    }
    let (rounds, first, later) = cli::SearchFlags {
        quick: args.quick,
        rounds: args.rounds,
        no_flood: args.no_flood,
        start_rate: args.start_rate,
        step_secs: args.step_secs,
        steps: args.steps,
        max_loss: args.max_loss,
        saturation_secs: args.saturation_secs,
        saturation_rate: args.saturation_rate,
    }
    .plans();
    let latency_secs = args
        .latency_secs
        .unwrap_or(if args.quick { 3.0 } else { 5.0 });

    let run_dir = RunDir::create("server-bench")?;
    let dir = run_dir.path().to_path_buf();
    let hint = "build with `cargo build --release -p teredo-server -p teredo-bench`";
    let ours_bin = cli::bin_path(args.server_bin.as_deref(), "teredo-server")?;
    if devices.contains(&Device::Miredo) && !args.miredo_server_bin.is_file() {
        bail!(
            "{} not found (apt-get install miredo-server, or --devices ours)",
            args.miredo_server_bin.display()
        );
    }
    let bins = Bins {
        ours: if devices.contains(&Device::Ours) || devices.contains(&Device::OursXdp) {
            snapshot(&ours_bin, &dir, hint)?
        } else {
            ours_bin
        },
        miredo: args.miredo_server_bin.clone(),
        bare_xdp: if devices.contains(&Device::BareXdp) {
            snapshot(&cli::bin_path(None, "bare-xdp")?, &dir, hint)?
        } else {
            PathBuf::new()
        },
        dir: dir.clone(),
    };

    let stage = cli::Stage::set(
        "server-bench",
        args.max_load,
        args.wait_quiet,
        args.generator,
        Topology::build_server,
    )?;
    let (topo, gen) = (&stage.topo, &stage.gen);
    let (load_at_start, waited) = (stage.load_at_start, stage.waited);
    let templates = rs_frames(args.sources, kind);

    // Alternate which device goes first, round by round.
    let mut schedule: Vec<(u32, Device)> = Vec::new();
    for round in 1..=rounds {
        let mut order = devices.clone();
        if round % 2 == 0 {
            order.reverse();
        }
        schedule.extend(order.into_iter().map(|d| (round, d)));
    }
    eprintln!(
        "server-bench: {} instances, {rounds} round(s), {} sources, {} RS; load average at start \
         {:.2} {:.2} {:.2}",
        schedule.len(),
        args.sources,
        kind.name(),
        load_at_start[0],
        load_at_start[1],
        load_at_start[2]
    );
    let mut runs: Vec<ServerRun> = Vec::new();
    let mut estimates: HashMap<Device, Vec<f64>> = HashMap::new();
    let mut gen_max: Option<f64> = None;
    for (round, device) in schedule {
        check_stop()?;
        let plan = if round == 1 { &first } else { &later };
        let estimate = estimates
            .get(&device)
            .and_then(|v| Summary::of(v).map(|s| s.median));
        let inst = Instance {
            topo,
            gen,
            bins: &bins,
            templates: &templates,
            sources: args.sources,
        };
        let latency_plan =
            (args.latency_rate > 0.0).then_some((args.latency_rate, latency_secs, args.burst_us));
        match inst.run(
            round,
            device,
            plan,
            estimate,
            gen_max.unwrap_or(5e6),
            latency_plan,
        ) {
            Ok(r) => {
                eprint!("{}", progress(&r));
                for (_, c) in &r.run.cells {
                    if let Some(t) = c.throughput {
                        estimates.entry(device).or_default().push(t);
                    }
                    if let Some(f) = &c.flood {
                        gen_max = Some(gen_max.unwrap_or(0.0).max(f.offered.pps()));
                    }
                }
                runs.push(r);
            }
            Err(e) => {
                check_stop()?;
                eprintln!(
                    "server-bench: round {round} {} failed: {e:#}",
                    device.name()
                );
                runs.push(ServerRun {
                    run: cli::failed_run(round, device, args.sources, &e),
                    latency: None,
                });
            }
        }
    }
    let elapsed = stage.started.elapsed().as_secs_f64();
    let load_at_end = loadavg();

    let plain: Vec<InstanceRun> = runs.iter().map(|r| r.run.clone()).collect();
    let sums = summarise(&plain);
    let mut ratio_rows = ratios(&sums, Device::Ours, Device::Miredo);
    ratio_rows.extend(ratios(&sums, Device::OursXdp, Device::Miredo));
    ratio_rows.extend(ratios(&sums, Device::OursXdp, Device::Ours));
    ratio_rows.extend(ratios(&sums, Device::OursXdp, Device::BareXdp));
    let lat: Vec<LatencySummary> = devices
        .iter()
        .map(|&d| {
            let of = |f: &dyn Fn(&LatencyRun) -> f64| {
                Summary::of(
                    &runs
                        .iter()
                        .filter(|r| r.run.device == d)
                        .filter_map(|r| r.latency.as_ref().filter(|l| l.answered > 0).map(f))
                        .collect::<Vec<_>>(),
                )
            };
            LatencySummary {
                device: d,
                rate: args.latency_rate,
                p50_us: of(&|l| l.p50_us),
                p90_us: of(&|l| l.p90_us),
                p99_us: of(&|l| l.p99_us),
                p999_us: of(&|l| l.p999_us),
                loss: of(&|l| 100.0 * l.loss),
                offered_pps: of(&|l| l.offered_pps),
                other_cpu: of(&|l| l.other_cpu),
            }
        })
        .collect();
    let rss: Vec<(Device, Vec<u64>)> = devices
        .iter()
        .map(|&d| {
            (
                d,
                runs.iter()
                    .filter(|r| r.run.device == d && r.run.error.is_none())
                    .map(|r| r.run.rss_kib_end)
                    .collect(),
            )
        })
        .collect();

    println!(
        "server-bench: RS→RA, {} clients, {} RS (nonce-only auth); server on CPU1, generator \
         ({}) + sink on CPU0; median [min–max] of {rounds} round(s); rates in RS/s offered and \
         RA/s received",
        args.sources,
        kind.name(),
        args.generator.name()
    );
    println!("{}", table(&sums, &ratio_rows));
    if args.latency_rate > 0.0 {
        println!(
            "RS→RA latency at {:.1} k RS/s paced ({latency_secs} s, bursts of ~{} µs), µs:",
            args.latency_rate / 1e3,
            args.burst_us
        );
        println!(
            "  {:<8} {:<22} {:<22} {:<22} {:<22} {:<8} {:<12} others' CPU",
            "device", "p50", "p90", "p99", "p99.9", "loss %", "offered"
        );
        let fmt = |s: Option<Summary>| match s {
            None => "-".to_owned(),
            Some(s) if s.n == 1 => format!("{:.0}", s.median),
            Some(s) => format!("{:.0} [{:.0}–{:.0}]", s.median, s.min, s.max),
        };
        for l in &lat {
            println!(
                "  {:<8} {:<22} {:<22} {:<22} {:<22} {:<8} {:<12} {}",
                l.device.name(),
                fmt(l.p50_us),
                fmt(l.p90_us),
                fmt(l.p99_us),
                fmt(l.p999_us),
                l.loss
                    .map_or("-".to_owned(), |s| format!("{:.2}", s.median)),
                l.offered_pps
                    .map_or("-".to_owned(), |s| teredo_bench::report::kpps(s.median)),
                l.other_cpu
                    .map_or("-".to_owned(), |s| format!("{:.0} %", s.median)),
            );
        }
        if let (Some(a), Some(b)) = (
            lat.iter().find(|l| l.device == Device::Ours),
            lat.iter().find(|l| l.device == Device::Miredo),
        ) {
            let r = |x: Option<Summary>, y: Option<Summary>| match (x, y) {
                (Some(x), Some(y)) if y.median > 0.0 => format!("{:.2}", x.median / y.median),
                _ => "-".to_owned(),
            };
            println!(
                "  {:<8} {:<22} {:<22} {:<22} {:<22}",
                "ours/mir",
                r(a.p50_us, b.p50_us),
                r(a.p90_us, b.p90_us),
                r(a.p99_us, b.p99_us),
                r(a.p999_us, b.p999_us)
            );
        }
    }
    println!("memory (RSS of the server's processes after the traffic):");
    for (d, v) in &rss {
        println!(
            "  {:<8} {} MiB",
            d.name(),
            v.iter()
                .map(|k| format!("{:.1}", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join("/")
        );
    }
    println!("{}", stage.load_line(args.max_load, load_at_end, elapsed));
    let failed: Vec<&ServerRun> = runs.iter().filter(|r| r.run.error.is_some()).collect();
    for f in &failed {
        println!(
            "FAILED: round {} {}: {}",
            f.run.round,
            f.run.device.name(),
            f.run.error.as_deref().unwrap_or("")
        );
    }

    if let Some(path) = &args.json {
        let out = Output {
            config: Config {
                rounds,
                first_round: first,
                later_rounds: later,
                sources: args.sources,
                rs: kind,
                devices,
                latency_rate: args.latency_rate,
                latency_secs,
                burst_us: args.burst_us,
                kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                cpus: procfs::cpu_count(),
                generator: args.generator,
            },
            load_at_start,
            waited_for_quiet_secs: waited,
            load_at_end,
            elapsed_secs: elapsed,
            runs: &runs,
            summary: sums,
            ratios: ratio_rows,
            latency: lat,
            rss_kib: rss,
        };
        cli::write_json(path, &out)?;
    }
    if !failed.is_empty() {
        bail!("{} instance(s) failed", failed.len());
    }
    Ok(())
}

fn progress(r: &ServerRun) -> String {
    let mut s = String::new();
    for (_, c) in &r.run.cells {
        s.push_str(&format!(
            "server-bench: round {} {:<6}: saturation {:.1} k RA/s (offered {:.1} k, CPU {:.0} %), \
             throughput {} ({} steps), load {:.2}\n",
            r.run.round,
            r.run.device.name(),
            c.saturation.received_pps / 1e3,
            c.saturation.offered.pps() / 1e3,
            c.saturation.device_cpu,
            c.throughput
                .map_or_else(|| "-".to_owned(), |t| format!("{:.1} k", t / 1e3)),
            c.steps.len(),
            c.load1
        ));
    }
    if let Some(l) = &r.latency {
        s.push_str(&format!(
            "server-bench: round {} {:<6}: latency at {:.1} k RS/s: p50 {:.0} µs, p90 {:.0}, p99 \
             {:.0}, p99.9 {:.0}; loss {:.2} %, {} of {} from the secondary; server CPU {:.0} %, \
             others {:.0} %\n",
            r.run.round,
            r.run.device.name(),
            l.offered_pps / 1e3,
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p999_us,
            100.0 * l.loss,
            l.from_secondary,
            l.answered,
            l.device_cpu,
            l.other_cpu
        ));
    }
    s
}

/// Everything an instance needs.
struct Instance<'a> {
    topo: &'a Topology,
    gen: &'a Generator,
    bins: &'a Bins,
    templates: &'a [Vec<u8>],
    sources: u32,
}

impl Instance<'_> {
    /// Starts `device`, measures it (search, saturation, latency), stops it.
    fn run(
        &self,
        round: u32,
        device: Device,
        plan: &CellPlan,
        estimate: Option<f64>,
        gen_max: f64,
        latency_plan: Option<(f64, f64, f64)>,
    ) -> Result<ServerRun> {
        let load1 = loadavg()[0];
        let mut dev = start_server(device, self.topo, self.bins)?;
        let result = (|| {
            let mut ctx = CellCtx {
                topo: self.topo,
                gen: self.gen,
                dir: Direction::RsRa,
                ring: FrameRing::new(self.templates.to_vec()),
                refresh: vec![],
            };
            let cell = run_cell(&mut ctx, plan, estimate, gen_max)?;
            dev.ensure_running()?;
            // A reflected RS is no RA: the bare program has no latency to measure.
            let latency = match latency_plan.filter(|_| device != Device::BareXdp) {
                Some((rate, secs, burst_us)) => {
                    // Let whatever the saturation run queued drain first.
                    teredo_bench::runner::sleep(Duration::from_millis(300))?;
                    let mut exclude = self.topo.relay.pids().unwrap_or_default();
                    exclude.push(std::process::id());
                    let others0 = procfs::user_process_ticks(&exclude);
                    let (ticks0, _, _) = ns_usage(&self.topo.relay);
                    let mut l = latency::measure(
                        self.gen.socket(Direction::RsRa),
                        INET_IF,
                        self.templates,
                        rate,
                        Duration::from_secs_f64(secs),
                        burst_us,
                        &STOP,
                    )?;
                    let (ticks1, _, _) = ns_usage(&self.topo.relay);
                    let others1 = procfs::user_process_ticks(&exclude);
                    let per_core =
                        |t: u64| 100.0 * t as f64 / procfs::ticks_per_second() / l.secs.max(1e-9);
                    l.device_cpu = per_core(ticks1.saturating_sub(ticks0));
                    l.other_cpu = per_core(procfs::ticks_between(&others0, &others1));
                    check_stop()?;
                    dev.ensure_running()?;
                    Some(l)
                }
                None => None,
            };
            let (_, rss_end, largest) = ns_usage(&self.topo.relay);
            Ok(ServerRun {
                run: InstanceRun {
                    round,
                    device,
                    peers: self.sources,
                    trust: None,
                    rss_kib_after_trust: 0,
                    rss_kib_end: rss_end,
                    rss_kib_end_largest: largest,
                    cells: vec![(Direction::RsRa, cell)],
                    error: None,
                    load1,
                },
                latency,
            })
        })();
        cli::stop_with_log(dev, self.topo, result)
    }
}
