//! `server-bench`'s traffic: router solicitations from many global sources to a Teredo
//! server (cone and restricted, each with a nonce-only auth header), and the parsing of the
//! router advertisements that come back (which address answered, which nonce they echo).
//!
//! | who | IPv4 "Internet" |
//! |---|---|
//! | server (namespace `srv`) | 198.51.100.10:3544 (primary), 198.51.100.11:3544 (secondary) |
//! | generator's own address (namespace `gen`), the server's default gateway | 198.51.100.2 |
//! | clients (played by the generator) | 203.0.113.1..=N : 50000 |
//!
//! The clients are not addresses of the generator's kernel: the server routes its RAs to
//! them via 198.51.100.2 (a permanent neighbour entry with the generator's MAC), and the
//! generator's kernel counts and drops them (forwarding off).
//!
//! Each RS carries the 8-byte nonce the RA must echo: a fixed per-frame value for the
//! throughput runs, a sequence number for the latency run ([`set_nonce`] rewrites it and the
//! UDP checksum in place).

use std::net::{Ipv4Addr, SocketAddrV4};

use teredo::addr::{LL_MIREDO_RESTRICTED, LL_TEREDO_CONE};
use teredo::wire::auth::Auth;
use teredo::wire::ndp::{emit_rs, ICMPV6_ROUTER_ADVERTISEMENT};

use crate::frames::{parse_udp4_frame, udp4_frame, TEREDO_PORT};

/// The server's primary address.
pub const SERVER_PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The server's secondary address (primary + 1, both servers' default).
pub const SERVER_SECONDARY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
/// UDP source port of every client.
pub const CLIENT_PORT: u16 = 50000;
/// Most clients (203.0.113.1..=254).
pub const MAX_SOURCES: u32 = 254;
/// Offset of the RS nonce in a frame: Ethernet 14 + IPv4 20 + UDP 8 + auth header 4.
pub const NONCE_OFFSET: usize = 14 + 20 + 8 + 4;
/// Offset of the UDP checksum in a frame.
const UDP_CSUM_OFFSET: usize = 14 + 20 + 6;

/// Which router solicitations the clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RsKind {
    /// Cone flag set (fe80::8000:5445:5245:444f): answered from the other address.
    Cone,
    /// Cone flag clear (fe80::ffff:ffff:ffff): answered from the address asked.
    Restricted,
    /// Every client sends both, alternately.
    Mix,
}

impl RsKind {
    /// Parses `cone`, `restricted`, `mix`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cone" => Some(Self::Cone),
            "restricted" => Some(Self::Restricted),
            "mix" => Some(Self::Mix),
            _ => None,
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cone => "cone",
            Self::Restricted => "restricted",
            Self::Mix => "mix",
        }
    }

    /// The cone flags of the solicitations one client sends, in order.
    fn flags(self) -> &'static [bool] {
        match self {
            Self::Cone => &[true],
            Self::Restricted => &[false],
            Self::Mix => &[true, false],
        }
    }
}

/// Client `i`'s address and port (`i < MAX_SOURCES`).
pub fn client(i: u32) -> SocketAddrV4 {
    assert!(i < MAX_SOURCES, "client index {i} out of range");
    SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1 + i as u8), CLIENT_PORT)
}

/// One RS frame from `from` to the server's primary address with `nonce`.
pub fn rs_frame(from: SocketAddrV4, cone: bool, nonce: u64) -> Vec<u8> {
    let mut payload = [0u8; 128];
    let auth = Auth::nonce_only(nonce.to_be_bytes());
    let src = if cone {
        LL_TEREDO_CONE
    } else {
        LL_MIREDO_RESTRICTED
    };
    let n = emit_rs(&mut payload, Some(&auth), src, false).expect("an RS fits in 128 bytes");
    udp4_frame(
        from,
        SocketAddrV4::new(SERVER_PRIMARY, TEREDO_PORT),
        &payload[..n],
    )
}

/// The frames of `sources` clients sending `kind` solicitations, interleaved so that
/// consecutive frames come from different clients; frame `j` carries nonce `j`.
pub fn rs_frames(sources: u32, kind: RsKind) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for &cone in kind.flags() {
        for i in 0..sources {
            let nonce = out.len() as u64;
            out.push(rs_frame(client(i), cone, nonce));
        }
    }
    out
}

/// Writes `nonce` into an RS frame built by [`rs_frame`] and fixes its UDP checksum.
pub fn set_nonce(frame: &mut [u8], nonce: u64) {
    frame[NONCE_OFFSET..NONCE_OFFSET + 8].copy_from_slice(&nonce.to_be_bytes());
    frame[UDP_CSUM_OFFSET..UDP_CSUM_OFFSET + 2].fill(0);
    let c = udp4_checksum(frame);
    frame[UDP_CSUM_OFFSET..UDP_CSUM_OFFSET + 2].copy_from_slice(&c.to_be_bytes());
}

/// The UDP checksum of an Ethernet + IPv4 (20-byte header) + UDP frame whose checksum field
/// is zero.
fn udp4_checksum(frame: &[u8]) -> u16 {
    let ip = &frame[14..];
    let udp_len = usize::from(u16::from_be_bytes([ip[24], ip[25]]));
    let udp = &ip[20..20 + udp_len];
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
    };
    add(&ip[12..20]);
    add(&[0, 17]);
    add(&(udp_len as u16).to_be_bytes());
    add(udp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xffff,
        c => c,
    }
}

/// A router advertisement seen by the generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenRa {
    /// The server address it came from.
    pub from: SocketAddrV4,
    /// The client it went to.
    pub to: SocketAddrV4,
    /// The nonce it echoes.
    pub nonce: u64,
}

/// Parses an Ethernet frame as a Teredo RA (auth header, origin indication, IPv6 with
/// ICMPv6 type 134); `None` for anything else.
pub fn parse_ra_frame(frame: &[u8]) -> Option<SeenRa> {
    let u = parse_udp4_frame(frame)?;
    let (auth, alen) = Auth::parse(u.payload).ok()?;
    let rest = &u.payload[alen..];
    // Origin indication: 00 00 | ~port | ~ip (8 bytes), before the IPv6 packet.
    let ipv6 = match rest {
        [0, 0, ..] if rest.len() >= 8 => &rest[8..],
        _ => rest,
    };
    if ipv6.len() < 41 || ipv6[0] >> 4 != 6 || ipv6[6] != 58 {
        return None;
    }
    if ipv6[40] != ICMPV6_ROUTER_ADVERTISEMENT {
        return None;
    }
    Some(SeenRa {
        from: u.src,
        to: u.dst,
        nonce: u64::from_be_bytes(auth.nonce),
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;
    use std::time::Instant;

    use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
    use teredo::io::{Kind, Local, Output};
    use teredo::server::{Server, ServerConfig};

    use super::*;

    fn check_udp_checksum(frame: &[u8]) {
        let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
        let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        let Some(TransportHeader::Udp(udp)) = &h.transport else {
            panic!("not UDP")
        };
        assert_eq!(
            udp.checksum,
            udp.calc_checksum_ipv4(ip, h.payload.slice()).unwrap()
        );
    }

    /// Our server core answers every frame with an RA that `parse_ra_frame` reads back:
    /// the nonce echoed, from the right address.
    #[test]
    fn solicitations_are_answered_and_parsed() {
        let frames = rs_frames(100, RsKind::Mix);
        assert_eq!(frames.len(), 200);
        let mut core = Server::new(ServerConfig::new(SERVER_PRIMARY));
        let mut buf = vec![0u8; 2048];
        for (j, f) in frames.iter().enumerate() {
            check_udp_checksum(f);
            let u = parse_udp4_frame(f).unwrap();
            assert_eq!(u.src, client(j as u32 % 100));
            core.handle_udp(Instant::now(), Local::Primary, u.src, u.payload)
                .unwrap();
            let Output::Udp {
                local: from_local,
                to,
                len,
                kind: Kind::RouterAdvertisement,
            } = core.poll_output(&mut buf).unwrap()
            else {
                panic!("not UDP")
            };
            assert_eq!(to, u.src);
            let cone = j < 100;
            assert_eq!(
                from_local,
                if cone {
                    Local::Secondary
                } else {
                    Local::Primary
                }
            );
            let from = SocketAddrV4::new(core.address(from_local), TEREDO_PORT);
            let ra = udp4_frame(from, to, &buf[..len]);
            let seen = parse_ra_frame(&ra).unwrap();
            assert_eq!(
                seen,
                SeenRa {
                    from,
                    to,
                    nonce: j as u64
                }
            );
        }
        assert_eq!(parse_ra_frame(&frames[0]), None, "an RS is not an RA");
    }

    #[test]
    fn nonce_rewrite_keeps_checksums_right() {
        let mut f = rs_frame(client(7), true, 0);
        for nonce in [1, 0xdead_beef, u64::MAX, 0] {
            set_nonce(&mut f, nonce);
            check_udp_checksum(&f);
            let u = parse_udp4_frame(&f).unwrap();
            let (a, _) = Auth::parse(u.payload).unwrap();
            assert_eq!(u64::from_be_bytes(a.nonce), nonce);
        }
        assert_eq!(f, rs_frame(client(7), true, 0));
        assert_eq!(
            Ipv6Addr::from(<[u8; 16]>::try_from(&f[14 + 28 + 13 + 8..14 + 28 + 13 + 24]).unwrap()),
            LL_TEREDO_CONE
        );
    }

    #[test]
    fn kinds() {
        for k in [RsKind::Cone, RsKind::Restricted, RsKind::Mix] {
            assert_eq!(RsKind::parse(k.name()), Some(k));
        }
        assert_eq!(RsKind::parse("x"), None);
        assert_eq!(rs_frames(3, RsKind::Cone).len(), 3);
        assert_eq!(client(99).ip(), &Ipv4Addr::new(203, 0, 113, 100));
    }
}
