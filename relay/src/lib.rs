//! The Teredo relay (RFC 4380 §5.4) as a library: a tokio driver around the sans-IO
//! [`teredo::relay::Relay`], scaled over cores.
//!
//! A relay announces 2001::/32 on its native IPv6 side and talks to Teredo clients over
//! UDP/IPv4. Native packets for a client are encapsulated once the client is trusted, and
//! queued behind a bubble exchange (through the client's server) until then; packets from
//! clients are checked against the mapping embedded in their Teredo address and written to
//! native IPv6.
//!
//! # Design
//! * **Workers** (`workers`, default one per core): each has its own UDP socket bound with
//!   `SO_REUSEPORT` to the same address (the kernel spreads clients over them by flow hash)
//!   and its own queue of a multi-queue TUN device; a UDP task and a TUN task per worker.
//! * **One peer table, lock-striped** ([`shards::ShardedRelay`]): DESIGN.md's `dashmap`
//!   idea applied to a sans-IO state machine. The core owns its table *and* the timers,
//!   expiry records, queues and output queue that must stay consistent with it (and the lab
//!   drives the same core deterministically), so instead of a concurrent map of peers the
//!   relay runs several cores behind `std::sync::Mutex`es and routes each packet to the
//!   core its peer's Teredo address hashes to (native packet: destination; client datagram:
//!   source). Locks are held only while the core handles one packet, never across `.await`.
//! * **Timers**: one task sleeps until the earliest `poll_timeout()` of all shards (woken
//!   early when an input arms an earlier one), runs `handle_timeout` and sends what it
//!   produced; it also refreshes the metrics from the cores once a second.
//! * **No per-packet allocation on the trusted path**: the zero-copy entry points
//!   (`handle_ipv6_in_place`, `handle_udp_in_place`) let the tasks send straight from their
//!   receive buffers, which are allocated once.
//! * **Fast path** (`--fast-path xdp`, `fast_path/`): an XDP program forwards the packets
//!   of trusted peers in the kernel, both ways, from a copy of the cores' trusted peers kept
//!   in step by a sync task; everything else still goes through the cores.
//! * **Native side** ([`NativeSide`]): a TUN device (route `2001::/32 via fe80::1`, see
//!   `tun.rs` for why a gateway route), nothing, or an in-process channel pair.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use teredo_relay::{NativeSide, RelayOptions};
//! let mut options = RelayOptions::default();
//! options.bind = "198.51.100.30:3545".parse()?;
//! let (native, mut ends) = NativeSide::channel(1024);
//! options.native = native;
//! let (trigger, shutdown) = teredo_rt::Shutdown::new();
//! let relay = teredo_relay::start(options, shutdown).await?;
//! println!("relay on {}", relay.local_addr());
//! trigger.trigger();
//! relay.wait().await
//! # }
//! ```
//!
//! The binary (`src/main.rs`) only parses [`cli::Args`], initialises tracing and calls
//! [`run`].

pub mod cli;
mod config;
pub mod fast_path;
mod gso;
pub mod metrics;
mod native;
pub mod shards;
mod tun;
mod worker;

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;

use anyhow::Context as _;
use teredo_rt::{bind_udp, bound_v4, Shutdown, Tasks, UdpOptions};

pub use config::{
    default_workers, ConfigError, FastPathMode, NativeChannel, NativeEnds, NativeSide, Offload,
    RelayOptions, DEFAULT_BIND, DEFAULT_TUN_NAME, MAX_IFNAME_LEN, MAX_WORKERS, TUN_MTU,
};
pub use tun::{ROUTE_GATEWAY, TEREDO_ROUTE, TUN_LINK_LOCAL};
pub use worker::{BATCH, TICK};

use crate::fast_path::FastPath;
use crate::metrics::RelayMetrics;
use crate::native::NativeSource;
use crate::shards::ShardedRelay;
use crate::worker::Ctx;

/// Starts the relay and runs it until `shutdown`; see [`start`] for the errors.
pub async fn run(options: RelayOptions, shutdown: Shutdown) -> anyhow::Result<()> {
    start(options, shutdown).await?.wait().await
}

/// Validates `options`, registers the metrics, opens the native side (creates the TUN),
/// binds the UDP sockets and the metrics endpoint, and spawns the tasks on the current
/// runtime.
///
/// Every failure happens here, before anything runs, as one error naming what failed, e.g.
/// `cannot create TUN device teredo0: Operation not permitted (os error 1) (needs
/// CAP_NET_ADMIN; use --native none to run without it)`.
pub async fn start(options: RelayOptions, shutdown: Shutdown) -> anyhow::Result<RunningRelay> {
    for w in options.validate()? {
        tracing::warn!("{w}");
    }
    let workers = options.workers;
    let shard_count = options.shard_count();
    let metrics =
        RelayMetrics::register(&options.registry).context("cannot register the relay metrics")?;
    let (sinks, source) = native::open(&options.native, workers, options.offload.tun_gso)?;

    // Every worker's socket on the same address; with port 0 the first one picks it.
    let udp = UdpOptions {
        reuse_port: true,
        ..options.udp.clone()
    };
    let mut sockets = Vec::with_capacity(workers);
    let mut bound = options.bind;
    for _ in 0..workers {
        let s = bind_udp(bound, &udp)?;
        bound = bound_v4(&s, bound)?;
        sockets.push(Arc::new(s));
    }
    // The program needs the bound port, and is attached before any task reads a socket or
    // the TUN device: nothing is forwarded (or reported listening) without it.
    let mut fast = FastPath::start(&options, bound)?;
    if let Some(f) = &fast {
        f.register(&options.registry)
            .context("cannot register the fast path metrics")?;
    }

    let now = teredo_rt::now();
    let mut core = options.shard_config(shard_count);
    // The fast path's map entries expire unless the core reports the receptions it handles.
    core.peer_refreshed_events = fast.is_some();
    let shards = Arc::new(ShardedRelay::new(core, shard_count, options.seed, now));
    let ctx = Arc::new(Ctx::new(
        Arc::clone(&shards),
        metrics,
        now,
        fast.as_ref().map(FastPath::feed),
    ));

    let mut tasks = Tasks::new();
    let metrics_addr = tasks
        .serve_metrics(options.metrics_addr, &options.registry, &shutdown)
        .await?;

    for (socket, sink) in sockets.iter().zip(&sinks) {
        tasks.spawn(worker::udp_task(
            Arc::clone(&ctx),
            Arc::clone(socket),
            sink.clone(),
            shutdown.clone(),
        ));
    }
    match source {
        NativeSource::Tun(queues) => {
            for ((queue, socket), sink) in queues.into_iter().zip(&sockets).zip(&sinks) {
                tasks.spawn(worker::tun_task(
                    Arc::clone(&ctx),
                    queue,
                    Arc::clone(socket),
                    sink.clone(),
                    options.offload.udp_gso,
                    shutdown.clone(),
                ));
            }
        }
        NativeSource::Channel(rx) => {
            tasks.spawn(worker::channel_task(
                Arc::clone(&ctx),
                rx,
                Arc::clone(&sockets[0]),
                sinks[0].clone(),
                options.offload.udp_gso,
                shutdown.clone(),
            ));
        }
        NativeSource::Disabled => {}
    }
    tasks.spawn(worker::timer_task(
        Arc::clone(&ctx),
        Arc::clone(&sockets[0]),
        sinks[0].clone(),
        shutdown.clone(),
    ));
    if let Some(rx) = fast.as_mut().and_then(FastPath::take_receiver) {
        let f = fast.as_ref().map(FastPath::shared);
        tasks.spawn(fast_path::sync_task(
            f.expect("fast path present"),
            rx,
            Arc::clone(&ctx),
            Arc::clone(&sockets[0]),
            sinks[0].clone(),
            shutdown.clone(),
        ));
    }
    if let Some(fast) = fast {
        let stop = shutdown.clone();
        tasks.spawn(async move {
            stop.wait().await;
            fast.detach();
            Ok(())
        });
    }
    tracing::info!(
        addr = %bound,
        native = %options.native.describe(),
        workers,
        shards = shard_count,
        trust = options.core.trust.as_str(),
        max_peers = options.core.max_peers,
        queue_bytes = options.core.queue_bytes_per_peer,
        icmp_source = ?options.core.icmp_source,
        fast_path = options.fast_path.as_str(),
        "teredo relay listening"
    );
    Ok(RunningRelay {
        local: bound,
        metrics_addr,
        shards,
        tasks,
    })
}

/// A started relay: its bound address and its tasks.
///
/// The tasks stop when the [`Shutdown`] given to [`start`] fires; dropping this handle
/// aborts them.
#[derive(Debug)]
pub struct RunningRelay {
    local: SocketAddrV4,
    metrics_addr: Option<SocketAddr>,
    shards: Arc<ShardedRelay>,
    tasks: Tasks,
}

impl RunningRelay {
    /// The UDP address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// The bound metrics endpoint, if one was asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The sharded core (to inspect peers in tests and the lab).
    pub fn shards(&self) -> &Arc<ShardedRelay> {
        &self.shards
    }

    /// Waits until every task has stopped after shutdown. If a task fails (or panics)
    /// first, the others are stopped and its error is returned.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.tasks.wait("relay").await?;
        tracing::info!(addr = %self.local, "teredo relay stopped");
        Ok(())
    }
}
