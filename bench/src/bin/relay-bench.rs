//! `relay-bench`: our relay vs Miredo's relay (and a bare forwarder as the ceiling),
//! Teredo→native and native→Teredo, with 1 / 100 / 10 000 peers, in network namespaces it
//! builds itself, alternating devices in one run. Root required.
//!
//! ```sh
//! cargo build --release -p teredo-relay -p teredo-bench
//! sudo ./target/release/relay-bench            # 3 rounds, < 10 min
//! sudo ./target/release/relay-bench --quick    # 1 round, < 3 min
//! sudo ./target/release/relay-bench --json out.json
//! ```

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;
use teredo_bench::afpacket::FrameRing;
use teredo_bench::afxdp::GeneratorKind;
use teredo_bench::cli;
use teredo_bench::frames::{peers, MAX_PEERS, MAX_WIDE_PEERS};
use teredo_bench::memory::{self, FillReport};
use teredo_bench::procfs::{self, loadavg};
use teredo_bench::report::{ratios, summarise, table, InstanceRun};
use teredo_bench::runner::{
    check_stop, establish_trust, frames, refresh_frames, run_cell, CellCtx, CellPlan, Direction,
    Generator,
};
use teredo_bench::setup::{snapshot, RunDir};
use teredo_bench::topo::{ns_usage, Binaries, Device, RunningDevice, Topology};
use testkit::metrics;

/// Our relay vs Miredo's relay in network namespaces (see README.md, "Benchmarks").
#[derive(Debug, Parser)]
#[command(name = "relay-bench", version)]
struct Args {
    /// One round, shorter saturation and fewer search steps (< 3 min).
    #[arg(long)]
    quick: bool,
    /// Rounds (devices alternate within each) [default: 3, --quick: 1].
    #[arg(long)]
    rounds: Option<u32>,
    /// Peer counts.
    #[arg(long, value_delimiter = ',', default_value = "1,100,10000")]
    peers: Vec<u32>,
    /// Directions.
    #[arg(long, value_delimiter = ',', default_value = "t2n,n2t")]
    directions: Vec<String>,
    /// Devices compared in every round (ours, ours-plain = ours with --offload none,
    /// ours-xdp = ours with --fast-path xdp, miredo, bare-xdp = no relay: every frame
    /// redirected to the other link by a protocol-free XDP program, the links' XDP
    /// ceiling); miredo-gw runs for the largest peer count, native→Teredo, unless --no-gw.
    #[arg(long, value_delimiter = ',', default_value = "ours,miredo")]
    devices: Vec<String>,
    /// Skip Miredo with the route via fe80::1.
    #[arg(long)]
    no_gw: bool,
    /// Peer counts for the bare forwarder (ceiling), first round only; empty to skip.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    bare_peers: Vec<u32>,
    /// Skip the bare forwarder.
    #[arg(long)]
    no_bare: bool,
    /// First rate of the first round's search (pps); later rounds start from the earlier
    /// rounds' median.
    #[arg(long, default_value_t = 100_000.0)]
    start_rate: f64,
    /// Skip the unpaced flood (1 s per cell in the first round).
    #[arg(long)]
    no_flood: bool,
    /// Search step length, seconds.
    #[arg(long, default_value_t = 1.0)]
    step_secs: f64,
    /// Saturation run length, seconds [default: 5, --quick: 3].
    #[arg(long)]
    saturation_secs: Option<f64>,
    /// Search steps in the first round [default: 7, --quick: 5]; later rounds use 5 steps
    /// around the earlier result.
    #[arg(long)]
    steps: Option<u32>,
    /// Offered load of the saturation runs (pps), the same for every device (PERF.md: about
    /// twice what the devices take; they take ~100 k here); 0: twice each device's own
    /// throughput.
    #[arg(long, default_value_t = 200_000.0)]
    saturation_rate: f64,
    /// Loss allowed at the throughput rate, percent.
    #[arg(long, default_value_t = 1.0)]
    max_loss: f64,
    /// Workers of our relay (it is pinned to one CPU).
    #[arg(long, default_value_t = 1)]
    workers: usize,
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
    /// Path of teredo-relay [default: next to this binary].
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// Path of bare-forwarder [default: next to this binary].
    #[arg(long)]
    bare_bin: Option<PathBuf>,
    /// Path of miredo.
    #[arg(long, default_value = "/usr/sbin/miredo")]
    miredo_bin: PathBuf,
    /// Write everything (every step) as JSON to this file (`-`: stdout).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Instead of the forwarding benchmark: fill each device's peer table with N trusted
    /// peers through the real path (distinct mappings in 203.0.113.0/24) and report its
    /// resident memory before and after (our relay runs with --max-peers N; Miredo with
    /// 2001::/32 via fe80::1).
    #[arg(long, value_name = "N")]
    memory: Option<u32>,
    /// Native packets per second while filling the table (--memory).
    #[arg(long, default_value_t = 25_000.0)]
    memory_rate: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::exit_code("relay-bench", run(&args))
}

#[derive(Debug, serde::Serialize)]
struct Output<'a> {
    config: Config,
    load_at_start: [f64; 3],
    waited_for_quiet_secs: f64,
    load_at_end: [f64; 3],
    elapsed_secs: f64,
    runs: &'a [InstanceRun],
    summary: Vec<teredo_bench::report::CellSummary>,
    ratios: Vec<teredo_bench::report::Ratio>,
    memory: Vec<Memory>,
}

#[derive(Debug, serde::Serialize)]
struct Config {
    rounds: u32,
    first_round: CellPlan,
    later_rounds: CellPlan,
    peers: Vec<u32>,
    directions: Vec<Direction>,
    devices: Vec<Device>,
    workers: usize,
    kernel: String,
    cpus: usize,
    miredo: String,
    generator: GeneratorKind,
}

#[derive(Debug, serde::Serialize)]
struct Memory {
    device: Device,
    peers: u32,
    rss_kib_after_trust: Vec<u64>,
    rss_kib_end: Vec<u64>,
    rss_kib_end_largest: Vec<u64>,
}

fn run(args: &Args) -> Result<()> {
    cli::preflight(
        "relay-bench needs root: it creates network namespaces, veth links and TUN devices, and \
         sends with AF_PACKET (run it with sudo)",
        "relay-bench needs 2 CPUs (relay on CPU1, generator on CPU0)",
    )?;
    let dirs: Vec<Direction> = args
        .directions
        .iter()
        .map(|d| match d.as_str() {
            "t2n" => Ok(Direction::T2n),
            "n2t" => Ok(Direction::N2t),
            _ => bail!("unknown direction {d:?} (t2n, n2t)"),
        })
        .collect::<Result<_>>()?;
    let devices = cli::devices(
        &args.devices,
        &[
            Device::Ours,
            Device::OursPlain,
            Device::OursXdp,
            Device::Miredo,
            Device::BareXdp,
        ],
    )?;
    if let Some(n) = args.memory {
        if n == 0 || n > MAX_WIDE_PEERS {
            bail!("--memory must be 1..={MAX_WIDE_PEERS}");
        }
    }
    for &n in args.peers.iter().chain(&args.bare_peers) {
        if n == 0 || n > MAX_PEERS {
            bail!("peer counts must be 1..={MAX_PEERS}");
        }
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

    // Binaries, snapshotted into a private run directory.
    let run_dir = RunDir::create("relay-bench")?;
    let dir = run_dir.path().to_path_buf();
    let hint = "build with `cargo build --release -p teredo-relay -p teredo-bench`";
    let relay_bin = cli::bin_path(args.relay_bin.as_deref(), "teredo-relay")?;
    let bare_bin = cli::bin_path(args.bare_bin.as_deref(), "bare-forwarder")?;
    let use_miredo = devices.contains(&Device::Miredo);
    if use_miredo && !args.miredo_bin.is_file() {
        bail!(
            "{} not found (apt-get install miredo, or --devices ours)",
            args.miredo_bin.display()
        );
    }
    let bins = Binaries {
        relay: snapshot(&relay_bin, &dir, hint)?,
        bare: if args.no_bare || args.bare_peers.is_empty() {
            bare_bin
        } else {
            snapshot(&bare_bin, &dir, hint)?
        },
        miredo: args.miredo_bin.clone(),
        bare_xdp: if devices.contains(&Device::BareXdp) {
            snapshot(&cli::bin_path(None, "bare-xdp")?, &dir, hint)?
        } else {
            PathBuf::new()
        },
        dir: dir.clone(),
        workers: args.workers,
        max_peers: args.memory,
    };

    let stage = cli::Stage::set(
        "relay-bench",
        args.max_load,
        args.wait_quiet,
        args.generator,
        Topology::build,
    )?;
    let (topo, gen) = (&stage.topo, &stage.gen);
    let (load_at_start, waited) = (stage.load_at_start, stage.waited);
    if let Some(n) = args.memory {
        return run_memory(args, topo, gen, &bins, &devices, n);
    }

    // The schedule: per round, per peer count, ours then Miredo (then Miredo with the
    // gateway route for the largest count); the bare forwarder after the first round.
    let largest = args.peers.iter().copied().max().unwrap_or(1);
    let mut schedule: Vec<(u32, Device, u32, Vec<Direction>)> = Vec::new();
    for round in 1..=rounds {
        for &n in &args.peers {
            for &d in &devices {
                schedule.push((round, d, n, dirs.clone()));
            }
            if use_miredo && !args.no_gw && n == largest && dirs.contains(&Direction::N2t) {
                schedule.push((round, Device::MiredoGw, n, vec![Direction::N2t]));
            }
        }
        if round == 1 && !args.no_bare {
            for &n in &args.bare_peers {
                schedule.push((round, Device::Bare, n, dirs.clone()));
            }
        }
    }

    eprintln!(
        "relay-bench: {} instances, {rounds} round(s); load average at start {:.2} {:.2} {:.2}",
        schedule.len(),
        load_at_start[0],
        load_at_start[1],
        load_at_start[2]
    );
    let mut runs: Vec<InstanceRun> = Vec::new();
    let mut estimates: HashMap<(Device, u32, Direction), Vec<f64>> = HashMap::new();
    let mut gen_max: HashMap<Direction, f64> = HashMap::new();
    for (round, device, n, dirs) in schedule {
        check_stop()?;
        let r = run_instance(
            topo,
            gen,
            &bins,
            round,
            device,
            n,
            &dirs,
            if round == 1 { &first } else { &later },
            &mut estimates,
            &mut gen_max,
        );
        match r {
            Ok(run) => {
                eprint!("{}", progress(&run));
                runs.push(run);
            }
            Err(e) => {
                check_stop()?;
                eprintln!(
                    "relay-bench: round {round} {} {n} peers failed: {e:#}",
                    device.name()
                );
                runs.push(cli::failed_run(round, device, n, &e));
            }
        }
    }
    let elapsed = stage.started.elapsed().as_secs_f64();
    let load_at_end = loadavg();

    let sums = summarise(&runs);
    let mut ratio_rows = ratios(&sums, Device::Ours, Device::Miredo);
    ratio_rows.extend(ratios(&sums, Device::Ours, Device::MiredoGw));
    ratio_rows.extend(ratios(&sums, Device::Ours, Device::Bare));
    ratio_rows.extend(ratios(&sums, Device::OursPlain, Device::Miredo));
    ratio_rows.extend(ratios(&sums, Device::OursXdp, Device::Miredo));
    ratio_rows.extend(ratios(&sums, Device::OursXdp, Device::Ours));
    ratio_rows.extend(ratios(&sums, Device::OursXdp, Device::BareXdp));
    let mut memory: Vec<Memory> = Vec::new();
    for r in runs.iter().filter(|r| r.error.is_none()) {
        let m = match memory
            .iter_mut()
            .position(|m| m.device == r.device && m.peers == r.peers)
        {
            Some(i) => &mut memory[i],
            None => {
                memory.push(Memory {
                    device: r.device,
                    peers: r.peers,
                    rss_kib_after_trust: vec![],
                    rss_kib_end: vec![],
                    rss_kib_end_largest: vec![],
                });
                memory.last_mut().expect("just pushed")
            }
        };
        m.rss_kib_after_trust.push(r.rss_kib_after_trust);
        m.rss_kib_end.push(r.rss_kib_end);
        m.rss_kib_end_largest.push(r.rss_kib_end_largest);
    }

    println!(
        "relay-bench: 100-byte inner IPv6/UDP; device on CPU1, generator ({}) + sink on \
         CPU0; median [min–max] of {rounds} round(s)",
        args.generator.name()
    );
    println!("{}", table(&sums, &ratio_rows));
    println!("memory (RSS of the device's processes after the traffic; largest process):");
    for m in &memory {
        let mib = |v: &[u64]| {
            v.iter()
                .map(|k| format!("{:.1}", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join("/")
        };
        println!(
            "  {:<10} {:>6} peers: {} MiB ({} MiB largest process)",
            m.device.name(),
            m.peers,
            mib(&m.rss_kib_end),
            mib(&m.rss_kib_end_largest)
        );
    }
    println!("{}", stage.load_line(args.max_load, load_at_end, elapsed));
    let failed: Vec<&InstanceRun> = runs.iter().filter(|r| r.error.is_some()).collect();
    for f in &failed {
        println!(
            "FAILED: round {} {} {} peers: {}",
            f.round,
            f.device.name(),
            f.peers,
            f.error.as_deref().unwrap_or("")
        );
    }

    if let Some(path) = &args.json {
        let out = Output {
            config: Config {
                rounds,
                first_round: first,
                later_rounds: later,
                peers: args.peers.clone(),
                directions: dirs,
                devices,
                workers: args.workers,
                kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                cpus: procfs::cpu_count(),
                generator: args.generator,
                miredo: args.miredo_bin.display().to_string(),
            },
            load_at_start,
            waited_for_quiet_secs: waited,
            load_at_end,
            elapsed_secs: elapsed,
            runs: &runs,
            summary: sums,
            ratios: ratio_rows,
            memory,
        };
        cli::write_json(path, &out)?;
    }
    if !failed.is_empty() {
        bail!("{} instance(s) failed", failed.len());
    }
    Ok(())
}

fn progress(r: &InstanceRun) -> String {
    let mut s = String::new();
    for (d, c) in &r.cells {
        s.push_str(&format!(
            "relay-bench: round {} {:<9} {:>5} peers {}: saturation {:.1} k pps (offered {:.1} k, CPU {:.0} %), \
             throughput {} ({} steps), load {:.2}\n",
            r.round,
            r.device.name(),
            r.peers,
            d.name(),
            c.saturation.received_pps / 1e3,
            c.saturation.offered.pps() / 1e3,
            c.saturation.device_cpu,
            c.throughput
                .map_or_else(|| "-".to_owned(), |t| format!("{:.1} k", t / 1e3)),
            c.steps.len(),
            c.load1
        ));
    }
    s
}

#[allow(clippy::too_many_arguments)]
fn run_instance(
    topo: &Topology,
    gen: &Generator,
    bins: &Binaries,
    round: u32,
    device: Device,
    n: u32,
    dirs: &[Direction],
    plan: &CellPlan,
    estimates: &mut HashMap<(Device, u32, Direction), Vec<f64>>,
    gen_max: &mut HashMap<Direction, f64>,
) -> Result<InstanceRun> {
    let load1 = loadavg()[0];
    let ps = peers(n);
    let mut dev = RunningDevice::start(device, topo, bins, n)?;
    let result = (|| {
        let trust = if device.needs_trust() {
            Some(establish_trust(gen, &ps)?)
        } else {
            None
        };
        dev.ensure_running()?;
        let (_, rss_after_trust, _) = ns_usage(&topo.relay);
        let refresh = refresh_frames(&ps);
        let mut cells = Vec::new();
        for &d in dirs {
            let mut ctx = CellCtx {
                topo,
                gen,
                dir: d,
                ring: FrameRing::new(frames(d, &ps)),
                refresh: refresh.clone(),
            };
            let key = (device, n, d);
            let estimate = estimates
                .get(&key)
                .and_then(|v| teredo_bench::search::Summary::of(v).map(|s| s.median));
            let max = gen_max.get(&d).copied().unwrap_or(5e6);
            let cell = run_cell(&mut ctx, plan, estimate, max)?;
            dev.ensure_running()?;
            if let Some(p) = &cell.flood {
                let m = gen_max.entry(d).or_insert(0.0);
                *m = m.max(p.offered.pps());
            }
            if let Some(t) = cell.throughput {
                estimates.entry(key).or_default().push(t);
            }
            cells.push((d, cell));
        }
        let (_, rss_end, largest) = ns_usage(&topo.relay);
        Ok(InstanceRun {
            round,
            device,
            peers: n,
            trust,
            rss_kib_after_trust: rss_after_trust,
            rss_kib_end: rss_end,
            rss_kib_end_largest: largest,
            cells,
            error: None,
            load1,
        })
    })();
    cli::stop_with_log(dev, topo, result)
}

/// One device's peer table filled (`--memory`).
#[derive(Debug, serde::Serialize)]
struct MemoryRun {
    device: Device,
    fill: FillReport,
    /// Trusted peers by the relay's own gauge (ours).
    trusted_gauge: Option<f64>,
    /// RSS of the device's largest process (the one holding the peer table), KiB.
    rss_kib_before: u64,
    rss_kib_after: u64,
    /// RSS of all its processes, KiB.
    rss_kib_total_after: u64,
    /// (after − before) / trusted peers.
    bytes_per_peer: Option<f64>,
}

fn run_memory(
    args: &Args,
    topo: &Topology,
    gen: &Generator,
    bins: &Binaries,
    devices: &[Device],
    n: u32,
) -> Result<()> {
    let load_at_start = loadavg();
    let mut rows = Vec::new();
    for &d in devices {
        check_stop()?;
        // Miredo installs 2001::/32 on-link: a million destinations would overflow the
        // kernel's neighbour table; the gateway route keeps one entry.
        let device = if d == Device::Miredo {
            Device::MiredoGw
        } else {
            d
        };
        let mut dev = RunningDevice::start(device, topo, bins, 1)?;
        let result = (|| -> Result<MemoryRun> {
            teredo_bench::runner::sleep(std::time::Duration::from_millis(500))?;
            let (_, _, before) = ns_usage(&topo.relay);
            let fill = memory::fill(gen, n, args.memory_rate)?;
            dev.ensure_running()?;
            let (_, total, after) = ns_usage(&topo.relay);
            let trusted_gauge = (device == Device::Ours)
                .then(|| {
                    metrics::fetch_in(&topo.relay, "127.0.0.1:9100".parse().expect("address"))
                        .ok()
                        .and_then(|t| metrics::value(&t, "teredo_relay_peers{state=\"trusted\"}"))
                })
                .flatten();
            let peers = trusted_gauge.unwrap_or(fill.confirmed as f64);
            Ok(MemoryRun {
                device,
                trusted_gauge,
                rss_kib_before: before,
                rss_kib_after: after,
                rss_kib_total_after: total,
                bytes_per_peer: (peers > 0.0)
                    .then(|| after.saturating_sub(before) as f64 * 1024.0 / peers),
                fill,
            })
        })();
        let tail = result
            .as_ref()
            .err()
            .map(|_| dev.log_tail(10))
            .unwrap_or_default();
        dev.stop(topo)?;
        match result {
            Ok(r) => {
                eprintln!(
                    "relay-bench: memory: {}: {} of {n} peers trusted in {:.0} s; RSS {:.1} → {:.1} MiB",
                    device.name(),
                    r.fill.confirmed,
                    r.fill.secs,
                    r.rss_kib_before as f64 / 1024.0,
                    r.rss_kib_after as f64 / 1024.0
                );
                rows.push(r);
            }
            Err(e) => eprintln!(
                "relay-bench: memory: {} failed: {e:#}\n{tail}",
                device.name()
            ),
        }
    }
    println!(
        "relay-bench --memory {n}: peers made trusted through the real path (native packet, \
         indirect bubble, direct bubble from a distinct mapping); RSS of the relay process"
    );
    println!(
        "  {:<10} {:>10} {:>12} {:>10} {:>10} {:>10} {:>8}",
        "device", "trusted", "gauge", "RSS before", "RSS after", "B/peer", "fill s"
    );
    for r in &rows {
        println!(
            "  {:<10} {:>10} {:>12} {:>8.1} M {:>8.1} M {:>10} {:>8.0}",
            r.device.name(),
            r.fill.confirmed,
            r.trusted_gauge
                .map_or("-".to_owned(), |g| format!("{g:.0}")),
            r.rss_kib_before as f64 / 1024.0,
            r.rss_kib_after as f64 / 1024.0,
            r.bytes_per_peer
                .map_or("-".to_owned(), |b| format!("{b:.0}")),
            r.fill.secs
        );
    }
    let load = loadavg();
    println!(
        "load average: {:.2} {:.2} {:.2} before, {:.2} {:.2} {:.2} after",
        load_at_start[0], load_at_start[1], load_at_start[2], load[0], load[1], load[2]
    );
    if let Some(path) = &args.json {
        cli::write_json(path, &rows)?;
    }
    if rows.len() < devices.len() {
        bail!("{} device(s) failed", devices.len() - rows.len());
    }
    Ok(())
}
