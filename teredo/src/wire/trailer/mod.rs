//! RFC 6081 §4 trailers: TLVs after the encapsulated IPv6 packet, used by the Teredo
//! extensions (nonce, alternate address, ND option, random port).
//!
//! Servers must forward them untouched; receivers skip unknown types unless the two high
//! bits of the type are `01`, which means "discard the packet" (RFC 6081 §4). Processing
//! stops at the first malformed trailer.

use super::WireError;

mod alternate;
mod nd_option;
mod random_port;

pub use alternate::{AlternateAddress, MAX_ALTERNATES};
pub use nd_option::{DiscoveryType, NdOption};
pub use random_port::RandomPort;

/// Writes the type and length octets of a trailer whose value is `value_len` bytes, after
/// checking that `buf` holds the whole trailer; returns the trailer's length.
fn emit_header(ty: u8, value_len: usize, buf: &mut [u8]) -> Result<usize, WireError> {
    let len = 2 + value_len;
    if buf.len() < len {
        return Err(WireError::BufferTooSmall { need: len });
    }
    buf[0] = ty;
    buf[1] = value_len as u8;
    Ok(len)
}

/// The value of `t` if it is of type `ty`, else `Err(Invalid(what))`.
fn value_of<'a>(t: &Trailer<'a>, ty: u8, what: &'static str) -> Result<&'a [u8], WireError> {
    if t.ty == ty {
        Ok(t.value)
    } else {
        Err(WireError::Invalid(what))
    }
}

/// Trailer type: 4-byte nonce (Symmetric NAT Support, Hairpinning).
pub const TYPE_NONCE: u8 = 0x01;
/// Trailer type: alternate addresses (Hairpinning).
pub const TYPE_ALTERNATE_ADDRESS: u8 = 0x03;
/// Trailer type: neighbor discovery option (Server Load Reduction).
pub const TYPE_ND_OPTION: u8 = 0x04;
/// Trailer type: random port (Port-Preserving Symmetric NAT).
pub const TYPE_RANDOM_PORT: u8 = 0x05;

/// One trailer as found in a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer<'a> {
    /// Type octet.
    pub ty: u8,
    /// Value octets (Length of them).
    pub value: &'a [u8],
}

/// What a receiver does with a trailer, by type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrailerKind {
    /// A type this crate understands (nonce, alternate address, ND option, random port).
    Known,
    /// Unknown, high bits `00`, `10` or `11`: skip it.
    Skip,
    /// Unknown, high bits `01`: discard the whole packet.
    Discard,
}

impl Trailer<'_> {
    /// Classifies the trailer per RFC 6081 §4.
    pub fn kind(&self) -> TrailerKind {
        match self.ty {
            TYPE_NONCE | TYPE_ALTERNATE_ADDRESS | TYPE_ND_OPTION | TYPE_RANDOM_PORT => {
                TrailerKind::Known
            }
            t if t & 0xc0 == 0x40 => TrailerKind::Discard,
            _ => TrailerKind::Skip,
        }
    }

    /// The nonce of a well-formed nonce trailer.
    pub fn nonce(&self) -> Option<[u8; 4]> {
        (self.ty == TYPE_NONCE)
            .then(|| self.value.try_into().ok())
            .flatten()
    }
}

/// Iterator over the trailers of a packet; stops at the first malformed one.
#[derive(Clone, Debug)]
pub struct Trailers<'a> {
    rest: &'a [u8],
}

impl<'a> Trailers<'a> {
    /// Iterates over the bytes that follow the IPv6 packet.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Checks the trailers the way a receiver must: `Err(MandatoryTrailer)` if one of them
    /// orders the packet discarded.
    pub fn validate(bytes: &'a [u8]) -> Result<(), WireError> {
        for t in Self::new(bytes) {
            if t.kind() == TrailerKind::Discard {
                return Err(WireError::MandatoryTrailer(t.ty));
            }
        }
        Ok(())
    }

    /// Writes one trailer at the start of `buf`; returns its length.
    pub fn emit(ty: u8, value: &[u8], buf: &mut [u8]) -> Result<usize, WireError> {
        let len = 2 + value.len();
        if value.len() > 255 {
            return Err(WireError::Invalid("trailer value longer than 255 bytes"));
        }
        if buf.len() < len {
            return Err(WireError::BufferTooSmall { need: len });
        }
        buf[0] = ty;
        buf[1] = value.len() as u8;
        buf[2..len].copy_from_slice(value);
        Ok(len)
    }
}

impl<'a> Iterator for Trailers<'a> {
    type Item = Trailer<'a>;

    fn next(&mut self) -> Option<Trailer<'a>> {
        if self.rest.len() < 2 {
            return None;
        }
        let len = usize::from(self.rest[1]);
        if self.rest.len() < 2 + len {
            self.rest = &[];
            return None;
        }
        let t = Trailer {
            ty: self.rest[0],
            value: &self.rest[2..2 + len],
        };
        self.rest = &self.rest[2 + len..];
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_and_stops_at_malformed() {
        let bytes = [0x01, 4, 1, 2, 3, 4, 0x05, 2, 0xab, 0xcd, 0x80, 9, 1];
        let v: Vec<_> = Trailers::new(&bytes).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].nonce(), Some([1, 2, 3, 4]));
        assert_eq!(v[1].ty, TYPE_RANDOM_PORT);
        assert!(Trailers::validate(&bytes).is_ok());
    }

    #[test]
    fn classification() {
        assert_eq!(
            Trailer {
                ty: 0x41,
                value: &[]
            }
            .kind(),
            TrailerKind::Discard
        );
        assert_eq!(
            Trailer {
                ty: 0x7f,
                value: &[]
            }
            .kind(),
            TrailerKind::Discard
        );
        assert_eq!(
            Trailer {
                ty: 0x02,
                value: &[]
            }
            .kind(),
            TrailerKind::Skip
        );
        assert_eq!(
            Trailer {
                ty: 0x81,
                value: &[]
            }
            .kind(),
            TrailerKind::Skip
        );
        assert_eq!(
            Trailer {
                ty: 0xc1,
                value: &[]
            }
            .kind(),
            TrailerKind::Skip
        );
        assert_eq!(
            Trailer {
                ty: 0x04,
                value: &[0; 4]
            }
            .kind(),
            TrailerKind::Known
        );
        assert_eq!(
            Trailers::validate(&[0x02, 0, 0x41, 1, 0]),
            Err(WireError::MandatoryTrailer(0x41))
        );
    }

    #[test]
    fn emit_round_trip() {
        let mut buf = [0u8; 6];
        assert_eq!(
            Trailers::emit(TYPE_NONCE, &[9, 8, 7, 6], &mut buf).unwrap(),
            6
        );
        let t = Trailers::new(&buf).next().unwrap();
        assert_eq!(t.nonce(), Some([9, 8, 7, 6]));
    }
}
