//! The Teredo server (RFC 4380 §5.3) as a library: a thin tokio driver around the sans-IO
//! [`teredo::server::Server`].
//!
//! The server binds one UDP socket per address (primary and secondary, never `0.0.0.0`: the
//! cone test depends on which address answers) and runs one receive loop per socket, each
//! with its own core instance. Router solicitations are answered with router
//! advertisements; bubbles and ICMPv6 are relayed to Teredo clients over UDP or handed to the
//! native IPv6 side ([`NativeSide`]). Metrics go to a Prometheus registry
//! ([`ServerOptions::registry`]), optionally served on `/metrics`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use teredo_server::{NativeSide, ServerOptions};
//! let mut options = ServerOptions::new("198.51.100.1".parse()?);
//! options.native = NativeSide::Disabled;
//! let (trigger, shutdown) = teredo_rt::Shutdown::new();
//! let server = teredo_server::start(options, shutdown).await?;
//! println!("listening on {} and {}", server.primary_addr(), server.secondary_addr());
//! trigger.trigger();
//! server.wait().await
//! # }
//! ```
//!
//! The binary (`src/main.rs`) only parses [`cli::Args`], initialises tracing and calls
//! [`run`].

pub mod cli;
mod config;
pub mod fast_path;
pub mod metrics;
mod native;
mod worker;

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;

use anyhow::Context as _;
use teredo::io::Local;
use teredo_rt::{bind_udp, bound_v4, Shutdown, Tasks};

pub use config::{ConfigError, FastPathMode, NativeSide, ServerOptions};

use crate::fast_path::FastPath;
use crate::metrics::ServerMetrics;
use crate::native::NativeSink;
use crate::worker::Worker;

/// Starts the server and runs it until `shutdown`; see [`start`] for the errors.
pub async fn run(options: ServerOptions, shutdown: Shutdown) -> anyhow::Result<()> {
    start(options, shutdown).await?.wait().await
}

/// Validates `options`, registers the metrics, opens the native side, binds both UDP
/// sockets and the metrics endpoint, and spawns the workers on the current runtime.
///
/// Every failure happens here, before anything runs, as one error naming what failed: an
/// invalid configuration ([`ConfigError`]), metrics already registered in the registry, the
/// raw socket (no `CAP_NET_RAW`), an address that cannot be bound
/// (`cannot bind UDP socket 192.0.2.77:3544: Cannot assign requested address (os error 99)`).
pub async fn start(options: ServerOptions, shutdown: Shutdown) -> anyhow::Result<RunningServer> {
    let warnings = options.validate()?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let native = NativeSink::open(&options.native)?;
    // The fast path is attached before the sockets are bound, so that nothing which sees
    // them bound (a client, a test) can still reach a server without it.
    let fast = FastPath::start(options.fast_path, &options.core_config(), &options.registry)?;

    let primary = SocketAddrV4::new(options.primary, options.port);
    let secondary = SocketAddrV4::new(options.secondary, options.port);
    let primary_socket = bind_udp(primary, &options.udp)?;
    let secondary_socket = bind_udp(secondary, &options.udp)?;
    let primary = bound_v4(&primary_socket, primary)?;
    let secondary = bound_v4(&secondary_socket, secondary)?;
    let sockets: worker::Sockets = Arc::new([primary_socket, secondary_socket]);
    let metrics =
        ServerMetrics::register(&options.registry).context("cannot register the server metrics")?;

    let mut tasks = Tasks::new();
    let metrics_addr = tasks
        .serve_metrics(options.metrics_addr, &options.registry, &shutdown)
        .await?;

    let core = options.core_config();
    if let Some(fast) = fast {
        if options.port == 0 {
            // The program answers on the port actually bound (the lab binds port 0).
            fast.set_port(&teredo::server::ServerConfig {
                port: primary.port(),
                ..core
            })?;
        }
        let stop = shutdown.clone();
        tasks.spawn(async move {
            stop.wait().await;
            fast.detach();
            Ok(())
        });
    }
    for local in [Local::Primary, Local::Secondary] {
        let w = Worker::new(
            local,
            core,
            Arc::clone(&sockets),
            native.clone(),
            metrics.worker(local),
        );
        tasks.spawn(w.run(shutdown.clone()));
    }
    tracing::info!(
        %primary,
        %secondary,
        native = options.native.as_str(),
        mtu = ?options.mtu,
        icmpv6_max_payload = options.icmpv6_max_payload,
        rs_rate_limit = options.rs_rate_limit,
        fast_path = options.fast_path.as_str(),
        "teredo server listening"
    );
    Ok(RunningServer {
        primary,
        secondary,
        metrics_addr,
        tasks,
    })
}

/// A started server: its bound addresses and its tasks.
///
/// The tasks stop when the [`Shutdown`] given to [`start`] fires; dropping this handle
/// aborts them.
#[derive(Debug)]
pub struct RunningServer {
    primary: SocketAddrV4,
    secondary: SocketAddrV4,
    metrics_addr: Option<SocketAddr>,
    tasks: Tasks,
}

impl RunningServer {
    /// The primary socket's address (with the real port when port 0 was asked for).
    pub fn primary_addr(&self) -> SocketAddrV4 {
        self.primary
    }

    /// The secondary socket's address.
    pub fn secondary_addr(&self) -> SocketAddrV4 {
        self.secondary
    }

    /// The bound metrics endpoint, if one was asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Waits until every task has stopped after shutdown. If a task fails (or panics)
    /// first, the others are stopped and its error is returned.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.tasks.wait("server").await?;
        tracing::info!(primary = %self.primary, secondary = %self.secondary, "teredo server stopped");
        Ok(())
    }
}
