//! Peer validity (RFC 4380 §5.2.4): a trusted peer is used directly while its last
//! reception is younger than the validity period (30 s); after that a new bubble exchange
//! runs before the next packet goes out.

use super::Time;

/// A trusted peer last heard from at `last_rx` is still valid at `now`.
pub fn is_valid<T: Time>(now: T, trusted: bool, last_rx: Option<T>, validity: T::Span) -> bool {
    trusted
        && last_rx
            .and_then(|t| t.after(validity))
            .is_some_and(|end| now < end)
}

#[cfg(test)]
mod tests {
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
}
