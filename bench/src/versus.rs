//! `versus`' results: one row per `client-sim load` run (a step), and the side-by-side
//! markdown table — ours / Miredo / ratio — of the server's RS storm and of the relay's
//! Teredo data, with what limited the failed trials (the generator or the device).

use std::fmt::Write as _;

use crate::clientsim::{LoadRun, Trial};
use crate::report::kpps_summary;
use crate::search::Summary;
use crate::topo::Device;

/// What a step measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Part {
    /// The server's router solicitations → advertisements.
    Server,
    /// ICMPv6 echo through the relay from this many Teredo clients.
    Relay(u32),
}

impl Part {
    /// `server`, `relay 100 clients`.
    pub fn name(self) -> String {
        match self {
            Self::Server => "server".to_owned(),
            Self::Relay(1) => "relay, 1 client".to_owned(),
            Self::Relay(n) => format!("relay, {n} clients"),
        }
    }

    /// What is offered and what comes back: `(RS/s, RA/s)` or `(echo/s, echo/s)`.
    fn units(self) -> (&'static str, &'static str) {
        match self {
            Self::Server => ("RS/s", "RA/s"),
            Self::Relay(_) => ("echo req/s", "echo replies/s"),
        }
    }
}

/// The kind of step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// `--find-max`: the highest rate with at most the loss threshold.
    FindMax,
    /// One trial far above what the device takes.
    Saturation,
    /// One trial at a fixed rate, for the RTT percentiles.
    Fixed,
}

/// One `client-sim load` run against one device.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Step {
    /// Round (from 1).
    pub round: u32,
    /// Device under test.
    pub device: Device,
    /// Server or relay (with its client count).
    pub part: Part,
    /// What it measured.
    pub kind: StepKind,
    /// The rate asked for (the first trial's with `FindMax`), per second.
    pub rate: f64,
    /// client-sim's figures (absent when the run failed).
    pub run: Option<LoadRun>,
    /// CPU of the device's processes over the whole client-sim run (start-up,
    /// qualification and warm-up included), percent of one core.
    pub device_cpu: f64,
    /// 1-minute load average before and after the run.
    pub load_before: f64,
    /// After.
    pub load_after: f64,
    /// How long the run took, seconds.
    pub secs: f64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl Step {
    /// The highest rate within the loss threshold (`FindMax`).
    pub fn throughput(&self) -> Option<f64> {
        self.run.as_ref()?.find_max.as_ref()?.best_rate
    }

    /// The one trial of a fixed-rate run, or the best trial of a search.
    pub fn trial(&self) -> Option<&Trial> {
        self.run.as_ref()?.data.as_ref()
    }

    /// `generator` or `device`, for a run with a failed trial.
    pub fn limited_by(&self) -> Option<&str> {
        self.run.as_ref()?.limited_by()
    }

    /// One progress line.
    pub fn line(&self) -> String {
        let head = format!(
            "round {} {:<6} {:<18} {:<10} {:>9}/s",
            self.round,
            self.device.name(),
            self.part.name(),
            match self.kind {
                StepKind::FindMax => "find-max",
                StepKind::Saturation => "saturation",
                StepKind::Fixed => "fixed",
            },
            format!("{:.0}", self.rate)
        );
        if let Some(e) = &self.error {
            return format!("{head}: FAILED: {e}");
        }
        let t = self.trial().cloned().unwrap_or_default();
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.0}", v * 1e3));
        let qualified = self
            .run
            .as_ref()
            .and_then(|r| r.qualify.as_ref())
            .map_or(String::new(), |q| {
                format!("qualified {}/{}; ", q.qualified, q.clients)
            });
        format!(
            "{head}: {qualified}{}offered {:.0}, sent {:.0}, answered {:.0}/s, loss {:.2} %, rtt \
             p50/p99/p99.9 {}/{}/{} µs; device CPU {:.0} %; limited by {}; load {:.2} → {:.2}",
            self.throughput()
                .map_or(String::new(), |b| format!("best {b:.0}/s; ")),
            t.offered_pps,
            t.sent_pps,
            t.received_pps,
            t.loss_percent,
            ms(t.rtt_ms.p50),
            ms(t.rtt_ms.p99),
            ms(t.rtt_ms.p99_9),
            self.device_cpu,
            self.limited_by().unwrap_or("-"),
            self.load_before,
            self.load_after
        )
    }
}

/// Per-round values of one figure for one device: `(round, value)`.
fn values(
    steps: &[Step],
    device: Device,
    part: Part,
    pick: &dyn Fn(&Step) -> Option<f64>,
) -> Vec<(u32, f64)> {
    steps
        .iter()
        .filter(|s| s.device == device && s.part == part && s.error.is_none())
        .filter_map(|s| pick(s).map(|v| (s.round, v)))
        .collect()
}

fn summary(v: &[(u32, f64)]) -> Option<Summary> {
    Summary::of(&v.iter().map(|x| x.1).collect::<Vec<_>>())
}

/// The median of the per-round ratios `a / b` (rounds where both have a value).
fn ratio(a: &[(u32, f64)], b: &[(u32, f64)]) -> Option<Summary> {
    let per: Vec<f64> = a
        .iter()
        .filter_map(|(r, x)| {
            let (_, y) = b.iter().find(|(rb, _)| rb == r)?;
            (*y > 0.0).then(|| x / y)
        })
        .collect();
    Summary::of(&per)
}

fn ratio_text(s: Option<Summary>) -> String {
    match s {
        None => "-".to_owned(),
        Some(s) if s.n == 1 => format!("{:.2}", s.median),
        Some(s) => format!("{:.2} [{:.2}–{:.2}]", s.median, s.min, s.max),
    }
}

fn us_text(s: Option<Summary>) -> String {
    match s {
        None => "-".to_owned(),
        Some(s) if s.n == 1 => format!("{:.0}", s.median),
        Some(s) => format!("{:.0} [{:.0}–{:.0}]", s.median, s.min, s.max),
    }
}

/// How the failed runs of `device` in `part` were limited: `device 3, generator 1`, or
/// `no trial failed`.
fn limits(steps: &[Step], device: Device, part: Part) -> String {
    let mut dev = 0;
    let mut gen = 0;
    let mut other = 0;
    for s in steps
        .iter()
        .filter(|s| s.device == device && s.part == part)
    {
        match s.limited_by() {
            Some("device") => dev += 1,
            Some("generator") => gen += 1,
            Some(_) => other += 1,
            None => {}
        }
    }
    if dev + gen + other == 0 {
        return "no trial failed".to_owned();
    }
    let mut t = format!("device {dev}, generator {gen}");
    if other > 0 {
        let _ = write!(t, ", unsaid {other}");
    }
    t
}

/// The distinct fixed rates of `part`, ascending.
fn fixed_rates(steps: &[Step], part: Part) -> Vec<f64> {
    let mut r: Vec<f64> = steps
        .iter()
        .filter(|s| s.part == part && s.kind == StepKind::Fixed)
        .map(|s| s.rate)
        .collect();
    r.sort_by(f64::total_cmp);
    r.dedup();
    r
}

/// The trial of a fixed-rate step at `rate`.
fn fixed_at(s: &Step, rate: f64) -> Option<&Trial> {
    if s.kind == StepKind::Fixed && s.rate == rate {
        s.trial()
    } else {
        None
    }
}

/// One row: `figure` for both devices (rates, or microseconds) and their ratio.
fn row_text(
    steps: &[Step],
    (ours, theirs): (Device, Device),
    part: Part,
    figure: &str,
    pick: &dyn Fn(&Step) -> Option<f64>,
    rate: bool,
) -> String {
    let a = values(steps, ours, part, pick);
    let b = values(steps, theirs, part, pick);
    let fmt = |v: &[(u32, f64)]| {
        if rate {
            kpps_summary(summary(v))
        } else {
            us_text(summary(v))
        }
    };
    format!(
        "| {} | {figure} | {} | {} | {} |\n",
        part.name(),
        fmt(&a),
        fmt(&b),
        ratio_text(ratio(&a, &b))
    )
}

/// The markdown table: for each part, saturation, throughput, RTT percentiles at each
/// fixed rate (and their loss), and what limited the failed trials; columns `ours`,
/// `theirs`, and the median of the per-round ratios ours/theirs (for latencies, below 1 is
/// better for ours). Values are median [min–max] over the rounds.
pub fn table(steps: &[Step], ours: Device, theirs: Device) -> String {
    let mut parts: Vec<Part> = steps.iter().map(|s| s.part).collect();
    parts.sort();
    parts.dedup();
    let devs = (ours, theirs);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| part | figure | {} | {} | ratio |",
        ours.name(),
        theirs.name()
    );
    let _ = writeln!(t, "|---|---|---|---|---|");
    for part in parts {
        let (offered, answered) = part.units();
        let is = |s: &Step, k: StepKind| s.kind == k;
        t.push_str(&row_text(
            steps,
            devs,
            part,
            &format!("saturation, {answered}"),
            &|s| is(s, StepKind::Saturation).then(|| s.trial().map(|t| t.received_pps))?,
            true,
        ));
        // What was offered differs by design (twice each device's own throughput): no
        // ratio.
        let offered_at = |d: Device| {
            kpps_summary(summary(&values(steps, d, part, &|s| {
                is(s, StepKind::Saturation).then(|| s.trial().map(|t| t.offered_pps))?
            })))
        };
        let _ = writeln!(
            t,
            "| {} | saturation: offered, {offered} | {} | {} | |",
            part.name(),
            offered_at(ours),
            offered_at(theirs)
        );
        t.push_str(&row_text(
            steps,
            devs,
            part,
            "saturation: device CPU, % of a core (whole client-sim run)",
            &|s| is(s, StepKind::Saturation).then_some(s.device_cpu),
            false,
        ));
        t.push_str(&row_text(
            steps,
            devs,
            part,
            &format!("throughput (≤ loss threshold), {offered}"),
            &|s| is(s, StepKind::FindMax).then(|| s.throughput())?,
            true,
        ));
        for rate in fixed_rates(steps, part) {
            let k = kpps_summary(Summary::of(&[rate]));
            for (name, f) in [
                (
                    "p50",
                    (|t: &Trial| t.rtt_ms.p50) as fn(&Trial) -> Option<f64>,
                ),
                ("p99", |t: &Trial| t.rtt_ms.p99),
                ("p99.9", |t: &Trial| t.rtt_ms.p99_9),
            ] {
                t.push_str(&row_text(
                    steps,
                    devs,
                    part,
                    &format!("RTT {name} at {k} {offered}, µs"),
                    &|s| fixed_at(s, rate).and_then(f).map(|ms| ms * 1e3),
                    false,
                ));
            }
            let pct = |d: Device| {
                summary(&values(steps, d, part, &|s| {
                    fixed_at(s, rate).map(|t| t.loss_percent)
                }))
                .map_or("-".to_owned(), |s| format!("{:.2} %", s.median))
            };
            let _ = writeln!(
                t,
                "| {} | loss at {k} {offered} | {} | {} | |",
                part.name(),
                pct(ours),
                pct(theirs)
            );
        }
        let _ = writeln!(
            t,
            "| {} | failed runs limited by | {} | {} | |",
            part.name(),
            limits(steps, ours, part),
            limits(steps, theirs, part)
        );
    }
    t
}

/// One sentence on whether the generator was faster than the devices: every failed run
/// names its limit.
pub fn generator_verdict(steps: &[Step]) -> String {
    let failed: Vec<&str> = steps.iter().filter_map(Step::limited_by).collect();
    let gen = failed.iter().filter(|l| **l == "generator").count();
    if failed.is_empty() {
        "no trial failed: no run reached either side's limit (raise --*-max-rate)".to_owned()
    } else if gen == 0 {
        format!(
            "the generator was faster than the devices: all {} runs with a failed trial were \
             limited by the device",
            failed.len()
        )
    } else {
        format!(
            "the generator was NOT always faster than the device: {gen} of {} runs with a failed \
             trial were limited by the generator (those figures are the generator's)",
            failed.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clientsim::{Engine, FindMax, Rtt};

    fn trial(offered: f64, received: f64, p99_ms: f64) -> Trial {
        Trial {
            offered_pps: offered,
            sent_pps: offered,
            received_pps: received,
            loss_percent: 100.0 * (1.0 - received / offered),
            passed: received >= 0.99 * offered,
            rtt_ms: Rtt {
                count: 10,
                p50: Some(p99_ms / 10.0),
                p99: Some(p99_ms),
                p99_9: Some(p99_ms * 2.0),
            },
            ..Trial::default()
        }
    }

    fn step(round: u32, device: Device, kind: StepKind, rate: f64, run: LoadRun) -> Step {
        Step {
            round,
            device,
            part: Part::Server,
            kind,
            rate,
            run: Some(run),
            device_cpu: 90.0,
            load_before: 0.5,
            load_after: 0.6,
            secs: 3.0,
            error: None,
        }
    }

    fn runs(round: u32, device: Device, capacity: f64, limit: &str) -> Vec<Step> {
        let engine = Some(Engine {
            name: "mmsg".to_owned(),
            limit: Some(format!("{limit}: something")),
        });
        vec![
            step(
                round,
                device,
                StepKind::FindMax,
                10e3,
                LoadRun {
                    find_max: Some(FindMax {
                        best_rate: Some(capacity),
                        trials: vec![],
                    }),
                    engine: engine.clone(),
                    ..LoadRun::default()
                },
            ),
            step(
                round,
                device,
                StepKind::Saturation,
                2.0 * capacity,
                LoadRun {
                    data: Some(trial(2.0 * capacity, capacity, 5.0)),
                    engine,
                    ..LoadRun::default()
                },
            ),
            step(
                round,
                device,
                StepKind::Fixed,
                50e3,
                LoadRun {
                    data: Some(trial(50e3, 50e3, capacity / 1e5)),
                    ..LoadRun::default()
                },
            ),
        ]
    }

    #[test]
    fn side_by_side_table() {
        let mut steps = runs(1, Device::Ours, 200e3, "device");
        steps.extend(runs(1, Device::Miredo, 100e3, "device"));
        steps.extend(runs(2, Device::Miredo, 80e3, "device"));
        steps.extend(runs(2, Device::Ours, 240e3, "generator"));
        let t = table(&steps, Device::Ours, Device::Miredo);
        assert!(
            t.starts_with("| part | figure | ours | miredo | ratio |"),
            "{t}"
        );
        // Saturation received: ours 200 k and 240 k, Miredo 100 k and 80 k; per-round
        // ratios 2.0 and 3.0.
        assert!(
            t.contains("| server | saturation, RA/s | 220.0 k [200.0–240.0 k] | 90.0 k [80.0–100.0 k] | 2.50 [2.00–3.00] |"),
            "{t}"
        );
        assert!(
            t.contains("| server | throughput (≤ loss threshold), RS/s | 220.0 k"),
            "{t}"
        );
        // p99 at 50 k: capacity / 1e5 ms = 2.0 / 2.4 ms (ours), 1.0 / 0.8 ms (Miredo).
        assert!(
            t.contains("| server | RTT p99 at 50.0 k RS/s, µs | 2200 [2000–2400] | 900 [800–1000] | 2.50 [2.00–3.00] |"),
            "{t}"
        );
        assert!(
            t.contains("| server | loss at 50.0 k RS/s | 0.00 % | 0.00 % | |"),
            "{t}"
        );
        assert!(
            t.contains("| server | failed runs limited by | device 2, generator 2 | device 4, generator 0 | |"),
            "{t}"
        );
        assert!(generator_verdict(&steps).contains("NOT always faster than the device: 2 of 8"));
        let only_device: Vec<Step> = runs(1, Device::Ours, 1e3, "device");
        assert!(generator_verdict(&only_device).starts_with("the generator was faster"));
    }

    #[test]
    fn failed_steps_are_left_out_and_parts_named() {
        let mut steps = runs(1, Device::Ours, 200e3, "device");
        for s in &mut steps {
            s.part = Part::Relay(100);
        }
        steps[1].error = Some("boom".to_owned());
        let t = table(&steps, Device::Ours, Device::Miredo);
        assert!(
            t.contains("| relay, 100 clients | saturation, echo replies/s | - | - | - |"),
            "{t}"
        );
        assert!(t.contains("| relay, 100 clients | throughput (≤ loss threshold), echo req/s | 200.0 k | - | - |"), "{t}");
        assert!(steps[1].line().contains("FAILED: boom"));
        assert_eq!(Part::Relay(1).name(), "relay, 1 client");
    }
}
