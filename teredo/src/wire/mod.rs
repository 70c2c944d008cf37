//! Teredo wire formats, in the style of smoltcp's `wire` module: zero-copy views whose
//! accessors cannot panic once the length was checked, plus plain `Repr` values with
//! `parse`/`emit`/`buffer_len`. The inner IPv6/ICMPv6 layers go through etherparse.

pub mod auth;
pub mod ipv6;
pub mod ndp;
pub mod origin;
pub mod packet;
pub mod trailer;
pub mod view;

#[cfg(test)]
mod proptests;

pub use auth::{Auth, AuthRepr};
pub use origin::OriginIndication;
pub use packet::TeredoPacket;
pub use trailer::{
    AlternateAddress, DiscoveryType, NdOption, RandomPort, Trailer, TrailerKind, Trailers,
};
pub use view::Ipv6Header;

/// Why bytes could not be parsed as what they claim to be.
///
/// Each variant maps to one [`crate::DropReason`], so a refusal is always counted under a
/// specific label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the structure needs.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The encapsulated packet does not start with IP version 6.
    #[error("inner packet is not IPv6 (version {0})")]
    BadVersion(u8),
    /// The IPv6 payload length claims more bytes than the datagram holds.
    #[error("IPv6 payload length {payload_len} exceeds the {available} bytes available")]
    BadLength {
        /// The IPv6 header's payload length.
        payload_len: usize,
        /// Bytes after the IPv6 header.
        available: usize,
    },
    /// An authentication header after an origin indication (RFC 4380 §5.1.1: auth comes first).
    #[error("authentication header after origin indication")]
    AuthAfterOrigin,
    /// An RFC 6081 trailer of an unknown type whose two high bits are `01`: discard the packet.
    #[error("unknown mandatory trailer type {0:#04x}")]
    MandatoryTrailer(u8),
    /// A field holds a value the format does not allow.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The ICMPv6 checksum does not match.
    #[error("bad ICMPv6 checksum")]
    BadChecksum,
    /// The output buffer is too small for what is being emitted.
    #[error("output buffer too small: need {need} bytes")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
    },
}

/// Returns `Err(Truncated)` unless `buf` holds at least `need` bytes.
pub(crate) fn check_len(what: &'static str, buf: &[u8], need: usize) -> Result<(), WireError> {
    if buf.len() < need {
        Err(WireError::Truncated {
            what,
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}
