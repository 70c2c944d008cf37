//! `client-sim load` as the benches' generator: one run of it in a namespace (pinned to a
//! CPU with `taskset`), waited for in bounded time, its JSON report read back — whole (as a
//! `serde_json::Value`, for the soak) and as the few figures a comparison needs
//! ([`LoadRun`]). The report's own schema is client-sim's (`client-sim/src/load/report.rs`);
//! only the fields read here are declared, every one optional, so that a report with more
//! (or a phase without data) still reads.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;
use testkit::Netns;

use crate::runner::STOP;

/// One `client-sim load` run.
#[derive(Debug)]
pub struct LoadCommand<'a> {
    /// The namespace it runs in (the generator's).
    pub ns: &'a Netns,
    /// The client-sim binary.
    pub bin: &'a Path,
    /// Where its report (`<label>.json`) and its output (`<label>.log`) go.
    pub dir: &'a Path,
    /// Names the files.
    pub label: &'a str,
    /// CPU it is pinned to (`taskset -c`), if any.
    pub cpu: Option<usize>,
    /// Everything after `client-sim load` except `--json FILE` and `--quiet`.
    pub args: &'a [String],
    /// Longest it may take; then it is killed and this is an error.
    pub limit: Duration,
}

impl LoadCommand<'_> {
    /// Runs it, calling `tick` about every `every` meanwhile, and returns its report. Exit
    /// codes 3 (some client did not qualify) and 4 (loss above the threshold) are results,
    /// not errors: the report says what happened. Any run without a report is an error
    /// carrying the end of its output.
    pub fn run(
        &self,
        every: Duration,
        tick: &mut dyn FnMut() -> Result<()>,
    ) -> Result<serde_json::Value> {
        let json = self.dir.join(format!("{}.json", self.label));
        let log = self.dir.join(format!("{}.log", self.label));
        let _ = fs::remove_file(&json);
        let out = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = match self.cpu {
            Some(cpu) => {
                let mut c = self.ns.command("taskset");
                c.args(["-c", &cpu.to_string()]).arg(self.bin);
                c
            }
            None => self.ns.command(&self.bin.display().to_string()),
        };
        let mut child = cmd
            .arg("load")
            .args(self.args)
            .arg("--quiet")
            .arg("--json")
            .arg(&json)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot start client-sim load")?;
        let start = Instant::now();
        let mut next_tick = start + every;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if STOP.load(Ordering::Relaxed) || start.elapsed() > self.limit {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "client-sim load ({}) stopped after {:.0} s",
                    self.label,
                    start.elapsed().as_secs_f64()
                );
            }
            if Instant::now() >= next_tick {
                tick()?;
                next_tick += every;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let tail = || testkit::process::tail_file(&log, 5);
        let text = fs::read_to_string(&json).with_context(|| {
            format!(
                "client-sim load ({}, {status}) wrote no report: {}",
                self.label,
                tail()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("client-sim load's report {}", json.display()))
    }
}

/// RTT percentiles of a trial, milliseconds (client-sim's `rtt_ms`).
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(default)]
pub struct Rtt {
    /// Answers with a time.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p99_9: Option<f64>,
}

/// One trial (client-sim's `DataSummary`: a data trial, or a router-solicitation trial).
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(default)]
pub struct Trial {
    /// Rate asked for, per second.
    pub offered_pps: f64,
    /// Rate really sent.
    pub sent_pps: f64,
    /// Distinct answers per second.
    pub received_pps: f64,
    /// Sent.
    pub sent: u64,
    /// Distinct answers.
    pub received: u64,
    /// Lost, percent.
    pub loss_percent: f64,
    /// Within the run's loss threshold.
    pub passed: bool,
    /// RTTs.
    pub rtt_ms: Rtt,
}

/// `--find-max`'s search.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(default)]
pub struct FindMax {
    /// The highest rate that passed.
    pub best_rate: Option<f64>,
    /// Every trial, in the order run.
    pub trials: Vec<Trial>,
}

/// The engine and what limited a failed trial.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(default)]
pub struct Engine {
    /// `tokio` or `mmsg`.
    pub name: String,
    /// `generator: ...` or `device: ...`, when a trial failed.
    pub limit: Option<String>,
}

/// Qualification.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(default)]
pub struct Qualify {
    /// Clients started.
    pub clients: u64,
    /// Clients qualified.
    pub qualified: u64,
}

/// The figures of a `client-sim load` report a comparison reads.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(default)]
pub struct LoadRun {
    /// Qualification, when the run had that phase.
    pub qualify: Option<Qualify>,
    /// The one trial of a fixed-rate run (the best one with `--find-max`).
    pub data: Option<Trial>,
    /// The search, with `--find-max`.
    pub find_max: Option<FindMax>,
    /// Engine and limit.
    pub engine: Option<Engine>,
    /// client-sim's exit code.
    pub exit_code: u8,
}

impl LoadRun {
    /// Reads the figures out of a whole report.
    pub fn from_report(v: &serde_json::Value) -> Result<Self> {
        Self::deserialize(v).context("client-sim load's report has an unexpected shape")
    }

    /// Every trial: the search's, or the one fixed-rate trial.
    pub fn trials(&self) -> Vec<&Trial> {
        match &self.find_max {
            Some(f) if !f.trials.is_empty() => f.trials.iter().collect(),
            _ => self.data.iter().collect(),
        }
    }

    /// What limited the failed trial: `generator` or `device` (the first word of the
    /// engine's `limit`), `None` when no trial failed or the report does not say.
    pub fn limited_by(&self) -> Option<&str> {
        let l = self.engine.as_ref()?.limit.as_deref()?;
        Some(l.split(':').next().unwrap_or(l).trim())
    }

    /// The engine's name, `?` when the report does not say.
    pub fn engine_name(&self) -> &str {
        self.engine.as_ref().map_or("?", |e| e.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_find_max_report() {
        let v = serde_json::json!({
            "schema_version": 2,
            "mode": "teredo",
            "qualify": {"clients": 100, "qualified": 99, "results": {"qualified": 99}},
            "data": {"offered_pps": 2000.0, "sent_pps": 1999.0, "received_pps": 1990.0,
                     "sent": 5997, "received": 5970, "loss_percent": 0.45, "passed": true,
                     "rtt_ms": {"count": 5970, "p50": 0.2, "p99": 1.5, "p99_9": 3.0,
                                "histogram": {"buckets": [[200, 1]]}}},
            "find_max": {"best_rate": 2000.0, "trials": [
                {"offered_pps": 1000.0, "passed": true},
                {"offered_pps": 4000.0, "sent_pps": 2500.0, "passed": false}]},
            "engine": {"name": "mmsg", "limit": "generator: sent 2500 of 4000 pps offered"},
            "exit_code": 0
        });
        let r = LoadRun::from_report(&v).unwrap();
        assert_eq!(r.qualify.as_ref().unwrap().qualified, 99);
        assert_eq!(r.trials().len(), 2);
        assert!(!r.trials()[1].passed);
        assert_eq!(r.limited_by(), Some("generator"));
        assert_eq!(r.engine_name(), "mmsg");
        assert_eq!(r.data.as_ref().unwrap().rtt_ms.p99_9, Some(3.0));
    }

    #[test]
    fn a_fixed_rate_report_has_its_one_trial() {
        let v = serde_json::json!({"data": {"offered_pps": 50.0, "received_pps": 49.0}});
        let r = LoadRun::from_report(&v).unwrap();
        assert_eq!(r.trials().len(), 1);
        assert_eq!(r.limited_by(), None);
        assert_eq!(r.engine_name(), "?");
        assert!(LoadRun::from_report(&serde_json::json!({"data": 3})).is_err());
    }
}
