//! The relay library (`teredo_relay::start`) run in-process inside a network namespace, with
//! its native IPv6 side an in-process channel: the tests inject any IPv6 packet (also ones no
//! kernel would route into a TUN device, such as a truncated header) and see every packet the
//! relay writes to native IPv6. The UDP side is a real socket in the namespace.
//!
//! Like [`crate::inproc::InprocServer`], it runs on its own thread (which entered the
//! namespace) with a current-thread tokio runtime, and its metrics registry is read
//! in-process. Dropping it stops the relay.

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{anyhow, Result};
use teredo_relay::{NativeEnds, NativeSide, RelayOptions};

use crate::inproc::recv_within;
use crate::inproc_component::Inproc;
use crate::netns::Netns;

/// `teredo_relay::start` on its own thread inside a namespace, native side a channel.
#[derive(Debug)]
pub struct InprocRelay {
    inproc: Inproc,
    local: SocketAddrV4,
    ends: NativeEnds,
}

impl InprocRelay {
    /// Starts the relay with `options` (its `native` is replaced by a channel of
    /// `capacity` packets) inside `ns`, and waits until it is bound.
    pub fn start(ns: &Netns, mut options: RelayOptions, capacity: usize) -> Result<Self> {
        let (native, ends) = NativeSide::channel(capacity);
        options.native = native;
        let registry = options.registry.clone();
        let (inproc, local) = Inproc::start(ns, "relay", registry, move |shutdown| async move {
            let relay = teredo_relay::start(options, shutdown).await?;
            Ok((relay.local_addr(), relay.wait()))
        })?;
        Ok(Self {
            inproc,
            local,
            ends,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// Hands `packet` to the relay as if native IPv6 had routed it there.
    pub fn inject(&self, packet: Vec<u8>) -> Result<()> {
        self.ends
            .inject
            .try_send(packet)
            .map_err(|e| anyhow!("cannot inject a native packet: {e}"))
    }

    /// The next packet the relay wrote to native IPv6, if one comes within `timeout`.
    pub fn native_recv(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        recv_within(&mut self.ends.received, timeout)
    }

    /// Every packet written to native IPv6 and not read yet.
    pub fn native_drain(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.ends.received.try_recv().ok()).collect()
    }

    /// The relay's registry in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.inproc.metrics_text()
    }

    /// The current value of one series (`name{labels}`), `None` if there is no such series.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.inproc.metric(series)
    }

    /// Shuts the relay down and returns how its tasks ended.
    pub fn stop(self) -> Result<()> {
        self.inproc.stop()
    }
}
