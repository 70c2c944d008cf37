//! The IPv6 packets of the data path that the simulated hosts answer and the `ping` /
//! `udp-echo` commands send: ICMPv6 echo (through [`teredo::wire::ipv6::Echo`]) and UDP
//! datagrams (through etherparse, checksum included), plus what a host's stack answers.

use std::net::{Ipv6Addr, SocketAddrV6};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use teredo::wire::ipv6::Echo;

/// Hop limit of the packets built here (a Linux host's default).
pub const HOP_LIMIT: u8 = 64;

/// The UDP echo service port (RFC 862).
pub const UDP_ECHO_PORT: u16 = 7;

/// An ICMPv6 echo request; `None` when it would not fit in an IPv6 packet.
pub fn echo_request(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    id: u16,
    seq: u16,
    data: &[u8],
) -> Option<Vec<u8>> {
    let mut b = vec![0u8; 48 + data.len()];
    let n = Echo {
        reply: false,
        id,
        seq,
        data,
    }
    .emit(&mut b, src, dst, HOP_LIMIT)
    .ok()?;
    b.truncate(n);
    Some(b)
}

/// A UDP datagram in IPv6 with a valid checksum; `None` when it does not fit.
pub fn udp_datagram(src: SocketAddrV6, dst: SocketAddrV6, payload: &[u8]) -> Option<Vec<u8>> {
    let builder = PacketBuilder::ipv6(src.ip().octets(), dst.ip().octets(), HOP_LIMIT)
        .udp(src.port(), dst.port());
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).ok()?;
    Some(out)
}

/// What a host's stack answers to `pkt` addressed to it: an echo reply to an echo request,
/// the same payload back to a datagram for [`UDP_ECHO_PORT`] (`udp_echo`). `None` otherwise.
pub fn answer(pkt: &[u8], udp_echo: bool) -> Option<Vec<u8>> {
    match parse(pkt)? {
        Parsed::Echo {
            src,
            dst,
            reply: false,
            id,
            seq,
            data,
        } => {
            let mut b = vec![0u8; pkt.len()];
            let n = Echo {
                reply: true,
                id,
                seq,
                data,
            }
            .emit(&mut b, dst, src, HOP_LIMIT)
            .ok()?;
            b.truncate(n);
            Some(b)
        }
        Parsed::Udp { src, dst, payload } if udp_echo && dst.port() == UDP_ECHO_PORT => {
            udp_datagram(dst, src, payload)
        }
        _ => None,
    }
}

/// The parts of a packet the hosts and commands care about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// An ICMPv6 echo request or reply (valid checksum).
    Echo {
        /// IPv6 source.
        src: Ipv6Addr,
        /// IPv6 destination.
        dst: Ipv6Addr,
        /// Reply rather than request.
        reply: bool,
        /// Identifier.
        id: u16,
        /// Sequence number.
        seq: u16,
        /// Data.
        data: &'a [u8],
    },
    /// A UDP datagram (checksum not verified: the tunnel and our own builder carry it).
    Udp {
        /// Source address and port.
        src: SocketAddrV6,
        /// Destination address and port.
        dst: SocketAddrV6,
        /// Payload.
        payload: &'a [u8],
    },
}

/// Reads an ICMPv6 echo or a UDP datagram; `None` for anything else.
pub fn parse(pkt: &[u8]) -> Option<Parsed<'_>> {
    if let Ok(e) = Echo::parse(pkt) {
        let (src, dst) = addresses(pkt)?;
        return Some(Parsed::Echo {
            src,
            dst,
            reply: e.reply,
            id: e.id,
            seq: e.seq,
            data: e.data,
        });
    }
    let sliced = SlicedPacket::from_ip(pkt).ok()?;
    let Some(NetSlice::Ipv6(ip)) = sliced.net else {
        return None;
    };
    let Some(TransportSlice::Udp(udp)) = sliced.transport else {
        return None;
    };
    let h = ip.header();
    Some(Parsed::Udp {
        src: SocketAddrV6::new(h.source_addr(), udp.source_port(), 0, 0),
        dst: SocketAddrV6::new(h.destination_addr(), udp.destination_port(), 0, 0),
        payload: udp.payload(),
    })
}

fn addresses(pkt: &[u8]) -> Option<(Ipv6Addr, Ipv6Addr)> {
    let src: [u8; 16] = pkt.get(8..24)?.try_into().ok()?;
    let dst: [u8; 16] = pkt.get(24..40)?.try_into().ok()?;
    Some((Ipv6Addr::from(src), Ipv6Addr::from(dst)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv6Addr = Ipv6Addr::new(0x2001, 0, 0xc633, 0x6401, 0, 0xdfff, 0x3fff, 0xfdf5);
    const H: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);

    #[test]
    fn echo_round_trip() {
        let req = echo_request(A, H, 7, 3, b"0123456789").unwrap();
        assert_eq!(req.len(), 40 + 8 + 10);
        let rep = answer(&req, false).unwrap();
        assert_eq!(
            parse(&rep),
            Some(Parsed::Echo {
                src: H,
                dst: A,
                reply: true,
                id: 7,
                seq: 3,
                data: b"0123456789"
            })
        );
        // Replies are not answered.
        assert_eq!(answer(&rep, true), None);
    }

    #[test]
    fn udp_echo_round_trip_with_checksum() {
        let src = SocketAddrV6::new(A, 40000, 0, 0);
        let dst = SocketAddrV6::new(H, UDP_ECHO_PORT, 0, 0);
        let d = udp_datagram(src, dst, b"hello").unwrap();
        let udp = etherparse::Ipv6Slice::from_slice(&d).unwrap();
        let u = etherparse::UdpSlice::from_slice(udp.payload().payload).unwrap();
        assert_eq!(
            u.to_header()
                .calc_checksum_ipv6(&udp.header().to_header(), u.payload())
                .unwrap(),
            u.checksum()
        );
        let r = answer(&d, true).unwrap();
        assert_eq!(
            parse(&r),
            Some(Parsed::Udp {
                src: dst,
                dst: src,
                payload: b"hello"
            })
        );
        assert_eq!(answer(&d, false), None);
        let other = udp_datagram(src, SocketAddrV6::new(H, 9, 0, 0), b"x").unwrap();
        assert_eq!(answer(&other, true), None);
        assert_eq!(parse(&[0u8; 10]), None);
    }
}
