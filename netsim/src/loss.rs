//! Impairment of the NAT's WAN link. Loss and jitter are drawn here; the delay (fixed plus
//! jitter) is only reported to the caller in each translation (the model does not queue: a
//! driver that holds each datagram for its delay sees them overtake each other). Where the draw happens is
//! [`Nat`](crate::Nat)'s business: a lost outbound datagram has still created or refreshed
//! its mapping, a lost inbound one never reached the NAT, a hairpinned one is drawn once.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One loss draw; no RNG use at all when loss is off, so loss-free runs keep the same
/// port choices whatever else changes.
pub(crate) fn lose(rng: &mut ChaCha8Rng, loss: f64) -> bool {
    // NaN (only reachable through an unvalidated config) means "no loss".
    if loss.is_nan() || loss <= 0.0 {
        return false;
    }
    rng.random::<f64>() < loss
}

/// One jitter draw, uniform in `0..=max` at microsecond resolution; no RNG use when `max`
/// is zero.
pub(crate) fn jitter(rng: &mut ChaCha8Rng, max: Duration) -> Duration {
    let us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
    if us == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rng.random_range(0..=us))
}
