//! The peer rules the relay and the client share (RFC 4380 §5.2.4, §5.2.6, §5.4.1): bubble
//! pacing, the per-window bubble cap, peer validity, the mappings a peer may be reached
//! at, and the token bucket that budgets
//! bubbles over all peers (the relay's bubbles and ICMPv6 errors, the client's answers to
//! relayed bubbles). Small pure functions over a [`Time`] (an `Instant` for the client, a
//! millisecond tick for the relay's compact table), so that a pacing fix is made once; what
//! differs between the two (durations, caps, rates) comes in as parameters.

pub mod budget;
pub mod mapping;
pub mod pacing;
pub mod validity;

use std::time::{Duration, Instant};

pub use budget::take_token;
pub use mapping::{check_teredo_destination, is_usable_mapping};
pub use pacing::{attempt_limit, count_bubble, gate, start_window, window_over, Gate, Pacing};
pub use validity::is_valid;

/// Peer validity (RFC 4380 §5.2.4): 30 s since the last reception.
pub const VALIDITY: Duration = Duration::from_secs(30);
/// Bubble spacing and retransmission timeout (RFC 4380 §5.2.6, §5.4.1): 2 s.
pub const BUBBLE_INTERVAL: Duration = Duration::from_secs(2);
/// Bubble repetitions after the first (RFC 4380 §5.4.1): 3.
pub const BUBBLE_RETRIES: u8 = 3;
/// Window of the bubble cap (RFC 4380 §5.2.6): 300 s.
pub const BUBBLE_WINDOW: Duration = Duration::from_secs(300);
/// Bubbles allowed per window without an answer (RFC 4380 §5.2.6): 4.
pub const MAX_BUBBLES_PER_WINDOW: u8 = 4;

/// A point in time the rules can compare and move forward.
pub trait Time: Copy + Ord {
    /// A length of time.
    type Span: Copy + Ord;
    /// `self + d`, `None` on overflow (the rules then treat the deadline as never).
    fn after(self, d: Self::Span) -> Option<Self>;
    /// The time since `earlier`; zero when `earlier` is later (a clock that went back).
    fn since(self, earlier: Self) -> Self::Span;
    /// A span in whole milliseconds (rounded down, saturating): the token bucket's unit.
    fn whole_millis(d: Self::Span) -> u64;
}

impl Time for Instant {
    type Span = Duration;
    fn after(self, d: Duration) -> Option<Self> {
        self.checked_add(d)
    }
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
    fn whole_millis(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Milliseconds on a monotonic tick (the relay's clock).
impl Time for u64 {
    type Span = Self;
    fn after(self, d: Self) -> Option<Self> {
        self.checked_add(d)
    }
    fn since(self, earlier: Self) -> Self {
        self.saturating_sub(earlier)
    }
    fn whole_millis(d: Self) -> u64 {
        d
    }
}
