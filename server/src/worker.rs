//! One receive loop per server address, batched: each wake-up takes up to [`BATCH`] datagrams
//! with one `recvmmsg`, the sans-IO core answers each into one reusable buffer, the answers
//! are copied into a send batch per outgoing socket, and each batch leaves with one
//! `sendmmsg` ([`teredo_rt::batch`]). Nothing is allocated per datagram. A loop that took a
//! full batch yields before the next ([`teredo_rt::yield_after_full_batch`]), so under
//! overload on one address the other address, the native side and the metrics endpoint
//! still get their turns.
//!
//! Each worker owns a sans-IO [`Server`] (the core keeps no per-client state, so two
//! instances behave as one and need no locking) and shares both UDP sockets with the other
//! worker: a cone router solicitation received on one address is answered from the other.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use teredo::io::{Kind, Local, Output};
use teredo::server::{Handled, Server, ServerConfig};
use teredo::DropReason;
use teredo_rt::batch::{RecvBatch, SendBatch, Sent};
use teredo_rt::{yield_after_full_batch, Shutdown, MAX_DATAGRAM};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::metrics::{Direction, WorkerMetrics, LOCALS};
use crate::native::NativeSink;

/// Pause after an unexpected receive error, so a persistent one cannot spin a core.
const RECV_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Datagrams taken per `recvmmsg` and answers sent per `sendmmsg` at most.
pub(crate) const BATCH: usize = 64;

/// Bytes of answers a send batch holds: a batch of typical answers (RAs are about 120
/// bytes, relayed packets at most a 1280-byte IPv6 packet plus headers), and always room for
/// one datagram of any size once the batch is empty.
const SEND_ARENA: usize = BATCH * 1500 + MAX_DATAGRAM;

/// Class of an answer in a send batch (reported back when it has been sent).
const CLASS_RA: u8 = 0;
/// A bubble relayed to a client.
const CLASS_BUBBLE: u8 = 1;
/// Another (ICMPv6) packet relayed to a client.
const CLASS_PACKET: u8 = 2;

/// The send-batch class of an output of the given kind.
fn class_of(kind: Kind) -> u8 {
    if kind == Kind::RouterAdvertisement {
        CLASS_RA
    } else if kind.is_bubble() {
        CLASS_BUBBLE
    } else {
        CLASS_PACKET
    }
}

/// The two UDP sockets, indexed by [`Local::index`].
pub(crate) type Sockets = Arc<[UdpSocket; 2]>;

pub(crate) struct Worker {
    local: Local,
    core: Server,
    sockets: Sockets,
    native: NativeSink,
    metrics: WorkerMetrics,
    /// [`BATCH`] slots of `MAX_DATAGRAM + 1` bytes: a datagram that fills one may have been
    /// truncated (the kernel also flags it).
    recv: RecvBatch,
    /// Where the core writes one answer.
    send_buf: Box<[u8]>,
    /// Answers leaving from each local address, indexed by [`Local::index`].
    out: [SendBatch; 2],
}

impl Worker {
    pub(crate) fn new(
        local: Local,
        config: ServerConfig,
        sockets: Sockets,
        native: NativeSink,
        metrics: WorkerMetrics,
    ) -> Self {
        Self {
            local,
            core: Server::new(config),
            sockets,
            native,
            metrics,
            recv: RecvBatch::new(BATCH, MAX_DATAGRAM + 1),
            send_buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
            out: [
                SendBatch::new(BATCH, SEND_ARENA, false),
                SendBatch::new(BATCH, SEND_ARENA, false),
            ],
        }
    }

    /// Receives and handles batches of datagrams until `shutdown`.
    pub(crate) async fn run(mut self, shutdown: Shutdown) -> anyhow::Result<()> {
        let sockets = Arc::clone(&self.sockets);
        let socket = &sockets[self.local.index()];
        let fd = socket.as_raw_fd();
        let mut stop = pin!(shutdown.wait());
        loop {
            let ready = tokio::select! {
                biased;
                () = &mut stop => break,
                r = socket.readable() => r,
            };
            if let Err(e) = ready {
                recv_error(self.local, &e).await;
                continue;
            }
            let recv = &mut self.recv;
            match socket.try_io(Interest::READABLE, || recv.recv(fd, BATCH)) {
                Ok(n) => {
                    let started = Instant::now();
                    for i in 0..n {
                        self.handle(i).await;
                    }
                    self.flush().await;
                    let took = started.elapsed().as_secs_f64();
                    for _ in 0..n {
                        self.metrics.duration.observe(took);
                    }
                    if n == BATCH {
                        yield_after_full_batch().await;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => recv_error(self.local, &e).await,
            }
        }
        tracing::debug!(local = self.local.as_str(), "server worker stopped");
        Ok(())
    }

    /// Handles datagram `i` of the received batch: counts it, and queues its answer (or
    /// sends it to the native side).
    async fn handle(&mut self, i: usize) {
        let m = &self.metrics;
        m.received.inc();
        // The received datagram is only borrowed in this block: nothing borrowed from the
        // batch lives across an await (the batch is `Send`, not `Sync`).
        let (from, handled) = {
            let d = self.recv.get(i);
            let Some(from) = d.from else {
                // No source address: nothing to answer.
                m.dropped(DropReason::NoSourceAddress);
                return;
            };
            if d.truncated || d.data.len() > MAX_DATAGRAM {
                tracing::debug!(%from, local = self.local.as_str(), "oversized datagram");
                m.dropped(DropReason::Oversized);
                return;
            }
            let SocketAddr::V4(from) = from else {
                // Cannot happen on an IPv4 socket.
                m.dropped(DropReason::NoSourceAddress);
                return;
            };
            match self
                .core
                .handle_udp(teredo_rt::now(), self.local, from, d.data)
            {
                Ok(h) => (from, h),
                Err(reason) => {
                    m.dropped(reason);
                    return;
                }
            }
        };
        if let Handled::RouterSolicitation { cone, .. } = handled {
            m.solicitation(cone);
        }
        let Some(output) = self.core.poll_output(&mut self.send_buf) else {
            // Only if the send buffer were too small (the core logged it).
            m.dropped(DropReason::SendFailed);
            return;
        };
        match output {
            Output::Udp {
                local: from_local,
                to,
                len,
                kind,
            } => {
                let class = class_of(kind);
                let k = from_local.index();
                let data = &self.send_buf[..len];
                if !self.out[k].push(data, to.into(), class) {
                    self.flush_one(k).await;
                    if !self.out[k].push(&self.send_buf[..len], to.into(), class) {
                        // Cannot happen: an empty batch takes any datagram.
                        self.metrics.dropped(DropReason::SendFailed);
                        return;
                    }
                }
                tracing::trace!(%from, %to, ?handled, len, "answer queued");
            }
            Output::Ipv6 { len, kind } => {
                let bubble = kind.is_bubble();
                match self.native.send(&self.send_buf[..len]).await {
                    Ok(()) => {
                        m.forwarded(Direction::ToNative, bubble);
                        tracing::trace!(%from, len, bubble, "forwarded to native IPv6");
                    }
                    Err(e) if matches!(self.native, NativeSink::Disabled) => {
                        tracing::debug!(%from, error = %e, "native packet dropped");
                        m.dropped(DropReason::NativeDisabled);
                    }
                    Err(e) => {
                        tracing::debug!(%from, error = %e, len, "native send failed");
                        m.dropped(DropReason::SendFailed);
                    }
                }
            }
            // The server core emits nothing else.
            other => {
                tracing::debug!(%from, ?other, "unexpected server output dropped");
                m.dropped(DropReason::SendFailed);
            }
        }
    }

    /// Sends both batches of answers.
    async fn flush(&mut self) {
        for k in 0..2 {
            self.flush_one(k).await;
        }
    }

    /// Sends the answers leaving from local address `k` (one `sendmmsg` unless the socket
    /// buffer fills, in which case it waits until the socket is writable and resumes).
    async fn flush_one(&mut self, k: usize) {
        let socket = &self.sockets[k];
        let fd = socket.as_raw_fd();
        let from_local = LOCALS[k];
        let m = &self.metrics;
        let out = &mut self.out[k];
        while !out.is_empty() {
            match socket.try_io(Interest::WRITABLE, || {
                out.send(fd, |s| report_sent(m, from_local, s))
            }) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = socket.writable().await {
                        tracing::warn!(from_local = from_local.as_str(), error = %e, "UDP socket not writable; answers dropped");
                        m.dropped(DropReason::SendFailed);
                        out.clear();
                    }
                }
                Err(e) => {
                    tracing::debug!(from_local = from_local.as_str(), error = %e, "UDP send failed; batch dropped");
                    m.dropped(DropReason::SendFailed);
                    out.clear();
                }
            }
        }
    }
}

/// Counts one sent (or failed) answer.
fn report_sent(m: &WorkerMetrics, from_local: Local, s: Sent) {
    if let Some(e) = &s.error {
        tracing::debug!(from_local = from_local.as_str(), error = %e, len = s.bytes, "UDP send failed");
        m.dropped(DropReason::SendFailed);
        return;
    }
    match s.class {
        CLASS_RA => m.advertisement(from_local),
        CLASS_BUBBLE => m.forwarded(Direction::ToClient, true),
        _ => m.forwarded(Direction::ToClient, false),
    }
}

/// Logs a receive error; pauses after an unexpected one.
async fn recv_error(local: Local, e: &io::Error) {
    match e.kind() {
        // ICMP errors reported on the socket and interrupted calls are harmless.
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock => {
            tracing::debug!(local = local.as_str(), error = %e, "UDP receive error");
        }
        _ => {
            tracing::warn!(local = local.as_str(), error = %e, "UDP receive error");
            tokio::time::sleep(RECV_ERROR_BACKOFF).await;
        }
    }
}
