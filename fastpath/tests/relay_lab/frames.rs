//! The relay lab's addresses and the frames the tests send: clients' datagrams as they
//! arrive on the Teredo side, native packets as they arrive on the native side.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Duration;

use etherparse::PacketBuilder;
use teredo::wire::ipv6::emit_bubble;
use teredo::TeredoAddr;

pub(crate) const RELAY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3544);
pub(crate) const GW4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
pub(crate) const INET_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
pub(crate) const GW4_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0xfe];
pub(crate) const NAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub(crate) const GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xfe);
pub(crate) const NAT_MAC: [u8; 6] = [2, 0, 0, 0, 2, 1];
pub(crate) const GW6_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0xfe];
/// MTU of the native interface: IPv6 packets from clients longer than this get a packet
/// too big from the kernel (the program's route lookup says so).
pub(crate) const NAT_MTU: usize = 1600;
pub(crate) const TUN_MTU: usize = 1280;
pub(crate) const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// A native host.
pub(crate) const H: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 1);
pub(crate) const H2: Ipv6Addr = Ipv6Addr::new(0x2606, 0x4700, 0, 0, 0, 0, 0, 0x1111);
pub(crate) const VALIDITY: Duration = Duration::from_secs(30);
/// Trusted, fresh.
pub(crate) const XMAP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 40000);
/// Trusted, fresh.
pub(crate) const WMAP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 11), 1024);
/// Trusted, but last heard from longer than the validity ago.
pub(crate) const SMAP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 12), 5000);
/// Known, untrusted: a bubble exchange runs.
pub(crate) const YMAP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 13), 6000);
/// Unknown.
pub(crate) const ZMAP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 14), 7000);
pub(crate) const ETH: usize = 14;
pub(crate) const UDP_AT: usize = ETH + 20;
pub(crate) const PAYLOAD_AT: usize = UDP_AT + 8;

pub(crate) fn teredo(mapped: SocketAddrV4) -> Ipv6Addr {
    TeredoAddr {
        server: SERVER,
        flags: 0,
        mapped,
    }
    .to_ipv6()
}

/// An IPv6 packet with `payload_len` bytes of a pattern after the header (nobody looks at
/// the upper layer), a traffic class and flow label for the route lookup's flowinfo.
pub(crate) fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop: u8,
    next_header: u8,
    payload_len: usize,
) -> Vec<u8> {
    let mut v = vec![0u8; 40 + payload_len];
    v[..4].copy_from_slice(&[0x6a, 0xbc, 0xde, 0xf1]);
    v[4..6].copy_from_slice(&u16::try_from(payload_len).unwrap().to_be_bytes());
    v[6] = next_header;
    v[7] = hop;
    v[8..24].copy_from_slice(&src.octets());
    v[24..40].copy_from_slice(&dst.octets());
    for (i, b) in v[40..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    v
}

/// A client's datagram to `to` as it arrives on the Teredo side.
pub(crate) fn udp_to(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(GW4_MAC, INET_MAC)
        .ipv4(from.ip().octets(), to.ip().octets(), 64)
        .udp(from.port(), to.port())
        .write(&mut v, payload)
        .unwrap();
    v
}

pub(crate) fn udp(from: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    udp_to(from, RELAY, payload)
}

/// A native packet as it arrives on the native side.
pub(crate) fn native(ipv6: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ETH + ipv6.len());
    v.extend_from_slice(&NAT_MAC);
    v.extend_from_slice(&GW6_MAC);
    v.extend_from_slice(&[0x86, 0xdd]);
    v.extend_from_slice(ipv6);
    v
}

pub(crate) fn bubble(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut b = vec![0u8; 40];
    emit_bubble(&mut b, src, dst, 255).unwrap();
    b
}

/// One's complement sum of `b` as big-endian words, folded (not inverted).
pub(crate) fn csum(b: &[u8], mut s: u32) -> u16 {
    for w in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

pub(crate) fn pseudo(ip: &[u8], udp_len: usize) -> u32 {
    u32::from(csum(&ip[12..20], 17 + u32::try_from(udp_len).unwrap()))
}

/// Recomputes the IPv4 header checksum and, when the lengths allow, the UDP checksum of
/// an Ethernet/IPv4/UDP frame (after an edit). A zero UDP checksum stays zero.
pub(crate) fn repair(f: &mut [u8]) {
    if f.len() < ETH + 20 || f[12..14] != [8, 0] {
        return;
    }
    let hl = usize::from(f[ETH] & 0xf) * 4;
    if hl < 20 || f.len() < ETH + hl {
        return;
    }
    f[ETH + 10..ETH + 12].fill(0);
    let c = !csum(&f[ETH..ETH + hl], 0);
    f[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
    let u = ETH + hl;
    if f[ETH + 9] != 17 || f.len() < u + 8 {
        return;
    }
    let ulen = usize::from(u16::from_be_bytes([f[u + 4], f[u + 5]]));
    if ulen < 8 || f.len() < u + ulen || f[u + 6..u + 8] == [0, 0] {
        return;
    }
    f[u + 6..u + 8].fill(0);
    let p = pseudo(&f[ETH..], ulen);
    let c = !csum(&f[u..u + ulen], p);
    let c = if c == 0 { 0xffff } else { c };
    f[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
}

/// The interface a frame arrives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Iface {
    /// The Teredo (IPv4) side, `inet0`.
    Inet,
    /// The native side, `nat0`.
    Nat,
}
