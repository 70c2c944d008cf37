//! The data path: echo tests, bubbles, trust, reception rules, queues and pacing.

use std::collections::HashSet;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Duration;

use crate::addr::{is_link_local, TeredoAddr};
use crate::client::bubbles::*;
use crate::client::peers::*;
use crate::client::*;
use crate::io::{self, Local};
use crate::wire::ipv6::finish_icmpv6;
use crate::wire::ipv6::Echo;
use crate::wire::TeredoPacket;
use crate::DropReason;

use super::net::*;

#[test]
fn ping_native_host_through_server_and_relay() {
    for kind in [NatKind::NoNat, NatKind::Cone, NatKind::Restricted] {
        let (mut net, x) = qualified_net(TrustPolicy::Strict, Profile::Rfc5991, kind);
        let xa = net.addr(x);
        let mark = net.log.len();
        assert_eq!(net.ping_run(x, H, 3), [0, 1, 2], "{kind:?}");
        let flow = net.since(mark);
        let m = net.client(x).mapping().unwrap();
        // TEREDO.md §15, client X -> native host H via relay R:
        // 1. X -> P:3544: echo request, src X, dst H, data = a 64-bit nonce.
        let (_, to, p) = &flow[0];
        assert_eq!(*to, SocketAddrV4::new(P, 3544), "{kind:?}");
        assert_eq!((p.src(), p.dst()), (xa, H));
        let test = Echo::parse(p.ipv6).unwrap();
        assert!(!test.reply);
        assert_eq!(test.data.len(), ECHO_NONCE_LEN);
        // 2. R -> P:3544: indirect bubble (src: R's per-peer link-local, dst X, nonce).
        let (from, to, p) = &flow[1];
        assert_eq!((*from, *to), (RELAY, SocketAddrV4::new(P, 3544)));
        assert!(p.is_bubble() && is_link_local(&p.src()) && p.dst() == xa);
        let relay_ll = p.src();
        // 3. P -> X's mapping: OI(R) + the bubble.
        let (from, to, p) = &flow[2];
        assert_eq!((*from, *to), (SocketAddrV4::new(P, 3544), m));
        assert_eq!(p.origin.map(|o| o.0), Some(RELAY));
        // 4. X -> R: direct bubble, src X, dst = the bubble's source; no nonce (rfc5991).
        let (_, to, p) = &flow[3];
        assert_eq!(*to, RELAY);
        assert!(p.is_bubble());
        assert_eq!((p.src(), p.dst()), (xa, relay_ll));
        assert!(p.trailers.is_empty());
        // 5. R -> X: the queued echo reply (the nonce comes back).
        let (from, to, p) = &flow[4];
        assert_eq!((*from, *to), (RELAY, m));
        assert_eq!(Echo::parse(p.ipv6).unwrap().data, test.data);
        // 6. X -> R: the application's queued echo request, then everything direct.
        let (_, to, p) = &flow[5];
        assert_eq!(*to, RELAY);
        assert_eq!(Echo::parse(p.ipv6).unwrap().id, PING_ID);
        // The rest: pings and replies through R, refreshes with the server.
        assert!(flow[6..].iter().all(|(f, t, _)| *f == RELAY
            || *t == RELAY
            || *t == SocketAddrV4::new(P, 3544)
            || *f == SocketAddrV4::new(P, 3544)));
        let peer = net.client(x).peer(&H, net.now).unwrap();
        assert!(peer.trusted && !peer.teredo);
        assert_eq!(peer.mapping, Some(RELAY));
        let c = net.client(x).counters();
        assert_eq!((c.echo_tests_sent, c.echo_tests_ok), (1, 1));
        assert_eq!((c.ipv6_sent, c.ipv6_delivered), (3, 3));
        assert_eq!((c.queued, c.flushed), (1, 1));
        assert_eq!(
            (c.reply_bubbles_sent, c.data_rejected, c.ra_rejected),
            (1, 0, 0)
        );
        assert_eq!(c.dropped_total(), 0);
        assert!(net.hosts[x].drops.is_empty(), "{:?}", net.hosts[x].drops);
        assert!(net.relay_drops.is_empty(), "{:?}", net.relay_drops);
        assert!(net
            .relay_accepts
            .iter()
            .all(|a| *a == Acceptance::EmbeddedMapping));
        assert!(net.hosts[x].client.events.iter().any(|e| *e
            == Event::PeerTrusted {
                peer: H,
                mapping: RELAY
            }));
    }
}

#[test]
fn symmetric_nat_needs_a_lenient_relay() {
    // Strict relay (RFC 4380 §5.4.2): the direct bubble comes from the mapping the
    // symmetric NAT opened toward the relay, not the one embedded in the address.
    for p in [Profile::Vista, Profile::Miredo] {
        let (mut net, x) = qualified_net(TrustPolicy::Strict, p, NatKind::SymPort);
        assert!(net.ping_run(x, H, 3).is_empty(), "{p}");
        assert!(net.relay_drops.contains(&DropReason::SpoofedSource), "{p}");
        assert!(
            net.relay.counters().dropped(DropReason::SpoofedSource) >= 4,
            "{p}"
        );
        let c = net.client(x).counters();
        // Echo tests at 0, 2, 4 and 6 s, then the queue (3 pings) is dropped.
        assert_eq!((c.echo_tests_sent, c.give_ups), (4, 1), "{p}");
        assert_eq!(c.dropped(DropReason::PeerUnreachable), 3, "{p}");
        assert!(net.hosts[x]
            .client
            .events
            .contains(&Event::PeerUnreachable { peer: H }));
        assert_eq!(
            net.client(x).peer(&H, net.now).unwrap().phase,
            PeerPhase::Failed
        );
        // Refused until the window is over, and no new echo test.
        let n = net.log.len();
        assert_eq!(net.ping(x, H, 9), Err(DropReason::PeerUnreachable));
        assert_eq!(net.log.len(), n);
    }
    // Lenient relay: Vista echoes the relay's nonce (RFC 6081 §5.2.4.2), Miredo answers
    // the relay's per-peer link-local; either way the actual mapping is recorded.
    for (p, via) in [
        (Profile::Vista, Acceptance::Nonce),
        (Profile::Win7, Acceptance::Nonce),
        (Profile::Miredo, Acceptance::LinkLocal),
    ] {
        let (mut net, x) = qualified_net(TrustPolicy::Lenient, p, NatKind::SymPort);
        assert_eq!(net.ping_run(x, H, 3), [0, 1, 2], "{p}");
        assert_eq!(net.relay_accepts.first(), Some(&via), "{p}");
        let m = net.client(x).mapping().unwrap();
        let recorded = net.relay.peer(&net.addr(x)).unwrap().mapping;
        assert_ne!(
            recorded, m,
            "{p}: the relay uses the NAT's mapping toward it"
        );
        let bubble = net
            .since(0)
            .into_iter()
            .find(|(_, to, pkt)| *to == RELAY && pkt.is_bubble())
            .map(|(_, _, pkt)| trailer_nonce(pkt.trailers))
            .unwrap();
        assert_eq!(bubble.is_some(), via == Acceptance::Nonce, "{p}");
    }
}

#[test]
fn teredo_to_teredo() {
    let mut net = Net::new(TrustPolicy::Strict);
    let x = net.add(Profile::Rfc5991, NatKind::Restricted);
    let y = net.add_host(
        ClientConfig::profile(Profile::Rfc5991, P),
        Nat::restricted(EXT_Y),
        PRIVATE_Y,
    );
    net.run_for(secs(1));
    let (xa, ya) = (net.addr(x), net.addr(y));
    let mark = net.log.len();
    assert_eq!(net.ping_run(x, ya, 3), [0, 1, 2]);
    let flow = net.since(mark);
    // X -> Y.map: direct bubble (opens X's NAT; Y's NAT filters it). X -> P: indirect.
    assert_eq!(flow[0].1, EXT_Y);
    assert!(flow[0].2.is_bubble() && flow[0].2.trailers.is_empty());
    assert_eq!(flow[1].1, SocketAddrV4::new(P, 3544));
    assert!(flow[1].2.is_bubble());
    assert_eq!(net.filtered, 1);
    // P -> Y.map: OI(X.map) + bubble; Y -> X.map: direct bubble, dst X.
    assert_eq!(flow[2].1, EXT_Y);
    assert_eq!(flow[2].2.origin.map(|o| o.0), Some(EXT));
    assert_eq!((flow[3].0, flow[3].1), (EXT_Y, EXT));
    assert_eq!((flow[3].2.src(), flow[3].2.dst()), (ya, xa));
    // X trusts Y (embedded mapping == outer source), the ping goes direct.
    assert_eq!(flow[4].1, EXT_Y);
    assert_eq!(Echo::parse(flow[4].2.ipv6).unwrap().seq, 0);
    let px = net.client(x).peer(&ya, net.now).unwrap();
    let py = net.client(y).peer(&xa, net.now).unwrap();
    assert_eq!((px.trusted, px.mapping), (true, Some(EXT_Y)));
    assert_eq!((py.trusted, py.mapping), (true, Some(EXT)));
    assert_eq!(net.relay.counters().peers_created, 0, "no relay involved");
    assert!(net.hosts.iter().all(|h| h.drops.is_empty()));
}

#[test]
fn rfc6081_symmetric_support_between_clients() {
    let setup = |peer: Profile| {
        let mut net = Net::new(TrustPolicy::Strict);
        let a = net.add(Profile::Vista, NatKind::SymPort);
        let b = net.add_host(ClientConfig::profile(peer, P), Nat::cone(EXT_Y), PRIVATE_Y);
        net.run_for(secs(25));
        (net, a, b)
    };
    // RFC 6081 §3.1 first case: B (cone) initiates; A's direct answer echoes B's nonce
    // from another mapping, which B records.
    let (mut net, a, b) = setup(Profile::Vista);
    let (aa, ba) = (net.addr(a), net.addr(b));
    assert_eq!(net.ping_run(b, aa, 3), [0, 1, 2]);
    let pb = net.client(b).peer(&aa, net.now).unwrap();
    assert!(pb.trusted);
    assert_ne!(pb.mapping, Some(net.client(a).mapping().unwrap()));
    // Second case: A initiates; B's direct answer is filtered by A's NAT, B also
    // answers indirectly, A's direct answer to that carries B's nonce.
    let (mut net, a, b) = setup(Profile::Vista);
    let ba2 = net.addr(b);
    assert_eq!(net.ping_run(a, ba2, 3), [0, 1, 2]);
    assert!(net.filtered >= 1);
    assert!(net.client(a).peer(&ba2, net.now).unwrap().trusted);
    let _ = ba;
    // Without RFC 6081 on the cone side: no connectivity either way.
    let (mut net, a, b) = setup(Profile::Miredo);
    let (aa, ba) = (net.addr(a), net.addr(b));
    assert!(net.ping_run(b, aa, 3).is_empty());
    assert!(net.hosts[b].drops.contains(&DropReason::SpoofedSource));
    assert!(net.ping_run(a, ba, 3).is_empty());
}

#[test]
fn queues_are_bounded_and_dropped_on_give_up() {
    let (mut net, x) = qualified_net(TrustPolicy::Strict, Profile::Rfc5991, NatKind::Cone);
    net.h_up = false;
    let results: Vec<_> = (0..20).map(|s| net.ping(x, H, s)).collect();
    assert!(results[..16].iter().all(Result::is_ok));
    assert!(results[16..]
        .iter()
        .all(|r| *r == Err(DropReason::QueueFull)));
    let peer = net.client(x).peer(&H, net.now).unwrap();
    assert_eq!((peer.queued_packets, peer.queued_bytes), (16, 16 * 80));
    assert_eq!(peer.phase, PeerPhase::Probing);
    let t = net.elapsed();
    net.run_for(secs(20));
    let tests: Vec<Duration> = net
        .log
        .iter()
        .filter(|(at, _, to, d)| {
            *at >= t
                && *to == SocketAddrV4::new(P, 3544)
                && TeredoPacket::parse(d).unwrap().dst() == H
        })
        .map(|(at, _, _, _)| *at - t)
        .collect();
    assert_eq!(tests, [secs(0), secs(2), secs(4), secs(6)]);
    let c = net.client(x).counters();
    assert_eq!(c.dropped(DropReason::QueueFull), 4);
    assert_eq!(c.dropped(DropReason::PeerUnreachable), 16);
    assert_eq!(net.client(x).peer(&H, net.now).unwrap().queued_packets, 0);
    assert_eq!(net.client(x).queued_bytes, 0);
    // Refused until 300 s after the first test, then a new test starts.
    net.run_for(secs(250));
    assert_eq!(net.ping(x, H, 30), Err(DropReason::PeerUnreachable));
    net.run_for(secs(30));
    net.h_up = true;
    assert_eq!(net.ping(x, H, 31), Ok(Handled::Queued));
    net.run_for(secs(1));
    assert_eq!(net.replies(x, H), [31]);

    // The byte bound.
    let mut cfg = ClientConfig::profile(Profile::Rfc5991, P);
    cfg.queue_bytes_per_peer = 200;
    let mut net = Net::new(TrustPolicy::Strict);
    let (nat, local) = nat_for(NatKind::Cone);
    let x = net.add_host(cfg, nat, local);
    net.run_for(secs(1));
    net.h_up = false;
    let r: Vec<_> = (0..3).map(|s| net.ping(x, H, s)).collect();
    assert_eq!(
        r,
        [
            Ok(Handled::Queued),
            Ok(Handled::Queued),
            Err(DropReason::QueueFull)
        ]
    );
}

#[test]
fn bubble_pacing_and_nonce_trailers() {
    // A Teredo destination that never answers.
    let ghost = TeredoAddr {
        server: P,
        flags: 0,
        mapped: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 99), 4000),
    }
    .to_ipv6();
    for (p, nonces) in [(Profile::Vista, true), (Profile::Rfc5991, false)] {
        let (mut net, x) = qualified_net(TrustPolicy::Strict, p, NatKind::Restricted);
        let t = net.elapsed();
        // An application that keeps sending every second for 20 s.
        for s in 0..20 {
            let r = net.ping(x, ghost, s);
            assert!(r.is_ok() || r == Err(DropReason::PeerUnreachable), "{r:?}");
            net.run_for(secs(1));
        }
        let bubbles: Vec<(Duration, SocketAddrV4, Option<[u8; 4]>)> = net
            .log
            .iter()
            .filter(|(at, from, _, d)| {
                *at >= t
                    && *from != SocketAddrV4::new(P, 3544)
                    && TeredoPacket::parse(d).unwrap().dst() == ghost
            })
            .map(|(at, _, to, d)| {
                let pkt = TeredoPacket::parse(d).unwrap();
                assert!(pkt.is_bubble());
                (*at - t, *to, trailer_nonce(pkt.trailers))
            })
            .collect();
        // A direct and an indirect bubble at 0, 2, 4 and 6 s; nothing more in 300 s.
        let times: Vec<u64> = bubbles.iter().map(|(at, _, _)| at.as_secs()).collect();
        assert_eq!(times, [0, 0, 2, 2, 4, 4, 6, 6], "{p}");
        for (i, (_, to, nonce)) in bubbles.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(*to, SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 99), 4000));
                assert_eq!(*nonce, None, "{p}: no nonce before one was received");
            } else {
                assert_eq!(*to, SocketAddrV4::new(P, 3544));
                assert_eq!(nonce.is_some(), nonces, "{p}");
            }
        }
        if nonces {
            let distinct: HashSet<_> = bubbles.iter().filter_map(|b| b.2).collect();
            assert_eq!(distinct.len(), 4, "a fresh nonce per indirect bubble");
        }
        let c = net.client(x).counters();
        assert_eq!((c.bubbles_sent, c.give_ups), (8, 1));
        // Packets 0..=7 were queued (the last ones refused after the give-up at 8 s).
        assert_eq!(c.dropped(DropReason::PeerUnreachable), 8 + 12, "{p}");
    }
}

/// A Teredo datagram: optional OI, then an IPv6 packet.
fn datagram(origin: Option<SocketAddrV4>, ipv6: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(o) = origin {
        let mut b = [0u8; 8];
        crate::wire::OriginIndication(o).emit(&mut b).unwrap();
        v.extend_from_slice(&b);
    }
    v.extend_from_slice(ipv6);
    v
}

#[test]
fn reception_rules() {
    let (mut net, x) = qualified_net(TrustPolicy::Strict, Profile::Rfc5991, NatKind::NoNat);
    let now = net.now;
    let xa = net.addr(x);
    let c = &mut net.hosts[x].client;
    let peer_map = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 4000);
    let peer = TeredoAddr {
        server: P,
        flags: 0,
        mapped: peer_map,
    }
    .to_ipv6();
    let native: Ipv6Addr = "2001:db8::5".parse().unwrap();
    let server = SocketAddrV4::new(P, 3544);
    let mut routed = echo_request(peer, xa, 1);
    routed[6] = 43;
    let mut ll = echo_request("fe80::1".parse().unwrap(), xa, 1);
    finish_icmpv6(&mut ll);
    let cases: Vec<(&str, SocketAddrV4, Vec<u8>, DropReason)> = vec![
        (
            "unknown non-Teredo source (no echo test: CVE-2006-6266)",
            peer_map,
            datagram(None, &echo_request(native, xa, 1)),
            DropReason::UntrustedSource,
        ),
        (
            "Teredo source, other mapping",
            SocketAddrV4::new(*peer_map.ip(), 4001),
            datagram(None, &echo_request(peer, xa, 1)),
            DropReason::SpoofedSource,
        ),
        (
            "routing header (CVE-2006-6263)",
            peer_map,
            datagram(None, &routed),
            DropReason::RoutingHeader,
        ),
        (
            "link-local source",
            peer_map,
            datagram(None, &ll),
            DropReason::LinkLocalSource,
        ),
        (
            "not our address",
            peer_map,
            datagram(None, &echo_request(peer, H, 1)),
            DropReason::NotOurAddress,
        ),
        (
            "origin indication not from the server",
            peer_map,
            datagram(Some(peer_map), &echo_request(peer, xa, 1)),
            DropReason::UnexpectedOrigin,
        ),
        (
            "non-bubble from the server it cannot vouch for",
            server,
            datagram(Some(peer_map), &echo_request(native, xa, 1)),
            DropReason::UntrustedSource,
        ),
        (
            "relayed bubble without origin from a non-Teredo source",
            server,
            datagram(None, &bubble_bytes(native, xa, None)),
            DropReason::MissingOrigin,
        ),
        (
            "relayed bubble to answer at a private address",
            server,
            datagram(
                Some(SocketAddrV4::new(Ipv4Addr::new(10, 1, 1, 1), 9)),
                &bubble_bytes(native, xa, None),
            ),
            DropReason::NonGlobalMappedAddress,
        ),
    ];
    for (what, from, bytes, reason) in &cases {
        assert_eq!(
            c.handle_udp(now, Local::Primary, *from, bytes),
            Err(*reason),
            "{what}"
        );
        assert_eq!(
            c.poll_output(&mut [0u8; 2000]),
            None,
            "{what}: nothing sent or delivered"
        );
    }
    assert_eq!(c.counters().data_rejected, cases.len() as u64);
    assert_eq!(
        c.counters().ra_rejected,
        0,
        "data refusals are not RA refusals"
    );
    assert_eq!(c.peer_count(), 0, "no entry for refused sources");
    // Case 3: a Teredo source at its embedded mapping is trusted and delivered.
    let req = echo_request(peer, xa, 2);
    assert_eq!(
        c.handle_udp(now, Local::Primary, peer_map, &datagram(None, &req)),
        Ok(Handled::Delivered)
    );
    let mut b = [0u8; 2000];
    assert_eq!(next_ipv6(c, &mut b), Some(req.len()));
    assert_eq!(&b[..req.len()], &req[..]);
    let p = c.peer(&peer, now).unwrap();
    assert!(p.trusted && p.valid && p.teredo);
    // Relayed by the server with an origin indication that matches the embedded mapping:
    // the server vouches for it.
    let req = echo_request(peer, xa, 3);
    assert_eq!(
        c.handle_udp(now, Local::Primary, server, &datagram(Some(peer_map), &req)),
        Ok(Handled::Delivered)
    );
    assert_eq!(next_ipv6(c, &mut b), Some(req.len()));
    // A relay's indirect bubble: answered to the origin indication, dst = its source.
    let relay_ll: Ipv6Addr = "fe80::1234:5678".parse().unwrap();
    let relayed = datagram(Some(RELAY), &bubble_bytes(relay_ll, xa, Some([1, 2, 3, 4])));
    assert_eq!(
        c.handle_udp(now, Local::Primary, server, &relayed),
        Ok(Handled::RelayedBubble)
    );
    let t = next_udp(c, &mut b).unwrap();
    assert_eq!((t.to, t.kind), (RELAY, io::Kind::Bubble));
    let answer = TeredoPacket::parse(&b[..t.len]).unwrap();
    assert!(answer.is_bubble());
    assert_eq!((answer.src(), answer.dst()), (xa, relay_ll));
    assert_eq!(trailer_nonce(answer.trailers), None, "rfc5991: no RFC 6081");
    assert_eq!(c.counters().ra_rejected, 0);
    assert_eq!(c.counters().reply_bubbles_sent, 1);
    // Answers are rate-limited: a burst of 10, then 10 per second.
    for _ in 0..20 {
        let _ = c.handle_udp(now, Local::Primary, server, &relayed);
    }
    let mut answered = 0;
    while next_udp(c, &mut b).is_some() {
        answered += 1;
    }
    assert_eq!(answered, 9);
    assert_eq!(c.counters().reply_bubbles_suppressed, 11);
    // Not qualified: the data path is closed.
    let (mut c, now, _, _) = probing(Profile::Miredo);
    assert_eq!(
        c.handle_udp(
            now,
            Local::Primary,
            peer_map,
            &datagram(None, &echo_request(peer, xa, 1))
        ),
        Err(DropReason::NotQualified)
    );
    assert_eq!(
        c.handle_ipv6(now, &echo_request(xa, H, 1)),
        Err(DropReason::NotQualified)
    );
    assert_eq!(
        (c.counters().data_rejected, c.counters().ra_rejected),
        (1, 0)
    );
}

#[test]
fn send_validation() {
    let (mut net, x) = qualified_net(TrustPolicy::Strict, Profile::Rfc5991, NatKind::Cone);
    let xa = net.addr(x);
    let now = net.now;
    let c = &mut net.hosts[x].client;
    let private_peer = TeredoAddr {
        server: P,
        flags: 0,
        mapped: SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 1), 4000),
    }
    .to_ipv6();
    let private_server = TeredoAddr {
        server: Ipv4Addr::new(10, 0, 0, 1),
        flags: 0,
        mapped: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 4000),
    }
    .to_ipv6();
    let mut truncated = echo_request(xa, H, 1);
    truncated.pop();
    for (pkt, want) in [
        (echo_request(H, xa, 1), DropReason::WrongSource),
        (echo_request(xa, xa, 1), DropReason::NotAllowed),
        (
            echo_request(xa, "fe80::1".parse().unwrap(), 1),
            DropReason::NonGlobalDestination,
        ),
        (
            echo_request(xa, "ff02::1".parse().unwrap(), 1),
            DropReason::NonGlobalDestination,
        ),
        (
            echo_request(xa, private_peer, 1),
            DropReason::NonGlobalMappedAddress,
        ),
        (
            echo_request(xa, private_server, 1),
            DropReason::NonGlobalServer,
        ),
        (truncated, DropReason::BadLength),
        (vec![0x45; 40], DropReason::BadIpVersion),
        (vec![0x60; 10], DropReason::Truncated),
    ] {
        assert_eq!(c.handle_ipv6(now, &pkt), Err(want));
    }
    assert_eq!(c.counters().dropped_total(), 9);
    assert_eq!(c.poll_output(&mut [0u8; 100]), None);
    assert_eq!(c.peer_count(), 0);
}

#[test]
fn peer_table_is_bounded() {
    let mut cfg = ClientConfig::profile(Profile::Rfc5991, P);
    cfg.max_peers = 2;
    let mut net = Net::new(TrustPolicy::Strict);
    let (nat, local) = nat_for(NatKind::Cone);
    let x = net.add_host(cfg, nat, local);
    net.run_for(secs(1));
    net.h_up = false;
    let xa = net.addr(x);
    for i in 1..=3u16 {
        let dst = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i);
        let c = &mut net.hosts[x].client;
        assert_eq!(
            c.handle_ipv6(net.now, &echo_request(xa, dst, i)),
            Ok(Handled::Queued)
        );
        net.run_for(secs(1));
    }
    let c = net.client(x);
    assert_eq!(c.peer_count(), 2);
    assert_eq!(c.counters().peers_evicted, 1);
    assert_eq!(c.counters().dropped(DropReason::PeerEvicted), 1);
    assert!(c
        .peer(&Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1), net.now)
        .is_none());
}

#[test]
fn losing_the_address_empties_the_peer_table() {
    let (mut net, x) = qualified_net(TrustPolicy::Strict, Profile::Miredo, NatKind::Cone);
    // Miredo refreshes at 30 s, 60 s, ... after the first RS (t = 0).
    net.run_for(secs(3));
    net.h_up = false;
    assert_eq!(net.ping(x, H, 1), Ok(Handled::Queued));
    net.hosts[x]
        .nat
        .rebind(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 41000));
    net.run_for(secs(4));
    let c = net.client(x);
    assert!(c
        .events
        .iter()
        .any(|e| matches!(e, Event::AddressChanged { .. })));
    assert_eq!(c.peer_count(), 0);
    assert_eq!(c.counters().dropped(DropReason::AddressLost), 1);
}

#[test]
fn traffic_is_activity_for_the_dormant_timer() {
    let (mut net, x) = qualified_net(TrustPolicy::Strict, Profile::Win7, NatKind::Cone);
    // A ping every 10 minutes keeps Windows 7 qualified for two hours.
    for s in 0..12 {
        assert_eq!(net.ping(x, H, s), Ok(Handled::Queued));
        net.run_for(secs(600));
    }
    assert_eq!(net.client(x).state(), State::Qualified);
    assert_eq!(net.replies(x, H).len(), 12);
    // Idle for an hour: dormant; the next packet wakes it up (and is refused).
    net.run_for(secs(3700));
    assert_eq!(net.client(x).state(), State::Dormant);
    let xa = TeredoAddr {
        server: P,
        flags: 0,
        mapped: EXT,
    }
    .to_ipv6();
    let now = net.now;
    assert_eq!(
        net.hosts[x]
            .client
            .handle_ipv6(now, &echo_request(xa, H, 1)),
        Err(DropReason::NotQualified)
    );
    assert!(matches!(net.client(x).state(), State::Probe(_)));
}
