//! The bytes of the bubbles a client sends (RFC 4380 §5.2.6, local discovery §5.2.8) and of the
//! RFC 6081 trailers they carry (nonce §4.2, Alternate Address §4.3, Random Port §4.5): shared by
//! the peer procedure and the extensions, which import them from here and not from each other.

use std::net::{Ipv6Addr, SocketAddrV4};

use crate::io::{Kind, Local};
use crate::wire::ipv6::emit_bubble;
use crate::wire::packet::IPV6_HEADER_LEN;
use crate::wire::trailer::{AlternateAddress, RandomPort, Trailers, TYPE_NONCE};

use super::{ALL_NODES, BUBBLE_HOP_LIMIT, DISCOVERY_HOP_LIMIT};

/// A datagram the extensions add to a probe or an answer: socket, destination, kind, bytes.
pub(super) type Extra = (Local, SocketAddrV4, Kind, Vec<u8>);

/// A bubble (RFC 4380 §2.8), with an RFC 6081 nonce trailer when given.
pub(super) fn bubble_bytes(src: Ipv6Addr, dst: Ipv6Addr, nonce: Option<[u8; 4]>) -> Vec<u8> {
    let mut b = vec![0u8; IPV6_HEADER_LEN + 6];
    let mut len = emit_bubble(&mut b, src, dst, BUBBLE_HOP_LIMIT).unwrap_or(0);
    if let Some(n) = nonce {
        if let Some(rest) = b.get_mut(len..) {
            len += Trailers::emit(TYPE_NONCE, &n, rest).unwrap_or(0);
        }
    }
    b.truncate(len);
    b
}

/// A local discovery bubble from `own` (RFC 4380 §5.2.8: to ff02::1, hop limit 1).
pub(super) fn discovery_bytes(own: Ipv6Addr) -> Vec<u8> {
    let mut b = vec![0u8; IPV6_HEADER_LEN];
    let len = emit_bubble(&mut b, own, ALL_NODES, DISCOVERY_HOP_LIMIT).unwrap_or(0);
    b.truncate(len);
    b
}

/// The first well-formed nonce trailer.
pub(super) fn trailer_nonce(trailers: &[u8]) -> Option<[u8; 4]> {
    Trailers::new(trailers)
        .filter(|t| t.ty == TYPE_NONCE)
        .find_map(|t| t.nonce())
}

/// A bubble with an optional nonce trailer and an optional Random Port trailer.
pub(super) fn bubble_with_port(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    nonce: Option<[u8; 4]>,
    port: Option<u16>,
) -> Vec<u8> {
    let mut b = bubble_bytes(src, dst, nonce);
    if let Some(port) = port {
        let mut t = [0u8; 4];
        if let Ok(n) = (RandomPort { port }).emit(&mut t) {
            b.extend_from_slice(&t[..n]);
        }
    }
    b
}

/// `bubble` with `alt` appended as a trailer (unchanged without one).
pub(super) fn with_alternates(mut bubble: Vec<u8>, alt: Option<&AlternateAddress>) -> Vec<u8> {
    if let Some(alt) = alt {
        let start = bubble.len();
        bubble.resize(start + alt.buffer_len(), 0);
        let len = bubble
            .get_mut(start..)
            .and_then(|b| alt.emit(b).ok())
            .unwrap_or(0);
        bubble.truncate(start + len);
    }
    bubble
}
