//! The path the program replaces, as the tests model it: the kernel's receive step, the core,
//! and the kernel's forwarding of what the core sends.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Instant;

use teredo::relay::{Event, Handled, Relay};
use teredo::{DropReason, Local, Output};

use super::frames::{csum, pseudo, ETH, NAT6, NAT_MTU, RELAY, TUN_MTU};

/// What the kernel makes of a received frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KernelIn {
    /// A datagram for the relay's socket.
    Udp(SocketAddrV4, Vec<u8>),
    /// An IPv6 packet forwarded into the TUN (hop limit already decremented).
    Tun(Vec<u8>),
}

pub(crate) fn is_martian(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 0 || o[0] == 127 || a.is_multicast() || a.is_broadcast()
}

/// The kernel's receive step: the checks before a UDP socket sees a datagram, or the
/// forwarding of a native packet into the TUN (route 2001::/32, MTU 1280). Only what the
/// program could forward has to be modelled exactly; anything else it passes, and both
/// paths then see this same model.
pub(crate) fn kernel_receive(f: &[u8]) -> Result<KernelIn, &'static str> {
    if f.len() < ETH {
        return Err("runt");
    }
    match [f[12], f[13]] {
        [8, 0] => kernel_udp(&f[ETH..]),
        [0x86, 0xdd] => kernel_forward_to_tun(f),
        [0x81, 0] | [0x88, 0xa8] => Err("vlan_without_device"),
        _ => Err("not_ip"),
    }
}

pub(crate) fn kernel_udp(ip: &[u8]) -> Result<KernelIn, &'static str> {
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[0] & 0xf < 5 {
        return Err("ipv4_header");
    }
    let hl = usize::from(ip[0] & 0xf) * 4;
    if ip.len() < hl || csum(&ip[..hl], 0) != 0xffff {
        return Err("ipv4_checksum");
    }
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if tot < hl || tot > ip.len() {
        return Err("ipv4_length");
    }
    let ip = &ip[..tot];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    if is_martian(src) {
        return Err("martian_source");
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return Err("fragment_never_completed");
    }
    if ip[16..20] != RELAY.ip().octets() {
        return Err("not_local");
    }
    if ip[9] != 17 {
        return Err("not_udp");
    }
    let u = &ip[hl..];
    if u.len() < 8 {
        return Err("udp_truncated");
    }
    let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
    if ulen < 8 || ulen > u.len() {
        return Err("udp_length");
    }
    if u16::from_be_bytes([u[2], u[3]]) != RELAY.port() {
        return Err("port_closed");
    }
    let check = u16::from_be_bytes([u[6], u[7]]);
    // Valid, zero, or the pseudo-header sum a local sender's CHECKSUM_PARTIAL leaves.
    let p = pseudo(ip, ulen);
    if check != 0 && check != csum(&[], p) && csum(&u[..ulen], p) != 0xffff {
        return Err("udp_checksum");
    }
    let from = SocketAddrV4::new(src, u16::from_be_bytes([u[0], u[1]]));
    Ok(KernelIn::Udp(from, u[8..ulen].to_vec()))
}

pub(crate) fn ipv6_at(p: &[u8], at: usize) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&p[at..at + 16]).unwrap())
}

pub(crate) fn kernel_forward_to_tun(f: &[u8]) -> Result<KernelIn, &'static str> {
    let p = &f[ETH..];
    if p.len() < 40 || p[0] >> 4 != 6 {
        return Err("ipv6_header");
    }
    let len = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
    if len > p.len() {
        return Err("ipv6_truncated");
    }
    let (src, dst) = (ipv6_at(p, 8), ipv6_at(p, 24));
    if src.is_multicast() || src.to_ipv4_mapped().is_some() {
        return Err("ipv6_bad_source");
    }
    if !teredo::addr::is_teredo(&dst) {
        return Err("routed_elsewhere");
    }
    if f[0] & 1 != 0 {
        return Err("forward_not_to_this_host"); // ip6_forward: PACKET_HOST only
    }
    if p[7] <= 1 {
        return Err("time_exceeded");
    }
    if src.is_unspecified() || src.is_loopback() || teredo::addr::is_link_local(&src) {
        return Err("ipv6_forward_bad_source");
    }
    if len > TUN_MTU {
        return Err("packet_too_big");
    }
    let mut v = p[..len].to_vec();
    v[7] -= 1;
    Ok(KernelIn::Tun(v))
}

/// The kernel's forwarding of what the relay writes to the TUN, out of the native side.
pub(crate) fn kernel_forward_native(p: &[u8]) -> Result<Vec<u8>, &'static str> {
    if p[7] <= 1 {
        return Err("time_exceeded");
    }
    if ipv6_at(p, 24) == NAT6 {
        return Err("local_delivery");
    }
    if p.len() > NAT_MTU {
        return Err("packet_too_big");
    }
    let mut v = p.to_vec();
    v[7] -= 1;
    Ok(v)
}

/// What the slow path sent for a packet the core forwarded in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Out of the native interface (hop limit decremented).
    Native(Vec<u8>),
    /// From the relay's socket.
    Udp(SocketAddrV4, Vec<u8>),
}

/// Everything the slow path did with one frame.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Slow {
    pub(crate) kernel_drop: Option<&'static str>,
    pub(crate) result: Option<Result<Handled, DropReason>>,
    pub(crate) sent: Option<Result<Sent, &'static str>>,
    pub(crate) outputs: Vec<(Output, Vec<u8>)>,
    pub(crate) events: Vec<Event>,
}

pub(crate) fn slow(core: &mut Relay, now: Instant, frame: &[u8]) -> Slow {
    let mut s = Slow::default();
    let input = match kernel_receive(frame) {
        Ok(i) => i,
        Err(d) => {
            s.kernel_drop = Some(d);
            return s;
        }
    };
    let (r, data) = match &input {
        KernelIn::Udp(from, payload) => (
            core.handle_udp(now, Local::Primary, *from, payload),
            payload,
        ),
        KernelIn::Tun(p) => (core.handle_ipv6(now, p), p),
    };
    if let Some(ip) = r.as_ref().ok().and_then(Handled::in_place) {
        let bytes = ip.bytes(data);
        s.sent = Some(match ip.output {
            Output::Ipv6 { .. } => kernel_forward_native(bytes).map(Sent::Native),
            Output::Udp { to, .. } => Ok(Sent::Udp(to, bytes.to_vec())),
            _ => Err("unexpected in-place output"),
        });
    }
    s.result = Some(r);
    let mut buf = vec![0u8; 65_536];
    while let Some(o) = core.poll_output(&mut buf) {
        s.outputs.push((o, buf[..o.len()].to_vec()));
    }
    while let Some(e) = core.poll_event() {
        s.events.push(e);
    }
    s
}
