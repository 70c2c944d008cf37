//! Per-client sequence tracking of the answers: duplicates, reordering and RFC 3550 jitter,
//! in constant memory (a 128-packet window behind the highest sequence number seen).

/// Width of the window in which duplicates are told apart from late packets.
pub const WINDOW: u32 = 128;

/// What one answer was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The highest sequence number so far (in order, possibly after a gap).
    InOrder,
    /// Below the highest seen, first time: reordered.
    OutOfOrder,
    /// Already seen.
    Duplicate,
    /// More than [`WINDOW`] below the highest: counted as reordered, since a duplicate
    /// cannot be told apart any more.
    TooOld,
}

impl Verdict {
    /// Whether the answer counts as received (not a duplicate).
    pub fn is_new(self) -> bool {
        self != Self::Duplicate
    }
}

/// Answers seen from one client's stream.
#[derive(Clone, Debug, Default)]
pub struct SeqTracker {
    /// Highest sequence number seen.
    highest: Option<u32>,
    /// Bit `i`: `highest - i` seen.
    window: u128,
    /// Transit time (RTT) of the previous answer, nanoseconds.
    last_transit_ns: Option<u64>,
    /// RFC 3550 §6.4.1 interarrival jitter estimate, nanoseconds.
    jitter_ns: f64,
}

impl SeqTracker {
    /// Records the answer `seq`.
    pub fn record(&mut self, seq: u32) -> Verdict {
        let Some(high) = self.highest else {
            self.highest = Some(seq);
            self.window = 1;
            return Verdict::InOrder;
        };
        if seq > high {
            let shift = seq - high;
            self.window = if shift >= WINDOW {
                0
            } else {
                self.window << shift
            };
            self.window |= 1;
            self.highest = Some(seq);
            return Verdict::InOrder;
        }
        let back = high - seq;
        if back >= WINDOW {
            return Verdict::TooOld;
        }
        let bit = 1u128 << back;
        if self.window & bit != 0 {
            Verdict::Duplicate
        } else {
            self.window |= bit;
            Verdict::OutOfOrder
        }
    }

    /// Feeds the transit time of an answer (in arrival order) into the jitter estimate:
    /// `J += (|D| - J) / 16` (RFC 3550 §6.4.1, A.8).
    pub fn transit(&mut self, transit_ns: u64) {
        if let Some(last) = self.last_transit_ns {
            let d = transit_ns.abs_diff(last) as f64;
            self.jitter_ns += (d - self.jitter_ns) / 16.0;
        }
        self.last_transit_ns = Some(transit_ns);
    }

    /// The jitter estimate, nanoseconds; `None` before two answers.
    pub fn jitter_ns(&self) -> Option<f64> {
        self.last_transit_ns.map(|_| self.jitter_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_gaps_reorder_and_duplicates() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(0), Verdict::InOrder);
        assert_eq!(t.record(1), Verdict::InOrder);
        assert_eq!(t.record(1), Verdict::Duplicate);
        assert_eq!(t.record(5), Verdict::InOrder, "a gap is still in order");
        assert_eq!(t.record(3), Verdict::OutOfOrder);
        assert_eq!(t.record(3), Verdict::Duplicate);
        assert_eq!(t.record(4), Verdict::OutOfOrder);
        assert_eq!(t.record(0), Verdict::Duplicate);
        assert_eq!(t.record(2), Verdict::OutOfOrder);
        assert!(!Verdict::Duplicate.is_new());
        assert!(Verdict::TooOld.is_new());
    }

    #[test]
    fn window_edges() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(10), Verdict::InOrder);
        assert_eq!(t.record(10 + WINDOW - 1), Verdict::InOrder);
        // 10 is exactly WINDOW - 1 behind: still in the window, already seen.
        assert_eq!(t.record(10), Verdict::Duplicate);
        assert_eq!(t.record(10 + WINDOW), Verdict::InOrder);
        // Now 10 is WINDOW behind: too old to tell.
        assert_eq!(t.record(10), Verdict::TooOld);
        // A jump wider than the window clears it.
        assert_eq!(t.record(10_000), Verdict::InOrder);
        assert_eq!(t.record(9_999), Verdict::OutOfOrder);
        assert_eq!(t.record(10_000), Verdict::Duplicate);
    }

    #[test]
    fn sequence_numbers_near_the_top() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(u32::MAX - 1), Verdict::InOrder);
        assert_eq!(t.record(u32::MAX), Verdict::InOrder);
        assert_eq!(t.record(u32::MAX - 1), Verdict::Duplicate);
        assert_eq!(t.record(0), Verdict::TooOld);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let mut t = SeqTracker::default();
        assert_eq!(t.jitter_ns(), None);
        t.record(0);
        t.transit(1_000);
        assert_eq!(t.jitter_ns(), Some(0.0));
        t.record(1);
        t.transit(1_160);
        // J = 0 + (160 - 0) / 16 = 10
        assert_eq!(t.jitter_ns(), Some(10.0));
        t.record(2);
        t.transit(1_000);
        // J = 10 + (160 - 10) / 16 = 19.375
        assert_eq!(t.jitter_ns(), Some(19.375));
        // Constant transit: decays towards 0.
        for s in 3..200 {
            t.record(s);
            t.transit(1_000);
        }
        assert!(t.jitter_ns().unwrap() < 0.01);
    }
}
