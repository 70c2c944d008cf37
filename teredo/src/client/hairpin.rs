//! RFC 6081 §5.6 Hairpinning extension ([`ClientConfig::hairpinning`]): two clients behind
//! one NAT that does not hairpin reach each other at their local addresses.
//!
//! * Sending (§5.6.4.1): the indirect bubble to a peer we have not reached yet (not
//!   trusted) carries an Alternate Address trailer listing our socket address and, behind
//!   nested NATs, the UPnP mapping when it differs from the mapping the server saw (§5.6.3
//!   zeroes it otherwise), plus a Nonce trailer (drawn even without symmetric NAT support).
//! * Receiving an indirect bubble (§5.6.4.2): a malformed trailer drops the bubble
//!   (`bad_alternate_address`); a well-formed list (at most [`MAX_PEER_ALTERNATES`]
//!   entries, the wire's bound) is stored in the peer entry and every plausible entry gets a
//!   direct bubble echoing the bubble's nonce. Implausible entries (loopback, 0.0.0.0/8,
//!   240.0.0.0/4, our own socket) are never sent to (`implausible_alternate`, counted per
//!   entry); each bubble takes a token of the answer budget ([`REPLY_BUBBLE_RATE`]), so a
//!   relayed bubble cannot make the client flood a list of victims.
//! * Receiving a direct bubble (§5.6.4.3): from an address that is not the peer's embedded
//!   mapping it is accepted only when its nonce is one we sent the peer; with this
//!   extension the address may be private (the peer's LAN address), not only a global
//!   mapping as under symmetric NAT support. The peer is then trusted there and data goes
//!   to that address.
//!
//! The receiver trusts the sender only once the sender echoed the receiver's own nonce (the
//! RFC's "direct IPv6 connectivity tests ... before it can accept packets from an IPv4
//! address and port not embedded"): with symmetric NAT support the receiver's own indirect
//! bubble gives it that echo, so the first packet the sender flushes may arrive before the
//! receiver trusts it and be dropped (`spoofed_source`).

use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::Instant;

use crate::addr::TeredoAddr;
use crate::io::Kind;
use crate::peer;
use crate::wire::trailer::{AlternateAddress, Trailers, MAX_ALTERNATES, TYPE_ALTERNATE_ADDRESS};
use crate::DropReason;

use super::bubbles::{bubble_bytes, trailer_nonce};
use super::*;

/// Alternate addresses kept per peer: the wire's bound (Length ≤ 26, four entries), which
/// is also the RFC's amplification limit.
pub const MAX_PEER_ALTERNATES: usize = MAX_ALTERNATES;

/// Whether a bubble may go to `a` (an alternate of a peer, or the source of a bubble
/// accepted by its nonce): a port, and not 0.0.0.0/8, loopback, multicast, 240.0.0.0/4
/// (reserved and broadcast), nor `own` (our own socket).
pub(super) fn plausible(a: SocketAddrV4, own: SocketAddrV4) -> bool {
    let first = a.ip().octets()[0];
    a.port() != 0 && first != 0 && first != 127 && first < 224 && a != own
}

impl Client {
    /// The alternate addresses stored for `peer` (the last well-formed list it advertised).
    pub fn peer_alternates(&self, peer: &Ipv6Addr) -> &[SocketAddrV4] {
        self.peers
            .get(peer)
            .map_or(&[][..], |p| p.alternates.as_slice())
    }

    /// The Alternate Address trailer for an indirect bubble to `addr` (§5.6.4.1): only with
    /// the extension on, to a Teredo peer not trusted yet, and when we have an address the
    /// server did not see.
    pub(super) fn own_alternates(&self, addr: &Ipv6Addr) -> Option<AlternateAddress> {
        if !self.cfg.hairpinning {
            return None;
        }
        let p = self.peers.get(addr)?;
        let mapping = self.mapping?;
        if !p.teredo || p.trusted {
            return None;
        }
        let mut list = Vec::with_capacity(2);
        if self.local != mapping {
            list.push(self.local);
        }
        // §5.6.3: the UPnP mapping counts only when it is not the server's (nested NATs).
        if let (true, false, Some(u)) = (self.upnp.enabled, self.upnp.single_nat, self.upnp.mapped)
        {
            if u != mapping && !list.contains(&u) {
                list.push(u);
            }
        }
        AlternateAddress::new(&list)
    }

    /// The Alternate Address trailer of a relayed bubble (§5.6.4.2): `Ok(None)` without one
    /// or with the extension off; `Err(BadAlternateAddress)` when it is malformed (cut short
    /// included), which drops the bubble.
    pub(super) fn relayed_alternates(
        &self,
        trailers: &[u8],
    ) -> Result<Option<AlternateAddress>, DropReason> {
        if !self.cfg.hairpinning {
            return Ok(None);
        }
        let mut consumed = 0;
        for t in Trailers::new(trailers) {
            consumed += 2 + t.value.len();
            if t.ty == TYPE_ALTERNATE_ADDRESS {
                return AlternateAddress::parse(&t)
                    .map(Some)
                    .map_err(|_| DropReason::BadAlternateAddress);
            }
        }
        // The iterator stops at a trailer longer than what is left.
        if trailers.get(consumed) == Some(&TYPE_ALTERNATE_ADDRESS) {
            return Err(DropReason::BadAlternateAddress);
        }
        Ok(None)
    }

    /// §5.6.4.2 for a relayed bubble from `src` carrying `alt`: store the list and send each
    /// plausible entry a direct bubble echoing `nonce`, except `answered` (where the ordinary
    /// answer goes) and the embedded mapping. Without a nonce no bubble is sent: the peer
    /// could not accept it from an address its own address does not embed.
    pub(super) fn bubble_alternates(
        &mut self,
        now: Instant,
        src: Ipv6Addr,
        alt: &AlternateAddress,
        nonce: Option<[u8; 4]>,
        answered: SocketAddrV4,
    ) {
        self.counters.hairpin_trailers_received += 1;
        let (Some(own), Some(t)) = (self.address, TeredoAddr::from_ipv6(&src)) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&src) else {
            return;
        };
        p.alternates = alt
            .addrs()
            .iter()
            .copied()
            .take(MAX_PEER_ALTERNATES)
            .collect();
        let targets = p.alternates.clone();
        for a in targets {
            if !plausible(a, self.local) {
                self.counters
                    .count_drop(DropReason::ImplausibleAlternate, 1);
                continue;
            }
            if a == answered || a == t.mapped || nonce.is_none() {
                continue;
            }
            if !self.take_reply_token(now) {
                self.counters.reply_bubbles_suppressed += 1;
                continue;
            }
            match self.push_output(a, Kind::Bubble, bubble_bytes(own, src, nonce)) {
                Ok(()) => self.counters.hairpin_bubbles_sent += 1,
                Err(reason) => self.counters.count_drop(reason, 1),
            }
        }
    }

    /// §5.2.4.4 and §5.6.4.3: whether a direct bubble from `from`, which is not the
    /// embedded mapping of `src`, proves the peer by echoing a nonce we sent it. Symmetric
    /// NAT support accepts a global mapping; the Hairpinning extension any plausible address
    /// (counted in `hairpin_peers_trusted` when only it accepts).
    pub(super) fn nonce_accepts(
        &mut self,
        src: &Ipv6Addr,
        from: SocketAddrV4,
        trailers: &[u8],
    ) -> bool {
        let symmetric = self.cfg.symmetric_support && peer::is_usable_mapping(from);
        let hairpin = self.cfg.hairpinning && plausible(from, self.local);
        if !symmetric && !hairpin {
            return false;
        }
        let echoed = trailer_nonce(trailers).is_some_and(|n| {
            self.peers
                .get(src)
                .is_some_and(|p| p.nonce_sent.contains(&Some(n)))
        });
        if echoed && !symmetric {
            self.counters.hairpin_peers_trusted += 1;
        }
        echoed
    }
}

#[cfg(test)]
mod unit {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::client::bubbles::with_alternates;
    use crate::wire::TeredoPacket;

    fn ep(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn plausible_alternates() {
        let own = ep("10.0.0.2:5000");
        assert!(plausible(ep("10.0.0.3:5000"), own));
        assert!(plausible(ep("203.0.113.7:40000"), own));
        assert!(plausible(ep("10.0.0.2:5001"), own));
        for bad in [
            "10.0.0.3:0",
            "0.0.0.0:5000",
            "0.1.2.3:5000",
            "127.0.0.1:5000",
            "224.0.0.253:3544",
            "239.1.1.1:1",
            "240.0.0.1:1",
            "255.255.255.255:1",
            "10.0.0.2:5000",
        ] {
            assert!(!plausible(ep(bad), own), "{bad}");
        }
    }

    #[test]
    fn alternates_follow_the_nonce() {
        let (src, dst): (Ipv6Addr, Ipv6Addr) = (
            "2001:0:c633:6401:0:f227:3fff:fdfe".parse().unwrap(),
            "2001:0:c633:6401:0:f227:3fff:fdfd".parse().unwrap(),
        );
        let alt =
            AlternateAddress::new(&[SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5000)]).unwrap();
        let b = with_alternates(bubble_bytes(src, dst, Some([1, 2, 3, 4])), Some(&alt));
        let p = TeredoPacket::parse(&b).unwrap();
        assert!(p.is_bubble());
        assert_eq!(
            p.trailers,
            &[1, 4, 1, 2, 3, 4, 3, 8, 0, 0, 10, 0, 0, 2, 0x13, 0x88]
        );
        let plain = bubble_bytes(src, dst, None);
        assert_eq!(with_alternates(plain.clone(), None), plain);
    }
}
