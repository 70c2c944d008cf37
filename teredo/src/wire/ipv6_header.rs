//! A zero-copy view of an IPv6 header (RFC 8200 §3), smoltcp style, for drivers that must
//! read a field of a packet a core emitted or a peer sent, e.g. the server's raw socket,
//! which needs the destination to pick a route. Field offsets live here and only here.
//!
//! ```text
//! version (4) | traffic class (8) | flow label (20)
//! payload length (16) | next header (8) | hop limit (8)
//! source address (128)
//! destination address (128)
//! ```

use std::net::Ipv6Addr;

use super::packet::IPV6_HEADER_LEN;
use super::{check_len, WireError};

/// Byte ranges of the header's fields.
pub mod field {
    use std::ops::Range;

    /// Version, traffic class and flow label.
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    /// Payload length: bytes after the 40-byte header.
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    /// Next header (protocol of the payload).
    pub const NEXT_HEADER: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC_ADDR: Range<usize> = 8..24;
    /// Destination address.
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// A view of the IPv6 header at the start of a buffer. Build it with
/// [`Self::new_checked`]: once it has passed, no accessor can panic.
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

    /// Wraps `buffer` if it holds a whole header ([`Self::check_len`]).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// `Err(Truncated)` unless the buffer holds the 40-byte header. Only the header is
    /// checked: the payload length field is not compared with the bytes that follow.
    pub fn check_len(&self) -> Result<(), WireError> {
        check_len("IPv6 header", self.buffer.as_ref(), IPV6_HEADER_LEN)
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The IP version field (6 for an IPv6 packet; not checked here).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// The payload length field.
    pub fn payload_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PAYLOAD_LEN];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The next-header field.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::DST_ADDR])
    }
}

fn addr(bytes: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(bytes);
    Ipv6Addr::from(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv6::{emit_bubble, emit_ipv6_header};
    use crate::wire::packet::{NEXT_HEADER_ICMPV6, NEXT_HEADER_NONE};

    const SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0, 0x4136, 0xe378, 0x8000, 0x63bf, 0x3fff, 0xfdd2);
    const DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

    #[test]
    fn reads_what_the_emitters_wrote() {
        let mut b = [0u8; 40];
        emit_bubble(&mut b, SRC, DST, 0).unwrap();
        let h = Ipv6Header::new_checked(&b[..]).unwrap();
        assert_eq!(h.version(), 6);
        assert_eq!(h.payload_len(), 0);
        assert_eq!(h.next_header(), NEXT_HEADER_NONE);
        assert_eq!(h.src_addr(), SRC);
        assert_eq!(h.dst_addr(), DST);

        let mut p = [0u8; 48];
        emit_ipv6_header(&mut p, DST, SRC, NEXT_HEADER_ICMPV6, 17, 8).unwrap();
        let h = Ipv6Header::new_checked(p).unwrap();
        assert_eq!(
            (h.payload_len(), h.next_header(), h.hop_limit()),
            (8, NEXT_HEADER_ICMPV6, 17)
        );
        assert_eq!((h.src_addr(), h.dst_addr()), (DST, SRC));
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
