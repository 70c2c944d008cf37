//! The run over time, for `load --html`: one sample a second of the offered, sent and
//! received rates, the loss, the RTT percentiles of the answers that arrived in that second,
//! qualifications per second and open NAT mappings; and each trial's RTT distribution.
//!
//! Memory is bounded whatever the run's length: beyond [`MAX_SAMPLES`] samples, neighbours
//! are merged in pairs and the step doubles (a 10-hour run keeps 2 400 samples of 16 s).

use hdrhistogram::Histogram;

/// Most samples kept; past that, pairs merge and the step doubles.
pub const MAX_SAMPLES: usize = 3600;

/// Most trials whose RTT distribution is kept (`--find-max` runs at most 24).
pub const MAX_TRIALS: usize = 32;

/// Percentiles at which a trial's RTT distribution is read (the CDF's points).
const CDF_PERCENTILES: &[f64] = &[
    0.0, 1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 98.0, 99.0, 99.5,
    99.9, 99.95, 99.99, 100.0,
];

/// Cumulative readings of the run's counters at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Load packets sent (counted ones: those of the trial running when sent).
    pub sent: u64,
    /// Distinct answers.
    pub received: u64,
    /// Clients qualified.
    pub qualified: u64,
    /// NAT mappings open now.
    pub nat_mappings: u64,
    /// Offered rate of the trial running now (0: none), pps.
    pub offered_pps: f64,
    /// Trial running now (0: none).
    pub trial: u32,
}

/// The run over one interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// End of the interval, seconds since the run started.
    pub t_s: f64,
    /// Length of the interval, seconds.
    pub span_s: f64,
    /// Offered rate (time-weighted mean over the interval), pps.
    pub offered_pps: f64,
    /// Packets sent in the interval.
    pub sent: u64,
    /// Answers that arrived in the interval.
    pub received: u64,
    /// Clients qualified in the interval.
    pub qualified: u64,
    /// NAT mappings open at the end.
    pub nat_mappings: u64,
    /// RTT percentiles of the interval's answers, ms (the worse second's when merged).
    pub rtt_p50_ms: Option<f64>,
    /// 99th percentile.
    pub rtt_p99_ms: Option<f64>,
    /// 99.9th percentile.
    pub rtt_p99_9_ms: Option<f64>,
    /// Trial running at the end (0: none).
    pub trial: u32,
}

impl Sample {
    /// Packets sent per second.
    pub fn sent_pps(&self) -> f64 {
        self.sent as f64 / self.span_s.max(1e-9)
    }

    /// Answers per second.
    pub fn received_pps(&self) -> f64 {
        self.received as f64 / self.span_s.max(1e-9)
    }

    /// Qualifications per second.
    pub fn qualified_per_s(&self) -> f64 {
        self.qualified as f64 / self.span_s.max(1e-9)
    }

    /// Percent of the interval's packets not matched by its answers (an answer arrives
    /// within an RTT of its packet, so within the same second nearly always); `None` when
    /// nothing was sent.
    pub fn loss_percent(&self) -> Option<f64> {
        (self.sent > 0)
            .then(|| 100.0 * self.sent.saturating_sub(self.received) as f64 / self.sent as f64)
    }

    /// `self` followed by `next` as one sample.
    fn merge(&self, next: &Self) -> Self {
        let span = self.span_s + next.span_s;
        let worse = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Self {
            t_s: next.t_s,
            span_s: span,
            offered_pps: (self.offered_pps * self.span_s + next.offered_pps * next.span_s)
                / span.max(1e-9),
            sent: self.sent + next.sent,
            received: self.received + next.received,
            qualified: self.qualified + next.qualified,
            nat_mappings: next.nat_mappings,
            rtt_p50_ms: worse(self.rtt_p50_ms, next.rtt_p50_ms),
            rtt_p99_ms: worse(self.rtt_p99_ms, next.rtt_p99_ms),
            rtt_p99_9_ms: worse(self.rtt_p99_9_ms, next.rtt_p99_9_ms),
            trial: next.trial,
        }
    }
}

/// One trial's RTT distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialRtt {
    /// Trial number.
    pub trial: u32,
    /// Offered rate, pps.
    pub offered_pps: f64,
    /// The trial's verdict.
    pub passed: bool,
    /// (RTT ms, percentile) points, both ascending.
    pub cdf: Vec<(f64, f64)>,
}

/// The recorded run.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    samples: Vec<Sample>,
    /// Interval a stored sample covers, seconds (doubles at each merge).
    step_s: f64,
    /// Seconds not yet a full step.
    pending: Option<Sample>,
    last: Reading,
    trials: Vec<TrialRtt>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self {
            samples: Vec::new(),
            step_s: 1.0,
            pending: None,
            last: Reading::default(),
            trials: Vec::new(),
        }
    }
}

fn ms_at(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
}

impl Timeline {
    /// Records the interval since the previous reading; `rtt` holds the RTTs (µs) of the
    /// answers that arrived in it.
    pub fn record(&mut self, now: Reading, rtt: &Histogram<u64>) {
        let span = now.t_s - self.last.t_s;
        if span <= 0.0 {
            return;
        }
        let offered = if now.trial != 0 && now.trial == self.last.trial {
            now.offered_pps
        } else {
            // A trial started or ended in the interval: count the part it ran as unknown.
            now.offered_pps.min(self.last.offered_pps)
        };
        let s = Sample {
            t_s: now.t_s,
            span_s: span,
            offered_pps: offered,
            sent: now.sent.saturating_sub(self.last.sent),
            received: now.received.saturating_sub(self.last.received),
            qualified: now.qualified.saturating_sub(self.last.qualified),
            nat_mappings: now.nat_mappings,
            rtt_p50_ms: ms_at(rtt, 0.5),
            rtt_p99_ms: ms_at(rtt, 0.99),
            rtt_p99_9_ms: ms_at(rtt, 0.999),
            trial: now.trial,
        };
        self.last = now;
        self.push(s);
    }

    /// Adds a one-interval sample, merging it into the pending step.
    fn push(&mut self, s: Sample) {
        let merged = match self.pending.take() {
            Some(p) => p.merge(&s),
            None => s,
        };
        // A tick a little early still makes a full second.
        if merged.span_s < 0.75 * self.step_s {
            self.pending = Some(merged);
            return;
        }
        self.samples.push(merged);
        if self.samples.len() >= MAX_SAMPLES {
            self.samples = self
                .samples
                .chunks(2)
                .map(|c| match c {
                    [a, b] => a.merge(b),
                    [a] => a.clone(),
                    _ => Sample::default(),
                })
                .collect();
            self.step_s *= 2.0;
        }
    }

    /// Keeps a finished trial's RTT distribution (`rtt` in µs).
    pub fn trial_done(&mut self, trial: u32, offered_pps: f64, passed: bool, rtt: &Histogram<u64>) {
        if self.trials.len() >= MAX_TRIALS || rtt.is_empty() {
            return;
        }
        let cdf = CDF_PERCENTILES
            .iter()
            .map(|p| (rtt.value_at_quantile(p / 100.0) as f64 / 1000.0, *p))
            .collect();
        self.trials.push(TrialRtt {
            trial,
            offered_pps,
            passed,
            cdf,
        });
    }

    /// The samples, oldest first (the last, partial step included).
    pub fn samples(&self) -> Vec<Sample> {
        let mut v = self.samples.clone();
        v.extend(self.pending.clone());
        v
    }

    /// Seconds a stored sample covers.
    pub fn step_s(&self) -> f64 {
        self.step_s
    }

    /// Every recorded trial's RTT distribution.
    pub fn trials(&self) -> &[TrialRtt] {
        &self.trials
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::report::micros_histogram;

    fn reading(t: f64, sent: u64, received: u64, trial: u32) -> Reading {
        Reading {
            t_s: t,
            sent,
            received,
            qualified: t as u64 * 10,
            nat_mappings: 5,
            offered_pps: if trial > 0 { 100.0 } else { 0.0 },
            trial,
        }
    }

    #[test]
    fn one_sample_a_second_from_the_counters() {
        let mut tl = Timeline::default();
        let mut h = micros_histogram();
        tl.record(reading(1.0, 0, 0, 0), &h);
        for us in [1000, 2000, 3000] {
            h.record(us).unwrap();
        }
        tl.record(reading(2.0, 100, 90, 1), &h);
        tl.record(reading(3.0, 200, 190, 1), &micros_histogram());
        let s = tl.samples();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].loss_percent(), None);
        assert_eq!(s[0].qualified_per_s(), 10.0);
        assert_eq!(s[1].sent_pps(), 100.0);
        assert_eq!(s[1].loss_percent(), Some(10.0));
        // HDR precision: 3 significant figures.
        let near = |v: Option<f64>, want: f64| (v.unwrap() - want).abs() < 0.005;
        assert!(near(s[1].rtt_p50_ms, 2.0), "{:?}", s[1]);
        assert!(near(s[1].rtt_p99_9_ms, 3.0), "{:?}", s[1]);
        // The trial started within the second: its offered rate is not claimed for it.
        assert_eq!(s[1].offered_pps, 0.0);
        assert_eq!(s[2].offered_pps, 100.0);
        assert_eq!(s[2].received_pps(), 100.0);
        assert_eq!(s[2].rtt_p50_ms, None);
        // A reading at the same instant adds nothing.
        tl.record(reading(3.0, 300, 300, 1), &h);
        assert_eq!(tl.samples().len(), 3);
    }

    #[test]
    fn memory_is_bounded_and_totals_survive_merging() {
        let mut tl = Timeline::default();
        let h = micros_histogram();
        let n = 3 * MAX_SAMPLES as u64 + 7;
        for t in 1..=n {
            tl.record(reading(t as f64, t * 10, t * 9, 1), &h);
        }
        let s = tl.samples();
        assert!(s.len() <= MAX_SAMPLES, "{}", s.len());
        assert_eq!(tl.step_s(), 4.0);
        // Nothing lost in the merges: the totals and the time covered are all there.
        assert_eq!(s.iter().map(|s| s.sent).sum::<u64>(), n * 10);
        assert_eq!(s.iter().map(|s| s.received).sum::<u64>(), n * 9);
        assert!((s.iter().map(|s| s.span_s).sum::<f64>() - n as f64).abs() < 1e-6);
        assert_eq!(s.last().unwrap().t_s, n as f64);
        assert!(s.windows(2).all(|w| w[0].t_s < w[1].t_s));
        assert!(s
            .iter()
            .all(|s| (s.loss_percent().unwrap() - 10.0).abs() < 1e-9));
    }

    #[test]
    fn merged_percentiles_keep_the_worse_second() {
        let a = Sample {
            span_s: 1.0,
            rtt_p99_ms: Some(2.0),
            offered_pps: 100.0,
            ..Sample::default()
        };
        let b = Sample {
            span_s: 1.0,
            rtt_p99_ms: Some(5.0),
            offered_pps: 300.0,
            ..Sample::default()
        };
        let m = a.merge(&b);
        assert_eq!(m.rtt_p99_ms, Some(5.0));
        assert_eq!(m.offered_pps, 200.0);
        assert_eq!(m.rtt_p50_ms, None);
    }

    #[test]
    fn trial_distributions() {
        let mut tl = Timeline::default();
        let mut h = micros_histogram();
        tl.trial_done(1, 10.0, true, &h);
        assert!(tl.trials().is_empty(), "no answers, no distribution");
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        for t in 0..40 {
            tl.trial_done(t, 10.0, t % 2 == 0, &h);
        }
        assert_eq!(tl.trials().len(), MAX_TRIALS);
        let cdf = &tl.trials()[0].cdf;
        assert_eq!(cdf.first(), Some(&(0.001, 0.0)));
        assert_eq!(cdf.last(), Some(&(1.0, 100.0)));
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
    }
}
