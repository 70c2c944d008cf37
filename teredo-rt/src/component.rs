//! What every component (the server, the relay) builds around its core the same way: its
//! Prometheus families ([`ComponentMetrics`]), its drop counters by reason
//! ([`DropCounters`]), and the tasks it runs until shutdown ([`Tasks`]).
//!
//! Metric conventions live here once: every series is created at zero when registered (so
//! a scrape shows the full set from the start and `promtool check metrics` sees every
//! label), `<component>_build_info{version} 1` is always there, and the `process_*` metrics
//! are shared by the components of one registry (the lab runs several in one process).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use teredo::DropReason;
use tokio::task::JoinSet;

use crate::metrics::register;
use crate::Shutdown;

/// Registers one component's metric families in a registry. Built with [`Self::new`], which
/// registers the build info and the process metrics; every family made through it is
/// registered at once, and the `*s` helpers also create their series at zero.
#[derive(Clone, Debug)]
pub struct ComponentMetrics {
    registry: Registry,
}

impl ComponentMetrics {
    /// Registers `build_info{version} = 1` (e.g. `teredo_server_build_info`) and the
    /// process metrics (which may already be there: components share them).
    ///
    /// Fails if `build_info` is already registered: one component of a kind per registry.
    pub fn new(registry: &Registry, build_info: &str, version: &str) -> prometheus::Result<Self> {
        let this = Self {
            registry: registry.clone(),
        };
        this.gauge_vec(
            build_info,
            "Build information; the value is always 1.",
            &["version"],
        )?
        .with_label_values(&[version])
        .set(1);
        match crate::register_process_metrics(registry) {
            Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
            Err(e) => return Err(e),
        }
        Ok(this)
    }

    /// A counter without labels.
    pub fn counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        register(&self.registry, IntCounter::new(name, help)?)
    }

    /// A gauge without labels.
    pub fn gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        register(&self.registry, IntGauge::new(name, help)?)
    }

    /// A counter family; its series must be created by the caller (see [`Self::counters`]).
    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        register(
            &self.registry,
            IntCounterVec::new(Opts::new(name, help), labels)?,
        )
    }

    /// A gauge family; its series must be created by the caller (see [`Self::gauges`]).
    pub fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntGaugeVec> {
        register(
            &self.registry,
            IntGaugeVec::new(Opts::new(name, help), labels)?,
        )
    }

    /// A counter family with one label and its series for each of `values`, in that order.
    pub fn counters<const N: usize>(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: [&str; N],
    ) -> prometheus::Result<[IntCounter; N]> {
        let v = self.counter_vec(name, help, &[label])?;
        Ok(values.map(|x| v.with_label_values(&[x])))
    }

    /// A gauge family with one label and its series for each of `values`, in that order.
    pub fn gauges<const N: usize>(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: [&str; N],
    ) -> prometheus::Result<[IntGauge; N]> {
        let v = self.gauge_vec(name, help, &[label])?;
        Ok(values.map(|x| v.with_label_values(&[x])))
    }

    /// A histogram with the given buckets.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> prometheus::Result<Histogram> {
        register(
            &self.registry,
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?,
        )
    }

    /// The `{reason}` drop counter family, with a series at zero for each of `reasons`
    /// (the component's list: [`DropReason::SERVER`], [`DropReason::RELAY`], …).
    pub fn drops(
        &self,
        name: &str,
        help: &str,
        reasons: impl IntoIterator<Item = DropReason>,
    ) -> prometheus::Result<DropCounters> {
        let vec = self.counter_vec(name, help, &["reason"])?;
        let mut by_reason: Vec<Option<IntCounter>> = vec![None; DropReason::ALL.len()];
        for r in reasons {
            if let Some(slot) = by_reason.get_mut(r as usize) {
                *slot = Some(vec.with_label_values(&[r.as_str()]));
            }
        }
        Ok(DropCounters {
            by_reason: by_reason.into(),
            vec,
        })
    }
}

/// Drop counters by [`DropReason`], resolved once: counting a drop is an atomic add, with
/// no label lookup. A reason outside the component's list (not expected) still counts,
/// through a lookup.
#[derive(Clone, Debug)]
pub struct DropCounters {
    /// Indexed by `DropReason as usize`.
    by_reason: Arc<[Option<IntCounter>]>,
    vec: IntCounterVec,
}

impl DropCounters {
    /// Counts one drop.
    pub fn inc(&self, reason: DropReason) {
        self.inc_by(reason, 1);
    }

    /// Counts `n` drops.
    pub fn inc_by(&self, reason: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        match self.by_reason.get(reason as usize) {
            Some(Some(c)) => c.inc_by(n),
            _ => self.vec.with_label_values(&[reason.as_str()]).inc_by(n),
        }
    }
}

/// Panics unless `register` (a component's `register`, e.g. `ServerMetrics::register`)
/// follows the conventions above: on a fresh registry (whose process metrics are already
/// there, as when another component registered first) every series it creates shows in a
/// scrape, its `build_info{version}` (named `<prefix>build_info`) is 1, the process metrics
/// are there, every `teredo_` family is named `<prefix>…` with `_total` on counters only,
/// and a second registration of the same component on that registry fails. Returns the
/// scrape and the first registration's handles, for the component's own checks. Meant for
/// the components' unit tests.
pub fn assert_component_conventions<T>(
    prefix: &str,
    version: &str,
    register: impl Fn(&Registry) -> prometheus::Result<T>,
) -> (String, T) {
    let registry = Registry::new();
    crate::register_process_metrics(&registry).expect("process metrics");
    let handles = register(&registry).expect("first registration");
    let text = crate::render(&registry).expect("render");
    assert!(
        text.contains(&format!("{prefix}build_info{{version=\"{version}\"}} 1\n")),
        "{text}"
    );
    assert!(text.contains("process_open_fds"), "{text}");
    for line in text.lines().filter(|l| l.starts_with("# TYPE teredo_")) {
        let mut w = line.split_whitespace().skip(2);
        let (name, ty) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
        assert!(name.starts_with(prefix), "{line}");
        assert_eq!(name.ends_with("_total"), ty == "counter", "{line}");
    }
    assert!(
        register(&registry).is_err(),
        "a second registration on the same registry must be refused"
    );
    (text, handles)
}

/// The tasks of a started component: its loops and, optionally, its `/metrics` endpoint.
/// They stop when the component's [`Shutdown`] fires; dropping this aborts them.
#[derive(Debug, Default)]
pub struct Tasks {
    set: JoinSet<anyhow::Result<()>>,
}

impl Tasks {
    /// No tasks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` on the current runtime as one of the component's tasks.
    pub fn spawn<F>(&mut self, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.set.spawn(task);
    }

    /// Binds the `/metrics` endpoint on `addr` now (a failure is returned here) and serves
    /// `registry` on it as one of the tasks until `shutdown`. Returns the bound address;
    /// without an address (the component was started without an endpoint), nothing.
    pub async fn serve_metrics(
        &mut self,
        addr: Option<SocketAddr>,
        registry: &Registry,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Option<SocketAddr>> {
        let Some(addr) = addr else {
            return Ok(None);
        };
        let registry = registry.clone();
        let listener = crate::metrics::bind(addr).await?;
        let bound = listener
            .local_addr()
            .with_context(|| format!("cannot read the address of metrics endpoint {addr}"))?;
        let stop = shutdown.clone().wait_owned();
        self.set.spawn(async move {
            crate::metrics::serve(listener, registry, stop)
                .await
                .context("metrics endpoint task failed")
        });
        Ok(Some(bound))
    }

    /// Waits until every task has stopped after shutdown. If a task fails (or panics)
    /// first, the others are stopped and its error is returned; `component` names it in
    /// a panic's message (`server task failed: …`).
    pub async fn wait(mut self, component: &str) -> anyhow::Result<()> {
        while let Some(joined) = self.set.join_next().await {
            let result = match joined {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("{component} task failed: {e}")),
            };
            if let Err(e) = result {
                self.set.shutdown().await;
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn text(registry: &Registry) -> String {
        crate::metrics::render(registry).unwrap()
    }

    #[test]
    fn series_start_at_zero_and_build_info_is_one() {
        let registry = Registry::new();
        let m = ComponentMetrics::new(&registry, "teredo_test_build_info", "1.2.3").unwrap();
        let [a, _] = m
            .counters("teredo_test_things_total", "Things.", "kind", ["a", "b"])
            .unwrap();
        let [g] = m
            .gauges("teredo_test_level", "Level.", "state", ["up"])
            .unwrap();
        let drops = m
            .drops(
                "teredo_test_dropped_total",
                "Drops.",
                [DropReason::Loop, DropReason::Truncated],
            )
            .unwrap();
        a.inc();
        g.set(3);
        drops.inc(DropReason::Loop);
        drops.inc_by(DropReason::Truncated, 0);
        // Outside the list: still counted.
        drops.inc_by(DropReason::SendFailed, 2);
        let t = text(&registry);
        for want in [
            "teredo_test_build_info{version=\"1.2.3\"} 1\n",
            "teredo_test_things_total{kind=\"a\"} 1\n",
            "teredo_test_things_total{kind=\"b\"} 0\n",
            "teredo_test_level{state=\"up\"} 3\n",
            "teredo_test_dropped_total{reason=\"loop\"} 1\n",
            "teredo_test_dropped_total{reason=\"truncated\"} 0\n",
            "teredo_test_dropped_total{reason=\"send_failed\"} 2\n",
            "process_open_fds",
        ] {
            assert!(t.contains(want), "missing {want}\n{t}");
        }
        // Process metrics are shared; a second component of the same kind is refused.
        ComponentMetrics::new(&registry, "teredo_other_build_info", "1.2.3").unwrap();
        assert!(ComponentMetrics::new(&registry, "teredo_test_build_info", "1.2.3").is_err());
    }

    #[tokio::test]
    async fn wait_returns_the_first_error_and_stops_the_rest() {
        let mut tasks = Tasks::new();
        tasks.spawn(async {
            std::future::pending::<()>().await;
            Ok(())
        });
        tasks.spawn(async { anyhow::bail!("boom") });
        let e = tokio::time::timeout(Duration::from_secs(10), tasks.wait("test"))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.to_string(), "boom");

        let mut tasks = Tasks::new();
        tasks.spawn(async { panic!("oops") });
        let e = tasks.wait("test").await.unwrap_err();
        assert!(e.to_string().starts_with("test task failed: "), "{e}");
    }

    #[tokio::test]
    async fn the_metrics_endpoint_is_a_task_that_stops_on_shutdown() {
        let (trigger, shutdown) = Shutdown::new();
        let mut tasks = Tasks::new();
        let addr = tasks
            .serve_metrics(
                Some("127.0.0.1:0".parse().unwrap()),
                &Registry::new(),
                &shutdown,
            )
            .await
            .unwrap()
            .unwrap();
        assert_ne!(addr.port(), 0);
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), tasks.wait("test"))
            .await
            .unwrap()
            .unwrap();
        // A bind failure is returned at once, naming the address.
        let mut tasks = Tasks::new();
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let busy = taken.local_addr().unwrap();
        let e = tasks
            .serve_metrics(Some(busy), &Registry::new(), &shutdown)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains(&busy.to_string()), "{e:#}");
        // No address: no endpoint, no task.
        let mut tasks = Tasks::new();
        assert_eq!(
            tasks
                .serve_metrics(None, &Registry::new(), &shutdown)
                .await
                .unwrap(),
            None
        );
        tasks.wait("test").await.unwrap();
    }
}
