//! TEREDO.md "(b) Conformance checks", server checks 1–15, against our server over real UDP
//! sockets, plus a tshark dissection check of the same kind of traffic.
//!
//! Each test has its own network namespace (so the tests run in parallel) holding only `lo`,
//! with documentation addresses: the server's primary P = 198.51.100.1 and secondary
//! S = 198.51.100.2, clients A = 198.51.100.10:40000, B = 198.51.100.11:40001 and
//! C = 198.51.100.12:40002, plus the non-global sources of check 5 (10.9.9.9, 169.254.1.1,
//! 172.16.0.1, 192.168.1.1, 192.88.99.1 and 127.0.0.1). An IPv4 default route via `lo` makes
//! anything the server might send to an address outside the namespace (192.0.2.77, 10.0.0.1 …)
//! go out on `lo` instead of failing with "network unreachable", so it can be seen.
//!
//! The server is the `teredo_server` library, started in-process on a thread that entered the
//! namespace (`teredo_tests::inproc`), with the native side a channel (check 13 also runs the
//! real raw-socket native side). Every check asserts:
//! * what the clients receive (`recv_from`, so the answering server address is known);
//! * what the server emitted at all: an `AF_PACKET` sniffer in the namespace sees every packet
//!   transmitted there, so "nothing emitted" means no UDP datagram from P:3544 or S:3544 and no
//!   IPv6 packet on the wire, and nothing on the native channel, after a quiet period of
//!   [`QUIET`] following the moment the server had handled every datagram (its
//!   `teredo_server_handling_duration_seconds_count`);
//! * the server's drop counters, `teredo_server_packets_dropped_total{reason}`: exactly the
//!   expected reasons with the expected counts, and no other drop.
//!
//! Where a socket cannot produce the input:
//! * sources that cannot be bound (0/8, 224/4, 255.255.255.255 in check 5; the server's own
//!   P:3544 and S:3544 in check 15, which the server holds) are forged with a raw
//!   `IP_HDRINCL` socket: sent to a local address over `lo`, the datagram reaches the server's
//!   socket with that source (input routing, where the kernel drops martian sources, does not
//!   run for looped-back packets). Only 0.0.0.0 itself cannot be sent at all (the kernel puts
//!   its own source in): that one, and the same list again, go to the sans-IO core
//!   (`teredo::server::Server::handle_udp`) in the same test.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use teredo::addr::{
    server_link_local, LL_MIREDO_RESTRICTED, LL_TEREDO_CONE, LL_WINDOWS_CONE,
    LL_WINDOWS_RESTRICTED, LL_XP_RESTRICTED,
};
use teredo::io::Local;
use teredo::server::{Server, ServerConfig};
use teredo::wire::ipv6::{emit_bubble, emit_ipv6_header, Echo};
use teredo::wire::ndp::emit_rs;
use teredo::wire::trailer::{Trailers, TYPE_NONCE};
use teredo::wire::{Auth, OriginIndication};
use teredo::{DropReason, TeredoAddr};
use teredo_server::{NativeSide, ServerOptions};
use teredo_tests::inproc::{
    native_channel, udp_socket, InprocServer, NativeRx, RawIpv4, Sniffer, UdpDatagram,
};
use teredo_tests::tshark::{tshark_check, Capture};
use teredo_tests::{check, function_name, require_root, Netns, TestDir};

/// Server primary address.
const P: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Server secondary address (P + 1).
const S: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const P_UDP: SocketAddrV4 = SocketAddrV4::new(P, 3544);
const S_UDP: SocketAddrV4 = SocketAddrV4::new(S, 3544);
/// Client A: the RS sender of TEREDO.md §4.3's captured RA.
const A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 10), 40000);
/// Client B: the destination of relayed packets.
const B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 11), 40001);
/// Client C: another client, or a relay.
const C: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 12), 40002);
/// Another Teredo server (TEST-NET-1).
const FOREIGN_SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);
/// A native IPv6 host.
const NATIVE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
/// The server's link-local address, fe80::8000:f227:~P (TEREDO.md §4.3), written out.
const SERVER_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x8000, 0xf227, 0x39cc, 0x9bfe);
/// The advertised prefix 2001:0:P::/64.
const PREFIX: Ipv6Addr = Ipv6Addr::new(0x2001, 0, 0xc633, 0x6401, 0, 0, 0, 0);
/// TEREDO.md "LLr" and "LLc": the RS sources of current Windows.
const LLR: Ipv6Addr = LL_WINDOWS_RESTRICTED;
const LLC: Ipv6Addr = LL_WINDOWS_CONE;
/// A nonce "N".
const N: [u8; 8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
/// Client A's nonce in the nonce-hygiene check.
const NONCE_A: [u8; 8] = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x11];
/// An RFC 6081 nonce trailer (type 0x01, length 4).
const NONCE_TRAILER: [u8; 6] = [0x01, 0x04, 0xde, 0xad, 0xbe, 0xef];
/// RFC 5991-style random flag bits in client A's Teredo address (C = 0).
const A_FLAGS: u16 = 0x1027;
/// Non-global sources a socket can bind (check 5), all on `lo`.
const NON_GLOBAL_BOUND: [Ipv4Addr; 6] = [
    Ipv4Addr::new(10, 9, 9, 9),
    Ipv4Addr::new(127, 0, 0, 1),
    Ipv4Addr::new(169, 254, 1, 1),
    Ipv4Addr::new(172, 16, 0, 1),
    Ipv4Addr::new(192, 168, 1, 1),
    Ipv4Addr::new(192, 88, 99, 1),
];
/// Non-global sources no socket can bind (check 5): forged with [`RawIpv4`].
const NON_GLOBAL_FORGED: [Ipv4Addr; 4] = [
    Ipv4Addr::new(0, 1, 2, 3),
    Ipv4Addr::new(224, 0, 0, 1),
    Ipv4Addr::new(239, 255, 255, 250),
    Ipv4Addr::BROADCAST,
];

/// How long "nothing emitted" is watched for, after the server has handled every datagram.
const QUIET: Duration = Duration::from_secs(1);
/// Upper bound for anything expected (a reply, a counter).
const LIMIT: Duration = Duration::from_secs(5);

const HANDLED: &str = "teredo_server_handling_duration_seconds_count";

fn forwarded(direction: &str, kind: &str) -> String {
    format!("teredo_server_packets_forwarded_total{{direction=\"{direction}\",kind=\"{kind}\"}}")
}

fn advertisements(address: &str) -> String {
    format!("teredo_server_router_advertisements_total{{address=\"{address}\"}}")
}

fn solicitations(address: &str, cone: bool) -> String {
    format!("teredo_server_router_solicitations_total{{address=\"{address}\",cone=\"{cone}\"}}")
}

// ---- the namespace with the in-process server ------------------------------------------

/// What the server emitted since the last look.
#[derive(Debug, Default)]
struct Emitted {
    /// UDP datagrams from P:3544 or S:3544 seen on the wire (forged ones excluded).
    udp: Vec<UdpDatagram>,
    /// IPv6 packets seen on the wire (the raw native side's output).
    ipv6: Vec<Vec<u8>>,
    /// Packets handed to the native channel.
    native: Vec<Vec<u8>>,
}

impl Emitted {
    #[track_caller]
    fn assert_none(&self) {
        assert!(
            self.udp.is_empty() && self.ipv6.is_empty() && self.native.is_empty(),
            "the server emitted something: {self:#?}"
        );
    }

    /// The (source, destination) of each UDP datagram, in order.
    fn udp_flows(&self) -> Vec<(SocketAddrV4, SocketAddrV4)> {
        self.udp.iter().map(|d| (d.src, d.dst)).collect()
    }
}

/// One namespace, one in-process server; dropped in field order (server first).
struct Lab {
    server: InprocServer,
    native: NativeRx,
    sniffer: Sniffer,
    /// Datagrams the test forged with a server address as the source, so that
    /// [`Lab::emitted`] does not take them for the server's.
    forged: Vec<UdpDatagram>,
    ns: Netns,
}

impl Lab {
    fn new(test: &str) -> Self {
        Self::with(test, "srv", |_, _| {})
    }

    /// A lab whose server options (and namespace) `configure` may change; by default the
    /// native side is a channel.
    fn with(test: &str, role: &str, configure: impl FnOnce(&mut ServerOptions, &Netns)) -> Self {
        let ns = check(Netns::new(test, role));
        for cidr in [
            "198.51.100.1/24",
            "198.51.100.2/24",
            "198.51.100.10/24",
            "198.51.100.11/24",
            "198.51.100.12/24",
        ] {
            check(ns.add_addr("lo", cidr));
        }
        for ip in NON_GLOBAL_BOUND.iter().filter(|ip| !ip.is_loopback()) {
            check(ns.add_addr("lo", &format!("{ip}/32")));
        }
        check(ns.ip(&["route", "add", "default", "dev", "lo"]));
        let (side, native) = native_channel(64);
        let mut options = ServerOptions::new(P);
        options.native = side;
        configure(&mut options, &ns);
        let sniffer = check(Sniffer::open(&ns));
        let server = check(InprocServer::start(&ns, options));
        assert_eq!(server.primary_addr(), P_UDP);
        assert_eq!(server.secondary_addr(), S_UDP);
        Self {
            server,
            native,
            sniffer,
            forged: Vec::new(),
            ns,
        }
    }

    fn udp(&self, addr: SocketAddrV4) -> UdpSocket {
        check(udp_socket(&self.ns, addr))
    }

    /// Sends a datagram with a forged source (see the module documentation).
    fn send_forged(&mut self, raw: &RawIpv4, from: SocketAddrV4, to: SocketAddrV4, data: &[u8]) {
        check(raw.send_udp(from, to, data));
        self.forged.push(UdpDatagram {
            src: from,
            dst: to,
            payload: data.to_vec(),
        });
    }

    #[track_caller]
    fn metric(&self, series: &str) -> f64 {
        self.server
            .metric(series)
            .unwrap_or_else(|| panic!("no series {series}:\n{}", self.server.metrics_text()))
    }

    /// Waits until the server has handled `n` datagrams in all.
    #[track_caller]
    fn wait_handled(&self, n: usize) {
        check(self.server.wait_metric(HANDLED, n as f64, LIMIT));
    }

    /// The non-zero drop counters.
    fn drops(&self) -> BTreeMap<String, u64> {
        let prefix = "teredo_server_packets_dropped_total{reason=\"";
        self.server
            .metrics_text()
            .lines()
            .filter_map(|l| {
                let (reason, value) = l.strip_prefix(prefix)?.split_once("\"} ")?;
                let value: f64 = value.trim().parse().ok()?;
                (value != 0.0).then(|| (reason.to_owned(), value as u64))
            })
            .collect()
    }

    /// Waits until `handled` datagrams were handled, then checks that the drop counters are
    /// exactly `want` (reasons may repeat: their counts add up).
    #[track_caller]
    fn assert_drops(&self, handled: usize, want: &[(DropReason, u64)]) {
        self.wait_handled(handled);
        let mut expected = BTreeMap::new();
        for (reason, n) in want {
            *expected.entry(reason.as_str().to_owned()).or_insert(0) += n;
        }
        assert_eq!(
            self.drops(),
            expected,
            "drop counters\n{}",
            self.server.metrics_text()
        );
    }

    /// What the server emitted since the last call (see [`Emitted`]).
    fn emitted(&mut self) -> Emitted {
        let mut e = Emitted::default();
        for p in self.sniffer.drain() {
            if let Some(d) = p.udp4() {
                let ours = d.src.port() == 3544 && (*d.src.ip() == P || *d.src.ip() == S);
                if let Some(i) = self.forged.iter().position(|f| *f == d) {
                    self.forged.swap_remove(i);
                } else if ours {
                    e.udp.push(d);
                }
            } else if let Some(ipv6) = p.ipv6() {
                e.ipv6.push(ipv6.to_vec());
            }
        }
        e.native = self.native.drain();
        e
    }

    /// Waits [`QUIET`], checks that none of `sockets` has a datagram waiting, and returns
    /// what the server emitted since the last look.
    #[track_caller]
    fn quiet(&mut self, sockets: &[&UdpSocket]) -> Emitted {
        std::thread::sleep(QUIET);
        for s in sockets {
            s.set_nonblocking(true).unwrap();
            let mut buf = vec![0u8; 65_536];
            match s.recv_from(&mut buf) {
                Ok((n, from)) => panic!(
                    "unexpected datagram to {} from {from}: {:02x?}",
                    s.local_addr().unwrap(),
                    &buf[..n]
                ),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv on {}: {e}", s.local_addr().unwrap()),
            }
            s.set_nonblocking(false).unwrap();
        }
        self.emitted()
    }
}

#[track_caller]
fn send(sock: &UdpSocket, to: SocketAddrV4, data: &[u8]) {
    let n = sock
        .send_to(data, to)
        .unwrap_or_else(|e| panic!("send to {to}: {e}"));
    assert_eq!(n, data.len());
}

/// The next datagram on `sock` (within [`LIMIT`]) and who sent it.
#[track_caller]
fn recv(sock: &UdpSocket) -> (Vec<u8>, SocketAddrV4) {
    sock.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, from) = sock.recv_from(&mut buf).unwrap_or_else(|e| {
        panic!(
            "nothing received on {} within {LIMIT:?}: {e}",
            sock.local_addr().unwrap()
        )
    });
    let SocketAddr::V4(from) = from else {
        panic!("IPv6 peer {from}")
    };
    buf.truncate(n);
    (buf, from)
}

// ---- packets ---------------------------------------------------------------------------

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An RS datagram (UDP payload).
fn rs(auth: Option<&Auth<'_>>, src: Ipv6Addr, xp_slla: bool) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let n = emit_rs(&mut buf, auth, src, xp_slla).unwrap();
    buf[..n].to_vec()
}

/// A nonce-only RS without options.
fn rs_n(nonce: [u8; 8], src: Ipv6Addr) -> Vec<u8> {
    rs(Some(&Auth::nonce_only(nonce)), src, false)
}

/// A bubble as Miredo sends it (hop limit 0).
fn bubble(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut b = vec![0u8; 40];
    emit_bubble(&mut b, src, dst, 0).unwrap();
    b
}

/// An ICMPv6 echo request whose ICMPv6 message (the IPv6 payload) is `payload_len` bytes.
fn echo(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, payload_len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..payload_len - 8).map(|i| i as u8).collect();
    let mut buf = vec![0u8; 40 + payload_len];
    let n = Echo {
        reply: false,
        id: 0x7e7e,
        seq: 1,
        data: &data,
    }
    .emit(&mut buf, src, dst, hop_limit)
    .unwrap();
    assert_eq!(n, buf.len());
    buf
}

/// An IPv6 packet with an arbitrary next header and payload.
fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    emit_ipv6_header(&mut p, src, dst, next_header, 64, payload.len()).unwrap();
    p.extend_from_slice(payload);
    p
}

fn teredo(server: Ipv4Addr, flags: u16, mapped: SocketAddrV4) -> Ipv6Addr {
    TeredoAddr {
        server,
        flags,
        mapped,
    }
    .to_ipv6()
}

/// Client A's Teredo address (served by P, mapping = A's real address).
fn a_teredo() -> Ipv6Addr {
    teredo(P, A_FLAGS, A)
}

/// Client B's Teredo address (served by P).
fn b_teredo() -> Ipv6Addr {
    teredo(P, 0, B)
}

/// An origin indication, written out here (RFC 4380 §5.1.1) rather than by `teredo`.
fn oi(addr: SocketAddrV4) -> Vec<u8> {
    let mut o = vec![0, 0];
    o.extend_from_slice(&(!addr.port()).to_be_bytes());
    o.extend_from_slice(&(!u32::from(*addr.ip())).to_be_bytes());
    o
}

/// ICMPv6 checksum verification, independent of `teredo`.
fn icmpv6_checksum_ok(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> bool {
    let mut data = Vec::new();
    data.extend_from_slice(&src.octets());
    data.extend_from_slice(&dst.octets());
    data.extend_from_slice(&u32::try_from(icmp.len()).unwrap().to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, 58]);
    data.extend_from_slice(icmp);
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

fn v6(bytes: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap())
}

/// miredo-server 1.2.6's RA to client 198.51.100.10:40000 (= A) for an RS from
/// fe80::ffff:ffff:fffe (= LLr) with `nonce`, captured in TEREDO.md §4.3.
fn miredo_ra(nonce: [u8; 8]) -> Vec<u8> {
    hex(&format!(
        "0001 0000 {} 00
         0000 63bf 39cc9bf5
         6000 0000 0038 3a ff
         fe80 0000 0000 0000 8000 f227 39cc 9bfe
         fe80 0000 0000 0000 0000 ffff ffff fffe
         86 00 954d 00 00 0000 00000000 000007d0
         03 04 40 40 ffffffff ffffffff 00000000 2001 0000 c633 6401 0000 0000 0000 0000
         05 01 0000 00000500",
        to_hex(&nonce)
    ))
}

/// Checks an RA datagram field by field (TEREDO.md (b) check 1): the auth header echoing
/// `nonce` (ID-len = AU-len = 0, confirmation 0) or none, the OI naming `client`, IPv6 from
/// the server's link-local to `rs_src` with hop limit 255, ICMPv6 type 134 code 0 with a
/// valid checksum, exactly one PIO (length 4, /64, A set, 2001:0:P::/64) and an MTU option,
/// if any, of at least 1280.
#[track_caller]
fn assert_ra(ra: &[u8], nonce: Option<[u8; 8]>, client: SocketAddrV4, rs_src: Ipv6Addr) {
    let at = match nonce {
        Some(n) => {
            assert_eq!(ra[..4], [0, 1, 0, 0], "auth header, ID-len 0, AU-len 0");
            assert_eq!(ra[4..12], n, "nonce echoed");
            assert_eq!(ra[12], 0, "confirmation");
            13
        }
        None => {
            assert_eq!(ra[..2], [0, 0], "no auth header: the OI comes first");
            0
        }
    };
    assert_eq!(ra[at..at + 8], oi(client), "origin indication");
    let ip = &ra[at + 8..];
    assert!(ip.len() >= 40 + 16 + 32, "RA too short: {ra:02x?}");
    assert_eq!(ip[0] >> 4, 6, "IP version");
    let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    assert_eq!(plen, ip.len() - 40, "payload length = rest of the datagram");
    assert_eq!(ip[6], 58, "next header ICMPv6");
    assert_eq!(ip[7], 255, "hop limit");
    let (src, dst) = (v6(&ip[8..24]), v6(&ip[24..40]));
    assert_eq!(src, SERVER_LL, "IPv6 source = fe80::8000:f227:~P");
    assert_eq!(dst, rs_src, "IPv6 destination = the RS source");
    let icmp = &ip[40..];
    assert_eq!(icmp[..2], [134, 0], "ICMPv6 type 134 code 0");
    assert!(icmpv6_checksum_ok(src, dst, icmp), "ICMPv6 checksum");
    let (mut pios, mut i) = (0, 16);
    while i < icmp.len() {
        let (ty, len) = (icmp[i], usize::from(icmp[i + 1]) * 8);
        assert!(
            len > 0 && i + len <= icmp.len(),
            "option at {i}: {icmp:02x?}"
        );
        let o = &icmp[i..i + len];
        match ty {
            3 => {
                pios += 1;
                assert_eq!(o[1], 4, "PIO length");
                assert_eq!(o[2], 64, "prefix length");
                assert_ne!(o[3] & 0x40, 0, "A flag");
                assert_eq!(v6(&o[16..32]), PREFIX, "prefix 2001:0:P::/64");
            }
            5 => {
                let mtu = u32::from_be_bytes([o[4], o[5], o[6], o[7]]);
                assert!(mtu >= 1280, "MTU option {mtu}");
            }
            _ => {}
        }
        i += len;
    }
    assert_eq!(pios, 1, "exactly one prefix information option");
}

/// Feeds one datagram to a fresh sans-IO core and returns why it dropped it, checking that
/// nothing is left to send.
#[track_caller]
fn sans_io_drop(local: Local, from: SocketAddrV4, data: &[u8]) -> DropReason {
    let mut server = Server::new(ServerConfig::new(P));
    let r = server.handle_udp(Instant::now(), local, from, data);
    let mut buf = vec![0u8; 65_535];
    assert_eq!(server.poll_output(&mut buf), None, "output for {from}");
    r.expect_err("the core accepted it")
}

// ---- the checks ------------------------------------------------------------------------

/// Check 1: a restricted RS gets exactly one RA, from the address it was sent to, with the
/// layout of TEREDO.md §4.3 — byte for byte what miredo-server 1.2.6 sent to the same
/// client (checksum included) — and the prefix of P even when S answers.
#[test]
fn check_01_restricted_rs_answered_from_same_address() {
    require_root!();
    let mut lab = Lab::new(function_name!());
    let a = lab.udp(A);
    let solicitation = rs_n(N, LLR);
    assert_eq!(solicitation.len(), 61, "a nonce-only RS is 61 bytes (§4.1)");

    send(&a, P_UDP, &solicitation);
    let (ra, from) = recv(&a);
    assert_eq!(from, P_UDP, "restricted RS to P answered from P:3544");
    assert_ra(&ra, Some(N), A, LLR);
    assert_eq!(ra.len(), 13 + 8 + 40 + 16 + 32 + 8, "with the MTU option");
    assert_eq!(ra, miredo_ra(N), "byte-identical to miredo-server's RA");
    assert_eq!(server_link_local(P), SERVER_LL);

    send(&a, S_UDP, &solicitation);
    let (ra_s, from) = recv(&a);
    assert_eq!(from, S_UDP, "restricted RS to S answered from S:3544");
    assert_ra(&ra_s, Some(N), A, LLR);
    assert_eq!(ra_s, ra, "same RA (PIO 2001:0:P::/64) from S");

    lab.wait_handled(2);
    let e = lab.quiet(&[&a]);
    assert_eq!(
        e.udp_flows(),
        [(P_UDP, A), (S_UDP, A)],
        "exactly one RA each"
    );
    assert!(e.native.is_empty() && e.ipv6.is_empty());
    lab.assert_drops(2, &[]);
    assert_eq!(lab.metric(&solicitations("primary", false)), 1.0);
    assert_eq!(lab.metric(&solicitations("secondary", false)), 1.0);
    assert_eq!(lab.metric(&advertisements("primary")), 1.0);
    assert_eq!(lab.metric(&advertisements("secondary")), 1.0);
}

/// Check 2: a cone RS (Windows' fe80::8000:ffff:ffff:fffe and Miredo/XP's
/// fe80::8000:5445:5245:444f) is answered from the other address only.
#[test]
fn check_02_cone_rs_answered_from_other_address() {
    require_root!();
    let mut lab = Lab::new(function_name!());
    let a = lab.udp(A);
    let mut want = Vec::new();
    for (i, src) in [LLC, LL_TEREDO_CONE].into_iter().enumerate() {
        let nonce = [i as u8 + 1; 8];
        send(&a, P_UDP, &rs_n(nonce, src));
        let (ra, from) = recv(&a);
        assert_eq!(from, S_UDP, "cone RS {src} to P answered from S");
        assert_ra(&ra, Some(nonce), A, src);
        send(&a, S_UDP, &rs_n(nonce, src));
        let (ra, from) = recv(&a);
        assert_eq!(from, P_UDP, "cone RS {src} to S answered from P");
        assert_ra(&ra, Some(nonce), A, src);
        want.extend([(S_UDP, A), (P_UDP, A)]);
    }
    lab.wait_handled(4);
    let e = lab.quiet(&[&a]);
    assert_eq!(
        e.udp_flows(),
        want,
        "one RA per RS, none from the receiving address"
    );
    lab.assert_drops(4, &[]);
    assert_eq!(lab.metric(&solicitations("primary", true)), 2.0);
    assert_eq!(lab.metric(&solicitations("secondary", true)), 2.0);
}

/// Check 3: an 8-byte RS without options, XP's RS with a 16-byte source link-layer address
/// option, and link-local sources other than the well-known ones are all answered (only the
/// cone bit of the source matters).
#[test]
fn check_03_rs_variants_accepted() {
    require_root!();
    let mut lab = Lab::new(function_name!());
    let a = lab.udp(A);
    let ll = |s: &str| s.parse::<Ipv6Addr>().unwrap();
    // (what, nonce (None: no auth header), RS source, XP's SLLA option, answering address)
    let cases = [
        (
            "8-byte RS",
            Some([1; 8]),
            LL_MIREDO_RESTRICTED,
            false,
            P_UDP,
        ),
        ("8-byte RS without auth", None, LLR, false, P_UDP),
        (
            "XP RS with SLLA",
            Some([3; 8]),
            LL_XP_RESTRICTED,
            true,
            P_UDP,
        ),
        (
            "XP cone RS with SLLA",
            Some([4; 8]),
            LL_TEREDO_CONE,
            true,
            S_UDP,
        ),
        (
            "XP RS with SLLA, no auth",
            None,
            LL_XP_RESTRICTED,
            true,
            P_UDP,
        ),
        ("fe80::1", Some([5; 8]), ll("fe80::1"), false, P_UDP),
        (
            "other IID",
            Some([6; 8]),
            ll("fe80::1bcd:ef01:2345:6789"),
            false,
            P_UDP,
        ),
        (
            "all ones but C",
            Some([7; 8]),
            ll("fe80::7fff:ffff:ffff:ffff"),
            false,
            P_UDP,
        ),
        (
            "other IID, C set",
            Some([8; 8]),
            ll("fe80::8000:1:2:3"),
            false,
            S_UDP,
        ),
    ];
    for (what, nonce, src, xp_slla, answerer) in cases {
        let auth = nonce.map(Auth::nonce_only);
        let datagram = rs(auth.as_ref(), src, xp_slla);
        let icmp_len = if xp_slla { 8 + 16 } else { 8 };
        let auth_len = if nonce.is_some() { 13 } else { 0 };
        assert_eq!(datagram.len(), auth_len + 40 + icmp_len, "{what}");
        send(&a, P_UDP, &datagram);
        let (ra, from) = recv(&a);
        assert_eq!(from, answerer, "{what}");
        assert_ra(&ra, nonce, A, src);
    }
    lab.wait_handled(cases.len());
    let e = lab.quiet(&[&a]);
    assert_eq!(e.udp.len(), cases.len(), "one RA per RS: {e:#?}");
    lab.assert_drops(cases.len(), &[]);
}

/// Check 4: the RA echoes the RS's nonce with confirmation 0 and the RS's ID-len / AU-len
/// (and client ID); an RS without auth gets an RA without auth — never another client's
/// nonce (Miredo leaks the previous one, TEREDO.md §8.2).
#[test]
fn check_04_nonce_hygiene() {
    require_root!();
    let mut lab = Lab::new(function_name!());
    let a = lab.udp(A);
    let c = lab.udp(C);

    // Explicit auth fields and a non-zero confirmation in the RS.
    let full = Auth {
        client_id: b"client-7",
        auth_value: b"some-hmac-value",
        nonce: N,
        confirmation: 1,
    };
    send(&a, P_UDP, &rs(Some(&full), LLR, false));
    let (ra, from) = recv(&a);
    assert_eq!(from, P_UDP);
    assert_eq!(ra[..4], [0, 1, 8, 15], "ID-len and AU-len echoed");
    assert_eq!(&ra[4..12], b"client-7", "client ID echoed");
    let nonce_at = 4 + 8 + 15;
    assert_eq!(ra[nonce_at..nonce_at + 8], N, "nonce echoed");
    assert_eq!(ra[nonce_at + 8], 0, "confirmation 0");
    assert_ra(&ra[nonce_at + 9..], None, A, LLR);
    let mut handled = 1;

    for server in [P_UDP, S_UDP] {
        // A: nonce-only RS; C right after it, without auth, to the same server address
        // (the same worker, whose previous RS carried A's nonce).
        send(&a, server, &rs_n(NONCE_A, LLR));
        let (ra, from) = recv(&a);
        assert_eq!(from, server);
        assert_ra(&ra, Some(NONCE_A), A, LLR);
        send(&c, server, &rs(None, LLR, false));
        let (ra, from) = recv(&c);
        assert_eq!(from, server);
        assert_ra(&ra, None, C, LLR);
        assert_eq!(ra.len(), 8 + 40 + 16 + 32 + 8, "no auth header");
        for leaked in [NONCE_A, N] {
            assert!(
                !ra.windows(8).any(|w| w == leaked),
                "C's RA holds another client's nonce: {ra:02x?}"
            );
        }
        // And a cone RS without auth, answered from the other address.
        send(&c, server, &rs(None, LLC, false));
        let (ra, _) = recv(&c);
        assert_eq!(ra[..2], [0, 0], "no auth header");
        assert!(!ra.windows(8).any(|w| w == NONCE_A));
        handled += 3;
    }
    lab.wait_handled(handled);
    let e = lab.quiet(&[&a, &c]);
    assert_eq!(e.udp.len(), handled, "{e:#?}");
    lab.assert_drops(handled, &[]);
}

/// Check 5: RSs from non-global sources are dropped (`non_global_source`) and nothing is
/// emitted. Bindable sources send from real sockets; 0/8, 224/4 and 255.255.255.255 are
/// forged with a raw socket, and — as 0.0.0.0 cannot be sent at all — fed to the sans-IO
/// core too.
#[test]
fn check_05_non_global_sources_dropped() {
    require_root!();
    let mut lab = Lab::new(function_name!());
    let raw = check(RawIpv4::open(&lab.ns));
    let mut sockets = Vec::new();
    let mut sent = 0;
    for ip in NON_GLOBAL_BOUND {
        let s = lab.udp(SocketAddrV4::new(ip, 40000));
        send(&s, P_UDP, &rs_n(N, LLR));
        send(&s, S_UDP, &rs_n(N, LLC));
        // A bubble from a Teredo source matching the mapping (case 3 comes first).
        let own = teredo(P, 0, SocketAddrV4::new(ip, 40000));
        send(&s, P_UDP, &bubble(own, b_teredo()));
        sockets.push(s);
        sent += 3;
    }
    for ip in NON_GLOBAL_FORGED {
        let from = SocketAddrV4::new(ip, 40000);
        lab.send_forged(&raw, from, P_UDP, &rs_n(N, LLR));
        lab.send_forged(&raw, from, S_UDP, &rs_n(N, LLC));
        lab.send_forged(&raw, from, P_UDP, &bubble(teredo(P, 0, from), b_teredo()));
        sent += 3;
    }
    let b = lab.udp(B);
    lab.assert_drops(sent, &[(DropReason::NonGlobalSource, sent as u64)]);
    sockets.push(b);
    let refs: Vec<&UdpSocket> = sockets.iter().collect();
    lab.quiet(&refs).assert_none();
    assert_eq!(lab.metric(&advertisements("primary")), 0.0);
    assert_eq!(lab.metric(&advertisements("secondary")), 0.0);

    // The sans-IO core, for what no socket can send (0.0.0.0) and the forged ones again.
    let mut sources = vec![Ipv4Addr::UNSPECIFIED];
    sources.extend(NON_GLOBAL_FORGED);
    for ip in sources {
        for local in [Local::Primary, Local::Secondary] {
            let from = SocketAddrV4::new(ip, 40000);
            assert_eq!(
                sans_io_drop(local, from, &rs_n(N, LLR)),
                DropReason::NonGlobalSource,
                "{from}"
            );
        }
    }
}

/// Check 6: malformed datagrams are dropped without output, and the RS that follows each of
/// them is still answered (with its own nonce: the next datagram the client gets is that RA).
#[test]
fn check_06_malformed_dropped_server_survives() {
    require_root!();
    let mut lab = Lab::new(function_name!());
    let a = lab.udp(A);
    let good = rs_n(N, LLR);
    let ipv6_rs = &good[13..];
    let with = |at: usize, value: u8| {
        let mut d = good.clone();
        d[at] = value;
        d
    };
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("empty datagram", vec![], DropReason::Truncated),
        (
            "39-byte IPv6 packet",
            ipv6_rs[..39].to_vec(),
            DropReason::Truncated,
        ),
        (
            "auth + 39 bytes",
            good[..13 + 39].to_vec(),
            DropReason::Truncated,
        ),
        ("IP version 4", with(13, 0x45), DropReason::BadIpVersion),
        ("IP version 7", with(13, 0x70), DropReason::BadIpVersion),
        (
            "40 + payload length > length",
            with(13 + 5, 9),
            DropReason::BadLength,
        ),
        (
            "auth ID-len overruns the datagram",
            with(2, 200),
            DropReason::Truncated,
        ),
        (
            "auth AU-len overruns the datagram",
            with(3, 60),
            DropReason::Truncated,
        ),
        (
            "auth header cut",
            good[..12].to_vec(),
            DropReason::Truncated,
        ),
        (
            "OI truncated",
            vec![0, 0, 0xfe, 0xae, 0xfe],
            DropReason::Truncated,
        ),
        (
            "auth + OI truncated",
            cat(&[&good[..13], &[0, 0, 0xfe, 0xae, 0xfe, 0xfd]]),
            DropReason::Truncated,
        ),
    ];
    let mut want = Vec::new();
    for (i, (what, datagram, reason)) in cases.iter().enumerate() {
        let server = if i % 2 == 0 { P_UDP } else { S_UDP };
        send(&a, server, datagram);
        let nonce = [i as u8; 8];
        send(&a, server, &rs_n(nonce, LLR));
        let (ra, from) = recv(&a);
        assert_eq!(from, server, "after {what}");
        assert_ra(&ra, Some(nonce), A, LLR);
        want.push((*reason, 1));
    }
    lab.assert_drops(2 * cases.len(), &want);
    let e = lab.quiet(&[&a]);
    assert_eq!(e.udp.len(), cases.len(), "only the RAs: {e:#?}");
    assert!(e.native.is_empty() && e.ipv6.is_empty());
}

/// Check 7: an indirect bubble from client A (Teredo source = A's real mapping) to B (a
/// client of this server) with an RFC 6081 nonce trailer reaches B from P:3544 as exactly
/// OI(A) + the original IPv6 bytes + the trailer — also when A sent it to S.
#[test]
fn check_07_indirect_bubble_relayed_with_oi_and_trailer() {
    require_root!();
    let mut lab = Lab::new(function_name!());
    let (a, b) = (lab.udp(A), lab.udp(B));
    let mut trailer = [0u8; 6];
    Trailers::emit(TYPE_NONCE, &NONCE_TRAILER[2..], &mut trailer).unwrap();
    assert_eq!(trailer, NONCE_TRAILER);
    let ipv6 = bubble(a_teredo(), b_teredo());
    let datagram = cat(&[&ipv6, &trailer]);
    let mut oi_teredo = [0u8; 8];
    OriginIndication(A).emit(&mut oi_teredo).unwrap();
    assert_eq!(oi_teredo.to_vec(), oi(A));
    let want = cat(&[&oi(A), &ipv6, &trailer]);
    for server in [P_UDP, S_UDP] {
        send(&a, server, &datagram);
        let (got, from) = recv(&b);
        assert_eq!(from, P_UDP, "relayed from P:3544 (A sent it to {server})");
        assert_eq!(got, want, "OI(A) + IPv6 + trailer");
    }
    lab.wait_handled(2);
    let e = lab.quiet(&[&a, &b]);
    assert_eq!(e.udp_flows(), [(P_UDP, B), (P_UDP, B)]);
    lab.assert_drops(2, &[]);
    assert_eq!(lab.metric(&forwarded("to_client", "bubble")), 2.0);
}

/// Check 8: a bubble whose Teredo source embeds another port (or address) than the
/// sender's real one is not forwarded (`spoofed_source`).
#[test]
fn check_08_spoofed_teredo_source_dropped() {
    require_root!();
    let mut lab = Lab::new(function_name!());
    let (a, b) = (lab.udp(A), lab.udp(B));
    let other_port = teredo(P, A_FLAGS, SocketAddrV4::new(*A.ip(), 40005));
    let other_ip = teredo(P, A_FLAGS, SocketAddrV4::new(*C.ip(), A.port()));
    for server in [P_UDP, S_UDP] {
        for src in [other_port, other_ip] {
            send(
                &a,
                server,
                &cat(&[&bubble(src, b_teredo()), &NONCE_TRAILER]),
            );
        }
    }
    lab.assert_drops(4, &[(DropReason::SpoofedSource, 4)]);
    lab.quiet(&[&a, &b]).assert_none();

    // Control: the genuine source gets through, so B was reachable all along.
    send(&a, P_UDP, &bubble(a_teredo(), b_teredo()));
    assert_eq!(recv(&b).1, P_UDP);
    lab.assert_drops(5, &[(DropReason::SpoofedSource, 4)]);
}

/// Check 9 (case 6): a bubble with a non-Teredo source (a relay's link-local or native
/// address) to a Teredo address of this server is forwarded with an OI naming the sender;
/// to a Teredo address of another server it is dropped (`not_allowed`).
#[test]
fn check_09_relay_bubbles_only_to_our_clients() {
    require_root!();
    let mut lab = Lab::new(function_name!());
    let (relay, b) = (lab.udp(C), lab.udp(B));
    let sources: [Ipv6Addr; 2] = [
        "fe80::1234".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
    ];
    for src in sources {
        let ipv6 = bubble(src, b_teredo());
        send(&relay, P_UDP, &ipv6);
        let (got, from) = recv(&b);
        assert_eq!(from, P_UDP);
        assert_eq!(got, cat(&[&oi(C), &ipv6]), "OI(relay) + bubble from {src}");
    }
    let foreign_b = teredo(FOREIGN_SERVER, 0, B);
    for server in [P_UDP, S_UDP] {
        for src in sources {
            send(&relay, server, &bubble(src, foreign_b));
        }
    }
    lab.assert_drops(6, &[(DropReason::NotAllowed, 4)]);
    let e = lab.quiet(&[&relay, &b]);
    assert_eq!(e.udp_flows(), [(P_UDP, B), (P_UDP, B)]);
    assert_eq!(lab.metric(&forwarded("to_client", "bubble")), 2.0);
}

/// Check 10: a valid client's bubble to a Teredo address whose server field is another
/// server is forwarded WITHOUT an origin indication, from P:3544 (as Miredo does: the OI is
/// only for the destination's own server's clients).
#[test]
fn check_10_foreign_server_destination_forwarded_without_oi() {
    require_root!();
    let mut lab = Lab::new(function_name!());
    let (a, b) = (lab.udp(A), lab.udp(B));
    let ipv6 = bubble(a_teredo(), teredo(FOREIGN_SERVER, 0, B));
    for server in [P_UDP, S_UDP] {
        send(&a, server, &ipv6);
        let (got, from) = recv(&b);
        assert_eq!(from, P_UDP);
        assert_eq!(got, ipv6, "the bubble, without OI");
    }
    // A mapping outside the namespace: the datagram leaves by the default route (via lo),
    // which is where the sniffer sees it.
    let outside = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 99), 40001);
    let ipv6_outside = bubble(a_teredo(), teredo(FOREIGN_SERVER, 0, outside));
    send(&a, P_UDP, &ipv6_outside);
    lab.wait_handled(3);
    let e = lab.quiet(&[&a, &b]);
    assert_eq!(e.udp_flows(), [(P_UDP, B), (P_UDP, B), (P_UDP, outside)]);
    assert_eq!(e.udp[2].payload, ipv6_outside);
    lab.assert_drops(3, &[]);
}

/// Check 11: bubbles to Teredo addresses embedding a non-global IPv4 address are not sent
/// anywhere (`non_global_mapped_address`).
#[test]
fn check_11_non_global_mapped_destination_dropped() {
    require_root!();
    let mut lab = Lab::new(function_name!());
    let a = lab.udp(A);
    // Something listening where a bubble to ~127.0.0.1:40009 would go.
    let loopback = lab.udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40009));
    let mapped = [
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::BROADCAST,
    ];
    for ip in mapped {
        let dst = teredo(P, 0, SocketAddrV4::new(ip, 40009));
        send(&a, P_UDP, &bubble(a_teredo(), dst));
        send(&a, S_UDP, &bubble(a_teredo(), dst));
    }
    lab.assert_drops(8, &[(DropReason::NonGlobalMappedAddress, 8)]);
    lab.quiet(&[&a, &loopback]).assert_none();
}

/// Check 12: only bubbles and ICMPv6 pass. UDP- and TCP-in-IPv6 from a valid client are
/// dropped (`not_bubble_or_icmpv6`). ICMPv6 size policy: the default cap (1240 bytes of
/// ICMPv6) passes an 88- and an 89-byte echo; a server started with
/// `icmpv6_max_payload = 88` — Miredo's policy, as an option — drops the 89-byte one
/// (`too_large`).
#[test]
fn check_12_only_bubbles_and_icmpv6_pass() {
    require_root!();
    let test = function_name!();
    let mut lab = Lab::new(test);
    let (a, b) = (lab.udp(A), lab.udp(B));
    let udp = {
        let mut u = vec![0x9c, 0x40, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00];
        u.extend_from_slice(b"ping");
        u
    };
    let mut tcp = vec![0u8; 20];
    tcp[..4].copy_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    for dst in [b_teredo(), NATIVE] {
        send(&a, P_UDP, &ipv6_packet(a_teredo(), dst, 17, &udp));
        send(&a, P_UDP, &ipv6_packet(a_teredo(), dst, 6, &tcp));
    }
    lab.assert_drops(4, &[(DropReason::NotBubbleOrIcmpv6, 4)]);
    lab.quiet(&[&a, &b]).assert_none();

    for len in [88, 89] {
        let e = echo(a_teredo(), b_teredo(), 64, len);
        send(&a, P_UDP, &e);
        let (got, from) = recv(&b);
        assert_eq!(from, P_UDP);
        assert_eq!(
            got,
            cat(&[&oi(A), &e]),
            "{len}-byte echo with the default cap"
        );
    }
    lab.assert_drops(6, &[(DropReason::NotBubbleOrIcmpv6, 4)]);
    assert_eq!(lab.metric(&forwarded("to_client", "icmpv6")), 2.0);
    drop(lab);

    let mut lab = Lab::with(test, "cap88", |o, _| o.icmpv6_max_payload = 88);
    let (a, b) = (lab.udp(A), lab.udp(B));
    let e88 = echo(a_teredo(), b_teredo(), 64, 88);
    send(&a, P_UDP, &e88);
    assert_eq!(recv(&b).0, cat(&[&oi(A), &e88]), "88 bytes pass the cap");
    send(&a, P_UDP, &echo(a_teredo(), b_teredo(), 64, 89));
    send(&a, S_UDP, &echo(a_teredo(), NATIVE, 64, 89));
    lab.assert_drops(3, &[(DropReason::TooLarge, 2)]);
    let e = lab.quiet(&[&a, &b]);
    assert_eq!(e.udp_flows(), [(P_UDP, B)]);
    assert!(e.native.is_empty());
}

/// Check 13: an echo request from a valid client to a native address is handed to the
/// native side byte for byte: source = the client's Teredo address, payload and hop limit
/// unchanged (as Miredo: the server does not decrement it); RFC 6081 trailers stay on the
/// Teredo link. Then once more through the real raw-socket native side, watched on `lo`.
#[test]
fn check_13_echo_forwarded_natively_unchanged() {
    require_root!();
    let test = function_name!();
    let mut lab = Lab::new(test);
    let a = lab.udp(A);
    let mut sent = Vec::new();
    for (server, hop_limit) in [(P_UDP, 64), (S_UDP, 255), (P_UDP, 1)] {
        let e = echo(a_teredo(), NATIVE, hop_limit, 8 + 32);
        send(&a, server, &e);
        let got = lab
            .native
            .recv_timeout(LIMIT)
            .expect("nothing reached the native side");
        assert_eq!(got, e, "byte-identical (hop limit {hop_limit})");
        assert_eq!(v6(&got[8..24]), a_teredo(), "source");
        assert_eq!(got[7], hop_limit, "hop limit not decremented");
        sent.push(e);
    }
    let e = echo(a_teredo(), NATIVE, 64, 8 + 16);
    send(&a, P_UDP, &cat(&[&e, &NONCE_TRAILER]));
    assert_eq!(
        lab.native.recv_timeout(LIMIT),
        Some(e),
        "the IPv6 packet, trailer stripped"
    );
    lab.assert_drops(4, &[]);
    lab.quiet(&[&a]).assert_none();
    assert_eq!(lab.metric(&forwarded("to_native", "icmpv6")), 4.0);
    drop(lab);

    // The raw IPv6 socket: the packet leaves exactly as received. 2001:db8::99 is local, so
    // it goes out on lo (and the kernel's echo reply has no route back: nothing else is sent).
    let mut lab = Lab::with(test, "raw", |o, ns| {
        o.native = NativeSide::Raw;
        check(ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{NATIVE}/128"),
            "dev",
            "lo",
            "nodad",
        ]));
    });
    let a = lab.udp(A);
    let e = echo(a_teredo(), NATIVE, 64, 8 + 32);
    send(&a, P_UDP, &e);
    check(
        lab.server
            .wait_metric(&forwarded("to_native", "icmpv6"), 1.0, LIMIT),
    );
    lab.assert_drops(1, &[]);
    let emitted = lab.quiet(&[&a]);
    assert!(emitted.udp.is_empty(), "{emitted:#?}");
    let from_a: Vec<&Vec<u8>> = emitted
        .ipv6
        .iter()
        .filter(|p| p.len() >= 40 && v6(&p[8..24]) == a_teredo())
        .collect();
    assert_eq!(from_a, [&e], "the raw native side sent it byte-identical");
}

/// Check 14: packets from a valid client to non-global IPv6 destinations (fe80::/10,
/// ff00::/8 other than an RS to ff02::2, ::1, ::, IPv4-mapped) are not forwarded
/// (`non_global_destination`); bubbles and echoes to ff02::2 that are not RSs, and an echo
/// to the server's link-local address, get nothing (`not_for_us`: the server answers no
/// echo, as Miredo).
#[test]
fn check_14_non_global_destinations_and_own_link_local() {
    require_root!();
    let mut lab = Lab::new(function_name!());
    let a = lab.udp(A);
    let ip = |s: &str| s.parse::<Ipv6Addr>().unwrap();
    let src = a_teredo();
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (bubble(src, ip("fe80::1")), DropReason::NonGlobalDestination),
        (
            echo(src, ip("fe80::1"), 64, 16),
            DropReason::NonGlobalDestination,
        ),
        (bubble(src, ip("febf::1")), DropReason::NonGlobalDestination),
        (bubble(src, ip("ff02::1")), DropReason::NonGlobalDestination),
        (
            echo(src, ip("ff05::1:3"), 64, 16),
            DropReason::NonGlobalDestination,
        ),
        (bubble(src, ip("ff0e::1")), DropReason::NonGlobalDestination),
        (bubble(src, ip("::1")), DropReason::NonGlobalDestination),
        (
            echo(src, ip("::1"), 64, 16),
            DropReason::NonGlobalDestination,
        ),
        (bubble(src, ip("::")), DropReason::NonGlobalDestination),
        (
            bubble(src, ip("::ffff:198.51.100.11")),
            DropReason::NonGlobalDestination,
        ),
        (bubble(src, ip("ff02::2")), DropReason::NotForUs),
        (echo(src, ip("ff02::2"), 255, 16), DropReason::NotForUs),
        (echo(src, SERVER_LL, 255, 16), DropReason::NotForUs),
        (echo(LLR, SERVER_LL, 255, 16), DropReason::NotForUs),
    ];
    for (i, (datagram, _)) in cases.iter().enumerate() {
        send(&a, if i % 2 == 0 { P_UDP } else { S_UDP }, datagram);
    }
    let want: Vec<(DropReason, u64)> = cases.iter().map(|(_, r)| (*r, 1)).collect();
    lab.assert_drops(cases.len(), &want);
    lab.quiet(&[&a]).assert_none();
}

/// Check 15: the loop guard. Datagrams from P:3544 or S:3544 (forged with a raw socket:
/// the server holds those ports) are dropped (`loop`) — an RS among them would otherwise be
/// answered to the server itself; the sans-IO core is checked for the same sources. A
/// client's packet to a Teredo address embedding P:3544 or S:3544 produces no datagram at all
/// (`loop`).
#[test]
fn check_15_loop_guard() {
    require_root!();
    let mut lab = Lab::new(function_name!());
    let raw = check(RawIpv4::open(&lab.ns));
    let a = lab.udp(A);
    let mut sent = 0;
    for from in [P_UDP, S_UDP] {
        for to in [P_UDP, S_UDP] {
            lab.send_forged(&raw, from, to, &rs_n(N, LLR));
            lab.send_forged(&raw, from, to, &bubble(teredo(P, 0, from), b_teredo()));
            sent += 2;
        }
    }
    for own in [P_UDP, S_UDP] {
        let dst = teredo(P, 0, own);
        send(&a, P_UDP, &bubble(a_teredo(), dst));
        send(&a, S_UDP, &echo(a_teredo(), dst, 64, 16));
        sent += 2;
    }
    lab.assert_drops(sent, &[(DropReason::Loop, sent as u64)]);
    let e = lab.quiet(&[&a]);
    e.assert_none();
    assert!(lab.forged.is_empty(), "forged datagrams not seen on lo");

    for from in [P_UDP, S_UDP] {
        for local in [Local::Primary, Local::Secondary] {
            assert_eq!(
                sans_io_drop(local, from, &rs_n(N, LLR)),
                DropReason::Loop,
                "{from}"
            );
        }
    }
}

/// tshark dissects what the server sends — RAs (restricted and cone), a relayed indirect
/// bubble with its trailer, a relayed echo, and an echo forwarded by the raw native side —
/// as Teredo / IPv6 / ICMPv6, with no malformed packet and no bad ICMPv6 checksum.
#[test]
fn tshark_dissects_server_traffic() {
    require_root!("tshark");
    let test = function_name!();
    let dir = check(TestDir::new(test));
    let lab = Lab::with(test, "srv", |o, ns| {
        o.native = NativeSide::Raw;
        check(ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{NATIVE}/128"),
            "dev",
            "lo",
            "nodad",
        ]));
    });
    let (a, b) = (lab.udp(A), lab.udp(B));
    let mut capture = check(Capture::start(
        &lab.ns,
        dir.path(),
        "tshark",
        "lo",
        "udp port 3544 or ip6",
    ));

    send(&a, P_UDP, &rs_n(N, LLR));
    assert_eq!(recv(&a).1, P_UDP);
    send(&a, P_UDP, &rs_n(NONCE_A, LLC));
    assert_eq!(recv(&a).1, S_UDP);
    send(
        &a,
        P_UDP,
        &cat(&[&bubble(a_teredo(), b_teredo()), &NONCE_TRAILER]),
    );
    recv(&b);
    send(&a, S_UDP, &echo(a_teredo(), b_teredo(), 64, 24));
    recv(&b);
    let native_echo = echo(a_teredo(), NATIVE, 64, 8 + 32);
    send(&a, P_UDP, &native_echo);
    check(
        lab.server
            .wait_metric(&forwarded("to_native", "icmpv6"), 1.0, LIMIT),
    );
    // 5 datagrams in, 4 out, and the natively forwarded echo.
    check(capture.wait_frames(10, "", LIMIT));
    let pcap = check(capture.stop());
    let report = check(tshark_check(&pcap));
    check(report.ensure_clean());
    assert_eq!(report.frames.len(), 10, "{report:#?}");

    let from_server: Vec<_> = report
        .frames
        .iter()
        .filter(|f| f.udp_src == Some(3544))
        .collect();
    assert_eq!(from_server.len(), 4, "{report:#?}");
    let ras: Vec<_> = from_server.iter().filter(|f| f.is_teredo_ra()).collect();
    assert_eq!(ras.len(), 2, "{report:#?}");
    for (ra, (nonce, src, dst)) in ras.iter().zip([(N, P, LLR), (NONCE_A, S, LLC)]) {
        assert_eq!(ra.teredo_nonce.as_deref(), Some(to_hex(&nonce).as_str()));
        assert_eq!(ra.teredo_confirmation.as_deref(), Some("00"));
        assert_eq!(ra.teredo_origin, Some(A), "OI de-obfuscated by tshark");
        assert_eq!(ra.ipv4_src, Some(src));
        assert_eq!(ra.ipv6_src, [SERVER_LL]);
        assert_eq!(ra.ipv6_dst, [dst]);
    }
    let relayed: Vec<_> = from_server.iter().filter(|f| !f.is_teredo_ra()).collect();
    assert_eq!(relayed.len(), 2, "{report:#?}");
    for f in &relayed {
        assert!(f.is_teredo(), "{f}");
        assert_eq!(f.ipv4_dst, Some(*B.ip()));
        assert_eq!(f.teredo_origin, Some(A));
        assert_eq!(f.ipv6_src, [a_teredo()]);
        assert_eq!(f.ipv6_dst, [b_teredo()]);
    }
    assert_eq!(relayed[1].icmpv6_types, [128]);
    let native: Vec<_> = report
        .frames
        .iter()
        .filter(|f| f.udp_src.is_none() && f.ipv6_dst == [NATIVE])
        .collect();
    assert_eq!(native.len(), 1, "{report:#?}");
    assert!(
        native[0].protocols.contains("ethertype:ipv6:icmpv6"),
        "{}",
        native[0]
    );
    assert_eq!(native[0].ipv6_src, [a_teredo()]);
    assert_eq!(native[0].icmpv6_types, [128]);
}
