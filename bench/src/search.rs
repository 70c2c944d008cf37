//! The throughput search (RFC 2544 style: the highest paced rate with at most 1 % loss) and
//! the small statistics of the report.
//!
//! [`RateSearch`] first *brackets* the answer, starting from an estimate: a passing rate is
//! multiplied by `up` until one fails, a failing one by `down` until one passes (so a
//! throughput far above the overload estimate, as in a receive livelock, is still found);
//! then it bisects. It stops after `max_steps` trials, when the bracket is narrower than
//! `resolution` (relative), or when the generator's ceiling passes.

/// True when `received` out of `sent` is within `max_loss` (a fraction: 0.01 = 1 %).
/// Nothing sent never passes (the step says nothing).
pub fn passes(sent: u64, received: u64, max_loss: f64) -> bool {
    if sent == 0 {
        return false;
    }
    let lost = sent.saturating_sub(received) as f64;
    lost <= max_loss * sent as f64
}

/// The state of one throughput search.
#[derive(Clone, Debug, PartialEq)]
pub struct RateSearch {
    /// Highest rate that passed.
    lo: Option<f64>,
    /// Lowest rate that failed.
    hi: Option<f64>,
    next: Option<f64>,
    steps: u32,
    max_steps: u32,
    up: f64,
    down: f64,
    max_rate: f64,
    resolution: f64,
}

impl RateSearch {
    /// A search whose first trial is `start` (clamped to `max_rate`, the generator's
    /// ceiling). `up` (> 1) and `down` (< 1) are the bracketing factors; `resolution` the
    /// relative width at which bisection stops.
    pub fn new(
        start: f64,
        max_steps: u32,
        up: f64,
        down: f64,
        max_rate: f64,
        resolution: f64,
    ) -> Self {
        assert!(up > 1.0 && down > 0.0 && down < 1.0, "bad factors");
        let start = start.clamp(1.0, max_rate.max(1.0));
        Self {
            lo: None,
            hi: None,
            next: (max_steps > 0).then_some(start),
            steps: 0,
            max_steps,
            up,
            down,
            max_rate: max_rate.max(1.0),
            resolution,
        }
    }

    /// The next rate to try; `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        self.next
    }

    /// Records the outcome of a trial at `rate`.
    pub fn record(&mut self, rate: f64, pass: bool) {
        self.steps += 1;
        if pass {
            self.lo = Some(self.lo.map_or(rate, |l| l.max(rate)));
        } else {
            self.hi = Some(self.hi.map_or(rate, |h| h.min(rate)));
        }
        self.next = if self.steps >= self.max_steps {
            None
        } else {
            match (self.lo, self.hi) {
                (Some(lo), Some(hi)) if hi <= lo * (1.0 + self.resolution) => None,
                (Some(lo), Some(hi)) => Some((lo + hi) / 2.0),
                (Some(lo), None) if lo >= self.max_rate => None,
                (Some(lo), None) => Some((lo * self.up).min(self.max_rate)),
                (None, Some(hi)) if hi <= 1.0 => None,
                (None, Some(hi)) => Some((hi * self.down).max(1.0)),
                (None, None) => None,
            }
        };
    }

    /// The highest rate that passed (the throughput), if any did.
    pub fn result(&self) -> Option<f64> {
        self.lo
    }

    /// The lowest rate that failed, if any did.
    pub fn lowest_failure(&self) -> Option<f64> {
        self.hi
    }

    /// Trials run so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// True when the generator's ceiling itself passed: the device was not saturated.
    pub fn generator_limited(&self) -> bool {
        self.lo.is_some_and(|l| l >= self.max_rate)
    }
}

/// Median, minimum and maximum of some measurements.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Summary {
    /// The summary of `values` (`None` when empty; NaNs are ignored).
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a device that passes every rate up to `capacity`.
    fn run(mut s: RateSearch, capacity: f64) -> (RateSearch, Vec<f64>) {
        let mut tried = Vec::new();
        let mut guard = 0;
        while let Some(r) = s.next_rate() {
            tried.push(r);
            s.record(r, r <= capacity);
            guard += 1;
            assert!(guard <= 100, "search does not terminate");
        }
        (s, tried)
    }

    #[test]
    fn loss_criterion() {
        assert!(passes(1000, 1000, 0.01));
        assert!(passes(1000, 990, 0.01));
        assert!(!passes(1000, 989, 0.01));
        assert!(
            passes(1000, 1005, 0.01),
            "more received than sent (late arrivals)"
        );
        assert!(!passes(0, 0, 0.01), "an empty step proves nothing");
    }

    #[test]
    fn finds_the_capacity_below_the_estimate() {
        // Estimate 150 k (what got through under overload), capacity 130 k.
        let (s, tried) = run(RateSearch::new(150e3, 8, 1.5, 0.8, 1e6, 0.005), 130e3);
        assert_eq!(tried[0], 150e3);
        assert_eq!(tried[1], 120e3, "bracketing down");
        assert_eq!(s.steps(), 8);
        let r = s.result().unwrap();
        assert!(r <= 130e3 && r > 128e3, "{r} ({tried:?})");
        assert!(s.lowest_failure().unwrap() > 130e3);
        assert!(!s.generator_limited());
    }

    #[test]
    fn finds_a_capacity_far_above_the_estimate() {
        // Receive livelock: only 22 k got through unpaced, but 67 k pass when paced.
        let (s, tried) = run(RateSearch::new(22e3, 8, 1.5, 0.8, 1e6, 0.005), 67e3);
        assert_eq!(&tried[..4], &[22e3, 33e3, 49.5e3, 74.25e3]);
        let r = s.result().unwrap();
        assert!(r <= 67e3 && r > 63e3, "{r} ({tried:?})");
    }

    #[test]
    fn stops_at_the_resolution() {
        let (s, tried) = run(RateSearch::new(100e3, 50, 1.5, 0.8, 1e6, 0.01), 90e3);
        assert!(tried.len() < 12, "{tried:?}");
        let (lo, hi) = (s.result().unwrap(), s.lowest_failure().unwrap());
        assert!(hi <= lo * 1.01 && lo <= 90e3 && hi > 90e3, "{lo} {hi}");
    }

    #[test]
    fn generator_ceiling_and_dead_device() {
        let (s, tried) = run(RateSearch::new(500e3, 8, 1.5, 0.8, 600e3, 0.01), 1e9);
        assert_eq!(tried, vec![500e3, 600e3]);
        assert!(s.generator_limited());
        assert_eq!(s.result(), Some(600e3));
        // Nothing ever passes: the search ends (bounded) with no result.
        let (s, tried) = run(RateSearch::new(100e3, 8, 1.5, 0.5, 1e6, 0.01), 0.0);
        assert_eq!(tried.len(), 8);
        assert_eq!(s.result(), None);
        assert!(s.next_rate().is_none());
        // Zero steps: nothing to try.
        assert!(RateSearch::new(1e3, 0, 1.5, 0.5, 1e6, 0.01)
            .next_rate()
            .is_none());
    }

    #[test]
    fn summaries() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Summary::of(&[4.0, 1.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[f64::NAN]).is_none());
    }
}
