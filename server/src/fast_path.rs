//! The kernel fast path (`--fast-path`): teredo-fastpath's XDP program attached to the
//! interfaces holding the server's two addresses, answering valid router solicitations
//! before they reach the sockets, and its per-CPU counters as metrics.
//!
//! The counters are read at each scrape (a [`Collector`]), into families of their own:
//! `teredo_server_fast_path_router_solicitations_total{address,cone}` and
//! `teredo_server_fast_path_router_advertisements_total{address}` count what the program
//! answered (add them to the user-space families for the server's totals), and
//! `teredo_server_fast_path_passed_total{reason}` what it handed to user space.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts, Registry};
use teredo::io::Local;
use teredo::server::ServerConfig;
use teredo_fastpath::{interface_of, Counters, FastPathConfig, PassReason, XdpServer};

use crate::config::FastPathMode;
use crate::metrics::LOCALS;

/// `teredo_server_fast_path_router_solicitations_total{address,cone}`.
pub const FAST_SOLICITATIONS: &str = "teredo_server_fast_path_router_solicitations_total";
/// `teredo_server_fast_path_router_advertisements_total{address}`.
pub const FAST_ADVERTISEMENTS: &str = "teredo_server_fast_path_router_advertisements_total";
/// `teredo_server_fast_path_passed_total{reason}`.
pub const FAST_PASSED: &str = "teredo_server_fast_path_passed_total";

/// The attached program. Detaching it (at shutdown) keeps its last counters for the metrics.
#[derive(Debug)]
pub(crate) struct FastPath {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    program: Option<XdpServer>,
    last: Counters,
}

impl FastPath {
    /// Sets the fast path up as `mode` asks for a core configured as `core` (with the bound
    /// port): `None` when it is off. `Xdp` fails with the reason; `Auto` logs it and goes on.
    pub(crate) fn start(
        mode: FastPathMode,
        core: &ServerConfig,
        registry: &Registry,
    ) -> anyhow::Result<Option<Self>> {
        match mode {
            FastPathMode::None => Ok(None),
            FastPathMode::Xdp => Self::attach(core, registry).map(Some),
            FastPathMode::Auto => match Self::attach(core, registry) {
                Ok(f) => Ok(Some(f)),
                Err(e) => {
                    tracing::warn!("fast path none: {e:#}");
                    Ok(None)
                }
            },
        }
    }

    fn attach(core: &ServerConfig, registry: &Registry) -> anyhow::Result<Self> {
        // A build without the program says so first, whatever else is wrong.
        teredo_fastpath::built()?;
        let config = FastPathConfig::from_core(core)?;
        let mut interfaces = vec![interface_of(core.primary)?];
        let secondary = interface_of(core.secondary)?;
        if !interfaces.contains(&secondary) {
            interfaces.push(secondary);
        }
        let mut program = XdpServer::load(&config)?;
        for i in &interfaces {
            let mode = program.attach(i)?;
            tracing::info!(interface = %i, mode = mode.as_str(), "XDP fast path attached");
            if is_veth(i) {
                tracing::warn!(
                    interface = %i,
                    "a veth passes the router advertisements sent in XDP to its peer only if \
                     the peer runs an XDP program too (e.g. xdp_pass, see the fastpath README)"
                );
            }
        }
        let last = program.counters()?;
        let state = Arc::new(Mutex::new(State {
            program: Some(program),
            last,
        }));
        registry.register(Box::new(FastPathMetrics::new(Arc::clone(&state))?))?;
        Ok(Self { state })
    }

    /// Tells the program the port the sockets were bound to (when port 0 was asked for).
    pub(crate) fn set_port(&self, core: &ServerConfig) -> anyhow::Result<()> {
        let config = FastPathConfig::from_core(core)?;
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = &mut s.program {
            p.reconfigure(&config)?;
        }
        Ok(())
    }

    /// Detaches the program from every interface (the counters stay as they were).
    pub(crate) fn detach(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = s.program.take() {
            if let Ok(c) = p.counters() {
                s.last = c;
            }
            drop(p);
            tracing::info!("XDP fast path detached");
        }
    }
}

impl Drop for FastPath {
    /// A server stopped any way (shutdown, a failed task, its handle dropped) leaves no
    /// program attached.
    fn drop(&mut self) {
        self.detach();
    }
}

/// True for a veth (sysfs shows a link to a peer: its `iflink` differs from its `ifindex`, and
/// it is no device of a driver).
fn is_veth(interface: &str) -> bool {
    let dir = std::path::Path::new("/sys/class/net").join(interface);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let linked = matches!((read("ifindex"), read("iflink")), (Some(a), Some(b)) if a != b);
    linked && !dir.join("device").exists()
}

/// The collector reading the program's counters at each scrape.
struct FastPathMetrics {
    state: Arc<Mutex<State>>,
    solicitations: IntCounterVec,
    advertisements: IntCounterVec,
    passed: IntCounterVec,
}

impl FastPathMetrics {
    fn new(state: Arc<Mutex<State>>) -> prometheus::Result<Self> {
        let solicitations = IntCounterVec::new(
            Opts::new(
                FAST_SOLICITATIONS,
                "Router solicitations answered by the XDP fast path, by local address and cone flag (not in teredo_server_router_solicitations_total).",
            ),
            &["address", "cone"],
        )?;
        let advertisements = IntCounterVec::new(
            Opts::new(
                FAST_ADVERTISEMENTS,
                "Router advertisements sent by the XDP fast path, by the local address they left from.",
            ),
            &["address"],
        )?;
        let passed = IntCounterVec::new(
            Opts::new(
                FAST_PASSED,
                "Packets the XDP fast path handed to the user-space server, by reason.",
            ),
            &["reason"],
        )?;
        let m = Self {
            state,
            solicitations,
            advertisements,
            passed,
        };
        m.update(&Counters::default());
        Ok(m)
    }

    /// Sets every series to the program's counter (they only grow).
    fn update(&self, c: &Counters) {
        fn set(counter: &prometheus::IntCounter, value: u64) {
            let now = counter.get();
            if value > now {
                counter.inc_by(value - now);
            }
        }
        let mut ras = [0u64; 2];
        for local in LOCALS {
            for cone in [false, true] {
                let n = c.answered(local, cone);
                let label = if cone { "true" } else { "false" };
                set(
                    &self
                        .solicitations
                        .with_label_values(&[local.as_str(), label]),
                    n,
                );
                let from: Local = if cone { local.other() } else { local };
                ras[from.index()] += n;
            }
        }
        for local in LOCALS {
            set(
                &self.advertisements.with_label_values(&[local.as_str()]),
                ras[local.index()],
            );
        }
        for r in PassReason::ALL {
            set(&self.passed.with_label_values(&[r.as_str()]), c.passed(r));
        }
    }
}

impl Collector for FastPathMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.solicitations.desc();
        d.extend(self.advertisements.desc());
        d.extend(self.passed.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let counters = {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(p) = &s.program {
                match p.counters() {
                    Ok(c) => s.last = c,
                    Err(e) => tracing::debug!(error = %e, "cannot read the fast path counters"),
                }
            }
            s.last
        };
        self.update(&counters);
        let mut f = self.solicitations.collect();
        f.extend(self.advertisements.collect());
        f.extend(self.passed.collect());
        f
    }
}
