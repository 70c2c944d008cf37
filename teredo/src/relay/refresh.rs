//! Observations from outside the core: a kernel fast path that forwards packets of trusted
//! peers by itself (the relay's XDP program) tells the core what it saw, so that the core's
//! validity and expiry decisions stay those it would have made had it seen the packets.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A trusted peer as [`Relay::trusted_peers`] lists it: what a fast path needs to forward
/// its packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedPeer {
    /// Its Teredo address.
    pub addr: Ipv6Addr,
    /// The mapping its packets go to (and must come from).
    pub mapping: SocketAddrV4,
    /// Last accepted reception (validity runs from here).
    pub last_rx: Instant,
    /// Last use in either direction (expiry runs from here).
    pub last_used: Instant,
}

/// What [`Relay::refresh_peer`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refresh {
    /// At least one time moved forward.
    Moved,
    /// Nothing newer than what the core knew.
    Unchanged,
    /// The observation ended the peer's bubble exchange (as a packet accepted from it
    /// would have): its queue was released to [`Relay::poll_output`].
    Answered,
    /// No such peer.
    Unknown,
    /// The peer is not trusted (any more): the observation is stale.
    NotTrusted,
    /// The peer's recorded mapping is another one: the observation is stale.
    MappingChanged,
}

impl Relay {
    /// Milliseconds since the epoch of `t` (0 before it).
    fn ticks_of(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(NEVER - 1)
            .min(NEVER - 1)
    }

    /// The instant of a stored time offset.
    fn instant_of(&self, r: u32) -> Instant {
        self.epoch + Duration::from_millis(self.abs(r))
    }

    /// Every trusted peer with its mapping and times (for a fast path's full resync).
    pub fn trusted_peers(&self) -> impl Iterator<Item = TrustedPeer> + '_ {
        self.peers
            .iter()
            .filter(|p| p.live() && p.trusted())
            .map(|p| TrustedPeer {
                addr: p.addr,
                mapping: p.mapping,
                last_rx: self.instant_of(p.last_rx),
                last_used: self.instant_of(p.last_used),
            })
    }

    /// Tells the core that a fast path forwarded packets of `peer`, trusted with `mapping`:
    /// from it at `last_rx` (a reception the core would have accepted) and in either
    /// direction at `last_used`.
    ///
    /// Times only move forward, and never past `now`. Nothing happens unless the peer is
    /// trusted with exactly `mapping`: the fast path's state may lag the core's (the peer
    /// expired, failed or moved meanwhile), and a stale observation must not revive it.
    /// A trusted peer in a bubble exchange (its validity ran out) that the fast path heard
    /// from after the exchange started is treated as the core treats a packet from it: the
    /// exchange ends and its queue is released ([`Refresh::Answered`], with a
    /// [`Event::PeerTrusted`]). An earlier reception cannot revalidate it (only `last_used`
    /// moves), so a valid peer never holds a queue.
    pub fn refresh_peer(
        &mut self,
        now: Instant,
        peer: &Ipv6Addr,
        mapping: SocketAddrV4,
        last_rx: Instant,
        last_used: Instant,
    ) -> Refresh {
        let now = self.tick(now);
        let Some(i) = self.find(peer) else {
            return Refresh::Unknown;
        };
        let Some(p) = self.peers.get(i as usize).copied() else {
            return Refresh::Unknown;
        };
        if !p.trusted() {
            return Refresh::NotTrusted;
        }
        if p.mapping != mapping {
            return Refresh::MappingChanged;
        }
        let rx = self.rel(self.ticks_of(last_rx).min(now));
        let used = self.rel(self.ticks_of(last_used).min(now)).max(rx);
        let mut result = Refresh::Unchanged;
        let mut rx_ok = true;
        if let Some(x) = self.exchanges.get(p.xchg as usize) {
            // Trusted and in an exchange: bubbling (a give-up removes the trust).
            rx_ok = rx > p.last_rx && rx >= x.started;
            if rx_ok {
                // As a datagram accepted at `rx`: ends the exchange, releases the queue.
                self.accept(self.abs(rx), i, mapping, Acceptance::RecordedMapping);
                result = Refresh::Answered;
            }
        }
        let Some(p) = self.peers.get_mut(i as usize) else {
            return result;
        };
        if rx_ok && rx > p.last_rx {
            p.last_rx = rx;
            result = Refresh::Moved;
        }
        if used > p.last_used {
            p.last_used = used;
            if result == Refresh::Unchanged {
                result = Refresh::Moved;
            }
        }
        result
    }
}
