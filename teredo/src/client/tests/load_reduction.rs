//! RFC 6081 §5.7 Server Load Reduction in the client: a quiet peer re-validated with direct
//! solicitations (and no indirect bubble), the answer with an advertisement, three
//! solicitations two seconds apart then RFC 4380's indirect bubble, and the knob off.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Duration;

use super::net::*;
use crate::addr::TeredoAddr;
use crate::client::bubbles::trailer_nonce;
use crate::client::*;
use crate::io::{Kind, Local};
use crate::wire::ipv6::emit_bubble;
use crate::wire::trailer::{AlternateAddress, Trailers, TYPE_ALTERNATE_ADDRESS};
use crate::wire::TeredoPacket;

const SERVER: SocketAddrV4 = SocketAddrV4::new(P, 3544);
const SOLICITATION: [u8; 6] = [4, 4, 0, 0, 0, 0];
const ADVERTISEMENT: [u8; 6] = [4, 4, 1, 0, 0, 0];

fn win7(reduction: bool) -> ClientConfig {
    let mut cfg = ClientConfig::profile(Profile::Win7, P);
    cfg.server_load_reduction = reduction;
    cfg
}

/// Two win7 clients behind restricted NATs of their own, qualified, that pinged each
/// other (x -> y, every reply back) and were then quiet for 40 s.
fn quiet_pair(reduction: bool) -> (Net, usize, usize) {
    let mut net = Net::new(TrustPolicy::Strict);
    let x = net.add_host(win7(reduction), Nat::restricted(EXT), PRIVATE);
    let y = net.add_host(win7(reduction), Nat::restricted(EXT_Y), PRIVATE_Y);
    net.run_for(secs(25));
    let ya = net.addr(y);
    assert_eq!(net.ping_run(x, ya, 3), [0, 1, 2]);
    net.run_for(secs(30));
    net.hosts[x].inbox.clear();
    let now = net.now;
    assert!(
        !net.client(x).peer(&ya, now).unwrap().valid,
        "quiet for 40 s"
    );
    assert!(net.client(x).peer(&ya, now).unwrap().trusted);
    (net, x, y)
}

/// Bubbles to or from `peer` since `mark`: (time since `t`, from, to, trailers).
fn bubbles(
    net: &Net,
    mark: usize,
    t: Duration,
) -> Vec<(Duration, SocketAddrV4, SocketAddrV4, Vec<u8>)> {
    net.log[mark..]
        .iter()
        .filter_map(|(at, from, to, d)| {
            let p = TeredoPacket::parse(d).ok()?;
            p.is_bubble()
                .then(|| (*at - t, *from, *to, p.trailers.to_vec()))
        })
        .collect()
}

#[test]
fn a_quiet_peer_is_solicited_directly_and_the_server_relays_no_bubble() {
    let (mut net, x, y) = quiet_pair(true);
    let (ya, t, mark) = (net.addr(y), net.elapsed(), net.log.len());
    assert_eq!(net.ping_run(x, ya, 3), [0, 1, 2]);
    let b = bubbles(&net, mark, t);
    // X -> Y: the solicitation; Y -> X: the advertisement. Nothing through the server.
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!(
        (b[0].1, b[0].2, b[0].3.as_slice()),
        (EXT, EXT_Y, &SOLICITATION[..])
    );
    assert_eq!(
        (b[1].1, b[1].2, b[1].3.as_slice()),
        (EXT_Y, EXT, &ADVERTISEMENT[..])
    );
    assert!(
        net.log[mark..]
            .iter()
            .all(|(_, from, to, d)| (*to != SERVER && *from != SERVER)
                || TeredoPacket::parse(d).is_ok_and(|p| !p.is_bubble())),
        "only router solicitations and advertisements with the server"
    );
    let (cx, cy) = (net.client(x).counters(), net.client(y).counters());
    assert_eq!((cx.solicitations_sent, cx.advertisements_received), (1, 1));
    assert_eq!((cy.solicitations_received, cy.advertisements_sent), (1, 1));
    assert_eq!((cx.solicitation_fallbacks, cx.give_ups), (0, 0));
    let px = net.client(x).peer(&ya, net.now).unwrap();
    assert_eq!((px.trusted, px.mapping), (true, Some(EXT_Y)));
}

#[test]
fn without_the_extension_the_quiet_peer_gets_rfc_4380_bubbles() {
    let (mut net, x, y) = quiet_pair(false);
    let (ya, t, mark) = (net.addr(y), net.elapsed(), net.log.len());
    assert_eq!(net.ping_run(x, ya, 3), [0, 1, 2]);
    let b = bubbles(&net, mark, t);
    // X: a direct bubble to Y's mapping and an indirect one through the server, at once.
    assert_eq!((b[0].0, b[0].2), (Duration::ZERO, EXT_Y));
    assert_eq!((b[1].0, b[1].2), (Duration::ZERO, SERVER));
    assert!(b.iter().all(|(_, _, _, t)| !t.starts_with(&[4])), "{b:?}");
    let c = net.client(x).counters();
    assert_eq!((c.solicitations_sent, c.advertisements_received), (0, 0));
    // Communication was established: the nonce alone, no Alternate Address trailer.
    assert_eq!(b[1].3.len(), 6);
}

#[test]
fn three_solicitations_two_seconds_apart_then_the_indirect_bubble() {
    let (mut net, x, y) = quiet_pair(true);
    let ya = net.addr(y);
    // Y is gone: nothing reaches it at its old mapping any more.
    net.hosts[y].nat = Nat::restricted(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 66), 41000));
    let (t, mark) = (net.elapsed(), net.log.len());
    assert_eq!(net.ping(x, ya, 9), Ok(Handled::Queued));
    net.run_for(secs(20));
    let b: Vec<_> = bubbles(&net, mark, t)
        .into_iter()
        .filter(|(_, from, _, _)| *from == EXT)
        .collect();
    let head: Vec<(u64, SocketAddrV4, bool)> = b
        .iter()
        .take(5)
        .map(|(at, _, to, tr)| (at.as_secs(), *to, tr.as_slice() == SOLICITATION))
        .collect();
    assert_eq!(
        head,
        [
            (0, EXT_Y, true),
            (2, EXT_Y, true),
            (4, EXT_Y, true),
            // RFC 4380 as if never reached: the bubble pair, the indirect one with our
            // alternates (Hairpinning) and a nonce.
            (4, EXT_Y, false),
            (4, SERVER, false),
        ],
        "{b:?}"
    );
    let indirect = &b[4].3;
    assert!(trailer_nonce(indirect).is_some());
    let alt = Trailers::new(indirect)
        .find(|t| t.ty == TYPE_ALTERNATE_ADDRESS)
        .map(|t| AlternateAddress::parse(&t).unwrap().addrs().to_vec());
    assert_eq!(alt, Some(vec![PRIVATE]));
    // Then the RFC 4380 retransmissions (6, 8, 10 s) and the give-up.
    let rest: Vec<u64> = b[5..].iter().map(|(at, _, _, _)| at.as_secs()).collect();
    assert_eq!(rest, [6, 6, 8, 8, 10, 10]);
    let c = net.client(x).counters();
    assert_eq!(
        (c.solicitations_sent, c.solicitation_fallbacks, c.give_ups),
        (3, 1, 1)
    );
    let p = net.client(x).peer(&ya, net.now).unwrap();
    assert_eq!((p.trusted, p.phase), (false, PeerPhase::Failed));
}

/// A client with a queued packet for B (a peer with a global mapping), its probe drained.
fn with_queued(reduction: bool) -> (Lab, Ipv6Addr, SocketAddrV4) {
    let mut lab = Lab::new(win7(reduction), NatKind::Restricted, 7);
    lab.run_for(secs(60));
    let map_b = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 99), 4000);
    let b = TeredoAddr {
        server: P,
        flags: 0,
        mapped: map_b,
    }
    .to_ipv6();
    let (own, now) = (lab.client.address().unwrap(), lab.now);
    assert_eq!(
        lab.client.handle_ipv6(now, &echo_request(own, b, 1)),
        Ok(Handled::Queued)
    );
    drain(&mut lab.client);
    (lab, b, map_b)
}

fn drain(c: &mut Client) -> Vec<(SocketAddrV4, Kind, Vec<u8>)> {
    let mut buf = [0u8; 1500];
    let mut out = Vec::new();
    while let Some(s) = next_udp(c, &mut buf) {
        out.push((s.to, s.kind, buf[..s.len].to_vec()));
    }
    out
}

fn direct_bubble(src: Ipv6Addr, dst: Ipv6Addr, trailer: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 40];
    emit_bubble(&mut v, src, dst, 255).unwrap();
    v.extend_from_slice(trailer);
    v
}

#[test]
fn a_solicitation_is_answered_with_an_advertisement() {
    let (mut lab, b, map_b) = with_queued(true);
    let (own, now) = (lab.client.address().unwrap(), lab.now);
    let r = lab.client.handle_udp(
        now,
        Local::Primary,
        map_b,
        &direct_bubble(b, own, &SOLICITATION),
    );
    assert_eq!(r, Ok(Handled::Bubble));
    let out = drain(&mut lab.client);
    // The queued packet (the bubble proved B), then the advertisement to where it came from.
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!((out[0].0, out[0].1), (map_b, Kind::Data));
    assert_eq!((out[1].0, out[1].1), (map_b, Kind::Bubble));
    let adv = TeredoPacket::parse(&out[1].2).unwrap();
    assert!(adv.is_bubble());
    assert_eq!((adv.src(), adv.dst()), (own, b));
    assert_eq!(adv.trailers, ADVERTISEMENT);
    let c = lab.client.counters();
    assert_eq!((c.solicitations_received, c.advertisements_sent), (1, 1));
    // An advertisement is not answered.
    let r = lab.client.handle_udp(
        now,
        Local::Primary,
        map_b,
        &direct_bubble(b, own, &ADVERTISEMENT),
    );
    assert_eq!(r, Ok(Handled::Bubble));
    assert!(drain(&mut lab.client).is_empty());
    assert_eq!(lab.client.counters().advertisements_received, 1);
    // A solicitation nobody accepts (from elsewhere) is not answered either.
    let elsewhere = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 98), 4000);
    assert!(lab
        .client
        .handle_udp(
            now,
            Local::Primary,
            elsewhere,
            &direct_bubble(b, own, &SOLICITATION)
        )
        .is_err());
    assert!(drain(&mut lab.client).is_empty());
}

#[test]
fn knob_off_a_solicitation_is_a_plain_bubble_byte_for_byte() {
    let (mut with, b, map_b) = with_queued(false);
    let (mut without, _, _) = with_queued(false);
    let own = with.client.address().unwrap();
    assert_eq!(Some(own), without.client.address());
    let (now_a, now_b) = (with.now, without.now);
    with.client
        .handle_udp(
            now_a,
            Local::Primary,
            map_b,
            &direct_bubble(b, own, &SOLICITATION),
        )
        .unwrap();
    without
        .client
        .handle_udp(now_b, Local::Primary, map_b, &direct_bubble(b, own, &[]))
        .unwrap();
    let (a, z) = (drain(&mut with.client), drain(&mut without.client));
    assert_eq!(a.len(), 1, "the flushed packet alone: {a:?}");
    assert_eq!(a, z);
    let c = with.client.counters();
    assert_eq!((c.solicitations_received, c.advertisements_sent), (0, 0));
    // And a quiet peer gets the bubble pair at once, as before.
    let later = now_a + secs(40);
    with.client
        .handle_ipv6(later, &echo_request(own, b, 2))
        .unwrap();
    let kinds: Vec<(SocketAddrV4, Kind)> = drain(&mut with.client)
        .into_iter()
        .map(|(to, k, _)| (to, k))
        .collect();
    assert_eq!(
        kinds,
        [(map_b, Kind::Bubble), (SERVER, Kind::IndirectBubble)]
    );
}
