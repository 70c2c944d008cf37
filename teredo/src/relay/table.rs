//! The open-addressing peer index.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A bucket of the [`Index`]: the low 32 bits of the peer's keyed hash and its slab slot.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bucket {
    pub(super) hash: u32,
    /// [`NONE`]: empty.
    pub(super) slot: u32,
}

pub(super) const EMPTY: Bucket = Bucket {
    hash: 0,
    slot: NONE,
};

/// The peer index: address → slab slot. Open addressing with linear probing over 8-byte
/// buckets, at most 3/4 full; the address itself is only in the slab (a bucket's hash is
/// compared first, so a lookup reads the slab of other peers only on a 32-bit hash match).
/// Deletion shifts the following entries back (no tombstones), so probe sequences stay as
/// short as the load allows. The home bucket of an entry is `hash & mask`, so growing and
/// compacting need no rehashing.
#[derive(Debug, Default)]
pub(super) struct Index {
    pub(super) buckets: Vec<Bucket>,
    pub(super) len: usize,
}

impl Index {
    /// Buckets for `n` entries (a power of two, at least 16, at most 3/4 full).
    pub(super) fn capacity_for(n: usize) -> usize {
        let mut c = 16usize;
        while n.saturating_mul(4) > c.saturating_mul(3) {
            c = c.saturating_mul(2);
        }
        c
    }

    pub(super) fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// The bucket of the entry with `hash` for which `is(slot)` holds.
    pub(super) fn find(&self, hash: u32, mut is: impl FnMut(u32) -> bool) -> Option<usize> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            // Never more than 3/4 full: an empty bucket ends every probe.
            let b = self.buckets.get(i)?;
            if b.slot == NONE {
                return None;
            }
            if b.hash == hash && is(b.slot) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    pub(super) fn slot(&self, bucket: usize) -> Option<u32> {
        self.buckets
            .get(bucket)
            .map(|b| b.slot)
            .filter(|s| *s != NONE)
    }

    /// Adds an entry (the caller knows it is absent).
    pub(super) fn insert(&mut self, hash: u32, slot: u32) {
        if (self.len + 1).saturating_mul(4) > self.buckets.len().saturating_mul(3) {
            self.rebuild(Self::capacity_for(self.len + 1), |s| s);
        }
        self.place(Bucket { hash, slot });
        self.len += 1;
    }

    pub(super) fn place(&mut self, b: Bucket) {
        let mask = self.mask();
        let mut i = b.hash as usize & mask;
        while let Some(cur) = self.buckets.get_mut(i) {
            if cur.slot == NONE {
                *cur = b;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Removes the entry in `bucket`: later entries of the probe run move back into the
    /// hole when it lies on their path from their home bucket.
    pub(super) fn remove_at(&mut self, bucket: usize) {
        let mask = self.mask();
        if self.slot(bucket).is_none() {
            return;
        }
        let mut hole = bucket;
        let mut k = bucket;
        loop {
            k = (k + 1) & mask;
            let Some(&b) = self.buckets.get(k) else {
                break;
            };
            if b.slot == NONE {
                break;
            }
            let home = b.hash as usize & mask;
            if k.wrapping_sub(home) & mask >= k.wrapping_sub(hole) & mask {
                if let Some(h) = self.buckets.get_mut(hole) {
                    *h = b;
                }
                hole = k;
            }
        }
        if let Some(h) = self.buckets.get_mut(hole) {
            *h = EMPTY;
        }
        self.len -= 1;
    }

    /// Moves every entry into `cap` buckets, renumbering slots with `remap`.
    pub(super) fn rebuild(&mut self, cap: usize, remap: impl Fn(u32) -> u32) {
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; cap]);
        self.len = 0;
        for b in old {
            if b.slot != NONE {
                self.place(Bucket {
                    hash: b.hash,
                    slot: remap(b.slot),
                });
                self.len += 1;
            }
        }
    }
}
