//! Our relay (`teredo-relay --native tun`) with Debian's Miredo client, through our server,
//! to a native IPv6 host: the whole TEREDO.md §15 flow "client X → native host H via relay
//! R", in network namespaces (topology in `teredo_tests::relay`).
//!
//! The Miredo client pings H. Miredo queues the ping and runs its direct IPv6 connectivity
//! test: an echo request through its server (our `teredo-server`, which sends it natively
//! from a raw socket). H's reply is routed to the relay (2001::/32), whose kernel forwards
//! it into the TUN; the relay queues it and sends an indirect bubble through the server;
//! Miredo answers with a direct bubble from its mapping; the relay trusts it (strict:
//! outer source == embedded mapping) and flushes the reply; Miredo checks its nonce, trusts
//! the relay for H and sends the queued ping to the relay, which forwards it natively.
//!
//! Behind a symmetric NAT (`masquerade random,fully-random`: every destination gets its own
//! random external port) Miredo's direct bubble reaches the relay from a mapping that is not
//! the one in its address: a strict relay drops it (`spoofed_source`) and the ping fails; a
//! lenient relay accepts it because it is sent to the per-peer link-local source of the
//! relay's bubble, records the actual mapping, and the ping works.
//!
//! With `--fast-path xdp` (`miredo_client_pings_native_host_through_our_relay_fast_path`)
//! the same ping works, and after the first exchange the relay's XDP program forwards it.
//!
//! Every endpoint-independent-mapping NAT of `teredo_tests::nat_recipes` gives the same
//! result as masquerade (the issue-4 CI item "a Miredo client behind each Linux NAT kind
//! pings a native IPv6 host through our relay and our server with 0 % loss after the first
//! exchange"): full cone (NAT.md R4), address-restricted (R5) and port-restricted with a WAN
//! input firewall (R1 + firewall) each run a warm-up ping, then 5 of 5 replies. Miredo never
//! probes the secondary server address, so the bare-masquerade trap of `nat_recipes` does
//! not touch it; its bubbles always leave from its one mapping, which is the one embedded in
//! its address, so the strict relay trusts it everywhere but behind the symmetric NAT.

use teredo_tests::miredo;
use teredo_tests::nft::NatKind;
use teredo_tests::relay::{ping6, RelayTopology};
use teredo_tests::topo::{NatSite, LAN_GATEWAY, LAN_PREFIX_LEN, NAT_WAN, SERVER_PRIMARY};
use teredo_tests::wait::wait_for;
use teredo_tests::{check, function_name, require_root, Proc, TestDir};

use std::time::{Duration, Instant};

const IFNAME: &str = "teredo0";
const QUALIFY_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything of one scenario that must live until its end.
struct Scenario {
    _dir: TestDir,
    topo: RelayTopology,
    site: NatSite,
    _server: Proc,
    _relay: Proc,
    _client: Proc,
}

/// Our server and relay (with `relay_flags`), and Miredo qualified behind a NAT of `nat`.
fn scenario(test: &str, nat: NatKind, relay_flags: &[&str]) -> Scenario {
    let dir = check(TestDir::new(test));
    let topo = check(RelayTopology::new(test));
    let lan = format!("{LAN_GATEWAY}/{LAN_PREFIX_LEN}");
    let site = check(NatSite::new(
        &topo.internet,
        test,
        NAT_WAN,
        &nat.ruleset("wan0", "lan0", &lan),
    ));
    if relay_flags.contains(&"--fast-path") {
        super::relay_xdp::prepare_bridges(&topo, &dir);
    }
    let server = check(topo.start_server(&dir));
    let relay = check(topo.start_relay(&dir, relay_flags));
    let mut client = check(miredo::spawn_client(
        &site.host,
        &dir,
        "miredo",
        SERVER_PRIMARY,
        IFNAME,
    ));
    let (addr, took) = check(miredo::wait_qualified(
        &site.host,
        &mut client,
        IFNAME,
        QUALIFY_TIMEOUT,
    ));
    // Miredo's hook adds the Teredo address ~1.5 ms before the default route (`ip monitor`):
    // a ping sent in between fails with ENETUNREACH, so wait for the route too.
    check(
        wait_for("Miredo's default route", QUALIFY_TIMEOUT, || {
            let r = site
                .host
                .ip(&["-6", "route", "show", "default", "dev", IFNAME])?;
            Ok((!r.trim().is_empty()).then_some(()))
        })
        .map(drop),
    );
    eprintln!(
        "{test}: NAT {nat} ({}): Miredo qualified as {addr} in {took:?}",
        nat.recipe()
    );
    Scenario {
        _dir: dir,
        topo,
        site,
        _server: server,
        _relay: relay,
        _client: client,
    }
}

/// Miredo behind a NAT of kind `nat` pings the native host through our server and our
/// (strict) relay: a warm-up ping (it waits for the connectivity test and the bubble
/// exchange), then 5 of 5 replies, and the relay's counters agree.
fn pings_through_our_strict_relay(test: &str, nat: NatKind) {
    let started = Instant::now();
    let s = scenario(test, nat, &[]);
    let (warm, out) = check(ping6(&s.site.host, 1));
    eprintln!("{test}: warm-up ping: {warm} reply\n{out}");
    let (replies, out) = check(ping6(&s.site.host, 5));
    eprintln!("{test}: {out}");
    assert_eq!(replies, 5, "NAT {nat} ({}): {out}", nat.recipe());

    let m = |series: &str| check(s.topo.relay_metric(series));
    let p = "teredo_relay_packets_total";
    assert!(m(&format!("{p}{{direction=\"ipv4_to_ipv6\"}}")) >= 5.0);
    assert!(m(&format!("{p}{{direction=\"ipv6_to_ipv4\"}}")) >= 6.0);
    assert!(m("teredo_relay_bubbles_sent_total{kind=\"indirect\"}") >= 1.0);
    assert!(m("teredo_relay_peers{state=\"trusted\"}") >= 1.0);
    assert!(m("teredo_relay_connectivity_test_duration_seconds_count") >= 1.0);
    assert_eq!(
        m("teredo_relay_packets_dropped_total{reason=\"spoofed_source\"}"),
        0.0
    );
    eprintln!(
        "{test}: NAT {nat}: 5/5 after warm-up ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

/// Miredo behind a port-restricted NAT (bare masquerade, NAT.md R1) pings the native host
/// through our server and our (strict) relay: after the first exchange, no loss.
#[test]
fn miredo_client_pings_native_host_through_our_relay() {
    require_root!("miredo", "nft");
    pings_through_our_strict_relay(function_name!(), NatKind::BareMasquerade);
}

/// The same behind a full cone (NAT.md R4: dynamic map + DNAT).
#[test]
fn full_cone_nat_client_pings_native_host_through_our_relay() {
    require_root!("miredo", "nft");
    pings_through_our_strict_relay(function_name!(), NatKind::FullCone);
}

/// The same behind an address-restricted cone (NAT.md R5: R4 + permit set).
#[test]
fn address_restricted_nat_client_pings_native_host_through_our_relay() {
    require_root!("miredo", "nft");
    pings_through_our_strict_relay(function_name!(), NatKind::AddressRestricted);
}

/// The same behind a port-restricted cone with a stateful WAN input firewall (R1 +
/// `ct state new drop`, `nft::NatKind::PortRestricted`).
#[test]
fn port_restricted_firewalled_nat_client_pings_native_host_through_our_relay() {
    require_root!("miredo", "nft");
    pings_through_our_strict_relay(function_name!(), NatKind::PortRestricted);
}

/// Miredo behind a port-restricted NAT pings the native host through our server and our
/// relay with its XDP fast path: a warm-up ping (the core runs the connectivity test and the
/// bubble exchange), then 5 of 5 replies, and the program forwarded packets both ways.
#[test]
fn miredo_client_pings_native_host_through_our_relay_fast_path() {
    let test = function_name!();
    if !super::relay_xdp::fast_path_available(test, &["miredo", "nft"]) {
        return;
    }
    let s = scenario(test, NatKind::BareMasquerade, &super::relay_xdp::FAST_PATH);
    let (warm, out) = check(ping6(&s.site.host, 1));
    eprintln!("{test}: warm-up ping: {warm} reply\n{out}");
    let (replies, out) = check(ping6(&s.site.host, 5));
    eprintln!("{test}: {out}");
    assert_eq!(replies, 5, "{out}");
    let (to_native, to_teredo) = super::relay_xdp::assert_forwarded_in_xdp(&s.topo);
    eprintln!("{test}: XDP forwarded {to_native} to native, {to_teredo} to Teredo");
}

/// Miredo behind a symmetric NAT: its direct bubble comes from a mapping that is not the
/// one embedded in its address. Strict (RFC 4380 §5.4.2): dropped as `spoofed_source`, no
/// reply.
#[test]
fn symmetric_nat_client_is_refused_by_a_strict_relay() {
    require_root!("miredo", "nft");
    let test = function_name!();
    let s = scenario(test, NatKind::Symmetric, &["--trust", "strict"]);
    let (replies, out) = check(ping6(&s.site.host, 3));
    eprintln!("{test}: {out}");
    assert_eq!(replies, 0, "{out}");
    let spoofed = check(
        s.topo
            .relay_metric("teredo_relay_packets_dropped_total{reason=\"spoofed_source\"}"),
    );
    assert!(spoofed >= 1.0, "spoofed_source = {spoofed}");
    assert_eq!(
        check(s.topo.relay_metric("teredo_relay_peers{state=\"trusted\"}")),
        0.0
    );
}

/// The same with `--trust lenient`: the direct bubble answers the relay's bubble (it is
/// addressed to the bubble's per-peer link-local source), so the relay records the actual
/// mapping and the ping works.
#[test]
fn symmetric_nat_client_works_with_a_lenient_relay() {
    require_root!("miredo", "nft");
    let test = function_name!();
    let s = scenario(test, NatKind::Symmetric, &["--trust", "lenient"]);
    let (warm, out) = check(ping6(&s.site.host, 1));
    eprintln!("{test}: warm-up ping: {warm} reply\n{out}");
    let (replies, out) = check(ping6(&s.site.host, 5));
    eprintln!("{test}: {out}");
    assert_eq!(replies, 5, "{out}");
    assert!(check(s.topo.relay_metric("teredo_relay_peers{state=\"trusted\"}")) >= 1.0);
}
