//! RFC 4380 §5.2.8 local client discovery: multicast bubbles on the link so that two
//! clients behind the same NAT find each other and talk over the LAN, without the NAT
//! having to hairpin. Enabled by [`ClientConfig::local_discovery`].
//!
//! * Sending: once qualified, a *discovery bubble* (IPv6 src = our Teredo address, dst =
//!   ff02::1, hop limit 1, no payload) goes to 224.0.0.253:3544 ([`DISCOVERY_GROUP`]) at
//!   once and then every 200–300 s, uniformly drawn ([`Kind::DiscoveryBubble`]; the driver
//!   sends it with IPv4 TTL 1).
//! * Receiving ([`Client::handle_discovery`], for datagrams the driver received on the
//!   group): the source must be a well-formed Teredo address with our mapped IPv4 (the RFC's
//!   optional check: behind the same NAT) and the IPv4 source on our subnet; the peer's
//!   entry records that local address ("local", untrusted until proven) and we answer with a
//!   unicast bubble to it.
//! * A local peer (discovery bubble in the last 600 s) is probed with a unicast bubble to
//!   its local address plus a discovery bubble (§5.2.4 case 3), and a packet from its local
//!   address makes it trusted there (§5.2.3 case 5); a trusted local peer stays valid for
//!   600 s ([`LOCAL_PEER_VALIDITY`]).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::addr::{TeredoAddr, TEREDO_PORT};
use crate::io::Kind;
use crate::wire::packet::TeredoPacket;
use crate::DropReason;

use super::bubbles::{bubble_bytes, discovery_bytes};
use super::*;

/// The Teredo IPv4 Discovery Address (RFC 4380 §2.17).
pub const DISCOVERY_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 253);
/// Where discovery bubbles go: the group and the Teredo port.
pub const DISCOVERY_DEST: SocketAddrV4 = SocketAddrV4::new(DISCOVERY_GROUP, TEREDO_PORT);
/// IPv6 destination of a discovery bubble: all nodes on link.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// IPv6 hop limit (and the IPv4 TTL a driver sets) of a discovery bubble.
pub const DISCOVERY_HOP_LIMIT: u8 = 1;
/// Bounds of the random interval between discovery bubbles (RFC 4380 §5.2.8).
pub const DISCOVERY_PERIOD: (Duration, Duration) =
    (Duration::from_secs(200), Duration::from_secs(300));
/// How long a discovery bubble makes its sender a local peer, and how long a trusted local
/// peer stays valid (RFC 4380 §5.2.4: 600 s).
pub const LOCAL_PEER_VALIDITY: Duration = Duration::from_secs(600);

/// Whether `a` and `b` share the first `prefix_len` bits.
fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let bits = u32::from(prefix_len.min(32));
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

impl Client {
    /// Handles a datagram the driver received on the discovery group (224.0.0.253:3544)
    /// from `from` (RFC 4380 §5.2.8, §5.2.3 case 4). `Ok(`[`Handled::DiscoveryBubble`]`)`:
    /// the sender is a local peer and our unicast answer waits in [`Self::poll_output`].
    /// Refused (counted on the data path): `not_allowed` (discovery off), `not_qualified`,
    /// wire reasons, `discovery_rejected` (not a bubble to ff02::1, a non-Teredo source or
    /// one with another mapped IPv4 than ours, an IPv4 source off our subnet, or our own).
    /// Unicast datagrams must not come here: the RFC discards discovery bubbles received
    /// over a unicast address ([`Self::handle_udp`] drops them: not for our address).
    pub fn handle_discovery(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        data: &[u8],
    ) -> Result<Handled, DropReason> {
        let r = self.discovery_bubble(now, from, data);
        match r {
            Ok(_) => self.counters.data_accepted += 1,
            Err(reason) => self.counters.count_reject(reason, Path::Data),
        }
        r
    }

    fn discovery_bubble(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        data: &[u8],
    ) -> Result<Handled, DropReason> {
        if !self.cfg.local_discovery {
            return Err(DropReason::NotAllowed);
        }
        let (State::Qualified, Some(own), Some(mapping)) = (self.state, self.address, self.mapping)
        else {
            return Err(DropReason::NotQualified);
        };
        let pkt = TeredoPacket::parse(data)?;
        let src = pkt.src();
        let teredo = TeredoAddr::from_ipv6(&src);
        let ok = pkt.is_bubble()
            && pkt.dst() == ALL_NODES
            && pkt.origin.is_none()
            && src != own
            && from != self.local
            && teredo.is_some_and(|t| t.mapped.ip() == mapping.ip())
            && same_subnet(*from.ip(), *self.local.ip(), self.cfg.local_prefix_len);
        let (true, Some(t)) = (ok, teredo) else {
            return Err(DropReason::DiscoveryRejected);
        };
        let existed = self.peers.contains_key(&src);
        self.ensure_peer(now, src, Some(t))?;
        if let Some(p) = self.peers.get_mut(&src) {
            p.local = Some(from);
            p.local_seen = Some(now);
            p.last_used = now;
            if !existed {
                p.last_rx = Some(now);
            }
        }
        self.counters.discovery_received += 1;
        // "Upon reception of a discovery bubble, clients reply with a unicast bubble."
        if self.take_reply_token(now) {
            self.push_output(from, Kind::Bubble, bubble_bytes(own, src, None))?;
            self.counters.reply_bubbles_sent += 1;
        } else {
            self.counters.reply_bubbles_suppressed += 1;
        }
        Ok(Handled::DiscoveryBubble)
    }

    /// The local address of a peer whose discovery bubble is younger than
    /// [`LOCAL_PEER_VALIDITY`].
    pub(super) fn fresh_local(&self, addr: &Ipv6Addr, now: Instant) -> Option<SocketAddrV4> {
        if !self.cfg.local_discovery {
            return None;
        }
        let p = self.peers.get(addr)?;
        let seen = p.local_seen?;
        (now.saturating_duration_since(seen) < LOCAL_PEER_VALIDITY)
            .then_some(p.local)
            .flatten()
    }

    /// Queues a discovery bubble (when qualified with discovery on).
    pub(super) fn send_discovery(&mut self) {
        let (true, Some(own)) = (self.cfg.local_discovery, self.address) else {
            return;
        };
        if self
            .push_output(DISCOVERY_DEST, Kind::DiscoveryBubble, discovery_bytes(own))
            .is_ok()
        {
            self.counters.discovery_sent += 1;
        }
    }

    /// On qualification: the first discovery bubble now, the next one in 200–300 s.
    pub(super) fn start_discovery(&mut self, now: Instant) {
        if self.cfg.local_discovery {
            self.send_discovery();
            self.schedule_discovery(now);
        }
    }

    fn schedule_discovery(&mut self, now: Instant) {
        let (lo, hi) = DISCOVERY_PERIOD;
        let span = (hi - lo).as_millis() as u64;
        let wait = lo + Duration::from_millis(self.rng.next_u64() % span.max(1));
        self.next_discovery = after(now, wait);
    }

    /// The periodic discovery bubble, when due (qualified only).
    pub(super) fn discovery_timer(&mut self, now: Instant) {
        if self.state == State::Qualified && self.next_discovery.is_some_and(|t| t <= now) {
            self.send_discovery();
            self.schedule_discovery(now);
        }
    }

    /// The discovery deadline while qualified.
    pub(super) fn discovery_deadline(&self) -> Option<Instant> {
        self.next_discovery
            .filter(|_| self.cfg.local_discovery && self.state == State::Qualified)
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn subnet_masks() {
        let a = Ipv4Addr::new(192, 168, 1, 10);
        assert!(same_subnet(a, Ipv4Addr::new(192, 168, 1, 200), 24));
        assert!(!same_subnet(a, Ipv4Addr::new(192, 168, 2, 10), 24));
        assert!(same_subnet(a, Ipv4Addr::new(10, 0, 0, 1), 0));
        assert!(!same_subnet(a, Ipv4Addr::new(192, 168, 1, 11), 32));
    }

    #[test]
    fn discovery_bubble_is_a_hop_limit_one_bubble_to_all_nodes() {
        let own: Ipv6Addr = "2001:0:c633:6401:0:f227:3fff:fdfe".parse().unwrap();
        let b = discovery_bytes(own);
        let p = TeredoPacket::parse(&b).unwrap();
        assert!(p.is_bubble());
        assert_eq!(p.dst(), ALL_NODES);
        assert_eq!(p.src(), own);
        assert_eq!(b[7], 1, "hop limit");
    }
}
