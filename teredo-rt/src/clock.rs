//! The drivers' clock.
//!
//! The sans-IO core never reads a clock: every input carries `now: std::time::Instant`.
//! Drivers get that value from [`now`], which reads *tokio's* clock and converts it. Under
//! `#[tokio::test(start_paused = true)]` (or `tokio::time::pause()`) tokio's clock only moves
//! when the test advances it, so timers of minutes can be tested in milliseconds; calling
//! `std::time::Instant::now()` directly would bypass that.

use std::time::Instant;

/// The current time as a `std::time::Instant`, taken from tokio's (pausable) clock.
///
/// Outside a paused runtime this is the same as `Instant::now()`.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::now;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let before = now();
        tokio::time::advance(Duration::from_secs(600)).await;
        let elapsed = now() - before;
        assert!(elapsed >= Duration::from_secs(600), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(601), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn sleeping_jumps_instantly() {
        let wall = std::time::Instant::now();
        let before = now();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(now() - before >= Duration::from_secs(3600));
        assert!(wall.elapsed() < Duration::from_secs(60));
    }
}
