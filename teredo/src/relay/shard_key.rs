//! What a multi-core driver needs to send both directions of a peer to the same core
//! without parsing a packet: the peer's Teredo address, read from one header field.

use std::net::Ipv6Addr;

use crate::wire::view::Ipv6Header;
use crate::wire::TeredoPacket;

/// The peer a native IPv6 packet is for: its destination (`None` without a full header).
pub fn shard_key_ipv6(packet: &[u8]) -> Option<Ipv6Addr> {
    Ipv6Header::new_checked(packet).ok().map(|h| h.dst())
}

/// The peer a datagram from a client comes from: the IPv6 source. Only the source field is
/// read when the datagram starts with the IPv6 header (the common case); with an
/// authentication header or origin indication in front, the datagram is parsed. `None`
/// when it is malformed.
pub fn shard_key_udp(datagram: &[u8]) -> Option<Ipv6Addr> {
    match Ipv6Header::new_checked(datagram) {
        Ok(h) if h.version() == 6 => Some(h.src()),
        _ => TeredoPacket::parse(datagram).ok().map(|p| p.src()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_of_a_peer_have_one_key() {
        let peer: Ipv6Addr = "2001:0:c633:6401:0:63bf:39cc:9bf5".parse().unwrap();
        let native: Ipv6Addr = "2001:db8::99".parse().unwrap();
        let mut to_peer = [0u8; 40];
        to_peer[0] = 0x60;
        to_peer[8..24].copy_from_slice(&native.octets());
        to_peer[24..40].copy_from_slice(&peer.octets());
        let mut from_peer = [0u8; 40];
        from_peer[0] = 0x60;
        from_peer[8..24].copy_from_slice(&peer.octets());
        from_peer[24..40].copy_from_slice(&native.octets());
        assert_eq!(shard_key_ipv6(&to_peer), Some(peer));
        assert_eq!(shard_key_udp(&from_peer), Some(peer));
        // With an origin indication in front.
        let mut oi = vec![0, 0, 0x63, 0xbf, 0x39, 0xcc, 0x9b, 0xf5];
        oi.extend_from_slice(&from_peer);
        assert_eq!(shard_key_udp(&oi), Some(peer));
        assert_eq!(shard_key_udp(&[0, 0, 1]), None);
        assert_eq!(shard_key_ipv6(&[0x60; 10]), None);
    }
}
