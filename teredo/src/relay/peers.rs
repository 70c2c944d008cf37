//! The peer slab, the exchange slab and their bookkeeping: insertion, removal, compaction.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) const F_TRUSTED: u8 = 1;
/// The slab slot is free; its [`Peer::xchg`] links the free list.
pub(super) const F_FREE: u8 = 2;
pub(super) const X_NONCE: u8 = 1;
pub(super) const X_PREV_NONCE: u8 = 2;

/// One peer: 40 bytes in the peer slab, found through the [`Index`]. Times are 32-bit
/// millisecond offsets from [`Relay::base`]. What only a peer in a bubble exchange needs
/// lives in an [`Exchange`], queued packets in the queue slab.
#[derive(Clone, Copy, Debug)]
pub(super) struct Peer {
    pub(super) addr: Ipv6Addr,
    /// Last accepted reception (validity).
    pub(super) last_rx: u32,
    /// Last use in either direction (expiry, eviction order).
    pub(super) last_used: u32,
    /// Last bubble sent ([`NEVER32`] if none).
    pub(super) last_bubble: u32,
    /// Slot of the peer's exchange while it is [`PeerPhase::Bubbling`] or
    /// [`PeerPhase::Failed`], else [`NONE`]. In a free slot: the next free slot.
    pub(super) xchg: u32,
    pub(super) mapping: SocketAddrV4,
    pub(super) flags: u8,
    pub(super) phase: PeerPhase,
}

impl Peer {
    pub(super) fn trusted(&self) -> bool {
        self.flags & F_TRUSTED != 0
    }

    pub(super) fn live(&self) -> bool {
        self.flags & F_FREE == 0
    }
}

/// The state of a peer's bubble exchange, from its first bubble until it is answered (or,
/// after a give-up, until the peer is removed or tries again): pacing, nonces, the
/// retransmission timer and the queue. One slab slot per peer in an exchange, so trusted
/// peers do not pay for it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Exchange {
    /// Owner (peer slot); [`NONE`] when the slot is free.
    pub(super) peer: u32,
    /// Position in the timer heap, or [`NONE`].
    pub(super) timer: u32,
    /// Slot in the queue slab, or [`NO_QUEUE`].
    pub(super) queue: u32,
    /// When the current exchange started (the packet that opened it), a time offset.
    pub(super) started: u32,
    /// Start of the bubble window (first bubble since the last answer), a time offset.
    pub(super) window_start: u32,
    /// Nonce of the latest indirect bubble (valid with [`X_NONCE`]).
    pub(super) nonce: [u8; 4],
    /// Nonce of the one before (valid with [`X_PREV_NONCE`]).
    pub(super) prev_nonce: [u8; 4],
    pub(super) nonces: u8,
    /// Bubbles sent in the current window.
    pub(super) bubbles: u8,
}

/// Moves a time offset `d` milliseconds back, saturating at 0 ([`NEVER32`] stays).
pub(super) fn shift_back(r: &mut u32, d: u64) {
    if *r != NEVER32 {
        *r = u32::try_from(u64::from(*r).saturating_sub(d)).unwrap_or(0);
    }
}

/// Shrinks a vector whose length fell below a quarter of its capacity (amortized O(1): the
/// next reallocation needs the length to halve or double again).
pub(super) fn shrink_vec<T>(v: &mut Vec<T>) {
    if v.capacity() >= SHRINK_MIN && v.len() < v.capacity() / 4 {
        v.shrink_to(v.len() * 2);
    }
}

/// [`shrink_vec`] for a deque.
pub(super) fn shrink_deque<T>(v: &mut VecDeque<T>) {
    if v.capacity() >= SHRINK_MIN && v.len() < v.capacity() / 4 {
        v.shrink_to(v.len() * 2);
    }
}

impl Relay {
    // ---- peer table ---------------------------------------------------------------------

    /// The peer index's hash of an address: the low 32 bits of keyed SipHash-2-4.
    pub(super) fn hash(&self, addr: &Ipv6Addr) -> u32 {
        SipHasher24::hash_16(self.map_key.0, self.map_key.1, &addr.octets()) as u32
    }

    pub(super) fn find_hashed(&self, hash: u32, addr: &Ipv6Addr) -> Option<u32> {
        let peers = &self.peers;
        let b = self.index.find(hash, |s| {
            peers.get(s as usize).is_some_and(|p| p.addr == *addr)
        })?;
        self.index.slot(b)
    }

    /// The slab slot of the peer with address `addr`.
    pub(super) fn find(&self, addr: &Ipv6Addr) -> Option<u32> {
        self.find_hashed(self.hash(addr), addr)
    }

    pub(super) fn valid(&self, p: &Peer, now: u64) -> bool {
        peer::is_valid(now, p.trusted(), Some(self.abs(p.last_rx)), self.t.validity)
    }

    pub(super) fn insert_peer(
        &mut self,
        now: u64,
        hash: u32,
        addr: Ipv6Addr,
        mapping: SocketAddrV4,
    ) -> Result<u32, DropReason> {
        if self.live >= self.cfg.max_peers {
            self.expire(now);
            if self.live >= self.cfg.max_peers && !self.evict_one() {
                return Err(DropReason::PeerTableFull);
            }
        }
        let now32 = self.rel(now);
        let peer = Peer {
            addr,
            last_rx: 0,
            last_used: now32,
            last_bubble: NEVER32,
            xchg: NONE,
            mapping,
            flags: 0,
            phase: PeerPhase::Idle,
        };
        let i = match self.peers.get_mut(self.free_peer as usize) {
            Some(slot) => {
                let i = self.free_peer;
                self.free_peer = slot.xchg;
                *slot = peer;
                i
            }
            None => {
                let i = u32::try_from(self.peers.len())
                    .ok()
                    .filter(|i| *i != NONE)
                    .ok_or(DropReason::PeerTableFull)?;
                self.peers.push(peer);
                i
            }
        };
        self.live += 1;
        self.index.insert(hash, i);
        self.push_lru(0, now32, i);
        self.counters.peers_created += 1;
        Ok(i)
    }

    pub(super) fn remove_peer(&mut self, now: u64, i: u32, reason: DropReason) {
        let Some(p) = self.peers.get(i as usize).copied().filter(Peer::live) else {
            return;
        };
        let (peer, trusted) = (p.addr, p.trusted());
        match reason {
            DropReason::PeerExpired => self.emit(Event::PeerExpired { peer, trusted }),
            DropReason::PeerEvicted => self.emit(Event::PeerEvicted { peer, trusted }),
            _ => {}
        }
        let hash = self.hash(&p.addr);
        if let Some(b) = self.index.find(hash, |s| s == i) {
            self.index.remove_at(b);
        }
        if p.trusted() {
            self.trusted = self.trusted.saturating_sub(1);
        }
        if p.xchg != NONE {
            let queue = self.close_exchange(p.xchg);
            self.discard_queue(now, queue, reason, false);
        }
        if let Some(slot) = self.peers.get_mut(i as usize) {
            slot.flags = F_FREE;
            slot.xchg = self.free_peer;
            self.free_peer = i;
            self.live -= 1;
        }
    }

    /// The exchange of peer `i`, created if needed; [`NONE`] if there is no such peer.
    pub(super) fn open_exchange(&mut self, i: u32, now32: u32) -> u32 {
        let Some(p) = self.peers.get_mut(i as usize) else {
            return NONE;
        };
        if p.xchg != NONE {
            return p.xchg;
        }
        let x = Exchange {
            peer: i,
            timer: NONE,
            queue: NO_QUEUE,
            window_start: now32,
            started: now32,
            nonce: [0; 4],
            prev_nonce: [0; 4],
            nonces: 0,
            bubbles: 0,
        };
        let s = match self.free_exchanges.pop() {
            Some(s) => {
                if let Some(slot) = self.exchanges.get_mut(s as usize) {
                    *slot = x;
                }
                s
            }
            None => {
                // At most one exchange per peer, so this fits in a u32 like the peer slots.
                let s = u32::try_from(self.exchanges.len()).unwrap_or(NONE);
                self.exchanges.push(x);
                s
            }
        };
        p.xchg = s;
        s
    }

    /// Frees exchange `s` (the caller unlinks its peer) and disarms its timer; returns its
    /// queue slot for the caller to flush or discard.
    pub(super) fn close_exchange(&mut self, s: u32) -> u32 {
        self.timers.remove(&mut self.exchanges, s);
        let Some(x) = self.exchanges.get_mut(s as usize) else {
            return NO_QUEUE;
        };
        x.peer = NONE;
        let queue = std::mem::replace(&mut x.queue, NO_QUEUE);
        self.free_exchanges.push(s);
        queue
    }

    /// Gives memory back after the table shrank: the expiry queues and the timer heap when
    /// below a quarter of their capacity; the peer and exchange slabs (compacted, the index
    /// rebuilt) when below a quarter of their length. Amortized O(1) per removal; never on
    /// the forwarding path.
    pub(super) fn shrink(&mut self) {
        for q in &mut self.lru {
            shrink_deque(q);
        }
        shrink_vec(&mut self.timers.heap);
        if self.peers.len() >= SHRINK_MIN && self.live < self.peers.len() / 4 {
            self.compact_peers();
        }
        let xlive = self.exchanges.len() - self.free_exchanges.len();
        if self.exchanges.len() >= SHRINK_MIN && xlive < self.exchanges.len() / 4 {
            self.compact_exchanges();
        }
        shrink_vec(&mut self.free_exchanges);
    }

    /// Moves the live peers to the front of the slab (in order) and renumbers every
    /// reference to them.
    pub(super) fn compact_peers(&mut self) {
        let mut remap = Vec::with_capacity(self.peers.len());
        let mut n = 0u32;
        self.peers.retain(|p| {
            remap.push(if p.live() { n } else { NONE });
            n += u32::from(p.live());
            p.live()
        });
        self.peers.shrink_to_fit();
        self.free_peer = NONE;
        let map = |s: u32| remap.get(s as usize).copied().unwrap_or(NONE);
        for q in &mut self.lru {
            for r in q.iter_mut() {
                r.1 = map(r.1);
            }
        }
        for x in &mut self.exchanges {
            if x.peer != NONE {
                x.peer = map(x.peer);
            }
        }
        self.index.rebuild(Index::capacity_for(self.live), map);
    }

    /// Moves the live exchanges to the front of their slab (in order, so the timer heap's
    /// order is kept) and renumbers every reference to them.
    pub(super) fn compact_exchanges(&mut self) {
        let mut remap = Vec::with_capacity(self.exchanges.len());
        let mut n = 0u32;
        self.exchanges.retain(|x| {
            let live = x.peer != NONE;
            remap.push(if live { n } else { NONE });
            n += u32::from(live);
            live
        });
        self.exchanges.shrink_to_fit();
        self.free_exchanges.clear();
        let map = |s: u32| remap.get(s as usize).copied().unwrap_or(NONE);
        for p in &mut self.peers {
            if p.live() && p.xchg != NONE {
                p.xchg = map(p.xchg);
            }
        }
        for e in &mut self.timers.heap {
            e.1 = map(e.1);
        }
    }
}
