//! The bubble budget over all peers (and the ICMPv6 error budget): a token bucket in
//! virtual time, so that a flood of destinations cannot turn a relay into a reflector.

/// Takes one token from a bucket of `burst` tokens refilled at `rate` per second, kept in
/// thousandths; `now` in ms. False (nothing taken) when empty or when `rate` is 0.
pub fn take_token(tokens: &mut u64, last: &mut u64, rate: u32, burst: u32, now: u64) -> bool {
    let rate = u64::from(rate);
    let elapsed = now.saturating_sub(*last);
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
    use super::*;

    #[test]
    fn burst_then_rate() {
        let (mut tokens, mut last) = (2_000, 0);
        assert!(take_token(&mut tokens, &mut last, 1, 2, 0));
        assert!(take_token(&mut tokens, &mut last, 1, 2, 0));
        assert!(!take_token(&mut tokens, &mut last, 1, 2, 500));
        assert!(take_token(&mut tokens, &mut last, 1, 2, 1_000));
        // Rate 0 never gives a token.
        let (mut tokens, mut last) = (5_000, 0);
        assert!(!take_token(&mut tokens, &mut last, 0, 5, 0));
    }
}
