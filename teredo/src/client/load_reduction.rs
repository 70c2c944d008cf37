//! RFC 6081 §5.7 Server Load Reduction extension ([`ClientConfig::server_load_reduction`]):
//! a trusted peer that went quiet is re-validated with direct bubbles instead of an indirect
//! bubble through its server.
//!
//! * Sending (§5.7.4.1): a packet for a trusted Teredo peer whose last reception is older
//!   than [`ClientConfig::peer_validity`] (30 s: "no data exchanged in the last 30
//!   seconds") is queued and a direct bubble with a Neighbor Discovery Option trailer
//!   (TeredoDiscoverySolicitation) goes to the peer's recorded mapping; count 1, timer
//!   [`SOLICITATION_INTERVAL`].
//! * The timer (§5.7.2): another solicitation, count + 1; below [`MAX_SOLICITATIONS`] the
//!   timer is re-armed, at it the client falls back to RFC 4380 as if the peer had never
//!   been reached: it is no longer trusted and the usual probe exchange (direct and indirect
//!   bubble, paced, retransmitted, given up) starts.
//! * Receiving (§5.7.4.2): an accepted direct bubble carrying a solicitation is answered
//!   with a direct bubble carrying an advertisement (one token of the answer budget). Any
//!   accepted direct bubble from the peer — the advertisement included — makes it trusted
//!   again and releases the queue (RFC 4380 §5.2.3).
//!
//! Peers reached through local discovery (RFC 4380 §5.2.8) keep their own procedure (a
//! unicast and a discovery bubble on the LAN, no server involved).

use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::io::Kind;
use crate::peer::Gate;
use crate::wire::trailer::{DiscoveryType, NdOption, Trailers, TYPE_ND_OPTION};
use crate::wire::TeredoPacket;

use super::bubbles::bubble_bytes;
use super::*;

/// Retransmission interval of the solicitations (§5.7.2: two seconds).
pub const SOLICITATION_INTERVAL: Duration = Duration::from_secs(2);
/// Solicitations before falling back to the indirect bubble (§5.7.2: three).
pub const MAX_SOLICITATIONS: u8 = 3;

/// A direct bubble from `src` to `dst` carrying a Neighbor Discovery Option trailer.
pub(super) fn nd_bubble_bytes(src: Ipv6Addr, dst: Ipv6Addr, discovery: DiscoveryType) -> Vec<u8> {
    let mut b = bubble_bytes(src, dst, None);
    let o = NdOption { discovery };
    let start = b.len();
    b.resize(start + o.buffer_len(), 0);
    let len = b.get_mut(start..).and_then(|t| o.emit(t).ok()).unwrap_or(0);
    b.truncate(start + len);
    b
}

/// The DiscoveryType of the first well-formed ND Option trailer.
fn nd_option(trailers: &[u8]) -> Option<DiscoveryType> {
    Trailers::new(trailers)
        .filter(|t| t.ty == TYPE_ND_OPTION)
        .find_map(|t| NdOption::parse(&t).ok())
        .map(|o| o.discovery)
}

impl Client {
    /// Hook of the send path, for a peer whose probe exchange is just starting: a trusted
    /// Teredo peer gone quiet gets the first solicitation. `false` (nothing done) when the
    /// extension is off or the peer is not such a peer.
    pub(super) fn start_solicitation(&mut self, now: Instant, addr: Ipv6Addr) -> bool {
        if !self.cfg.server_load_reduction || self.fresh_local(&addr, now).is_some() {
            return false;
        }
        let Some(p) = self.peers.get_mut(&addr) else {
            return false;
        };
        if !p.teredo || !p.trusted || p.mapping.is_none() {
            return false;
        }
        p.solicitations = 1;
        self.send_solicitation(now, addr);
        self.set_deadline(addr, after(now, SOLICITATION_INTERVAL));
        true
    }

    /// The retransmission timer of a solicitation (§5.7.2); `false` when the peer is not
    /// soliciting (the ordinary probe timer applies).
    pub(super) fn solicitation_timer(&mut self, now: Instant, addr: Ipv6Addr) -> bool {
        let Some(p) = self.peers.get_mut(&addr) else {
            return false;
        };
        if p.solicitations == 0 {
            return false;
        }
        p.solicitations = p.solicitations.saturating_add(1);
        let count = p.solicitations;
        self.send_solicitation(now, addr);
        if count < MAX_SOLICITATIONS {
            self.set_deadline(addr, after(now, SOLICITATION_INTERVAL));
            return true;
        }
        // "as if no communication between the Teredo client and the Teredo peer had been
        // established": RFC 4380's exchange, its indirect bubble first.
        if let Some(p) = self.peers.get_mut(&addr) {
            p.solicitations = 0;
            p.trusted = false;
            p.attempts = 0;
        }
        self.counters.solicitation_fallbacks += 1;
        match self.gate(&addr, now) {
            Gate::Now => self.send_probe(now, addr),
            Gate::At(t) => self.set_deadline(addr, Some(t)),
            Gate::Exhausted => self.give_up(now, addr),
        }
        true
    }

    fn send_solicitation(&mut self, now: Instant, addr: Ipv6Addr) {
        let Some(own) = self.address else {
            return;
        };
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(m) = p.mapping else {
            return;
        };
        p.last_tx = Some(now);
        let symmetric = p.symmetric;
        let to = self.send_target(&addr, symmetric, m);
        let bytes = nd_bubble_bytes(own, addr, DiscoveryType::Solicitation);
        match self.push_output(to, Kind::Bubble, bytes) {
            Ok(()) => self.counters.solicitations_sent += 1,
            Err(reason) => self.counters.count_drop(reason, 1),
        }
    }

    /// Hook of the receive path, after a direct bubble from `from` was accepted (§5.7.4.2):
    /// a solicitation is answered with an advertisement; both are counted.
    pub(super) fn nd_option_received(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        pkt: &TeredoPacket<'_>,
    ) {
        if !self.cfg.server_load_reduction {
            return;
        }
        let Some(own) = self.address else {
            return;
        };
        match nd_option(pkt.trailers) {
            None => {}
            Some(DiscoveryType::Advertisement) => self.counters.advertisements_received += 1,
            Some(DiscoveryType::Solicitation) => {
                self.counters.solicitations_received += 1;
                let src = pkt.src();
                let symmetric = self.peers.get(&src).is_some_and(|p| p.symmetric);
                let to = self.send_target(&src, symmetric, from);
                if !self.take_reply_token(now) {
                    self.counters.reply_bubbles_suppressed += 1;
                    return;
                }
                let bytes = nd_bubble_bytes(own, src, DiscoveryType::Advertisement);
                match self.push_output(to, Kind::Bubble, bytes) {
                    Ok(()) => self.counters.advertisements_sent += 1,
                    Err(reason) => self.counters.count_drop(reason, 1),
                }
            }
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn nd_bubbles_carry_the_option() {
        let (src, dst): (Ipv6Addr, Ipv6Addr) = (
            "2001:0:c633:6401:0:f227:3fff:fdfe".parse().unwrap(),
            "2001:0:c633:6401:0:f227:3fff:fdfd".parse().unwrap(),
        );
        let b = nd_bubble_bytes(src, dst, DiscoveryType::Solicitation);
        let p = TeredoPacket::parse(&b).unwrap();
        assert!(p.is_bubble());
        assert_eq!(p.trailers, &[4, 4, 0, 0, 0, 0]);
        assert_eq!(nd_option(p.trailers), Some(DiscoveryType::Solicitation));
        let b = nd_bubble_bytes(src, dst, DiscoveryType::Advertisement);
        let p = TeredoPacket::parse(&b).unwrap();
        assert_eq!(p.trailers, &[4, 4, 1, 0, 0, 0]);
        assert_eq!(
            nd_option(&[4, 4, 7, 0, 0, 0]),
            None,
            "unknown DiscoveryType"
        );
        assert_eq!(nd_option(&[]), None);
    }
}
