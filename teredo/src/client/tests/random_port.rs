//! RFC 6081 §5.4 (port-preserving symmetric NAT) and §5.5 (sequential port-symmetric NAT)
//! in the client, driven by hand: the Port-Preserving NAT flag, the random port and its
//! trailers, trust on the random port, the echo test and its failover, the Peer Refresh
//! Timer, and refused input.

use super::net::*;
use crate::addr::{server_link_local, TeredoAddr};
use crate::client::bubbles::bubble_with_port;
use crate::client::*;
use crate::io::{Kind, Local, Output};
use crate::wire::auth::Auth;
use crate::wire::ndp::RaParams;
use crate::wire::trailer::{RandomPort, Trailers, TYPE_RANDOM_PORT};
use crate::wire::{OriginIndication, TeredoPacket};
use crate::DropReason;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Our mapping behind a port-preserving symmetric NAT: the local port (PRIVATE's 5000).
const M1_PP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 5000);
/// Behind a sequential NAT: another port.
const M1_SEQ: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 40_000);
/// The peer's advertised random port.
const PEER_PORT: u16 = 61_000;

/// One datagram the client emitted.
#[derive(Debug)]
struct Dg {
    local: Local,
    to: SocketAddrV4,
    kind: Kind,
    bytes: Vec<u8>,
}

impl Dg {
    fn random_port(&self) -> Option<u16> {
        let pkt = TeredoPacket::parse(&self.bytes).unwrap();
        Trailers::new(pkt.trailers)
            .find(|t| t.ty == TYPE_RANDOM_PORT)
            .map(|t| RandomPort::parse(&t).unwrap().port)
    }
}

fn drain(c: &mut Client) -> Vec<Dg> {
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::new();
    while let Some(o) = c.poll_output(&mut buf) {
        if let Output::Udp {
            local,
            to,
            len,
            kind,
        } = o
        {
            out.push(Dg {
                local,
                to,
                kind,
                bytes: buf[..len].to_vec(),
            });
        }
    }
    out
}

fn ra_from(nonce: [u8; 8], dst: Ipv6Addr, origin: SocketAddrV4) -> Vec<u8> {
    let p = RaParams {
        auth: Some(Auth::nonce_only(nonce)),
        origin,
        src: server_link_local(P),
        dst,
        primary: P,
        mtu: None,
    };
    let mut buf = vec![0u8; 256];
    let n = p.emit(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn rs_nonce(d: &Dg) -> ([u8; 8], Ipv6Addr) {
    let pkt = TeredoPacket::parse(&d.bytes).unwrap();
    (pkt.auth.unwrap().nonce, pkt.src())
}

/// A win7 client (no cone probe, UPnP or discovery, refreshes far away) qualified behind a
/// symmetric NAT that mapped it to `m1` towards the primary and the next port towards the
/// secondary.
fn qualified(m1: SocketAddrV4) -> (Client, Instant) {
    qualified_with(m1, |_| {})
}

fn qualified_with(m1: SocketAddrV4, f: impl FnOnce(&mut ClientConfig)) -> (Client, Instant) {
    let mut cfg = ClientConfig::profile(Profile::Win7, P);
    f(&mut cfg);
    cfg.cone_probe = false;
    cfg.upnp = false;
    cfg.local_discovery = false;
    cfg.refresh_interval = Duration::from_secs(24 * 3600);
    cfg.dormant_after = None;
    let now = t0();
    let mut c = Client::new(cfg, ChaCha8Rng::seed_from_u64(9), PRIVATE, now);
    for (server, origin) in [(P, m1), (S, SocketAddrV4::new(*m1.ip(), m1.port() + 1))] {
        let rs = drain(&mut c).pop().expect("an RS");
        assert_eq!(rs.to, SocketAddrV4::new(server, 3544));
        let (n, src) = rs_nonce(&rs);
        let from = SocketAddrV4::new(server, 3544);
        c.handle_udp(now, Local::Primary, from, &ra_from(n, src, origin))
            .unwrap();
    }
    assert_eq!(c.state(), State::Qualified);
    assert_eq!(c.nat_type(), NatType::SymmetricPort);
    (c, now)
}

fn peer() -> Ipv6Addr {
    TeredoAddr {
        server: P,
        flags: 0,
        mapped: EXT_Y,
    }
    .to_ipv6()
}

/// The peer's indirect bubble as our server relays it (origin = the peer's mapping).
fn relayed(own: Ipv6Addr, nonce: [u8; 4], port: Option<u16>) -> Vec<u8> {
    let mut v = vec![0u8; 8];
    OriginIndication(EXT_Y).emit(&mut v).unwrap();
    v.extend_from_slice(&bubble_with_port(peer(), own, Some(nonce), port));
    v
}

/// A client behind a port-preserving symmetric NAT with a packet queued for the peer: its
/// probe's datagrams and the random port.
fn pp_probing() -> (Client, Instant, Vec<Dg>, u16) {
    let (mut c, now) = qualified(M1_PP);
    let own = c.address().unwrap();
    let ping = echo_request(own, peer(), 0);
    assert_eq!(c.handle_ipv6(now, &ping), Ok(Handled::Queued));
    let out = drain(&mut c);
    let ports: Vec<u16> = c.extra_ports().collect();
    assert_eq!(ports.len(), 1, "one random port for the peer");
    (c, now, out, ports[0])
}

#[test]
fn port_preserving_flag_is_the_origin_port_equal_to_the_local_port() {
    let (c, _) = qualified(M1_PP);
    assert!(c.port_preserving_nat());
    let st = c.status();
    assert_eq!(st.port_preserving, Some(true));
    assert!(
        st.to_string().contains("UPNP: No, PortPreserving: Yes"),
        "{st}"
    );
    let (c, _) = qualified(M1_SEQ);
    assert!(!c.port_preserving_nat());
    assert!(c.status().to_string().contains("PortPreserving: No"));
}

#[test]
fn random_port_opened_and_advertised_in_the_indirect_bubble() {
    let (c, _, out, port) = pp_probing();
    assert!(RANDOM_PORTS.contains(&port) && port != PRIVATE.port());
    assert!(c.listens_on(port));
    // The probe: a direct bubble to the embedded mapping and the indirect one, both from
    // the primary socket; nothing from the random port before the peer said where.
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        (out[0].local, out[0].to, out[0].kind),
        (Local::Primary, EXT_Y, Kind::Bubble)
    );
    assert_eq!(out[0].random_port(), None);
    assert_eq!(out[1].kind, Kind::IndirectBubble);
    assert_eq!(out[1].to, SocketAddrV4::new(P, 3544));
    assert_eq!(out[1].local, Local::Primary);
    assert_eq!(out[1].random_port(), Some(port));
    let info = c.peer(&peer(), t0()).unwrap();
    assert_eq!((info.random_port, info.predicted_port), (Some(port), port));
}

#[test]
fn direct_bubbles_from_the_random_port_carry_the_trailer() {
    let (mut c, now, _, port) = pp_probing();
    let own = c.address().unwrap();
    let server = SocketAddrV4::new(P, 3544);
    let r = c.handle_udp(
        now,
        Local::Primary,
        server,
        &relayed(own, [7; 4], Some(PEER_PORT)),
    );
    assert_eq!(r, Ok(Handled::RelayedBubble));
    assert_eq!(c.peer(&peer(), now).unwrap().peer_random_port, PEER_PORT);
    let out = drain(&mut c);
    // The usual answer to the origin, then one from the random port to the peer's.
    let from_port: Vec<&Dg> = out
        .iter()
        .filter(|d| d.local == Local::Port(port))
        .collect();
    assert_eq!(from_port.len(), 1, "{out:?}");
    let d = from_port[0];
    assert_eq!(d.to, SocketAddrV4::new(*EXT_Y.ip(), PEER_PORT));
    assert_eq!(d.kind, Kind::Bubble);
    assert_eq!(d.random_port(), Some(port));
    let pkt = TeredoPacket::parse(&d.bytes).unwrap();
    assert_eq!(bubbles::trailer_nonce(pkt.trailers), Some([7; 4]));
    assert!(out
        .iter()
        .any(|d| d.local == Local::Primary && d.to == EXT_Y));
    // The next probe also sends from the random port to the peer's.
    c.handle_timeout(now + BUBBLE_INTERVAL);
    let out = drain(&mut c);
    assert!(out.iter().any(|d| d.local == Local::Port(port)
        && d.to.port() == PEER_PORT
        && d.random_port() == Some(port)));
}

#[test]
fn a_bubble_on_the_random_port_trusts_the_peer_there() {
    let (mut c, now, _, port) = pp_probing();
    let own = c.address().unwrap();
    let from = SocketAddrV4::new(*EXT_Y.ip(), PEER_PORT);
    let bubble = bubble_with_port(peer(), own, None, Some(PEER_PORT));
    // Another source on the port: closed to it.
    let stranger = TeredoAddr {
        server: P,
        flags: 0,
        mapped: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 1),
    }
    .to_ipv6();
    let other = bubble_with_port(stranger, own, None, None);
    assert_eq!(
        c.handle_udp(now, Local::Port(port), from, &other),
        Err(DropReason::ClosedPort)
    );
    assert_eq!(
        c.handle_udp(now, Local::Port(port), from, &bubble),
        Ok(Handled::Bubble)
    );
    let info = c.peer(&peer(), now).unwrap();
    assert!(info.trusted && info.via_random_port);
    assert_eq!(info.mapping, Some(from));
    // The queued ping leaves from the random port, to where the bubble came from.
    let out = drain(&mut c);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].local, out[0].to, out[0].kind),
        (Local::Port(port), from, Kind::Data)
    );
    // Data: from the port's socket too.
    let ping = echo_request(own, peer(), 1);
    assert_eq!(c.handle_ipv6(now, &ping), Ok(Handled::Sent));
    assert_eq!(drain(&mut c)[0].local, Local::Port(port));
    // A direct bubble accepted on the primary port (from the embedded mapping) moves the
    // peer there and closes the random port.
    let plain = bubble_with_port(peer(), own, None, None);
    assert_eq!(
        c.handle_udp(now, Local::Primary, EXT_Y, &plain),
        Ok(Handled::Bubble)
    );
    assert_eq!(c.extra_ports().count(), 0);
    let info = c.peer(&peer(), now).unwrap();
    assert!(!info.via_random_port && info.random_port.is_none());
    assert_eq!(
        c.handle_udp(now, Local::Port(port), from, &bubble),
        Err(DropReason::ClosedPort)
    );
    assert_eq!(c.counters().rejected(DropReason::ClosedPort), 2);
    drain(&mut c);
    // Second rule: trusted on the primary port, a bubble from another mapping within 30 s
    // changes nothing (refused: no nonce of ours); after 30 s quiet the peer is probed again.
    let moved = SocketAddrV4::new(*EXT_Y.ip(), 41_001);
    assert_eq!(
        c.handle_udp(now, Local::Primary, moved, &plain),
        Err(DropReason::SpoofedSource)
    );
    assert!(c.peer(&peer(), now).unwrap().trusted);
    let later = now + Duration::from_secs(31);
    assert_eq!(
        c.handle_udp(later, Local::Primary, moved, &plain),
        Ok(Handled::Bubble)
    );
    let info = c.peer(&peer(), later).unwrap();
    assert!(!info.trusted);
    assert_eq!(info.phase, PeerPhase::Probing);
    let out = drain(&mut c);
    assert!(
        out.iter().any(|d| d.kind == Kind::IndirectBubble),
        "{out:?}"
    );
}

#[test]
fn peer_refresh_timer_every_30_s_at_most_20() {
    let (mut c, mut now, _, port) = pp_probing();
    let own = c.address().unwrap();
    let from = SocketAddrV4::new(*EXT_Y.ip(), PEER_PORT);
    let bubble = bubble_with_port(peer(), own, None, None);
    c.handle_udp(now, Local::Port(port), from, &bubble).unwrap();
    drain(&mut c);
    // Data now: the first expiry resets the count and sends nothing.
    let due = c.poll_timeout().unwrap();
    assert!(due <= now + PEER_REFRESH_INTERVAL);
    c.handle_udp(due, Local::Port(port), from, &bubble).unwrap();
    c.handle_ipv6(due, &echo_request(own, peer(), 1)).unwrap();
    drain(&mut c);
    now = due;
    let mut refreshes = Vec::new();
    for _ in 0..25 {
        let next = c.poll_timeout().unwrap();
        assert!(next <= now + PEER_REFRESH_INTERVAL, "rescheduled in 30 s");
        now = next;
        c.handle_timeout(now);
        refreshes.extend(
            drain(&mut c)
                .into_iter()
                .filter(|d| d.local == Local::Port(port)),
        );
    }
    assert_eq!(refreshes.len(), usize::from(MAX_CONNECTION_REFRESHES));
    assert!(refreshes
        .iter()
        .all(|d| d.to == from && d.kind == Kind::Bubble));
    assert_eq!(c.counters().peer_refresh_bubbles, 20);
}

/// A client behind a sequential NAT with a packet queued for the peer: the probe's
/// datagrams and the echo test's local port.
fn seq_probing() -> (Client, Instant, Vec<Dg>, u16) {
    let (mut c, now) = qualified(M1_SEQ);
    let own = c.address().unwrap();
    assert_eq!(
        c.handle_ipv6(now, &echo_request(own, peer(), 0)),
        Ok(Handled::Queued)
    );
    let out = drain(&mut c);
    let port = c.extra_ports().next().expect("a random port");
    (c, now, out, port)
}

#[test]
fn echo_test_predicts_the_midpoint_and_then_sends_the_indirect_bubble() {
    let (mut c, now, out, port) = seq_probing();
    // The direct bubble from the primary socket, then the three packets from the random
    // port; no indirect bubble yet.
    let kinds: Vec<(Local, Kind)> = out.iter().map(|d| (d.local, d.kind)).collect();
    let l = Local::Port(port);
    assert_eq!(
        kinds,
        [
            (Local::Primary, Kind::Bubble),
            (l, Kind::RouterSolicitation),
            (l, Kind::Bubble),
            (l, Kind::RouterSolicitation),
        ]
    );
    assert_eq!(out[1].to, SocketAddrV4::new(P, 3544));
    assert_eq!(out[2].to, EXT_Y);
    assert_eq!(out[3].to, SocketAddrV4::new(S, 3544));
    let (n1, src) = rs_nonce(&out[1]);
    let (n2, _) = rs_nonce(&out[3]);
    assert_ne!(n1, n2);
    let ext = |p| SocketAddrV4::new(*M1_SEQ.ip(), p);
    // The secondary's RA first: nothing until both are in.
    let s = SocketAddrV4::new(S, 3544);
    c.handle_udp(now, l, s, &ra_from(n2, src, ext(40_012)))
        .unwrap();
    assert!(drain(&mut c).is_empty());
    let p = SocketAddrV4::new(P, 3544);
    assert_eq!(
        c.handle_udp(now, l, p, &ra_from(n1, src, ext(40_010))),
        Ok(Handled::RouterAdvertisement)
    );
    let out = drain(&mut c);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].local, out[0].kind),
        (Local::Primary, Kind::IndirectBubble)
    );
    assert_eq!(out[0].random_port(), Some(40_011), "(Lower + Upper) / 2");
    assert_eq!(c.peer(&peer(), now).unwrap().predicted_port, 40_011);
    assert_eq!(c.counters().echo_test_predictions, 1);
    // The same RA again, or one for a nonce of no test: refused, counted.
    assert_eq!(
        c.handle_udp(now, l, p, &ra_from([1; 8], src, ext(1))),
        Err(DropReason::BadNonce)
    );
}

#[test]
fn predicted_port_rounds_down_without_overflow() {
    assert_eq!(predict_port(100, 104), 102);
    assert_eq!(predict_port(100, 103), 101);
    assert_eq!(predict_port(65_534, 65_535), 65_534);
}

#[test]
fn echo_test_failover_one_second_then_two_then_the_indirect_bubble() {
    let (mut c, t, _, port) = seq_probing();
    let l = Local::Port(port);
    let echo_rs = |out: &[Dg]| {
        out.iter()
            .filter(|d| d.local == l && d.kind == Kind::RouterSolicitation)
            .count()
    };
    let indirect = |out: &[Dg]| -> Vec<Option<u16>> {
        out.iter()
            .filter(|d| d.kind == Kind::IndirectBubble)
            .map(Dg::random_port)
            .collect()
    };
    let sec = Duration::from_secs(1);
    c.handle_timeout(t + sec - Duration::from_millis(1));
    assert!(drain(&mut c).is_empty());
    c.handle_timeout(t + sec);
    let out = drain(&mut c);
    assert_eq!(echo_rs(&out), 2, "a second echo test after 1 s: {out:?}");
    assert!(indirect(&out).is_empty());
    // The probe's retransmission at 2 s starts no third test and sends no indirect bubble.
    c.handle_timeout(t + BUBBLE_INTERVAL);
    let out = drain(&mut c);
    assert_eq!((echo_rs(&out), indirect(&out).len()), (0, 0), "{out:?}");
    c.handle_timeout(t + 3 * sec - Duration::from_millis(1));
    assert!(indirect(&drain(&mut c)).is_empty());
    c.handle_timeout(t + 3 * sec);
    let out = drain(&mut c);
    assert_eq!(
        indirect(&out),
        [None],
        "2 s later: the indirect bubble, no prediction"
    );
    assert_eq!(c.counters().echo_tests_started, 2);
    assert_eq!(c.counters().echo_test_predictions, 0);
}

#[test]
fn bad_input_is_refused_and_counted() {
    let (mut c, now, _, port) = pp_probing();
    let own = c.address().unwrap();
    let from = SocketAddrV4::new(*EXT_Y.ip(), PEER_PORT);
    let bubble = bubble_with_port(peer(), own, None, None);
    // A port never opened, garbage on the open one.
    assert_eq!(
        c.handle_udp(now, Local::Port(port ^ 1), from, &bubble),
        Err(DropReason::ClosedPort)
    );
    assert!(c
        .handle_udp(now, Local::Port(port), from, &[0x60, 0])
        .is_err());
    // Data from an untrusted peer on the random port.
    let data = echo_request(peer(), own, 3);
    assert_eq!(
        c.handle_udp(now, Local::Port(port), from, &data),
        Err(DropReason::SpoofedSource)
    );
    // A malformed Random Port trailer (length 3) or port 0 teaches nothing.
    let server = SocketAddrV4::new(P, 3544);
    let mut bad = relayed(own, [1; 4], None);
    bad.extend_from_slice(&[TYPE_RANDOM_PORT, 3, 1, 2, 3]);
    c.handle_udp(now, Local::Primary, server, &bad).unwrap();
    assert_eq!(c.peer(&peer(), now).unwrap().peer_random_port, 0);
    c.handle_udp(now, Local::Primary, server, &relayed(own, [2; 4], Some(0)))
        .unwrap();
    assert_eq!(c.peer(&peer(), now).unwrap().peer_random_port, 0);
    let counters = c.counters();
    assert_eq!(counters.rejected(DropReason::ClosedPort), 1);
    assert_eq!(counters.rejected(DropReason::SpoofedSource), 1);
    assert!(counters.data_rejected >= 3);
}

#[test]
fn without_the_extension_no_random_port() {
    for p in [
        Profile::Vista,
        Profile::Miredo,
        Profile::Rfc5991,
        Profile::XpSp2,
    ] {
        assert!(!ClientConfig::profile(p, P).port_preserving, "{p}");
    }
    let w = ClientConfig::profile(Profile::Win7, P);
    assert!(w.port_preserving && w.sequential);
    for m1 in [M1_PP, M1_SEQ] {
        let (mut c, now) = qualified_with(m1, |c| c.port_preserving = false);
        let own = c.address().unwrap();
        c.handle_ipv6(now, &echo_request(own, peer(), 0)).unwrap();
        let out = drain(&mut c);
        assert_eq!(c.extra_ports().count(), 0);
        assert!(out
            .iter()
            .all(|d| d.local == Local::Primary && d.random_port().is_none()));
        assert!(
            out.iter().any(|d| d.kind == Kind::IndirectBubble),
            "{out:?}"
        );
    }
}
