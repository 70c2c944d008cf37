//! What every benchmark binary does around its measurement: the exit code, the pre-flight
//! checks, the binaries it runs, the JSON report, and a device's log on failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::procfs;
use crate::report::InstanceRun;
use testkit::netns::{remove_stale, ReturnHere};

use crate::afxdp::GeneratorKind;
use crate::runner::{CellPlan, Generator, STOP};
use crate::setup::{pin_current_thread, sibling, stop_on_signals, wait_quiet};
use crate::topo::{Device, RunningDevice, Topology, GEN_CPU};

/// The process's exit code for `result`: 130 when a signal stopped the run (the shell's
/// convention), 1 on any other error (printed as `<name>: error: …`).
pub fn exit_code(name: &str, result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            if STOP.load(Ordering::Relaxed) {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Fails unless we are root (`why`: what needs it) and have the two CPUs the benchmarks
/// pin to (`cpus`: which goes where).
pub fn preflight(why: &str, cpus: &str) -> Result<()> {
    if !testkit::is_root() {
        bail!("{why}");
    }
    if procfs::cpu_count() < 2 {
        bail!("{cpus}");
    }
    Ok(())
}

/// The path given on the command line, or `name` next to this binary.
pub fn bin_path(given: Option<&Path>, name: &str) -> Result<PathBuf> {
    given.map_or_else(|| sibling(name), |p| Ok(p.to_path_buf()))
}

/// Writes `value` as pretty JSON to `path` (`-`: stdout).
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    if path.as_os_str() == "-" {
        println!("{text}");
    } else {
        fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The row of an instance that failed with `e`.
pub fn failed_run(round: u32, device: Device, peers: u32, e: &anyhow::Error) -> InstanceRun {
    InstanceRun {
        round,
        device,
        peers,
        trust: None,
        rss_kib_after_trust: 0,
        rss_kib_end: 0,
        rss_kib_end_largest: 0,
        cells: vec![],
        error: Some(format!("{e:#}")),
        load1: procfs::loadavg()[0],
    }
}

/// Stops `dev` after a measurement and returns its `result`; a failed measurement carries
/// the last lines of the device's log, and a failed stop is an error too.
pub fn stop_with_log<T>(dev: RunningDevice, topo: &Topology, result: Result<T>) -> Result<T> {
    let tail = result
        .as_ref()
        .err()
        .map(|_| dev.log_tail(10))
        .unwrap_or_default();
    let stopped = dev.stop(topo);
    let run = result.map_err(|e: anyhow::Error| {
        if tail.is_empty() {
            e
        } else {
            e.context(format!("device log:\n{tail}"))
        }
    })?;
    stopped?;
    Ok(run)
}

/// The devices named on the command line, each one of `allowed`.
pub fn devices(names: &[String], allowed: &[Device]) -> Result<Vec<Device>> {
    names
        .iter()
        .map(|d| {
            Device::parse(d)
                .filter(|d| allowed.contains(d))
                .with_context(|| {
                    let names: Vec<&str> = allowed.iter().map(|a| a.name()).collect();
                    format!("unknown device {d:?} ({})", names.join(", "))
                })
        })
        .collect()
}

/// The search and saturation flags `relay-bench` and `server-bench` share.
#[derive(Clone, Copy, Debug)]
pub struct SearchFlags {
    /// `--quick`.
    pub quick: bool,
    /// `--rounds`.
    pub rounds: Option<u32>,
    /// `--no-flood`.
    pub no_flood: bool,
    /// `--start-rate`.
    pub start_rate: f64,
    /// `--step-secs`.
    pub step_secs: f64,
    /// `--steps`.
    pub steps: Option<u32>,
    /// `--max-loss`, percent.
    pub max_loss: f64,
    /// `--saturation-secs`.
    pub saturation_secs: Option<f64>,
    /// `--saturation-rate` (0: a multiple of each device's own throughput).
    pub saturation_rate: f64,
}

impl SearchFlags {
    /// Rounds (at least one), and the plans of the first round and of the later ones: the
    /// first brackets widely from `--start-rate`, the later ones narrowly around the earlier
    /// rounds' median.
    pub fn plans(&self) -> (u32, CellPlan, CellPlan) {
        let rounds = self.rounds.unwrap_or(if self.quick { 1 } else { 3 }).max(1);
        let first = CellPlan {
            flood_secs: if self.no_flood { 0.0 } else { 1.0 },
            start_rate: self.start_rate,
            step_secs: self.step_secs,
            steps: self.steps.unwrap_or(if self.quick { 5 } else { 7 }),
            up: 1.6,
            down: 0.625,
            resolution: 0.01,
            max_loss: self.max_loss / 100.0,
            saturation_secs: self
                .saturation_secs
                .unwrap_or(if self.quick { 3.0 } else { 5.0 }),
            saturation_rate: (self.saturation_rate > 0.0).then_some(self.saturation_rate),
            saturation_factor: 2.0,
        };
        let later = CellPlan {
            steps: 5,
            up: 1.1,
            down: 0.9,
            ..first
        };
        (rounds, first, later)
    }
}

/// Where `relay-bench` and `server-bench` measure from: signals caught, the machine quiet,
/// the namespaces built, this thread pinned to the generator's CPU inside the generator's
/// namespace. Fields drop in order: the generator, then back in the original namespace,
/// then the namespaces deleted.
#[derive(Debug)]
pub struct Stage {
    /// The generator's sockets.
    pub gen: Generator,
    _back: ReturnHere,
    /// The namespaces and links.
    pub topo: Topology,
    /// The load average before waiting for a quiet machine.
    pub load_at_start: [f64; 3],
    /// Seconds waited for it.
    pub waited: f64,
    /// When the measurement began (after the wait).
    pub started: Instant,
}

impl Stage {
    /// Sets the stage for the benchmark `name` (`--max-load`, `--wait-quiet`), building the
    /// namespaces with `build`, with the generator `kind` (`--generator`).
    pub fn set(
        name: &str,
        max_load: f64,
        wait_secs: u64,
        kind: GeneratorKind,
        build: impl FnOnce() -> Result<Topology>,
    ) -> Result<Self> {
        stop_on_signals();
        let load_at_start = procfs::loadavg();
        let (_, waited) = wait_quiet(name, max_load, wait_secs)?;
        let started = Instant::now();
        remove_stale();
        let topo = build()?;
        pin_current_thread(GEN_CPU)?;
        let back = ReturnHere::remember()?;
        topo.gen.enter()?;
        let gen = Generator::open(kind)?;
        Ok(Self {
            gen,
            _back: back,
            topo,
            load_at_start,
            waited,
            started,
        })
    }

    /// The closing line: the load before and after, and how long the run took.
    pub fn load_line(&self, max_load: f64, load_at_end: [f64; 3], elapsed: f64) -> String {
        let (s, waited) = (self.load_at_start, self.waited);
        format!(
            "load average: {:.2} {:.2} {:.2} before (waited {waited:.0} s for ≤ {}), {:.2} {:.2} \
             {:.2} at the end (includes the bench's own 2 busy CPUs); {:.0} s",
            s[0], s[1], s[2], max_load, load_at_end[0], load_at_end[1], load_at_end[2], elapsed
        )
    }
}
