//! Polling with a deadline, and waiting for a datagram.

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

/// The next datagram on `socket` and where it came from; panics (failing the test) when none
/// arrives within `limit`.
pub async fn recv_udp(
    socket: &tokio::net::UdpSocket,
    limit: Duration,
) -> (Vec<u8>, std::net::SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(limit, socket.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("nothing received within {limit:?}"))
        .expect("recv_from");
    buf.truncate(n);
    (buf, from)
}
