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

use teredo_tests::miredo;
use teredo_tests::relay::{ping6, RelayTopology};
use teredo_tests::topo::{NatSite, NAT_WAN, SERVER_PRIMARY};
use teredo_tests::{check, function_name, require_root, Proc, TestDir};

use std::time::Duration;

const IFNAME: &str = "teredo0";
const QUALIFY_TIMEOUT: Duration = Duration::from_secs(20);

/// NAT.md: Linux NAPT with a random external port per connection (per destination): an
/// address-and-port-dependent ("symmetric") mapping.
fn symmetric_ruleset(wan: &str, lan: &str) -> String {
    format!(
        "flush ruleset\n\
         table ip nat {{\n\
         \x20 chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   oifname \"{wan}\" ip saddr {lan} masquerade random,fully-random\n\
         \x20 }}\n\
         }}\n"
    )
}

/// Everything of one scenario that must live until its end.
struct Scenario {
    _dir: TestDir,
    topo: RelayTopology,
    site: NatSite,
    _server: Proc,
    _relay: Proc,
    _client: Proc,
}

fn scenario(test: &str, symmetric: bool, relay_flags: &[&str]) -> Scenario {
    let dir = check(TestDir::new(test));
    let topo = check(RelayTopology::new(test));
    let site = if symmetric {
        let lan = format!(
            "{}/{}",
            teredo_tests::topo::LAN_GATEWAY,
            teredo_tests::topo::LAN_PREFIX_LEN
        );
        check(NatSite::new(
            &topo.internet,
            test,
            NAT_WAN,
            &symmetric_ruleset("wan0", &lan),
        ))
    } else {
        check(NatSite::masquerade(&topo.internet, test, NAT_WAN))
    };
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
    eprintln!("{test}: Miredo qualified as {addr} in {took:?}");
    Scenario {
        _dir: dir,
        topo,
        site,
        _server: server,
        _relay: relay,
        _client: client,
    }
}

/// Miredo behind a port-restricted NAT pings the native host through our server and our
/// (strict) relay: after the first exchange, no loss.
#[test]
fn miredo_client_pings_native_host_through_our_relay() {
    require_root!("miredo", "nft");
    let test = function_name!();
    let s = scenario(test, false, &[]);
    // Warm-up: the first ping waits for the connectivity test and the bubble exchange.
    let (warm, out) = check(ping6(&s.site.host, 1));
    eprintln!("{test}: warm-up ping: {warm} reply\n{out}");
    let (replies, out) = check(ping6(&s.site.host, 5));
    eprintln!("{test}: {out}");
    assert_eq!(replies, 5, "{out}");

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
}

/// Miredo behind a symmetric NAT: its direct bubble comes from a mapping that is not the
/// one embedded in its address. Strict (RFC 4380 §5.4.2): dropped as `spoofed_source`, no
/// reply.
#[test]
fn symmetric_nat_client_is_refused_by_a_strict_relay() {
    require_root!("miredo", "nft");
    let test = function_name!();
    let s = scenario(test, true, &["--trust", "strict"]);
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
    let s = scenario(test, true, &["--trust", "lenient"]);
    let (warm, out) = check(ping6(&s.site.host, 1));
    eprintln!("{test}: warm-up ping: {warm} reply\n{out}");
    let (replies, out) = check(ping6(&s.site.host, 5));
    eprintln!("{test}: {out}");
    assert_eq!(replies, 5, "{out}");
    assert!(check(s.topo.relay_metric("teredo_relay_peers{state=\"trusted\"}")) >= 1.0);
}
