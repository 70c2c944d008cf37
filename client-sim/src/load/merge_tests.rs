//! Tests of `load-report`: merged totals are the sums, merged percentiles are those of the
//! union of the samples, and what cannot be merged is refused in one line.

use super::*;
use crate::load::fixture::example;

/// A fixed-rate report of `clients` clients from `first`, with `rtts` (µs) as its answers,
/// `lost` of `sent` lost, qualification latencies `q_us`.
fn generator(
    replica: u32,
    clients: u64,
    sent: u64,
    lost: u64,
    rtts: &[u64],
    q_us: &[u64],
    start: f64,
) -> LoadReport {
    let mut r = example(false, true);
    r.replica = Some(replica);
    r.clients = clients;
    r.client_offset = u64::from(replica - 1) * clients;
    r.started_unix_s = start;
    r.finished_unix_s = start + 20.0;
    let mut h = micros_histogram();
    for us in rtts {
        h.record(*us).unwrap();
    }
    let mut qh = micros_histogram();
    for us in q_us {
        qh.record(*us).unwrap();
    }
    let q = r.qualify.as_mut().unwrap();
    q.clients = clients;
    q.qualified = clients - 1;
    q.results.insert("qualified", clients - 1);
    q.results.insert("timeout", 1);
    q.latency_ms = Percentiles::of_micros(&qh);
    let d = r.data.as_mut().unwrap();
    d.senders = clients - 1;
    d.sent = sent;
    d.received = sent - lost;
    d.lost = lost;
    d.sent_pps = sent as f64 / 10.0;
    d.received_pps = (sent - lost) as f64 / 10.0;
    d.offered_pps = sent as f64 / 10.0;
    d.duplicates = 1;
    d.late = 2;
    d.loss_percent = loss_percent(sent, sent - lost);
    d.passed = lost == 0;
    d.rtt_ms = Percentiles::of_micros(&h);
    r.exit_code = if lost == 0 { 0 } else { EXIT_LOSS };
    r
}

fn via_json(r: &LoadReport) -> LoadReport {
    serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap()
}

#[test]
fn two_reports_merge_into_one_runs_totals_and_union_percentiles() {
    let a_rtts: Vec<u64> = (1..=900).map(|i| 300 + i * 7).collect();
    let b_rtts: Vec<u64> = (1..=100).map(|i| 20_000 + i * 911).collect();
    let a = generator(1, 100, 900, 0, &a_rtts, &[1000, 2000, 3000], 1000.0);
    let b = generator(2, 100, 100, 0, &b_rtts, &[50_000], 1005.0);
    // Through JSON, as the files are.
    let inputs = vec![
        ("a.json".to_owned(), via_json(&a)),
        ("b.json".to_owned(), via_json(&b)),
    ];
    let m = merge(&inputs, None).unwrap();

    // The one run that both are: every sample in one histogram.
    let mut union = micros_histogram();
    for us in a_rtts.iter().chain(&b_rtts) {
        union.record(*us).unwrap();
    }
    let d = m.data.as_ref().unwrap();
    assert_eq!((d.sent, d.received, d.lost), (1000, 1000, 0));
    assert_eq!((d.duplicates, d.late, d.senders), (2, 4, 198));
    assert_eq!(d.rtt_ms, Percentiles::of_micros(&union));
    // Not the average of the two medians: the union's.
    let avg = (a.data.as_ref().unwrap().rtt_ms.p99.unwrap()
        + b.data.as_ref().unwrap().rtt_ms.p99.unwrap())
        / 2.0;
    assert_ne!(d.rtt_ms.p99, Some(avg));
    assert!((d.sent_pps - 100.0).abs() < 1e-9);
    assert!(d.passed);
    let q = m.qualify.as_ref().unwrap();
    assert_eq!((q.clients, q.qualified), (200, 198));
    assert_eq!(q.results["timeout"], 2);
    assert_eq!(q.latency_ms.count, 4);
    let mut q_union = micros_histogram();
    for us in [1000, 2000, 3000, 50_000] {
        q_union.record(us).unwrap();
    }
    assert_eq!(q.latency_ms, Percentiles::of_micros(&q_union));
    // The union of the spans, and each generator's line.
    assert_eq!((m.started_unix_s, m.finished_unix_s), (1000.0, 1025.0));
    assert!((m.elapsed_s - 25.0).abs() < 1e-9);
    assert_eq!(m.clients, 200);
    assert_eq!(m.generators.len(), 2);
    assert_eq!(m.exit_code, 0);
    let text = m.to_string();
    assert!(text.contains("merged: 2 generators"), "{text}");
    assert!(text.contains("clients 0..199"), "{text}");
    assert!(text.contains("  replica 1  clients 0..99 seed 7 qualified 99/100 sent 900 received 900 lost 0 (0.000 %)"), "{text}");
    assert!(text.contains("  replica 2  clients 100..199"), "{text}");
    assert!(text.contains("lost/total 0/1000"), "{text}");

    // The merged report is a report: merging it with a third equals merging all three.
    let c = generator(3, 100, 50, 5, &[700, 800], &[1500], 990.0);
    let again = merge(
        &[
            ("m.json".to_owned(), via_json(&m)),
            ("c.json".to_owned(), via_json(&c)),
        ],
        None,
    )
    .unwrap();
    let flat = merge(
        &[
            ("a.json".to_owned(), a.clone()),
            ("b.json".to_owned(), b.clone()),
            ("c.json".to_owned(), c),
        ],
        None,
    )
    .unwrap();
    assert_eq!(
        again.data.as_ref().unwrap().rtt_ms,
        flat.data.as_ref().unwrap().rtt_ms
    );
    assert_eq!(again.generators, flat.generators);
    let d = flat.data.unwrap();
    assert_eq!((d.sent, d.lost), (1050, 5));
    assert!(!d.passed);
    assert_eq!(flat.exit_code, EXIT_LOSS);
    assert_eq!(flat.started_unix_s, 990.0);
}

#[test]
fn what_cannot_be_merged_is_refused_in_one_line() {
    let a = generator(1, 10, 10, 0, &[100], &[100], 0.0);
    let one = |e: String| {
        assert!(!e.contains('\n'), "{e}");
        e
    };
    // The same run twice.
    let e = one(merge(&[("a".into(), a.clone()), ("a2".into(), a.clone())], None).unwrap_err());
    assert!(e.contains("simulate the same clients"), "{e}");
    // Another packet size.
    let mut b = generator(2, 10, 10, 0, &[100], &[100], 0.0);
    b.size = 200;
    let e = one(merge(&[("a".into(), a.clone()), ("b".into(), b)], None).unwrap_err());
    assert!(e.contains("200 B"), "{e}");
    // A find-max search.
    let e = one(merge(&[("f".into(), example(true, true))], None).unwrap_err());
    assert!(e.contains("--find-max"), "{e}");
    // Samples without a histogram.
    let mut c = generator(3, 10, 10, 0, &[100], &[100], 0.0);
    c.data.as_mut().unwrap().rtt_ms.histogram = None;
    let e = one(merge(&[("c".into(), c)], None).unwrap_err());
    assert!(e.contains("c: RTT has 1 samples but no histogram"), "{e}");
    // Disagreeing thresholds, unless one is given.
    let mut d = generator(4, 10, 10, 0, &[100], &[100], 0.0);
    d.loss_threshold_percent = 1.0;
    let e = one(merge(&[("a".into(), a.clone()), ("d".into(), d.clone())], None).unwrap_err());
    assert!(e.contains("--loss-threshold"), "{e}");
    assert!(merge(&[("a".into(), a), ("d".into(), d)], Some(1.0)).is_ok());
}

#[test]
fn files_of_another_schema_or_shape_name_the_file() {
    let dir = std::env::temp_dir().join(format!("load-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let mut v = serde_json::to_value(generator(1, 10, 10, 0, &[100], &[100], 0.0)).unwrap();
    let good = write("good.json", &v.to_string());
    assert_eq!(read_report(&good).unwrap().clients, 10);
    v["schema_version"] = 1.into();
    let old = write("old.json", &v.to_string());
    let e = read_report(&old).unwrap_err().to_string();
    assert!(e.contains("old.json: load report schema version 1"), "{e}");
    v.as_object_mut().unwrap().remove("schema_version");
    let e = read_report(&write("none.json", &v.to_string()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("none.json: no schema_version"), "{e}");
    let e = read_report(&write("bad.json", "{"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.json: not JSON"), "{e}");
    v["schema_version"] = SCHEMA_VERSION.into();
    v["mode"] = "warp".into();
    let e = read_report(&write("mode.json", &v.to_string()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mode.json: not a load report") && !e.contains('\n'),
        "{e}"
    );
    let e = read_report(&dir.join("missing.json")).unwrap_err();
    assert!(format!("{e:#}").contains("cannot read"), "{e:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn merged_renderings_list_every_generator() {
    let a = generator(1, 10, 10, 0, &[100], &[100], 0.0);
    let b = generator(2, 10, 10, 1, &[100], &[100], 0.0);
    let m = merge(&[("a.json".into(), a), ("b.json".into(), b)], Some(20.0)).unwrap();
    // The totals pass 20 %, but replica 2 failed its own threshold.
    assert!(m.data.as_ref().unwrap().passed);
    assert_eq!(m.exit_code, EXIT_LOSS);
    let xml = crate::load::junit::junit(&m).unwrap();
    assert!(
        xml.contains("name=\"replica 1 (a.json): exit status 0\""),
        "{xml}"
    );
    assert!(xml.contains("<failure message=\"exit status 4\""), "{xml}");
    let page = crate::load::html::page(&m);
    assert!(page.contains("<table id=\"generators\">"));
    assert_eq!(page.matches("<tr><td>").count(), 2, "{page}");
    assert!(page.contains("<td>10..19</td>"));
}
