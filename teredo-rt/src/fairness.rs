//! Taking turns under overload.

/// Call after a receive loop took a full batch (more is probably waiting): lets the other
/// tasks of the thread run first.
///
/// Under overload a socket or TUN queue never runs dry, and readiness that is already set
/// plus non-blocking `recvmmsg`/`read` calls do not use tokio's cooperative budget, so without
/// this the task would never return to the runtime: the other direction's queue (a TUN's 500
/// packets, the socket buffer with the clients' bubbles), the other address's socket, the
/// timers and the metrics endpoint would wait. Measured with the relay, one client at 160 k
/// echo/s: it took the requests and dropped almost every reply in the TUN. `yield_now` also
/// lets the runtime poll for I/O events before this task runs again, so the loops take turns
/// batch by batch.
pub async fn yield_after_full_batch() {
    tokio::task::yield_now().await;
}
