//! The bubble retransmission timer heap.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The bubble retransmission timers: a binary min-heap of `(due, exchange slot)` with each
/// exchange's position in [`Exchange::timer`], so that a timer is removed as soon as its
/// exchange ends (answered, given up, peer removed). Only peers in an exchange have one.
#[derive(Debug, Default)]
pub(super) struct Timers {
    pub(super) heap: Vec<(u32, u32)>,
}

impl Timers {
    pub(super) fn peek(&self) -> Option<(u32, u32)> {
        self.heap.first().copied()
    }

    /// Arms (or moves) the timer of exchange `slot` to `due`.
    pub(super) fn set(&mut self, xs: &mut [Exchange], slot: u32, due: u32) {
        let Some(x) = xs.get_mut(slot as usize) else {
            return;
        };
        let pos = match self.heap.get_mut(x.timer as usize) {
            Some(e) => {
                e.0 = due;
                x.timer as usize
            }
            None => {
                x.timer = u32::try_from(self.heap.len()).unwrap_or(NONE);
                self.heap.push((due, slot));
                self.heap.len() - 1
            }
        };
        let pos = self.sift_up(xs, pos);
        self.sift_down(xs, pos);
    }

    /// Disarms the timer of exchange `slot`, if any.
    pub(super) fn remove(&mut self, xs: &mut [Exchange], slot: u32) {
        let Some(x) = xs.get_mut(slot as usize) else {
            return;
        };
        let pos = std::mem::replace(&mut x.timer, NONE) as usize;
        if pos >= self.heap.len() {
            return;
        }
        let Some(last) = self.heap.pop() else {
            return;
        };
        if let Some(e) = self.heap.get_mut(pos) {
            *e = last;
            self.note(xs, pos);
            let pos = self.sift_up(xs, pos);
            self.sift_down(xs, pos);
        }
    }

    /// Records in its exchange where the entry at `pos` now is.
    pub(super) fn note(&self, xs: &mut [Exchange], pos: usize) {
        if let Some(x) = self.heap.get(pos).and_then(|e| xs.get_mut(e.1 as usize)) {
            x.timer = pos as u32;
        }
    }

    pub(super) fn swap(&mut self, xs: &mut [Exchange], a: usize, b: usize) {
        self.heap.swap(a, b);
        self.note(xs, a);
        self.note(xs, b);
    }

    pub(super) fn sift_up(&mut self, xs: &mut [Exchange], mut pos: usize) -> usize {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.heap.get(pos) >= self.heap.get(parent) {
                break;
            }
            self.swap(xs, pos, parent);
            pos = parent;
        }
        pos
    }

    pub(super) fn sift_down(&mut self, xs: &mut [Exchange], mut pos: usize) {
        loop {
            let left = 2 * pos + 1;
            let Some(l) = self.heap.get(left) else {
                break;
            };
            let child = match self.heap.get(left + 1) {
                Some(r) if r < l => left + 1,
                _ => left,
            };
            if self.heap.get(child) >= self.heap.get(pos) {
                break;
            }
            self.swap(xs, pos, child);
            pos = child;
        }
    }
}
