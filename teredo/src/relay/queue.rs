//! The slab of per-peer packet queues.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A queued packet's bytes, one slab slot per peer with a non-empty queue. Packets are
/// stored back to back; each is a complete IPv6 packet, so its length is in its header.
#[derive(Debug, Default)]
pub(super) struct QueueSlot {
    pub(super) bytes: Vec<u8>,
    pub(super) packets: usize,
}

#[derive(Debug, Default)]
pub(super) struct QueueSlab {
    pub(super) slots: Vec<QueueSlot>,
    pub(super) free: Vec<u32>,
    /// Capacity kept by free slots for reuse; bounded by the global queue cap.
    pub(super) retained: usize,
}

impl QueueSlab {
    pub(super) fn alloc(&mut self) -> Option<u32> {
        if let Some(i) = self.free.pop() {
            if let Some(s) = self.slots.get(i as usize) {
                self.retained = self.retained.saturating_sub(s.bytes.capacity());
            }
            return Some(i);
        }
        let i = u32::try_from(self.slots.len())
            .ok()
            .filter(|i| *i != NO_QUEUE)?;
        self.slots.push(QueueSlot::default());
        Some(i)
    }

    pub(super) fn release(&mut self, i: u32, retain_limit: usize) {
        let Some(s) = self.slots.get_mut(i as usize) else {
            return;
        };
        s.bytes.clear();
        s.packets = 0;
        if self.retained + s.bytes.capacity() > retain_limit {
            s.bytes = Vec::new();
        } else {
            self.retained += s.bytes.capacity();
        }
        self.free.push(i);
    }
}

/// Iterates over the IPv6 packets stored back to back in `bytes`.
pub(super) fn split_packets(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let plen = bytes.get(4..6).map(|b| u16::from_be_bytes([b[0], b[1]]))?;
        let len = IPV6_HEADER_LEN + usize::from(plen);
        let pkt = bytes.get(..len)?;
        bytes = bytes.get(len..).unwrap_or(&[]);
        Some(pkt)
    })
}
