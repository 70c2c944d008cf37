//! The datagrams checks send, built with the core's wire module, and the views they read
//! answers through. Nothing here decides a verdict.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use teredo::addr::{server_link_local, ALL_ROUTERS};
use teredo::wire::ipv6::{emit_bubble, Echo};
use teredo::wire::ndp::{emit_rs, RouterAdvertisement};
use teredo::wire::{Auth, OriginIndication, TeredoPacket};
use teredo::TeredoAddr;

use super::ctx::{Ctx, Ep, Rx};

/// How long an answer that should come at once is waited for.
pub const ANSWER: Duration = Duration::from_secs(1);

/// An RS datagram: auth header with `nonce` (none when `None`), IPv6 from `src` to ff02::2,
/// with XP's 16-byte source link-layer address option when `xp_slla`.
pub fn rs(nonce: Option<[u8; 8]>, src: Ipv6Addr, xp_slla: bool) -> Vec<u8> {
    let mut buf = [0u8; 128];
    let auth = nonce.map(Auth::nonce_only);
    let n = emit_rs(&mut buf, auth.as_ref(), src, xp_slla).expect("128 bytes hold any RS");
    buf[..n].to_vec()
}

/// A bubble (IPv6 header only, next header 59) from `src` to `dst`.
pub fn bubble(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
    let mut buf = [0u8; 40];
    emit_bubble(&mut buf, src, dst, hop_limit).expect("40 bytes hold a bubble");
    buf.to_vec()
}

/// An ICMPv6 echo request from `src` to `dst` carrying `data`.
pub fn echo_request(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 48 + data.len()];
    let echo = Echo {
        reply: false,
        id,
        seq,
        data,
    };
    let n = echo
        .emit(&mut buf, src, dst, 64)
        .expect("buffer sized for the echo");
    buf.truncate(n);
    buf
}

/// An IPv6 packet carrying a UDP datagram from `src` to `dst` (checksum filled in).
pub fn udp6(src: SocketAddrV6, dst: SocketAddrV6, payload: &[u8]) -> Vec<u8> {
    netsim::packets::udp_datagram(src, dst, payload).expect("payload below 64 KiB")
}

/// `prefix` (an origin indication or auth header) followed by `rest`.
pub fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// An origin indication for `mapping`.
pub fn origin(mapping: SocketAddrV4) -> Vec<u8> {
    let mut buf = [0u8; 8];
    OriginIndication(mapping)
        .emit(&mut buf)
        .expect("8 bytes hold an origin indication");
    buf.to_vec()
}

/// The Teredo address of a client of `server` whose mapping is `mapped`, with `flags`.
pub fn teredo_addr(server: Ipv4Addr, mapped: SocketAddrV4, flags: u16) -> Ipv6Addr {
    TeredoAddr {
        server,
        flags,
        mapped,
    }
    .to_ipv6()
}

/// The IPv4 source a datagram came from (`None` for IPv6).
pub fn from4(rx: &Rx) -> Option<SocketAddrV4> {
    match rx.from {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

/// A router advertisement as received, with every field a client profile looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaView {
    /// Where it came from.
    pub from: SocketAddrV4,
    /// The auth header: nonce, confirmation byte, ID length, AU length.
    pub auth: Option<([u8; 8], u8, usize, usize)>,
    /// The origin indication (the RS's outer source as the server saw it).
    pub origin: Option<SocketAddrV4>,
    /// IPv6 hop limit.
    pub hop_limit: u8,
    /// The RA as the core's parser reads it (exactly one prefix option).
    pub ra: Result<RouterAdvertisement, String>,
    /// Router lifetime (seconds).
    pub router_lifetime: u16,
    /// UDP payload length.
    pub len: usize,
}

impl RaView {
    /// Reads `rx` as an RA; `None` when it is not a Teredo packet carrying ICMPv6 type 134.
    pub fn parse(rx: &Rx) -> Option<Self> {
        let from = from4(rx)?;
        let pkt = TeredoPacket::parse(&rx.bytes).ok()?;
        if pkt.next_header() != 58 || pkt.ipv6_payload().first() != Some(&134) {
            return None;
        }
        let pl = pkt.ipv6_payload();
        Some(Self {
            from,
            auth: pkt.auth.map(|a| {
                (
                    a.nonce,
                    a.confirmation,
                    a.client_id.len(),
                    a.auth_value.len(),
                )
            }),
            origin: pkt.origin.map(|o| o.0),
            hop_limit: pkt.hop_limit(),
            ra: RouterAdvertisement::parse(pkt.ipv6).map_err(|e| e.to_string()),
            router_lifetime: pl.get(6..8).map_or(0, |b| u16::from_be_bytes([b[0], b[1]])),
            len: rx.bytes.len(),
        })
    }
}

/// Qualifies `ep` against the server at `server` (restricted RS with a nonce, to the
/// primary): the mapping the server saw (from the RA's origin indication), or why not.
pub fn qualify(
    ctx: &mut Ctx<'_>,
    ep: Ep,
    server: SocketAddrV4,
) -> anyhow::Result<Result<SocketAddrV4, String>> {
    let nonce = ctx.nonce();
    let ll = teredo::addr::LL_WINDOWS_RESTRICTED;
    ctx.send(
        ep,
        server,
        &rs(Some(nonce), ll, false),
        "RS (qualification)",
    )?;
    let Some(rx) = ctx.expect_one(ANSWER, |rx| rx.ep == ep && RaView::parse(rx).is_some()) else {
        return Ok(Err(format!("no RA from {server} within {ANSWER:?}")));
    };
    ctx.annotate(&rx, "RA (qualification)");
    let ra = RaView::parse(&rx).expect("filtered above");
    Ok(ra
        .origin
        .ok_or_else(|| "the RA has no origin indication".to_owned()))
}

/// The server link-local address for `primary` (fe80::8000:f227:~primary).
pub fn server_ll(primary: Ipv4Addr) -> Ipv6Addr {
    server_link_local(primary)
}

/// ff02::2.
pub const ALL_ROUTERS_ADDR: Ipv6Addr = ALL_ROUTERS;

/// An RFC 6081 §4.2 nonce trailer (type 0x01, length 4).
pub fn nonce_trailer(nonce: [u8; 4]) -> Vec<u8> {
    let mut t = vec![0x01, 0x04];
    t.extend_from_slice(&nonce);
    t
}

/// An IPv6 packet: fixed header (`next_header`, `hop_limit`) then `payload` as is.
pub fn ipv6_packet(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = vec![0u8; 40 + payload.len()];
    teredo::wire::ipv6::emit_ipv6_header(&mut b, src, dst, next_header, hop_limit, payload.len())
        .expect("buffer sized for the packet");
    b[40..].copy_from_slice(payload);
    b
}

/// Any ICMPv6 message (`ty`, `code`, then `body`) with a valid checksum.
pub fn icmpv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    ty: u8,
    code: u8,
    body: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![ty, code, 0, 0];
    icmp.extend_from_slice(body);
    let mut b = ipv6_packet(src, dst, 58, hop_limit, &icmp);
    teredo::wire::ipv6::finish_icmpv6(&mut b);
    b
}
