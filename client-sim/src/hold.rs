//! Datagrams held for the NAT model's latency in the real-socket drivers (`qualify`,
//! `ping`): each waits for its own `delay` (+ random `jitter`, `--nat-spec jitter=30ms`)
//! before it is sent or handed to the client, so that datagrams overtake each other over
//! real sockets as they would on a jittery link — reordering without the kernel's
//! `sch_netem`. Each direction is numbered in the order the datagrams entered the NAT; one
//! released after a later-numbered one of its direction counts as reordered.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::Instant;

/// Bound on held datagrams; beyond it a datagram is dropped (counted).
pub const MAX_HELD: usize = 4096;

/// A held datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// To send from the mapping's socket `from` to `to`.
    Out {
        /// The external mapping it leaves from.
        from: SocketAddrV4,
        /// Destination.
        to: SocketAddrV4,
        /// UDP payload.
        data: Vec<u8>,
    },
    /// Received from `from`, admitted by the NAT: for the client.
    In {
        /// The mapping's socket it arrived on.
        at: SocketAddrV4,
        /// Source.
        from: SocketAddrV4,
        /// UDP payload.
        data: Vec<u8>,
    },
}

impl Held {
    fn dir(&self) -> usize {
        match self {
            Self::Out { .. } => 0,
            Self::In { .. } => 1,
        }
    }
}

/// The datagrams waiting for their time, ordered by (due, entry number).
#[derive(Debug, Default)]
pub struct HoldQueue {
    queue: BTreeMap<(Instant, u64), (u64, Held)>,
    /// Entry numbers so far, per direction (out, in).
    entered: [u64; 2],
    /// The highest entry number released so far, per direction.
    latest: [Option<u64>; 2],
    seq: u64,
    /// Datagrams released after a later one of their direction.
    pub reordered: u64,
    /// Datagrams held so far.
    pub held: u64,
    /// Datagrams dropped because [`MAX_HELD`] were waiting.
    pub overflow: u64,
}

impl HoldQueue {
    /// Holds `d` until `due`.
    pub fn push(&mut self, due: Instant, d: Held) {
        if self.queue.len() >= MAX_HELD {
            self.overflow += 1;
            return;
        }
        let dir = d.dir();
        let n = self.entered[dir];
        self.entered[dir] += 1;
        self.seq += 1;
        self.held += 1;
        self.queue.insert((due, self.seq), (n, d));
    }

    /// When the next one is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(t, _)| *t)
    }

    /// The next datagram due at `now`, counting it if it overtook nothing but was overtaken.
    pub fn pop_due(&mut self, now: Instant) -> Option<Held> {
        let (&key, _) = self.queue.iter().next().filter(|((t, _), _)| *t <= now)?;
        let (n, d) = self.queue.remove(&key)?;
        let dir = d.dir();
        match self.latest[dir] {
            Some(l) if n < l => self.reordered += 1,
            _ => self.latest[dir] = Some(n),
        }
        Some(d)
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn out(i: u8) -> Held {
        let a = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, i), 1);
        Held::Out {
            from: a,
            to: a,
            data: vec![i],
        }
    }

    #[test]
    fn released_by_due_time_and_overtaken_ones_are_counted() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut q = HoldQueue::default();
        q.push(t + ms(30), out(0));
        q.push(t + ms(10), out(1));
        q.push(t + ms(20), out(2));
        q.push(
            t + ms(5),
            Held::In {
                at: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8),
                from: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9),
                data: vec![],
            },
        );
        assert_eq!(q.next_due(), Some(t + ms(5)));
        assert!(q.pop_due(t).is_none(), "nothing due yet");
        let order: Vec<Held> = std::iter::from_fn(|| q.pop_due(t + ms(30))).collect();
        assert!(matches!(order[0], Held::In { .. }));
        assert_eq!(order[1..], [out(1), out(2), out(0)]);
        // 1 and 2 overtook 0: 0 is the one released late. 2 after 1 is in order.
        assert_eq!(q.reordered, 1);
        assert_eq!(q.held, 4);
        assert!(q.is_empty());
    }

    #[test]
    fn in_order_release_counts_nothing() {
        let t = Instant::now();
        let mut q = HoldQueue::default();
        for i in 0..10 {
            q.push(t + Duration::from_millis(u64::from(i)), out(i));
        }
        while q.pop_due(t + Duration::from_secs(1)).is_some() {}
        assert_eq!(q.reordered, 0);
    }
}
