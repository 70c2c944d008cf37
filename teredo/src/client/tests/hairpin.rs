//! RFC 6081 §5.6 Hairpinning in the client: which indirect bubbles carry the Alternate
//! Address trailer, what a relayed bubble with one makes the client send, the checks on the
//! trailer and its entries, acceptance by nonce from a LAN address, and that the knob off
//! changes nothing.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use super::net::*;
use crate::addr::TeredoAddr;
use crate::client::bubbles::trailer_nonce;
use crate::client::*;
use crate::io::{Kind, Local};
use crate::wire::ipv6::emit_bubble;
use crate::wire::trailer::{AlternateAddress, Trailers, TYPE_ALTERNATE_ADDRESS, TYPE_NONCE};
use crate::wire::{OriginIndication, TeredoPacket};
use crate::DropReason;

/// B, the neighbour behind the lab client's NAT (EXT's IPv4), at its LAN address.
const LAN_B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 11), 6000);
/// B's mapping on the shared NAT.
const MAP_B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 40001);
const SERVER: SocketAddrV4 = SocketAddrV4::new(P, 3544);
const NONCE_B: [u8; 4] = [0xb0, 0xb1, 0xb2, 0xb3];

fn b_addr() -> Ipv6Addr {
    TeredoAddr {
        server: P,
        flags: 0,
        mapped: MAP_B,
    }
    .to_ipv6()
}

fn win7(hairpinning: bool) -> ClientConfig {
    let mut cfg = ClientConfig::profile(Profile::Win7, P);
    // Discovery would reach B on the LAN by itself (RFC 4380 §5.2.8).
    cfg.local_discovery = false;
    cfg.hairpinning = hairpinning;
    cfg
}

fn qualified(cfg: ClientConfig) -> Lab {
    let mut lab = Lab::new(cfg, NatKind::Restricted, 7);
    lab.run_for(secs(60));
    assert_eq!(lab.client.state(), State::Qualified);
    lab
}

/// Every datagram waiting in the client: (destination, kind, bytes).
fn drain(c: &mut Client) -> Vec<(SocketAddrV4, Kind, Vec<u8>)> {
    let mut buf = [0u8; 1500];
    let mut out = Vec::new();
    while let Some(s) = next_udp(c, &mut buf) {
        out.push((s.to, s.kind, buf[..s.len].to_vec()));
    }
    out
}

fn trailers_of(bytes: &[u8]) -> Vec<u8> {
    TeredoPacket::parse(bytes).unwrap().trailers.to_vec()
}

fn alternates_in(trailers: &[u8]) -> Option<Vec<SocketAddrV4>> {
    Trailers::new(trailers)
        .find(|t| t.ty == TYPE_ALTERNATE_ADDRESS)
        .map(|t| AlternateAddress::parse(&t).unwrap().addrs().to_vec())
}

/// A bubble from `src` to `dst` followed by `trailers`.
fn bubble(src: Ipv6Addr, dst: Ipv6Addr, trailers: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 40];
    emit_bubble(&mut b, src, dst, 255).unwrap();
    b.extend_from_slice(trailers);
    b
}

/// B's indirect bubble as the server relays it: origin indication = B's mapping.
fn relayed(dst: Ipv6Addr, trailers: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 8];
    OriginIndication(MAP_B).emit(&mut v).unwrap();
    v.extend(bubble(b_addr(), dst, trailers));
    v
}

fn nonce_trailer(n: [u8; 4]) -> Vec<u8> {
    let mut t = vec![TYPE_NONCE, 4];
    t.extend_from_slice(&n);
    t
}

fn alt_trailer(addrs: &[SocketAddrV4]) -> Vec<u8> {
    let a = AlternateAddress::new(addrs).unwrap();
    let mut t = vec![0u8; a.buffer_len()];
    a.emit(&mut t).unwrap();
    t
}

#[test]
fn the_indirect_bubble_to_a_new_peer_carries_our_local_address_and_a_nonce() {
    let mut lab = qualified(win7(true));
    let (own, b, now) = (lab.client.address().unwrap(), b_addr(), lab.now);
    let ping = echo_request(own, b, 1);
    assert_eq!(lab.client.handle_ipv6(now, &ping), Ok(Handled::Queued));
    let out = drain(&mut lab.client);
    assert_eq!(out.len(), 2, "{out:?}");
    let (to, kind, direct) = &out[0];
    assert_eq!((*to, *kind), (MAP_B, Kind::Bubble));
    assert!(
        trailers_of(direct).is_empty(),
        "no nonce before one was received"
    );
    let (to, kind, indirect) = &out[1];
    assert_eq!((*to, *kind), (SERVER, Kind::IndirectBubble));
    let t = trailers_of(indirect);
    assert!(trailer_nonce(&t).is_some(), "§5.6.4.1: a nonce trailer too");
    assert_eq!(alternates_in(&t), Some(vec![PRIVATE]), "our socket address");
    assert_eq!(lab.client.counters().hairpin_trailers_sent, 1);
    // Its retransmission carries both again, with a fresh nonce.
    lab.client.handle_timeout(now + secs(2));
    let again = drain(&mut lab.client);
    let indirect = again.iter().find(|o| o.1 == Kind::IndirectBubble).unwrap();
    let t2 = trailers_of(&indirect.2);
    assert_eq!(alternates_in(&t2), Some(vec![PRIVATE]));
    assert_ne!(trailer_nonce(&t2), trailer_nonce(&t));
    assert_eq!(lab.client.counters().hairpin_trailers_sent, 2);
}

#[test]
fn the_trailer_is_left_out_once_the_peer_was_reached_or_without_a_nat() {
    // Trusted, then quiet for 40 s: the RFC 4380 re-probe (load reduction off) carries only
    // the nonce: communication was established.
    let mut cfg = win7(true);
    cfg.server_load_reduction = false;
    let mut lab = qualified(cfg);
    let (own, b, now) = (lab.client.address().unwrap(), b_addr(), lab.now);
    lab.client
        .handle_udp(now, Local::Primary, MAP_B, &bubble(b, own, &[]))
        .unwrap();
    assert!(lab.client.peer(&b, now).unwrap().trusted);
    let later = now + secs(40);
    assert_eq!(
        lab.client.handle_ipv6(later, &echo_request(own, b, 1)),
        Ok(Handled::Queued)
    );
    let out = drain(&mut lab.client);
    let indirect = out.iter().find(|o| o.1 == Kind::IndirectBubble).unwrap();
    let t = trailers_of(&indirect.2);
    assert_eq!(t.len(), 6, "the nonce alone: {t:?}");
    assert!(trailer_nonce(&t).is_some());
    assert_eq!(lab.client.counters().hairpin_trailers_sent, 0);
    // Without a NAT the local address is the mapping: nothing to advertise.
    let mut lab = Lab::new(win7(true), NatKind::NoNat, 7);
    lab.run_for(secs(60));
    let (own, now) = (lab.client.address().unwrap(), lab.now);
    lab.client
        .handle_ipv6(now, &echo_request(own, b, 1))
        .unwrap();
    let out = drain(&mut lab.client);
    let indirect = out.iter().find(|o| o.1 == Kind::IndirectBubble).unwrap();
    assert_eq!(alternates_in(&trailers_of(&indirect.2)), None);
}

#[test]
fn a_upnp_mapping_is_advertised_only_when_it_is_not_the_servers() {
    for (granted, listed) in [
        // Nested NATs: the inner NAT's IGD gave another mapping than the server saw.
        (
            SocketAddrV4::new(Ipv4Addr::new(192, 168, 100, 2), 5000),
            vec![
                PRIVATE,
                SocketAddrV4::new(Ipv4Addr::new(192, 168, 100, 2), 5000),
            ],
        ),
        // A single NAT: §5.6.3 zeroes the UPnP mapping.
        (EXT, vec![PRIVATE]),
    ] {
        let mut lab = qualified(win7(true));
        let now = lab.now;
        lab.client.handle_upnp(now, UpnpAnswer::Mapped(granted));
        let own = lab.client.address().unwrap();
        lab.client
            .handle_ipv6(now, &echo_request(own, b_addr(), 1))
            .unwrap();
        let out = drain(&mut lab.client);
        let indirect = out.iter().find(|o| o.1 == Kind::IndirectBubble).unwrap();
        assert_eq!(alternates_in(&trailers_of(&indirect.2)), Some(listed));
    }
}

#[test]
fn a_relayed_bubble_with_alternates_gets_a_direct_bubble_there_with_its_nonce() {
    let mut lab = qualified(win7(true));
    let (own, b, now) = (lab.client.address().unwrap(), b_addr(), lab.now);
    let mut t = nonce_trailer(NONCE_B);
    t.extend(alt_trailer(&[LAN_B]));
    let r = lab
        .client
        .handle_udp(now, Local::Primary, SERVER, &relayed(own, &t));
    assert_eq!(r, Ok(Handled::RelayedBubble));
    assert_eq!(lab.client.peer_alternates(&b), &[LAN_B]);
    let out = drain(&mut lab.client);
    // To the LAN address, echoing B's nonce, first; then the usual answers (symmetric NAT
    // support: a direct bubble to B's mapping with the echo, and our own indirect bubble,
    // which advertises our alternates in turn).
    let (to, kind, lan) = &out[0];
    assert_eq!((*to, *kind), (LAN_B, Kind::Bubble));
    assert_eq!(trailers_of(lan), nonce_trailer(NONCE_B));
    assert!(out.iter().any(|(to, k, b)| *to == MAP_B
        && *k == Kind::Bubble
        && trailer_nonce(&trailers_of(b)) == Some(NONCE_B)));
    let ours = out.iter().find(|o| o.1 == Kind::IndirectBubble).unwrap();
    assert_eq!(alternates_in(&trailers_of(&ours.2)), Some(vec![PRIVATE]));
    let c = lab.client.counters();
    assert_eq!(
        (c.hairpin_trailers_received, c.hairpin_bubbles_sent),
        (1, 1)
    );
}

#[test]
fn malformed_alternate_trailers_drop_the_bubble() {
    let entry = [10, 0, 0, 3, 0x17, 0x70];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length 9", {
            let mut t = vec![TYPE_ALTERNATE_ADDRESS, 9, 0, 0];
            t.extend_from_slice(&entry);
            t.push(0);
            t
        }),
        (
            "port 0",
            vec![TYPE_ALTERNATE_ADDRESS, 8, 0, 0, 10, 0, 0, 3, 0, 0],
        ),
        (
            "multicast",
            vec![TYPE_ALTERNATE_ADDRESS, 8, 0, 0, 224, 0, 0, 1, 0, 1],
        ),
        ("no entry", vec![TYPE_ALTERNATE_ADDRESS, 2, 0, 0]),
        ("cut short", vec![TYPE_ALTERNATE_ADDRESS, 8, 0, 0, 10, 0]),
    ];
    for (why, alt) in &cases {
        let mut lab = qualified(win7(true));
        let (own, now) = (lab.client.address().unwrap(), lab.now);
        let mut t = nonce_trailer(NONCE_B);
        t.extend_from_slice(alt);
        let r = lab
            .client
            .handle_udp(now, Local::Primary, SERVER, &relayed(own, &t));
        assert_eq!(r, Err(DropReason::BadAlternateAddress), "{why}");
        assert!(drain(&mut lab.client).is_empty(), "{why}");
        assert_eq!(lab.client.peer(&b_addr(), now), None, "{why}");
        let c = lab.client.counters();
        assert_eq!(c.rejected(DropReason::BadAlternateAddress), 1, "{why}");
        assert_eq!(c.bubbles_received, 0, "{why}");
        // With the extension off the trailer is not looked at: the bubble is answered.
        let mut lab = qualified(win7(false));
        let (own, now) = (lab.client.address().unwrap(), lab.now);
        let r = lab
            .client
            .handle_udp(now, Local::Primary, SERVER, &relayed(own, &t));
        assert_eq!(r, Ok(Handled::RelayedBubble), "{why}");
    }
}

#[test]
fn implausible_alternates_are_never_sent_to() {
    let mut lab = qualified(win7(true));
    let (own, now) = (lab.client.address().unwrap(), lab.now);
    let bad = [
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000),
        SocketAddrV4::new(Ipv4Addr::new(0, 1, 2, 3), 5000),
        SocketAddrV4::new(Ipv4Addr::new(240, 0, 0, 1), 5000),
        PRIVATE,
    ];
    let mut t = nonce_trailer(NONCE_B);
    t.extend(alt_trailer(&bad));
    let r = lab
        .client
        .handle_udp(now, Local::Primary, SERVER, &relayed(own, &t));
    assert_eq!(r, Ok(Handled::RelayedBubble));
    let out = drain(&mut lab.client);
    assert!(
        out.iter().all(|(to, _, _)| !bad.contains(to)),
        "nothing to an implausible address: {out:?}"
    );
    let c = lab.client.counters();
    assert_eq!(c.dropped(DropReason::ImplausibleAlternate), 4);
    assert_eq!(c.hairpin_bubbles_sent, 0);
    // The list is kept as advertised; only sending skips those entries.
    assert_eq!(lab.client.peer_alternates(&b_addr()), &bad);
}

/// The lab client pings B and returns the nonce of its indirect bubble.
fn ping_b(lab: &mut Lab) -> [u8; 4] {
    let (own, now) = (lab.client.address().unwrap(), lab.now);
    assert_eq!(
        lab.client.handle_ipv6(now, &echo_request(own, b_addr(), 1)),
        Ok(Handled::Queued)
    );
    let out = drain(&mut lab.client);
    let indirect = out.iter().find(|o| o.1 == Kind::IndirectBubble).unwrap();
    trailer_nonce(&trailers_of(&indirect.2)).unwrap()
}

#[test]
fn a_direct_bubble_from_a_lan_address_is_accepted_only_with_our_nonce() {
    let mut lab = qualified(win7(true));
    let (own, b, now) = (lab.client.address().unwrap(), b_addr(), lab.now);
    let sent = ping_b(&mut lab);
    let mut wrong = sent;
    wrong[0] ^= 0xff;
    for t in [vec![], nonce_trailer(wrong)] {
        let r = lab
            .client
            .handle_udp(now, Local::Primary, LAN_B, &bubble(b, own, &t));
        assert_eq!(r, Err(DropReason::SpoofedSource), "{t:?}");
        assert!(!lab.client.peer(&b, now).unwrap().trusted);
    }
    // From a loopback address, even with the nonce: not a place to send to.
    let lo = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 6000);
    let r = lab.client.handle_udp(
        now,
        Local::Primary,
        lo,
        &bubble(b, own, &nonce_trailer(sent)),
    );
    assert_eq!(r, Err(DropReason::SpoofedSource));
    assert!(drain(&mut lab.client).is_empty());
    // The nonce from the LAN address: trusted there, the queued ping leaves for it.
    let r = lab.client.handle_udp(
        now,
        Local::Primary,
        LAN_B,
        &bubble(b, own, &nonce_trailer(sent)),
    );
    assert_eq!(r, Ok(Handled::Bubble));
    let info = lab.client.peer(&b, now).unwrap();
    assert_eq!((info.trusted, info.mapping), (true, Some(LAN_B)));
    let out = drain(&mut lab.client);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, out[0].1), (LAN_B, Kind::Data));
    let c = lab.client.counters();
    assert_eq!(c.hairpin_peers_trusted, 1);
    assert_eq!(c.rejected(DropReason::SpoofedSource), 3);
    // Later data goes there too.
    let later = now + secs(1);
    assert_eq!(
        lab.client.handle_ipv6(later, &echo_request(own, b, 2)),
        Ok(Handled::Sent)
    );
    assert_eq!(drain(&mut lab.client)[0].0, LAN_B);
}

#[test]
fn without_the_extension_a_lan_address_is_never_accepted() {
    // Symmetric NAT support alone accepts a nonce only from a global mapping.
    let mut lab = qualified(win7(false));
    let (own, b, now) = (lab.client.address().unwrap(), b_addr(), lab.now);
    let sent = ping_b(&mut lab);
    let r = lab.client.handle_udp(
        now,
        Local::Primary,
        LAN_B,
        &bubble(b, own, &nonce_trailer(sent)),
    );
    assert_eq!(r, Err(DropReason::SpoofedSource));
    assert!(!lab.client.peer(&b, now).unwrap().trusted);
    assert_eq!(lab.client.counters().hairpin_peers_trusted, 0);
}

#[test]
fn knob_off_the_trailers_change_nothing_byte_for_byte() {
    // Two clients of the same seed, the extension off: a relayed bubble with and without an
    // Alternate Address trailer produce the same datagrams; so does sending.
    let mut with = qualified(win7(false));
    let mut without = qualified(win7(false));
    let own = with.client.address().unwrap();
    assert_eq!(Some(own), without.client.address());
    let mut t = nonce_trailer(NONCE_B);
    let plain = relayed(own, &t);
    t.extend(alt_trailer(&[LAN_B]));
    let (now_a, now_b) = (with.now, without.now);
    with.client
        .handle_udp(now_a, Local::Primary, SERVER, &relayed(own, &t))
        .unwrap();
    without
        .client
        .handle_udp(now_b, Local::Primary, SERVER, &plain)
        .unwrap();
    let (a, b) = (drain(&mut with.client), drain(&mut without.client));
    assert!(!a.is_empty());
    assert_eq!(a, b);
    assert!(with.client.peer_alternates(&b_addr()).is_empty());
    // Sending to a new peer: the indirect bubble carries the nonce alone, as before.
    let n = TeredoAddr {
        server: P,
        flags: 0,
        mapped: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 99), 4000),
    }
    .to_ipv6();
    with.client
        .handle_ipv6(now_a, &echo_request(own, n, 1))
        .unwrap();
    let out = drain(&mut with.client);
    let indirect = out.iter().find(|o| o.1 == Kind::IndirectBubble).unwrap();
    assert_eq!(trailers_of(&indirect.2).len(), 6);
    // And an RFC 4380 profile sends no trailer at all.
    let mut plain = Lab::profile(Profile::Rfc5991, NatKind::Restricted);
    plain.run_for(secs(60));
    let (own, now) = (plain.client.address().unwrap(), plain.now);
    plain
        .client
        .handle_ipv6(now, &echo_request(own, n, 1))
        .unwrap();
    let out = drain(&mut plain.client);
    assert!(out.iter().all(|o| trailers_of(&o.2).is_empty()), "{out:?}");
    let c = with.client.counters();
    assert_eq!(
        (
            c.hairpin_trailers_sent,
            c.hairpin_trailers_received,
            c.hairpin_bubbles_sent
        ),
        (0, 0, 0)
    );
}

#[test]
fn a_peer_at_its_lan_address_is_not_taken_for_a_symmetric_one() {
    // Behind a single UPnP symmetric NAT, data to a peer flagged symmetric goes to its
    // embedded mapping (RFC 6081 §5.3.4.2); a peer trusted at its LAN address must keep
    // getting it there.
    // Without the random-port extensions, whose echo test would defer the indirect bubble
    // (`tests/random_port.rs`).
    let mut cfg = win7(true);
    cfg.port_preserving = false;
    cfg.sequential = false;
    let mut lab = Lab::new(cfg, NatKind::SymPort, 7);
    lab.run_for(secs(60));
    assert_eq!(lab.client.nat_type(), NatType::SymmetricPort);
    let now = lab.now;
    let mapping = lab.client.mapping().unwrap();
    lab.client.handle_upnp(now, UpnpAnswer::Mapped(mapping));
    let (own, b) = (lab.client.address().unwrap(), b_addr());
    let sent = ping_b(&mut lab);
    let r = lab.client.handle_udp(
        now,
        Local::Primary,
        LAN_B,
        &bubble(b, own, &nonce_trailer(sent)),
    );
    assert_eq!(r, Ok(Handled::Bubble));
    assert_eq!(drain(&mut lab.client)[0].0, LAN_B, "the queued ping");
    lab.client
        .handle_ipv6(now, &echo_request(own, b, 2))
        .unwrap();
    assert_eq!(drain(&mut lab.client)[0].0, LAN_B);
}
