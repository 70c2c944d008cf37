//! Small tokio glue shared by the teredo-lab binaries (server, relay, client-sim) and the
//! end-to-end tests.
//!
//! The protocol itself lives in the sans-IO `teredo` crate; everything here is the thin,
//! runtime-specific layer around it that every binary would otherwise copy:
//!
//! - [`batch`]: `recvmmsg`/`sendmmsg` (and UDP GSO) with buffers allocated once;
//! - [`udp`]: UDP sockets configured the way RFC 4380 wants them (never set DF), with
//!   optional `SO_REUSEPORT` for multi-worker relays and large kernel buffers;
//! - [`cli`]: the conventions every command line follows (help and env fallback per flag);
//! - [`component`]: what the server and the relay build the same way around their cores:
//!   metric families with every series at zero, drop counters by reason, their tasks;
//! - [`metrics`]: the Prometheus `/metrics` HTTP endpoint;
//! - [`process`]: the standard `process_*` metrics (CPU time, memory, file descriptors);
//! - [`logging`]: `tracing` initialisation honouring `RUST_LOG`, text or JSON;
//! - [`shutdown`]: SIGINT/SIGTERM handling and a cloneable shutdown handle that in-process
//!   callers (the lab, tests) can trigger;
//! - [`clock`]: the one place drivers read the time, so tokio's paused time works in tests.
//!
//! Linux only: it relies on `/proc`, `IP_MTU_DISCOVER` and `IP_FREEBIND`.

pub mod batch;
pub mod cli;
pub mod clock;
pub mod component;
pub mod fairness;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod shutdown;
pub mod udp;

pub use clock::now;
pub use component::{ComponentMetrics, DropCounters, Tasks};
pub use fairness::yield_after_full_batch;
pub use logging::{init_tracing, LogFormat};
pub use metrics::{register, register_process_metrics, render, serve_metrics, spawn_metrics};
pub use shutdown::{shutdown_signal, Shutdown, ShutdownTrigger};
pub use udp::{bind_udp, bind_udp_std, bound_v4, UdpOptions, MAX_DATAGRAM};
