//! The Alternate Address trailer (RFC 6081 §4.3): other address/port pairs (the local one,
//! a UPnP mapping) where a peer behind the same NAT may reach the sender (Hairpinning
//! extension). Only in indirect bubbles.
//!
//! ```text
//! type 0x03 | length 8..=26 | reserved (16, zero) | 1..=4 × (IPv4 (32) | port (16))
//! ```

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{emit_header, value_of, Trailer, TYPE_ALTERNATE_ADDRESS};
use crate::wire::{check_len, WireError};

/// Field ranges inside the value, and inside each entry of the list.
mod field {
    use std::ops::Range;
    pub(super) const RESERVED: Range<usize> = 0..2;
    pub(super) const LIST: usize = 2;
    pub(super) const ENTRY_LEN: usize = 6;
    pub(super) const ENTRY_IP: Range<usize> = 0..4;
    pub(super) const ENTRY_PORT: Range<usize> = 4..6;
}

/// Most entries a trailer holds (Length ≤ 26: the RFC's amplification bound).
pub const MAX_ALTERNATES: usize = 4;

/// A parsed Alternate Address trailer: 1 to [`MAX_ALTERNATES`] unicast address/port pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AlternateAddress {
    entries: [SocketAddrV4; MAX_ALTERNATES],
    count: usize,
}

impl AlternateAddress {
    /// A trailer listing `addrs`; `None` if there are none, more than [`MAX_ALTERNATES`], or
    /// one is not a valid entry (unspecified, broadcast or multicast address, port 0).
    pub fn new(addrs: &[SocketAddrV4]) -> Option<Self> {
        if addrs.is_empty() || addrs.len() > MAX_ALTERNATES || !addrs.iter().all(valid_entry) {
            return None;
        }
        let mut entries = [SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); MAX_ALTERNATES];
        entries[..addrs.len()].copy_from_slice(addrs);
        Some(Self {
            entries,
            count: addrs.len(),
        })
    }

    /// The listed address/port pairs.
    pub fn addrs(&self) -> &[SocketAddrV4] {
        &self.entries[..self.count]
    }

    /// Parses the trailer `t`: type 0x03, Length 8, 14, 20 or 26, every entry a unicast
    /// address with a non-zero port ("MUST contain a valid unicast address", "MUST NOT be
    /// zero"); the reserved field is ignored on receipt.
    pub fn parse(t: &Trailer<'_>) -> Result<Self, WireError> {
        let v = value_of(t, TYPE_ALTERNATE_ADDRESS, "alternate address trailer type")?;
        check_len(
            "alternate address trailer",
            v,
            field::LIST + field::ENTRY_LEN,
        )?;
        let list = &v[field::LIST..];
        if list.len() % field::ENTRY_LEN != 0 || list.len() / field::ENTRY_LEN > MAX_ALTERNATES {
            return Err(WireError::Invalid("alternate address trailer length"));
        }
        let mut entries = [SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); MAX_ALTERNATES];
        let mut count = 0;
        for e in list.chunks_exact(field::ENTRY_LEN) {
            let ip = &e[field::ENTRY_IP];
            let port = &e[field::ENTRY_PORT];
            let a = SocketAddrV4::new(
                Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
                u16::from_be_bytes([port[0], port[1]]),
            );
            if !valid_entry(&a) {
                return Err(WireError::Invalid("alternate address entry"));
            }
            entries[count] = a;
            count += 1;
        }
        Ok(Self { entries, count })
    }

    /// Bytes [`Self::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        2 + field::LIST + self.count * field::ENTRY_LEN
    }

    /// Writes the whole trailer at the start of `buf` (reserved zero); returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let value_len = field::LIST + self.count * field::ENTRY_LEN;
        let len = emit_header(TYPE_ALTERNATE_ADDRESS, value_len, buf)?;
        let v = &mut buf[2..len];
        v[field::RESERVED].fill(0);
        for (a, e) in self
            .addrs()
            .iter()
            .zip(v[field::LIST..].chunks_exact_mut(field::ENTRY_LEN))
        {
            e[field::ENTRY_IP].copy_from_slice(&a.ip().octets());
            e[field::ENTRY_PORT].copy_from_slice(&a.port().to_be_bytes());
        }
        Ok(len)
    }
}

/// A unicast address (not unspecified, broadcast or multicast) with a non-zero port.
fn valid_entry(a: &SocketAddrV4) -> bool {
    let ip = a.ip();
    a.port() != 0 && !ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Trailers;
    use proptest::prelude::*;

    fn ep(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn wire_layout_and_truncation() {
        let a = AlternateAddress::new(&[ep("192.168.1.2:3544"), ep("203.0.113.1:40000")]).unwrap();
        let mut buf = [0xffu8; 16];
        assert_eq!(a.emit(&mut buf), Ok(16));
        assert_eq!(
            buf,
            [0x03, 14, 0, 0, 192, 168, 1, 2, 0x0d, 0xd8, 203, 0, 113, 1, 0x9c, 0x40]
        );
        for n in 0..8 {
            let t = Trailer {
                ty: TYPE_ALTERNATE_ADDRESS,
                value: &buf[2..2 + n],
            };
            assert!(matches!(
                AlternateAddress::parse(&t),
                Err(WireError::Truncated { .. })
            ));
        }
        // Lengths between entries, and beyond four entries, are refused.
        for n in [9, 13, 15] {
            let t = Trailer {
                ty: TYPE_ALTERNATE_ADDRESS,
                value: &[1u8; 32][..n],
            };
            assert!(AlternateAddress::parse(&t).is_err(), "length {n}");
        }
        let five = [1u8; 2 + 5 * 6];
        let t = Trailer {
            ty: TYPE_ALTERNATE_ADDRESS,
            value: &five,
        };
        assert_eq!(
            AlternateAddress::parse(&t),
            Err(WireError::Invalid("alternate address trailer length"))
        );
        assert_eq!(
            a.emit(&mut buf[..15]),
            Err(WireError::BufferTooSmall { need: 16 })
        );
    }

    #[test]
    fn entries_must_be_unicast_with_a_port() {
        assert!(AlternateAddress::new(&[]).is_none());
        assert!(AlternateAddress::new(&[ep("10.0.0.1:0")]).is_none());
        assert!(AlternateAddress::new(&[ep("224.0.0.253:3544")]).is_none());
        assert!(AlternateAddress::new(&[ep("10.0.0.1:1"); 5]).is_none());
        // Port 0 on the wire.
        let t = Trailer {
            ty: TYPE_ALTERNATE_ADDRESS,
            value: &[0, 0, 10, 0, 0, 1, 0, 0],
        };
        assert_eq!(
            AlternateAddress::parse(&t),
            Err(WireError::Invalid("alternate address entry"))
        );
    }

    fn arb_entry() -> impl Strategy<Value = SocketAddrV4> {
        (1u32..0xe000_0000, 1u16..).prop_map(|(ip, port)| SocketAddrV4::new(ip.into(), port))
    }

    proptest! {
        #[test]
        fn round_trip(addrs in proptest::collection::vec(arb_entry(), 1..=MAX_ALTERNATES)) {
            let a = AlternateAddress::new(&addrs).unwrap();
            let mut buf = vec![0u8; a.buffer_len()];
            prop_assert_eq!(a.emit(&mut buf), Ok(buf.len()));
            let t = Trailers::new(&buf).next().unwrap();
            let back = AlternateAddress::parse(&t).unwrap();
            prop_assert_eq!(back.addrs(), &addrs[..]);
        }
    }
}
