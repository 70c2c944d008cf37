//! One receive loop per server address.
//!
//! Each worker owns a sans-IO [`Server`] (the core keeps no per-client state, so two
//! instances behave as one and need no locking), a receive and a send buffer allocated once,
//! and shares both UDP sockets with the other worker: a cone router solicitation received on
//! one address is answered from the other.

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use teredo::server::{Handled, Local, Output, Server, ServerConfig};
use teredo::DropReason;
use teredo_rt::{Shutdown, MAX_DATAGRAM};
use tokio::net::UdpSocket;

use crate::metrics::{local_index, Direction, WorkerMetrics};
use crate::native::NativeSink;

/// Pause after an unexpected receive error, so a persistent one cannot spin a core.
const RECV_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// The two UDP sockets, indexed by [`local_index`].
pub(crate) type Sockets = Arc<[UdpSocket; 2]>;

pub(crate) struct Worker {
    local: Local,
    core: Server,
    sockets: Sockets,
    native: NativeSink,
    metrics: WorkerMetrics,
    /// `MAX_DATAGRAM + 1` bytes: a read that fills it may have been truncated.
    recv_buf: Box<[u8]>,
    /// Where the core writes its output.
    send_buf: Box<[u8]>,
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
            recv_buf: vec![0u8; MAX_DATAGRAM + 1].into_boxed_slice(),
            send_buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
        }
    }

    /// Receives and handles datagrams until `shutdown`.
    pub(crate) async fn run(mut self, shutdown: Shutdown) -> anyhow::Result<()> {
        let sockets = Arc::clone(&self.sockets);
        let socket = &sockets[local_index(self.local)];
        let mut stop = pin!(shutdown.wait());
        loop {
            let received = tokio::select! {
                biased;
                () = &mut stop => break,
                r = socket.recv_from(&mut self.recv_buf) => r,
            };
            match received {
                Ok((n, from)) => {
                    let started = std::time::Instant::now();
                    self.handle(n, from).await;
                    self.metrics
                        .duration
                        .observe(started.elapsed().as_secs_f64());
                }
                Err(e) => self.recv_error(&e).await,
            }
        }
        tracing::debug!(local = self.local.as_str(), "server worker stopped");
        Ok(())
    }

    async fn recv_error(&self, e: &io::Error) {
        match e.kind() {
            // ICMP errors reported on the socket and interrupted calls are harmless.
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock => {
                tracing::debug!(local = self.local.as_str(), error = %e, "UDP receive error");
            }
            _ => {
                tracing::warn!(local = self.local.as_str(), error = %e, "UDP receive error");
                tokio::time::sleep(RECV_ERROR_BACKOFF).await;
            }
        }
    }

    async fn handle(&mut self, n: usize, from: SocketAddr) {
        let m = &self.metrics;
        m.received.inc();
        if n >= self.recv_buf.len() {
            tracing::debug!(%from, local = self.local.as_str(), "oversized datagram");
            m.dropped(DropReason::Oversized);
            return;
        }
        let SocketAddr::V4(from) = from else {
            // Cannot happen on an IPv4 socket; count it as the source check it fails.
            m.dropped(DropReason::NonGlobalSource);
            return;
        };
        let handled =
            match self
                .core
                .handle_udp(teredo_rt::now(), self.local, from, &self.recv_buf[..n])
            {
                Ok(h) => h,
                Err(reason) => {
                    m.dropped(reason);
                    return;
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
                from_local,
                to,
                len,
            } => {
                let socket = &self.sockets[local_index(from_local)];
                match socket.send_to(&self.send_buf[..len], to).await {
                    Ok(_) => match handled {
                        Handled::RouterSolicitation { .. } => m.advertisement(from_local),
                        Handled::ForwardedToClient { bubble, .. }
                        | Handled::ForwardedNative { bubble } => {
                            m.forwarded(Direction::ToClient, bubble);
                        }
                    },
                    Err(e) => {
                        tracing::debug!(
                            %to, from_local = from_local.as_str(), error = %e, len,
                            "UDP send failed"
                        );
                        m.dropped(DropReason::SendFailed);
                    }
                }
                tracing::trace!(%from, %to, ?handled, len, "answered");
            }
            Output::Ipv6 { len } => {
                let bubble = match handled {
                    Handled::ForwardedNative { bubble }
                    | Handled::ForwardedToClient { bubble, .. } => bubble,
                    Handled::RouterSolicitation { .. } => false,
                };
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
        }
    }
}
