//! A per-source rate limit in bounded memory: a fixed-size table of token buckets indexed by
//! a keyed hash of the source IPv4 address.
//!
//! Why: a Teredo server answers every router solicitation, and the RS source is trivially
//! spoofed, so a flood of RSs "from" a victim makes the server send RAs to that victim
//! (RFC 4380 §7.4.1). Limiting RAs per destination address bounds what any one victim
//! receives. The table never grows: sources that hash to the same bucket share it. The hash
//! is keyed (the key comes from the caller, so a run can be replayed), so an attacker who
//! does not know the key cannot aim at a legitimate client's bucket.
//!
//! Time is virtual (the caller passes `now`), tokens are kept in thousandths so that rates
//! below one per millisecond refill exactly.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Instant;

/// Default number of buckets (16 bytes each: 1 MiB).
pub const DEFAULT_BUCKETS: usize = 1 << 16;
/// Largest number of buckets accepted (the table is allocated at once).
pub const MAX_BUCKETS: usize = 1 << 24;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Thousandths of a token.
    tokens: u64,
    /// Milliseconds since the limiter's epoch at the last refill.
    last_ms: u64,
}

/// Token buckets per source address: `rate` per second, bursts of up to `burst`.
pub struct RateLimiter {
    rate: u64,
    cap: u64,
    key: u64,
    mask: usize,
    epoch: Option<Instant>,
    buckets: Box<[Bucket]>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .field("burst", &(self.cap / 1000))
            .field("buckets", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

/// A bijective 64-bit mixer (the splitmix64 finaliser).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RateLimiter {
    /// `rate` tokens per second (at least 1), at most `burst` (at least 1) saved up, in a
    /// table of `buckets` entries (rounded up to a power of two, clamped to
    /// 1..=[`MAX_BUCKETS`]), hashed with `key`.
    pub fn new(rate: u32, burst: u32, buckets: usize, key: u64) -> Self {
        let n = buckets.clamp(1, MAX_BUCKETS).next_power_of_two();
        let cap = u64::from(burst.max(1)) * 1000;
        Self {
            rate: u64::from(rate.max(1)),
            cap,
            key,
            mask: n - 1,
            epoch: None,
            buckets: vec![
                Bucket {
                    tokens: cap,
                    last_ms: 0
                };
                n
            ]
            .into_boxed_slice(),
        }
    }

    /// Bytes the table takes.
    pub fn memory_bytes(&self) -> usize {
        self.buckets.len() * size_of::<Bucket>()
    }

    fn index(&self, ip: Ipv4Addr) -> usize {
        (mix(u64::from(u32::from(ip)) ^ self.key) as usize) & self.mask
    }

    /// Takes one token for `ip` at `now`; false when its bucket is empty (the packet is to
    /// be dropped). `now` going backwards refills nothing.
    pub fn allow(&mut self, now: Instant, ip: Ipv4Addr) -> bool {
        let epoch = *self.epoch.get_or_insert(now);
        let ms =
            u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX);
        let i = self.index(ip);
        let (rate, cap) = (self.rate, self.cap);
        let Some(b) = self.buckets.get_mut(i) else {
            return true;
        };
        let elapsed = ms.saturating_sub(b.last_ms);
        b.tokens = b
            .tokens
            .saturating_add(elapsed.saturating_mul(rate))
            .min(cap);
        b.last_ms = b.last_ms.max(ms);
        if b.tokens >= 1000 {
            b.tokens -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The only clock read of these tests: a base for virtual time.
    #[allow(clippy::disallowed_methods)]
    fn base() -> Instant {
        Instant::now()
    }

    fn ip(n: u32) -> Ipv4Addr {
        Ipv4Addr::from(0xc633_6400 + n)
    }

    #[test]
    fn burst_then_rate() {
        let t0 = base();
        let mut l = RateLimiter::new(10, 5, 1024, 42);
        let allowed = (0..100).filter(|_| l.allow(t0, ip(1))).count();
        assert_eq!(allowed, 5, "the burst");
        // 10 per second: one token every 100 ms.
        assert!(!l.allow(t0 + Duration::from_millis(99), ip(1)));
        assert!(l.allow(t0 + Duration::from_millis(100), ip(1)));
        assert!(!l.allow(t0 + Duration::from_millis(100), ip(1)));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| l.allow(later, ip(1))).count(), 5);
    }

    #[test]
    fn sources_are_independent() {
        let t0 = base();
        let mut l = RateLimiter::new(1, 1, 1 << 16, 7);
        assert!(l.allow(t0, ip(1)));
        assert!(!l.allow(t0, ip(1)));
        // With 65536 buckets, a handful of other sources almost surely have their own; count
        // those that were not limited.
        let fresh = (2..50).filter(|n| l.allow(t0, ip(*n))).count();
        assert!(fresh >= 45, "{fresh}");
    }

    #[test]
    fn a_flood_of_distinct_sources_is_bounded_per_bucket() {
        // One bucket: every source shares it, so at most `burst` pass at one instant, and the
        // table never grows whatever the number of sources.
        let t0 = base();
        let mut l = RateLimiter::new(100, 3, 1, 1);
        let bytes = l.memory_bytes();
        let allowed = (0..100_000u32)
            .filter(|n| l.allow(t0, Ipv4Addr::from(*n)))
            .count();
        assert_eq!(allowed, 3);
        assert_eq!(l.memory_bytes(), bytes);
        assert_eq!(bytes, 16);
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let t0 = base() + Duration::from_secs(10);
        let mut l = RateLimiter::new(1000, 1, 16, 3);
        assert!(l.allow(t0, ip(9)));
        assert!(!l.allow(t0 - Duration::from_secs(5), ip(9)));
        assert!(!l.allow(t0, ip(9)));
        assert!(l.allow(t0 + Duration::from_millis(1), ip(9)));
    }

    #[test]
    fn sizes_are_clamped_to_powers_of_two() {
        assert_eq!(RateLimiter::new(1, 1, 0, 0).memory_bytes(), 16);
        assert_eq!(RateLimiter::new(1, 1, 1000, 0).memory_bytes(), 1024 * 16);
        assert_eq!(
            RateLimiter::new(1, 1, usize::MAX, 0).memory_bytes(),
            MAX_BUCKETS * 16
        );
    }
}
