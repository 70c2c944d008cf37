//! `client-sim conform` run inside the tester namespace, and its outputs read back: the JSON
//! report (verdict per check, the comparison with the expectations file) and the expectations
//! file itself. (The JUnit file is parsed in the test, `e2e/conform.rs`, whose dev-dependency
//! the XML parser is.)
//!
//! The tests never list check ids: they compare with `conformance/expectations.json`, so a
//! new check means a new line in that file, not a change here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::bins::{bin_path, workspace_root};
use crate::conform_lab::{ConformLab, Implementation, TESTER_NON_GLOBAL, TESTER_V4};
use crate::process::{tail, TestDir};
use crate::relay::{NATIVE_HOST, RELAY_PORT, RELAY_V4};
use crate::topo::SERVER_PRIMARY;
use crate::wait::wait_for;

/// The expectations file, relative to the workspace root.
pub const EXPECTATIONS: &str = "conformance/expectations.json";

/// The report's fields the tests read (`client-sim conform --json`).
#[derive(Clone, Debug, Deserialize)]
pub struct ConformReport {
    /// One per check run.
    pub checks: Vec<CheckVerdict>,
    /// The comparison with the expectations file.
    pub expectations: Option<Comparison>,
}

/// One check's result.
#[derive(Clone, Debug, Deserialize)]
pub struct CheckVerdict {
    /// `S01`, `R16`, …
    pub id: String,
    /// `server` or `relay`.
    pub role: String,
    /// `pass`, `fail`, `skipped`, `not-applicable` or `error`.
    pub verdict: String,
    /// Why.
    pub detail: String,
    /// How long it took.
    pub duration_ms: u64,
    /// The datagrams (only counted here).
    pub trace: Vec<serde_json::Value>,
}

/// The report's comparison with the expectations file.
#[derive(Clone, Debug, Deserialize)]
pub struct Comparison {
    /// The implementation compared with.
    pub implementation: String,
    /// Checks compared.
    pub compared: usize,
    /// Expected deviations that occurred: id → why.
    pub known_deviations: BTreeMap<String, String>,
    /// Checks left out by `--quick` (not compared).
    #[serde(default)]
    pub left_out: Vec<String>,
    /// Verdicts other than the expected one.
    pub mismatches: Vec<Mismatch>,
}

/// One unexpected verdict.
#[derive(Clone, Debug, Deserialize)]
pub struct Mismatch {
    /// The check.
    pub id: String,
    /// Expected verdict.
    pub expected: String,
    /// Actual verdict.
    pub actual: String,
    /// The check's detail.
    pub detail: String,
}

/// One finished run.
#[derive(Debug)]
pub struct ConformRun {
    /// The exit status (`None`: killed by a signal).
    pub exit_code: Option<i32>,
    /// The JSON report.
    pub report: ConformReport,
    /// The JUnit file it wrote.
    pub junit: PathBuf,
    /// The pcap file it wrote.
    pub pcap: PathBuf,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Its stderr (progress lines).
    pub stderr: String,
}

impl ConformRun {
    /// Verdict per check id.
    pub fn verdicts(&self) -> BTreeMap<&str, &str> {
        self.report
            .checks
            .iter()
            .map(|c| (c.id.as_str(), c.verdict.as_str()))
            .collect()
    }

    /// The ids whose verdict is `verdict`.
    pub fn with_verdict(&self, verdict: &str) -> BTreeSet<String> {
        self.report
            .checks
            .iter()
            .filter(|c| c.verdict == verdict)
            .map(|c| c.id.clone())
            .collect()
    }

    /// One line per check: id, verdict, time, detail.
    pub fn table(&self) -> String {
        self.report
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{} {:<14} {:>6} ms  {}\n",
                    c.id, c.verdict, c.duration_ms, c.detail
                )
            })
            .collect()
    }
}

/// Runs `client-sim conform` against `imp` in `lab` (the devices it has, `--native-local`,
/// `--quick` when `quick`), with `--json --junit --pcap --expect --implementation`; files go
/// to `dir`. Waits up to `timeout`.
pub fn run_conform(
    lab: &ConformLab,
    dir: &TestDir,
    imp: Implementation,
    quick: bool,
    timeout: Duration,
) -> Result<ConformRun> {
    let bin = bin_path("client-sim")?;
    let label = format!("conform-{}", imp.name());
    let junit = dir.join(format!("{label}.xml"));
    let pcap = dir.join(format!("{label}.pcap"));
    let expect = workspace_root().join(EXPECTATIONS);
    let (server, relay) = (
        SERVER_PRIMARY.to_string(),
        SocketAddrV4::new(RELAY_V4, RELAY_PORT).to_string(),
    );
    let (native, bind) = (NATIVE_HOST.to_string(), TESTER_V4.to_string());
    let mut args = vec!["conform", "--bind", &bind, "--native-local", &native];
    let non_global: Vec<String> = TESTER_NON_GLOBAL.iter().map(|a| a.to_string()).collect();
    for a in &non_global {
        args.extend(["--non-global-source", a.as_str()]);
    }
    if imp.has_server() {
        args.extend(["--server", &server]);
    }
    if imp.has_relay() {
        args.extend(["--relay", &relay]);
    }
    if quick {
        args.push("--quick");
    }
    let paths = [&junit, &pcap, &expect].map(|p| p.to_str().map(str::to_owned));
    let [Some(junit_s), Some(pcap_s), Some(expect_s)] = paths else {
        bail!("non-UTF-8 path under {}", dir.path().display());
    };
    args.extend(["--json", "--junit", &junit_s, "--pcap", &pcap_s]);
    args.extend(["--expect", &expect_s, "--implementation", imp.name()]);
    let started = Instant::now();
    let mut proc = lab.tester().spawn(
        &label,
        dir.path(),
        bin.to_str().context("non-UTF-8 binary path")?,
        &args,
    )?;
    let (status, _) = wait_for(&format!("{label} to finish"), timeout, || proc.try_status())
        .with_context(|| format!("{label} stderr:\n{}", tail(&proc.stderr(), 40)))?;
    let elapsed = started.elapsed();
    let (stdout, stderr) = (proc.stdout(), proc.stderr());
    let report: ConformReport = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "{label} ({status}) printed no JSON report: stdout {:?}, stderr:\n{}",
            tail(&stdout, 20),
            tail(&stderr, 40)
        )
    })?;
    Ok(ConformRun {
        exit_code: status.code(),
        report,
        junit,
        pcap,
        elapsed,
        stderr,
    })
}

/// The catalogue, id → role (`client-sim conform --list`: a line per check starting with
/// its id and role, then indented lines).
pub fn catalogue() -> Result<BTreeMap<String, String>> {
    let bin = bin_path("client-sim")?;
    let out = crate::process::run(std::process::Command::new(bin).args(["conform", "--list"]))?;
    Ok(out
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect())
}

/// The verdicts `conformance/expectations.json` lists for `implementation` (id → verdict),
/// and its default.
pub fn expected(implementation: &str) -> Result<(String, BTreeMap<String, String>)> {
    let path = workspace_root().join(EXPECTATIONS);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let imp = &json["implementations"][implementation];
    let default = imp["default"]
        .as_str()
        .with_context(|| format!("{EXPECTATIONS}: no default for {implementation}"))?;
    let mut checks = BTreeMap::new();
    if let Some(map) = imp["checks"].as_object() {
        for (id, x) in map {
            let verdict = x["verdict"]
                .as_str()
                .with_context(|| format!("{EXPECTATIONS}: {implementation}: {id}: no verdict"))?;
            checks.insert(id.clone(), verdict.to_owned());
        }
    }
    Ok((default.to_owned(), checks))
}
