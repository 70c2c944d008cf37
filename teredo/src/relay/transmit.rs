//! Native IPv6 → Teredo client (RFC 4380 §5.4.1): the fast path, queues, bubbles, ICMPv6 errors.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Outcome of starting a bubble exchange.
pub(super) enum Start {
    Sent,
    Deferred,
    GaveUp,
}

impl Relay {
    // ---- transmit: native IPv6 → Teredo client (RFC 4380 §5.4.1) ------------------------

    /// Handles a native IPv6 packet routed to the relay (destination in 2001::/32). On
    /// `Ok(Encapsulated)` the caller sends the packet itself when `in_place` is `Some` (zero
    /// copy), else the UDP datagram waits in [`Self::poll_output`]; on `Ok(Queued)` the
    /// packet is held and a bubble may be waiting. On `Err` the packet was dropped (and
    /// counted); an ICMPv6 error or a bubble may still be waiting.
    pub fn handle_ipv6(&mut self, now: Instant, ipv6: &[u8]) -> Result<Handled, DropReason> {
        let now = self.tick(now);
        let r = self.transmit_inner(now, ipv6);
        if let Err(reason) = r {
            self.count_drop(reason);
            tracing::debug!(
                reason = reason.as_str(),
                len = ipv6.len(),
                "relay transmit drop"
            );
        }
        r
    }

    pub(super) fn transmit_inner(&mut self, now: u64, ipv6: &[u8]) -> Result<Handled, DropReason> {
        if ipv6.len() < IPV6_HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        if ipv6[0] >> 4 != 6 {
            return Err(DropReason::BadIpVersion);
        }
        check_ipv6_exact_len(ipv6)?;
        if ipv6.len() > MAX_UDP_PAYLOAD {
            return Err(DropReason::TooLarge);
        }
        let (src, dst) = (ipv6_src(ipv6), ipv6_dst(ipv6));
        if dst.is_multicast() {
            return Err(DropReason::NonGlobalDestination);
        }
        let Some(t) = TeredoAddr::from_ipv6(&dst) else {
            return Err(DropReason::NotTeredoDestination);
        };
        // RFC 4380 §5.4.1 / §7.4.3: never send to a non-global IPv4 (or port 0).
        peer::check_teredo_destination(&t)?;
        // A router must not forward packets from unspecified, loopback, link-local or
        // multicast sources; ICMPv6 errors could not go back to them either.
        if is_ipv6_non_global(&src) {
            return Err(DropReason::NonGlobalNativeSource);
        }

        // Fast path: trusted and valid.
        let hash = self.hash(&dst);
        let found = self.find_hashed(hash, &dst);
        if let Some(i) = found {
            let (now32, base, validity) = (self.rel(now), self.base, self.t.validity);
            if let Some(p) = self.peers.get_mut(i as usize) {
                let last_rx = base.saturating_add(u64::from(p.last_rx));
                if peer::is_valid(now, p.trusted(), Some(last_rx), validity) {
                    p.last_used = now32;
                    let to = p.mapping;
                    if self.out.items.is_empty() {
                        self.counters.encapsulated += 1;
                        let output = Output::Udp {
                            local: Local::Primary,
                            to,
                            len: ipv6.len(),
                            kind: Kind::Data,
                        };
                        let in_place = Some(InPlace { offset: 0, output });
                        return Ok(Handled::Encapsulated { to, in_place });
                    }
                    if !self.out.push_copy(ipv6, |off| Pending::Udp {
                        to,
                        off,
                        len: ipv6.len(),
                    }) {
                        return Err(DropReason::OutputQueueFull);
                    }
                    self.counters.encapsulated += 1;
                    return Ok(Handled::Encapsulated { to, in_place: None });
                }
            }
        }
        self.hold(now, hash, found, dst, t, ipv6)
    }

    /// Queues a packet for a peer that is not trusted and valid, starting a bubble exchange.
    pub(super) fn hold(
        &mut self,
        now: u64,
        hash: u32,
        found: Option<u32>,
        addr: Ipv6Addr,
        t: TeredoAddr,
        ipv6: &[u8],
    ) -> Result<Handled, DropReason> {
        let i = match found {
            Some(i) => i,
            None => self.insert_peer(now, hash, addr, t.mapped)?,
        };
        let (now32, window, base) = (self.rel(now), self.t.window, self.base);
        let Some(p) = self.peers.get_mut(i as usize) else {
            return Err(DropReason::PeerTableFull);
        };
        p.last_used = now32;
        if p.phase == PeerPhase::Failed {
            let x = self.exchanges.get_mut(p.xchg as usize);
            let over = x.as_ref().is_none_or(|x| {
                peer::window_over(now, base.saturating_add(u64::from(x.window_start)), window)
            });
            if over {
                p.phase = PeerPhase::Idle;
                if let Some(x) = x {
                    x.bubbles = 0;
                }
            } else {
                self.icmp_unreachable(now, ipv6);
                return Err(DropReason::PeerUnreachable);
            }
        }
        // Idle peers have no queue (it is flushed on trust and discarded on give-up), so
        // starting the exchange first changes nothing but the order of two outputs.
        let mut bubble_sent = false;
        if p.phase == PeerPhase::Idle {
            match self.start_exchange(now, i) {
                Start::Sent => bubble_sent = true,
                Start::Deferred => {}
                Start::GaveUp => {
                    self.icmp_unreachable(now, ipv6);
                    return Err(DropReason::PeerUnreachable);
                }
            }
        }
        // A packet that does not fit is dropped, but the exchange runs anyway.
        self.enqueue(i, ipv6)?;
        Ok(Handled::Queued { bubble_sent })
    }

    pub(super) fn enqueue(&mut self, i: u32, ipv6: &[u8]) -> Result<(), DropReason> {
        let Some(p) = self.peers.get(i as usize) else {
            return Err(DropReason::PeerTableFull);
        };
        // A peer that is not trusted and valid is in an exchange (bubbling or failed).
        let Some(x) = self.exchanges.get_mut(p.xchg as usize) else {
            return Err(DropReason::QueueFull);
        };
        let (bytes, packets) = self
            .queues
            .slots
            .get(x.queue as usize)
            .map_or((0, 0), |s| (s.bytes.len(), s.packets));
        if packets >= self.cfg.queue_packets_per_peer
            || bytes.saturating_add(ipv6.len()) > self.cfg.queue_bytes_per_peer
        {
            return Err(DropReason::QueueFull);
        }
        if self.queued_bytes.saturating_add(ipv6.len()) > self.cfg.global_queue_bytes {
            return Err(DropReason::GlobalQueueFull);
        }
        if x.queue == NO_QUEUE {
            x.queue = self.queues.alloc().ok_or(DropReason::GlobalQueueFull)?;
        }
        let Some(slot) = self.queues.slots.get_mut(x.queue as usize) else {
            return Err(DropReason::GlobalQueueFull);
        };
        slot.bytes.extend_from_slice(ipv6);
        slot.packets += 1;
        self.queued_bytes += ipv6.len();
        self.queued_packets += 1;
        self.counters.queued += 1;
        Ok(())
    }

    // ---- bubbles ----------------------------------------------------------------------

    /// The pacing rules (shared with the client, [`crate::peer::pacing`]) for peer `i`.
    pub(super) fn gate(&mut self, i: u32, now: u64) -> Gate<u64> {
        let rules = Pacing {
            interval: self.t.interval,
            window: self.t.window,
            max_per_window: self.cfg.max_bubbles_per_window,
        };
        let base = self.base;
        let Some(p) = self.peers.get(i as usize) else {
            return Gate::Exhausted;
        };
        let Some(x) = self.exchanges.get_mut(p.xchg as usize) else {
            return Gate::Exhausted;
        };
        let at = |r: u32| base.saturating_add(u64::from(r));
        let last = (p.last_bubble != NEVER32).then(|| at(p.last_bubble));
        peer::gate(now, &rules, at(x.window_start), &mut x.bubbles, last)
    }

    pub(super) fn start_exchange(&mut self, now: u64, i: u32) -> Start {
        let now32 = self.rel(now);
        let s = self.open_exchange(i, now32);
        if let Some(p) = self.peers.get_mut(i as usize) {
            p.phase = PeerPhase::Bubbling;
        }
        if let Some(x) = self.exchanges.get_mut(s as usize) {
            x.started = now32;
        }
        match self.gate(i, now) {
            Gate::Now => {
                self.send_bubbles(now, i);
                Start::Sent
            }
            Gate::At(at) => {
                self.arm(i, at);
                Start::Deferred
            }
            Gate::Exhausted => {
                self.give_up(now, i);
                Start::GaveUp
            }
        }
    }

    pub(super) fn send_bubbles(&mut self, now: u64, i: u32) {
        let Some(addr) = self.peers.get(i as usize).map(|p| p.addr) else {
            return;
        };
        let nonce = self.rng.next_u32().to_be_bytes();
        let src = self.bubble_source(&addr, nonce);
        let (now32, interval) = (self.rel(now), self.t.interval);
        let Some(p) = self.peers.get_mut(i as usize) else {
            return;
        };
        let Some(x) = self.exchanges.get_mut(p.xchg as usize) else {
            return;
        };
        if x.nonces & X_NONCE != 0 {
            x.prev_nonce = x.nonce;
            x.nonces |= X_PREV_NONCE;
        }
        x.nonce = nonce;
        x.nonces |= X_NONCE;
        peer::count_bubble(now32, &mut x.window_start, &mut x.bubbles);
        p.last_bubble = now32;
        p.last_used = now32;
        let mapping = p.mapping;
        let server = TeredoAddr::from_octets_unchecked(&addr.octets()).server;
        let hop_limit = self.cfg.bubble_hop_limit;
        let indirect = Pending::Bubble {
            to: SocketAddrV4::new(server, TEREDO_PORT),
            src,
            dst: addr,
            nonce: Some(nonce),
            hop_limit,
        };
        let (rate, burst) = (self.cfg.bubble_rate, self.cfg.bubble_burst);
        if rate > 0
            && !take_token(
                &mut self.bubble_tokens,
                &mut self.bubble_last,
                rate,
                burst,
                now,
            )
        {
            // Skipped, but counted in the exchange: it still gives up on schedule.
            self.counters.bubbles_rate_limited += 1;
            self.arm(i, now.saturating_add(interval));
            return;
        }
        if self.out.push_bubble(indirect) {
            self.counters.bubbles_sent += 1;
        } else {
            self.count_drop(DropReason::OutputQueueFull);
        }
        if self.cfg.direct_bubbles {
            let direct = Pending::Bubble {
                to: mapping,
                src,
                dst: addr,
                nonce: None,
                hop_limit,
            };
            if self.out.push_bubble(direct) {
                self.counters.direct_bubbles_sent += 1;
            } else {
                self.count_drop(DropReason::OutputQueueFull);
            }
        }
        tracing::trace!(peer = %addr, %server, "relay bubble");
        self.arm(i, now.saturating_add(interval));
    }

    /// Arms the retransmission timer of peer `i`'s exchange for `at`.
    pub(super) fn arm(&mut self, i: u32, at: u64) {
        let due = self.rel(at);
        if let Some(p) = self.peers.get(i as usize) {
            self.timers.set(&mut self.exchanges, p.xchg, due);
        }
    }

    /// A bubble exchange got no answer: drop the queue, tell the sender, refuse packets to
    /// the peer until the bubble window is over.
    pub(super) fn give_up(&mut self, now: u64, i: u32) {
        let now32 = self.rel(now);
        let Some(p) = self.peers.get_mut(i as usize) else {
            return;
        };
        p.phase = PeerPhase::Failed;
        if p.trusted() {
            p.flags &= !F_TRUSTED;
            self.trusted = self.trusted.saturating_sub(1);
        }
        let (addr, s) = (p.addr, p.xchg);
        self.timers.remove(&mut self.exchanges, s);
        let Some(x) = self.exchanges.get_mut(s as usize) else {
            return;
        };
        peer::start_window(now32, &mut x.window_start, x.bubbles);
        let slot = std::mem::replace(&mut x.queue, NO_QUEUE);
        self.counters.give_ups += 1;
        tracing::debug!(peer = %addr, "relay bubble exchange gave up");
        let dropped = self
            .queues
            .slots
            .get(slot as usize)
            .map_or(0, |q| q.packets);
        self.emit(Event::PeerUnreachable {
            peer: addr,
            dropped,
        });
        self.discard_queue(now, slot, DropReason::PeerUnreachable, true);
    }

    /// Drops the packets of a queue slot, counting them under `reason`; optionally sends an
    /// ICMPv6 error to the sender of the first one.
    pub(super) fn discard_queue(&mut self, now: u64, slot: u32, reason: DropReason, icmp: bool) {
        let Some(s) = self.queues.slots.get_mut(slot as usize) else {
            return;
        };
        let bytes = std::mem::take(&mut s.bytes);
        let packets = std::mem::take(&mut s.packets);
        if icmp {
            if let Some(first) = split_packets(&bytes).next() {
                self.icmp_unreachable(now, first);
            }
        }
        self.counters.drop_n(reason, packets as u64);
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes.len());
        self.queued_packets = self.queued_packets.saturating_sub(packets);
        if let Some(s) = self.queues.slots.get_mut(slot as usize) {
            s.bytes = bytes;
        }
        self.queues.release(slot, self.cfg.global_queue_bytes);
    }

    /// Sends the packets of queue `slot` (of a newly trusted peer), in order, to `to`.
    pub(super) fn flush(&mut self, slot: u32, to: SocketAddrV4) -> usize {
        let Some(s) = self.queues.slots.get_mut(slot as usize) else {
            return 0;
        };
        let bytes = std::mem::take(&mut s.bytes);
        let packets = std::mem::take(&mut s.packets);
        let mut sent = 0;
        for pkt in split_packets(&bytes) {
            let len = pkt.len();
            if self.out.push_copy(pkt, |off| Pending::Udp { to, off, len }) {
                sent += 1;
            } else {
                self.count_drop(DropReason::OutputQueueFull);
            }
        }
        self.counters.flushed += sent as u64;
        self.counters.encapsulated += sent as u64;
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes.len());
        self.queued_packets = self.queued_packets.saturating_sub(packets);
        if let Some(s) = self.queues.slots.get_mut(slot as usize) {
            s.bytes = bytes;
        }
        self.queues.release(slot, self.cfg.global_queue_bytes);
        sent
    }
    // ---- ICMPv6 errors ------------------------------------------------------------------

    pub(super) fn icmp_take(&mut self, now: u64) -> bool {
        let (rate, burst) = (self.cfg.icmp_rate, self.cfg.icmp_burst);
        take_token(&mut self.icmp_tokens, &mut self.icmp_last, rate, burst, now)
    }

    /// Queues an ICMPv6 Destination Unreachable (address unreachable) about `invoking` for
    /// its sender, subject to RFC 4443 §2.4 and the rate limit.
    pub(super) fn icmp_unreachable(&mut self, now: u64, invoking: &[u8]) {
        let Some(src) = self.cfg.icmp_source else {
            return;
        };
        if invoking.len() < IPV6_HEADER_LEN {
            return;
        }
        let dst = ipv6_src(invoking);
        if is_ipv6_non_global(&dst) {
            return;
        }
        // Never an error about an error.
        if invoking[6] == NEXT_HEADER_ICMPV6
            && invoking.get(IPV6_HEADER_LEN).is_some_and(|t| *t < 128)
        {
            return;
        }
        let quote = invoking.len().min(ICMP_ERROR_MAX_LEN - IPV6_HEADER_LEN - 8);
        let total = IPV6_HEADER_LEN + 8 + quote;
        if !self.out.has_room(total) {
            self.count_drop(DropReason::OutputQueueFull);
            return;
        }
        if !self.icmp_take(now) {
            self.counters.icmp_errors_rate_limited += 1;
            return;
        }
        let quoted = &invoking[..quote];
        let ok = self.out.push_data(
            total,
            |b| {
                if emit_ipv6_header(b, src, dst, NEXT_HEADER_ICMPV6, ICMP_HOP_LIMIT, 8 + quote)
                    .is_ok()
                {
                    b[IPV6_HEADER_LEN] = ICMPV6_DEST_UNREACHABLE;
                    b[IPV6_HEADER_LEN + 1] = ICMPV6_ADDRESS_UNREACHABLE;
                    b[IPV6_HEADER_LEN + 2..IPV6_HEADER_LEN + 8].fill(0);
                    b[IPV6_HEADER_LEN + 8..].copy_from_slice(quoted);
                    finish_icmpv6(b);
                }
            },
            |off| Pending::Ipv6 { off, len: total },
        );
        if ok {
            self.counters.icmp_errors_sent += 1;
        }
    }
}
