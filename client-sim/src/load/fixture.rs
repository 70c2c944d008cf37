//! A report as a Teredo `--find-max` run would write it, for the tests of its renderings
//! (`--html`, `--junit`).

use std::collections::BTreeMap;

use super::report::{
    loss_percent, mbit_per_s, micros_histogram, DataSummary, FindMaxSummary, LoadReport,
    Percentiles, QualifySummary,
};
use super::timeline::{Reading, Timeline};

/// A report as a Teredo run would write it, for the tests of its renderings.
pub(crate) fn example(find_max: bool, all_qualified: bool) -> LoadReport {
    let mut h = micros_histogram();
    for us in [800, 900, 1000, 1200, 5000] {
        h.record(us).unwrap();
    }
    let trial = |no: u32, rate: f64, received: u64| DataSummary {
        trial: no,
        senders: 10,
        offered_pps: rate,
        offered_mbit_s: mbit_per_s(rate, 148),
        sent: rate as u64 * 2,
        sent_pps: rate,
        sent_mbit_s: mbit_per_s(rate, 148),
        received,
        received_pps: received as f64 / 2.0,
        received_mbit_s: 0.0,
        lost: (rate as u64 * 2).saturating_sub(received),
        loss_percent: loss_percent(rate as u64 * 2, received),
        duplicates: 0,
        out_of_order: 0,
        send_errors: 0,
        late: 0,
        duration_s: 2.0,
        rtt_ms: Percentiles::of_micros(&h),
        jitter_ms: Some(0.1),
        passed: received == rate as u64 * 2,
    };
    let mut timeline = Timeline::default();
    for t in 1..=6u64 {
        let (sent, trial_no) = if t > 2 { ((t - 2) * 200, 1) } else { (0, 0) };
        let reading = Reading {
            t_s: t as f64,
            sent,
            received: sent,
            qualified: t.min(2) * 5,
            nat_mappings: 10,
            offered_pps: if trial_no > 0 { 200.0 } else { 0.0 },
            trial: trial_no,
        };
        timeline.record(reading, &h);
    }
    let trials = vec![
        trial(1, 100.0, 200),
        trial(2, 200.0, 400),
        trial(3, 400.0, 700),
    ];
    for t in &trials {
        timeline.trial_done(t.trial, t.offered_pps, t.passed, &h);
    }
    let qualified = if all_qualified { 10 } else { 8 };
    let mut results = BTreeMap::new();
    results.insert("qualified", qualified);
    results.insert("timeout", 10 - qualified);
    LoadReport {
        schema_version: super::report::SCHEMA_VERSION,
        mode: "teredo",
        target: "ICMPv6 echo 2001:db8::99".to_owned(),
        clients: 10,
        profile: Some("vista".to_owned()),
        nat: "port-restricted".to_owned(),
        size: 100,
        packet_bytes: 148,
        seed: 7,
        replica: None,
        client_offset: 0,
        started_unix_s: 1_700_000_000.0,
        finished_unix_s: 1_700_000_006.0,
        qualify: Some(QualifySummary {
            clients: 10,
            qualified,
            success_percent: qualified as f64 * 10.0,
            results,
            offered_rate: 10.0,
            achieved_rate: 10.0,
            qualified_rate: 5.0,
            duration_s: 2.0,
            latency_ms: Percentiles::of_micros(&h),
        }),
        warmup_failed: Some(0),
        data: Some(trials[1].clone()),
        find_max: find_max.then(|| FindMaxSummary {
            loss_threshold_percent: 0.1,
            max_rate: 1000.0,
            best_rate: Some(200.0),
            trials: trials.clone(),
        }),
        elapsed_s: 6.0,
        peak_rss_bytes: None,
        exit_code: if all_qualified { 0 } else { 3 },
        loss_threshold_percent: if find_max { 0.1 } else { 0.0 },
        generators: Vec::new(),
        timeline,
        scraped: Vec::new(),
        engine: Some(super::report::EngineSummary::new(
            super::engine::Engine::Tokio,
            (None, false),
            None,
            None,
            Some(25),
            10,
            None,
        )),
        phase: Some("all".to_owned()),
        rs: None,
    }
}
