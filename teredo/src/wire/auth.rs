//! The authentication encapsulation (RFC 4380 §5.1.1): how a client binds a router
//! advertisement to its own solicitation with an 8-byte nonce.
//!
//! ```text
//! 00 | 01 | ID-len | AU-len | client ID (ID-len) | auth value (AU-len) | nonce (8) | confirmation (1)
//! ```

use super::{check_len, WireError};

/// Indicator bytes that start an authentication header.
pub const AUTH_INDICATOR: [u8; 2] = [0x00, 0x01];
/// Size of a nonce-only header (ID-len = AU-len = 0), what Windows and Miredo send.
pub const AUTH_MIN_LEN: usize = 13;

/// A parsed authentication header borrowing its variable fields from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Auth<'a> {
    /// Client identifier (empty in nonce-only mode).
    pub client_id: &'a [u8],
    /// Authentication value (empty in nonce-only mode).
    pub auth_value: &'a [u8],
    /// The nonce a server echoes and a client checks.
    pub nonce: [u8; 8],
    /// Confirmation byte: 0 = key still valid.
    pub confirmation: u8,
}

/// Owned-free alias: the representation *is* the borrowed view (all fields are plain data).
pub type AuthRepr<'a> = Auth<'a>;

impl<'a> Auth<'a> {
    /// A nonce-only header with confirmation 0.
    pub fn nonce_only(nonce: [u8; 8]) -> Self {
        Self {
            client_id: &[],
            auth_value: &[],
            nonce,
            confirmation: 0,
        }
    }

    /// Parses a header at the start of `buf`, returning it and its length.
    pub fn parse(buf: &'a [u8]) -> Result<(Self, usize), WireError> {
        check_len("authentication header", buf, AUTH_MIN_LEN)?;
        if buf[..2] != AUTH_INDICATOR {
            return Err(WireError::Invalid("authentication indicator"));
        }
        let id_len = usize::from(buf[2]);
        let au_len = usize::from(buf[3]);
        let total = AUTH_MIN_LEN + id_len + au_len;
        check_len("authentication header", buf, total)?;
        let id_end = 4 + id_len;
        let au_end = id_end + au_len;
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&buf[au_end..au_end + 8]);
        Ok((
            Self {
                client_id: &buf[4..id_end],
                auth_value: &buf[id_end..au_end],
                nonce,
                confirmation: buf[au_end + 8],
            },
            total,
        ))
    }

    /// Bytes [`Self::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        AUTH_MIN_LEN + self.client_id.len() + self.auth_value.len()
    }

    /// Writes the header at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        if self.client_id.len() > 255 || self.auth_value.len() > 255 {
            return Err(WireError::Invalid(
                "authentication field longer than 255 bytes",
            ));
        }
        if buf.len() < len {
            return Err(WireError::BufferTooSmall { need: len });
        }
        buf[..2].copy_from_slice(&AUTH_INDICATOR);
        buf[2] = self.client_id.len() as u8;
        buf[3] = self.auth_value.len() as u8;
        let id_end = 4 + self.client_id.len();
        buf[4..id_end].copy_from_slice(self.client_id);
        let au_end = id_end + self.auth_value.len();
        buf[id_end..au_end].copy_from_slice(self.auth_value);
        buf[au_end..au_end + 8].copy_from_slice(&self.nonce);
        buf[au_end + 8] = self.confirmation;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_only_round_trip() {
        let a = Auth::nonce_only([1, 2, 3, 4, 5, 6, 7, 8]);
        let mut buf = [0u8; 13];
        assert_eq!(a.emit(&mut buf).unwrap(), 13);
        assert_eq!(buf, [0, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0]);
        assert_eq!(Auth::parse(&buf).unwrap(), (a, 13));
    }

    #[test]
    fn with_id_and_value() {
        let a = Auth {
            client_id: b"abc",
            auth_value: b"zz",
            nonce: [9; 8],
            confirmation: 1,
        };
        let mut buf = [0u8; 32];
        let n = a.emit(&mut buf).unwrap();
        assert_eq!(n, 18);
        assert_eq!(Auth::parse(&buf[..n]).unwrap(), (a, 18));
    }

    #[test]
    fn overrunning_lengths_are_truncation() {
        let buf = [0, 1, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            Auth::parse(&buf),
            Err(WireError::Truncated { .. })
        ));
        let a = Auth {
            client_id: b"abc",
            auth_value: b"zz",
            nonce: [9; 8],
            confirmation: 1,
        };
        let mut full = [0u8; 18];
        a.emit(&mut full).unwrap();
        for n in 0..full.len() {
            assert!(Auth::parse(&full[..n]).is_err(), "len {n}");
        }
    }
}
