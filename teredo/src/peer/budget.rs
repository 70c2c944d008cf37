//! The bubble budget over all peers (and the ICMPv6 error budget): a token bucket in
//! virtual time, so that a flood of destinations cannot turn a relay into a reflector, nor
//! a flood of relayed bubbles a client.

use super::Time;

/// Takes one token from a bucket of `burst` tokens refilled at `rate` per second, kept in
/// thousandths; `last` is the latest refill, and the whole milliseconds since it refill the
/// bucket. False (nothing taken) when empty or when `rate` is 0.
pub fn take_token<T: Time>(tokens: &mut u64, last: &mut T, rate: u32, burst: u32, now: T) -> bool {
    let rate = u64::from(rate);
    let elapsed = T::whole_millis(now.since(*last));
    *last = (*last).max(now);
    // `rate` tokens per second = `rate` thousandths of a token per millisecond.
    *tokens = tokens
        .saturating_add(elapsed.saturating_mul(rate))
        .min(u64::from(burst) * 1000);
    if rate > 0 && *tokens >= 1000 {
        *tokens -= 1000;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn burst_then_rate() {
        let (mut tokens, mut last) = (2_000, 0u64);
        assert!(take_token(&mut tokens, &mut last, 1, 2, 0));
        assert!(take_token(&mut tokens, &mut last, 1, 2, 0));
        assert!(!take_token(&mut tokens, &mut last, 1, 2, 500));
        assert!(take_token(&mut tokens, &mut last, 1, 2, 1_000));
        // Rate 0 never gives a token.
        let (mut tokens, mut last) = (5_000, 0u64);
        assert!(!take_token(&mut tokens, &mut last, 0, 5, 0));
    }

    #[test]
    fn instants_refill_by_whole_milliseconds() {
        #[allow(clippy::disallowed_methods)] // any instant will do
        let t0 = Instant::now();
        let (mut tokens, mut last) = (1_000, t0);
        assert!(take_token(&mut tokens, &mut last, 1_000, 1, t0));
        // 0.9 ms refills nothing, and the fraction is not carried over.
        let t1 = t0 + Duration::from_micros(900);
        assert!(!take_token(&mut tokens, &mut last, 1_000, 1, t1));
        assert_eq!(last, t1);
        assert!(!take_token(
            &mut tokens,
            &mut last,
            1_000,
            1,
            t1 + Duration::from_micros(900)
        ));
        assert!(take_token(
            &mut tokens,
            &mut last,
            1_000,
            1,
            t1 + Duration::from_millis(2)
        ));
        // A clock that went back refills nothing and keeps the latest time.
        assert!(!take_token(&mut tokens, &mut last, 1_000, 1, t0));
        assert_eq!(last, t1 + Duration::from_millis(2));
    }
}
