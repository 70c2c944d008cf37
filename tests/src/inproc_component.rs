//! One way to run a component library (`teredo_server::start`, `teredo_relay::start`)
//! in-process inside a network namespace: on its own thread, which entered the namespace
//! (so every socket it opens belongs there), with a current-thread tokio runtime; its
//! registry read in-process; stopped (shutdown, then the thread joined) on `stop` or drop.

use std::future::Future;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use prometheus::Registry;
use teredo_rt::{Shutdown, ShutdownTrigger};
use testkit::metrics::{registry_text, value as metric_value};
use testkit::netns::enter;

use crate::netns::Netns;

/// How long [`Inproc::start`] waits for the component to bind its sockets.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A component running on its own thread inside a namespace.
#[derive(Debug)]
pub(crate) struct Inproc {
    /// `server`, `relay`: for thread names and messages.
    what: &'static str,
    trigger: ShutdownTrigger,
    thread: Option<JoinHandle<Result<()>>>,
    registry: Registry,
}

impl Inproc {
    /// Runs `start` (the component's `start`, given the shutdown) inside `ns` and waits until
    /// it returned: then what it reported (its bound addresses) and the handle; or its error.
    /// `start` returns the report and the future that runs the component until shutdown.
    pub(crate) fn start<A, W, Fut>(
        ns: &Netns,
        what: &'static str,
        registry: Registry,
        start: impl FnOnce(Shutdown) -> Fut + Send + 'static,
    ) -> Result<(Self, A)>
    where
        A: Send + 'static,
        W: Future<Output = Result<()>>,
        Fut: Future<Output = Result<(A, W)>>,
    {
        let path = ns.path();
        let (trigger, shutdown) = Shutdown::new();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("teredo-{what}"))
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
                    match start(shutdown).await {
                        Ok((report, run)) => {
                            let _ = ready_tx.send(Ok(report));
                            run.await
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            Ok(())
                        }
                    }
                })
            })
            .with_context(|| format!("cannot spawn the {what} thread"))?;
        let report = ready_rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|e| anyhow!("the in-process {what} did not start: {e}"))?
            .with_context(|| format!("teredo_{what}::start failed"))?;
        Ok((
            Self {
                what,
                trigger,
                thread: Some(thread),
                registry,
            },
            report,
        ))
    }

    /// The component's registry in Prometheus text format.
    pub(crate) fn metrics_text(&self) -> String {
        registry_text(&self.registry)
    }

    /// The current value of one series (`name{labels}`), `None` if there is no such series.
    pub(crate) fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics_text(), series)
    }

    /// Shuts the component down and returns how its tasks ended.
    pub(crate) fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        self.trigger.trigger();
        match self.thread.take() {
            Some(t) => match t.join() {
                Ok(r) => r,
                Err(_) => bail!("the {} thread panicked", self.what),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Inproc {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            eprintln!("warning: in-process {}: {e:#}", self.what);
        }
    }
}
