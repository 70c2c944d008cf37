//! The opened native side: where the workers write IPv6 packets, and where native packets
//! come from.

use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{Receiver, Sender};

use crate::config::NativeSide;
use crate::tun::{self, TunQueue};
use teredo::DropReason;

/// A worker's handle on the native side (for writing).
#[derive(Clone, Debug)]
pub(crate) enum NativeSink {
    /// One queue of the TUN device.
    Tun(Arc<TunQueue>),
    /// Native forwarding disabled.
    Disabled,
    /// In-process receiver.
    Channel(Sender<Vec<u8>>),
}

/// Where native packets are read from.
#[derive(Debug)]
pub(crate) enum NativeSource {
    /// The TUN queues, one reader task each.
    Tun(Vec<Arc<TunQueue>>),
    /// Nothing arrives.
    Disabled,
    /// One reader task on the channel.
    Channel(Receiver<Vec<u8>>),
}

/// The native side opened for `workers` workers: one sink per worker, and the sources.
pub(crate) fn open(
    side: &NativeSide,
    workers: usize,
    tun_gso: bool,
) -> anyhow::Result<(Vec<NativeSink>, NativeSource)> {
    Ok(match side {
        NativeSide::Tun { name } => {
            let queues: Vec<Arc<TunQueue>> = tun::create(name, workers, tun_gso)?
                .into_iter()
                .map(Arc::new)
                .collect();
            let sinks = queues
                .iter()
                .map(|q| NativeSink::Tun(Arc::clone(q)))
                .collect();
            (sinks, NativeSource::Tun(queues))
        }
        NativeSide::Disabled => (vec![NativeSink::Disabled; workers], NativeSource::Disabled),
        NativeSide::Channel(ch) => {
            let rx = ch
                .from_native
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the native channel is already used by another relay (start takes its \
                         receiving end)"
                    )
                })?;
            (
                vec![NativeSink::Channel(ch.to_native.clone()); workers],
                NativeSource::Channel(rx),
            )
        }
    })
}

impl NativeSink {
    /// Writes a batch of IPv6 packets (a TUN may merge same-flow runs into one write);
    /// reports each packet's length, or the reason it was dropped, to `done`.
    pub(crate) async fn send_many<'a>(
        &self,
        packets: impl Iterator<Item = &'a [u8]>,
        mut done: impl FnMut(Result<usize, DropReason>),
    ) {
        match self {
            Self::Tun(q) => q.write_many(packets, &mut done).await,
            _ => {
                for p in packets {
                    done(self.send(p).await.map(|()| p.len()));
                }
            }
        }
    }

    /// Writes one IPv6 packet to the native side; the reason to count if it was dropped.
    pub(crate) async fn send(&self, packet: &[u8]) -> Result<(), DropReason> {
        match self {
            Self::Tun(q) => q.write(packet).await.map_err(|e| {
                tracing::debug!(error = %e, len = packet.len(), "TUN write failed");
                DropReason::SendFailed
            }),
            Self::Disabled => Err(DropReason::NativeDisabled),
            Self::Channel(tx) => match tx.try_send(packet.to_vec()) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_) | TrySendError::Closed(_)) => Err(DropReason::SendFailed),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channel_and_disabled_sinks() {
        let (side, mut ends) = NativeSide::channel(1);
        let (sinks, source) = open(&side, 2, true).unwrap();
        assert_eq!(sinks.len(), 2);
        assert!(matches!(source, NativeSource::Channel(_)));
        sinks[1].send(&[6; 40]).await.unwrap();
        assert_eq!(sinks[0].send(&[6; 40]).await, Err(DropReason::SendFailed));
        assert_eq!(ends.received.recv().await.unwrap(), vec![6; 40]);
        // The receiving end can be taken once only.
        let e = open(&side, 1, true).unwrap_err();
        assert!(e.to_string().contains("already used"), "{e}");

        let (sinks, source) = open(&NativeSide::Disabled, 1, true).unwrap();
        assert!(matches!(source, NativeSource::Disabled));
        assert_eq!(
            sinks[0].send(&[6; 40]).await,
            Err(DropReason::NativeDisabled)
        );
    }
}
