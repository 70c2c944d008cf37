//! Timers: retransmissions, give-ups, expiry and eviction.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Relay {
    // ---- time ---------------------------------------------------------------------------

    /// When [`Self::handle_timeout`] wants to be called: the next bubble retransmission or
    /// give-up, or the next expiry check. May be in the past (call it now).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|(due, _)| self.abs(due));
        let expiry = self
            .lru
            .iter()
            .filter_map(|q| {
                q.front()
                    .map(|(stamp, _)| self.abs(*stamp).saturating_add(self.t.idle))
            })
            .min();
        let at = match (timer, expiry) {
            (Some(a), Some(b)) => a.min(b),
            (a, None) => a?,
            (None, b) => b?,
        };
        self.epoch.checked_add(Duration::from_millis(at))
    }

    /// Runs due timers: bubble retransmissions, give-ups (ICMPv6 errors), peer expiry. Stops
    /// early while the output queue is full; drain it and call again.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick(now);
        let interval = self.t.interval;
        while let Some((due, s)) = self.timers.peek() {
            if self.abs(due) > now {
                break;
            }
            // Backpressure: two bubbles and an ICMPv6 error must fit.
            if !self
                .out
                .has_room(2 * INDIRECT_BUBBLE_LEN + ICMP_ERROR_MAX_LEN)
                || self.out.items.len() + 3 > self.out.max_items
            {
                break;
            }
            self.timers.remove(&mut self.exchanges, s);
            let Some(i) = self.exchanges.get(s as usize).map(|x| x.peer) else {
                continue;
            };
            let Some(p) = self.peers.get(i as usize) else {
                continue;
            };
            // Timers are disarmed when an exchange ends, so the peer is bubbling, and a
            // timer is armed for the exact due time; both are checked anyway.
            if p.phase != PeerPhase::Bubbling {
                continue;
            }
            if p.last_bubble != NEVER32 {
                let due = self.abs(p.last_bubble).saturating_add(interval);
                if due > now {
                    self.arm(i, due);
                    continue;
                }
            }
            self.retransmit(now, i);
        }
        self.expire(now);
        self.shrink();
    }

    pub(super) fn retransmit(&mut self, now: u64, i: u32) {
        let limit = peer::attempt_limit(self.cfg.bubble_retries, self.cfg.max_bubbles_per_window);
        let Some(p) = self.peers.get(i as usize) else {
            return;
        };
        let Some(x) = self.exchanges.get(p.xchg as usize) else {
            return;
        };
        if x.bubbles >= limit {
            self.give_up(now, i);
            return;
        }
        match self.gate(i, now) {
            Gate::Now => self.send_bubbles(now, i),
            Gate::At(at) => self.arm(i, at),
            Gate::Exhausted => self.give_up(now, i),
        }
    }

    /// When the peer may be removed.
    pub(super) fn expires_at(&self, p: &Peer) -> u64 {
        let idle = self.abs(p.last_used).saturating_add(self.t.idle);
        match p.phase {
            PeerPhase::Bubbling => NEVER,
            // Remember the bubble count until the window is over (RFC 4380 §5.2.6).
            PeerPhase::Failed => idle.max(self.exchanges.get(p.xchg as usize).map_or(0, |x| {
                self.abs(x.window_start).saturating_add(self.t.window)
            })),
            PeerPhase::Idle => idle,
        }
    }

    pub(super) fn push_lru(&mut self, q: usize, stamp: u32, slot: u32) {
        let queue = &mut self.lru[q & 1];
        let stamp = queue.back().map_or(stamp, |(b, _)| stamp.max(*b));
        queue.push_back((stamp, slot));
    }

    /// Removes the peers whose records are due and who really expired; re-queues the others.
    pub(super) fn expire(&mut self, now: u64) {
        for q in 0..2 {
            while let Some(&(stamp, i)) = self.lru[q].front() {
                if self.abs(stamp).saturating_add(self.t.idle) > now {
                    break;
                }
                self.lru[q].pop_front();
                let Some(p) = self.peers.get(i as usize).copied().filter(Peer::live) else {
                    continue;
                };
                let exp = self.expires_at(&p);
                if exp <= now {
                    self.remove_peer(now, i, DropReason::PeerExpired);
                    self.counters.expirations += 1;
                    continue;
                }
                // Not expired: check again at its expiry, but never schedule past `now`
                // (the queues stay ordered, so nobody behind waits longer than an idle
                // period).
                let next = self.rel(exp.saturating_sub(self.t.idle).min(now));
                self.push_lru(usize::from(p.trusted()), next, i);
            }
        }
    }

    /// Evicts the least recently used untrusted peer (approximately). False when there is
    /// none.
    pub(super) fn evict_one(&mut self) -> bool {
        let mut scanned = 0;
        while let Some((stamp, i)) = self.lru[0].pop_front() {
            let Some(p) = self.peers.get(i as usize).copied().filter(Peer::live) else {
                continue;
            };
            if p.trusted() {
                self.push_lru(1, p.last_used, i);
                continue;
            }
            scanned += 1;
            if p.last_used > stamp && scanned < EVICT_SCAN {
                self.push_lru(0, p.last_used, i);
                continue;
            }
            let now = self.now;
            self.remove_peer(now, i, DropReason::PeerEvicted);
            self.counters.evictions += 1;
            return true;
        }
        self.cfg.evict_trusted && self.evict_trusted()
    }

    /// Evicts the least recently used trusted peer (approximately, as [`Self::evict_one`]).
    /// False when there is none.
    pub(super) fn evict_trusted(&mut self) -> bool {
        let mut scanned = 0;
        while let Some((stamp, i)) = self.lru[1].pop_front() {
            let Some(p) = self.peers.get(i as usize).copied().filter(Peer::live) else {
                continue;
            };
            scanned += 1;
            if p.last_used > stamp && scanned < EVICT_SCAN {
                self.push_lru(usize::from(p.trusted()), p.last_used, i);
                continue;
            }
            let now = self.now;
            self.remove_peer(now, i, DropReason::PeerEvicted);
            self.counters.evictions += 1;
            self.counters.trusted_evictions += 1;
            return true;
        }
        false
    }
}
