//! Graceful shutdown.
//!
//! Every binary crate exposes `run(config, shutdown)` so the lab and the tests can start
//! components in-process; `main` passes [`Shutdown::on_signals`], a test passes the
//! [`Shutdown`] half of [`Shutdown::new`] and keeps the [`ShutdownTrigger`]. A `Shutdown` is
//! cheap to clone, so every task of a component can wait on the same one.
//!
//! Built on `tokio::sync::watch`: the flag is level-triggered, so a task that starts waiting
//! after the trigger fired still returns at once. Dropping every trigger counts as a
//! shutdown, so a test that panics (or a signal task that dies with its runtime) never leaves
//! components running forever.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

/// Completes when the process receives SIGINT or SIGTERM.
///
/// The handlers are installed on the first poll; from then on these signals no longer
/// terminate the process by default (tokio never uninstalls them). The signal is logged at
/// info. If a handler cannot be installed (tokio only reports that for a missing signal
/// driver), the error is logged and that signal keeps its default disposition, which
/// terminates the process anyway.
pub async fn shutdown_signal() {
    Signals::install().recv().await;
}

/// Installed SIGINT/SIGTERM listeners (`None`: installing failed, already logged).
struct Signals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl Signals {
    /// Installs the handlers now (not at first poll), so no signal is missed between this
    /// call and the first `.await`. Needs a tokio runtime context.
    fn install() -> Self {
        fn one(kind: SignalKind, name: &str) -> Option<Signal> {
            signal(kind)
                .inspect_err(|error| {
                    tracing::error!(signal = name, %error, "cannot install signal handler");
                })
                .ok()
        }
        Self {
            interrupt: one(SignalKind::interrupt(), "SIGINT"),
            terminate: one(SignalKind::terminate(), "SIGTERM"),
        }
    }

    async fn recv(mut self) {
        async fn next(signal: Option<&mut Signal>) {
            match signal {
                Some(signal) => {
                    // `None` only when the runtime's signal driver is gone: never fire then.
                    if signal.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        }
        let name = tokio::select! {
            () = next(self.interrupt.as_mut()) => "SIGINT",
            () = next(self.terminate.as_mut()) => "SIGTERM",
        };
        tracing::info!(signal = name, "shutdown signal received");
    }
}

/// The triggering half of a shutdown channel (see [`Shutdown::new`]).
///
/// Cloneable; dropping the last clone also triggers shutdown.
#[derive(Clone, Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl ShutdownTrigger {
    /// Signals shutdown to every [`Shutdown`] of this channel. Calling it again is harmless.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Another [`Shutdown`] handle for this channel.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

/// The waiting half of a shutdown channel: clone it into every task that must stop.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A new, untriggered shutdown channel.
    ///
    /// Keep the trigger alive for as long as the components should run: dropping it (e.g.
    /// `let (_, shutdown) = Shutdown::new();`) counts as triggering.
    pub fn new() -> (ShutdownTrigger, Self) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Self { rx })
    }

    /// A handle that triggers on SIGINT or SIGTERM (see [`shutdown_signal`]).
    ///
    /// Spawns a small task, so it must be called inside a tokio runtime; if that runtime
    /// shuts down first, the handle counts as triggered.
    /// The handlers are installed before this returns, so a signal arriving right after it
    /// is not missed (and no longer kills the process).
    pub fn on_signals() -> Self {
        let (trigger, shutdown) = Self::new();
        let signals = Signals::install();
        tokio::spawn(async move {
            signals.recv().await;
            trigger.trigger();
        });
        shutdown
    }

    /// Whether shutdown was triggered (or every trigger was dropped).
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Completes once shutdown is triggered (immediately if it already was), or once every
    /// trigger has been dropped.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // `Err` means every trigger is gone: that is a shutdown too.
        let _ = rx.wait_for(|&triggered| triggered).await;
    }

    /// Like [`wait`](Self::wait) but owning the handle, for APIs that want a
    /// `Future + Send + 'static` (e.g. [`spawn_metrics`](crate::metrics::spawn_metrics)).
    pub async fn wait_owned(self) {
        self.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;

    use super::Shutdown;

    const LIMIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn trigger_wakes_all_waiters() {
        let (trigger, shutdown) = Shutdown::new();
        assert!(!shutdown.is_triggered());
        let waiters: Vec<_> = (0..4)
            .map(|_| tokio::spawn(shutdown.clone().wait_owned()))
            .collect();
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        trigger.trigger();
        for waiter in waiters {
            timeout(LIMIT, waiter).await.unwrap().unwrap();
        }
        assert!(shutdown.is_triggered());
        assert!(trigger.subscribe().is_triggered());
    }

    #[tokio::test]
    async fn late_waiter_returns_immediately() {
        let (trigger, shutdown) = Shutdown::new();
        trigger.trigger();
        trigger.trigger();
        timeout(LIMIT, shutdown.wait()).await.unwrap();
        timeout(LIMIT, shutdown.clone().wait()).await.unwrap();
    }

    #[tokio::test]
    async fn untriggered_wait_stays_pending() {
        let (_trigger, shutdown) = Shutdown::new();
        assert!(timeout(Duration::from_millis(50), shutdown.wait())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn dropping_every_trigger_shuts_down() {
        let (trigger, shutdown) = Shutdown::new();
        let second = trigger.clone();
        drop(trigger);
        assert!(!shutdown.is_triggered());
        let waiter = tokio::spawn(shutdown.clone().wait_owned());
        drop(second);
        timeout(LIMIT, waiter).await.unwrap().unwrap();
        assert!(shutdown.is_triggered());
    }

    /// One test for all real signals: a SIGTERM raised here reaches every listener of the
    /// process, so no other test may wait on signals concurrently.
    #[tokio::test]
    async fn on_signals_fires_on_sigterm_and_sigint() {
        let shutdown = Shutdown::on_signals();
        assert!(timeout(Duration::from_millis(50), shutdown.wait())
            .await
            .is_err());
        assert!(!shutdown.is_triggered());
        // SAFETY: raise(3) has no memory-safety preconditions; on_signals installed the
        // SIGTERM handler synchronously above, so the process is not terminated.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        timeout(LIMIT, shutdown.wait()).await.unwrap();
        assert!(shutdown.is_triggered());

        let again = Shutdown::on_signals();
        // SAFETY: as above, for SIGINT.
        assert_eq!(unsafe { libc::raise(libc::SIGINT) }, 0);
        timeout(LIMIT, again.wait()).await.unwrap();

        // tokio's process-wide handlers are installed by now, so even if the spawned future
        // had not registered yet the signal could not kill the process; the sleep lets it
        // register (this is a current-thread runtime) so that it does receive it.
        let direct = tokio::spawn(super::shutdown_signal());
        tokio::time::sleep(Duration::from_millis(20)).await;
        // SAFETY: as above.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        timeout(LIMIT, direct).await.unwrap().unwrap();
    }
}
