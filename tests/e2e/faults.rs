//! Faults in the network-namespace lab (issue 7, part 4): our `teredo-server` and
//! `teredo-relay` processes, a native IPv6 host, and `client-sim ping` behind a kernel NAT
//! (nftables masquerade, NAT.md R1), in the topology of `teredo_tests::relay`. A long ping
//! session (one request a second, longer than the 30 s refresh interval) runs while the
//! test does something to the network; the session log of the report (refreshes answered,
//! address changes, failures, state at the end) and the answered sequence numbers show how
//! the client coped.
//!
//! * server killed (SIGKILL) and restarted: the next refresh is answered by the new process,
//!   same address, pings keep flowing (the data path does not go through the server);
//! * server killed for good: the refresh fails after 3 RSs, the client goes offline with
//!   "cannot reach primary Teredo server over UDP";
//! * server never started: `client-sim qualify` exits 4 (`server_unreachable`) with the same
//!   error, after the profile's RSs (3 for rfc5991, 6 for xp-sp2);
//! * relay killed and restarted: the new process drops the client's packets (no peer entry)
//!   until the client's echo test makes it bubble, then the pings resume;
//! * `conntrack -F` on the NAT (every mapping expired at once): the port-preserving NAT gives
//!   the refresh the same mapping again, the client keeps its address;
//! * NAT "reboot" (`conntrack -F` and the NAT reloaded with another port range): the refresh
//!   reveals a new mapping, the client forms a new address that embeds it;
//! * 10 % loss and reordering: with the kernel's `sch_netem` on the NAT router where it
//!   exists, otherwise inside the client-side NAT model's real-socket mode (`--nat-spec
//!   loss=10%,jitter=500ms`: each datagram held up to 500 ms, so they overtake each other
//!   on real sockets, and the report counts them), see [`netem_available`]; the test prints
//!   which path ran. Qualification and pings still succeed; on the model path the report
//!   must show reordered datagrams.
//!
//! The tests wait in wall time for the fault to fall between the qualification and the
//! first refresh (22.5–30 s after it for rfc5991), and assert on the order of events, not on
//! durations.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use teredo_tests::client_ping::{finish_ping, spawn_ping, PingRun, PingSpec};
use teredo_tests::client_sim::{qualify, TeredoFields};
use teredo_tests::netns::Netns;
use teredo_tests::relay::{RelayTopology, NATIVE_HOST};
use teredo_tests::topo::{
    masquerade_ruleset, NatSite, LAN_GATEWAY, LAN_HOST, LAN_PREFIX_LEN, NAT_WAN, SERVER_PRIMARY,
};
use teredo_tests::{check, function_name, require_root, Proc, TestDir};

/// Ping requests of a session (one a second): past the first refresh.
const SESSION: u16 = 45;
/// When the fault strikes, after the ping started: qualified, before the first refresh.
const FAULT_AFTER: Duration = Duration::from_secs(10);
/// The port range of the "rebooted" NAT (masquerade otherwise preserves the client's port).
const REBOOT_PORTS: (u16, u16) = (20_000, 20_999);

/// The topology, our server and relay, and a masquerading NAT site.
struct Lab {
    dir: TestDir,
    topo: RelayTopology,
    site: NatSite,
    server: Proc,
    relay: Proc,
}

fn lab(test: &str) -> Lab {
    let dir = check(TestDir::new(test));
    let topo = check(RelayTopology::new(test));
    let site = check(NatSite::masquerade(&topo.internet, test, NAT_WAN));
    let server = check(topo.start_server(&dir));
    let relay = check(topo.start_relay(&dir, &[]));
    Lab {
        dir,
        topo,
        site,
        server,
        relay,
    }
}

/// Starts `client-sim ping` (rfc5991, [`SESSION`] requests to the native host) behind the
/// NAT; returns it with the instant it started.
fn start_session(l: &Lab, extra: &[&str]) -> (Proc, Instant) {
    let spec = PingSpec {
        server: SERVER_PRIMARY,
        destination: NATIVE_HOST,
        count: SESSION,
        profile: "rfc5991",
    };
    let p = check(spawn_ping(&l.site.host, &l.dir, "client-sim", spec, extra));
    (p, Instant::now())
}

fn finish(p: Proc) -> PingRun {
    let run = check(finish_ping(
        p,
        "client-sim",
        Duration::from_secs(60) + Duration::from_secs(u64::from(SESSION)),
    ));
    eprintln!(
        "client-sim: {} of {} answered, session {:?}",
        run.report.received, run.report.transmitted, run.report.session
    );
    run
}

/// Milliseconds since `t0` (the ping's start as the test saw it; the client's own clock
/// starts a little later, so a client time after this value is after the event).
fn ms_since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn kinds(run: &PingRun) -> Vec<&str> {
    run.report
        .session
        .events
        .iter()
        .map(|e| e.kind.as_str())
        .collect()
}

/// Requests answered that were sent more than `after_ms` after the start (request `seq`
/// leaves about `seq - 1` seconds after the qualification).
fn answered_after(run: &PingRun, after_ms: u64) -> Vec<u16> {
    run.answered()
        .into_iter()
        .filter(|s| u64::from(*s) * 1000 > after_ms + 1000)
        .collect()
}

/// The server is killed and restarted between the qualification and the first refresh: the
/// refresh is answered by the new process, the address stays, no failure, pings go on.
#[test]
fn server_restart_client_requalifies_with_the_same_address() {
    require_root!("nft");
    let test = function_name!();
    let mut l = lab(test);
    let (p, t0) = start_session(&l, &[]);
    std::thread::sleep(FAULT_AFTER);
    check(
        l.server
            .stop_with(libc::SIGKILL, Duration::from_secs(2))
            .map(drop),
    );
    std::thread::sleep(Duration::from_secs(2));
    l.server = check(l.topo.start_server(&l.dir));
    let restarted = ms_since(t0);
    let run = finish(p);
    let r = &run.report;
    assert_eq!(r.qualify.outcome, "qualified");
    let s = &r.session;
    assert_eq!(s.final_state, "qualified", "{s:?}");
    assert_eq!(s.final_address, r.source, "same address");
    assert!(
        !kinds(&run)
            .iter()
            .any(|k| *k == "offline" || *k == "address_changed"),
        "{s:?}"
    );
    assert!(
        s.ra_accepted_at_ms.iter().any(|t| *t > restarted),
        "a refresh answered by the restarted server (restart at {restarted} ms): {s:?}"
    );
    assert!(
        !answered_after(&run, restarted).is_empty(),
        "pings after the restart: {:?}",
        run.answered()
    );
}

/// The server dies for good after the qualification: the next refresh and its two
/// retransmissions go unanswered, the client goes offline with Windows' error line.
#[test]
fn server_death_takes_the_client_offline() {
    require_root!("nft");
    let test = function_name!();
    let mut l = lab(test);
    let (p, t0) = start_session(&l, &[]);
    std::thread::sleep(FAULT_AFTER);
    check(
        l.server
            .stop_with(libc::SIGKILL, Duration::from_secs(2))
            .map(drop),
    );
    let killed = ms_since(t0);
    let run = finish(p);
    let s = &run.report.session;
    assert_eq!(s.final_state, "offline", "{s:?}");
    assert_eq!(
        s.final_error.as_deref(),
        Some("cannot reach primary Teredo server over UDP")
    );
    assert_eq!(s.final_address, None);
    let offline = s
        .events
        .iter()
        .find(|e| e.kind == "offline")
        .unwrap_or_else(|| panic!("no offline event: {s:?}"));
    assert!(
        offline.at_ms > killed,
        "{offline:?} after the kill at {killed} ms"
    );
    assert_eq!(
        offline.error.as_deref(),
        Some("cannot reach primary Teredo server over UDP")
    );
    assert!(
        !s.ra_accepted_at_ms.iter().any(|t| *t > killed),
        "no RA after the kill: {s:?}"
    );
}

/// No server at all: `client-sim qualify` gives up after the profile's RSs (rfc5991: 3 to
/// the primary; xp-sp2: 3 cone then 3 restricted) with exit status 4 and the error line.
#[test]
fn dead_server_client_goes_offline_after_the_retries() {
    require_root!("nft");
    let test = function_name!();
    let dir = check(TestDir::new(test));
    let topo = check(RelayTopology::new(test));
    let site = check(NatSite::masquerade(&topo.internet, test, NAT_WAN));
    for (profile, rs) in [("rfc5991", 3), ("xp-sp2", 6)] {
        let run = check(qualify(
            &site.host,
            &dir,
            &format!("qualify-{profile}"),
            SERVER_PRIMARY,
            profile,
            &[],
        ));
        let r = &run.report;
        assert_eq!(run.exit_code, Some(4), "{profile}: {r:?}");
        assert_eq!(r.exit_code, 4);
        assert_eq!(r.outcome, "server_unreachable");
        assert_eq!(r.state, "offline");
        assert_eq!(
            r.error.as_deref(),
            Some("cannot reach primary Teredo server over UDP"),
            "{profile}"
        );
        assert_eq!(r.teredo_address, None);
        let c = r.counters.as_ref().expect("counters in the report");
        assert_eq!((c.rs_sent, c.ra_accepted), (rs, 0), "{profile}");
    }
}

/// The relay is killed and restarted during the session; the client keeps sending to the
/// relay it trusts (the client sends first). With the default `--unknown-peers accept` the
/// new process takes the client's first datagram as a new trusted peer (its source matches
/// its address) and the pings go on at once; with `drop` (Miredo's behaviour) it drops them
/// as `unknown_peer` until the client's entry goes stale (30 s without a reception) and its
/// echo test through the server makes the relay bubble.
fn relay_restart(test: &str, extra: &[&str]) -> (Lab, PingRun, u64) {
    let mut l = lab(test);
    if !extra.is_empty() {
        check(l.relay.stop().map(drop));
        l.relay = check(l.topo.start_relay(&l.dir, extra));
    }
    let (p, t0) = start_session(&l, &[]);
    std::thread::sleep(FAULT_AFTER);
    check(
        l.relay
            .stop_with(libc::SIGKILL, Duration::from_secs(2))
            .map(drop),
    );
    l.relay = check(l.topo.start_relay(&l.dir, extra));
    let restarted = ms_since(t0);
    let run = finish(p);
    assert_eq!(run.report.session.final_state, "qualified");
    (l, run, restarted)
}

/// Seconds from the restart to the first answered request sent after it (requests go out
/// once a second from the session's start; ±1 s).
fn resumed_after_s(run: &PingRun, restarted_ms: u64) -> Option<u64> {
    answered_after(run, restarted_ms)
        .first()
        .map(|s| (u64::from(*s) * 1000).saturating_sub(restarted_ms) / 1000)
}

#[test]
fn relay_restart_pings_resume_at_once_when_unknown_peers_are_accepted() {
    require_root!("nft");
    let test = function_name!();
    let (l, run, restarted) = relay_restart(test, &[]);
    let m = |series: &str| check(l.topo.relay_metric(series));
    let after = answered_after(&run, restarted);
    let resumed = resumed_after_s(&run, restarted);
    eprintln!(
        "{test}: relay restarted at {restarted} ms; data flowed again after {resumed:?} s; \
         {} answered after the restart; peers created by client datagrams {}",
        after.len(),
        m("teredo_relay_peers_created_total{by=\"client_datagram\"}")
    );
    assert!(
        resumed.is_some_and(|s| s <= 3),
        "pings resume within 3 s of the restart: {:?}",
        run.answered()
    );
    assert!(m("teredo_relay_peers_created_total{by=\"client_datagram\"}") >= 1.0);
    assert_eq!(
        m("teredo_relay_packets_dropped_total{reason=\"unknown_peer\"}"),
        0.0
    );
    assert!(
        m("teredo_relay_packets_total{direction=\"ipv4_to_ipv6\"}") >= after.len() as f64,
        "the new relay forwarded the requests"
    );
}

#[test]
fn relay_restart_pings_resume_after_the_echo_test_when_unknown_peers_are_dropped() {
    require_root!("nft");
    let test = function_name!();
    let (l, run, restarted) = relay_restart(test, &["--unknown-peers", "drop"]);
    let m = |series: &str| check(l.topo.relay_metric(series));
    let after = answered_after(&run, restarted);
    let resumed = resumed_after_s(&run, restarted);
    eprintln!(
        "{test}: relay restarted at {restarted} ms; data flowed again after {resumed:?} s; \
         {} answered after the restart; unknown_peer drops {}, indirect bubbles {}",
        after.len(),
        m("teredo_relay_packets_dropped_total{reason=\"unknown_peer\"}"),
        m("teredo_relay_bubbles_sent_total{kind=\"indirect\"}")
    );
    assert!(
        after.len() >= 5,
        "pings after the relay restart at {restarted} ms: {:?}",
        run.answered()
    );
    // Blackholed until the client's entry went stale: well over the accepting relay's 3 s.
    assert!(
        resumed.is_some_and(|s| s >= 10),
        "resumed after {resumed:?} s: {:?}",
        run.answered()
    );
    assert!(m("teredo_relay_packets_dropped_total{reason=\"unknown_peer\"}") >= 1.0);
    assert!(m("teredo_relay_bubbles_sent_total{kind=\"indirect\"}") >= 1.0);
    assert!(
        m("teredo_relay_peers{state=\"trusted\"}") >= 1.0,
        "client learned again"
    );
}

/// The client's UDP socket as the NAT sees it, and the mapping conntrack gives its flow to
/// the server.
fn nat_mapping(site: &NatSite, run: &PingRun) -> Option<SocketAddrV4> {
    let local = SocketAddrV4::new(LAN_HOST, run.report.qualify.local_mapping.port());
    check(site.udp_mapping(local, SocketAddrV4::new(SERVER_PRIMARY, 3544)))
}

/// `conntrack -F` on the NAT: every mapping gone at once (expiry). Masquerade preserves
/// the client's port, so the refresh recreates the very same mapping: no address change.
#[test]
fn conntrack_flush_same_mapping_keeps_the_address() {
    require_root!("nft", "conntrack");
    let test = function_name!();
    let l = lab(test);
    let (p, t0) = start_session(&l, &[]);
    std::thread::sleep(FAULT_AFTER);
    check(l.site.router.exec("conntrack", &["-F"]).map(drop));
    let flushed = ms_since(t0);
    let run = finish(p);
    let s = &run.report.session;
    assert_eq!(s.final_state, "qualified");
    assert_eq!(s.final_address, run.report.source, "{s:?}");
    assert!(!kinds(&run).contains(&"address_changed"), "{s:?}");
    assert!(s.ra_accepted_at_ms.iter().any(|t| *t > flushed), "{s:?}");
    assert_eq!(nat_mapping(&l.site, &run), s.final_mapping);
    assert!(!answered_after(&run, flushed).is_empty());
}

/// NAT "reboot": conntrack flushed and the NAT reloaded with another port range. The next
/// refresh leaves through a new mapping; its RA's origin indication shows it, the client
/// forms a new address embedding it (RFC 4380 §5.2.5) and the pings go on from it.
#[test]
fn nat_reboot_new_mapping_new_address() {
    require_root!("nft", "conntrack");
    let test = function_name!();
    let l = lab(test);
    let (p, t0) = start_session(&l, &[]);
    std::thread::sleep(FAULT_AFTER);
    let lan = format!("{LAN_GATEWAY}/{LAN_PREFIX_LEN}");
    let ruleset = masquerade_ruleset("wan0", &lan).replace(
        "masquerade",
        &format!(
            "meta l4proto udp masquerade to :{}-{}",
            REBOOT_PORTS.0, REBOOT_PORTS.1
        ),
    );
    check(l.site.router.nft(&ruleset));
    check(l.site.router.exec("conntrack", &["-F"]).map(drop));
    let rebooted = ms_since(t0);
    let run = finish(p);
    let s = &run.report.session;
    assert_eq!(s.final_state, "qualified", "{s:?}");
    let change = s
        .events
        .iter()
        .find(|e| e.kind == "address_changed")
        .unwrap_or_else(|| panic!("no address change: {s:?}"));
    assert!(change.at_ms > rebooted);
    assert_eq!(change.old, run.report.source);
    assert_eq!(change.address, s.final_address);
    let mapping = s.final_mapping.expect("a mapping");
    assert_eq!(*mapping.ip(), NAT_WAN);
    assert!(
        (REBOOT_PORTS.0..=REBOOT_PORTS.1).contains(&mapping.port()),
        "{mapping}"
    );
    let fields = TeredoFields::decode(s.final_address.expect("an address")).unwrap();
    assert_eq!(
        fields.mapped, mapping,
        "the new address embeds the new mapping"
    );
    assert_eq!(
        nat_mapping(&l.site, &run),
        Some(mapping),
        "as conntrack sees it"
    );
    let after_change = answered_after(&run, change.at_ms);
    assert!(
        !after_change.is_empty(),
        "pings from the new address: {:?}",
        run.answered()
    );
}

/// Whether `tc qdisc … netem` works here (the kernel module `sch_netem`); tried on a
/// throw-away veth pair inside `ns`.
fn netem_available(ns: &Netns) -> bool {
    let ok = ns
        .ip(&["link", "add", "nm0", "type", "veth", "peer", "name", "nm1"])
        .is_ok()
        && ns
            .exec(
                "tc",
                &["qdisc", "add", "dev", "nm0", "root", "netem", "loss", "1%"],
            )
            .is_ok();
    let _ = ns.ip(&["link", "del", "nm0"]);
    ok
}

/// Jitter of the NAT model when the kernel has no `sch_netem`: against requests 200 ms
/// apart, a request overtakes the one before with a chance of 18 % (uniform 0–500 ms each),
/// so over 30 requests and their replies some datagram is reordered but with a chance of
/// about 10⁻⁵; RSs (4 s apart) and bubbles (2 s) keep their timing.
const MODEL_JITTER: &str = "loss=10%,jitter=500ms";

/// 10 % loss on the client's path and reordering (netem's 25 %, or the NAT model's jitter):
/// qualification and pings still succeed thanks to the retransmissions.
#[test]
fn ten_percent_loss_still_qualifies_and_pings() {
    require_root!("nft", "tc");
    let test = function_name!();
    let l = lab(test);
    let netem = netem_available(&l.site.router);
    let mut extra: Vec<&str> = vec!["-i", "200ms", "-W", "10s"];
    if netem {
        for dev in ["wan0", "lan0"] {
            check(
                l.site
                    .router
                    .exec(
                        "tc",
                        &[
                            "qdisc", "add", "dev", dev, "root", "netem", "loss", "10%", "delay",
                            "10ms", "reorder", "25%", "50%",
                        ],
                    )
                    .map(drop),
            );
        }
    } else {
        eprintln!(
            "{test}: sch_netem is not available in this kernel: 10 % loss and reordering from \
             the client's NAT model instead ({MODEL_JITTER})"
        );
        extra.extend(["--nat-spec", MODEL_JITTER, "--seed", "7"]);
    }
    let path = if netem {
        "netem (kernel, NAT router: loss 10%, delay 10ms, reorder 25% 50%)"
    } else {
        "NAT model (client-sim real-socket mode)"
    };
    eprintln!("{test}: path: {path}");
    let spec = PingSpec {
        server: SERVER_PRIMARY,
        destination: NATIVE_HOST,
        count: 30,
        profile: "rfc5991",
    };
    let p = check(spawn_ping(&l.site.host, &l.dir, "client-sim", spec, &extra));
    let run = check(finish_ping(p, "client-sim", Duration::from_secs(120)));
    let r = &run.report;
    let counters = r.qualify.counters.clone();
    let reordered = counters.as_ref().map_or(0, |c| c.reordered);
    eprintln!(
        "{test}: path: {path}: {} of {} answered; RS sent {:?}; datagrams held by the model \
         {:?}, reordered by it {reordered}",
        r.received,
        r.transmitted,
        counters.as_ref().map(|c| c.rs_sent),
        counters.as_ref().map(|c| c.held),
    );
    assert_eq!(r.qualify.outcome, "qualified", "{r:?}");
    if !netem {
        // The reordering happened over the real sockets, inside the model's driver.
        assert!(
            reordered > 0,
            "no datagram reordered by the model: {counters:?}"
        );
    }
    assert!(
        r.received >= 10,
        "{} of {} answered",
        r.received,
        r.transmitted
    );
}
