//! The relay library (`teredo_relay::start`) run in-process inside a network namespace, with
//! its native IPv6 side an in-process channel: the tests inject any IPv6 packet (also ones no
//! kernel would route into a TUN device, such as a truncated header) and see every packet the
//! relay writes to native IPv6. The UDP side is a real socket in the namespace.
//!
//! Like [`crate::inproc::InprocServer`], it runs on its own thread (which entered the
//! namespace) with a current-thread tokio runtime, and its metrics registry is read
//! in-process. Dropping it stops the relay.

use std::net::SocketAddrV4;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use prometheus::Registry;
use teredo_relay::{NativeEnds, NativeSide, RelayOptions};
use teredo_rt::{Shutdown, ShutdownTrigger};
use testkit::metrics::registry_text;
use testkit::netns::enter;
use tokio::sync::mpsc::error::TryRecvError;

use crate::inproc::metric_value;
use crate::netns::Netns;

/// How long [`InprocRelay::start`] waits for the relay to bind its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `teredo_relay::start` on its own thread inside a namespace, native side a channel.
#[derive(Debug)]
pub struct InprocRelay {
    trigger: ShutdownTrigger,
    thread: Option<JoinHandle<Result<()>>>,
    local: SocketAddrV4,
    registry: Registry,
    ends: NativeEnds,
}

impl InprocRelay {
    /// Starts the relay with `options` (its `native` is replaced by a channel of
    /// `capacity` packets) inside `ns`, and waits until it is bound.
    pub fn start(ns: &Netns, mut options: RelayOptions, capacity: usize) -> Result<Self> {
        let path = ns.path();
        let (native, ends) = NativeSide::channel(capacity);
        options.native = native;
        let registry = options.registry.clone();
        let (trigger, shutdown) = Shutdown::new();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("teredo-relay".to_owned())
            .spawn(move || -> Result<()> {
                let runtime = enter(&path).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("cannot build the tokio runtime")
                });
                let runtime = match runtime {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                runtime.block_on(async move {
                    match teredo_relay::start(options, shutdown).await {
                        Ok(relay) => {
                            let _ = ready_tx.send(Ok(relay.local_addr()));
                            relay.wait().await
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            Ok(())
                        }
                    }
                })
            })
            .context("cannot spawn the relay thread")?;
        let local = ready_rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|e| anyhow!("the in-process relay did not start: {e}"))?
            .context("teredo_relay::start failed")?;
        Ok(Self {
            trigger,
            thread: Some(thread),
            local,
            registry,
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
        let deadline = Instant::now() + timeout;
        loop {
            match self.ends.received.try_recv() {
                Ok(p) => return Some(p),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Every packet written to native IPv6 and not read yet.
    pub fn native_drain(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.ends.received.try_recv().ok()).collect()
    }

    /// The relay's registry in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        registry_text(&self.registry)
    }

    /// The current value of one series (`name{labels}`), `None` if there is no such series.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics_text(), series)
    }

    /// Shuts the relay down and returns how its tasks ended.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        self.trigger.trigger();
        match self.thread.take() {
            Some(t) => match t.join() {
                Ok(r) => r,
                Err(_) => bail!("the relay thread panicked"),
            },
            None => Ok(()),
        }
    }
}

impl Drop for InprocRelay {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            eprintln!("warning: in-process relay: {e:#}");
        }
    }
}
