//! Polling with a deadline.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// How often [`wait_for`] probes.
pub const POLL: Duration = Duration::from_millis(50);

/// Calls `probe` every [`POLL`] until it returns `Ok(Some(_))`, and returns that value with the
/// time it took. `Ok(None)` means "not yet"; an `Err` ends the wait at once (e.g. the process
/// that should produce the result has died). After `timeout` the error names `what`; callers
/// add what they know (logs) with `anyhow::Context`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe()? {
            return Ok((value, start.elapsed()));
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}
