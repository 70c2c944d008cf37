//! The load report: offered vs achieved rates, loss, duplicates, reordering, RTT percentiles
//! and jitter, qualification success and latency, the `--find-max` trials; as text or JSON.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize};

use super::hist::HistogramCounts;

/// Version of the JSON report's layout; `load-report` merges only this one (2: histograms,
/// wall-clock span and client range added).
pub const SCHEMA_VERSION: u32 = 2;

/// Percentiles of a histogram of microseconds, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: Option<f64>,
    /// Mean.
    pub mean: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p99_9: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
    /// The histogram itself (µs), for merging reports; absent without samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<HistogramCounts>,
}

impl Percentiles {
    /// From a histogram recorded in microseconds.
    pub fn of_micros(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| Some(us as f64 / 1000.0);
        Self {
            count: h.len(),
            min: ms(h.min()),
            mean: Some(h.mean() / 1000.0),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            histogram: Some(HistogramCounts::of(h)),
        }
    }

    /// `min/p50/p90/p99/p99.9/max = a/b/c/d/e/f ms`, or `-` without samples.
    pub fn line(&self) -> String {
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        if self.count == 0 {
            return "-".to_owned();
        }
        format!(
            "min/p50/p90/p99/p99.9/max = {}/{}/{}/{}/{}/{} ms",
            f(self.min),
            f(self.p50),
            f(self.p90),
            f(self.p99),
            f(self.p99_9),
            f(self.max)
        )
    }
}

/// A histogram for microseconds from 1 µs to 100 s, 3 significant figures.
pub fn micros_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("constant, valid bounds")
}

/// 100 × lost / sent (0 when nothing was sent); answers beyond `sent` do not make it negative.
pub fn loss_percent(sent: u64, received: u64) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    100.0 * sent.saturating_sub(received) as f64 / sent as f64
}

/// Megabits per second of `pps` packets of `bytes` bytes.
pub fn mbit_per_s(pps: f64, bytes: usize) -> f64 {
    pps * bytes as f64 * 8.0 / 1e6
}

/// A name from a fixed list. An alias, because serde would make a `&'static str` field
/// borrow from the input ('de: 'static) even with `deserialize_with`.
pub type StaticName = &'static str;

/// Reads a name written from one of `known` back as that `&'static str`.
fn known_name<'de, D: Deserializer<'de>>(
    d: D,
    known: &[&'static str],
) -> Result<&'static str, D::Error> {
    let s = String::deserialize(d)?;
    known
        .iter()
        .find(|k| **k == s)
        .copied()
        .ok_or_else(|| serde::de::Error::custom(format!("unknown name {s:?}")))
}

fn de_mode<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    known_name(d, &["teredo", "ceiling"])
}

fn de_results<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<&'static str, u64>, D::Error> {
    let m = BTreeMap::<String, u64>::deserialize(d)?;
    m.into_iter()
        .map(|(k, n)| {
            super::metrics::QUALIFY_RESULTS
                .iter()
                .find(|r| **r == k)
                .map(|r| (*r, n))
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown qualification result {k:?}"))
                })
        })
        .collect()
}

/// How qualification went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QualifySummary {
    /// Clients started.
    pub clients: u64,
    /// Of those, qualified.
    pub qualified: u64,
    /// 100 × qualified / clients.
    pub success_percent: f64,
    /// Clients per outcome (`qualified`, `timeout`, `symmetric_nat`, `error`...).
    #[serde(deserialize_with = "de_results")]
    pub results: BTreeMap<&'static str, u64>,
    /// `--qualify-rate`, clients per second.
    pub offered_rate: f64,
    /// Clients started per second, measured.
    pub achieved_rate: f64,
    /// Qualifications per second: qualified / time until the last one.
    pub qualified_rate: f64,
    /// Wall time of the phase, seconds.
    pub duration_s: f64,
    /// Time from first RS to qualification.
    pub latency_ms: Percentiles,
}

/// One data trial at a fixed offered rate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataSummary {
    /// Trial number (from 1).
    pub trial: u32,
    /// Clients sending (qualified and through the warm-up).
    pub senders: u64,
    /// Offered rate, packets per second.
    pub offered_pps: f64,
    /// Offered, Mbit/s of inner IPv6 packets.
    pub offered_mbit_s: f64,
    /// Packets sent.
    pub sent: u64,
    /// Sent per second, measured.
    pub sent_pps: f64,
    /// Sent, Mbit/s.
    pub sent_mbit_s: f64,
    /// Distinct answers.
    pub received: u64,
    /// Answers per second.
    pub received_pps: f64,
    /// Answers, Mbit/s.
    pub received_mbit_s: f64,
    /// Sent without an answer after the drain time.
    pub lost: u64,
    /// 100 × lost / sent.
    pub loss_percent: f64,
    /// Answers seen twice or more.
    pub duplicates: u64,
    /// Answers below the highest sequence number already seen from their client.
    pub out_of_order: u64,
    /// Sends that failed (socket errors, or refused by the client; they count as lost).
    pub send_errors: u64,
    /// Answers to an earlier trial that arrived during this one (not counted above).
    pub late: u64,
    /// Sending time, seconds.
    pub duration_s: f64,
    /// Round-trip times.
    pub rtt_ms: Percentiles,
    /// Mean over clients of the RFC 3550 interarrival jitter estimate, milliseconds.
    pub jitter_ms: Option<f64>,
    /// Whether loss stayed within the threshold (and, for `--find-max`, the rate was
    /// really offered: at least 90 % of it sent).
    pub passed: bool,
}

/// The `--find-max` search.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FindMaxSummary {
    /// The loss threshold, percent.
    pub loss_threshold_percent: f64,
    /// The search's ceiling, pps.
    pub max_rate: f64,
    /// Highest passing offered rate, pps.
    pub best_rate: Option<f64>,
    /// Every trial, in order.
    pub trials: Vec<DataSummary>,
}

/// The engine that moved the data packets, and what limited the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EngineSummary {
    /// `tokio` or `mmsg`.
    pub name: super::engine::Engine,
    /// Where the RTTs' receive times come from.
    pub timestamps: String,
    /// CPU the `mmsg` thread was pinned to.
    pub cpu: Option<usize>,
    /// `mmsg`: `UDP_GRO` on the reflector's and the clients' sockets (runs read as one
    /// buffer where the kernel merged them).
    pub gro: bool,
    /// Datagrams the `--ceiling` reflector read.
    pub reflector_received: Option<u64>,
    /// Datagrams it sent back.
    pub reflector_echoed: Option<u64>,
    /// Datagrams the kernel dropped at the generator's full sockets (`/proc/net/udp`).
    pub generator_socket_drops: Option<u64>,
    /// At the reflector's.
    pub reflector_socket_drops: Option<u64>,
    /// Descriptors the process held with every client's sockets open.
    pub open_fds: Option<u64>,
    /// `open_fds` per client.
    pub fds_per_client: Option<f64>,
    /// What limited the run, when something did: `generator: ...` or `device: ...`.
    pub limit: Option<String>,
    /// `mmsg` engine, Teredo trials: what the clients lent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lent: Option<LentSummary>,
}

/// The `mmsg` engine's Teredo trials: clients that lent it their socket, and the datagrams
/// it read there that were not answers (bubbles, router advertisements, ICMPv6 errors…),
/// passed on to the clients' tasks or dropped with a task's channel full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LentSummary {
    /// Clients whose data packets the engine sent.
    pub clients: u64,
    /// Datagrams passed on to the tasks.
    pub to_tasks: u64,
    /// Dropped: the task's channel was full.
    pub to_tasks_dropped: u64,
}

impl EngineSummary {
    /// Puts the pieces together.
    pub fn new(
        name: super::engine::Engine,
        (cpu, gro): (Option<usize>, bool),
        echoed: Option<super::reflector::EchoCounts>,
        drops: Option<super::reflector::SocketDrops>,
        open_fds: Option<u64>,
        clients: u32,
        limit: Option<String>,
    ) -> Self {
        Self {
            name,
            timestamps: name.timestamps().to_owned(),
            cpu: cpu.filter(|_| name == super::engine::Engine::Mmsg),
            gro: gro && name == super::engine::Engine::Mmsg,
            reflector_received: echoed.map(|e| e.received),
            reflector_echoed: echoed.map(|e| e.echoed),
            generator_socket_drops: drops.map(|d| d.generator),
            reflector_socket_drops: echoed.and(drops.map(|d| d.reflector)),
            open_fds,
            fds_per_client: open_fds.map(|f| f as f64 / f64::from(clients.max(1))),
            limit,
            lent: None,
        }
    }
}

/// `--phase rs`: what answered the router solicitations and what came back that was no
/// answer (the trials themselves are in `data` and `find_max`: sent = RSs, received =
/// distinct answers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RsSummary {
    /// What counts as an answer: a router advertisement, or with `--ceiling` the
    /// reflector's echo of the RS.
    pub answer: String,
    /// Bytes of one RS datagram (UDP payload).
    pub rs_bytes: usize,
    /// How each RS's nonce says whose it is, which one and when it left.
    pub nonce: String,
    /// Valid answers whose nonce we did not send (not counted as answers).
    pub unexpected: u64,
    /// Datagrams that were no valid answer (not Teredo, no auth header, not an RA...).
    pub malformed: u64,
}

/// What limited the run, from the trial that failed (the last failing one of a search, or
/// the fixed-rate trial): the generator (it could not send the offered rate, or its own
/// sockets overflowed) or the device (with `--ceiling`, the reflector's socket overflowed
/// while the generator's did not: the generator was not faster than the device).
pub fn limit(
    ceiling: bool,
    drops: Option<super::reflector::SocketDrops>,
    data: Option<&DataSummary>,
    find_max: Option<&FindMaxSummary>,
) -> Option<String> {
    let failed = match find_max {
        Some(f) => f.trials.iter().rfind(|t| !t.passed),
        None => data.filter(|d| !d.passed),
    }?;
    let d = drops.unwrap_or_default();
    if failed.sent_pps < 0.9 * failed.offered_pps {
        return Some(format!(
            "generator: sent {:.0} of {:.0} pps offered",
            failed.sent_pps, failed.offered_pps
        ));
    }
    if ceiling && d.reflector > d.generator {
        return Some(format!(
            "device: the generator was not faster than the device (the reflector's socket \
             dropped {}, the generator's {})",
            d.reflector, d.generator
        ));
    }
    if d.generator > 0 {
        return Some(format!(
            "generator: its own sockets dropped {} answers",
            d.generator
        ));
    }
    (!ceiling).then(|| "device: lost in the device or on the way (not at our sockets)".to_owned())
}

/// The whole report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `teredo`, or `ceiling` (plain UDP against an in-process echo).
    #[serde(deserialize_with = "de_mode")]
    pub mode: StaticName,
    /// What the clients talk to.
    pub target: String,
    /// Clients.
    pub clients: u64,
    /// Client profile (Teredo mode).
    pub profile: Option<String>,
    /// NAT in front of each client.
    pub nat: String,
    /// ICMPv6 data / UDP payload bytes per packet.
    pub size: usize,
    /// Inner IPv6 packet bytes (what the Mbit/s figures count).
    pub packet_bytes: usize,
    /// Seed of the run.
    pub seed: u64,
    /// Index of this generator among several (`--replica-index`), if given.
    pub replica: Option<u32>,
    /// Global number of the first client (`--client-offset`): client `i` of this run is
    /// client `client_offset + i` of all generators, with seed `seed + client_offset + i`.
    pub client_offset: u64,
    /// Wall-clock start of the run, seconds since the Unix epoch.
    pub started_unix_s: f64,
    /// Wall-clock end of the run, seconds since the Unix epoch.
    pub finished_unix_s: f64,
    /// Qualification (Teredo mode).
    pub qualify: Option<QualifySummary>,
    /// Clients that qualified but got no answer during the warm-up.
    pub warmup_failed: Option<u64>,
    /// The fixed-rate trial, or the best `--find-max` trial.
    pub data: Option<DataSummary>,
    /// The `--find-max` search.
    pub find_max: Option<FindMaxSummary>,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Peak resident memory of the process (`VmHWM`), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// The exit status.
    pub exit_code: u8,
    /// Loss a trial may have and pass, percent.
    pub loss_threshold_percent: f64,
    /// The generators merged into this report (`client-sim load-report`; empty for a run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generators: Vec<super::merge::Generator>,
    /// The run over time (for `--html`; not in the JSON).
    #[serde(skip)]
    pub timeline: super::timeline::Timeline,
    /// The `--scrape` endpoints' counters (for `--html`; not in the JSON).
    #[serde(skip)]
    pub scraped: Vec<super::scrape::Series>,
    /// The data-path engine and what limited the run (`None` in a merged report: each
    /// generator's own report has its engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineSummary>,
    /// The phases run (`--phase`: `qualify`, `data`, `all` or `rs`; absent in older
    /// reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `--phase rs`: the RS storm's answers (`data` and `find_max` hold its trials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rs: Option<RsSummary>,
}

impl LoadReport {
    /// Units of the trials' rates: offered and sent, received (`pps`, or with `--phase rs`
    /// `RS/s` and `RA/s`).
    pub fn units(&self) -> (&'static str, &'static str) {
        match (self.phase.as_deref(), self.mode) {
            (Some("rs"), "ceiling") => ("RS/s", "echoed RS/s"),
            (Some("rs"), _) => ("RS/s", "RA/s"),
            _ => ("pps", "pps"),
        }
    }
}

impl DataSummary {
    fn lines(&self, out: &mut String, (sent_unit, recv_unit): (&str, &str)) {
        let _ = writeln!(
            out,
            "  offered {:.0} {sent_unit} ({:.2} Mbit/s) from {} clients for {:.1} s",
            self.offered_pps, self.offered_mbit_s, self.senders, self.duration_s
        );
        let _ = writeln!(
            out,
            "  sent    {} ({:.1} {sent_unit}, {:.2} Mbit/s), received {} ({:.1} {recv_unit}, {:.2} Mbit/s)",
            self.sent,
            self.sent_pps,
            self.sent_mbit_s,
            self.received,
            self.received_pps,
            self.received_mbit_s
        );
        let _ = writeln!(
            out,
            "  lost/total {}/{} ({:.3} %), duplicates {}, out-of-order {}, send errors {}, late {}",
            self.lost,
            self.sent,
            self.loss_percent,
            self.duplicates,
            self.out_of_order,
            self.send_errors,
            self.late
        );
        let _ = writeln!(
            out,
            "  rtt {}, jitter {}",
            self.rtt_ms.line(),
            self.jitter_ms
                .map_or("-".to_owned(), |j| format!("{j:.3} ms"))
        );
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        let (sent_unit, recv_unit) = self.units();
        let _ = writeln!(
            s,
            "load ({}{}): {} clients, {}, NAT {}, {} B per packet ({} B on the wire inside), target {}",
            self.mode,
            self.phase
                .as_deref()
                .map_or(String::new(), |p| format!(", phase {p}")),
            self.clients,
            self.profile.as_deref().unwrap_or("no Teredo"),
            self.nat,
            self.size,
            self.packet_bytes,
            self.target
        );
        if !self.generators.is_empty() {
            let _ = writeln!(
                s,
                "merged: {} generators side by side (rates summed, percentiles from the merged \
                 histograms), clients {}..{}, span {:.1} s",
                self.generators.len(),
                self.client_offset,
                self.generators
                    .iter()
                    .map(|g| g.client_offset + g.clients)
                    .max()
                    .unwrap_or(0)
                    .saturating_sub(1),
                self.elapsed_s
            );
        }
        if let Some(q) = &self.qualify {
            let results: Vec<String> = q
                .results
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(
                s,
                "qualify: {}/{} qualified ({:.2} %) [{}] in {:.1} s",
                q.qualified,
                q.clients,
                q.success_percent,
                results.join(", "),
                q.duration_s
            );
            let _ = writeln!(
                s,
                "  offered {:.0} clients/s, started {:.1}/s, qualified {:.1}/s",
                q.offered_rate, q.achieved_rate, q.qualified_rate
            );
            let _ = writeln!(s, "  latency {}", q.latency_ms.line());
        }
        if let Some(w) = self.warmup_failed {
            if w > 0 {
                let _ = writeln!(s, "warm-up: {w} qualified clients got no answer");
            }
        }
        if let Some(m) = &self.find_max {
            let _ = writeln!(
                s,
                "find-max (loss ≤ {} %, up to {:.0} {sent_unit}):",
                m.loss_threshold_percent, m.max_rate
            );
            for t in &m.trials {
                let _ = writeln!(
                    s,
                    "  trial {:>2}: offered {:>9.0} {sent_unit}, sent {:>9.1} {sent_unit}, received {:>9.1} {recv_unit}, loss {:>7.3} %, rtt p99 {} -> {}",
                    t.trial,
                    t.offered_pps,
                    t.sent_pps,
                    t.received_pps,
                    t.loss_percent,
                    t.rtt_ms.p99.map_or("-".to_owned(), |v| format!("{v:.3} ms")),
                    if t.passed { "pass" } else { "FAIL" }
                );
            }
            let _ = writeln!(
                s,
                "  highest rate with loss ≤ {} %: {}",
                m.loss_threshold_percent,
                m.best_rate
                    .map_or("none".to_owned(), |r| format!("{r:.0} {sent_unit}"))
            );
        }
        if let Some(d) = &self.data {
            let _ = writeln!(
                s,
                "{}{}:",
                if self.rs.is_some() {
                    "rs storm"
                } else {
                    "data"
                },
                if self.find_max.is_some() {
                    format!(" (best trial, {})", d.trial)
                } else {
                    String::new()
                }
            );
            d.lines(&mut s, (sent_unit, recv_unit));
        }
        if let Some(r) = &self.rs {
            let _ = writeln!(
                s,
                "rs: {} B router solicitations; answer: {}; not answers: unexpected nonce {}, malformed {}",
                r.rs_bytes, r.answer, r.unexpected, r.malformed
            );
            let _ = writeln!(s, "  nonce: {}", r.nonce);
        }
        if let Some(e) = &self.engine {
            let _ = writeln!(
                s,
                "engine {}{}{}: RTT receive times from the {}; {} descriptors ({} per client)",
                e.name,
                e.cpu.map_or(String::new(), |c| format!(" on CPU {c}")),
                if e.gro { ", UDP_GRO" } else { "" },
                e.timestamps,
                e.open_fds.map_or("-".to_owned(), |f| f.to_string()),
                e.fds_per_client
                    .map_or("-".to_owned(), |f| format!("{f:.2}")),
            );
            if let (Some(g), Some(r)) = (e.generator_socket_drops, e.reflector_received) {
                let _ = writeln!(
                    s,
                    "  reflector read {r}, echoed {}; socket drops: generator {g}, reflector {}",
                    e.reflector_echoed.unwrap_or(0),
                    e.reflector_socket_drops.unwrap_or(0)
                );
            } else if let Some(g) = e.generator_socket_drops {
                let _ = writeln!(s, "  socket drops at the generator: {g}");
            }
            if let Some(l) = e.lent {
                let _ = writeln!(
                    s,
                    "  {} clients lent their socket and captured packet; {} other datagrams \
                     passed on to their tasks, {} dropped (task's channel full)",
                    l.clients, l.to_tasks, l.to_tasks_dropped
                );
            }
            if let Some(l) = &e.limit {
                let _ = writeln!(s, "  limited by the {l}");
            }
        }
        s.push_str(&super::merge::generator_lines(&self.generators));
        let _ = write!(
            s,
            "elapsed {:.1} s, peak RSS {}, exit status {}",
            self.elapsed_s,
            self.peak_rss_bytes.map_or("-".to_owned(), |b| format!(
                "{:.1} MiB",
                b as f64 / 1048576.0
            )),
            self.exit_code
        );
        writeln!(f, "{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maths() {
        assert_eq!(loss_percent(0, 0), 0.0);
        assert_eq!(loss_percent(1000, 1000), 0.0);
        assert_eq!(loss_percent(1000, 999), 0.1);
        assert_eq!(loss_percent(4, 0), 100.0);
        assert_eq!(loss_percent(4, 9), 0.0);
        // 1000 pps of 148-byte packets: 1.184 Mbit/s.
        assert!((mbit_per_s(1000.0, 148) - 1.184).abs() < 1e-12);
    }

    #[test]
    fn what_limited_the_run() {
        use super::super::reflector::SocketDrops;
        let r = super::super::fixture::example(true, true);
        let f = r.find_max.as_ref().unwrap();
        let drops = |generator, reflector| {
            Some(SocketDrops {
                generator,
                reflector,
            })
        };
        // The failing trial sent what was offered; the reflector overflowed.
        let l = limit(true, drops(0, 9), None, Some(f)).unwrap();
        assert!(l.starts_with("device: the generator was not faster"), "{l}");
        let l = limit(true, drops(5, 0), None, Some(f)).unwrap();
        assert!(l.starts_with("generator: its own sockets dropped 5"), "{l}");
        assert_eq!(limit(true, drops(0, 0), None, Some(f)), None);
        assert!(limit(false, drops(0, 0), None, Some(f))
            .unwrap()
            .starts_with("device:"));
        // A trial that could not send the offered rate: the generator.
        let mut short = f.trials[2].clone();
        short.sent_pps = short.offered_pps / 2.0;
        let l = limit(true, drops(0, 9), Some(&short), None).unwrap();
        assert!(l.starts_with("generator: sent 200 of 400"), "{l}");
        // Nothing failed: no limit to name.
        assert_eq!(limit(true, drops(3, 3), Some(&f.trials[0]), None), None);
    }

    #[test]
    fn an_rs_storm_reads_in_rs_and_ra_per_second_and_merges_only_with_its_kind() {
        let mut r = super::super::fixture::example(true, true);
        r.phase = Some("rs".to_owned());
        r.qualify = None;
        r.rs = Some(RsSummary {
            answer: "router advertisement".to_owned(),
            rs_bytes: 61,
            nonce: "scheme".to_owned(),
            unexpected: 2,
            malformed: 3,
        });
        assert_eq!(r.units(), ("RS/s", "RA/s"));
        let text = r.to_string();
        for want in [
            "load (teredo, phase rs)",
            "rs storm (best trial, 2):",
            "received     350.0 RA/s",
            "received 400 (200.0 RA/s",
            "highest rate with loss ≤ 0.1 %: 200 RS/s",
            "unexpected nonce 2, malformed 3",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        let back: LoadReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!((back.phase, back.rs), (r.phase.clone(), r.rs.clone()));
        // A data run and an RS storm do not merge.
        let mut a = r.clone();
        a.find_max = None;
        let mut b = super::super::fixture::example(false, true);
        b.client_offset = 100;
        let e = super::super::merge::merge(&[("a".into(), a.clone()), ("b".into(), b)], None)
            .unwrap_err();
        assert!(e.contains("phase rs"), "{e}");
        let mut a2 = a.clone();
        a2.client_offset = 100;
        let m = super::super::merge::merge(&[("a".into(), a), ("a2".into(), a2)], None).unwrap();
        assert_eq!(m.rs.map(|s| (s.unexpected, s.malformed)), Some((4, 6)));
    }

    #[test]
    fn percentiles_from_an_hdr_histogram() {
        let mut h = micros_histogram();
        assert_eq!(Percentiles::of_micros(&h), Percentiles::default());
        assert_eq!(Percentiles::of_micros(&h).line(), "-");
        for us in 1..=1000u64 {
            h.record(us).unwrap();
        }
        let p = Percentiles::of_micros(&h);
        assert_eq!(p.count, 1000);
        assert_eq!(p.min, Some(0.001));
        assert_eq!(p.max, Some(1.0));
        assert_eq!(p.p50, Some(0.5));
        assert_eq!(p.p90, Some(0.9));
        assert_eq!(p.p99, Some(0.99));
        assert_eq!(p.p99_9, Some(0.999));
        assert!((p.mean.unwrap() - 0.5005).abs() < 1e-3);
        assert_eq!(
            p.line(),
            "min/p50/p90/p99/p99.9/max = 0.001/0.500/0.900/0.990/0.999/1.000 ms"
        );
    }
}
