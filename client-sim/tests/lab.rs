//! The lab on the simulated network: the expectation table, a few cells checked against
//! literal values (so the table itself is checked), timers in virtual time, determinism,
//! spoofed router advertisements.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client_sim::lab::{
    self, run_lab, run_scenario, Expect, LabOptions, Scenario, Variant, ATTACKER, SERVER,
};
use client_sim::scenario::FaultExpect;
use netsim::sim::{Datagram, Sender};
use netsim::{NatDrop, NatPreset};
use teredo::addr::{TeredoAddr, LL_TEREDO_CONE, LL_WINDOWS_RESTRICTED, LL_XP_RESTRICTED};
use teredo::client::{ClientError, Event, NatType, Profile, State};
use teredo::wire::TeredoPacket;
use teredo::DropReason;

const SECONDARY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn find(name: &str) -> Scenario {
    lab::all_scenarios()
        .into_iter()
        .find(|s| s.name() == name)
        .unwrap_or_else(|| panic!("no scenario {name}"))
}

/// A scenario that is not in the tables (its expectation is irrelevant).
fn custom(profile: Profile, nat: NatPreset, variant: Variant) -> Scenario {
    Scenario {
        profile,
        nat,
        variant,
        expect: Expect::qualified(NatType::Unknown),
        why: "test",
        data: lab::DATA_NOT_RUN,
        fault: FaultExpect::None,
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("client-sim-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Every datagram a test observer saw: (virtual time, datagram).
type Seen = Arc<Mutex<Vec<(Duration, Datagram)>>>;

fn tap(sim: &mut netsim::sim::Sim) -> Seen {
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    sim.set_observer(Box::new(move |at, d| {
        s.lock().unwrap().push((at, d.clone()));
        Vec::new()
    }));
    seen
}

/// (time, destination, link-local source) of every RS the scenario's client sent (not the
/// matrix cells' second client, behind its own NAT).
fn rs_log(seen: &Seen) -> Vec<(Duration, SocketAddrV4, std::net::Ipv6Addr)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(_, d)| d.to.port() == 3544 && *d.from.ip() != lab::PEER_NAT_EXTERNAL)
        .map(|(t, d)| (*t, d.to, TeredoPacket::parse(&d.payload).unwrap().src()))
        .collect()
}

#[test]
fn every_scenario_matches_the_table() {
    let report = run_lab(&LabOptions {
        seed: 1,
        ..LabOptions::default()
    })
    .unwrap();
    assert_eq!(report.results.len(), lab::MATRIX.len() + lab::EXTRAS.len());
    assert!(report.ok(), "{}", report.table());
    // Other seeds: same outcomes (they change nonces, ports and flags only).
    for seed in [2, 3, 0xdead_beef] {
        let r = run_lab(&LabOptions {
            seed,
            ..LabOptions::default()
        })
        .unwrap();
        assert!(r.ok(), "seed {seed}\n{}", r.table());
    }
}

#[test]
fn literal_cells() {
    // Written out here rather than taken from the table, so that a wrong table row cannot
    // make its own check pass.
    let run = |name: &str| run_scenario(&find(name), 1, false).unwrap().observed;

    let o = run("xp-sp2__symmetric");
    assert_eq!(o.state, State::Offline);
    assert_eq!(o.nat, NatType::SymmetricPort);
    assert_eq!(o.error, Some(ClientError::SymmetricNat));
    assert_eq!(
        o.status.error.as_deref(),
        Some("client behind symmetric NAT")
    );
    assert_eq!(o.address, None);

    let o = run("vista__symmetric");
    assert_eq!(o.state, State::Qualified);
    assert_eq!(o.status.nat, "symmetric (port)");
    assert_eq!(o.error, None);

    let o = run("vista__symmetric-address");
    assert_eq!(o.state, State::Qualified);
    assert_eq!(o.status.nat, "symmetric (address)");

    let o = run("miredo__symmetric");
    assert_eq!(o.state, State::Qualified);
    assert_eq!(o.nat, NatType::Restricted);
    // Miredo never talks to the secondary address: RS at 0, 30, 60 and 90 s, all to the
    // primary.
    assert_eq!(o.rs_sent, 4);
    let (mut sim, _) = lab::build(&find("miredo__symmetric"), 1, false).unwrap();
    sim.run_for(secs(90)).unwrap();
    // (The secondary address only talks to the second client, behind its own NAT.)
    assert!(sim.trace().iter().all(|e| {
        (e.sender != Sender::Client(0) || *e.to.ip() != SECONDARY)
            && (*e.from.ip() != SECONDARY || *e.to.ip() == lab::PEER_NAT_EXTERNAL)
    }));
    assert!(sim.trace().iter().any(|e| *e.from.ip() == SECONDARY));

    let o = run("xp-sp2__full-cone");
    assert_eq!(o.state, State::Qualified);
    assert_eq!(o.nat, NatType::Cone);
    let a = TeredoAddr::from_ipv6(&o.address.unwrap()).unwrap();
    assert!(a.is_cone(), "C bit in {}", o.address.unwrap());
    assert_eq!(a.flags, 0x8000, "XP: no random bits");
    assert_eq!(a.server, SERVER);
    assert_eq!(Some(a.mapped), o.mapping);

    let o = run("rfc5991__full-cone");
    assert_eq!(o.state, State::Qualified);
    assert_eq!(o.nat, NatType::Restricted);
    let a = TeredoAddr::from_ipv6(&o.address.unwrap()).unwrap();
    assert!(!a.is_cone());
    assert_eq!(a.flags & !0x3cff, 0, "only RFC 5991 random bits");

    let o = run("rfc5991__none");
    assert_eq!(o.nat, NatType::None);
    assert_eq!(
        o.status.external_nat_mapping,
        Some(o.status.local_mapping.clone())
    );

    let o = run("xp-sp2__port-restricted");
    assert_eq!((o.state, o.nat), (State::Qualified, NatType::Restricted));
    // The three cone-probe RAs from the secondary address were filtered by the NAT.
    assert_eq!(o.nat_drops["filtered"], 3);
    assert_eq!(o.first_qualified, Some(Duration::from_millis(12_040)));

    let o = run("win7__port-restricted__managed-network");
    assert_eq!(o.state, State::Offline);
    assert_eq!(
        o.status.error.as_deref(),
        Some("client is in a managed network")
    );
    assert_eq!(o.rs_sent, 0);
    assert_eq!(o.net.datagrams, 0);

    let o = run("win7__port-restricted__managed-enterpriseclient");
    assert_eq!(o.state, State::Qualified);

    let o = run("win7__port-restricted__idle-61min");
    assert_eq!(o.state, State::Dormant);
    assert_eq!(o.status.state, "dormant");
    let o = run("win7__port-restricted__default-qualified-idle-61min");
    assert_eq!(o.state, State::Qualified);
}

#[test]
fn lab_is_deterministic_and_fast() {
    let dirs = [temp_dir("det-a"), temp_dir("det-b"), temp_dir("det-c")];
    let started = Instant::now();
    let run = |seed: u64, dir: &PathBuf| {
        run_lab(&LabOptions {
            seed,
            pcap_dir: Some(dir.clone()),
            ..LabOptions::default()
        })
        .unwrap()
    };
    let a = run(42, &dirs[0]);
    let elapsed = started.elapsed();
    let b = run(42, &dirs[1]);
    let c = run(43, &dirs[2]);
    // Well under 5 s even in a debug build, pcaps included.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(a.table(), b.table());
    assert_eq!(a.json().to_string(), b.json().to_string());
    assert_ne!(a.table(), c.table(), "another seed, other addresses");
    let mut files = 0;
    for r in &a.results {
        let name = format!("{}.pcap", r.scenario.name());
        let x = std::fs::read(dirs[0].join(&name)).unwrap();
        let y = std::fs::read(dirs[1].join(&name)).unwrap();
        assert!(x == y, "{name} differs between two runs of the same seed");
        files += 1;
    }
    assert_eq!(files, lab::MATRIX.len() + lab::EXTRAS.len());
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn selection_and_empty_selection() {
    let r = run_lab(&LabOptions {
        seed: 1,
        profiles: vec![Profile::XpSp2],
        nats: vec![NatPreset::Symmetric, NatPreset::FullCone],
        pcap_dir: None,
        journal: false,
    })
    .unwrap();
    // Keeping the journal (for `--html`) changes no outcome.
    let journaled = run_lab(&LabOptions {
        seed: 1,
        profiles: vec![Profile::XpSp2],
        nats: vec![NatPreset::Symmetric, NatPreset::FullCone],
        pcap_dir: None,
        journal: true,
    })
    .unwrap();
    for (a, b) in r.results.iter().zip(&journaled.results) {
        assert_eq!(a.observed, b.observed);
        assert!(a.journal.is_none() && b.journal.is_some());
    }
    let names: Vec<String> = r.results.iter().map(|r| r.scenario.name()).collect();
    assert_eq!(names, ["xp-sp2__full-cone", "xp-sp2__symmetric"]);
    // The same scenario gives the same result alone or in the full run.
    let full = run_lab(&LabOptions {
        seed: 1,
        ..LabOptions::default()
    })
    .unwrap();
    let same = full
        .results
        .iter()
        .find(|x| x.scenario.name() == "xp-sp2__symmetric")
        .unwrap();
    assert_eq!(same.observed, r.results[1].observed);
    let e = run_lab(&LabOptions {
        seed: 1,
        profiles: vec![Profile::Miredo],
        nats: vec![],
        pcap_dir: Some(PathBuf::from("/proc/no/such/dir")),
        journal: false,
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("cannot create pcap directory"),
        "{e}"
    );
}

#[test]
fn retransmissions_without_a_server() {
    // rfc5991: restricted RS at 0, 4, 8 s; offline at 12 s; starts over 100 s later.
    let s = custom(
        Profile::Rfc5991,
        NatPreset::PortRestricted,
        Variant::ServerDown,
    );
    let (mut sim, _) = lab::build(&s, 1, false).unwrap();
    let seen = tap(&mut sim);
    sim.run_for(secs(130)).unwrap();
    let log = rs_log(&seen);
    let times: Vec<u64> = log.iter().map(|(t, _, _)| t.as_secs()).collect();
    assert_eq!(times, [0, 4, 8, 112, 116, 120]);
    assert!(log
        .iter()
        .all(|(_, to, ll)| *to == SocketAddrV4::new(SERVER, 3544) && *ll == LL_WINDOWS_RESTRICTED));
    let node = sim.client(0).unwrap();
    let failures: Vec<(Duration, Event)> = node
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Failed { .. }))
        .cloned()
        .collect();
    assert_eq!(
        failures,
        [
            (
                secs(12),
                Event::Failed {
                    error: ClientError::PrimaryUnreachable
                }
            ),
            (
                secs(124),
                Event::Failed {
                    error: ClientError::PrimaryUnreachable
                }
            ),
        ]
    );
    assert_eq!(
        node.client.error().unwrap().to_string(),
        "cannot reach primary Teredo server over UDP"
    );
    assert_eq!(sim.counters().server_unreachable, 6);

    // xp-sp2: three cone RSs, then three restricted RSs, offline at 24 s.
    let s = custom(
        Profile::XpSp2,
        NatPreset::PortRestricted,
        Variant::ServerDown,
    );
    let (mut sim, _) = lab::build(&s, 1, false).unwrap();
    let seen = tap(&mut sim);
    sim.run_for(secs(30)).unwrap();
    let log = rs_log(&seen);
    let got: Vec<(u64, std::net::Ipv6Addr)> =
        log.iter().map(|(t, _, ll)| (t.as_secs(), *ll)).collect();
    assert_eq!(
        got,
        [
            (0, LL_TEREDO_CONE),
            (4, LL_TEREDO_CONE),
            (8, LL_TEREDO_CONE),
            (12, LL_XP_RESTRICTED),
            (16, LL_XP_RESTRICTED),
            (20, LL_XP_RESTRICTED),
        ]
    );
    let node = sim.client(0).unwrap();
    assert_eq!(node.client.state(), State::Offline);
    assert!(node.events.contains(&(
        secs(24),
        Event::Failed {
            error: ClientError::PrimaryUnreachable
        }
    )));
}

#[test]
fn refresh_every_30_seconds() {
    // rfc5991: randomized refresh 75-100 % of 30 s after the last RA, to the primary.
    let s = find("rfc5991__port-restricted");
    let (mut sim, _) = lab::build(&s, 5, false).unwrap();
    let seen = tap(&mut sim);
    sim.run_for(secs(600)).unwrap();
    let log = rs_log(&seen);
    // RS to the primary, RS to the secondary, then refreshes to the primary only.
    assert_eq!(log[1].1, SocketAddrV4::new(SECONDARY, 3544));
    let refreshes: Vec<Duration> = log[2..].iter().map(|(t, _, _)| *t).collect();
    assert!(log[2..]
        .iter()
        .all(|(_, to, _)| *to == SocketAddrV4::new(SERVER, 3544)));
    assert!((20..=27).contains(&refreshes.len()), "{}", refreshes.len());
    // The first refresh counts from the qualifying RA (40 ms), the others from the refresh
    // RA (20 ms after its RS).
    let mut last_ra = Duration::from_millis(40);
    let mut gaps = Vec::new();
    for t in &refreshes {
        let gap = *t - last_ra;
        assert!(
            gap >= Duration::from_millis(22_500) && gap <= secs(30),
            "refresh {gap:?} after the RA"
        );
        gaps.push(gap);
        last_ra = *t + Duration::from_millis(20);
    }
    gaps.sort();
    gaps.dedup();
    assert!(gaps.len() > 5, "randomized: {gaps:?}");
    let node = sim.client(0).unwrap();
    assert_eq!(node.client.state(), State::Qualified);
    assert_eq!(node.client.counters().address_changes, 0);

    // Miredo: exactly 30 s after the previous RS.
    let s = find("miredo__port-restricted");
    let (mut sim, _) = lab::build(&s, 5, false).unwrap();
    let seen = tap(&mut sim);
    sim.run_for(secs(300)).unwrap();
    let times: Vec<Duration> = rs_log(&seen).iter().map(|(t, _, _)| *t).collect();
    let want: Vec<Duration> = (0..=10).map(|k| secs(30 * k)).collect();
    assert_eq!(times, want);
}

#[test]
fn short_mapping_timeout_gives_a_new_address() {
    let s = find("rfc5991__port-restricted__mapping-timeout-20s");
    let (mut sim, _) = lab::build(&s, 1, false).unwrap();
    sim.run_for(secs(90)).unwrap();
    let node = sim.client(0).unwrap();
    let changes: Vec<(Duration, Event)> = node
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::AddressChanged { .. }))
        .cloned()
        .collect();
    assert!(!changes.is_empty());
    let (at, Event::AddressChanged { old, new }) = changes[0] else {
        unreachable!()
    };
    let Some((_, Event::AddressChanged { new: last, .. })) = changes.last() else {
        unreachable!()
    };
    // The first refresh comes 22.5-30 s after qualifying (at 40 ms).
    assert!(at > secs(22) && at < secs(31), "{at:?}");
    let (old, new) = (
        TeredoAddr::from_ipv6(&old).unwrap(),
        TeredoAddr::from_ipv6(&new).unwrap(),
    );
    assert_ne!(old.mapped, new.mapped);
    assert_eq!(old.mapped.ip(), new.mapped.ip());
    assert_eq!(
        Some(TeredoAddr::from_ipv6(last).unwrap().mapped),
        node.client.mapping()
    );
    assert_eq!(node.client.address(), Some(*last));
    assert_eq!(node.client.state(), State::Qualified);
    let nat = node.nat.as_ref().unwrap().counters();
    assert!(nat.mappings_expired >= 1, "{nat:?}");
    // With the default 120 s timeout nothing changes.
    let s = find("rfc5991__port-restricted");
    let r = run_scenario(&s, 1, false).unwrap();
    assert_eq!(r.observed.address_changes, 0);
}

#[test]
fn spoofed_router_advertisements_never_qualify() {
    let r = run_scenario(&find("rfc5991__full-cone__spoofed-ra"), 1, false).unwrap();
    let o = &r.observed;
    assert!(r.ok(), "{:?}", r.mismatches);
    assert_eq!(o.state, State::Offline);
    assert_eq!(o.first_qualified, None);
    assert_eq!(o.ra_accepted, 0);
    // 3 RSs x 7 forgeries, each refused for its own reason.
    assert_eq!(o.ra_rejected, 21);
    assert_eq!(o.rejected.get("bad_nonce"), Some(&6), "{:?}", o.rejected);
    assert_eq!(o.rejected.get("missing_origin"), Some(&3));
    assert_eq!(o.rejected.get("foreign_prefix"), Some(&3));
    assert_eq!(o.rejected.get("unexpected_source"), Some(&6));
    // The truncated one: a wire-format reason, whichever the parser names.
    let named: u64 = [
        "bad_nonce",
        "missing_origin",
        "foreign_prefix",
        "unexpected_source",
    ]
    .iter()
    .filter_map(|r| o.rejected.get(r))
    .sum();
    assert_eq!(o.ra_rejected - named, 3, "{:?}", o.rejected);
    assert_eq!(o.net.datagrams, 3 + 21);

    // Behind a port-restricted NAT the forgeries from another port or address never get
    // in: the NAT counts them; the others still reach the client and are refused.
    let s = custom(
        Profile::Rfc5991,
        NatPreset::PortRestricted,
        Variant::SpoofedRa,
    );
    let r = run_scenario(&s, 1, false).unwrap();
    let o = &r.observed;
    assert_eq!(o.state, State::Offline);
    assert_eq!(o.ra_accepted, 0);
    assert_eq!(o.nat_drops["filtered"], 6);
    assert_eq!(o.ra_rejected, 15);
    assert_eq!(o.rejected.get("unexpected_source"), None);

    // The attacker's address really was on the wire.
    let (mut sim, _) = lab::build(&find("rfc5991__full-cone__spoofed-ra"), 1, false).unwrap();
    sim.run_for(secs(13)).unwrap();
    assert!(sim
        .trace()
        .iter()
        .any(|e| e.sender == Sender::Injected && *e.from.ip() == ATTACKER));
}

#[test]
fn dormant_client_wakes_up_on_activity() {
    let s = find("win7__port-restricted__idle-61min");
    let (mut sim, _) = lab::build(&s, 1, false).unwrap();
    sim.run_for(secs(62 * 60)).unwrap();
    let node = sim.client(0).unwrap();
    assert_eq!(node.client.state(), State::Dormant);
    let dormant_at = node
        .events
        .iter()
        .find(|(_, e)| *e == Event::StateChanged(State::Dormant))
        .unwrap()
        .0;
    // Qualified at 0.04 s (two round trips: primary, then secondary; no cone probe), dormant
    // 60 minutes later.
    assert_eq!(dormant_at, Duration::from_millis(40) + secs(3600));
    let sent = sim.trace().len();
    sim.run_for(secs(600)).unwrap();
    assert_eq!(sim.trace().len(), sent, "no refresh while dormant");
    let now = sim.now();
    sim.client_mut(0).unwrap().client.note_activity(now);
    sim.run_for(secs(20)).unwrap();
    let node = sim.client(0).unwrap();
    assert_eq!(node.client.state(), State::Qualified);
    assert_eq!(node.client.nat_type(), NatType::Restricted);
}

#[test]
fn data_path_literal_cells() {
    let run = |name: &str| run_scenario(&find(name), 1, false).unwrap().observed;

    let o = run("rfc5991__port-restricted");
    for p in [&o.data.ping_strict, &o.data.ping_lenient, &o.data.teredo] {
        let p = p.as_ref().unwrap();
        assert_eq!((p.sent, p.received, p.refused), (3, 3, 0), "{p:?}");
        assert!(p.relay_drops.is_empty(), "{p:?}");
    }
    assert_eq!(o.data_rejected, 0);

    // Strict relay: the symmetric NAT's new mapping toward the relay is "spoofed"; one drop
    // per indirect bubble the relay sends (1 + 3 retransmissions) before it gives up.
    let o = run("vista__symmetric");
    let strict = o.data.ping_strict.as_ref().unwrap();
    assert_eq!((strict.sent, strict.received), (3, 0));
    assert_eq!(strict.relay_drops.get("spoofed_source"), Some(&4));
    // The client's four echo tests went unanswered: the three queued pings are dropped.
    assert_eq!(strict.client_drops.get("peer_unreachable"), Some(&3));
    assert_eq!(o.data.ping_lenient.as_ref().unwrap().received, 3);
    let t = o.data.teredo.as_ref().unwrap();
    assert_eq!(t.received, 0);
    assert!(t.nat_drops.get("filtered").is_some_and(|n| *n > 0));

    // Offline: no data path at all.
    let o = run("xp-sp2__symmetric");
    assert_eq!(o.data, lab::DataObserved::default());
    // Named scenarios have none either.
    let o = run("win7__port-restricted__idle-61min");
    assert_eq!(o.data, lab::DataObserved::default());
}

#[test]
fn a_wrong_data_expectation_is_a_mismatch() {
    let s = find("vista__symmetric").data(lab::DataExpect {
        ping_strict: lab::PathExpect::All,
        ..lab::DATA_SYMMETRIC_NONCE
    });
    let r = run_scenario(&s, 1, false).unwrap();
    assert_eq!(
        r.mismatches,
        ["ping (strict): 0/3 relay spoofed_source=4 (expected 3/3)"]
    );
    let s = find("xp-sp2__symmetric").data(lab::DATA_OPEN);
    let r = run_scenario(&s, 1, false).unwrap();
    assert_eq!(r.mismatches.len(), 3, "{:?}", r.mismatches);
    assert!(r.mismatches[0].starts_with("ping (strict): no data path (expected 3/3)"));
}

#[test]
fn lenient_relay_trusts_the_nonce_or_the_link_local() {
    // Vista answers the relay's indirect bubble with its nonce trailer, Miredo with a
    // direct bubble to the relay's per-peer link-local: either proves it to a lenient relay.
    for name in ["vista__symmetric", "miredo__symmetric"] {
        let (mut sim, _) =
            lab::build_with(&find(name), 1, false, teredo::relay::TrustPolicy::Lenient).unwrap();
        sim.run_for(secs(90)).unwrap();
        let x = sim.client(0).unwrap().client.address().unwrap();
        let ping = netsim::packets::echo_request(x, lab::ECHO_HOST, 1, 1, b"abc").unwrap();
        sim.send_ipv6(0, &ping).unwrap();
        sim.run_for(secs(5)).unwrap();
        let relay = sim.relay().unwrap();
        assert_eq!(relay.counters().lenient_accepts, 1, "{name}");
        let peer = relay.peer(&x).unwrap();
        assert!(peer.trusted, "{name}");
        // The mapping the relay uses is not the one in the address.
        assert_ne!(Some(peer.mapping), sim.client(0).unwrap().client.mapping());
        let replies = sim.client(0).unwrap().delivered.len();
        assert_eq!(replies, 1, "{name}");
        // The relay's packets went out on the Internet as the relay.
        assert!(sim
            .trace()
            .iter()
            .any(|e| e.sender == Sender::Relay && e.from == lab::RELAY_ADDR));
    }
}

#[test]
fn udp_echo_through_server_and_relay() {
    use std::net::SocketAddrV6;
    let (mut sim, _) = lab::build(&find("win7__restricted"), 1, false).unwrap();
    sim.run_for(secs(30)).unwrap();
    let x = sim.client(0).unwrap().client.address().unwrap();
    let src = SocketAddrV6::new(x, 40000, 0, 0);
    let dst = SocketAddrV6::new(lab::ECHO_HOST, netsim::packets::UDP_ECHO_PORT, 0, 0);
    for k in 0..3u8 {
        let d = netsim::packets::udp_datagram(src, dst, &[k; 100]).unwrap();
        assert_eq!(sim.send_ipv6(0, &d), Ok(()));
        sim.run_for(secs(1)).unwrap();
    }
    let got: Vec<Vec<u8>> = sim
        .client(0)
        .unwrap()
        .delivered
        .iter()
        .filter_map(|(_, p)| match netsim::packets::parse(p) {
            Some(netsim::packets::Parsed::Udp {
                src: from,
                dst: to,
                payload,
            }) if from == dst && to == src => Some(payload.to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(got, [vec![0u8; 100], vec![1; 100], vec![2; 100]]);
    let h = sim.echo_host().unwrap();
    // The direct IPv6 connectivity test is an ICMPv6 echo, then the datagrams.
    assert_eq!((h.echo_requests, h.udp_datagrams, h.answered), (1, 3, 4));
    let c = sim.client(0).unwrap().client.counters();
    assert_eq!((c.echo_tests_sent, c.echo_tests_ok), (1, 1));
}

#[test]
fn server_restart_keeps_the_address() {
    for name in [
        "rfc5991__port-restricted__server-restart",
        "miredo__port-restricted__server-restart",
    ] {
        let r = run_scenario(&find(name), 1, false).unwrap();
        assert!(r.ok(), "{name}: {:?}", r.mismatches);
        let f = r.observed.fault.as_ref().unwrap();
        assert!(f.address_before.is_some());
        assert_eq!(f.address_before, r.observed.address, "{name}");
        assert!(
            f.ras_after >= 1,
            "{name}: the new server answered a refresh"
        );
        assert_eq!(f.failures_after, 0);
        assert_eq!(r.observed.address_changes, 0);
        assert_eq!(r.observed.net.server_restarts, 1);
        assert!(
            r.observed.net.server_unreachable == 0 || r.observed.net.server_unreachable <= 2,
            "at most 2 RSs fall into the 5 s downtime"
        );
        let p = f.outbound.as_ref().unwrap();
        assert_eq!((p.sent, p.received), (3, 3));
    }
}

#[test]
fn dead_server_goes_offline_after_the_profiles_retries() {
    let cases = [
        ("rfc5991__port-restricted__server-down", 0, 12),
        ("xp-sp2__port-restricted__server-down", 0, 24),
        ("miredo__port-restricted__server-down", 0, 12),
        ("rfc5991__port-restricted__server-dies", 40, 12),
    ];
    for (name, fault_at, after) in cases {
        let r = run_scenario(&find(name), 1, false).unwrap();
        assert!(r.ok(), "{name}: {:?}", r.mismatches);
        let o = &r.observed;
        assert_eq!(o.state, State::Offline, "{name}");
        assert_eq!(
            o.status.error.as_deref(),
            Some("cannot reach primary Teredo server over UDP"),
            "{name}"
        );
        assert_eq!(o.address, None);
        let f = o.fault.as_ref().unwrap();
        let lost = f.first_lost_rs.unwrap();
        assert!(lost >= secs(fault_at), "{name}: {lost:?}");
        assert_eq!(f.offline_at.unwrap() - lost, secs(after), "{name}");
    }
    // Mid-session: the failing exchange is a refresh (after the fault, within one refresh
    // interval of it).
    let r = run_scenario(&find("rfc5991__port-restricted__server-dies"), 1, false).unwrap();
    let f = r.observed.fault.unwrap();
    assert!(f.first_lost_rs.unwrap() < secs(40 + 30));
    assert_eq!(r.observed.nat, NatType::Restricted, "NAT type remembered");
}

#[test]
fn nat_reboot_gives_a_new_address_with_the_new_mapping() {
    for name in [
        "rfc5991__port-restricted__nat-reboot",
        "vista__port-restricted__nat-reboot",
    ] {
        let s = find(name);
        let (mut sim, _) = lab::build(&s, 1, false).unwrap();
        let f = client_sim::faults::run_fault(&s, 1, &mut sim).unwrap();
        let node = sim.client(0).unwrap();
        let nat = node.nat.as_ref().unwrap();
        assert_eq!(nat.counters().reboots, 1);
        assert!(nat.counters().mappings_flushed >= 1);
        let before = TeredoAddr::from_ipv6(&f.address_before.unwrap()).unwrap();
        let after = TeredoAddr::from_ipv6(&f.address_after.unwrap()).unwrap();
        assert_ne!(before.mapped, after.mapped, "{name}");
        assert_eq!(Some(after.mapped), f.nat_mapping, "{name}");
        let changed: Vec<_> = node
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::AddressChanged { .. }))
            .collect();
        assert_eq!(changed.len(), 1, "{name}: {changed:?}");
        assert!(changed[0].0 > secs(40), "{name}: detected after the reboot");
        let p = f.outbound.unwrap();
        assert_eq!((p.sent, p.received), (3, 3), "{name}");
    }
}

#[test]
fn relay_restart_bubbles_again_and_data_resumes() {
    let s = find("rfc5991__port-restricted__relay-restart");
    let (mut sim, _) = lab::build(&s, 1, false).unwrap();
    let f = client_sim::faults::run_fault(&s, 1, &mut sim).unwrap();
    assert_eq!(sim.counters().relay_restarts, 1);
    let relay = sim.relay().unwrap().counters();
    assert!(f.relay_bubbles_after >= 1);
    assert_eq!(relay.bubbles_sent, f.relay_bubbles_after, "a fresh relay");
    assert!(relay.peers_created >= 1, "the peer was learned again");
    for p in [&f.before, &f.inbound, &f.outbound] {
        let p = p.as_ref().unwrap();
        assert_eq!((p.sent, p.received), (3, 3));
    }
    assert_eq!(sim.echo_host().unwrap().echo_replies, 3);
    let r = run_scenario(&s, 1, false).unwrap();
    assert!(r.ok(), "{:?}", r.mismatches);
}

/// The client sends first after the relay restart: the default relay takes it as a new
/// trusted peer at once; one that drops unknown clients (Miredo) blackholes it until the
/// client's entry goes stale and its echo test makes the relay bubble.
#[test]
fn relay_restart_client_first_depends_on_the_unknown_peer_policy() {
    let accept = find("rfc5991__port-restricted__relay-restart-client-first");
    let (mut sim, _) = lab::build(&accept, 1, false).unwrap();
    let f = client_sim::faults::run_fault(&accept, 1, &mut sim).unwrap();
    let relay = sim.relay().unwrap().counters();
    assert_eq!(relay.unknown_peers_accepted, 1);
    assert_eq!(relay.bubbles_sent, 0);
    assert!(f.resumed_after.unwrap() <= secs(2), "{f:?}");
    let out = f.outbound.unwrap();
    assert_eq!((out.sent, out.received), (40, 40));

    let drop = find("rfc5991__port-restricted__relay-restart-client-first-drop-unknown");
    let (mut sim, _) = lab::build(&drop, 1, false).unwrap();
    let f = client_sim::faults::run_fault(&drop, 1, &mut sim).unwrap();
    let relay = sim.relay().unwrap().counters();
    assert_eq!(relay.unknown_peers_accepted, 0);
    assert!(relay.dropped(DropReason::UnknownPeer) >= 10, "{relay:?}");
    assert!(relay.bubbles_sent >= 1);
    let resumed = f.resumed_after.unwrap();
    assert!(resumed >= secs(10) && resumed <= secs(35), "{resumed:?}");
    let out = f.outbound.unwrap();
    assert!(out.received > 0 && out.received < out.sent, "{out:?}");
    let inbound = f.inbound.unwrap();
    assert_eq!((inbound.sent, inbound.received), (3, 3));
}

#[test]
fn loss_and_reordering_still_qualify_and_ping() {
    let s = find("rfc5991__port-restricted__loss-10pct-reorder");
    let (mut lost, mut reordered, mut retransmitted) = (0, 0, 0);
    for seed in 1..=20 {
        let r = run_scenario(&s, seed, false).unwrap();
        assert!(r.ok(), "seed {seed}: {:?}", r.mismatches);
        assert_eq!(r.observed.state, State::Qualified);
        let f = r.observed.fault.unwrap();
        assert!(f.outbound.unwrap().received >= 5);
        lost += f.nat_lost;
        reordered += f.reordered;
        retransmitted += f.rs_retransmissions;
        assert_eq!(
            f.nat_lost,
            r.observed.nat_drops[NatDrop::Lost.as_str()],
            "seed {seed}"
        );
    }
    assert!(lost > 20, "10 % loss happened: {lost}");
    assert!(reordered > 20, "reordering happened: {reordered}");
    assert!(
        retransmitted > 0,
        "some RS was retransmitted: {retransmitted}"
    );
}

#[test]
fn a_wrong_fault_expectation_is_a_mismatch() {
    // Claim the NAT reboot keeps the address.
    let s = Scenario {
        fault: FaultExpect::AddressKept,
        ..find("rfc5991__port-restricted__nat-reboot")
    };
    let r = run_scenario(&s, 1, false).unwrap();
    assert!(!r.ok());
    assert!(
        r.mismatches[0].contains("(expected unchanged)"),
        "{:?}",
        r.mismatches
    );
    // And that a dead server takes 24 s for rfc5991.
    let s = Scenario {
        fault: FaultExpect::OfflineAfter(secs(24)),
        ..find("rfc5991__port-restricted__server-down")
    };
    let r = run_scenario(&s, 1, false).unwrap();
    assert_eq!(
        r.mismatches,
        ["offline at 12.0 s after the first unanswered RS at 0.0 s (expected 24 s later)"]
    );
}
