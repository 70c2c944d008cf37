//! A histogram in the JSON report: its configuration and the count of every non-empty
//! bucket, so that reports of several generators can be merged into one histogram whose
//! percentiles are those of the union of their samples (`client-sim load-report`), never an
//! average of percentiles. Plain JSON numbers rather than HdrHistogram's V2 encoding: no
//! extra dependency, and readable with jq.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Bucket counts of a histogram of microseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramCounts {
    /// Lowest discernible value.
    pub low: u64,
    /// Highest trackable value.
    pub high: u64,
    /// Significant figures.
    pub sigfig: u8,
    /// `[value, count]` per non-empty bucket, ascending; the value is the highest
    /// equivalent value of its bucket, so recording it lands in the same bucket.
    pub buckets: Vec<(u64, u64)>,
}

impl HistogramCounts {
    /// The buckets of `h`.
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            low: h.low(),
            high: h.high(),
            sigfig: h.sigfig(),
            buckets: h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        }
    }

    /// The histogram back, or why not (bad bounds, a value beyond them).
    pub fn histogram(&self) -> Result<Histogram<u64>, String> {
        let mut h = Histogram::new_with_bounds(self.low, self.high, self.sigfig)
            .map_err(|e| format!("histogram bounds {}..{}: {e}", self.low, self.high))?;
        for &(v, n) in &self.buckets {
            h.record_n(v, n)
                .map_err(|e| format!("histogram value {v}: {e}"))?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::report::micros_histogram;

    #[test]
    fn round_trip_keeps_every_bucket() {
        let mut h = micros_histogram();
        for us in [1, 2, 999, 1000, 1001, 123_456, 99_999_999] {
            h.record_n(us, us % 7 + 1).unwrap();
        }
        let c = HistogramCounts::of(&h);
        assert_eq!(c.buckets.len(), 7);
        let back = c.histogram().unwrap();
        assert_eq!(back, h);
        let json = serde_json::to_string(&c).unwrap();
        let again: HistogramCounts = serde_json::from_str(&json).unwrap();
        assert_eq!(again.histogram().unwrap(), h);
        let bad = HistogramCounts {
            buckets: vec![(u64::MAX / 2, 1)],
            ..c
        };
        assert!(bad.histogram().unwrap_err().contains("histogram value"));
    }
}
