//! The bounded output queue and `poll_output`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// An output waiting for [`Relay::poll_output`]. Data outputs point into the arena.
#[derive(Clone, Copy, Debug)]
pub(super) enum Pending {
    Bubble {
        to: SocketAddrV4,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        nonce: Option<[u8; 4]>,
        hop_limit: u8,
    },
    Udp {
        to: SocketAddrV4,
        off: usize,
        len: usize,
    },
    Ipv6 {
        off: usize,
        len: usize,
    },
}

impl Pending {
    pub(super) fn wire_len(&self) -> usize {
        match self {
            Self::Bubble { nonce, .. } => IPV6_HEADER_LEN + if nonce.is_some() { 6 } else { 0 },
            Self::Udp { len, .. } | Self::Ipv6 { len, .. } => *len,
        }
    }
}

/// Bounded output queue: small descriptors plus one reused byte arena.
#[derive(Debug)]
pub(super) struct OutQueue {
    pub(super) items: VecDeque<Pending>,
    /// Bytes of data outputs, appended in order.
    pub(super) arena: Vec<u8>,
    /// Absolute offset of `arena[0]`.
    pub(super) base: usize,
    /// Bytes of all pending outputs (the cap applies to this).
    pub(super) live: usize,
    pub(super) max_items: usize,
    pub(super) max_bytes: usize,
}

impl OutQueue {
    pub(super) fn new(max_items: usize, max_bytes: usize) -> Self {
        Self {
            items: VecDeque::new(),
            arena: Vec::new(),
            base: 0,
            live: 0,
            max_items,
            max_bytes,
        }
    }

    pub(super) fn has_room(&self, len: usize) -> bool {
        self.items.len() < self.max_items && self.live.saturating_add(len) <= self.max_bytes
    }

    pub(super) fn push_bubble(&mut self, p: Pending) -> bool {
        let len = p.wire_len();
        if !self.has_room(len) {
            return false;
        }
        self.live += len;
        self.items.push_back(p);
        true
    }

    /// Appends `len` bytes written by `fill` and a descriptor built from their offset.
    pub(super) fn push_data(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
        make: impl FnOnce(usize) -> Pending,
    ) -> bool {
        if !self.has_room(len) {
            return false;
        }
        let start = self.arena.len();
        self.arena.resize(start + len, 0);
        if let Some(dst) = self.arena.get_mut(start..) {
            fill(dst);
        }
        self.live += len;
        self.items.push_back(make(self.base + start));
        true
    }

    pub(super) fn push_copy(&mut self, data: &[u8], make: impl FnOnce(usize) -> Pending) -> bool {
        self.push_data(data.len(), |d| d.copy_from_slice(data), make)
    }

    pub(super) fn data(&self, off: usize, len: usize) -> Option<&[u8]> {
        let start = off.checked_sub(self.base)?;
        self.arena.get(start..start.checked_add(len)?)
    }

    /// Removes the front output after it was written (or discarded).
    pub(super) fn pop_front(&mut self) {
        let Some(p) = self.items.pop_front() else {
            return;
        };
        self.live = self.live.saturating_sub(p.wire_len());
        if self.items.is_empty() {
            self.base += self.arena.len();
            self.arena.clear();
            return;
        }
        // Reclaim the consumed prefix of the arena once it is large: O(live) copies
        // amortized over at least `max_bytes / 2` consumed bytes.
        if let Pending::Udp { off, len, .. } | Pending::Ipv6 { off, len } = p {
            let dead = (off + len).saturating_sub(self.base);
            if dead > (self.max_bytes / 2).max(1 << 16) && dead <= self.arena.len() {
                self.arena.drain(..dead);
                self.base += dead;
            }
        }
    }
}

impl Relay {
    // ---- outputs ------------------------------------------------------------------------

    /// The length of the next output, so that a driver can let [`Self::poll_output`] write
    /// it straight where it will be sent from, in a buffer of just that size.
    pub fn next_output_len(&self) -> Option<usize> {
        self.out.items.front().map(Pending::wire_len)
    }

    /// Writes the next output into `buf` ([`MAX_UDP_PAYLOAD`] bytes always suffice).
    /// `None` when there is nothing to send. An output that does not fit in `buf` is
    /// discarded and counted (`output_buffer_too_small`).
    pub fn poll_output(&mut self, buf: &mut [u8]) -> Option<Output> {
        loop {
            let p = *self.out.items.front()?;
            let r = self.write_output(&p, buf);
            self.out.pop_front();
            match r {
                Some(o) => return Some(o),
                None => {
                    self.count_drop(DropReason::OutputBufferTooSmall);
                    tracing::warn!(
                        need = p.wire_len(),
                        have = buf.len(),
                        "relay poll_output buffer too small; output discarded"
                    );
                }
            }
        }
    }

    pub(super) fn write_output(&self, p: &Pending, buf: &mut [u8]) -> Option<Output> {
        match *p {
            Pending::Bubble {
                to,
                src,
                dst,
                nonce,
                hop_limit,
            } => {
                let mut len = emit_bubble(buf, src, dst, hop_limit).ok()?;
                if let Some(n) = nonce {
                    len += Trailers::emit(TYPE_NONCE, &n, buf.get_mut(len..)?).ok()?;
                }
                // Only indirect bubbles carry a nonce (direct ones carry no trailer).
                let kind = if nonce.is_some() {
                    Kind::IndirectBubble
                } else {
                    Kind::Bubble
                };
                Some(Output::Udp {
                    local: Local::Primary,
                    to,
                    len,
                    kind,
                })
            }
            Pending::Udp { to, off, len } => {
                let data = self.out.data(off, len)?;
                buf.get_mut(..len)?.copy_from_slice(data);
                Some(Output::Udp {
                    local: Local::Primary,
                    to,
                    len,
                    kind: Kind::Data,
                })
            }
            Pending::Ipv6 { off, len } => {
                let data = self.out.data(off, len)?;
                buf.get_mut(..len)?.copy_from_slice(data);
                // The only native output the relay makes itself is an ICMPv6 error.
                Some(Output::Ipv6 {
                    len,
                    kind: Kind::Icmpv6Error,
                })
            }
        }
    }
}
