//! Every `/metrics` endpoint passes `promtool check metrics` (Debian package `prometheus`),
//! the linter of Prometheus' own naming conventions (counters end in `_total`, base units,
//! help texts, no reserved suffixes...), and shows the series a load test needs.
//!
//! Rootless, on loopback: `teredo-server` (both addresses on 127.0.0.x) and `teredo-relay
//! --native none` as real processes with `--metrics-addr`. One datagram each first, so that
//! the endpoints are scraped with counters that moved (each is dropped, with a reason), not
//! only the zero-initialised series.
//!
//! * `promtool_flags_a_bad_exposition`: promtool itself, on a counter without `_total`: the
//!   check below can fail.
//! * `server_and_relay_endpoints_pass_promtool`: the two endpoints.
//! * `loadgen_endpoint_passes_promtool`: `client-sim load --ceiling` (its own echo on
//!   loopback) with `--metrics-addr`, scraped while it lingers after the run.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};
use teredo_tests::inproc::metric_value;
use teredo_tests::metrics::sum_all;
use teredo_tests::process::tail;
use teredo_tests::wait::wait_for;
use teredo_tests::{bin_path, check, require_tools, Proc, TestDir};

pub(super) const LIMIT: Duration = Duration::from_secs(20);

/// `promtool check metrics` on `text`: (success, what it printed on stdout and stderr).
fn promtool(text: &str) -> Result<(bool, String)> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn promtool")?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())
        .context("write to promtool")?;
    let out = child.wait_with_output().context("wait for promtool")?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), printed))
}

/// A loopback TCP port free right now (the processes bind it a moment later).
pub(super) fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a probe TCP port");
    l.local_addr().expect("probe address").port()
}

/// A loopback UDP port free right now on 127.0.0.1 and 127.0.0.2.
pub(super) fn free_udp_port() -> u16 {
    loop {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind a probe UDP port");
        let port = a.local_addr().expect("probe address").port();
        if UdpSocket::bind(("127.0.0.2", port)).is_ok() {
            return port;
        }
    }
}

/// The body of `GET /metrics` on `addr` (HTTP/1.0: the server closes after answering).
pub(super) fn scrape(addr: SocketAddr) -> Result<String> {
    teredo_tests::metrics::fetch(addr)
}

/// Waits until `series` reads `want` on `addr`, and returns the whole page then.
pub(super) fn scrape_until(
    proc: &mut Proc,
    addr: SocketAddr,
    series: &str,
    want: f64,
) -> Result<String> {
    let (text, _) = wait_for(&format!("{series} = {want} on {addr}"), LIMIT, || {
        proc.ensure_running()?;
        Ok(scrape(addr)
            .ok()
            .filter(|t| metric_value(t, series) == Some(want)))
    })
    .with_context(|| format!("{} stderr:\n{}", proc.label(), tail(&proc.stderr(), 30)))?;
    Ok(text)
}

/// Waits until the family `name` sums to `want` on `addr`, and returns the whole page then.
fn scrape_until_sum(proc: &mut Proc, addr: SocketAddr, name: &str, want: f64) -> Result<String> {
    let (text, _) = wait_for(&format!("sum of {name} = {want} on {addr}"), LIMIT, || {
        proc.ensure_running()?;
        Ok(scrape(addr)
            .ok()
            .filter(|t| sum_all(t, name) as f64 == want))
    })
    .with_context(|| format!("{} stderr:\n{}", proc.label(), tail(&proc.stderr(), 30)))?;
    Ok(text)
}

/// Asserts promtool finds nothing in `text`, and that every series in `want` is there.
pub(super) fn assert_clean(endpoint: &str, text: &str, want: &[&str]) {
    let (ok, printed) = check(promtool(text));
    // Shown with --nocapture: the report quotes it.
    println!(
        "promtool check metrics < {endpoint}: exit {}, {} bytes of output{}",
        if ok { 0 } else { 1 },
        printed.len(),
        if printed.is_empty() {
            String::new()
        } else {
            format!(":\n{printed}")
        }
    );
    assert!(
        ok && printed.trim().is_empty(),
        "promtool on {endpoint}:\n{printed}\n--- exposition ---\n{text}"
    );
    for series in want {
        assert!(
            metric_value(text, series).is_some(),
            "{endpoint}: no series {series}:\n{text}"
        );
    }
    // The standard process metrics, CPU time with sub-second resolution.
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_threads",
    ] {
        assert!(
            metric_value(text, name).is_some_and(|v| v > 0.0),
            "{endpoint}: {name} missing or zero"
        );
    }
}

#[test]
fn promtool_flags_a_bad_exposition() {
    require_tools!("promtool");
    let (ok, printed) = check(promtool(
        "# HELP teredo_test_packets Packets.\n# TYPE teredo_test_packets counter\n\
         teredo_test_packets 1\n",
    ));
    assert!(!ok, "promtool accepted a counter without _total: {printed}");
    assert!(printed.contains("_total"), "{printed}");
    let (ok, printed) = check(promtool(
        "# HELP teredo_test_packets_total Packets.\n# TYPE teredo_test_packets_total counter\n\
         teredo_test_packets_total 1\n",
    ));
    assert!(ok && printed.trim().is_empty(), "{printed}");
}

#[test]
fn server_and_relay_endpoints_pass_promtool() {
    require_tools!("promtool");
    let dir = check(TestDir::new("promtool_server_relay"));
    let junk = UdpSocket::bind("127.0.0.1:0").expect("bind the sender");

    // The server on 127.0.0.1 and 127.0.0.2.
    let (port, metrics) = (free_udp_port(), free_tcp_port());
    let server_metrics: SocketAddr = ([127, 0, 0, 1], metrics).into();
    let mut cmd = Command::new(check(bin_path("teredo-server")));
    cmd.args([
        "--primary",
        "127.0.0.1",
        "--secondary",
        "127.0.0.2",
        "--native",
        "none",
    ])
    .args(["--port", &port.to_string()])
    .args(["--metrics-addr", &server_metrics.to_string()]);
    let mut server = check(Proc::spawn(cmd, "teredo-server", dir.path()));
    scrape_until(
        &mut server,
        server_metrics,
        "teredo_server_packets_received_total{address=\"primary\"}",
        0.0,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    junk.send_to(&[0u8; 48], ("127.0.0.1", port)).expect("send");
    // Dropped (with whichever reason comes first for 48 zero bytes from a loopback source):
    // wait until the primary counted it and every datagram received was dropped. (Not "one
    // drop": tests running beside this one may hit the secondary's port with a stray
    // datagram, which counts as received and dropped on the secondary.)
    let primary = "teredo_server_packets_received_total{address=\"primary\"}";
    let (text, _) = check(wait_for(
        "the junk datagram received and dropped",
        LIMIT,
        || {
            server.ensure_running()?;
            Ok(scrape(server_metrics).ok().filter(|t| {
                metric_value(t, primary) == Some(1.0)
                    && sum_all(t, "teredo_server_packets_dropped_total")
                        == sum_all(t, "teredo_server_packets_received_total")
            }))
        },
    ));
    assert_clean(
        "teredo-server",
        &text,
        &[
            "teredo_server_packets_received_total{address=\"primary\"}",
            "teredo_server_packets_received_total{address=\"secondary\"}",
            "teredo_server_router_solicitations_total{address=\"primary\",cone=\"true\"}",
            "teredo_server_router_advertisements_total{address=\"secondary\"}",
            "teredo_server_packets_forwarded_total{direction=\"to_native\",kind=\"icmpv6\"}",
            "teredo_server_packets_dropped_total{reason=\"malformed\"}",
            "teredo_server_handling_duration_seconds_count",
            &format!(
                "teredo_server_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            ),
        ],
    );
    assert_eq!(
        metric_value(
            &text,
            "teredo_server_packets_received_total{address=\"primary\"}"
        ),
        Some(1.0)
    );

    // The relay without a native side (rootless).
    let (port, metrics) = (free_udp_port(), free_tcp_port());
    let relay_metrics: SocketAddr = ([127, 0, 0, 1], metrics).into();
    let mut cmd = Command::new(check(bin_path("teredo-relay")));
    cmd.args(["--bind", &format!("127.0.0.1:{port}"), "--native", "none"])
        .args(["--workers", "1"])
        .args(["--metrics-addr", &relay_metrics.to_string()]);
    let mut relay = check(Proc::spawn(cmd, "teredo-relay", dir.path()));
    let received = "teredo_relay_packets_received_total{direction=\"ipv4_to_ipv6\"}";
    check(scrape_until(&mut relay, relay_metrics, received, 0.0));
    junk.send_to(&[0u8; 48], ("127.0.0.1", port)).expect("send");
    check(scrape_until(&mut relay, relay_metrics, received, 1.0));
    // Dropped with a reason (the cores' drops are exported within a second).
    let text = check(scrape_until_sum(
        &mut relay,
        relay_metrics,
        "teredo_relay_packets_dropped_total",
        1.0,
    ));
    assert_clean(
        "teredo-relay",
        &text,
        &[
            received,
            "teredo_relay_packets_received_total{direction=\"ipv6_to_ipv4\"}",
            "teredo_relay_packets_total{direction=\"ipv4_to_ipv6\"}",
            "teredo_relay_packets_total{direction=\"ipv6_to_ipv4\"}",
            "teredo_relay_bytes_total{direction=\"ipv6_to_ipv4\"}",
            "teredo_relay_packets_dropped_total{reason=\"native_disabled\"}",
            "teredo_relay_packets_dropped_total{reason=\"queue_full\"}",
            "teredo_relay_peers{state=\"trusted\"}",
            "teredo_relay_bubbles_sent_total{kind=\"indirect\"}",
            "teredo_relay_connectivity_test_duration_seconds_count",
            &format!(
                "teredo_relay_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            ),
        ],
    );
    check(relay.stop().map(drop));
    check(server.stop().map(drop));
}

#[test]
fn loadgen_endpoint_passes_promtool() {
    require_tools!("promtool");
    let dir = check(TestDir::new("promtool_loadgen"));
    let addr: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
    let mut cmd = Command::new(check(bin_path("client-sim")));
    cmd.args([
        "load",
        "--ceiling",
        "--clients",
        "10",
        "--rate",
        "200",
        "--duration",
        "1s",
    ])
    .args(["--quiet", "--metrics-linger", "60s"])
    .args(["--metrics-addr", &addr.to_string()]);
    let mut loadgen = check(Proc::spawn(cmd, "client-sim-load", dir.path()));
    // Until the run is over: every client qualified and every packet sent is accounted for.
    let (text, _) = check(
        wait_for("the end of the load run", LIMIT, || {
            loadgen.ensure_running()?;
            Ok(scrape(addr).ok().filter(|t| {
                let v = |s: &str| metric_value(t, s).unwrap_or(0.0);
                v("loadgen_packets_sent_total") > 0.0
                    && v("loadgen_packets_sent_total")
                        == v("loadgen_packets_received_total") + v("loadgen_packets_lost_total")
                    && v("loadgen_qualifications_total{result=\"qualified\"}") == 10.0
            }))
        })
        .with_context(|| format!("client-sim load stderr:\n{}", tail(&loadgen.stderr(), 30))),
    );
    assert_clean(
        "client-sim load",
        &text,
        &[
            "loadgen_packets_sent_total",
            "loadgen_packets_received_total",
            "loadgen_packets_lost_total",
            "loadgen_packets_out_of_order_total",
            "loadgen_packets_duplicated_total",
            "loadgen_rtt_seconds_count",
            "loadgen_qualifications_total{result=\"timeout\"}",
            "loadgen_qualification_duration_seconds_count",
            "loadgen_clients{state=\"qualified\"}",
            &format!(
                "loadgen_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            ),
        ],
    );
    assert_eq!(
        metric_value(&text, "loadgen_rtt_seconds_count"),
        metric_value(&text, "loadgen_packets_received_total")
    );
    check(loadgen.stop().map(drop));
}
