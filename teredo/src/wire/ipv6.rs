//! Building and checking the small IPv6 packets Teredo nodes originate: bubbles, ICMPv6
//! echo (the direct IPv6 connectivity test) and the ICMPv6 checksum.

use std::net::Ipv6Addr;

use etherparse::checksum::Sum16BitWords;
use etherparse::{IpNumber, Ipv6FlowLabel, Ipv6Header};

use super::packet::{
    check_ipv6_exact_len, ipv6_dst, ipv6_src, IPV6_HEADER_LEN, NEXT_HEADER_ICMPV6, NEXT_HEADER_NONE,
};
use super::WireError;

/// ICMPv6 type: echo request.
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 type: echo reply.
pub const ICMPV6_ECHO_REPLY: u8 = 129;
/// ICMPv6 type: destination unreachable.
pub const ICMPV6_DEST_UNREACHABLE: u8 = 1;

/// Writes a fixed IPv6 header (traffic class and flow label 0) at the start of `buf`.
pub fn emit_ipv6_header(
    buf: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    payload_len: usize,
) -> Result<usize, WireError> {
    if buf.len() < IPV6_HEADER_LEN {
        return Err(WireError::BufferTooSmall {
            need: IPV6_HEADER_LEN,
        });
    }
    let payload_length =
        u16::try_from(payload_len).map_err(|_| WireError::Invalid("IPv6 payload length"))?;
    let h = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length,
        next_header: IpNumber(next_header),
        hop_limit,
        source: src.octets(),
        destination: dst.octets(),
    };
    buf[..IPV6_HEADER_LEN].copy_from_slice(&h.to_bytes());
    Ok(IPV6_HEADER_LEN)
}

/// The ICMPv6 checksum (RFC 4443 §2.3) of `icmp`, whose checksum field must read zero.
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut s = Sum16BitWords::new();
    s = s.add_16bytes(src.octets());
    s = s.add_16bytes(dst.octets());
    s = s.add_4bytes((icmp.len() as u32).to_be_bytes());
    s = s.add_4bytes([0, 0, 0, NEXT_HEADER_ICMPV6]);
    s.add_slice(icmp).ones_complement().to_be()
}

/// Fills the checksum of the ICMPv6 message inside a complete IPv6 packet.
pub fn finish_icmpv6(ipv6: &mut [u8]) {
    let (src, dst) = (ipv6_src(ipv6), ipv6_dst(ipv6));
    ipv6[IPV6_HEADER_LEN + 2..IPV6_HEADER_LEN + 4].fill(0);
    let c = icmpv6_checksum(&src, &dst, &ipv6[IPV6_HEADER_LEN..]);
    ipv6[IPV6_HEADER_LEN + 2..IPV6_HEADER_LEN + 4].copy_from_slice(&c.to_be_bytes());
}

/// True when the ICMPv6 message in a complete IPv6 packet carries a valid checksum.
pub fn icmpv6_checksum_ok(ipv6: &[u8]) -> bool {
    if ipv6.len() < IPV6_HEADER_LEN + 4 {
        return false;
    }
    let (src, dst) = (ipv6_src(ipv6), ipv6_dst(ipv6));
    let mut s = Sum16BitWords::new();
    s = s.add_16bytes(src.octets());
    s = s.add_16bytes(dst.octets());
    s = s.add_4bytes(((ipv6.len() - IPV6_HEADER_LEN) as u32).to_be_bytes());
    s = s.add_4bytes([0, 0, 0, NEXT_HEADER_ICMPV6]);
    s.add_slice(&ipv6[IPV6_HEADER_LEN..]).ones_complement() == 0
}

/// Writes a bubble (RFC 4380 §2.8): an IPv6 header, next header 59, payload length 0.
pub fn emit_bubble(
    buf: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
) -> Result<usize, WireError> {
    emit_ipv6_header(buf, src, dst, NEXT_HEADER_NONE, hop_limit, 0)
}

/// An ICMPv6 echo request or reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Echo<'a> {
    /// Reply (129) rather than request (128).
    pub reply: bool,
    /// Identifier.
    pub id: u16,
    /// Sequence number.
    pub seq: u16,
    /// Data, e.g. the nonce of a direct IPv6 connectivity test.
    pub data: &'a [u8],
}

impl<'a> Echo<'a> {
    /// Reads an echo message from a complete IPv6 packet (exactly 40 + payload length bytes)
    /// with a valid checksum.
    pub fn parse(ipv6: &'a [u8]) -> Result<Self, WireError> {
        super::check_len("ICMPv6 echo", ipv6, IPV6_HEADER_LEN + 8)?;
        check_ipv6_exact_len(ipv6)?;
        if ipv6[6] != NEXT_HEADER_ICMPV6 {
            return Err(WireError::Invalid("next header (not ICMPv6)"));
        }
        let reply = match ipv6[IPV6_HEADER_LEN] {
            ICMPV6_ECHO_REQUEST => false,
            ICMPV6_ECHO_REPLY => true,
            _ => return Err(WireError::Invalid("ICMPv6 type (not echo)")),
        };
        if !icmpv6_checksum_ok(ipv6) {
            return Err(WireError::BadChecksum);
        }
        let i = IPV6_HEADER_LEN;
        Ok(Self {
            reply,
            id: u16::from_be_bytes([ipv6[i + 4], ipv6[i + 5]]),
            seq: u16::from_be_bytes([ipv6[i + 6], ipv6[i + 7]]),
            data: &ipv6[i + 8..],
        })
    }

    /// Writes a complete IPv6 packet carrying this echo message; returns its length.
    pub fn emit(
        &self,
        buf: &mut [u8],
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
    ) -> Result<usize, WireError> {
        let icmp_len = 8 + self.data.len();
        let total = IPV6_HEADER_LEN + icmp_len;
        if buf.len() < total {
            return Err(WireError::BufferTooSmall { need: total });
        }
        emit_ipv6_header(buf, src, dst, NEXT_HEADER_ICMPV6, hop_limit, icmp_len)?;
        let i = IPV6_HEADER_LEN;
        buf[i] = if self.reply {
            ICMPV6_ECHO_REPLY
        } else {
            ICMPV6_ECHO_REQUEST
        };
        buf[i + 1] = 0;
        buf[i + 4..i + 6].copy_from_slice(&self.id.to_be_bytes());
        buf[i + 6..i + 8].copy_from_slice(&self.seq.to_be_bytes());
        buf[i + 8..total].copy_from_slice(self.data);
        finish_icmpv6(&mut buf[..total]);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_round_trip_and_checksum_via_etherparse() {
        let mut buf = [0u8; 64];
        let e = Echo {
            reply: false,
            id: 7,
            seq: 9,
            data: b"nonce123",
        };
        let src: Ipv6Addr = "2001:0:c633:6401:0:dfff:3fff:fdf5".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::99".parse().unwrap();
        let n = e.emit(&mut buf, src, dst, 128).unwrap();
        assert_eq!(Echo::parse(&buf[..n]).unwrap(), e);
        // Cross-check with etherparse's own checksum validation.
        let s = etherparse::Icmpv6Slice::from_slice(&buf[40..n]).unwrap();
        assert!(s.is_checksum_valid(src.octets(), dst.octets()));
        buf[50] ^= 1;
        assert_eq!(Echo::parse(&buf[..n]), Err(WireError::BadChecksum));
        for k in 0..48 {
            assert!(Echo::parse(&buf[..k]).is_err());
        }
    }

    #[test]
    fn bubble_layout() {
        let mut b = [0u8; 40];
        emit_bubble(
            &mut b,
            "fe80::1".parse().unwrap(),
            "2001::2".parse().unwrap(),
            0,
        )
        .unwrap();
        assert_eq!(&b[..8], &[0x60, 0, 0, 0, 0, 0, 59, 0]);
    }
}
