//! The misbehaving server (`teredo_tests::misbehaving`) on the wire, independently of the
//! conformance catalogue: without a fault it does what the core does; each fault breaks its
//! one rule and leaves the other behaviour alone. One namespace, every address on `lo`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use teredo::addr::{TeredoAddr, LL_WINDOWS_CONE, LL_WINDOWS_RESTRICTED};
use teredo::wire::ipv6::emit_bubble;
use teredo::wire::ndp::emit_rs;
use teredo::wire::{Auth, OriginIndication};
use teredo_tests::inproc::udp_socket;
use teredo_tests::misbehaving::{Fault, MisbehavingServer};
use teredo_tests::topo::{SERVER_PRIMARY, SERVER_SECONDARY};
use teredo_tests::{check, function_name, require_root, Netns};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const WAIT: Duration = Duration::from_millis(300);

struct Lab {
    _ns: Netns,
    _server: MisbehavingServer,
    /// The sender (client A).
    a: UdpSocket,
    /// The bubble's destination (client B).
    b: UdpSocket,
}

impl Lab {
    fn new(test: &str, faults: &[Fault]) -> Self {
        let ns = check(Netns::with_lo_addrs(
            test,
            "lab",
            &[SERVER_PRIMARY, SERVER_SECONDARY, CLIENT],
            32,
        ));
        let server = check(MisbehavingServer::start(
            &ns,
            SERVER_PRIMARY,
            SERVER_SECONDARY,
            faults,
        ));
        let sock = || {
            let s = check(udp_socket(&ns, SocketAddrV4::new(CLIENT, 0)));
            s.set_read_timeout(Some(WAIT)).unwrap();
            s
        };
        let (a, b) = (sock(), sock());
        Self {
            _ns: ns,
            _server: server,
            a,
            b,
        }
    }

    /// Sends an RS from `src` to `to`; returns where the answers came from.
    fn rs_answered_from(&self, src: Ipv6Addr, to: Ipv4Addr) -> Vec<SocketAddr> {
        let mut buf = [0u8; 256];
        let auth = Auth::nonce_only([7; 8]);
        let n = emit_rs(&mut buf, Some(&auth), src, false).unwrap();
        self.a
            .send_to(&buf[..n], SocketAddrV4::new(to, 3544))
            .unwrap();
        let mut from = Vec::new();
        while let Ok((_, addr)) = self.a.recv_from(&mut buf) {
            from.push(addr);
        }
        from
    }

    /// Sends a bubble from A whose Teredo source embeds `claimed` to B's Teredo address;
    /// returns what B received.
    fn bubble_to_b(&self, claimed: SocketAddrV4) -> Vec<Vec<u8>> {
        let teredo = |mapped| {
            TeredoAddr {
                server: SERVER_PRIMARY,
                flags: 0,
                mapped,
            }
            .to_ipv6()
        };
        let b_addr = addr4(&self.b);
        let mut pkt = [0u8; 40];
        emit_bubble(&mut pkt, teredo(claimed), teredo(b_addr), 0).unwrap();
        self.a
            .send_to(&pkt, SocketAddrV4::new(SERVER_PRIMARY, 3544))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = self.b.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    }
}

fn addr4(s: &UdpSocket) -> SocketAddrV4 {
    match s.local_addr().unwrap() {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => panic!("IPv6 socket {a}"),
    }
}

fn at(ip: Ipv4Addr) -> Vec<SocketAddr> {
    vec![SocketAddrV4::new(ip, 3544).into()]
}

/// The origin indication of a relayed datagram.
fn origin(datagram: &[u8]) -> SocketAddrV4 {
    OriginIndication::parse(datagram).unwrap().0
}

#[test]
fn misbehaving_server_without_faults_keeps_the_rules() {
    require_root!();
    let lab = Lab::new(function_name!(), &[]);
    let (p, s) = (SERVER_PRIMARY, SERVER_SECONDARY);
    assert_eq!(lab.rs_answered_from(LL_WINDOWS_CONE, p), at(s));
    assert_eq!(lab.rs_answered_from(LL_WINDOWS_CONE, s), at(p));
    assert_eq!(lab.rs_answered_from(LL_WINDOWS_RESTRICTED, p), at(p));
    let spoofed = SocketAddrV4::new(CLIENT, addr4(&lab.a).port() ^ 1);
    assert_eq!(lab.bubble_to_b(spoofed), Vec::<Vec<u8>>::new());
    let honest = lab.bubble_to_b(addr4(&lab.a));
    assert_eq!(honest.len(), 1);
    assert_eq!(origin(&honest[0]), addr4(&lab.a));
}

#[test]
fn misbehaving_server_answers_a_cone_rs_from_the_same_address() {
    require_root!();
    let lab = Lab::new(function_name!(), &[Fault::ConeFromSameAddress]);
    let (p, s) = (SERVER_PRIMARY, SERVER_SECONDARY);
    assert_eq!(lab.rs_answered_from(LL_WINDOWS_CONE, p), at(p));
    assert_eq!(lab.rs_answered_from(LL_WINDOWS_CONE, s), at(s));
    // Untouched: restricted RSs and the anti-spoofing rule.
    assert_eq!(lab.rs_answered_from(LL_WINDOWS_RESTRICTED, s), at(s));
    let spoofed = SocketAddrV4::new(CLIENT, addr4(&lab.a).port() ^ 1);
    assert_eq!(lab.bubble_to_b(spoofed), Vec::<Vec<u8>>::new());
}

#[test]
fn misbehaving_server_forwards_a_spoofed_bubble() {
    require_root!();
    let lab = Lab::new(function_name!(), &[Fault::ForwardSpoofedBubble]);
    let spoofed = SocketAddrV4::new(CLIENT, addr4(&lab.a).port() ^ 1);
    let got = lab.bubble_to_b(spoofed);
    assert_eq!(got.len(), 1, "{got:02x?}");
    // The real sender as origin indication, then the bubble as sent.
    assert_eq!(origin(&got[0]), addr4(&lab.a));
    assert_eq!(got[0].len(), 8 + 40);
    // Untouched: cone RSs are still answered from the other address.
    let (p, s) = (SERVER_PRIMARY, SERVER_SECONDARY);
    assert_eq!(lab.rs_answered_from(LL_WINDOWS_CONE, p), at(s));
}
