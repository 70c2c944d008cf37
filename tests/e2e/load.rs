//! `client-sim load`, the load generator, end to end:
//!
//! * `ceiling`: `--ceiling` on loopback (no root): plain UDP against the in-process echo,
//!   every packet answered, the report's figures consistent.
//! * `qualify_storm`: 2000 clients qualifying against `teredo-server` in a namespace (the
//!   server refuses non-global sources such as 127.0.0.1, so the documentation addresses
//!   live on the namespace's `lo`): every client qualified, /metrics agrees.
//! * `data_through_relay`: the relay topology (`RelayTopology`: our server, our relay with
//!   a TUN, a native IPv6 host whose kernel answers ICMPv6 echo) and 1000 clients on the
//!   Internet segment qualifying, warming up through the relay, then a paced trial: no
//!   loss, RTT figures present, and the load generator's /metrics consistent with its report.
//! * `rs_storm`: `--phase rs` against `teredo-server` in a namespace at a modest fixed rate:
//!   every RS answered by an RA (no loss), as many answers as the server's own count of RAs
//!   sent, RTT percentiles present, nothing unexpected or malformed.
//! * `rs_storm_ceiling`: `--phase rs --ceiling` on loopback (no root): every RS echoed and
//!   taken as its answer.

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::Value;
use teredo_tests::bins::bin_path;
use teredo_tests::inproc::metric_value;
use teredo_tests::metrics::sum_all;
use teredo_tests::netns::Netns;
use teredo_tests::process::{tail, TestDir};
use teredo_tests::relay::{RelayTopology, NATIVE_HOST};
use teredo_tests::topo::{INTERNET_PREFIX_LEN, PUBLIC_CLIENT, SERVER_PRIMARY};
use teredo_tests::wait::wait_for;
use teredo_tests::{check, function_name, require_root};

/// Where the load generator serves its metrics (inside the client's namespace).
const METRICS: SocketAddrV4 = SocketAddrV4::new(PUBLIC_CLIENT, 9300);

/// Runs `client-sim load ARGS --json FILE` (plus `--metrics-addr` and a linger when
/// `ns` is given), waits for the report and, while the process still serves /metrics,
/// scrapes them. Returns (report, metrics text, exit status).
fn run_load(
    dir: &TestDir,
    ns: Option<&Netns>,
    args: &[&str],
    timeout: Duration,
) -> Result<(Value, String, Option<i32>)> {
    let bin = bin_path("client-sim")?;
    let json = dir.join("load.json");
    let json_s = json.to_str().context("non-UTF-8 path")?.to_owned();
    let metrics = METRICS.to_string();
    let mut all: Vec<&str> = vec!["load", "--json", &json_s, "--quiet"];
    all.extend_from_slice(args);
    if ns.is_some() {
        all.extend_from_slice(&["--metrics-addr", &metrics, "--metrics-linger", "60s"]);
    }
    let bin_s = bin.to_str().context("non-UTF-8 binary path")?;
    let mut proc = match ns {
        Some(ns) => ns.spawn("client-sim-load", dir.path(), bin_s, &all)?,
        None => {
            let mut cmd = std::process::Command::new(bin_s);
            cmd.args(&all);
            teredo_tests::process::Proc::spawn(cmd, "client-sim-load", dir.path())?
        }
    };
    let (report, _) = wait_for("the load report", timeout, || {
        if let Some(status) = proc.try_status()? {
            // Finished (no linger without a namespace): the report must be there.
            let text = std::fs::read_to_string(&json).with_context(|| {
                format!(
                    "client-sim load exited with {status} without a report:\n{}",
                    tail(&proc.stderr(), 30)
                )
            })?;
            return Ok(Some(text));
        }
        Ok(std::fs::read_to_string(&json)
            .ok()
            .filter(|t| t.trim_end().ends_with('}')))
    })?;
    let report: Value = serde_json::from_str(&report).context("parse the JSON report")?;
    let text = match ns {
        Some(ns) => scrape(ns)?,
        None => String::new(),
    };
    let status = match ns {
        Some(_) => {
            proc.stop()?;
            None
        }
        None => {
            let (s, _) = wait_for("client-sim load to exit", Duration::from_secs(10), || {
                proc.try_status()
            })?;
            s.code()
        }
    };
    Ok((report, text, status))
}

/// The load generator's /metrics page.
fn scrape(ns: &Netns) -> Result<String> {
    teredo_tests::metrics::fetch_in(ns, METRICS.into())
}

fn metric(text: &str, series: &str) -> f64 {
    metric_value(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

fn num(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {path} in {v:#}"))
}

/// The RTT percentiles are all there and ordered.
fn assert_rtt(v: &Value, at: &str) {
    let p: Vec<f64> = ["min", "p50", "p90", "p99", "p99_9", "max"]
        .iter()
        .map(|k| num(v, &format!("{at}/{k}")))
        .collect();
    assert!(p[0] > 0.0, "min RTT {p:?}");
    assert!(p.windows(2).all(|w| w[0] <= w[1]), "unordered RTTs {p:?}");
}

#[test]
fn ceiling() {
    let test = function_name!();
    let dir = check(TestDir::new(test));
    let (r, _, status) = check(run_load(
        &dir,
        None,
        &[
            "--ceiling",
            "--clients",
            "20",
            "--rate",
            "2000",
            "--duration",
            "2s",
            "--drain",
            "1s",
        ],
        Duration::from_secs(60),
    ));
    assert_eq!(status, Some(0), "{r:#}");
    assert_eq!(r["mode"], "ceiling");
    assert_eq!(num(&r, "/exit_code"), 0.0);
    let sent = num(&r, "/data/sent");
    assert!(sent > 0.0, "{r:#}");
    assert_eq!(num(&r, "/data/received"), sent, "{r:#}");
    assert_eq!(num(&r, "/data/lost"), 0.0);
    assert_eq!(num(&r, "/data/duplicates"), 0.0);
    assert_eq!(num(&r, "/data/rtt_ms/count"), sent);
    assert_rtt(&r, "/data/rtt_ms");
    assert_eq!(num(&r, "/data/senders"), 20.0);
}

#[test]
fn qualify_storm() {
    require_root!();
    let test = function_name!();
    let dir = check(TestDir::new(test));
    let ns = check(Netns::new(test, "storm"));
    check(ns.link_up("lo"));
    for a in ["198.51.100.1/32", "198.51.100.2/32", "198.51.100.10/32"] {
        check(ns.add_addr("lo", a));
    }
    let bin = check(bin_path("teredo-server"));
    let mut server = check(ns.spawn(
        "teredo-server",
        dir.path(),
        bin.to_str().expect("UTF-8 path"),
        &["--primary", "198.51.100.1", "--native", "none"],
    ));
    check(teredo_tests::miredo::wait_udp_bound(
        &ns,
        &mut server,
        &[SERVER_PRIMARY, std::net::Ipv4Addr::new(198, 51, 100, 2)],
        3544,
    ));
    let (r, m, _) = check(run_load(
        &dir,
        Some(&ns),
        &[
            "--server",
            "198.51.100.1",
            "--bind",
            "198.51.100.10",
            "--clients",
            "2000",
            "--qualify-rate",
            "2000",
            "--phase",
            "qualify",
        ],
        Duration::from_secs(120),
    ));
    assert_eq!(num(&r, "/exit_code"), 0.0, "{r:#}");
    assert_eq!(num(&r, "/qualify/clients"), 2000.0);
    assert_eq!(num(&r, "/qualify/qualified"), 2000.0, "{r:#}");
    assert_eq!(num(&r, "/qualify/latency_ms/count"), 2000.0);
    assert_rtt(&r, "/qualify/latency_ms");
    assert_eq!(
        metric(&m, "loadgen_qualifications_total{result=\"qualified\"}"),
        2000.0
    );
    assert_eq!(
        metric(&m, "loadgen_qualifications_total{result=\"timeout\"}"),
        0.0
    );
    assert_eq!(
        metric(&m, "loadgen_qualification_duration_seconds_count"),
        2000.0
    );
    assert_eq!(metric(&m, "loadgen_clients{state=\"pending\"}"), 0.0);
    assert!(r.get("data").is_some_and(Value::is_null));
}

#[test]
fn data_through_relay() {
    require_root!();
    let test = function_name!();
    let dir = check(TestDir::new(test));
    let topo = check(RelayTopology::new(test));
    let cli = check(Netns::new(test, "load"));
    check(topo.internet.attach(&cli, "eth0"));
    check(cli.add_addr("eth0", &format!("{PUBLIC_CLIENT}/{INTERNET_PREFIX_LEN}")));
    let _server = check(topo.start_server(&dir));
    let _relay = check(topo.start_relay(&dir, &[]));
    let target = NATIVE_HOST.to_string();
    let (r, m, _) = check(run_load(
        &dir,
        Some(&cli),
        &[
            "--server",
            &SERVER_PRIMARY.to_string(),
            "--bind",
            &PUBLIC_CLIENT.to_string(),
            "--clients",
            "1000",
            "--qualify-rate",
            "1000",
            "--target",
            &target,
            "--rate",
            "1000",
            "--duration",
            "3s",
        ],
        Duration::from_secs(180),
    ));
    let text = format!("{r:#}");
    assert_eq!(num(&r, "/exit_code"), 0.0, "{text}");
    assert_eq!(num(&r, "/qualify/qualified"), 1000.0, "{text}");
    assert_eq!(num(&r, "/warmup_failed"), 0.0, "{text}");
    assert_eq!(num(&r, "/data/senders"), 1000.0, "{text}");
    let sent = num(&r, "/data/sent");
    assert!(sent >= 1000.0, "{text}");
    assert_eq!(num(&r, "/data/received"), sent, "{text}");
    assert_eq!(num(&r, "/data/lost"), 0.0, "{text}");
    assert_eq!(num(&r, "/data/loss_percent"), 0.0, "{text}");
    assert_rtt(&r, "/data/rtt_ms");
    // The metrics tell the same story.
    assert_eq!(metric(&m, "loadgen_packets_sent_total"), sent);
    assert_eq!(
        metric(&m, "loadgen_packets_received_total"),
        sent + num(&r, "/data/late")
    );
    assert_eq!(metric(&m, "loadgen_packets_lost_total"), 0.0);
    assert_eq!(
        metric(&m, "loadgen_packets_duplicated_total"),
        num(&r, "/data/duplicates")
    );
    assert_eq!(
        metric(&m, "loadgen_rtt_seconds_count"),
        metric(&m, "loadgen_packets_received_total")
    );
    assert_eq!(
        metric(&m, "loadgen_qualifications_total{result=\"qualified\"}"),
        1000.0
    );
    // The relay carried it: at least every request and every answer.
    let relayed = check(topo.relay_metrics());
    let to_native = metric(
        &relayed,
        "teredo_relay_packets_total{direction=\"ipv4_to_ipv6\"}",
    );
    let to_teredo = metric(
        &relayed,
        "teredo_relay_packets_total{direction=\"ipv6_to_ipv4\"}",
    );
    assert!(to_native >= sent, "relay forwarded {to_native} < {sent}");
    assert!(to_teredo >= sent, "relay forwarded {to_teredo} < {sent}");
}

/// The RS storm's report: phase, every RS answered, RTTs, nothing unexpected.
fn assert_rs_all_answered(r: &Value) -> f64 {
    let text = format!("{r:#}");
    assert_eq!(num(r, "/exit_code"), 0.0, "{text}");
    assert_eq!(r["phase"], "rs", "{text}");
    assert!(r.get("qualify").is_some_and(Value::is_null), "{text}");
    let sent = num(r, "/data/sent");
    assert!(sent > 0.0, "{text}");
    assert_eq!(num(r, "/data/received"), sent, "{text}");
    assert_eq!(num(r, "/data/lost"), 0.0, "{text}");
    assert_eq!(num(r, "/data/duplicates"), 0.0, "{text}");
    assert_eq!(num(r, "/data/send_errors"), 0.0, "{text}");
    assert_eq!(num(r, "/data/rtt_ms/count"), sent, "{text}");
    assert_rtt(r, "/data/rtt_ms");
    assert_eq!(num(r, "/rs/unexpected"), 0.0, "{text}");
    assert_eq!(num(r, "/rs/malformed"), 0.0, "{text}");
    assert_eq!(r["engine"]["name"], "mmsg", "{text}");
    sent
}

#[test]
fn rs_storm() {
    require_root!();
    let test = function_name!();
    let dir = check(TestDir::new(test));
    let ns = check(Netns::new(test, "rs"));
    check(ns.link_up("lo"));
    for a in ["198.51.100.1/32", "198.51.100.2/32", "198.51.100.10/32"] {
        check(ns.add_addr("lo", a));
    }
    let server_metrics = SocketAddrV4::new(SERVER_PRIMARY, 9100);
    let bin = check(bin_path("teredo-server"));
    let metrics_arg = server_metrics.to_string();
    let mut server = check(ns.spawn(
        "teredo-server",
        dir.path(),
        bin.to_str().expect("UTF-8 path"),
        &[
            "--primary",
            "198.51.100.1",
            "--native",
            "none",
            "--metrics-addr",
            &metrics_arg,
        ],
    ));
    check(teredo_tests::miredo::wait_udp_bound(
        &ns,
        &mut server,
        &[SERVER_PRIMARY, std::net::Ipv4Addr::new(198, 51, 100, 2)],
        3544,
    ));
    // 300 clients (each its own socket) at 3000 RS/s for 2 s: far below saturation.
    let (r, m, _) = check(run_load(
        &dir,
        Some(&ns),
        &[
            "--phase",
            "rs",
            "--server",
            "198.51.100.1",
            "--bind",
            "198.51.100.10",
            "--clients",
            "300",
            "--rate",
            "3000",
            "--duration",
            "2s",
            "--drain",
            "1s",
        ],
        Duration::from_secs(120),
    ));
    let sent = assert_rs_all_answered(&r);
    assert!(sent >= 5000.0, "{r:#}");
    assert_eq!(r["rs"]["answer"], "router advertisement");
    assert_eq!(num(&r, "/data/senders"), 300.0);
    // The server sent exactly the RAs we counted (one per RS, none lost on the way).
    let server_text = check(teredo_tests::metrics::fetch_in(&ns, server_metrics.into()));
    let ras = sum_all(&server_text, "teredo_server_router_advertisements_total");
    assert_eq!(ras as f64, num(&r, "/data/received"), "{server_text}");
    // And the generator's metrics agree with its report.
    assert_eq!(metric(&m, "loadgen_packets_sent_total"), sent);
    assert_eq!(metric(&m, "loadgen_packets_received_total"), sent);
    assert_eq!(metric(&m, "loadgen_rtt_seconds_count"), sent);
    assert_eq!(metric(&m, "loadgen_packets_lost_total"), 0.0);
}

#[test]
fn rs_storm_ceiling() {
    let test = function_name!();
    let dir = check(TestDir::new(test));
    let (r, _, status) = check(run_load(
        &dir,
        None,
        &[
            "--phase",
            "rs",
            "--ceiling",
            "--clients",
            "50",
            "--rate",
            "5000",
            "--duration",
            "2s",
            "--drain",
            "1s",
        ],
        Duration::from_secs(60),
    ));
    assert_eq!(status, Some(0), "{r:#}");
    assert_eq!(r["mode"], "ceiling");
    let sent = assert_rs_all_answered(&r);
    assert!(
        r["rs"]["answer"]
            .as_str()
            .is_some_and(|a| a.contains("echo of the router solicitation")),
        "{r:#}"
    );
    assert!(num(&r, "/engine/reflector_echoed") >= sent, "{r:#}");
}
