//! The event queue of the simulated network: deliveries ordered by (time, sequence number), so
//! the same inputs always give the same order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::SocketAddrV4;
use std::time::Instant;

use teredo::io::Local;

use super::journal::Via;
use super::{Datagram, Sender};

/// What happens when a queued entry comes due.
pub(super) enum Delivery {
    /// Put a datagram on the Internet (a delayed send).
    Launch(Sender, Datagram, Via),
    /// A datagram reaches its destination on the Internet; the number is its launch order,
    /// then its journal entry (when journaling).
    Arrive(Datagram, u64, Option<usize>),
    /// A datagram reaches a client behind its NAT, on one of its sockets.
    Inside {
        node: usize,
        local: Local,
        from: SocketAddrV4,
        payload: Vec<u8>,
        journal: Option<usize>,
    },
    /// A datagram crosses the LAN behind a NAT to another client there, unicast or to the
    /// local discovery group (never through the NAT).
    Lan {
        node: usize,
        local: Local,
        from: SocketAddrV4,
        payload: Vec<u8>,
        multicast: bool,
    },
    /// A packet reaches its destination on the native IPv6 segment (and its journal entry).
    Native(Vec<u8>, Option<usize>),
}

/// One entry of the queue.
pub(super) struct Queued {
    pub(super) at: Instant,
    pub(super) seq: u64,
    pub(super) what: Delivery,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest (time, seq) must come first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Deliveries waiting for their time; the sequence number keeps entries of the same time in
/// the order they were pushed.
#[derive(Default)]
pub(super) struct EventQueue {
    heap: BinaryHeap<Queued>,
    seq: u64,
}

impl EventQueue {
    /// Queues `what` for `at`, after everything already queued for the same time.
    pub(super) fn push(&mut self, at: Instant, what: Delivery) {
        self.seq += 1;
        self.heap.push(Queued {
            at,
            seq: self.seq,
            what,
        });
    }

    /// When the earliest entry is due.
    pub(super) fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|q| q.at)
    }

    /// Takes the earliest entry.
    pub(super) fn pop(&mut self) -> Option<Delivery> {
        self.heap.pop().map(|q| q.what)
    }

    /// Entries queued.
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

/// The earlier of two optional instants.
pub(super) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
