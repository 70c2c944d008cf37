//! Token-bucket pacing: each sender may send one packet per token; tokens accrue at the
//! target rate up to a small burst, so a sender that wakes up late catches up a little but a
//! long stall is not made up for with a flood (the report shows the achieved rate instead).

use std::time::{Duration, Instant};

/// Tokens at `rate` per second, at most `burst` stored.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket filling at `rate` tokens/s (> 0) from `now`, holding at most `burst` (≥ 1);
    /// it starts with `initial` tokens (e.g. `1 - k/n` to spread the first sends of `n`
    /// senders over one interval).
    pub fn new(rate: f64, burst: f64, initial: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            tokens: initial.clamp(0.0, burst),
            last: now,
        }
    }

    /// The burst for a sender at `rate`: 20 ms worth of tokens, at least two (a sender
    /// woken a few milliseconds late still sends what it owes).
    pub fn default_burst(rate: f64) -> f64 {
        (rate * 0.020).max(2.0)
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Takes every whole token available at `now`, at most `max`; returns how many.
    pub fn take(&mut self, now: Instant, max: u32) -> u32 {
        self.refill(now);
        let n = (self.tokens.floor() as u32).min(max);
        self.tokens -= f64::from(n);
        n
    }

    /// When the next whole token is there (`now` or earlier if one is already).
    pub fn next_at(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.last + Duration::from_secs_f64(missing / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 10.0, 0.0, t0);
        assert_eq!(b.take(t0, u32::MAX), 0);
        assert_eq!(b.next_at(), t0 + Duration::from_millis(1));
        // 1 s of steady 1 ms steps: 1000 tokens.
        let sent: u32 = (1..=1000)
            .map(|ms| b.take(t0 + Duration::from_millis(ms), u32::MAX))
            .sum();
        assert_eq!(sent, 1000);
    }

    #[test]
    fn burst_caps_a_stall_and_max_caps_a_take() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, TokenBucket::default_burst(1000.0), 0.0, t0);
        // A 1 s stall yields only the 20 ms burst.
        assert_eq!(b.take(t0 + Duration::from_secs(1), 3), 3);
        assert_eq!(b.take(t0 + Duration::from_secs(1), u32::MAX), 17);
        assert_eq!(b.take(t0 + Duration::from_secs(1), u32::MAX), 0);
        // Time going backwards is ignored.
        assert_eq!(b.take(t0, u32::MAX), 0);
    }

    #[test]
    fn initial_tokens_stagger_senders() {
        let t0 = Instant::now();
        // Sender k of 4 at 1/s: first token after k/4 s.
        for k in 0..4u32 {
            let b = TokenBucket::new(1.0, 1.0, 1.0 - f64::from(k) / 4.0, t0);
            let due = b.next_at().duration_since(t0).as_secs_f64();
            assert!((due - f64::from(k) / 4.0).abs() < 1e-9, "{k}: {due}");
        }
        assert_eq!(TokenBucket::default_burst(10.0), 2.0);
    }
}
