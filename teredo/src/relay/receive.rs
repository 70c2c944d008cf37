//! Teredo client → native (RFC 4380 §5.4.2): authentication and trust.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Relay {
    // ---- receive: Teredo client → native (RFC 4380 §5.4.2) -------------------------------

    /// Handles a datagram received on the relay's Teredo port from `from`. A packet for the
    /// native side waits in [`Self::poll_output`] as [`Output::Ipv6`] (trailers stripped);
    /// queued packets released by the new trust wait there as [`Output::Udp`].
    pub fn handle_udp(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        data: &[u8],
    ) -> Result<Handled, DropReason> {
        self.receive(now, from, data, false).map(|(h, _)| h)
    }

    /// As [`Self::handle_udp`], but a packet for the native side is not copied: the caller
    /// writes `data[offset..offset + len]` ([`InPlace::Ipv6`]).
    pub fn handle_udp_in_place(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        data: &[u8],
    ) -> Result<InPlace, DropReason> {
        self.receive(now, from, data, true)
            .map(|(h, range)| match (h, range) {
                (Handled::Forwarded { via, flushed }, Some((offset, len))) => InPlace::Ipv6 {
                    offset,
                    len,
                    via,
                    flushed,
                },
                (h, _) => InPlace::Done(h),
            })
    }

    pub(super) fn receive(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        data: &[u8],
        in_place: bool,
    ) -> Result<(Handled, Option<(usize, usize)>), DropReason> {
        let now = self.tick(now);
        let r = self.receive_inner(now, from, data, in_place);
        if let Err(reason) = r {
            self.count_drop(reason);
            tracing::debug!(%from, reason = reason.as_str(), len = data.len(), "relay receive drop");
        }
        r
    }

    pub(super) fn receive_inner(
        &mut self,
        now: u64,
        from: SocketAddrV4,
        data: &[u8],
        in_place: bool,
    ) -> Result<(Handled, Option<(usize, usize)>), DropReason> {
        if data.len() > MAX_UDP_PAYLOAD {
            return Err(DropReason::Oversized);
        }
        // Auth headers and origin indications are tolerated and ignored.
        let pkt = TeredoPacket::parse(data)?;
        let src = pkt.src();
        let Some(t) = TeredoAddr::from_ipv6(&src) else {
            return Err(DropReason::NotTeredoSource);
        };
        let bubble = pkt.is_bubble();
        let dst = pkt.dst();
        let (via, i) = self.authenticate(&pkt, &t, src, dst, from, bubble)?;
        let flushed = self.accept(now, i, from, via);
        if bubble {
            self.counters.bubbles_received += 1;
            return Ok((Handled::Bubble { via, flushed }, None));
        }
        if is_teredo(&dst) {
            return Err(DropReason::TeredoDestination);
        }
        // Link-local destinations are only for bubbles (answers to our link-local source).
        if is_ipv6_non_global(&dst) {
            return Err(DropReason::NonGlobalDestination);
        }
        let handled = Handled::Forwarded { via, flushed };
        if in_place {
            self.counters.forwarded += 1;
            return Ok((handled, Some((pkt.ipv6_offset, pkt.ipv6.len()))));
        }
        let len = pkt.ipv6.len();
        if !self
            .out
            .push_copy(pkt.ipv6, |off| Pending::Ipv6 { off, len })
        {
            return Err(DropReason::OutputQueueFull);
        }
        self.counters.forwarded += 1;
        Ok((handled, None))
    }

    /// RFC 4380 §5.4.2 source check, plus the [`TrustPolicy::Lenient`] exceptions. Returns
    /// the peer's slot too.
    pub(super) fn authenticate(
        &self,
        pkt: &TeredoPacket<'_>,
        t: &TeredoAddr,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        from: SocketAddrV4,
        bubble: bool,
    ) -> Result<(Acceptance, u32), DropReason> {
        let found = self.find(&src);
        if t.mapped == from {
            return match found {
                Some(i) => Ok((Acceptance::EmbeddedMapping, i)),
                None => Err(DropReason::UnknownPeer),
            };
        }
        let Some((i, p)) = found.and_then(|i| Some((i, self.peers.get(i as usize)?))) else {
            return Err(DropReason::SpoofedSource);
        };
        if p.trusted() && p.mapping == from {
            return Ok((Acceptance::RecordedMapping, i));
        }
        // Lenient: only a direct bubble (no origin indication: it did not come through a
        // server) answering our indirect bubble.
        if self.cfg.trust != TrustPolicy::Lenient || !bubble || pkt.origin.is_some() {
            return Err(DropReason::SpoofedSource);
        }
        // The nonces of the current exchange (none once it is answered).
        let nonces = self.exchanges.get(p.xchg as usize).map_or([None; 2], |x| {
            [
                (x.nonces & X_NONCE != 0).then_some(x.nonce),
                (x.nonces & X_PREV_NONCE != 0).then_some(x.prev_nonce),
            ]
        });
        let outstanding = |n: &[u8; 4]| nonces.contains(&Some(*n));
        let proof = if Trailers::new(pkt.trailers)
            .filter(|tr| tr.ty == TYPE_NONCE)
            .filter_map(|tr| tr.nonce())
            .any(|n| outstanding(&n))
        {
            Some(Acceptance::Nonce)
        } else if self.cfg.bubble_source == BubbleSource::PerPeer
            && is_link_local(&dst)
            && nonces
                .iter()
                .flatten()
                .any(|n| dst == self.per_peer_link_local(&src, *n))
        {
            Some(Acceptance::LinkLocal)
        } else {
            None
        };
        let Some(via) = proof else {
            return Err(DropReason::SpoofedSource);
        };
        // The mapping we are about to record must be one we may send to.
        if !is_ipv4_global_unicast(*from.ip()) || from.port() == 0 {
            return Err(DropReason::NonGlobalSource);
        }
        Ok((via, i))
    }

    /// Marks peer `i` trusted with mapping `from`, ends its exchange and releases its queue.
    pub(super) fn accept(
        &mut self,
        now: u64,
        i: u32,
        from: SocketAddrV4,
        via: Acceptance,
    ) -> usize {
        let now32 = self.rel(now);
        let Some(p) = self.peers.get_mut(i as usize) else {
            return 0;
        };
        if !p.trusted() {
            p.flags |= F_TRUSTED;
            self.trusted += 1;
        }
        if p.mapping != from {
            tracing::debug!(peer = %p.addr, old = %p.mapping, new = %from, via = via.as_str(), "relay peer mapping");
        }
        p.mapping = from;
        p.last_rx = now32;
        p.last_used = now32;
        p.phase = PeerPhase::Idle;
        let s = std::mem::replace(&mut p.xchg, NONE);
        if matches!(via, Acceptance::Nonce | Acceptance::LinkLocal) {
            self.counters.lenient_accepts += 1;
        }
        if s == NONE {
            return 0;
        }
        let queue = self.close_exchange(s);
        self.flush(queue, from)
    }
}
