//! `client-sim load-report FILE...`: the JSON reports of several generators (e.g. the
//! replicas of a Docker Swarm service, each with its own client range) merged into one
//! report of the same shape: counters summed, rates summed (the generators ran side by
//! side), percentiles recomputed from the merged histograms (never averaged), the wall-clock
//! span the union of theirs, and one line per generator. The result is itself a load report
//! (it can be merged again) and renders like a run: text, `--json`, `--html`, `--junit`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::report::{
    loss_percent, mbit_per_s, micros_histogram, DataSummary, LoadReport, Percentiles,
    QualifySummary, SCHEMA_VERSION,
};
use super::{EXIT_LOSS, EXIT_NOT_ALL_CLIENTS};

/// `client-sim load-report` flags.
#[derive(Debug, Args)]
pub struct LoadReportArgs {
    /// The generators' JSON reports (`client-sim load --json FILE`).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Write the merged report as JSON: to FILE (the text still goes to stdout), or without
    /// FILE to stdout instead of the text.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub json: Option<Option<PathBuf>>,

    /// Write the merged report as one HTML page (summary and one row per generator).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Write the merged report as JUnit XML (the run's cases, plus one per generator).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Loss allowed for the merged totals, percent (default: the generators' own, which
    /// must then agree).
    #[arg(long, value_parser = crate::cli::parse_percent)]
    pub loss_threshold: Option<f64>,
}

/// One generator of a merged report, as its own report saw its run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generator {
    /// The report file it came from.
    pub file: String,
    /// `--replica-index`.
    pub replica: Option<u32>,
    /// Its first client's global number.
    pub client_offset: u64,
    /// Its clients.
    pub clients: u64,
    /// Its seed.
    pub seed: u64,
    /// Wall-clock start, Unix seconds.
    pub started_unix_s: f64,
    /// Wall-clock end, Unix seconds.
    pub finished_unix_s: f64,
    /// Clients qualified.
    pub qualified: Option<u64>,
    /// Data packets sent.
    pub sent: Option<u64>,
    /// Distinct answers.
    pub received: Option<u64>,
    /// Sent without an answer.
    pub lost: Option<u64>,
    /// Packets sent per second.
    pub sent_pps: Option<f64>,
    /// RTT median, ms.
    pub rtt_p50_ms: Option<f64>,
    /// RTT 99th percentile, ms.
    pub rtt_p99_ms: Option<f64>,
    /// Its exit status.
    pub exit_code: u8,
}

impl Generator {
    fn of(file: &str, r: &LoadReport) -> Self {
        Self {
            file: file.to_owned(),
            replica: r.replica,
            client_offset: r.client_offset,
            clients: r.clients,
            seed: r.seed,
            started_unix_s: r.started_unix_s,
            finished_unix_s: r.finished_unix_s,
            qualified: r.qualify.as_ref().map(|q| q.qualified),
            sent: r.data.as_ref().map(|d| d.sent),
            received: r.data.as_ref().map(|d| d.received),
            lost: r.data.as_ref().map(|d| d.lost),
            sent_pps: r.data.as_ref().map(|d| d.sent_pps),
            rtt_p50_ms: r.data.as_ref().and_then(|d| d.rtt_ms.p50),
            rtt_p99_ms: r.data.as_ref().and_then(|d| d.rtt_ms.p99),
            exit_code: r.exit_code,
        }
    }

    /// One line of the text report.
    pub fn line(&self) -> String {
        let n = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        let loss = match (self.sent, self.lost) {
            (Some(s), Some(l)) => format!(" ({:.3} %)", loss_percent(s, s.saturating_sub(l))),
            _ => String::new(),
        };
        format!(
            "  {:<10} clients {}..{} seed {} qualified {}/{} sent {} received {} lost {}{loss} \
             rtt p50/p99 {}/{} ms exit {} {}",
            self.replica
                .map_or("generator".to_owned(), |r| format!("replica {r}")),
            self.client_offset,
            (self.client_offset + self.clients).saturating_sub(1),
            self.seed,
            n(self.qualified),
            self.clients,
            n(self.sent),
            n(self.received),
            n(self.lost),
            ms(self.rtt_p50_ms),
            ms(self.rtt_p99_ms),
            self.exit_code,
            self.file
        )
    }
}

/// The text block listing `generators` (empty for a single run).
pub fn generator_lines(generators: &[Generator]) -> String {
    if generators.is_empty() {
        return String::new();
    }
    let mut s = format!("generators ({}):\n", generators.len());
    for g in generators {
        let _ = writeln!(s, "{}", g.line());
    }
    s
}

/// Reads one report; a one-line error naming the file for anything unreadable or written
/// in another layout.
pub fn read_report(path: &Path) -> anyhow::Result<LoadReport> {
    let name = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {name}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{name}: not JSON: {e}"))?;
    match value.get("schema_version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(SCHEMA_VERSION) => {}
        Some(v) => anyhow::bail!(
            "{name}: load report schema version {v}, this client-sim merges version {SCHEMA_VERSION}"
        ),
        None => anyhow::bail!(
            "{name}: no schema_version: not a `client-sim load --json` report, or one from a \
             client-sim older than schema version {SCHEMA_VERSION} (no histograms to merge)"
        ),
    }
    serde_json::from_value(value).map_err(|e| anyhow::anyhow!("{name}: not a load report: {e}"))
}

/// The histogram behind `p`; an error when it has samples but no histogram.
fn histogram_of(p: &Percentiles, what: &str, file: &str) -> Result<Histogram<u64>, String> {
    match (&p.histogram, p.count) {
        (Some(h), _) => h.histogram().map_err(|e| format!("{file}: {what}: {e}")),
        (None, 0) => Ok(micros_histogram()),
        (None, n) => Err(format!(
            "{file}: {what} has {n} samples but no histogram to merge"
        )),
    }
}

fn add(
    into: &mut Histogram<u64>,
    h: &Histogram<u64>,
    what: &str,
    file: &str,
) -> Result<(), String> {
    into.add(h).map_err(|e| format!("{file}: {what}: {e}"))
}

/// Distinct values of `f` over the reports, joined with ", ".
fn joined(reports: &[(String, LoadReport)], f: impl Fn(&LoadReport) -> String) -> String {
    let mut v: Vec<String> = Vec::new();
    for (_, r) in reports {
        let s = f(r);
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v.join(", ")
}

fn merge_qualify(reports: &[(String, LoadReport)]) -> Result<Option<QualifySummary>, String> {
    let with: Vec<(&String, &QualifySummary)> = reports
        .iter()
        .filter_map(|(f, r)| r.qualify.as_ref().map(|q| (f, q)))
        .collect();
    if with.is_empty() {
        return Ok(None);
    }
    let mut latency = micros_histogram();
    let mut results: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut clients, mut qualified) = (0, 0);
    let (mut offered, mut achieved, mut rate, mut duration) = (0.0, 0.0, 0.0, 0.0f64);
    for (file, q) in with {
        add(
            &mut latency,
            &histogram_of(&q.latency_ms, "qualification latency", file)?,
            "qualification latency",
            file,
        )?;
        for (k, n) in &q.results {
            *results.entry(k).or_default() += n;
        }
        clients += q.clients;
        qualified += q.qualified;
        offered += q.offered_rate;
        achieved += q.achieved_rate;
        rate += q.qualified_rate;
        duration = duration.max(q.duration_s);
    }
    Ok(Some(QualifySummary {
        clients,
        qualified,
        success_percent: 100.0 * qualified as f64 / clients.max(1) as f64,
        results,
        offered_rate: offered,
        achieved_rate: achieved,
        qualified_rate: rate,
        duration_s: duration,
        latency_ms: Percentiles::of_micros(&latency),
    }))
}

fn merge_data(
    reports: &[(String, LoadReport)],
    threshold: f64,
    packet_bytes: usize,
) -> Result<Option<DataSummary>, String> {
    let with: Vec<(&String, &DataSummary)> = reports
        .iter()
        .filter_map(|(f, r)| r.data.as_ref().map(|d| (f, d)))
        .collect();
    if with.is_empty() {
        return Ok(None);
    }
    let mut rtt = micros_histogram();
    let mut m = DataSummary {
        trial: 1,
        senders: 0,
        offered_pps: 0.0,
        offered_mbit_s: 0.0,
        sent: 0,
        sent_pps: 0.0,
        sent_mbit_s: 0.0,
        received: 0,
        received_pps: 0.0,
        received_mbit_s: 0.0,
        lost: 0,
        loss_percent: 0.0,
        duplicates: 0,
        out_of_order: 0,
        send_errors: 0,
        late: 0,
        duration_s: 0.0,
        rtt_ms: Percentiles::default(),
        jitter_ms: None,
        passed: false,
    };
    let (mut jitter_sum, mut jitter_n) = (0.0, 0u64);
    for (file, d) in with {
        add(
            &mut rtt,
            &histogram_of(&d.rtt_ms, "RTT", file)?,
            "RTT",
            file,
        )?;
        m.senders += d.senders;
        m.offered_pps += d.offered_pps;
        m.sent += d.sent;
        m.sent_pps += d.sent_pps;
        m.received += d.received;
        m.received_pps += d.received_pps;
        m.lost += d.lost;
        m.duplicates += d.duplicates;
        m.out_of_order += d.out_of_order;
        m.send_errors += d.send_errors;
        m.late += d.late;
        m.duration_s = m.duration_s.max(d.duration_s);
        if let Some(j) = d.jitter_ms {
            jitter_sum += j * d.senders as f64;
            jitter_n += d.senders;
        }
    }
    m.offered_mbit_s = mbit_per_s(m.offered_pps, packet_bytes);
    m.sent_mbit_s = mbit_per_s(m.sent_pps, packet_bytes);
    m.received_mbit_s = mbit_per_s(m.received_pps, packet_bytes);
    m.loss_percent = loss_percent(m.sent, m.sent.saturating_sub(m.lost));
    m.rtt_ms = Percentiles::of_micros(&rtt);
    m.jitter_ms = (jitter_n > 0).then(|| jitter_sum / jitter_n as f64);
    m.passed = m.loss_percent <= threshold;
    Ok(Some(m))
}

/// Refuses what cannot be merged: no report, `--find-max` searches, other modes or
/// packet sizes, disagreeing thresholds (without `threshold`), the same clients twice.
fn check(reports: &[(String, LoadReport)], threshold: Option<f64>) -> Result<f64, String> {
    let Some((first_file, first)) = reports.first() else {
        return Err("no report to merge".to_owned());
    };
    for (file, r) in reports {
        if r.find_max.is_some() {
            return Err(format!(
                "{file}: a --find-max search (each generator searched its own rate): merge \
                 fixed-rate runs"
            ));
        }
        if r.phase != first.phase {
            return Err(format!(
                "{file}: phase {}, but {first_file}: phase {}",
                r.phase.as_deref().unwrap_or("-"),
                first.phase.as_deref().unwrap_or("-")
            ));
        }
        if r.mode != first.mode || r.size != first.size {
            return Err(format!(
                "{file}: {} mode with {} B packets, but {first_file}: {} mode with {} B",
                r.mode, r.size, first.mode, first.size
            ));
        }
        if threshold.is_none() && r.loss_threshold_percent != first.loss_threshold_percent {
            return Err(format!(
                "{file}: loss threshold {} %, but {first_file}: {} %: give --loss-threshold",
                r.loss_threshold_percent, first.loss_threshold_percent
            ));
        }
    }
    let mut ranges: Vec<(&str, Generator)> = Vec::new();
    for (file, r) in reports {
        if r.generators.is_empty() {
            ranges.push((file, Generator::of(file, r)));
        } else {
            ranges.extend(r.generators.iter().map(|g| (file.as_str(), g.clone())));
        }
    }
    for (i, (fa, a)) in ranges.iter().enumerate() {
        for (fb, b) in &ranges[i + 1..] {
            let overlap = a.client_offset < b.client_offset + b.clients
                && b.client_offset < a.client_offset + a.clients;
            if overlap && a.seed == b.seed {
                return Err(format!(
                    "{fa} and {fb} simulate the same clients ({}..{} and {}..{} with the same \
                     seeds): the same run twice, or generators without their own \
                     --replica-index / --client-offset",
                    a.client_offset,
                    a.client_offset + a.clients,
                    b.client_offset,
                    b.client_offset + b.clients
                ));
            }
        }
    }
    Ok(threshold.unwrap_or(first.loss_threshold_percent))
}

/// Merges `reports` (file name, report); see the module documentation.
pub fn merge(
    reports: &[(String, LoadReport)],
    threshold: Option<f64>,
) -> Result<LoadReport, String> {
    let threshold = check(reports, threshold)?;
    let first = &reports[0].1;
    let qualify = merge_qualify(reports)?;
    let data = merge_data(reports, threshold, first.packet_bytes)?;
    let warmup: Vec<u64> = reports
        .iter()
        .filter_map(|(_, r)| r.warmup_failed)
        .collect();
    let mut generators = Vec::new();
    for (file, r) in reports {
        if r.generators.is_empty() {
            generators.push(Generator::of(file, r));
        } else {
            generators.extend(r.generators.iter().cloned());
        }
    }
    let started = reports
        .iter()
        .map(|(_, r)| r.started_unix_s)
        .fold(f64::INFINITY, f64::min);
    let finished = reports
        .iter()
        .map(|(_, r)| r.finished_unix_s)
        .fold(0.0, f64::max);
    let any_exit = |c: u8| reports.iter().any(|(_, r)| r.exit_code == c);
    let exit_code = if any_exit(EXIT_NOT_ALL_CLIENTS) {
        EXIT_NOT_ALL_CLIENTS
    } else if any_exit(EXIT_LOSS) || data.as_ref().is_some_and(|d| !d.passed) {
        EXIT_LOSS
    } else {
        reports.iter().map(|(_, r)| r.exit_code).max().unwrap_or(0)
    };
    Ok(LoadReport {
        schema_version: SCHEMA_VERSION,
        mode: first.mode,
        target: joined(reports, |r| r.target.clone()),
        clients: reports.iter().map(|(_, r)| r.clients).sum(),
        profile: first.profile.is_some().then(|| {
            joined(reports, |r| {
                r.profile.clone().unwrap_or_else(|| "-".to_owned())
            })
        }),
        nat: joined(reports, |r| r.nat.clone()),
        size: first.size,
        packet_bytes: first.packet_bytes,
        seed: first.seed,
        replica: None,
        client_offset: generators
            .iter()
            .map(|g| g.client_offset)
            .min()
            .unwrap_or(0),
        started_unix_s: started,
        finished_unix_s: finished,
        qualify,
        warmup_failed: (!warmup.is_empty()).then(|| warmup.iter().sum()),
        data,
        find_max: None,
        elapsed_s: (finished - started).max(0.0),
        peak_rss_bytes: reports.iter().filter_map(|(_, r)| r.peak_rss_bytes).max(),
        exit_code,
        loss_threshold_percent: threshold,
        generators,
        timeline: Default::default(),
        scraped: Vec::new(),
        engine: None,
        phase: first.phase.clone(),
        rs: merge_rs(reports),
    })
}

/// The RS storms' answers summed (`None` unless every report has them).
fn merge_rs(reports: &[(String, LoadReport)]) -> Option<super::report::RsSummary> {
    let mut all = reports.iter().map(|(_, r)| r.rs.as_ref());
    let mut m = all.next()??.clone();
    for r in all {
        let r = r?;
        m.unexpected += r.unexpected;
        m.malformed += r.malformed;
    }
    Some(m)
}

/// `client-sim load-report`: reads, merges, writes; the merged exit status.
pub fn run(args: &LoadReportArgs) -> anyhow::Result<u8> {
    let mut reports = Vec::new();
    for path in &args.files {
        reports.push((path.display().to_string(), read_report(path)?));
    }
    let merged = merge(&reports, args.loss_threshold).map_err(anyhow::Error::msg)?;
    let json = || -> anyhow::Result<String> {
        let mut j = serde_json::to_string_pretty(&merged).context("cannot encode JSON")?;
        j.push('\n');
        Ok(j)
    };
    let mut out = std::io::stdout().lock();
    let print = |out: &mut std::io::StdoutLock<'_>, s: &str| {
        std::io::Write::write_all(out, s.as_bytes()).context("cannot write to stdout")
    };
    match &args.json {
        Some(None) => print(&mut out, &json()?)?,
        Some(Some(path)) => {
            std::fs::write(path, json()?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            print(&mut out, &merged.to_string())?;
        }
        None => print(&mut out, &merged.to_string())?,
    }
    if let Some(path) = &args.html {
        super::html::write(&merged, path)?;
    }
    if let Some(path) = &args.junit {
        let xml = super::junit::junit(&merged)?;
        std::fs::write(path, xml).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(merged.exit_code)
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
