//! Qualification, refresh, dormant state, status and names.

use std::collections::HashSet;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use rand::RngCore;

use crate::addr::server_link_local;
use crate::addr::{
    TeredoAddr, FLAG_CONE, FLAG_RANDOM_MASK, LL_MIREDO_RESTRICTED, LL_TEREDO_CONE, LL_WINDOWS_CONE,
    LL_WINDOWS_RESTRICTED, TEREDO_PREFIX, TEREDO_PREFIX_OBSOLETE,
};
use crate::client::counters::*;
use crate::client::*;
use crate::io::Local;
use crate::wire::ipv6::emit_bubble;
use crate::wire::ipv6::finish_icmpv6;
use crate::wire::TeredoPacket;
use crate::DropReason;

use super::net::*;

/// Expected outcome of qualification: (state, NAT type, C bit, error).
fn expected(p: Profile, k: NatKind) -> (State, NatType, bool, Option<ClientError>) {
    use NatKind::*;
    use NatType as N;
    let q = State::Qualified;
    let sym_off = |n| (State::Offline, n, false, Some(ClientError::SymmetricNat));
    match (p, k) {
        (Profile::XpSp2, NoNat) => (q, N::None, true, None),
        (Profile::XpSp2, Cone) => (q, N::Cone, true, None),
        (Profile::XpSp2, Restricted) => (q, N::Restricted, false, None),
        (Profile::XpSp2 | Profile::Rfc5991, SymPort) => sym_off(N::SymmetricPort),
        (Profile::XpSp2 | Profile::Rfc5991, SymAddr) => sym_off(N::SymmetricAddress),
        (Profile::Rfc5991 | Profile::Miredo, NoNat) => (q, N::None, false, None),
        (Profile::Rfc5991 | Profile::Miredo, Cone | Restricted) => (q, N::Restricted, false, None),
        (Profile::Vista | Profile::Win7, NoNat) => (q, N::None, false, None),
        // No cone probe (RFC 5991 §3.2): a cone NAT looks restricted.
        (Profile::Vista | Profile::Win7, Cone) => (q, N::Restricted, false, None),
        (Profile::Vista | Profile::Win7, Restricted) => (q, N::Restricted, false, None),
        (Profile::Vista | Profile::Win7, SymPort) => (q, N::SymmetricPort, false, None),
        (Profile::Vista | Profile::Win7, SymAddr) => (q, N::SymmetricAddress, false, None),
        (Profile::Miredo, SymPort | SymAddr) => (q, N::Restricted, false, None),
    }
}

#[test]
fn profile_matrix() {
    for &p in Profile::ALL {
        for k in KINDS {
            let mut lab = Lab::profile(p, k);
            lab.run_for(secs(60));
            let (state, nat, cone, error) = expected(p, k);
            let ctx = format!("{p} behind {k:?}: {:?}", lab.client.status());
            assert_eq!(lab.client.state(), state, "{ctx}");
            assert_eq!(lab.client.nat_type(), nat, "{ctx}");
            assert_eq!(lab.client.error(), error, "{ctx}");
            assert!(lab.drops.is_empty(), "{ctx}: {:?}", lab.drops);
            let cfg = ClientConfig::profile(p, P);
            // RS link-locals are the profile's.
            for (_, _, src) in &lab.rs_log {
                assert!(*src == cfg.ll_restricted || *src == cfg.ll_cone, "{ctx}");
            }
            if state != State::Qualified {
                assert_eq!(lab.client.address(), None, "{ctx}");
                assert_eq!(
                    lab.client.error().unwrap().to_string(),
                    "client behind symmetric NAT"
                );
                assert!(lab.events.iter().any(|(_, e)| *e
                    == Event::Failed {
                        error: ClientError::SymmetricNat
                    }));
                continue;
            }
            let a = lab.addr();
            assert_eq!(a.server, P, "{ctx}");
            assert_eq!(a.is_cone(), cone, "{ctx}");
            let want_mapping = match k {
                NatKind::NoNat => GLOBAL,
                NatKind::Cone | NatKind::Restricted => EXT,
                // M1 is the mapping towards the primary.
                NatKind::SymPort => SocketAddrV4::new(*EXT.ip(), EXT.port() + 1),
                NatKind::SymAddr => SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 6), 40000),
            };
            assert_eq!(a.mapped, want_mapping, "{ctx}");
            assert_eq!(lab.client.mapping(), Some(want_mapping), "{ctx}");
            let random = a.flags & !FLAG_CONE;
            assert_eq!(
                random & !FLAG_RANDOM_MASK,
                0,
                "{ctx}: flags {:#06x}",
                a.flags
            );
            if !cfg.random_flags {
                assert_eq!(random, 0, "{ctx}");
            }
            assert_eq!(
                lab.qualified_events(),
                vec![(lab.client.address().unwrap(), nat)],
                "{ctx}"
            );
        }
    }
}

#[test]
fn random_bits_are_random_and_deterministic() {
    let flags = |seed| {
        let mut lab = Lab::new(
            ClientConfig::profile(Profile::Rfc5991, P),
            NatKind::Restricted,
            seed,
        );
        lab.run_for(secs(1));
        lab.addr().flags
    };
    assert_eq!(flags(1), flags(1));
    let all: HashSet<u16> = (0..16).map(flags).collect();
    assert!(all.len() > 8, "{all:?}");
    assert!(all.iter().all(|f| f & !FLAG_RANDOM_MASK == 0));
}

#[test]
fn message_flow_timing() {
    // A Vista-like client with the cone probe on, behind a restricted NAT: 3 cone RSs 4 s
    // apart, then restricted + secondary.
    let mut cfg = ClientConfig::profile(Profile::Vista, P);
    cfg.cone_probe = true;
    let mut lab = Lab::new(cfg, NatKind::Restricted, 7);
    lab.run_for(secs(13));
    let log: Vec<_> = lab
        .rs_log
        .iter()
        .map(|(t, to, src)| (t.as_secs(), *to.ip(), *src))
        .collect();
    assert_eq!(
        log,
        vec![
            (0, P, LL_WINDOWS_CONE),
            (4, P, LL_WINDOWS_CONE),
            (8, P, LL_WINDOWS_CONE),
            (12, P, LL_WINDOWS_RESTRICTED),
            (12, S, LL_WINDOWS_RESTRICTED),
        ]
    );
    let states: Vec<_> = lab
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::StateChanged(s) => Some((t.as_secs(), *s)),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![
            (0, State::Probe(ProbePhase::Cone)),
            (12, State::Probe(ProbePhase::Restricted)),
            (12, State::Probe(ProbePhase::Secondary)),
            (12, State::Qualified),
        ]
    );
    // Cone NAT: the cone RS is answered from the secondary address and qualifies at once.
    let mut lab = Lab::profile(Profile::XpSp2, NatKind::Cone);
    lab.run_for(secs(1));
    assert_eq!(lab.rs_times(), vec![0]);
    assert_eq!(lab.client.state(), State::Qualified);
    // Miredo: a single restricted RS to the primary.
    let mut lab = Lab::profile(Profile::Miredo, NatKind::Restricted);
    lab.run_for(secs(1));
    assert_eq!(
        lab.rs_log,
        vec![(
            Duration::ZERO,
            SocketAddrV4::new(P, 3544),
            LL_MIREDO_RESTRICTED
        )]
    );
}

#[test]
fn unreachable_server_goes_offline_then_retries() {
    for &p in Profile::ALL {
        let cfg = ClientConfig::profile(p, P);
        let mut lab = Lab::with_server(cfg.clone(), NatKind::Restricted, 7, false);
        lab.run_for(secs(200));
        // 4 s × 3 per phase; the cone phase (if any) first.
        let phase = if cfg.cone_probe { 24 } else { 12 };
        let first_round: Vec<u64> = (0..phase / 4).map(|i| i * 4).collect();
        let times = lab.rs_times();
        assert_eq!(&times[..first_round.len()], &first_round[..], "{p}");
        // Retry after 100 s offline.
        assert_eq!(times[first_round.len()], phase + 100, "{p}");
        let failed: Vec<_> = lab
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Failed { .. }))
            .map(|(t, e)| (t.as_secs(), *e))
            .collect();
        assert_eq!(
            failed[0],
            (
                phase,
                Event::Failed {
                    error: ClientError::PrimaryUnreachable
                }
            ),
            "{p}"
        );
        // Observe the offline state between attempts.
        let mut lab = Lab::with_server(cfg, NatKind::Restricted, 7, false);
        lab.run_for(secs(phase + 1));
        assert_eq!(lab.client.state(), State::Offline, "{p}");
        assert_eq!(
            lab.client.error().map(|e| e.to_string()).as_deref(),
            Some("cannot reach primary Teredo server over UDP")
        );
        assert_eq!(lab.client.address(), None);
        assert_eq!(
            lab.client.poll_timeout(),
            Some(lab.t0 + secs(phase + 100)),
            "{p}"
        );
        // The server comes back: the retry qualifies.
        lab.server_up = true;
        lab.run_for(secs(120));
        assert_eq!(lab.client.state(), State::Qualified, "{p}");
        assert_eq!(lab.client.error(), None);
    }
}

#[test]
fn secondary_unreachable() {
    let mut cfg = ClientConfig::profile(Profile::Rfc5991, P);
    cfg.secondary = Some(Ipv4Addr::new(198, 51, 100, 99));
    let mut lab = Lab::new(cfg, NatKind::Restricted, 1);
    lab.run_for(secs(13));
    assert_eq!(lab.client.state(), State::Offline);
    assert_eq!(lab.client.error(), Some(ClientError::SecondaryUnreachable));
    assert_eq!(lab.rs_times(), vec![0, 0, 4, 8]);
}

#[test]
fn symmetric_offline_retries_and_miredo_never_probes_secondary() {
    let mut lab = Lab::profile(Profile::XpSp2, NatKind::SymPort);
    lab.run_for(secs(13));
    assert_eq!(lab.client.state(), State::Offline);
    assert_eq!(lab.client.nat_type(), NatType::SymmetricPort);
    let st = lab.client.status();
    assert_eq!(st.error, Some(ClientError::SymmetricNat));
    assert!(st
        .to_string()
        .contains("Error                   : client behind symmetric NAT"));
    assert!(st
        .to_string()
        .contains("NAT                     : symmetric (port)"));
    lab.run_for(secs(100));
    assert!(matches!(lab.client.state(), State::Probe(_)));
    let mut lab = Lab::profile(Profile::Miredo, NatKind::SymAddr);
    lab.run_for(secs(100));
    assert!(lab.rs_log.iter().all(|(_, to, _)| *to.ip() == P));
}

/// Gaps between the qualifying RS at `qualified_at` and the refresh RSs after it.
fn refresh_gaps(lab: &Lab, qualified_at: Duration) -> Vec<f64> {
    let t: Vec<f64> = std::iter::once(qualified_at)
        .chain(
            lab.rs_log
                .iter()
                .map(|(t, _, _)| *t)
                .filter(|t| *t > qualified_at),
        )
        .map(|t| t.as_secs_f64())
        .collect();
    t.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn refresh_intervals() {
    // Miredo: exactly 30 s after the previous RS.
    let mut lab = Lab::profile(Profile::Miredo, NatKind::Restricted);
    lab.run_for(secs(301));
    assert_eq!(
        lab.rs_times(),
        vec![0, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300]
    );
    let first = lab.client.address();
    assert_eq!(lab.client.counters().ra_accepted, 11);
    assert_eq!(lab.client.counters().rs_sent, 11);
    // Randomized: within 75–100 % of 30 s, not all equal, refresh RS to the primary
    // with the link-local that qualified.
    for (p, kind, ll) in [
        (Profile::Rfc5991, NatKind::Restricted, LL_WINDOWS_RESTRICTED),
        (Profile::Vista, NatKind::Restricted, LL_WINDOWS_RESTRICTED),
        (Profile::Vista, NatKind::Cone, LL_WINDOWS_RESTRICTED),
        (Profile::Win7, NatKind::SymPort, LL_WINDOWS_RESTRICTED),
        (Profile::XpSp2, NatKind::Cone, LL_TEREDO_CONE),
    ] {
        let mut lab = Lab::profile(p, kind);
        lab.run_for(secs(25));
        let qualified_at = lab.rs_log.last().unwrap().0;
        let addr = lab.client.address().unwrap();
        let n = lab.rs_log.len();
        lab.run_for(secs(600));
        assert_eq!(lab.client.state(), State::Qualified, "{p}");
        assert_eq!(lab.client.address(), Some(addr), "{p}: flags kept");
        let refreshes = &lab.rs_log[n..];
        assert!(refreshes.len() >= 20, "{p}: {}", refreshes.len());
        assert!(
            refreshes
                .iter()
                .all(|(_, to, src)| *to == SocketAddrV4::new(P, 3544) && *src == ll),
            "{p}"
        );
        let gaps = refresh_gaps(&lab, qualified_at);
        assert!(
            gaps.iter().all(|g| (22.5..=30.0).contains(g)),
            "{p}: {gaps:?}"
        );
        let distinct: HashSet<u64> = gaps.iter().map(|g| (g * 1000.0) as u64).collect();
        assert!(distinct.len() > 5, "{p}: {gaps:?}");
        assert!(lab.drops.is_empty());
    }
    assert!(first.is_some());
}

#[test]
fn mapping_change_gives_new_address() {
    for &p in Profile::ALL {
        let mut lab = Lab::profile(p, NatKind::Restricted);
        lab.run_for(secs(40));
        let old = lab.client.address().unwrap();
        let old_flags = lab.addr().flags;
        let ext2 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 41000);
        lab.nat.rebind(ext2);
        lab.run_for(secs(31));
        let new = lab.client.address().unwrap();
        assert_ne!(old, new, "{p}");
        let a = lab.addr();
        assert_eq!(a.mapped, ext2, "{p}");
        assert_eq!(a.server, P);
        assert_eq!(a.flags & !(FLAG_RANDOM_MASK | FLAG_CONE), 0);
        if !lab.client.config().random_flags {
            assert_eq!(a.flags, old_flags);
        }
        let changes: Vec<_> = lab
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::AddressChanged { .. }))
            .map(|(_, e)| *e)
            .collect();
        assert_eq!(changes, vec![Event::AddressChanged { old, new }], "{p}");
        assert_eq!(lab.client.counters().address_changes, 1);
        assert_eq!(lab.client.state(), State::Qualified);
        // Stable afterwards.
        lab.run_for(secs(120));
        assert_eq!(lab.client.address(), Some(new), "{p}");
    }
}

#[test]
fn refresh_failure_goes_offline() {
    let mut lab = Lab::profile(Profile::Miredo, NatKind::Restricted);
    lab.run_for(secs(1));
    lab.server_up = false;
    lab.run_for(secs(60));
    // RS at 30, 34, 38 unanswered: offline at 42 (Miredo: "down ≈12 s after the refresh").
    assert_eq!(lab.rs_times(), vec![0, 30, 34, 38]);
    assert_eq!(lab.client.state(), State::Offline);
    assert_eq!(lab.client.address(), None);
    assert!(lab.events.contains(&(
        secs(42),
        Event::Failed {
            error: ClientError::PrimaryUnreachable
        }
    )));
}

#[test]
fn bad_ras_are_rejected_with_their_reason() {
    let (mut c, now, nonce, ll) = probing(Profile::Miredo);
    let from = SocketAddrV4::new(P, 3544);
    let good = ra(Some(nonce), ll, P, Some(1280));
    let mut cases: Vec<(&str, SocketAddrV4, Vec<u8>, DropReason)> = vec![
        (
            "wrong nonce",
            from,
            ra(Some([0xee; 8]), ll, P, Some(1280)),
            DropReason::BadNonce,
        ),
        (
            "no auth",
            from,
            ra(None, ll, P, Some(1280)),
            DropReason::BadNonce,
        ),
        (
            "foreign prefix",
            from,
            ra(Some(nonce), ll, Ipv4Addr::new(198, 51, 100, 7), Some(1280)),
            DropReason::ForeignPrefix,
        ),
        (
            "wrong source port",
            SocketAddrV4::new(P, 3545),
            good.clone(),
            DropReason::UnexpectedSource,
        ),
        (
            "non-server IP",
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 66), 3544),
            good.clone(),
            DropReason::UnexpectedSource,
        ),
        (
            "wrong destination",
            from,
            ra(Some(nonce), LL_WINDOWS_RESTRICTED, P, None),
            DropReason::WrongDestination,
        ),
        (
            "small MTU",
            from,
            ra(Some(nonce), ll, P, Some(1000)),
            DropReason::BadMtu,
        ),
        (
            "huge MTU",
            from,
            ra(Some(nonce), ll, P, Some(70_000)),
            DropReason::BadMtu,
        ),
        (
            "restricted RA from the secondary",
            SocketAddrV4::new(S, 3544),
            good.clone(),
            DropReason::UnexpectedServerAddress,
        ),
    ];
    // No origin indication: cut the 8 bytes after the auth header.
    let mut no_oi = good.clone();
    no_oi.drain(13..21);
    cases.push(("no OI", from, no_oi, DropReason::MissingOrigin));
    // Confirmation byte set.
    let mut conf = good.clone();
    conf[12] = 1;
    cases.push(("confirmation", from, conf, DropReason::BadConfirmation));
    // A bubble from the server.
    let mut bubble = good[..21].to_vec();
    let mut b = [0u8; 40];
    emit_bubble(&mut b, server_link_local(P), ll, 0).unwrap();
    bubble.extend_from_slice(&b);
    cases.push(("bubble", from, bubble, DropReason::NotRouterAdvertisement));
    // Broken ICMPv6 checksum.
    let mut sum = good.clone();
    let last = sum.len() - 1;
    sum[last] ^= 1;
    cases.push(("checksum", from, sum, DropReason::BadChecksum));
    // A second prefix information option.
    let mut two = good.clone();
    let pio = two[21 + 40 + 16..21 + 40 + 16 + 32].to_vec();
    two.extend_from_slice(&pio);
    let plen = u16::from_be_bytes([two[21 + 4], two[21 + 5]]) + 32;
    two[21 + 4..21 + 6].copy_from_slice(&plen.to_be_bytes());
    finish_icmpv6(&mut two[21..]);
    cases.push(("two PIOs", from, two, DropReason::Malformed));
    assert_eq!(
        c.poll_event(),
        Some(Event::StateChanged(State::Probe(ProbePhase::Restricted)))
    );
    for (what, from, bytes, reason) in &cases {
        assert_eq!(
            c.handle_udp(now, Local::Primary, *from, bytes),
            Err(*reason),
            "{what}"
        );
        assert_eq!(c.state(), State::Probe(ProbePhase::Restricted), "{what}");
        assert_eq!(c.address(), None);
        assert_eq!(c.poll_event(), None, "{what}");
    }
    assert_eq!(c.counters().ra_rejected, cases.len() as u64);
    assert_eq!(c.counters().rejected(DropReason::BadNonce), 2);
    assert_eq!(c.counters().rejected(DropReason::BadMtu), 2);
    assert_eq!(c.counters().ra_accepted, 0);
    // Truncations and garbage never panic and never qualify.
    for n in 0..good.len() {
        assert!(
            c.handle_udp(now, Local::Primary, from, &good[..n]).is_err(),
            "len {n}"
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for _ in 0..2000 {
        let len = (rng.next_u32() % 200) as usize;
        let mut junk = vec![0u8; len];
        rng.fill_bytes(&mut junk);
        if len > 1 && rng.next_u32() % 2 == 0 {
            junk[..2].copy_from_slice(&[0, 1]);
        }
        let _ = c.handle_udp(now, Local::Primary, from, &junk);
    }
    assert_eq!(c.state(), State::Probe(ProbePhase::Restricted));
    // The genuine RA still qualifies; replaying it afterwards is refused.
    assert_eq!(
        c.handle_udp(now, Local::Primary, from, &good),
        Ok(Handled::RouterAdvertisement)
    );
    assert_eq!(c.state(), State::Qualified);
    assert_eq!(c.mapping(), Some(EXT));
    assert_eq!(
        c.handle_udp(now, Local::Primary, from, &good),
        Err(DropReason::BadNonce)
    );
}

#[test]
fn obsolete_prefix_is_accepted_and_rewritten() {
    let (mut c, now, nonce, ll) = probing(Profile::Miredo);
    let mut v = ra(Some(nonce), ll, P, None);
    // PIO prefix starts 13 + 8 + 40 + 16 + 16 bytes in.
    let at = 13 + 8 + 40 + 16 + 16;
    assert_eq!(&v[at..at + 4], &TEREDO_PREFIX);
    v[at..at + 4].copy_from_slice(&TEREDO_PREFIX_OBSOLETE);
    finish_icmpv6(&mut v[21..]);
    assert_eq!(
        c.handle_udp(now, Local::Primary, SocketAddrV4::new(P, 3544), &v),
        Ok(Handled::RouterAdvertisement)
    );
    let a = c.address().unwrap();
    assert_eq!(a.octets()[..4], TEREDO_PREFIX);
    assert_eq!(TeredoAddr::from_ipv6(&a).unwrap().mapped, EXT);
}

#[test]
fn cone_ra_from_the_same_address_is_not_cone() {
    // A server that wrongly answers a cone RS from the address it arrived on must not
    // make the client conclude "cone" (RFC 5991 §3.2).
    let (mut c, now, nonce, ll) = probing(Profile::XpSp2);
    assert_eq!(ll, LL_TEREDO_CONE);
    let v = ra(Some(nonce), ll, P, None);
    assert_eq!(
        c.handle_udp(now, Local::Primary, SocketAddrV4::new(P, 3544), &v),
        Err(DropReason::UnexpectedServerAddress)
    );
    assert_eq!(
        c.handle_udp(now, Local::Primary, SocketAddrV4::new(S, 3544), &v),
        Ok(Handled::RouterAdvertisement)
    );
    assert_eq!(c.nat_type(), NatType::Cone);
    assert!(TeredoAddr::from_ipv6(&c.address().unwrap())
        .unwrap()
        .is_cone());
}

#[test]
fn every_rs_has_a_fresh_nonce_and_late_answers_count() {
    let (mut c, now, n1, ll) = probing(Profile::Miredo);
    c.handle_timeout(now + secs(4));
    let mut buf = [0u8; MAX_RS_LEN];
    let t = next_udp(&mut c, &mut buf).unwrap();
    let n2 = TeredoPacket::parse(&buf[..t.len])
        .unwrap()
        .auth
        .unwrap()
        .nonce;
    assert_ne!(n1, n2);
    assert_eq!(t.len, 61);
    // The RA to the first RS arrives late: still the current phase, accepted.
    let v = ra(Some(n1), ll, P, None);
    assert_eq!(
        c.handle_udp(
            now + secs(5),
            Local::Primary,
            SocketAddrV4::new(P, 3544),
            &v
        ),
        Ok(Handled::RouterAdvertisement)
    );
    assert_eq!(c.state(), State::Qualified);
}

#[test]
fn xp_rs_carries_slla() {
    let now = t0();
    let mut c = Client::new(
        ClientConfig::profile(Profile::XpSp2, P),
        ChaCha8Rng::seed_from_u64(3),
        PRIVATE,
        now,
    );
    let mut buf = [0u8; MAX_RS_LEN];
    let t = next_udp(&mut c, &mut buf).unwrap();
    assert_eq!(t.len, 13 + 40 + 24);
    let pkt = TeredoPacket::parse(&buf[..t.len]).unwrap();
    assert_eq!(pkt.src(), LL_TEREDO_CONE);
    crate::wire::ndp::RouterSolicitation::parse(pkt.ipv6).unwrap();
    // Too small a buffer loses the RS without panicking.
    c.handle_timeout(now + secs(4));
    assert_eq!(c.poll_output(&mut buf[..10]), None);
}

#[test]
fn win7_goes_dormant_unless_default_qualified() {
    let mut lab = Lab::profile(Profile::Win7, NatKind::Restricted);
    lab.run_for(secs(59 * 60));
    assert_eq!(lab.client.state(), State::Qualified);
    lab.run_for(secs(2 * 60));
    assert_eq!(lab.client.state(), State::Dormant);
    assert_eq!(lab.client.address(), None);
    assert_eq!(lab.client.poll_timeout(), None);
    let dormant_at = lab
        .events
        .iter()
        .find(|(_, e)| *e == Event::StateChanged(State::Dormant))
        .unwrap()
        .0;
    // Idle time counts from qualification (at once: no cone probe, no link latency here).
    assert_eq!(dormant_at, WIN7_DORMANT_AFTER);
    let n = lab.rs_log.len();
    lab.run_for(secs(3600));
    assert_eq!(lab.rs_log.len(), n, "no refresh while dormant");
    // Activity wakes it up and it qualifies again.
    let now = lab.now;
    lab.client.note_activity(now);
    lab.run_for(secs(20));
    assert_eq!(lab.client.state(), State::Qualified);
    assert_eq!(lab.qualified_events().len(), 2);

    // Activity keeps it qualified.
    let mut lab = Lab::profile(Profile::Win7, NatKind::Restricted);
    for _ in 0..12 {
        lab.run_for(secs(10 * 60));
        let now = lab.now;
        lab.client.note_activity(now);
    }
    assert_eq!(lab.client.state(), State::Qualified);

    // default_qualified: never dormant; other profiles never dormant.
    let mut cfg = ClientConfig::profile(Profile::Win7, P);
    cfg.default_qualified = true;
    let mut lab = Lab::new(cfg, NatKind::Restricted, 5);
    lab.run_for(secs(3 * 3600));
    assert_eq!(lab.client.state(), State::Qualified);
    let mut lab = Lab::profile(Profile::Vista, NatKind::Restricted);
    lab.run_for(secs(3 * 3600));
    assert_eq!(lab.client.state(), State::Qualified);
    // wake() explicitly.
    let mut lab = Lab::profile(Profile::Win7, NatKind::Cone);
    lab.run_for(secs(2 * 3600));
    assert_eq!(lab.client.state(), State::Dormant);
    let now = lab.now;
    lab.client.wake(now);
    lab.pump();
    assert_eq!(lab.client.state(), State::Qualified);
    // No cone probe: the cone NAT is reported restricted.
    assert_eq!(lab.client.nat_type(), NatType::Restricted);
}

#[test]
fn managed_network_rule() {
    for &p in Profile::ALL {
        let mut cfg = ClientConfig::profile(p, P);
        cfg.managed_network = true;
        let mut lab = Lab::new(cfg.clone(), NatKind::Restricted, 1);
        lab.run_for(secs(600));
        if p.is_windows() {
            assert_eq!(lab.client.state(), State::Offline, "{p}");
            assert!(lab.rs_log.is_empty());
            assert_eq!(lab.client.poll_timeout(), None);
            assert_eq!(
                lab.client.error().unwrap().to_string(),
                "client is in a managed network"
            );
            assert_eq!(
                lab.events,
                vec![(
                    Duration::ZERO,
                    Event::Failed {
                        error: ClientError::ManagedNetwork
                    }
                )]
            );
            assert!(lab
                .client
                .status()
                .to_string()
                .contains("Network                 : managed"));
        } else {
            assert_eq!(lab.client.state(), State::Qualified, "{p}");
        }
        cfg.client_type = ClientType::EnterpriseClient;
        let mut lab = Lab::new(cfg, NatKind::Restricted, 1);
        lab.run_for(secs(60));
        assert_eq!(lab.client.state(), State::Qualified, "{p}");
    }
}

#[test]
fn status_snapshot() {
    let mut lab = Lab::profile(Profile::Rfc5991, NatKind::Restricted);
    lab.run_for(secs(1));
    let st = lab.client.status();
    assert_eq!(st.state, State::Qualified);
    assert_eq!(st.nat, NatType::Restricted);
    assert_eq!(st.client_port, 5000);
    assert_eq!(st.local_mapping, PRIVATE);
    assert_eq!(st.external_mapping, Some(EXT));
    assert_eq!(st.port_preserving, Some(false));
    assert_eq!(st.server_name, "198.51.100.1");
    let text = st.to_string();
    for line in [
        "Type                    : client",
        "Client Refresh Interval : 30 seconds",
        "State                   : qualified",
        "NAT                     : restricted",
        "NAT Special Behaviour   : UPNP: No, PortPreserving: No",
        "Local Mapping           : 192.168.1.10:5000",
        "External NAT Mapping    : 203.0.113.5:40000",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    assert!(!text.contains("Error"));
    // Port-preserving NAT.
    let mut cfg = ClientConfig::profile(Profile::Vista, P);
    cfg.server_name = Some("teredo.example".into());
    // The cone probe's 12 s leave the time to rebind the NAT before the mapping is learnt.
    cfg.cone_probe = true;
    let mut lab = Lab::new(cfg, NatKind::Restricted, 1);
    lab.nat.rebind(SocketAddrV4::new(*EXT.ip(), PRIVATE.port()));
    lab.run_for(secs(20));
    let st = lab.client.status();
    assert_eq!(st.port_preserving, Some(true));
    assert_eq!(st.server_name, "teredo.example");
}

#[test]
fn names_and_labels() {
    for &p in Profile::ALL {
        assert_eq!(p.as_str().parse::<Profile>(), Ok(p));
        assert_eq!(p.to_string(), p.as_str());
    }
    assert_eq!("WIN7".parse::<Profile>(), Ok(Profile::Win7));
    assert!("xp".parse::<Profile>().is_err());
    let nat: Vec<String> = [
        NatType::None,
        NatType::Cone,
        NatType::Restricted,
        NatType::SymmetricPort,
        NatType::SymmetricAddress,
        NatType::Unknown,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        nat,
        [
            "none",
            "cone",
            "restricted",
            "symmetric (port)",
            "symmetric (address)",
            "unknown"
        ]
    );
    assert_eq!(State::Offline.to_string(), "offline");
    assert_eq!(
        State::Probe(ProbePhase::Restricted).to_string(),
        "probe (primary server)"
    );
    assert_eq!(State::Dormant.to_string(), "dormant");
    assert_eq!(
        ClientError::PrimaryUnreachable.to_string(),
        "cannot reach primary Teredo server over UDP"
    );
    for r in DropReason::ALL {
        assert!(reason_index(*r).is_some());
    }
    fn is_send<T: Send>() {}
    is_send::<Client>();
}

#[test]
fn hostile_config_does_not_panic() {
    let mut cfg = ClientConfig::profile(Profile::Vista, P);
    cfg.retransmit = Duration::MAX;
    cfg.refresh_interval = Duration::MAX;
    cfg.refresh_jitter = Some((f32::NAN, -3.0));
    cfg.offline_retry = Duration::MAX;
    cfg.dormant_after = Some(Duration::MAX);
    cfg.attempts = 0;
    let mut lab = Lab::new(cfg.clone(), NatKind::Restricted, 1);
    lab.run_for(secs(10));
    lab.client.handle_timeout(lab.now + secs(1_000_000));
    cfg.retransmit = Duration::ZERO;
    cfg.refresh_interval = Duration::ZERO;
    cfg.refresh_jitter = Some((9.0, f32::INFINITY));
    cfg.offline_retry = Duration::ZERO;
    let mut lab = Lab::with_server(cfg, NatKind::SymPort, 1, false);
    lab.run_for(secs(1));
    lab.server_up = true;
    lab.run_for(secs(1));
}
