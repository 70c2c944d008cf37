//! The bench's addresses and the frames the generator sends, built once per peer with
//! etherparse (Ethernet + IPv4 + UDP + Teredo payload, or Ethernet + IPv6 + UDP), with
//! correct checksums; plus the minimal parsing the trust set-up needs.
//!
//! Addresses (documentation ranges; Miredo and RFC 4380 take 198.51.100.0/24 as global):
//!
//! | who | IPv4 "Internet" | native IPv6 |
//! |---|---|---|
//! | relay (namespace `relay`) | 198.51.100.20:3545 | 2001:db8::1 |
//! | generator's own addresses (namespace `gen`) | 198.51.100.2 | 2001:db8::2 |
//! | Teredo server (played by the generator) | 198.51.100.1:3544 | |
//! | Teredo peers (played by the generator) | 198.51.100.10:20000+i | 2001:0:c633:6401:0:~port:~ip |
//! | native host (played by the generator) | | 2001:db8::99 |
//!
//! The server, the peers and the native host are *not* addresses of the generator's kernel:
//! the relay reaches them through permanent neighbour entries pointing at the generator's
//! MAC, and the generator's kernel (forwarding off) discards what arrives for them right
//! after the interface counted it. No socket, no ICMP error, no per-packet user-space work
//! on the sink side.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use etherparse::{IpNumber, Ipv6FlowLabel, Ipv6Header, PacketBuilder};

/// The generator's MAC on the IPv4 Internet link.
pub const GEN_INET_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
/// The relay's MAC on the IPv4 Internet link.
pub const RELAY_INET_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x02];
/// The generator's MAC on the native IPv6 link.
pub const GEN_NATIVE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];
/// The relay's MAC on the native IPv6 link.
pub const RELAY_NATIVE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x02];

/// The Teredo server embedded in every peer's address (played by the generator).
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The generator's own IPv4 address.
pub const GEN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The public address of every peer's mapping (played by the generator).
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The relay's IPv4 address.
pub const RELAY_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
/// The relay's UDP port (ours, Miredo's `BindPort`, the bare forwarder's).
pub const RELAY_PORT: u16 = 3545;
/// Teredo's server port.
pub const TEREDO_PORT: u16 = 3544;
/// Peer `i` is mapped to `PEER_V4:(PORT_BASE + i)`.
pub const PORT_BASE: u16 = 20000;
/// Most peers the port range allows.
pub const MAX_PEERS: u32 = (u16::MAX - PORT_BASE) as u32;
/// The relay's native address.
pub const RELAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// The generator's own native address.
pub const GEN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// The native host (played by the generator).
pub const NATIVE_HOST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
/// Size of the inner IPv6/UDP packets (PERF.md: 100 bytes).
pub const INNER_LEN: usize = 100;
/// Source port of the inner UDP datagrams.
pub const INNER_SRC_PORT: u16 = 40000;
/// Destination port of the inner UDP datagrams (discard).
pub const INNER_DST_PORT: u16 = 9;
/// Hop limit of the bubbles the peers send.
pub const BUBBLE_HOP_LIMIT: u8 = 255;

/// The Teredo address of a client of `server` whose NAT mapping is `mapped`
/// (RFC 4380 §4: 2001:0000 | server | flags | ~port | ~ip).
pub fn teredo_addr(server: Ipv4Addr, flags: u16, mapped: SocketAddrV4) -> Ipv6Addr {
    let s = server.octets();
    let ip = u32::from(*mapped.ip()) ^ 0xffff_ffff;
    Ipv6Addr::new(
        0x2001,
        0,
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        flags,
        mapped.port() ^ 0xffff,
        (ip >> 16) as u16,
        ip as u16,
    )
}

/// The server and the mapping embedded in a Teredo address (`None` outside 2001:0::/32).
pub fn teredo_parts(addr: &Ipv6Addr) -> Option<(Ipv4Addr, SocketAddrV4)> {
    let s = addr.segments();
    if s[0] != 0x2001 || s[1] != 0 {
        return None;
    }
    let server = Ipv4Addr::from((u32::from(s[2]) << 16) | u32::from(s[3]));
    let ip = Ipv4Addr::from(((u32::from(s[6]) << 16) | u32::from(s[7])) ^ 0xffff_ffff);
    Some((server, SocketAddrV4::new(ip, s[5] ^ 0xffff)))
}

/// One simulated Teredo peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its index (0-based).
    pub index: u32,
    /// Its Teredo address.
    pub addr: Ipv6Addr,
    /// Its NAT mapping (the outer source of what it sends).
    pub mapped: SocketAddrV4,
}

impl Peer {
    /// Peer `index`: mapping `PEER_V4:(PORT_BASE + index)`, server [`SERVER_V4`], no flags.
    ///
    /// # Panics
    /// If `index >= MAX_PEERS`.
    pub fn new(index: u32) -> Self {
        assert!(index < MAX_PEERS, "peer index {index} out of range");
        let mapped = SocketAddrV4::new(PEER_V4, PORT_BASE + index as u16);
        Self {
            index,
            addr: teredo_addr(SERVER_V4, 0, mapped),
            mapped,
        }
    }

    /// The peer whose Teredo address is `addr`, if it is one of ours.
    pub fn from_addr(addr: &Ipv6Addr) -> Option<Self> {
        let (server, mapped) = teredo_parts(addr)?;
        if server != SERVER_V4 || *mapped.ip() != PEER_V4 || mapped.port() < PORT_BASE {
            return None;
        }
        let p = Self::new(u32::from(mapped.port() - PORT_BASE));
        (p.addr == *addr).then_some(p)
    }
}

/// Ports per mapping address of the [`Peer::wide`] peers.
pub const WIDE_PORTS: u32 = 40_000;
/// Most [`Peer::wide`] peers (203.0.113.1..=254, [`WIDE_PORTS`] ports each).
pub const MAX_WIDE_PEERS: u32 = 254 * WIDE_PORTS;
/// The network of the [`Peer::wide`] mappings (routed via the generator).
pub const WIDE_NET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 0);

impl Peer {
    /// Peer `index` of the memory step, out of millions: mapping
    /// `203.0.113.(1 + index / WIDE_PORTS):(PORT_BASE + index % WIDE_PORTS)`, server
    /// [`SERVER_V4`], no flags.
    ///
    /// # Panics
    /// If `index >= MAX_WIDE_PEERS`.
    pub fn wide(index: u32) -> Self {
        assert!(index < MAX_WIDE_PEERS, "peer index {index} out of range");
        let w = WIDE_NET.octets();
        let ip = Ipv4Addr::new(w[0], w[1], w[2], 1 + (index / WIDE_PORTS) as u8);
        let mapped = SocketAddrV4::new(ip, PORT_BASE + (index % WIDE_PORTS) as u16);
        Self {
            index,
            addr: teredo_addr(SERVER_V4, 0, mapped),
            mapped,
        }
    }

    /// The [`Peer::wide`] peer whose Teredo address is `addr`, if it is one.
    pub fn wide_from_addr(addr: &Ipv6Addr) -> Option<Self> {
        let (server, mapped) = teredo_parts(addr)?;
        let o = mapped.ip().octets();
        if server != SERVER_V4 || o[..3] != WIDE_NET.octets()[..3] || o[3] == 0 {
            return None;
        }
        let port = u32::from(mapped.port()).checked_sub(u32::from(PORT_BASE))?;
        if port >= WIDE_PORTS || o[3] == 255 {
            return None;
        }
        let p = Self::wide(u32::from(o[3] - 1) * WIDE_PORTS + port);
        (p.addr == *addr).then_some(p)
    }
}

/// The first `n` peers.
pub fn peers(n: u32) -> Vec<Peer> {
    (0..n).map(Peer::new).collect()
}

/// A complete [`INNER_LEN`]-byte IPv6/UDP packet from `src` to `dst` (UDP checksum set).
pub fn inner_packet(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let builder =
        PacketBuilder::ipv6(src.octets(), dst.octets(), 64).udp(INNER_SRC_PORT, INNER_DST_PORT);
    let payload = payload_pattern(INNER_LEN - Ipv6Header::LEN - 8);
    let mut out = Vec::with_capacity(INNER_LEN);
    builder
        .write(&mut out, &payload)
        .expect("a 100-byte packet always fits");
    out
}

/// A bubble: an IPv6 header with next header 59 and no payload.
pub fn bubble(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let h = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: 0,
        next_header: IpNumber::IPV6_NO_NEXT_HEADER,
        hop_limit: BUBBLE_HOP_LIMIT,
        source: src.octets(),
        destination: dst.octets(),
    };
    let mut out = Vec::with_capacity(Ipv6Header::LEN);
    h.write(&mut out).expect("writing to a Vec cannot fail");
    out
}

fn payload_pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7)).collect()
}

/// Ethernet + IPv4 + UDP around `payload`, from the generator's Internet MAC to the relay's.
pub fn udp4_frame(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(GEN_INET_MAC, RELAY_INET_MAC)
        .ipv4(from.ip().octets(), to.ip().octets(), 64)
        .udp(from.port(), to.port());
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut out, payload)
        .expect("a small datagram always fits");
    out
}

/// Teredo→native traffic of `peer`: a Teredo datagram from its mapping to `relay` carrying a
/// 100-byte IPv6/UDP packet from its Teredo address to [`NATIVE_HOST`].
pub fn t2n_frame(peer: &Peer, relay: SocketAddrV4) -> Vec<u8> {
    udp4_frame(peer.mapped, relay, &inner_packet(peer.addr, NATIVE_HOST))
}

/// Native→Teredo traffic for `peer`: a 100-byte IPv6/UDP packet from [`NATIVE_HOST`] to its
/// Teredo address, in an Ethernet frame to the relay's native MAC.
pub fn n2t_frame(peer: &Peer) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(GEN_NATIVE_MAC, RELAY_NATIVE_MAC)
        .ipv6(NATIVE_HOST.octets(), peer.addr.octets(), 64)
        .udp(INNER_SRC_PORT, INNER_DST_PORT);
    let payload = payload_pattern(INNER_LEN - Ipv6Header::LEN - 8);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut out, &payload)
        .expect("a 100-byte packet always fits");
    out
}

/// `peer`'s direct bubble to `to` (the relay, as the origin of the indirect bubble), sent
/// from its mapping, addressed to `dst` (the IPv6 source of the relay's indirect bubble).
pub fn direct_bubble_frame(peer: &Peer, to: SocketAddrV4, dst: Ipv6Addr) -> Vec<u8> {
    udp4_frame(peer.mapped, to, &bubble(peer.addr, dst))
}

/// An IPv4/UDP datagram seen in an Ethernet frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Udp4<'a> {
    /// Outer source.
    pub src: SocketAddrV4,
    /// Outer destination.
    pub dst: SocketAddrV4,
    /// UDP payload.
    pub payload: &'a [u8],
}

/// Parses an Ethernet frame carrying IPv4/UDP (no fragments); `None` for anything else.
pub fn parse_udp4_frame(frame: &[u8]) -> Option<Udp4<'_>> {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != 17 {
        return None;
    }
    // More fragments, or a non-zero offset.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let udp = ip.get(ihl..total)?;
    if udp.len() < 8 {
        return None;
    }
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    let payload = udp.get(8..ulen.clamp(8, udp.len()))?;
    Some(Udp4 {
        src: SocketAddrV4::new(src_ip, u16::from_be_bytes([udp[0], udp[1]])),
        dst: SocketAddrV4::new(dst_ip, u16::from_be_bytes([udp[2], udp[3]])),
        payload,
    })
}

/// Source and destination of an IPv6 packet (the first 40 bytes; version checked).
pub fn ipv6_addrs(packet: &[u8]) -> Option<(Ipv6Addr, Ipv6Addr)> {
    if packet.len() < 40 || packet[0] >> 4 != 6 {
        return None;
    }
    let src: [u8; 16] = packet[8..24].try_into().ok()?;
    let dst: [u8; 16] = packet[24..40].try_into().ok()?;
    Some((Ipv6Addr::from(src), Ipv6Addr::from(dst)))
}

#[cfg(test)]
mod tests {
    use etherparse::{NetHeaders, PacketHeaders, TransportHeader};

    use super::*;

    const RELAY: SocketAddrV4 = SocketAddrV4::new(RELAY_V4, RELAY_PORT);

    /// Parses `frame` with etherparse and checks the IPv4 header checksum and the UDP
    /// checksum; returns the UDP payload.
    fn check_udp4(frame: &[u8], from: SocketAddrV4, to: SocketAddrV4) -> Vec<u8> {
        let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
        let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
            panic!("not IPv4: {:?}", h.net)
        };
        assert_eq!(
            ip.header_checksum,
            ip.calc_header_checksum(),
            "IPv4 checksum"
        );
        assert_eq!(ip.source, from.ip().octets());
        assert_eq!(ip.destination, to.ip().octets());
        let Some(TransportHeader::Udp(udp)) = &h.transport else {
            panic!("not UDP")
        };
        let payload = h.payload.slice();
        assert_eq!(
            udp.checksum,
            udp.calc_checksum_ipv4(ip, payload).unwrap(),
            "outer UDP checksum"
        );
        assert_ne!(udp.checksum, 0, "checksum present");
        assert_eq!(
            (udp.source_port, udp.destination_port),
            (from.port(), to.port())
        );
        payload.to_vec()
    }

    /// Checks a 100-byte IPv6/UDP packet from `src` to `dst` (UDP checksum verified).
    fn check_inner(packet: &[u8], src: Ipv6Addr, dst: Ipv6Addr) {
        assert_eq!(packet.len(), INNER_LEN);
        let h = PacketHeaders::from_ip_slice(packet).unwrap();
        let Some(NetHeaders::Ipv6(ip, _)) = &h.net else {
            panic!("not IPv6")
        };
        assert_eq!(ip.source, src.octets());
        assert_eq!(ip.destination, dst.octets());
        assert_eq!(usize::from(ip.payload_length), INNER_LEN - 40);
        let Some(TransportHeader::Udp(udp)) = &h.transport else {
            panic!("not UDP")
        };
        assert_eq!(
            udp.checksum,
            udp.calc_checksum_ipv6(ip, h.payload.slice()).unwrap(),
            "inner UDP checksum"
        );
    }

    #[test]
    fn teredo_addresses_round_trip() {
        let p = Peer::new(0);
        // RFC 4380 §4 example layout: server c633:6401, ~20000 = b1df, ~198.51.100.10.
        assert_eq!(
            p.addr,
            "2001:0:c633:6401:0:b1df:39cc:9bf5"
                .parse::<Ipv6Addr>()
                .unwrap()
        );
        assert_eq!(teredo_parts(&p.addr), Some((SERVER_V4, p.mapped)));
        for i in [0, 1, 99, 9_999, MAX_PEERS - 1] {
            let p = Peer::new(i);
            assert_eq!(Peer::from_addr(&p.addr), Some(p));
        }
        assert_eq!(Peer::from_addr(&NATIVE_HOST), None);
        let other = teredo_addr(SERVER_V4, 0, SocketAddrV4::new(GEN_V4, 20000));
        assert_eq!(Peer::from_addr(&other), None);
        let ps = peers(10_000);
        let mut mappings: Vec<_> = ps.iter().map(|p| p.mapped).collect();
        mappings.sort();
        mappings.dedup();
        assert_eq!(mappings.len(), 10_000, "distinct mappings");
    }

    #[test]
    fn wide_peers_are_distinct_and_round_trip() {
        let first = Peer::wide(0);
        assert_eq!(first.mapped, "203.0.113.1:20000".parse().unwrap());
        assert_eq!(
            Peer::wide(999_999).mapped,
            "203.0.113.25:59999".parse().unwrap()
        );
        for i in [
            0,
            1,
            WIDE_PORTS - 1,
            WIDE_PORTS,
            999_999,
            MAX_WIDE_PEERS - 1,
        ] {
            let p = Peer::wide(i);
            assert_eq!(Peer::wide_from_addr(&p.addr), Some(p));
            assert_eq!(Peer::from_addr(&p.addr), None, "not a narrow peer");
        }
        assert_eq!(Peer::wide_from_addr(&Peer::new(5).addr), None);
        let mut m: Vec<_> = (0..200_000).map(|i| Peer::wide(i).mapped).collect();
        m.sort();
        m.dedup();
        assert_eq!(m.len(), 200_000);
    }

    #[test]
    fn t2n_frames_have_correct_checksums() {
        for i in [0, 7, 9_999] {
            let p = Peer::new(i);
            let f = t2n_frame(&p, RELAY);
            assert_eq!(f.len(), 14 + 20 + 8 + INNER_LEN);
            assert_eq!(&f[..6], &RELAY_INET_MAC);
            assert_eq!(&f[6..12], &GEN_INET_MAC);
            let inner = check_udp4(&f, p.mapped, RELAY);
            check_inner(&inner, p.addr, NATIVE_HOST);
            let u = parse_udp4_frame(&f).unwrap();
            assert_eq!((u.src, u.dst), (p.mapped, RELAY));
            assert_eq!(u.payload, &inner[..]);
        }
    }

    #[test]
    fn n2t_frames_have_correct_checksums() {
        let p = Peer::new(42);
        let f = n2t_frame(&p);
        assert_eq!(f.len(), 14 + INNER_LEN);
        assert_eq!(&f[..6], &RELAY_NATIVE_MAC);
        assert_eq!(f[12..14], [0x86, 0xdd]);
        check_inner(&f[14..], NATIVE_HOST, p.addr);
        assert_eq!(parse_udp4_frame(&f), None, "not IPv4");
    }

    #[test]
    fn direct_bubbles_are_bubbles() {
        let p = Peer::new(3);
        let ll: Ipv6Addr = "fe80::8000:1234:5678:9abc".parse().unwrap();
        let f = direct_bubble_frame(&p, RELAY, ll);
        let b = check_udp4(&f, p.mapped, RELAY);
        assert_eq!(b.len(), 40);
        let h = Ipv6Header::from_slice(&b).unwrap().0;
        assert_eq!(h.payload_length, 0);
        assert_eq!(h.next_header, IpNumber::IPV6_NO_NEXT_HEADER);
        assert_eq!(ipv6_addrs(&b), Some((p.addr, ll)));
    }

    #[test]
    fn parsing_rejects_what_is_not_plain_udp4() {
        let f = t2n_frame(&Peer::new(0), RELAY);
        assert!(parse_udp4_frame(&f[..40]).is_none(), "truncated");
        let mut frag = f.clone();
        frag[14 + 6] = 0x20; // more fragments
        assert!(parse_udp4_frame(&frag).is_none());
        let mut tcp = f.clone();
        tcp[14 + 9] = 6;
        assert!(parse_udp4_frame(&tcp).is_none());
        assert_eq!(ipv6_addrs(&[0x45; 40]), None);
    }
}
