//! `client-sim load`, the load generator, end to end:
//!
//! * `ceiling`: `--ceiling` on loopback (no root): plain UDP against the in-process echo,
//!   every packet answered, the report's figures consistent.
//! * `qualify_storm`: 2000 clients qualifying against `teredo-server` in a namespace (the
//!   server refuses non-global sources such as 127.0.0.1, so the documentation addresses
//!   live on the namespace's `lo`): every client qualified, /metrics agrees.
//! * `qualify_storm_behind_symmetric_nat`: 3000 clients, each behind its own simulated
//!   symmetric NAT whose mappings are real sockets on the one `--bind` address: every
//!   client qualified (no port collision, no socket error), at most 2 sockets per client
//!   at the peak (the secondary check's), one NAT mapping each once qualified.
//! * `data_through_relay`: the relay topology (`RelayTopology`: our server, our relay with
//!   a TUN, a native IPv6 host whose kernel answers ICMPv6 echo) and 1000 clients on the
//!   Internet segment qualifying, warming up through the relay, then a paced trial: no
//!   loss, RTT figures present, and the load generator's /metrics consistent with its report
//!   (`--engine tokio`: a task per client sends and reads).
//! * `data_through_relay_mmsg`: the same with `--engine mmsg` (the clients qualify and warm
//!   up in their tasks, then lend their sockets to the batched thread): no loss, kernel
//!   receive timestamps, and the relay's own forwarded-packet counts over the trial equal
//!   to what the generator sent and counted as answered.
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

/// `client-sim load --ceiling ARGS` for 2 s (drain 1 s), outside any namespace; checks that
/// it exited 0 with a report in ceiling mode. Returns its directory and report.
fn run_ceiling(test: &str, args: &[&str]) -> (TestDir, Value) {
    let dir = check(TestDir::new(test));
    let mut all = vec!["--ceiling"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--duration", "2s", "--drain", "1s"]);
    let (r, _, status) = check(run_load(&dir, None, &all, Duration::from_secs(60)));
    assert_eq!(status, Some(0), "{r:#}");
    assert_eq!(r["mode"], "ceiling");
    (dir, r)
}

#[test]
fn ceiling() {
    let (_dir, r) = run_ceiling(function_name!(), &["--clients", "20", "--rate", "2000"]);
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

/// A namespace with the documentation addresses on `lo` and `teredo-server` on
/// 198.51.100.1 (and .2) in it.
fn server_in_namespace(test: &str, dir: &TestDir) -> (Netns, teredo_tests::process::Proc) {
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
    (ns, server)
}

#[test]
fn qualify_storm() {
    require_root!();
    let test = function_name!();
    let dir = check(TestDir::new(test));
    let (ns, _server) = server_in_namespace(test, &dir);
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
    // Without a NAT: one socket per client, never more.
    assert!(num(&r, "/engine/peak_sockets") <= 2000.0, "{r:#}");
}

#[test]
fn qualify_storm_behind_symmetric_nat() {
    require_root!();
    let test = function_name!();
    let dir = check(TestDir::new(test));
    let (ns, _server) = server_in_namespace(test, &dir);
    let clients = 3000.0;
    let (r, m, _) = check(run_load(
        &dir,
        Some(&ns),
        &[
            "--server",
            "198.51.100.1",
            "--bind",
            "198.51.100.10",
            "--clients",
            "3000",
            "--qualify-rate",
            "3000",
            "--nat",
            "symmetric",
            "--phase",
            "qualify",
        ],
        Duration::from_secs(180),
    ));
    let outcomes = format!("{:#}", r["qualify"]);
    assert_eq!(num(&r, "/qualify/qualified"), clients, "{outcomes}");
    assert_eq!(num(&r, "/exit_code"), 0.0, "{outcomes}");
    for result in ["server_unreachable", "error", "timeout"] {
        let series = format!("loadgen_qualifications_total{{result=\"{result}\"}}");
        assert_eq!(metric(&m, &series), 0.0, "{series}");
    }
    for reason in ["ports_in_use", "open_files", "other"] {
        let series = format!("loadgen_socket_errors_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&m, &series), 0.0, "{series}");
    }
    // Two mappings a client (the primary's and the secondary check's), none left once the
    // clients stopped.
    assert_eq!(
        metric(&m, "natsim_mappings_created_total"),
        2.0 * clients,
        "{m}"
    );
    assert_eq!(metric(&m, "natsim_mappings"), 0.0);
    let peak = num(&r, "/engine/peak_sockets_per_client");
    assert!(
        peak > 1.0 / clients && peak <= 2.0,
        "peak {peak} sockets per client"
    );
    assert_eq!(
        r.pointer("/engine/socket_errors"),
        Some(&serde_json::json!({}))
    );
    // The sockets left open are the clients' mappings, one each, plus the process's own.
    let fds = num(&r, "/engine/open_fds");
    assert!(
        (clients..clients + 64.0).contains(&fds),
        "{fds} descriptors open for {clients} qualified clients"
    );
}

/// The relay lab of the data trials: our server and relay up, the load generator's
/// namespace on the Internet side at [`PUBLIC_CLIENT`]. Fields drop in order: the relay
/// and the server stop before their namespaces go.
struct RelayLab {
    _relay: teredo_tests::process::Proc,
    _server: teredo_tests::process::Proc,
    cli: Netns,
    topo: RelayTopology,
    dir: TestDir,
}

fn relay_lab(test: &str) -> RelayLab {
    let dir = check(TestDir::new(test));
    let topo = check(RelayTopology::new(test));
    let cli = check(Netns::new(test, "load"));
    check(topo.internet.attach(&cli, "eth0"));
    check(cli.add_addr("eth0", &format!("{PUBLIC_CLIENT}/{INTERNET_PREFIX_LEN}")));
    let server = check(topo.start_server(&dir));
    let relay = check(topo.start_relay(&dir, &[]));
    RelayLab {
        _relay: relay,
        _server: server,
        cli,
        topo,
        dir,
    }
}

impl RelayLab {
    /// A 3 s data trial of `clients` (qualified at `qualify_rate`/s) at `rate` pps to
    /// [`NATIVE_HOST`] through the relay on `engine`: (report, metrics, exit status).
    fn run_data(
        &self,
        clients: u32,
        qualify_rate: u32,
        rate: u32,
        engine: &str,
    ) -> (Value, String, Option<i32>) {
        let (server, bind) = (SERVER_PRIMARY.to_string(), PUBLIC_CLIENT.to_string());
        let (clients, qualify_rate) = (clients.to_string(), qualify_rate.to_string());
        let (target, rate) = (NATIVE_HOST.to_string(), rate.to_string());
        let args = [
            "--server",
            &server,
            "--bind",
            &bind,
            "--clients",
            &clients,
            "--qualify-rate",
            &qualify_rate,
            "--target",
            &target,
            "--rate",
            &rate,
            "--duration",
            "3s",
            "--engine",
            engine,
        ];
        check(run_load(
            &self.dir,
            Some(&self.cli),
            &args,
            Duration::from_secs(180),
        ))
    }
}

/// A data trial's report: clean exit, all `clients` qualified and warmed up, at least
/// `min_sent` sent, every one answered, RTTs. Returns how many were sent.
fn assert_all_answered(r: &Value, clients: f64, min_sent: f64) -> f64 {
    let text = format!("{r:#}");
    assert_eq!(num(r, "/exit_code"), 0.0, "{text}");
    assert_eq!(num(r, "/qualify/qualified"), clients, "{text}");
    assert_eq!(num(r, "/warmup_failed"), 0.0, "{text}");
    let sent = num(r, "/data/sent");
    assert!(sent >= min_sent, "{text}");
    assert_eq!(num(r, "/data/received"), sent, "{text}");
    assert_eq!(num(r, "/data/lost"), 0.0, "{text}");
    assert_rtt(r, "/data/rtt_ms");
    sent
}

#[test]
fn data_through_relay() {
    require_root!();
    let lab = relay_lab(function_name!());
    let (r, m, _) = lab.run_data(1000, 1000, 1000, "tokio");
    let sent = assert_all_answered(&r, 1000.0, 1000.0);
    let text = format!("{r:#}");
    assert_eq!(num(&r, "/data/senders"), 1000.0, "{text}");
    assert_eq!(num(&r, "/data/loss_percent"), 0.0, "{text}");
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
    let relayed = check(lab.topo.relay_metrics());
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
    let (_dir, r) = run_ceiling(
        function_name!(),
        &["--phase", "rs", "--clients", "50", "--rate", "5000"],
    );
    let sent = assert_rs_all_answered(&r);
    assert!(
        r["rs"]["answer"]
            .as_str()
            .is_some_and(|a| a.contains("echo of the router solicitation")),
        "{r:#}"
    );
    assert!(num(&r, "/engine/reflector_echoed") >= sent, "{r:#}");
}

/// The relay's count of `series` read last before the load generator sent its first trial
/// packet: each reading is taken between two readings of the generator's
/// `loadgen_packets_sent_total` that are both 0 (the mmsg engine counts a packet before it
/// leaves), so it holds no trial packet. Polls until the first trial packet or `timeout`.
fn relay_before_trial(
    topo: &RelayTopology,
    cli: &Netns,
    series: &[&str],
    timeout: Duration,
) -> Result<Vec<f64>> {
    let sent = || -> Option<f64> { metric_value(&scrape(cli).ok()?, "loadgen_packets_sent_total") };
    let deadline = std::time::Instant::now() + timeout;
    let mut last = None;
    while std::time::Instant::now() < deadline {
        if sent() == Some(0.0) {
            let relay = topo.relay_metrics()?;
            let counts: Vec<f64> = series
                .iter()
                .map(|s| metric_value(&relay, s).unwrap_or(0.0))
                .collect();
            match sent() {
                Some(0.0) => last = Some(counts),
                Some(_) => break,
                None => {}
            }
        } else if last.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    last.context("never read the relay's metrics before the first trial packet")
}

#[test]
fn data_through_relay_mmsg() {
    require_root!();
    let lab = relay_lab(function_name!());
    let to_native = "teredo_relay_packets_total{direction=\"ipv4_to_ipv6\"}";
    let to_teredo = "teredo_relay_packets_total{direction=\"ipv6_to_ipv4\"}";
    let (before, (r, m, _)) = std::thread::scope(|s| {
        let before = s.spawn(|| {
            relay_before_trial(
                &lab.topo,
                &lab.cli,
                &[to_native, to_teredo],
                Duration::from_secs(120),
            )
        });
        let run = lab.run_data(200, 500, 2000, "mmsg");
        (check(before.join().expect("no panic")), run)
    });
    let sent = assert_all_answered(&r, 200.0, 5000.0);
    let text = format!("{r:#}");
    assert_eq!(r["engine"]["name"], "mmsg", "{text}");
    assert_eq!(num(&r, "/engine/lent/clients"), 200.0, "{text}");
    assert!(
        r["engine"]["timestamps"]
            .as_str()
            .is_some_and(|t| t.starts_with("kernel")),
        "{text}"
    );
    assert_eq!(num(&r, "/data/send_errors"), 0.0, "{text}");
    assert_eq!(num(&r, "/data/rtt_ms/count"), sent, "{text}");
    assert_eq!(metric(&m, "loadgen_packets_sent_total"), sent);
    assert_eq!(metric(&m, "loadgen_packets_received_total"), sent);
    // The relay forwarded exactly the trial's requests and answers after the reading
    // taken before the first trial packet.
    let relayed = check(lab.topo.relay_metrics());
    assert_eq!(metric(&relayed, to_native) - before[0], sent, "{relayed}");
    assert_eq!(metric(&relayed, to_teredo) - before[1], sent, "{relayed}");
}
