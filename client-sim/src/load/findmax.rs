//! `--find-max`: the highest rate whose loss stays under a threshold, RFC 2544 §26.1 style
//! (trials of fixed length, a binary search on the offered rate). The search doubles from the
//! starting rate until a trial fails (or `--max-rate`), then halves the interval between the
//! best passing and the lowest failing rate until it is narrower than the resolution.

/// One trial's verdict.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trial {
    /// Offered rate, packets per second.
    pub rate: f64,
    /// Whether loss stayed under the threshold (and the rate was really offered).
    pub passed: bool,
}

/// The search state.
#[derive(Clone, Debug)]
pub struct FindMax {
    start: f64,
    max_rate: f64,
    /// Stop when `hi - lo <= resolution × hi`.
    resolution: f64,
    /// Highest passing rate.
    lo: Option<f64>,
    /// Lowest failing rate.
    hi: Option<f64>,
    max_trials: usize,
    trials: Vec<Trial>,
}

impl FindMax {
    /// A search from `start` pps up to `max_rate`, to within `resolution` (a fraction, e.g.
    /// 0.02), with at most `max_trials` trials.
    pub fn new(start: f64, max_rate: f64, resolution: f64, max_trials: usize) -> Self {
        let max_rate = max_rate.max(1.0);
        Self {
            start: start.clamp(1.0, max_rate),
            max_rate,
            resolution: resolution.clamp(1e-6, 1.0),
            lo: None,
            hi: None,
            max_trials,
            trials: Vec::new(),
        }
    }

    /// The next rate to try; `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        if self.trials.len() >= self.max_trials {
            return None;
        }
        match (self.lo, self.hi) {
            (None, None) => Some(self.start),
            // Doubling until a failure or the ceiling.
            (Some(lo), None) if lo >= self.max_rate => None,
            (Some(lo), None) => Some((lo * 2.0).min(self.max_rate)),
            // Everything failed so far: halve, down to 1 pps.
            (None, Some(hi)) if hi <= 1.0 => None,
            (None, Some(hi)) => Some((hi / 2.0).max(1.0).floor()),
            (Some(lo), Some(hi)) => {
                if hi - lo <= self.resolution * hi || hi - lo < 2.0 {
                    None
                } else {
                    Some(((lo + hi) / 2.0).floor())
                }
            }
        }
    }

    /// Records the outcome of a trial at `rate`.
    pub fn record(&mut self, rate: f64, passed: bool) {
        self.trials.push(Trial { rate, passed });
        if passed {
            self.lo = Some(self.lo.map_or(rate, |l| l.max(rate)));
        } else {
            self.hi = Some(self.hi.map_or(rate, |h| h.min(rate)));
        }
    }

    /// The highest passing rate so far.
    pub fn best(&self) -> Option<f64> {
        self.lo
    }

    /// Every trial, in order.
    pub fn trials(&self) -> &[Trial] {
        &self.trials
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a device that passes up to `limit` pps.
    fn search(start: f64, max: f64, limit: f64) -> (Option<f64>, usize) {
        let mut s = FindMax::new(start, max, 0.02, 50);
        while let Some(r) = s.next_rate() {
            s.record(r, r <= limit);
        }
        (s.best(), s.trials().len())
    }

    #[test]
    fn converges_within_resolution() {
        for limit in [1.0, 7.0, 999.0, 1_000.0, 37_123.0, 120_000.0] {
            let (best, n) = search(1000.0, 1_000_000.0, limit);
            let best = best.unwrap_or(0.0);
            assert!(best <= limit, "{limit}: {best}");
            assert!(
                best >= limit * 0.98 - 2.0,
                "{limit}: best {best} too far below"
            );
            assert!(n < 40, "{limit}: {n} trials");
        }
    }

    #[test]
    fn ceiling_and_nothing_passing() {
        // Everything passes: stops at the ceiling.
        assert_eq!(search(1000.0, 5000.0, f64::INFINITY).0, Some(5000.0));
        // Nothing passes, not even 1 pps.
        assert_eq!(search(1000.0, 5000.0, 0.5).0, None);
    }

    #[test]
    fn trial_cap() {
        let mut s = FindMax::new(1.0, 1e9, 0.0, 3);
        while let Some(r) = s.next_rate() {
            s.record(r, true);
        }
        assert_eq!(s.trials().len(), 3);
        assert_eq!(s.best(), Some(4.0));
    }
}
