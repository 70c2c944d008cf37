//! Peer validity (RFC 4380 §5.2.4): a trusted peer is used directly while its last
//! reception is younger than the validity period (30 s); after that a new bubble exchange
//! runs before the next packet goes out.

use super::Time;

/// A trusted peer last heard from at `last_rx` is still valid at `now`: the time since
/// that reception (zero if it lies ahead) is under `validity`. Measured as an age rather
/// than against a deadline, so that a validity too long to add to `last_rx` means "never
/// expires" and a zero validity means "never valid".
pub fn is_valid<T: Time>(now: T, trusted: bool, last_rx: Option<T>, validity: T::Span) -> bool {
    trusted && last_rx.is_some_and(|t| now.since(t) < validity)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn valid_for_the_period_after_the_last_reception() {
        assert!(is_valid(29_999u64, true, Some(0), 30_000));
        assert!(!is_valid(30_000u64, true, Some(0), 30_000));
        assert!(!is_valid(1u64, false, Some(0), 30_000));
        assert!(!is_valid(1u64, true, None, 30_000));
        // A reception "in the future" (time went backwards) still counts.
        assert!(is_valid(0u64, true, Some(10), 30_000));
    }

    #[test]
    fn extreme_periods() {
        #[allow(clippy::disallowed_methods)] // any instant will do
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(3600);
        assert!(is_valid(later, true, Some(t0), Duration::MAX));
        assert!(is_valid(u64::MAX, true, Some(u64::MAX - 1), u64::MAX));
        assert!(!is_valid(t0, true, Some(later), Duration::ZERO));
        assert!(!is_valid(5u64, true, Some(5), 0));
    }
}
