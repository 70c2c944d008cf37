//! Our relay with its XDP fast path (`teredo-relay --fast-path xdp --native-interface
//! eth1`) in the relay topology of `teredo_tests::relay`: a Teredo client (`client-sim
//! ping`, public address) qualifies with our server and pings the native host through the
//! relay. The first packets go through the core (the bubble exchange makes the client
//! trusted, the kernel resolves its neighbours); after that the program forwards both
//! directions itself, which the relay's metrics must show, promtool-clean. A longer session
//! checks that the program's traffic keeps the peer alive in the core (the sync).
//!
//! The relay's two veths redirect frames to each other and send them out towards the
//! bridges, whose ports therefore run `xdp_pass` (a veth takes frames redirected into it
//! only when its peer runs an XDP program; see the fastpath README); the relay's native
//! interface forwards IPv4 (the program's route lookup towards clients needs it).
//!
//! Miredo through our server and the relay with the fast path on is in `relay_interop`.

use teredo_tests::client_ping::{ping, PingRun, PingSpec};
use teredo_tests::metrics::value as metric_value;
use teredo_tests::relay::{RelayTopology, NATIVE_HOST};
use teredo_tests::topo::{self, PUBLIC_CLIENT, SERVER_PRIMARY};
use teredo_tests::{check, function_name, requirements_met, servers, Proc, TestDir};

/// The relay flags of the fast path in [`RelayTopology`]: eth0 holds the bind address, native
/// IPv6 arrives on eth1.
pub(crate) const FAST_PATH: [&str; 4] = ["--fast-path", "xdp", "--native-interface", "eth1"];

/// Root, promtool and a build with the XDP program; otherwise a loud skip (a failure under
/// `CI=true`).
pub(crate) fn fast_path_available(test: &str, tools: &[&str]) -> bool {
    let mut all = vec!["promtool"];
    all.extend_from_slice(tools);
    if !requirements_met(test, true, &all) {
        return false;
    }
    if let Err(e) = teredo_fastpath::built() {
        let msg = format!("SKIPPED: {test} needs the XDP program ({e})");
        assert!(
            !teredo_tests::in_ci(),
            "{msg}; CI is set, and CI must never skip"
        );
        eprintln!("\n*** {msg} ***");
        return false;
    }
    true
}

/// `xdp_pass` on every bridge port of both segments, before the relay takes traffic; IPv4
/// forwarding on the relay's native interface, which the program's route lookup for native
/// packets needs (a namespace does not always inherit it).
pub(crate) fn prepare_bridges(topo: &RelayTopology, dir: &TestDir) {
    check(servers::xdp_pass_on_hub(&topo.internet, dir));
    check(servers::xdp_pass_on_hub(&topo.native, dir));
    check(topo.rly.sysctl("net.ipv4.conf.eth1.forwarding", "1"));
}

/// Asserts from the relay's metrics that the program forwarded packets both ways, and that
/// the page is promtool-clean. Returns (to_native, to_teredo).
pub(crate) fn assert_forwarded_in_xdp(topo: &RelayTopology) -> (f64, f64) {
    let text = check(topo.relay_metrics());
    let m = |series: &str| metric_value(&text, series).unwrap_or(0.0);
    let f = "teredo_relay_fast_path_forwarded_total";
    let (to_native, to_teredo) = (
        m(&format!("{f}{{direction=\"to_native\"}}")),
        m(&format!("{f}{{direction=\"to_teredo\"}}")),
    );
    eprintln!(
        "relay XDP fast path: {to_native} to native, {to_teredo} to Teredo; map {} peer(s); \
         passed: {}",
        m("teredo_relay_fast_path_peers"),
        text.lines()
            .filter(|l| l.starts_with("teredo_relay_fast_path_passed_total{") && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        to_native >= 1.0 && to_teredo >= 1.0,
        "not forwarded by XDP:\n{text}"
    );
    super::promtool::assert_clean(
        "teredo-relay --fast-path xdp",
        &text,
        &[
            "teredo_relay_fast_path_forwarded_total{direction=\"to_native\"}",
            "teredo_relay_fast_path_forwarded_total{direction=\"to_teredo\"}",
            "teredo_relay_fast_path_passed_total{reason=\"not_trusted\"}",
            "teredo_relay_fast_path_peers",
            "teredo_relay_fast_path_sync_errors_total{reason=\"upsert\"}",
        ],
    );
    for reason in ["upsert", "remove", "queue_full", "events_lost"] {
        assert_eq!(
            m(&format!(
                "teredo_relay_fast_path_sync_errors_total{{reason=\"{reason}\"}}"
            )),
            0.0,
            "{reason}"
        );
    }
    (to_native, to_teredo)
}

/// The relay with its fast path between a public client and the native host, our server
/// beside it, kept running (the processes live as long as this).
struct Session {
    topo: RelayTopology,
    run: PingRun,
    _dir: TestDir,
    _server: Proc,
    _relay: Proc,
}

/// Starts a [`Session`] and pings the native host `count` times with `client-sim`; every
/// echo must be answered.
fn ping_session(test: &str, count: u16) -> Session {
    let dir = check(TestDir::new(test));
    let topo = check(RelayTopology::new(test));
    let cli = check(topo::public_host(
        &topo.internet,
        test,
        "cli",
        &[PUBLIC_CLIENT],
    ));
    prepare_bridges(&topo, &dir);
    let _server: Proc = check(topo.start_server(&dir));
    let _relay: Proc = check(topo.start_relay(&dir, &FAST_PATH));
    let run = check(ping(
        &cli,
        &dir,
        "client-sim",
        PingSpec {
            server: SERVER_PRIMARY,
            destination: NATIVE_HOST,
            count,
            profile: "rfc5991",
        },
        &[],
    ));
    eprintln!(
        "{test}: {} of {} answered",
        run.report.received, run.report.transmitted
    );
    assert_eq!(
        run.answered(),
        (1..=count).collect::<Vec<_>>(),
        "{:?}",
        run.report
    );
    Session {
        topo,
        run,
        _dir: dir,
        _server,
        _relay,
    }
}

/// A client with a public address pings the native host through the relay's fast path:
/// every request answered, and most of them forwarded by the program both ways.
#[test]
fn client_sim_pings_native_host_through_the_relay_fast_path() {
    let test = function_name!();
    if !fast_path_available(test, &[]) {
        return;
    }
    let count = 8;
    // Held whole: its processes must outlive the metric reads below.
    let session = ping_session(test, count);
    let (topo, run) = (&session.topo, &session.run);
    eprintln!("{test}: answered via {:?}", run.report.via);
    assert_eq!(run.exit_code, Some(0), "{:?}", run.report);
    let (to_native, to_teredo) = assert_forwarded_in_xdp(topo);
    // The core saw the rest: the connectivity test and the first packets each way.
    let core = |d: &str| {
        check(topo.relay_metric(&format!("teredo_relay_packets_total{{direction=\"{d}\"}}")))
    };
    let (slow_native, slow_teredo) = (core("ipv4_to_ipv6"), core("ipv6_to_ipv4"));
    eprintln!("{test}: core forwarded {slow_native} to native, {slow_teredo} to Teredo");
    assert!(
        to_native + slow_native >= f64::from(count) && to_teredo + slow_teredo >= f64::from(count),
        "every echo crossed the relay once each way"
    );
}

/// A peer only the program forwards for stays in the core past its idle timeout (60 s, the
/// core's own expiry would remove it then: its last use in the core is the first exchange):
/// the sync hands the program's times to the core once a second. After 75 s of pings: no
/// second peer entry, one bubble exchange, still one trusted peer and one map entry, every
/// echo answered, nearly all of them in XDP. (With the sync's refresh left out, the peer is
/// removed after 60 s and created again by the client's next datagram.)
#[test]
fn a_peer_busy_on_the_fast_path_outlives_the_idle_timeout() {
    let test = function_name!();
    if !fast_path_available(test, &[]) {
        return;
    }
    let count = 75;
    let session = ping_session(test, count);
    let topo = &session.topo;
    let (to_native, to_teredo) = assert_forwarded_in_xdp(topo);
    assert!(
        to_native >= f64::from(count - 5) && to_teredo >= f64::from(count - 5),
        "{to_native} / {to_teredo}"
    );
    let text = check(topo.relay_metrics());
    let m = |series: &str| metric_value(&text, series).unwrap_or(0.0);
    let created = m("teredo_relay_peers_created_total{by=\"native_packet\"}")
        + m("teredo_relay_peers_created_total{by=\"client_datagram\"}");
    assert_eq!(created, 1.0, "the peer was never removed and created again");
    assert_eq!(
        m("teredo_relay_connectivity_test_duration_seconds_count"),
        1.0,
        "one bubble exchange"
    );
    assert_eq!(m("teredo_relay_peers{state=\"trusted\"}"), 1.0);
    assert_eq!(m("teredo_relay_fast_path_peers"), 1.0);
}
