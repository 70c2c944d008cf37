//! `versus`: our Teredo server and relay against Debian's Miredo, side by side in one run,
//! with `client-sim load` as the generator: the server's router-solicitation storm
//! (`--phase rs`) and ICMPv6 echo from qualified Teredo clients through the relay to a
//! native host; saturation, throughput at ≤ 1 % loss, RTT percentiles at fixed rates.
//! Devices alternate round by round in the benches' namespaces (device on CPU1, generator
//! on CPU0). Root required. See README.md "Benchmarks".
//!
//! ```sh
//! cargo build --release -p teredo-server -p teredo-relay -p teredo-bench -p client-sim
//! sudo ./target/release/versus --quick
//! sudo ./target/release/versus --json versus.json
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use teredo_bench::cli;
use teredo_bench::clientsim::{LoadCommand, LoadRun};
use teredo_bench::frames::{GEN_V4, NATIVE_HOST};
use teredo_bench::procfs::{self, loadavg};
use teredo_bench::rs::SERVER_PRIMARY;
use teredo_bench::runner::check_stop;
use teredo_bench::search::Summary;
use teredo_bench::serverns::{QualifyServer, TSRV_PRIMARY};
use teredo_bench::servers::{start_server, ServerBins};
use teredo_bench::setup::{snapshot, stop_on_signals, wait_quiet, RunDir};
use teredo_bench::topo::{ns_usage, Binaries, Device, RunningDevice, Topology, GEN_CPU};
use teredo_bench::versus::{generator_verdict, table, Part, Step, StepKind};
use testkit::netns::remove_stale;

/// Our Teredo server and relay against Debian's Miredo, side by side, driven by
/// `client-sim load` (see README.md, "Benchmarks").
///
/// Per round and device (which goes first alternates): the server's RS storm — a
/// `--find-max` search (highest RS rate with ≤ --max-loss unanswered), a saturation trial,
/// and one trial per --server-rates for the RS→RA RTT percentiles; then the relay, for each
/// --relay-clients: clients qualify against our server (its own namespace), warm up through
/// the relay, and send ICMPv6 echo requests to the native host — the same three kinds of
/// trial. Prints one markdown table (ours / Miredo / median of the per-round ratios) and
/// whether the generator was faster than the devices (client-sim names what limited each
/// failed trial); the load average before and after every run is in the JSON.
#[derive(Debug, Parser)]
#[command(name = "versus", version)]
struct Args {
    /// One round, 2 s trials.
    #[arg(long)]
    quick: bool,
    /// Rounds [default: 3, --quick: 1].
    #[arg(long)]
    rounds: Option<u32>,
    /// What to measure: server, relay, or both.
    #[arg(long, value_delimiter = ',', default_value = "server,relay")]
    parts: Vec<String>,
    /// Use Miredo's relay with 2001::/32 via fe80::1 instead of the on-link route it
    /// installs (with many clients the on-link route fills the neighbour table).
    #[arg(long)]
    miredo_gw: bool,
    /// Run ours with `--fast-path xdp` (device `ours-xdp`): the server answers RSs in XDP, the
    /// relay forwards for trusted peers in XDP (`--native-interface nat0`); the generator's
    /// veth ends run `xdp_pass` and the device's NAPI threads are pinned to its CPU.
    #[arg(long)]
    fast_path: bool,
    /// Trial length, seconds [default: 3, --quick: 2].
    #[arg(long)]
    duration: Option<f64>,
    /// Wait for the last answers after each trial, seconds.
    #[arg(long, default_value_t = 1.0)]
    drain: f64,
    /// Loss allowed at the throughput rate (and the verdict of every trial), percent.
    #[arg(long, default_value_t = 1.0)]
    max_loss: f64,
    /// Offered rate of the saturation trials; 0: twice the device's own throughput in
    /// the same round (PERF.md: "about twice what the device takes"), or the search's
    /// maximum when nothing passed.
    #[arg(long, default_value_t = 0.0)]
    saturation_rate: f64,
    /// client-sim's data-path engine: auto (client-sim's default, the fastest available),
    /// mmsg or tokio.
    #[arg(long, default_value = "auto", value_parser = ["auto", "mmsg", "tokio"])]
    engine: String,
    /// Clients soliciting the server.
    #[arg(long, default_value_t = 100)]
    server_clients: u32,
    /// First rate of the server's search, RS/s (later rounds: half the earlier median).
    #[arg(long, default_value_t = 50_000.0)]
    server_start_rate: f64,
    /// Highest rate the server's search tries, RS/s.
    #[arg(long, default_value_t = 1_000_000.0)]
    server_max_rate: f64,
    /// Fixed RS rates for the RS→RA RTT percentiles.
    #[arg(long, value_delimiter = ',', default_value = "50000,107000")]
    server_rates: Vec<f64>,
    /// Teredo client counts of the relay part.
    #[arg(long, value_delimiter = ',', default_value = "1,100,10000")]
    relay_clients: Vec<u32>,
    /// Clients qualifying per second (relay part).
    #[arg(long, default_value_t = 20_000.0)]
    qualify_rate: f64,
    /// First rate of the relay's search, echo requests/s.
    #[arg(long, default_value_t = 10_000.0)]
    relay_start_rate: f64,
    /// Highest rate the relay's search tries.
    #[arg(long, default_value_t = 1_000_000.0)]
    relay_max_rate: f64,
    /// Fixed echo rates for the RTT percentiles through the relay.
    #[arg(long, value_delimiter = ',', default_value = "20000,50000")]
    relay_rates: Vec<f64>,
    /// Wait until the 1-minute load average is at most this before starting...
    #[arg(long, default_value_t = 1.0)]
    max_load: f64,
    /// ...for at most this many seconds (then start anyway, with a warning).
    #[arg(long, default_value_t = 600)]
    wait_quiet: u64,
    /// Path of client-sim [default: next to this binary].
    #[arg(long)]
    client_sim_bin: Option<PathBuf>,
    /// Path of teredo-server [default: next to this binary].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Path of teredo-relay [default: next to this binary].
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// Path of miredo-server.
    #[arg(long, default_value = "/usr/sbin/miredo-server")]
    miredo_server_bin: PathBuf,
    /// Path of miredo.
    #[arg(long, default_value = "/usr/sbin/miredo")]
    miredo_bin: PathBuf,
    /// Write every run, the table and the load as JSON to this file (`-`: stdout).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep client-sim's reports and logs and the devices' logs in this directory
    /// (otherwise a temporary one, removed at the end).
    #[arg(long)]
    keep: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::exit_code("versus", run(&args))
}

const HINT: &str = "build with `cargo build --release -p teredo-server -p teredo-relay -p \
                    teredo-bench -p client-sim`";

/// The settings every step shares.
struct Plan {
    rounds: u32,
    duration: f64,
    devices: [Device; 2],
}

#[derive(serde::Serialize)]
struct Output<'a> {
    command: Vec<String>,
    rounds: u32,
    duration_secs: f64,
    engine: &'a str,
    kernel: String,
    load_at_start: [f64; 3],
    waited_for_quiet_secs: f64,
    load_at_end: [f64; 3],
    elapsed_secs: f64,
    generator: String,
    table: &'a str,
    steps: &'a [Step],
}

fn run(args: &Args) -> Result<()> {
    cli::preflight(
        "versus needs root: it creates network namespaces, veth links and TUN devices (run it \
         with sudo)",
        "versus needs 2 CPUs (device on CPU1, generator on CPU0)",
    )?;
    let mut server = false;
    let mut relay = false;
    for p in &args.parts {
        match p.as_str() {
            "server" => server = true,
            "relay" => relay = true,
            _ => bail!("--parts: server, relay or both, not {p:?}"),
        }
    }
    if args.relay_clients.is_empty() || args.relay_clients.contains(&0) {
        bail!("--relay-clients: one or more counts, each at least 1");
    }
    if args.server_clients == 0 {
        bail!("--server-clients must be at least 1");
    }
    let rates = args.server_rates.iter().chain(&args.relay_rates);
    if rates.clone().any(|r| r.is_nan() || *r <= 0.0) || !(0.0..100.0).contains(&args.max_loss) {
        bail!("--server-rates and --relay-rates must be positive, --max-loss in [0, 100)");
    }
    if server && !args.miredo_server_bin.is_file() {
        bail!(
            "{} not found: versus compares with Debian's miredo-server (apt-get install \
             miredo-server, or --miredo-server-bin PATH)",
            args.miredo_server_bin.display()
        );
    }
    if relay && !args.miredo_bin.is_file() {
        bail!(
            "{} not found: versus compares with Debian's Miredo relay (apt-get install miredo, \
             or --miredo-bin PATH)",
            args.miredo_bin.display()
        );
    }
    let plan = Plan {
        rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        duration: args.duration.unwrap_or(if args.quick { 2.0 } else { 3.0 }),
        devices: [
            if args.fast_path {
                Device::OursXdp
            } else {
                Device::Ours
            },
            if args.miredo_gw {
                Device::MiredoGw
            } else {
                Device::Miredo
            },
        ],
    };
    let run_dir = RunDir::create("versus")?;
    let dir = match &args.keep {
        Some(d) => {
            fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
            d.clone()
        }
        None => run_dir.path().to_path_buf(),
    };
    let bin = |given: &Option<PathBuf>, name: &str| -> Result<PathBuf> {
        snapshot(&cli::bin_path(given.as_deref(), name)?, &dir, HINT)
    };
    let client_sim = bin(&args.client_sim_bin, "client-sim")?;
    let ours_server = bin(&args.server_bin, "teredo-server")?;
    let ours_relay = if relay {
        bin(&args.relay_bin, "teredo-relay")?
    } else {
        PathBuf::new()
    };

    stop_on_signals();
    let load_at_start = loadavg();
    let (_, waited) = wait_quiet("versus", args.max_load, args.wait_quiet)?;
    let started = Instant::now();
    remove_stale();
    let server_topo = if server {
        Some(Topology::build_server()?)
    } else {
        None
    };
    let mut relay_side = if relay {
        let topo = Topology::build()?;
        let qs = QualifyServer::start(&topo, &ours_server, &dir)?;
        Some((topo, qs))
    } else {
        None
    };
    let ctx = Ctx {
        args,
        plan: &plan,
        client_sim: &client_sim,
        dir: &dir,
        server_bins: ServerBins {
            ours: ours_server.clone(),
            miredo: args.miredo_server_bin.clone(),
            bare_xdp: PathBuf::new(),
            dir: dir.clone(),
        },
        relay_bins: Binaries {
            relay: ours_relay,
            bare: PathBuf::new(),
            bare_xdp: PathBuf::new(),
            miredo: args.miredo_bin.clone(),
            dir: dir.clone(),
            workers: 1,
            max_peers: None,
        },
    };
    eprintln!(
        "versus: {} round(s) of {}{}{}; {} s trials, engine {}; load average at start {:.2} \
         {:.2} {:.2}",
        plan.rounds,
        if server { "server" } else { "" },
        if server && relay { " and " } else { "" },
        if relay { "relay" } else { "" },
        plan.duration,
        args.engine,
        load_at_start[0],
        load_at_start[1],
        load_at_start[2]
    );
    let mut steps: Vec<Step> = Vec::new();
    for round in 1..=plan.rounds {
        let mut order = plan.devices;
        if round % 2 == 0 {
            order.reverse();
        }
        if let Some(topo) = &server_topo {
            for device in order {
                check_stop()?;
                ctx.server_round(topo, round, device, &mut steps)?;
            }
        }
        if let Some((topo, qs)) = &mut relay_side {
            for device in order {
                check_stop()?;
                ctx.relay_round(topo, qs, round, device, &mut steps)?;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let load_at_end = loadavg();
    let t = table(&steps, plan.devices[0], plan.devices[1]);
    let verdict = generator_verdict(&steps);
    println!(
        "versus: our Teredo server and relay vs Miredo's, driven by client-sim load (engine {}); \
         device on CPU1, generator on CPU0; median [min–max] of {} round(s); ratio = median of \
         the per-round ratios ours/Miredo (for RTTs, below 1 is better for ours)",
        steps
            .iter()
            .filter_map(|s| s.run.as_ref().map(LoadRun::engine_name))
            .next()
            .unwrap_or("?"),
        plan.rounds
    );
    println!();
    print!("{t}");
    println!();
    println!("generator: {verdict}");
    println!(
        "load average: {:.2} {:.2} {:.2} before (waited {waited:.0} s for ≤ {}), {:.2} {:.2} {:.2} \
         at the end; {elapsed:.0} s",
        load_at_start[0],
        load_at_start[1],
        load_at_start[2],
        args.max_load,
        load_at_end[0],
        load_at_end[1],
        load_at_end[2]
    );
    let failed: Vec<&Step> = steps.iter().filter(|s| s.error.is_some()).collect();
    for f in &failed {
        println!("FAILED: {}", f.line());
    }
    if let Some(path) = &args.json {
        cli::write_json(
            path,
            &Output {
                command: std::env::args().collect(),
                rounds: plan.rounds,
                duration_secs: plan.duration,
                engine: &args.engine,
                kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                load_at_start,
                waited_for_quiet_secs: waited,
                load_at_end,
                elapsed_secs: elapsed,
                generator: verdict,
                table: &t,
                steps: &steps,
            },
        )?;
    }
    if !failed.is_empty() {
        bail!("{} run(s) failed", failed.len());
    }
    Ok(())
}

/// What every round needs.
struct Ctx<'a> {
    args: &'a Args,
    plan: &'a Plan,
    client_sim: &'a Path,
    dir: &'a Path,
    server_bins: ServerBins,
    relay_bins: Binaries,
}

/// One step's request: its kind, its rate, and the arguments of client-sim that set them.
struct Request {
    kind: StepKind,
    rate: f64,
    max_rate: f64,
}

impl Ctx<'_> {
    /// The client-sim arguments of `req` after `base` (which names the traffic).
    fn args_for(&self, base: &[String], req: &Request) -> Vec<String> {
        let mut a = base.to_vec();
        let s = |x: f64| format!("{x:.0}");
        a.extend([
            "--rate".to_owned(),
            s(req.rate.max(1.0)),
            "--duration".to_owned(),
            format!("{}ms", (self.plan.duration * 1e3).round()),
            "--drain".to_owned(),
            format!("{}ms", (self.args.drain * 1e3).round()),
            "--loss-threshold".to_owned(),
            format!("{}%", self.args.max_loss),
        ]);
        if req.kind == StepKind::FindMax {
            a.extend([
                "--find-max".to_owned(),
                "--max-rate".to_owned(),
                s(req.max_rate),
            ]);
        }
        if self.args.engine != "auto" {
            a.extend(["--engine".to_owned(), self.args.engine.clone()]);
        }
        a
    }

    /// Runs one step against the device running in `topo.relay`.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        topo: &Topology,
        dev: &mut RunningDevice,
        (round, device, part): (u32, Device, Part),
        base: &[String],
        req: &Request,
        qs: Option<&mut QualifyServer>,
    ) -> Step {
        let label = format!(
            "r{round}-{}-{}-{:?}-{:.0}",
            device.name(),
            match part {
                Part::Server => "server".to_owned(),
                Part::Relay(n) => format!("relay{n}"),
            },
            req.kind,
            req.rate
        );
        let load_before = loadavg()[0];
        let start = Instant::now();
        let (ticks0, _, _) = ns_usage(&topo.relay);
        let a = self.args_for(base, req);
        // Qualification and warm-up, then at most 24 search trials (client-sim's bound).
        let trials = if req.kind == StepKind::FindMax {
            24.0
        } else {
            1.0
        };
        let limit =
            Duration::from_secs_f64(60.0 + trials * (self.plan.duration + self.args.drain + 1.0));
        let result = LoadCommand {
            ns: &topo.gen,
            bin: self.client_sim,
            dir: self.dir,
            label: &label,
            cpu: Some(GEN_CPU),
            args: &a,
            limit,
        }
        .run(Duration::from_secs(1), &mut || dev.ensure_running())
        .and_then(|v| LoadRun::from_report(&v))
        .and_then(|r| {
            dev.ensure_running()?;
            if let Some(qs) = qs {
                qs.ensure_running()?;
            }
            if r.trials().is_empty() {
                bail!(
                    "client-sim load ({label}) ran no trial (exit {}; qualified {:?})",
                    r.exit_code,
                    r.qualify.as_ref().map(|q| (q.qualified, q.clients))
                );
            }
            Ok(r)
        });
        let secs = start.elapsed().as_secs_f64();
        let (ticks1, _, _) = ns_usage(&topo.relay);
        let device_cpu = 100.0 * ticks1.saturating_sub(ticks0) as f64
            / procfs::ticks_per_second()
            / secs.max(1e-9);
        let (run, error) = match result {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let s = Step {
            round,
            device,
            part,
            kind: req.kind,
            rate: req.rate,
            run,
            device_cpu,
            load_before,
            load_after: loadavg()[0],
            secs,
            error,
        };
        eprintln!("versus: {}", s.line());
        s
    }

    /// The three kinds of step for one device and part, appended to `steps`.
    #[allow(clippy::too_many_arguments)]
    fn steps_for(
        &self,
        topo: &Topology,
        dev: &mut RunningDevice,
        key: (u32, Device, Part),
        base: &[String],
        (start_rate, max_rate, fixed): (f64, f64, &[f64]),
        mut qs: Option<&mut QualifyServer>,
        steps: &mut Vec<Step>,
    ) -> Result<()> {
        let (_, device, part) = key;
        // Later rounds search from half the earlier rounds' median: one doubling to cross
        // it.
        let earlier: Vec<f64> = steps
            .iter()
            .filter(|s| s.device == device && s.part == part)
            .filter_map(Step::throughput)
            .collect();
        let start = Summary::of(&earlier).map_or(start_rate, |s| (s.median / 2.0).max(1.0));
        let fm = self.step(
            topo,
            dev,
            key,
            base,
            &Request {
                kind: StepKind::FindMax,
                rate: start,
                max_rate,
            },
            qs.as_deref_mut(),
        );
        let sat_rate = if self.args.saturation_rate > 0.0 {
            self.args.saturation_rate
        } else {
            fm.throughput()
                .map_or(max_rate, |t| (2.0 * t).min(max_rate))
        };
        steps.push(fm);
        check_stop()?;
        let mut reqs = vec![Request {
            kind: StepKind::Saturation,
            rate: sat_rate,
            max_rate,
        }];
        reqs.extend(fixed.iter().map(|&rate| Request {
            kind: StepKind::Fixed,
            rate,
            max_rate,
        }));
        for req in reqs {
            let s = self.step(topo, dev, key, base, &req, qs.as_deref_mut());
            steps.push(s);
            check_stop()?;
        }
        Ok(())
    }

    /// Our server or miredo-server: started, measured, stopped.
    fn server_round(
        &self,
        topo: &Topology,
        round: u32,
        device: Device,
        steps: &mut Vec<Step>,
    ) -> Result<()> {
        let device = if device == Device::MiredoGw {
            Device::Miredo
        } else {
            device
        };
        let mut dev = start_server(device, topo, &self.server_bins)?;
        let base: Vec<String> = [
            "--phase",
            "rs",
            "--server",
            &SERVER_PRIMARY.to_string(),
            "--bind",
            &GEN_V4.to_string(),
            "--clients",
            &self.args.server_clients.to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        let r = self.steps_for(
            topo,
            &mut dev,
            (round, device, Part::Server),
            &base,
            (
                self.args.server_start_rate,
                self.args.server_max_rate,
                &self.args.server_rates,
            ),
            None,
            steps,
        );
        cli::stop_with_log(dev, topo, r)
    }

    /// Our relay or Miredo's: started, measured for every client count, stopped.
    fn relay_round(
        &self,
        topo: &Topology,
        qs: &mut QualifyServer,
        round: u32,
        device: Device,
        steps: &mut Vec<Step>,
    ) -> Result<()> {
        let mut dev = RunningDevice::start(device, topo, &self.relay_bins, 1)?;
        let r = (|| {
            for &clients in &self.args.relay_clients {
                let base: Vec<String> = [
                    "--server",
                    &TSRV_PRIMARY.to_string(),
                    "--bind",
                    &GEN_V4.to_string(),
                    "--target",
                    &NATIVE_HOST.to_string(),
                    "--clients",
                    &clients.to_string(),
                    "--qualify-rate",
                    &format!("{:.0}", self.args.qualify_rate),
                ]
                .map(str::to_owned)
                .to_vec();
                self.steps_for(
                    topo,
                    &mut dev,
                    (round, device, Part::Relay(clients)),
                    &base,
                    (
                        self.args.relay_start_rate,
                        self.args.relay_max_rate,
                        &self.args.relay_rates,
                    ),
                    Some(&mut *qs),
                    steps,
                )?;
            }
            Ok(())
        })();
        cli::stop_with_log(dev, topo, r)
    }
}
