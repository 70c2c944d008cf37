//! RFC 4380 §5.2.8 local client discovery: who sends discovery bubbles and when, what a
//! discovery bubble from the link does, and how a local peer is reached and trusted.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use super::net::*;
use crate::addr::TeredoAddr;
use crate::client::*;
use crate::io::{Kind, Local};
use crate::wire::ipv6::emit_bubble;
use crate::wire::TeredoPacket;
use crate::DropReason;

/// The neighbour on the LAN of the lab's client (192.168.1.10:5000 behind EXT).
const LAN_B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 11), 6000);

/// B's Teredo address: behind the same NAT (EXT's IPv4), its own port.
fn b_addr() -> Ipv6Addr {
    TeredoAddr {
        server: P,
        flags: 0,
        mapped: SocketAddrV4::new(*EXT.ip(), 40001),
    }
    .to_ipv6()
}

fn bubble(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
    let mut b = vec![0u8; 40];
    emit_bubble(&mut b, src, dst, hop_limit).unwrap();
    b
}

/// A qualified win7 client behind a restricted NAT, its outputs drained.
fn qualified() -> Lab {
    let mut lab = Lab::profile(Profile::Win7, NatKind::Restricted);
    lab.run_for(secs(60));
    assert_eq!(lab.client.state(), State::Qualified);
    lab
}

/// Every datagram waiting in the client: (destination, kind, IPv6 destination).
fn drain(c: &mut Client) -> Vec<(SocketAddrV4, Kind, Ipv6Addr)> {
    let mut buf = [0u8; 1500];
    let mut out = Vec::new();
    while let Some(s) = next_udp(c, &mut buf) {
        let p = TeredoPacket::parse(&buf[..s.len]).unwrap();
        out.push((s.to, s.kind, p.dst()));
    }
    out
}

#[test]
fn profiles_that_discover_send_at_qualification_then_every_200_to_300_s() {
    for &p in Profile::ALL {
        let mut lab = Lab::profile(p, NatKind::Restricted);
        lab.run_for(secs(60));
        let qualified_at = lab.rs_log.last().unwrap().0;
        lab.run_for(secs(3000));
        let cfg = ClientConfig::profile(p, P);
        if !cfg.local_discovery {
            assert!(lab.discovery_log.is_empty(), "{p}");
            continue;
        }
        assert!(matches!(p, Profile::Vista | Profile::Win7), "{p}");
        assert!(
            lab.discovery_log[0] <= qualified_at + secs(1),
            "{p}: at once"
        );
        let gaps: Vec<u64> = lab
            .discovery_log
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs())
            .collect();
        assert!(gaps.len() >= 9, "{p}: {gaps:?}");
        assert!(
            gaps.iter().all(|g| (200..=300).contains(g)),
            "{p}: {gaps:?}"
        );
        assert!(gaps.iter().any(|g| *g != gaps[0]), "{p}: random: {gaps:?}");
        assert_eq!(
            lab.client.counters().discovery_sent,
            lab.discovery_log.len() as u64
        );
    }
}

#[test]
fn discovery_bubble_makes_an_untrusted_local_peer_answered_on_the_lan() {
    let mut lab = qualified();
    let (own, b) = (lab.client.address().unwrap(), b_addr());
    let now = lab.now;
    let r = lab
        .client
        .handle_discovery(now, LAN_B, &bubble(b, ALL_NODES, 1));
    assert_eq!(r, Ok(Handled::DiscoveryBubble));
    assert_eq!(
        drain(&mut lab.client),
        vec![(LAN_B, Kind::Bubble, b)],
        "a unicast bubble to the LAN address"
    );
    let info = lab.client.peer(&b, now).unwrap();
    assert!(!info.trusted, "not trusted until it answers");
    // Its answer from the LAN address (not its mapping) proves it: §5.2.3 case 5.
    let r = lab
        .client
        .handle_udp(now, Local::Primary, LAN_B, &bubble(b, own, 255));
    assert_eq!(r, Ok(Handled::Bubble));
    let info = lab.client.peer(&b, now).unwrap();
    assert!(info.trusted);
    assert_eq!(info.mapping, Some(LAN_B));
    // Valid for 600 s, not RFC 4380's 30 s of other peers.
    assert!(lab.client.peer(&b, now + secs(300)).unwrap().valid);
    assert!(!lab.client.peer(&b, now + secs(601)).unwrap().valid);
    // Data to it goes straight to the LAN address.
    let ping = echo_request(own, b, 1);
    assert_eq!(lab.client.handle_ipv6(now, &ping), Ok(Handled::Sent));
    assert_eq!(drain(&mut lab.client), vec![(LAN_B, Kind::Data, b)]);
}

#[test]
fn a_local_peer_is_probed_on_the_lan_and_by_discovery_not_through_the_server() {
    let mut lab = qualified();
    let (own, b) = (lab.client.address().unwrap(), b_addr());
    let now = lab.now;
    lab.client
        .handle_discovery(now, LAN_B, &bubble(b, ALL_NODES, 1))
        .unwrap();
    drain(&mut lab.client);
    let ping = echo_request(own, b, 1);
    assert_eq!(lab.client.handle_ipv6(now, &ping), Ok(Handled::Queued));
    assert_eq!(
        drain(&mut lab.client),
        vec![
            (LAN_B, Kind::Bubble, b),
            (DISCOVERY_DEST, Kind::DiscoveryBubble, ALL_NODES),
        ],
        "RFC 4380 §5.2.4 case 3"
    );
    // B answers from its LAN address: trusted, the queued ping leaves for the LAN.
    lab.client
        .handle_udp(now, Local::Primary, LAN_B, &bubble(b, own, 255))
        .unwrap();
    assert_eq!(drain(&mut lab.client), vec![(LAN_B, Kind::Data, b)]);
}

#[test]
fn a_relayed_bubble_from_a_local_peer_is_answered_on_the_lan() {
    let mut lab = qualified();
    let b = b_addr();
    let now = lab.now;
    lab.client
        .handle_discovery(now, LAN_B, &bubble(b, ALL_NODES, 1))
        .unwrap();
    drain(&mut lab.client);
    // B's indirect bubble, relayed by the server with B's mapping as origin (which a NAT
    // without hairpinning would not let our answer reach).
    let own = lab.client.address().unwrap();
    let mut relayed = vec![0u8; 8];
    crate::wire::origin::OriginIndication(SocketAddrV4::new(*EXT.ip(), 40001))
        .emit(&mut relayed)
        .unwrap();
    relayed.extend(bubble(b, own, 255));
    let server = SocketAddrV4::new(P, 3544);
    let r = lab.client.handle_udp(now, Local::Primary, server, &relayed);
    assert_eq!(r, Ok(Handled::RelayedBubble));
    let out = drain(&mut lab.client);
    assert!(out.contains(&(LAN_B, Kind::Bubble, b)), "{out:?}");
    assert!(
        out.contains(&(DISCOVERY_DEST, Kind::DiscoveryBubble, ALL_NODES)),
        "so that B learns our LAN address: {out:?}"
    );
}

#[test]
fn discovery_bubbles_not_from_this_link_are_refused() {
    let mut lab = qualified();
    let (own, b) = (lab.client.address().unwrap(), b_addr());
    let now = lab.now;
    let foreign_nat = TeredoAddr {
        server: P,
        flags: 0,
        mapped: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 99), 40001),
    }
    .to_ipv6();
    let off_subnet = SocketAddrV4::new(Ipv4Addr::new(192, 168, 7, 11), 6000);
    let native: Ipv6Addr = "2001:db8::5".parse().unwrap();
    for (from, pkt, why) in [
        (
            off_subnet,
            bubble(b, ALL_NODES, 1),
            "IPv4 source off the subnet",
        ),
        (
            LAN_B,
            bubble(foreign_nat, ALL_NODES, 1),
            "another NAT's mapped IPv4",
        ),
        (LAN_B, bubble(native, ALL_NODES, 1), "not a Teredo source"),
        (LAN_B, bubble(b, own, 1), "not to ff02::1"),
        (LAN_B, bubble(own, ALL_NODES, 1), "our own"),
    ] {
        let r = lab.client.handle_discovery(now, from, &pkt);
        assert_eq!(r, Err(DropReason::DiscoveryRejected), "{why}");
    }
    assert!(drain(&mut lab.client).is_empty());
    assert_eq!(lab.client.peer(&b, now), None);
    // Without a discovery bubble, a bubble from B's LAN address proves nothing.
    let r = lab
        .client
        .handle_udp(now, Local::Primary, LAN_B, &bubble(b, own, 255));
    assert_eq!(r, Err(DropReason::SpoofedSource));
}

#[test]
fn clients_without_discovery_ignore_discovery_bubbles() {
    let mut cfg = ClientConfig::profile(Profile::Win7, P);
    cfg.local_discovery = false;
    let mut lab = Lab::new(cfg, NatKind::Restricted, 7);
    lab.run_for(secs(600));
    assert!(lab.discovery_log.is_empty());
    let now = lab.now;
    let r = lab
        .client
        .handle_discovery(now, LAN_B, &bubble(b_addr(), ALL_NODES, 1));
    assert_eq!(r, Err(DropReason::NotAllowed));
    assert!(drain(&mut lab.client).is_empty());
}
