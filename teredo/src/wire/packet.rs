//! The Teredo UDP payload: `[auth] [origin indication] IPv6 packet [trailers]`
//! (RFC 4380 §5.1.1, RFC 6081 §4), told apart by their first two octets.

use std::net::Ipv6Addr;

use super::auth::{Auth, AUTH_INDICATOR};
use super::origin::{OriginIndication, ORIGIN_INDICATOR, ORIGIN_LEN};
use super::trailer::Trailers;
use super::{check_len, WireError};

/// Size of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// IPv6 next-header value "no next header", the mark of a bubble.
pub const NEXT_HEADER_NONE: u8 = 59;
/// IPv6 next-header value for ICMPv6.
pub const NEXT_HEADER_ICMPV6: u8 = 58;
/// IPv6 next-header value for UDP.
pub const NEXT_HEADER_UDP: u8 = 17;

/// A parsed Teredo datagram. Every accessor is infallible: `parse` checked the lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TeredoPacket<'a> {
    /// The authentication header, if present.
    pub auth: Option<Auth<'a>>,
    /// The origin indication, if present.
    pub origin: Option<OriginIndication>,
    /// Offset of the IPv6 header in the datagram.
    pub ipv6_offset: usize,
    /// The IPv6 packet: exactly `40 + payload length` bytes.
    pub ipv6: &'a [u8],
    /// Whatever follows the IPv6 packet (RFC 6081 trailers), unvalidated.
    pub trailers: &'a [u8],
}

impl<'a> TeredoPacket<'a> {
    /// Parses a UDP payload. Unknown trailers whose type orders a discard are an error;
    /// other trailers are kept in `trailers` for forwarding.
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let pkt = Self::parse_keeping_trailers(buf)?;
        Trailers::validate(pkt.trailers)?;
        Ok(pkt)
    }

    /// As [`parse`](Self::parse), without judging the trailers: a server forwarding a packet
    /// to a client passes them on untouched, since RFC 6081 §5.1.2 gives the "discard on an
    /// unknown 01xxxxxx trailer" rule to the node that processes the packet.
    pub fn parse_keeping_trailers(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut pos = 0;
        let mut auth = None;
        let mut origin = None;
        if buf.len() >= 2 && buf[..2] == AUTH_INDICATOR {
            let (a, len) = Auth::parse(buf)?;
            auth = Some(a);
            pos += len;
        }
        if buf.len() >= pos + 2 && buf[pos..pos + 2] == ORIGIN_INDICATOR {
            origin = Some(OriginIndication::parse(&buf[pos..])?);
            pos += ORIGIN_LEN;
            if buf.len() >= pos + 2 && buf[pos..pos + 2] == AUTH_INDICATOR {
                return Err(WireError::AuthAfterOrigin);
            }
        }
        let rest = &buf[pos..];
        check_len("IPv6 header", rest, IPV6_HEADER_LEN)?;
        let version = rest[0] >> 4;
        if version != 6 {
            return Err(WireError::BadVersion(version));
        }
        let payload_len = usize::from(u16::from_be_bytes([rest[4], rest[5]]));
        if IPV6_HEADER_LEN + payload_len > rest.len() {
            return Err(WireError::BadLength {
                payload_len,
                available: rest.len() - IPV6_HEADER_LEN,
            });
        }
        let (ipv6, trailers) = rest.split_at(IPV6_HEADER_LEN + payload_len);
        Ok(Self {
            auth,
            origin,
            ipv6_offset: pos,
            ipv6,
            trailers,
        })
    }

    /// The IPv6 source address.
    pub fn src(&self) -> Ipv6Addr {
        ipv6_src(self.ipv6)
    }

    /// The IPv6 destination address.
    pub fn dst(&self) -> Ipv6Addr {
        ipv6_dst(self.ipv6)
    }

    /// The IPv6 next-header field.
    pub fn next_header(&self) -> u8 {
        self.ipv6[6]
    }

    /// The IPv6 hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.ipv6[7]
    }

    /// The bytes after the IPv6 header.
    pub fn ipv6_payload(&self) -> &'a [u8] {
        &self.ipv6[IPV6_HEADER_LEN..]
    }

    /// A bubble: an IPv6 header with next header 59 and no payload (RFC 4380 §2.8).
    pub fn is_bubble(&self) -> bool {
        self.next_header() == NEXT_HEADER_NONE && self.ipv6.len() == IPV6_HEADER_LEN
    }

    /// The IPv6 packet and its trailers, as a server forwards them.
    pub fn ipv6_and_trailers(&self, datagram: &'a [u8]) -> &'a [u8] {
        &datagram[self.ipv6_offset..]
    }
}

/// Checks that a complete IPv6 packet is IP version 6 and exactly as long as its payload
/// length field says, so a truncated packet is never taken for a shorter valid one (nor
/// another IP version for IPv6: the echo, RS and RA parsers rely on this).
pub(crate) fn check_ipv6_exact_len(ipv6: &[u8]) -> Result<(), WireError> {
    check_len("IPv6 header", ipv6, IPV6_HEADER_LEN)?;
    let version = ipv6[0] >> 4;
    if version != 6 {
        return Err(WireError::BadVersion(version));
    }
    let payload_len = usize::from(u16::from_be_bytes([ipv6[4], ipv6[5]]));
    let available = ipv6.len() - IPV6_HEADER_LEN;
    if payload_len > available {
        return Err(WireError::BadLength {
            payload_len,
            available,
        });
    }
    if payload_len < available {
        return Err(WireError::Invalid(
            "IPv6 payload length (bytes after the packet)",
        ));
    }
    Ok(())
}

/// Source address of an IPv6 header that is at least 40 bytes long.
pub(crate) fn ipv6_src(ipv6: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&ipv6[8..24]);
    Ipv6Addr::from(o)
}

/// Destination address of an IPv6 header that is at least 40 bytes long.
pub(crate) fn ipv6_dst(ipv6: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&ipv6[24..40]);
    Ipv6Addr::from(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv6::emit_bubble;

    fn bubble_with_everything() -> Vec<u8> {
        let mut v = vec![0, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0];
        v.extend_from_slice(&[0, 0, 0xfe, 0xae, 0xfe, 0xfd, 0xfc, 0xfb]);
        let mut b = [0u8; 40];
        emit_bubble(
            &mut b,
            "2001:0:c633:6401::1".parse().unwrap(),
            "2001:0:c633:6401::2".parse().unwrap(),
            0,
        )
        .unwrap();
        v.extend_from_slice(&b);
        v.extend_from_slice(&[0x01, 4, 9, 9, 9, 9]);
        v
    }

    #[test]
    fn parses_all_parts() {
        let v = bubble_with_everything();
        let p = TeredoPacket::parse(&v).unwrap();
        assert_eq!(p.auth.unwrap().nonce, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(p.origin.unwrap().0, "1.2.3.4:337".parse().unwrap());
        assert!(p.is_bubble());
        assert_eq!(p.trailers, &[0x01, 4, 9, 9, 9, 9]);
        assert_eq!(p.ipv6_and_trailers(&v).len(), 46);
    }

    #[test]
    fn every_truncation_is_an_error_or_shorter_trailer() {
        let v = bubble_with_everything();
        // Cutting inside auth/OI/IPv6 is an error; cutting inside the trailers is not
        // (a malformed trailer just ends processing).
        for n in 0..13 + 8 + 40 {
            assert!(TeredoPacket::parse(&v[..n]).is_err(), "len {n}");
        }
    }

    #[test]
    fn rejections() {
        let mut b = [0u8; 40];
        emit_bubble(
            &mut b,
            "2001::1".parse().unwrap(),
            "2001::2".parse().unwrap(),
            0,
        )
        .unwrap();
        let mut v4 = b;
        v4[0] = 0x45;
        assert_eq!(TeredoPacket::parse(&v4), Err(WireError::BadVersion(4)));
        let mut long = b;
        long[5] = 1;
        assert!(matches!(
            TeredoPacket::parse(&long),
            Err(WireError::BadLength { .. })
        ));
        let mut oi_auth = vec![0, 0, 1, 1, 1, 1, 1, 1];
        oi_auth.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        oi_auth.extend_from_slice(&b);
        assert_eq!(
            TeredoPacket::parse(&oi_auth),
            Err(WireError::AuthAfterOrigin)
        );
        let mut mandatory = b.to_vec();
        mandatory.extend_from_slice(&[0x42, 0]);
        assert_eq!(
            TeredoPacket::parse(&mandatory),
            Err(WireError::MandatoryTrailer(0x42))
        );
    }
}
