//! The Random Port trailer (RFC 6081 §4.5): the external port the sender predicts its NAT
//! assigned for this peer (Port-Preserving and Sequential Port-Symmetric NAT extensions).
//!
//! ```text
//! type 0x05 | length 2 | random port (16, network order)
//! ```

use super::{emit_header, value_of, Trailer, TYPE_RANDOM_PORT};
use crate::wire::{check_len, WireError};

/// Field ranges inside the value.
mod field {
    use std::ops::Range;
    pub(super) const PORT: Range<usize> = 0..2;
}

/// Length of the value (the RFC's Length field "MUST be set to 0x02").
const VALUE_LEN: usize = field::PORT.end;

/// A parsed Random Port trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RandomPort {
    /// The predicted external port.
    pub port: u16,
}

impl RandomPort {
    /// Parses the trailer `t` (type 0x05, a value of exactly 2 bytes).
    pub fn parse(t: &Trailer<'_>) -> Result<Self, WireError> {
        let v = value_of(t, TYPE_RANDOM_PORT, "random port trailer type")?;
        check_len("random port trailer", v, VALUE_LEN)?;
        if v.len() != VALUE_LEN {
            return Err(WireError::Invalid("random port trailer length"));
        }
        Ok(Self {
            port: u16::from_be_bytes([v[field::PORT.start], v[field::PORT.start + 1]]),
        })
    }

    /// Bytes [`Self::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        2 + VALUE_LEN
    }

    /// Writes the whole trailer at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = emit_header(TYPE_RANDOM_PORT, VALUE_LEN, buf)?;
        buf[2 + field::PORT.start..2 + field::PORT.end].copy_from_slice(&self.port.to_be_bytes());
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
        let mut buf = [0u8; 4];
        assert_eq!(RandomPort { port: 0x1234 }.emit(&mut buf), Ok(4));
        assert_eq!(buf, [0x05, 2, 0x12, 0x34]);
        for n in 0..2 {
            let t = Trailer {
                ty: TYPE_RANDOM_PORT,
                value: &buf[2..2 + n],
            };
            assert!(matches!(
                RandomPort::parse(&t),
                Err(WireError::Truncated { .. })
            ));
        }
        let long = Trailer {
            ty: TYPE_RANDOM_PORT,
            value: &[1, 2, 3],
        };
        assert_eq!(
            RandomPort::parse(&long),
            Err(WireError::Invalid("random port trailer length"))
        );
        let nonce = Trailer {
            ty: 0x01,
            value: &[1, 2],
        };
        assert!(RandomPort::parse(&nonce).is_err());
        for n in 0..4 {
            assert_eq!(
                RandomPort { port: 1 }.emit(&mut buf[..n]),
                Err(WireError::BufferTooSmall { need: 4 })
            );
        }
    }

    proptest! {
        #[test]
        fn round_trip(port in any::<u16>()) {
            let r = RandomPort { port };
            let mut buf = vec![0u8; r.buffer_len()];
            prop_assert_eq!(r.emit(&mut buf), Ok(buf.len()));
            let t = Trailers::new(&buf).next().unwrap();
            prop_assert_eq!(RandomPort::parse(&t), Ok(r));
        }
    }
}
