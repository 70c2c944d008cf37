//! Teredo client → native (RFC 4380 §5.4.2): authentication and trust.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Relay {
    // ---- receive: Teredo client → native (RFC 4380 §5.4.2) -------------------------------

    /// Handles a datagram received on the relay's Teredo port (`local`: the relay has one,
    /// [`Local::Primary`]) from `from`. A packet for the native side is not copied: the
    /// caller writes it from `data` ([`Handled::Forwarded`]'s `in_place`, trailers
    /// excluded). Queued packets released by the new trust wait in [`Self::poll_output`] as
    /// UDP data.
    pub fn handle_udp(
        &mut self,
        now: Instant,
        local: Local,
        from: SocketAddrV4,
        data: &[u8],
    ) -> Result<Handled, DropReason> {
        let _ = local;
        let now = self.tick(now);
        let r = self.receive_inner(now, from, data);
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
    ) -> Result<Handled, DropReason> {
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
        let (via, i) = match self.authenticate(&pkt, &t, src, dst, from, bubble) {
            Err(DropReason::UnknownPeer) if self.cfg.unknown_peers == UnknownPeerPolicy::Accept => {
                // The same rules as a peer created for a native packet: never a mapping or
                // server we may not send to.
                peer::check_teredo_destination(&t)?;
                let i = self.insert_peer(now, self.hash(&src), src, from)?;
                self.counters.unknown_peers_accepted += 1;
                (Acceptance::EmbeddedMapping, i)
            }
            r => r?,
        };
        let flushed = self.accept(now, i, from, via);
        if bubble {
            self.counters.bubbles_received += 1;
            return Ok(Handled::Bubble { via, flushed });
        }
        if is_teredo(&dst) {
            return Err(DropReason::TeredoDestination);
        }
        // Link-local destinations are only for bubbles (answers to our link-local source).
        if is_ipv6_non_global(&dst) {
            return Err(DropReason::NonGlobalDestination);
        }
        self.counters.forwarded += 1;
        let output = Output::Ipv6 {
            len: pkt.ipv6.len(),
            kind: Kind::Data,
        };
        Ok(Handled::Forwarded {
            via,
            flushed,
            in_place: InPlace {
                offset: pkt.ipv6_offset,
                output,
            },
        })
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
        if !peer::is_usable_mapping(from) {
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
        let (now32, base) = (self.rel(now), self.base);
        let Some(p) = self.peers.get_mut(i as usize) else {
            return 0;
        };
        let was_trusted = p.trusted();
        let prev_rx = base.saturating_add(u64::from(p.last_rx));
        let moved = p.mapping != from;
        if !was_trusted {
            p.flags |= F_TRUSTED;
            self.trusted += 1;
        }
        if moved {
            tracing::debug!(peer = %p.addr, old = %p.mapping, new = %from, via = via.as_str(), "relay peer mapping");
        }
        p.mapping = from;
        p.last_rx = now32;
        p.last_used = now32;
        p.phase = PeerPhase::Idle;
        let s = std::mem::replace(&mut p.xchg, NONE);
        let peer = p.addr;
        if matches!(via, Acceptance::Nonce | Acceptance::LinkLocal) {
            self.counters.lenient_accepts += 1;
        }
        let exchange = self
            .exchanges
            .get(s as usize)
            .map(|x| Duration::from_millis(now.saturating_sub(self.abs(x.started))));
        if !was_trusted || moved || exchange.is_some() {
            self.emit(Event::PeerTrusted {
                peer,
                mapping: from,
                via,
                exchange,
            });
        } else if self.cfg.peer_refreshed_events
            && prev_rx / REFRESH_EVENT_PERIOD_MS != now / REFRESH_EVENT_PERIOD_MS
        {
            self.emit(Event::PeerRefreshed {
                peer,
                mapping: from,
            });
        }
        if s == NONE {
            return 0;
        }
        let queue = self.close_exchange(s);
        self.flush(queue, from)
    }
}
