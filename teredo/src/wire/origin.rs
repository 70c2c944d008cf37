//! The origin indication (RFC 4380 §5.1.1): the server tells a client the outer IPv4
//! address and port a relayed packet (or the RS itself, in an RA) came from.
//!
//! ```text
//! 00 | 00 | ~port (16) | ~IPv4 (32)
//! ```

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{check_len, WireError};

/// Indicator bytes that start an origin indication.
pub const ORIGIN_INDICATOR: [u8; 2] = [0x00, 0x00];
/// Size of an origin indication.
pub const ORIGIN_LEN: usize = 8;

/// A parsed origin indication: the de-obfuscated address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OriginIndication(pub SocketAddrV4);

impl OriginIndication {
    /// Parses an origin indication at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        check_len("origin indication", buf, ORIGIN_LEN)?;
        if buf[..2] != ORIGIN_INDICATOR {
            return Err(WireError::Invalid("origin indicator"));
        }
        let port = !u16::from_be_bytes([buf[2], buf[3]]);
        let ip = !u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        Ok(Self(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    }

    /// Writes the origin indication at the start of `buf`; returns 8.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if buf.len() < ORIGIN_LEN {
            return Err(WireError::BufferTooSmall { need: ORIGIN_LEN });
        }
        buf[..2].copy_from_slice(&ORIGIN_INDICATOR);
        buf[2..4].copy_from_slice(&(!self.0.port()).to_be_bytes());
        buf[4..8].copy_from_slice(&(!u32::from(*self.0.ip())).to_be_bytes());
        Ok(ORIGIN_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4380_example() {
        // RFC 4380 §5.1.1: port 337, address 1.2.3.4 -> 0000FEAEFEFDFCFB.
        let oi = OriginIndication("1.2.3.4:337".parse().unwrap());
        let mut buf = [0u8; 8];
        oi.emit(&mut buf).unwrap();
        assert_eq!(buf, [0x00, 0x00, 0xfe, 0xae, 0xfe, 0xfd, 0xfc, 0xfb]);
        assert_eq!(OriginIndication::parse(&buf).unwrap(), oi);
        for n in 0..8 {
            assert!(OriginIndication::parse(&buf[..n]).is_err());
        }
    }
}
