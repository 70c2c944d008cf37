//! The native IPv6 side: where packets from Teredo clients to non-Teredo destinations go.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use teredo::wire::Ipv6Header;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use crate::config::NativeSide;

/// Kernel send buffer requested for the raw socket.
const RAW_SEND_BUFFER: usize = 4 * 1024 * 1024;

/// The opened form of a [`NativeSide`], shared by the workers.
#[derive(Clone, Debug)]
pub(crate) enum NativeSink {
    /// Raw `AF_INET6`/`IPPROTO_RAW` socket (header included).
    Raw(Arc<AsyncFd<Socket>>),
    /// Forwarding disabled.
    Disabled,
    /// In-process receiver.
    Channel(Sender<Vec<u8>>),
}

impl NativeSink {
    /// Opens the native side. Must run inside a tokio runtime (the raw socket is registered
    /// with its reactor).
    pub(crate) fn open(side: &NativeSide) -> anyhow::Result<Self> {
        Ok(match side {
            NativeSide::Raw => Self::Raw(Arc::new(open_raw().map_err(|e| {
                anyhow::anyhow!(
                    "cannot open raw IPv6 socket for native forwarding: {e} (needs CAP_NET_RAW \
                     and IPv6; use --native none to disable native forwarding)"
                )
            })?)),
            NativeSide::Disabled => Self::Disabled,
            NativeSide::Channel(tx) => Self::Channel(tx.clone()),
        })
    }

    /// Sends one complete IPv6 packet (at least a 40-byte header) towards its destination.
    pub(crate) async fn send(&self, packet: &[u8]) -> io::Result<()> {
        match self {
            Self::Raw(fd) => {
                let dst = ipv6_dst(packet)?;
                // With IPPROTO_RAW the kernel takes the header from the packet; the address
                // only selects the route (port must be 0 or the protocol).
                let to = SockAddr::from(SocketAddrV6::new(dst, 0, 0, 0));
                let n = fd
                    .async_io(Interest::WRITABLE, |s| s.send_to(packet, &to))
                    .await?;
                if n == packet.len() {
                    Ok(())
                } else {
                    Err(io::Error::other(format!(
                        "short raw send: {n} of {} bytes",
                        packet.len()
                    )))
                }
            }
            Self::Disabled => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "native forwarding disabled",
            )),
            Self::Channel(tx) => match tx.try_send(packet.to_vec()) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "native channel full",
                )),
                Err(TrySendError::Closed(_)) => Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "native channel closed",
                )),
            },
        }
    }
}

fn open_raw() -> io::Result<AsyncFd<Socket>> {
    // Linux: an AF_INET6 raw socket with protocol IPPROTO_RAW implies IPV6_HDRINCL, and is
    // send-only (nothing is ever delivered to it), which is all a Teredo server needs.
    let socket = Socket::new(
        Domain::IPV6,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )?;
    socket.set_nonblocking(true)?;
    // Best effort: the kernel caps it at net.core.wmem_max.
    let _ = socket.set_send_buffer_size(RAW_SEND_BUFFER);
    // SAFETY: `Socket` owns its descriptor, which stays open and unchanged until the
    // `AsyncFd` drops it; `as_raw_fd` always returns that descriptor. We are inside a tokio
    // runtime (`start` is async and runs on it).
    unsafe { AsyncFd::register_with_interest(socket, Interest::WRITABLE) }.map_err(io::Error::from)
}

/// The destination of an IPv6 packet, which selects the raw socket's route.
fn ipv6_dst(packet: &[u8]) -> io::Result<Ipv6Addr> {
    Ipv6Header::new_checked(packet)
        .map(|h| h.dst())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channel_forwards_and_reports_full_or_closed() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let sink = NativeSink::open(&NativeSide::Channel(tx)).unwrap();
        sink.send(&[6; 40]).await.unwrap();
        let e = sink.send(&[6; 40]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(rx.recv().await.unwrap(), vec![6; 40]);
        drop(rx);
        assert!(sink.send(&[6; 40]).await.is_err());
    }

    #[tokio::test]
    async fn disabled_refuses() {
        let sink = NativeSink::open(&NativeSide::Disabled).unwrap();
        assert!(sink.send(&[6; 40]).await.is_err());
    }

    #[test]
    fn destination_comes_from_the_header() {
        let dst = "2001:db8::1".parse::<Ipv6Addr>().unwrap();
        let mut p = [0u8; 40];
        teredo::wire::ipv6::emit_bubble(&mut p, Ipv6Addr::UNSPECIFIED, dst, 0).unwrap();
        assert_eq!(ipv6_dst(&p).unwrap(), dst);
        let e = ipv6_dst(&p[..39]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
