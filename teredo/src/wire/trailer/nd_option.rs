//! The Neighbor Discovery Option trailer (RFC 6081 §4.4): marks a direct bubble as a
//! solicitation or an advertisement (Server Load Reduction extension), so peers refresh
//! each other without the server.
//!
//! ```text
//! type 0x04 | length 4 | DiscoveryType (8) | reserved (24, zero)
//! ```

use super::{emit_header, value_of, Trailer, TYPE_ND_OPTION};
use crate::wire::{check_len, WireError};

/// Field ranges inside the value.
mod field {
    use std::ops::Range;
    pub(super) const DISCOVERY_TYPE: usize = 0;
    pub(super) const RESERVED: Range<usize> = 1..4;
}

/// Length of the value (the RFC's Length field "MUST be set to 0x04").
const VALUE_LEN: usize = field::RESERVED.end;

/// The DiscoveryType field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiscoveryType {
    /// TeredoDiscoverySolicitation (0x00): answer with an advertisement.
    Solicitation,
    /// TeredoDiscoveryAdvertisement (0x01): the answer to a solicitation.
    Advertisement,
}

/// A parsed Neighbor Discovery Option trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NdOption {
    /// Solicitation or advertisement.
    pub discovery: DiscoveryType,
}

impl NdOption {
    /// Parses the trailer `t`: type 0x04, a value of exactly 4 bytes, DiscoveryType 0 or 1
    /// (the RFC's "MUST be set to one of the following values"); the reserved bytes are
    /// ignored on receipt.
    pub fn parse(t: &Trailer<'_>) -> Result<Self, WireError> {
        let v = value_of(t, TYPE_ND_OPTION, "nd option trailer type")?;
        check_len("nd option trailer", v, VALUE_LEN)?;
        if v.len() != VALUE_LEN {
            return Err(WireError::Invalid("nd option trailer length"));
        }
        let discovery = match v[field::DISCOVERY_TYPE] {
            0 => DiscoveryType::Solicitation,
            1 => DiscoveryType::Advertisement,
            _ => return Err(WireError::Invalid("nd option discovery type")),
        };
        Ok(Self { discovery })
    }

    /// Bytes [`Self::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        2 + VALUE_LEN
    }

    /// Writes the whole trailer at the start of `buf` (reserved bytes zero); returns its
    /// length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = emit_header(TYPE_ND_OPTION, VALUE_LEN, buf)?;
        let v = &mut buf[2..len];
        v[field::DISCOVERY_TYPE] = match self.discovery {
            DiscoveryType::Solicitation => 0,
            DiscoveryType::Advertisement => 1,
        };
        v[field::RESERVED].fill(0);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Trailers;
    use proptest::prelude::*;

    #[test]
    fn wire_layout_and_truncation() {
        let mut buf = [0xffu8; 6];
        let adv = NdOption {
            discovery: DiscoveryType::Advertisement,
        };
        assert_eq!(adv.emit(&mut buf), Ok(6));
        assert_eq!(buf, [0x04, 4, 1, 0, 0, 0]);
        for n in 0..4 {
            let t = Trailer {
                ty: TYPE_ND_OPTION,
                value: &buf[2..2 + n],
            };
            assert!(matches!(
                NdOption::parse(&t),
                Err(WireError::Truncated { .. })
            ));
        }
        // Reserved bytes are ignored on receipt; an unknown DiscoveryType is refused.
        let t = Trailer {
            ty: TYPE_ND_OPTION,
            value: &[0, 9, 9, 9],
        };
        assert_eq!(
            NdOption::parse(&t).map(|o| o.discovery),
            Ok(DiscoveryType::Solicitation)
        );
        let t = Trailer {
            ty: TYPE_ND_OPTION,
            value: &[2, 0, 0, 0],
        };
        assert!(NdOption::parse(&t).is_err());
        assert_eq!(
            adv.emit(&mut buf[..5]),
            Err(WireError::BufferTooSmall { need: 6 })
        );
    }

    proptest! {
        #[test]
        fn round_trip(solicit in any::<bool>()) {
            let discovery = if solicit { DiscoveryType::Solicitation } else { DiscoveryType::Advertisement };
            let o = NdOption { discovery };
            let mut buf = vec![0u8; o.buffer_len()];
            prop_assert_eq!(o.emit(&mut buf), Ok(buf.len()));
            let t = Trailers::new(&buf).next().unwrap();
            prop_assert_eq!(NdOption::parse(&t), Ok(o));
        }
    }
}
