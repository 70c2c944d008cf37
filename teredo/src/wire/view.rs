//! Zero-copy views over the fixed headers drivers look at (smoltcp style): the IPv6 header
//! of a native packet or of a Teredo datagram, and the UDP header of a native IPv6/UDP
//! packet (the relay's TUN segmentation offload). Field offsets are named ranges; one
//! `check_len` in `new_checked` guards every accessor, so none can panic afterwards.

use std::net::Ipv6Addr;

use super::{check_len, WireError};

/// Byte ranges of the IPv6 header fields (RFC 8200 §3).
pub mod ipv6_field {
    use std::ops::Range;

    /// Version (4 bits), traffic class, flow label.
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    /// Payload length.
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    /// Next header.
    pub const NEXT_HEADER: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC: Range<usize> = 8..24;
    /// Destination address.
    pub const DST: Range<usize> = 24..40;
    /// Where the payload starts.
    pub const PAYLOAD: usize = 40;
}

/// Byte ranges of the UDP header fields (RFC 768), from the start of the UDP header.
pub mod udp_field {
    use std::ops::Range;

    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Length (header included).
    pub const LENGTH: Range<usize> = 4..6;
    /// Checksum.
    pub const CHECKSUM: Range<usize> = 6..8;
    /// Header length.
    pub const HEADER_LEN: usize = 8;
}

/// Next header value of a bubble: no next header.
const NO_NEXT_HEADER: u8 = 59;

fn be16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    let mut w = [0u8; 2];
    w.copy_from_slice(&b[r]);
    u16::from_be_bytes(w)
}

fn addr(b: &[u8], r: std::ops::Range<usize>) -> Ipv6Addr {
    let mut w = [0u8; 16];
    w.copy_from_slice(&b[r]);
    Ipv6Addr::from(w)
}

/// A view of the IPv6 header at the start of a buffer (the bytes after it are not checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Header<T> {
    /// Wraps `buffer` without checking it; accessors may panic unless
    /// [`Self::check_len`] passes.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` if it holds a whole header ([`Self::check_len`]): once it has passed,
    /// no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// `Err(Truncated)` unless the buffer holds the 40-byte header. Only the header is
    /// checked: the payload length field is not compared with the bytes that follow.
    pub fn check_len(&self) -> Result<(), WireError> {
        check_len("IPv6 header", self.buffer.as_ref(), ipv6_field::PAYLOAD)
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (6 for IPv6).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[ipv6_field::VER_TC_FLOW.start] >> 4
    }

    /// Payload length.
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), ipv6_field::PAYLOAD_LEN)
    }

    /// Next header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ipv6_field::NEXT_HEADER]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[ipv6_field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src(&self) -> Ipv6Addr {
        addr(self.buffer.as_ref(), ipv6_field::SRC)
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv6Addr {
        addr(self.buffer.as_ref(), ipv6_field::DST)
    }

    /// A bubble: version 6, payload length 0, no next header (trailers may follow).
    pub fn is_bubble(&self) -> bool {
        self.version() == 6 && self.payload_len() == 0 && self.next_header() == NO_NEXT_HEADER
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Header<T> {
    /// Sets the payload length.
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[ipv6_field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }
}

/// A view of an IPv6 packet whose next header is UDP (no extension headers): the fixed
/// IPv6 header, then the UDP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Udp<T: AsRef<[u8]>> {
    buffer: T,
}

/// Offset of the UDP header in an [`Ipv6Udp`] packet.
pub const UDP_OFFSET: usize = ipv6_field::PAYLOAD;
/// Length of the IPv6 and UDP headers together.
pub const IPV6_UDP_HEADERS_LEN: usize = UDP_OFFSET + udp_field::HEADER_LEN;

impl<T: AsRef<[u8]>> Ipv6Udp<T> {
    /// A view over `buffer`, which holds at least both headers (next header not checked:
    /// see [`Self::is_udp`]).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check_len("IPv6/UDP headers", buffer.as_ref(), IPV6_UDP_HEADERS_LEN)?;
        Ok(Self { buffer })
    }

    /// The IPv6 header.
    pub fn ipv6(&self) -> Ipv6Header<&[u8]> {
        Ipv6Header {
            buffer: self.buffer.as_ref(),
        }
    }

    /// Version 6 with next header UDP.
    pub fn is_udp(&self) -> bool {
        let h = self.ipv6();
        h.version() == 6 && h.next_header() == super::packet::NEXT_HEADER_UDP
    }

    fn udp(&self) -> &[u8] {
        &self.buffer.as_ref()[UDP_OFFSET..]
    }

    /// UDP source port.
    pub fn src_port(&self) -> u16 {
        be16(self.udp(), udp_field::SRC_PORT)
    }

    /// UDP destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.udp(), udp_field::DST_PORT)
    }

    /// UDP length field.
    pub fn udp_len(&self) -> u16 {
        be16(self.udp(), udp_field::LENGTH)
    }

    /// UDP checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.udp(), udp_field::CHECKSUM)
    }

    /// The bytes the transport checksum's pseudo-header takes from the IPv6 header: the
    /// source and destination addresses.
    pub fn addresses(&self) -> &[u8] {
        &self.buffer.as_ref()[ipv6_field::SRC.start..ipv6_field::DST.end]
    }

    /// The UDP header and payload.
    pub fn udp_segment(&self) -> &[u8] {
        self.udp()
    }

    /// Whether two packets belong to one flow for segmentation offload: same version,
    /// traffic class and flow label, hop limit, addresses and ports.
    pub fn same_flow<U: AsRef<[u8]>>(&self, other: &Ipv6Udp<U>) -> bool {
        let (a, b) = (self.buffer.as_ref(), other.buffer.as_ref());
        a[ipv6_field::VER_TC_FLOW] == b[ipv6_field::VER_TC_FLOW]
            && a[ipv6_field::HOP_LIMIT] == b[ipv6_field::HOP_LIMIT]
            && a[ipv6_field::SRC.start..UDP_OFFSET + udp_field::DST_PORT.end]
                == b[ipv6_field::SRC.start..UDP_OFFSET + udp_field::DST_PORT.end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Udp<T> {
    /// Sets the IPv6 payload length and the UDP length to `len` (they are equal without
    /// extension headers).
    pub fn set_lengths(&mut self, len: u16) {
        let b = self.buffer.as_mut();
        b[ipv6_field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
        b[UDP_OFFSET + udp_field::LENGTH.start..UDP_OFFSET + udp_field::LENGTH.end]
            .copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the UDP checksum field.
    pub fn set_checksum(&mut self, sum: u16) {
        let b = self.buffer.as_mut();
        b[UDP_OFFSET + udp_field::CHECKSUM.start..UDP_OFFSET + udp_field::CHECKSUM.end]
            .copy_from_slice(&sum.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv6::emit_bubble;

    #[test]
    fn ipv6_header_fields() {
        let mut b = [0u8; 46];
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let dst: Ipv6Addr = "2001::1".parse().unwrap();
        emit_bubble(&mut b, src, dst, 255).unwrap();
        let h = Ipv6Header::new_checked(&b[..]).unwrap();
        assert_eq!((h.version(), h.payload_len(), h.hop_limit()), (6, 0, 255));
        assert_eq!((h.src(), h.dst()), (src, dst));
        assert!(h.is_bubble());
        let mut d = b;
        Ipv6Header::new_checked(&mut d[..])
            .unwrap()
            .set_payload_len(6);
        assert!(!Ipv6Header::new_checked(&d[..]).unwrap().is_bubble());
        d = b;
        d[ipv6_field::NEXT_HEADER] = 17;
        assert!(!Ipv6Header::new_checked(&d[..]).unwrap().is_bubble());
        for n in 0..40 {
            assert!(Ipv6Header::new_checked(&b[..n]).is_err());
        }
    }

    #[test]
    fn ipv6_udp_fields() {
        let mut p = [0u8; 60];
        p[0] = 0x60;
        p[ipv6_field::NEXT_HEADER] = 17;
        p[40..42].copy_from_slice(&1000u16.to_be_bytes());
        p[42..44].copy_from_slice(&53u16.to_be_bytes());
        let mut v = Ipv6Udp::new_checked(&mut p[..]).unwrap();
        v.set_lengths(20);
        v.set_checksum(0xabcd);
        assert!(v.is_udp());
        assert_eq!((v.src_port(), v.dst_port()), (1000, 53));
        assert_eq!(
            (v.udp_len(), v.ipv6().payload_len(), v.checksum()),
            (20, 20, 0xabcd)
        );
        assert_eq!(v.addresses().len(), 32);
        assert_eq!(v.udp_segment().len(), 20);
        let q = p;
        assert!(Ipv6Udp::new_checked(&p[..])
            .unwrap()
            .same_flow(&Ipv6Udp::new_checked(&q[..]).unwrap()));
        for n in 0..48 {
            assert!(Ipv6Udp::new_checked(&p[..n]).is_err());
        }
    }

    mod header {
        use super::super::*;
        use crate::wire::ipv6::{emit_bubble, emit_ipv6_header};
        use crate::wire::packet::{NEXT_HEADER_ICMPV6, NEXT_HEADER_NONE};

        const SRC: Ipv6Addr =
            Ipv6Addr::new(0x2001, 0, 0x4136, 0xe378, 0x8000, 0x63bf, 0x3fff, 0xfdd2);
        const DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

        #[test]
        fn reads_what_the_emitters_wrote() {
            let mut b = [0u8; 40];
            emit_bubble(&mut b, SRC, DST, 0).unwrap();
            let h = Ipv6Header::new_checked(&b[..]).unwrap();
            assert_eq!(h.version(), 6);
            assert_eq!(h.payload_len(), 0);
            assert_eq!(h.next_header(), NEXT_HEADER_NONE);
            assert_eq!(h.src(), SRC);
            assert_eq!(h.dst(), DST);

            let mut p = [0u8; 48];
            emit_ipv6_header(&mut p, DST, SRC, NEXT_HEADER_ICMPV6, 17, 8).unwrap();
            let h = Ipv6Header::new_checked(p).unwrap();
            assert_eq!(
                (h.payload_len(), h.next_header(), h.hop_limit()),
                (8, NEXT_HEADER_ICMPV6, 17)
            );
            assert_eq!((h.src(), h.dst()), (DST, SRC));
        }

        #[test]
        fn every_truncation_is_refused() {
            let b = [0x60u8; 40];
            for n in 0..40 {
                assert_eq!(
                    Ipv6Header::new_checked(&b[..n]),
                    Err(WireError::Truncated {
                        what: "IPv6 header",
                        need: 40,
                        have: n
                    })
                );
            }
            assert!(Ipv6Header::new_checked(&b[..]).is_ok());
        }
    }
}
