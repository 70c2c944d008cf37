//! Results of a run, their summary (median [min–max] over rounds) and the table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::runner::{CellRun, Direction, TrustReport};
use crate::search::Summary;
use crate::topo::Device;

/// One device instance (started, made to trust its peers, measured in both directions,
/// stopped) in one round.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InstanceRun {
    /// Round (1-based).
    pub round: u32,
    /// Device.
    pub device: Device,
    /// Peers.
    pub peers: u32,
    /// Trust set-up (devices that bubble).
    pub trust: Option<TrustReport>,
    /// RSS of the device's processes after trust set-up (KiB).
    pub rss_kib_after_trust: u64,
    /// RSS of the device's processes after the traffic (KiB).
    pub rss_kib_end: u64,
    /// RSS of the device's largest process after the traffic (KiB).
    pub rss_kib_end_largest: u64,
    /// The cells measured.
    pub cells: Vec<(Direction, CellRun)>,
    /// What went wrong, if something did (the run goes on with the next instance).
    pub error: Option<String>,
    /// 1-minute load average when it started.
    pub load1: f64,
}

/// The summary of one (device, peers, direction) over rounds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CellSummary {
    /// Device.
    pub device: Device,
    /// Peers.
    pub peers: u32,
    /// Direction.
    pub direction: Direction,
    /// Received pps under saturation.
    pub saturation_pps: Option<Summary>,
    /// Offered load of the saturation runs (pps).
    pub saturation_offered_pps: Option<Summary>,
    /// Throughput (≤ max loss) in pps.
    pub throughput_pps: Option<Summary>,
    /// Device CPU (100 = one core) under saturation.
    pub saturation_cpu: Option<Summary>,
    /// Busy share of the device's CPU under saturation (%).
    pub saturation_relay_cpu_busy: Option<Summary>,
    /// Device CPU at the throughput rate.
    pub throughput_cpu: Option<Summary>,
    /// Received pps under an unpaced flood (first round).
    pub flood_pps: Option<Summary>,
    /// Offered pps of the flood.
    pub flood_offered_pps: Option<Summary>,
    /// CPU used by other processes during the cells (100 = one core).
    pub other_cpu: Option<Summary>,
    /// Per-round values (saturation pps, throughput pps), in round order.
    pub rounds: Vec<RoundValues>,
    /// Any round where the generator, not the device, was the limit.
    pub generator_limited: bool,
}

/// Cells grouped by (peers, direction, device), each with its round.
type Groups<'a> = BTreeMap<(u32, Direction, Device), Vec<(u32, &'a CellRun)>>;
/// One round's (round, saturation pps, throughput pps).
type RoundValues = (u32, f64, Option<f64>);

/// Groups the cells by (device, peers, direction) and summarises them.
pub fn summarise(runs: &[InstanceRun]) -> Vec<CellSummary> {
    let mut groups: Groups<'_> = BTreeMap::new();
    for r in runs {
        for (d, c) in &r.cells {
            groups
                .entry((r.peers, *d, r.device))
                .or_default()
                .push((r.round, c));
        }
    }
    groups
        .into_iter()
        .map(|((peers, direction, device), cells)| {
            let of = |f: &dyn Fn(&CellRun) -> Option<f64>| {
                Summary::of(&cells.iter().filter_map(|(_, c)| f(c)).collect::<Vec<_>>())
            };
            CellSummary {
                device,
                peers,
                direction,
                saturation_pps: of(&|c| Some(c.saturation.received_pps)),
                saturation_offered_pps: of(&|c| Some(c.saturation.offered.pps())),
                throughput_pps: of(&|c| c.throughput),
                saturation_cpu: of(&|c| Some(c.saturation.device_cpu)),
                saturation_relay_cpu_busy: of(&|c| Some(c.saturation.relay_cpu_busy)),
                throughput_cpu: of(&|c| c.throughput_cpu),
                flood_pps: of(&|c| c.flood.as_ref().map(|f| f.received_pps)),
                flood_offered_pps: of(&|c| c.flood.as_ref().map(|f| f.offered.pps())),
                other_cpu: of(&|c| Some(c.other_cpu)),
                rounds: cells
                    .iter()
                    .map(|(r, c)| (*r, c.saturation.received_pps, c.throughput))
                    .collect(),
                generator_limited: cells.iter().any(|(_, c)| c.generator_limited),
            }
        })
        .collect()
}

/// Ratio of two devices' results in one cell: the median of the per-round ratios (rounds
/// paired by number: the two devices ran back to back), or the ratio of the medians when
/// no round has both; and the per-round ratios.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ratio {
    /// Numerator device.
    pub ours: Device,
    /// Denominator device.
    pub theirs: Device,
    /// Peers.
    pub peers: u32,
    /// Direction.
    pub direction: Direction,
    /// Saturation: median ratio, and per-round ratios.
    pub saturation: Option<(f64, Vec<f64>)>,
    /// Throughput: median ratio, and per-round ratios.
    pub throughput: Option<(f64, Vec<f64>)>,
}

/// Ratios of `ours` to `theirs` in every cell both measured.
pub fn ratios(sums: &[CellSummary], ours: Device, theirs: Device) -> Vec<Ratio> {
    let mut out = Vec::new();
    for a in sums.iter().filter(|s| s.device == ours) {
        let Some(b) = sums
            .iter()
            .find(|s| s.device == theirs && s.peers == a.peers && s.direction == a.direction)
        else {
            continue;
        };
        let per_round = |f: &dyn Fn(&RoundValues) -> Option<f64>| -> Vec<f64> {
            a.rounds
                .iter()
                .filter_map(|ra| {
                    let rb = b.rounds.iter().find(|rb| rb.0 == ra.0)?;
                    let (x, y) = (f(ra)?, f(rb)?);
                    (y > 0.0).then(|| x / y)
                })
                .collect()
        };
        let med = |x: Option<Summary>, y: Option<Summary>, per: Vec<f64>| {
            if let Some(s) = Summary::of(&per) {
                return Some((s.median, per));
            }
            match (x, y) {
                (Some(x), Some(y)) if y.median > 0.0 => Some((x.median / y.median, per)),
                _ => None,
            }
        };
        out.push(Ratio {
            ours,
            theirs,
            peers: a.peers,
            direction: a.direction,
            saturation: med(
                a.saturation_pps,
                b.saturation_pps,
                per_round(&|r| Some(r.1)),
            ),
            throughput: med(a.throughput_pps, b.throughput_pps, per_round(&|r| r.2)),
        });
    }
    out
}

/// `149.6 k`-style packet rate.
pub fn kpps(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else {
        format!("{:.1} k", v / 1e3)
    }
}

/// `median [min–max]` of packet rates (just the median for one value).
pub fn kpps_summary(s: Option<Summary>) -> String {
    match s {
        None => "-".to_owned(),
        Some(s) if s.n == 1 => kpps(s.median),
        Some(s) => format!(
            "{} [{}–{}]",
            kpps(s.median),
            kpps(s.min).trim_end_matches(" k"),
            kpps(s.max)
        ),
    }
}

fn pct(s: Option<Summary>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| format!("{:.0} %", s.median))
}

fn ratio_text(r: Option<&(f64, Vec<f64>)>) -> String {
    match r {
        None => "-".to_owned(),
        Some((m, v)) if v.len() > 1 => {
            let s = Summary::of(v).expect("non-empty");
            format!("{m:.2} [{:.2}–{:.2}]", s.min, s.max)
        }
        Some((m, _)) => format!("{m:.2}"),
    }
}

/// The table: one row per device and cell, then the ratio rows.
pub fn table(sums: &[CellSummary], ratio_rows: &[Ratio]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<6} {:<4} {:<18} {:<26} {:<26} {:>8} {:>6}",
        "peers", "dir", "device", "saturation rx pps", "throughput (≤1% loss)", "dev CPU", "CPU1"
    );
    let mut keys: Vec<(u32, Direction)> = sums.iter().map(|s| (s.peers, s.direction)).collect();
    keys.dedup();
    for (peers, dir) in keys {
        for s in sums
            .iter()
            .filter(|s| s.peers == peers && s.direction == dir)
        {
            let _ = writeln!(
                t,
                "{:<6} {:<4} {:<18} {:<26} {:<26} {:>8} {:>6} {:>6}  {}{}",
                peers,
                dir.name(),
                s.device.name(),
                kpps_summary(s.saturation_pps),
                kpps_summary(s.throughput_pps),
                pct(s.saturation_cpu),
                pct(s.saturation_relay_cpu_busy),
                pct(s.other_cpu),
                match (s.flood_pps, s.flood_offered_pps) {
                    (Some(r), Some(o)) => format!("{} / {}", kpps(r.median), kpps(o.median)),
                    _ => "-".to_owned(),
                },
                if s.generator_limited {
                    "  (generator-limited)"
                } else {
                    ""
                }
            );
        }
        for r in ratio_rows
            .iter()
            .filter(|r| r.peers == peers && r.direction == dir)
        {
            let _ = writeln!(
                t,
                "{:<6} {:<4} {:<18} {:<26} {:<26}",
                peers,
                dir.name(),
                format!("{}/{}", r.ours.name(), r.theirs.name()),
                ratio_text(r.saturation.as_ref()),
                ratio_text(r.throughput.as_ref()),
            );
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::afpacket::Offered;
    use crate::runner::Step;

    fn step(pps: f64) -> Step {
        Step {
            rate: None,
            offered: Offered {
                sent: (2.0 * pps) as u64,
                secs: 1.0,
                errors: 0,
                refused: 0,
            },
            received: pps as u64,
            loss: 0.5,
            received_pps: pps,
            device_cpu: 99.0,
            relay_cpu_busy: 100.0,
            gen_cpu_busy: 100.0,
            other_cpu: 0.0,
            pass: None,
            drops: None,
        }
    }

    fn cell(sat: f64, thr: f64) -> CellRun {
        CellRun {
            flood: None,
            search_start: thr,
            steps: vec![],
            throughput: Some(thr),
            throughput_cpu: Some(90.0),
            generator_limited: false,
            generator_shortfall: false,
            saturation: step(sat),
            load1: 0.5,
            other_cpu: 0.0,
        }
    }

    fn run(round: u32, device: Device, sat: f64, thr: f64) -> InstanceRun {
        InstanceRun {
            round,
            device,
            peers: 1,
            trust: None,
            rss_kib_after_trust: 0,
            rss_kib_end: 0,
            rss_kib_end_largest: 0,
            cells: vec![(Direction::T2n, cell(sat, thr))],
            error: None,
            load1: 0.5,
        }
    }

    #[test]
    fn summaries_ratios_and_table() {
        let runs = vec![
            run(1, Device::Ours, 150e3, 140e3),
            run(1, Device::Miredo, 100e3, 100e3),
            run(2, Device::Ours, 160e3, 130e3),
            run(2, Device::Miredo, 100e3, 110e3),
            run(3, Device::Ours, 170e3, 150e3),
            run(3, Device::Miredo, 120e3, 100e3),
        ];
        let sums = summarise(&runs);
        assert_eq!(sums.len(), 2);
        let ours = sums.iter().find(|s| s.device == Device::Ours).unwrap();
        assert_eq!(ours.saturation_pps.unwrap().median, 160e3);
        assert_eq!(ours.throughput_pps.unwrap().min, 130e3);
        let r = ratios(&sums, Device::Ours, Device::Miredo);
        assert_eq!(r.len(), 1);
        let (m, per) = r[0].saturation.clone().unwrap();
        // Per-round ratios 1.5, 1.6, 1.417: median 1.5.
        assert!((m - 1.5).abs() < 1e-9, "{m}");
        assert_eq!(per.len(), 3);
        assert!((per[2] - 170.0 / 120.0).abs() < 1e-9);
        let t = table(&sums, &r);
        assert!(t.contains("160.0 k [150.0–170.0 k]"), "{t}");
        assert!(t.contains("ours/miredo"), "{t}");
        assert!(t.contains("1.50 [1.42–1.60]"), "{t}");
    }

    #[test]
    fn rates() {
        assert_eq!(kpps(149_600.0), "149.6 k");
        assert_eq!(kpps(1_250_000.0), "1.25 M");
        assert_eq!(kpps_summary(None), "-");
    }
}
