//! The kernel fast path (`--fast-path`): teredo-fastpath's relay XDP program attached to the
//! Teredo interface (the one holding the bind address) and the native one
//! (`--native-interface`), forwarding the packets of trusted peers in both directions
//! before they reach the sockets and the TUN device. Everything else (bubbles, queues,
//! untrusted or expired peers, every drop) still goes through the core.
//!
//! The core stays the reference; the program only has a copy of its trusted peers in a BPF
//! map, kept in step in both directions:
//! * **core → map**: every trust change the core reports (`Feed::event`, called from
//!   `take_events` under the shard lock) is queued on a channel and applied by the sync task
//!   (`sync.rs`): no map syscall on the packet path, and a peer's changes applied in the
//!   order the core made them. Lost changes (core events dropped, channel full) trigger a
//!   full resync from [`teredo::relay::Relay::trusted_peers`].
//! * **map → core**: once a second the sync task reads the map and hands the times the
//!   program moved to [`teredo::relay::Relay::refresh_peer`], so a peer the fast path keeps
//!   busy stays valid and alive in the core.
//!
//! Metrics (`metrics.rs`, names in [`FAST_FORWARDED`] and its neighbours): the program's
//! counters are read at scrape time.

mod metrics;
mod sync;

use std::net::{Ipv6Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::Registry;
use teredo::relay::{Event, MAX_TIMER, MIN_TIMER};
use teredo_fastpath::{interface_of, RelayCounters, RelayFastPathConfig, XdpRelay};
use tokio::sync::mpsc;

use crate::config::{FastPathMode, RelayOptions, TUN_MTU};

pub(crate) use self::metrics::SyncError;
use self::metrics::{FastPathMetrics, SyncMetrics};
pub use self::metrics::{FAST_FORWARDED, FAST_PASSED, FAST_PEERS, FAST_SYNC_ERRORS};
pub(crate) use self::sync::sync_task;

/// Trust changes waiting for the sync task; beyond this the map is rebuilt instead.
const QUEUE: usize = 1 << 16;

/// One change of the peer map, in the order the core made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// The peer is trusted with this mapping and was just heard from.
    Upsert(Ipv6Addr, SocketAddrV4),
    /// The peer is no longer trusted (expired, evicted, gave up).
    Remove(Ipv6Addr),
}

impl Op {
    /// The map change a core event asks for, if any.
    fn of(e: &Event) -> Option<Self> {
        match *e {
            Event::PeerTrusted { peer, mapping, .. } | Event::PeerRefreshed { peer, mapping } => {
                Some(Self::Upsert(peer, mapping))
            }
            // Untrusted peers are never in the map; a give-up may concern a trusted one.
            Event::PeerExpired {
                peer,
                trusted: true,
            }
            | Event::PeerEvicted {
                peer,
                trusted: true,
            }
            | Event::PeerUnreachable { peer, .. } => Some(Self::Remove(peer)),
            _ => None,
        }
    }
}

/// What the sync task, the workers and the metrics share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The program (`None` once detached) and its last counters (kept for the metrics).
    state: Mutex<State>,
    /// The map must be rebuilt: a change could not be queued.
    resync: AtomicBool,
    metrics: SyncMetrics,
}

#[derive(Debug)]
struct State {
    program: Option<XdpRelay>,
    last: RelayCounters,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The workers' end: turns core events into queued map changes.
#[derive(Clone, Debug)]
pub(crate) struct Feed {
    tx: mpsc::Sender<Op>,
    shared: Arc<Shared>,
}

impl Feed {
    /// Queues the map change `e` asks for. Never waits: when the queue is full the change is
    /// dropped, counted, and the map rebuilt at the next sync.
    pub(crate) fn event(&self, e: &Event) {
        if let Some(op) = Op::of(e) {
            if self.tx.try_send(op).is_err() {
                self.shared.resync.store(true, Ordering::Release);
                self.shared.metrics.error(SyncError::QueueFull);
            }
        }
    }
}

/// The attached program: the workers' [`Feed`], and what the sync task takes.
#[derive(Debug)]
pub(crate) struct FastPath {
    shared: Arc<Shared>,
    feed: Feed,
    rx: Option<mpsc::Receiver<Op>>,
}

impl FastPath {
    /// Sets the fast path up as `options.fast_path` asks, for the relay bound to `bound`:
    /// `None` when it is off. `Xdp` fails with the reason; `Auto` logs it and goes on.
    /// Called after the sockets are bound (the program needs the port) and before any task
    /// reads them or the TUN device, so nothing is forwarded before it is attached.
    pub(crate) fn start(
        options: &RelayOptions,
        bound: SocketAddrV4,
    ) -> anyhow::Result<Option<Self>> {
        match options.fast_path {
            FastPathMode::None => Ok(None),
            FastPathMode::Xdp => Self::attach(options, bound).map(Some),
            FastPathMode::Auto => match Self::attach(options, bound) {
                Ok(f) => Ok(Some(f)),
                Err(e) => {
                    tracing::warn!("fast path none: {e:#}");
                    Ok(None)
                }
            },
        }
    }

    fn attach(options: &RelayOptions, bound: SocketAddrV4) -> anyhow::Result<Self> {
        // A build without the program says so first, whatever else is wrong.
        teredo_fastpath::built()?;
        if let Some(why) = options.fast_path_unsupported() {
            anyhow::bail!("--fast-path xdp cannot {why}");
        }
        let config = RelayFastPathConfig {
            relay: bound,
            tun_mtu: TUN_MTU,
            // As the core uses it (durations are clamped there).
            validity: options.core.validity.clamp(MIN_TIMER, MAX_TIMER),
            max_peers: u32::try_from(options.core.max_peers).unwrap_or(u32::MAX),
        };
        let mut interfaces = vec![interface_of(*bound.ip())?];
        if let Some(native) = &options.native_interface {
            if !interfaces.contains(native) {
                interfaces.push(native.clone());
            }
        }
        // The program's route lookups follow the kernel's forwarding settings of the
        // interface a frame came in on: without them it passes every packet (`no_route`).
        let native = interfaces.last().map_or("", String::as_str);
        for (sysctl, what) in [
            (format!("ipv4/conf/{native}/forwarding"), "native packets"),
            ("ipv6/conf/all/forwarding".to_owned(), "client packets"),
        ] {
            if sysctl_off(&sysctl) {
                tracing::warn!(
                    "net.{} is 0: the fast path leaves {what} to the slow path (no_route)",
                    sysctl.replace('/', ".")
                );
            }
        }
        let mut program = XdpRelay::load(&config)?;
        for i in &interfaces {
            let mode = program.attach(i)?;
            tracing::info!(interface = %i, mode = mode.as_str(), "relay XDP fast path attached");
            if is_veth(i) {
                tracing::warn!(
                    interface = %i,
                    "a veth takes the frames XDP redirects into it only if its peer runs an \
                     XDP program too (e.g. xdp_pass, see the fastpath README)"
                );
            }
        }
        Self::with_program(program)
    }

    /// The fast path around a loaded (and normally attached) program.
    fn with_program(program: XdpRelay) -> anyhow::Result<Self> {
        let last = program.counters()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                program: Some(program),
                last,
            }),
            resync: AtomicBool::new(false),
            metrics: SyncMetrics::new()?,
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        Ok(Self {
            feed: Feed {
                tx,
                shared: Arc::clone(&shared),
            },
            shared,
            rx: Some(rx),
        })
    }

    /// Registers the fast path's metrics.
    pub(crate) fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        self.shared.metrics.register(registry)?;
        registry.register(Box::new(FastPathMetrics::new(Arc::clone(&self.shared))?))
    }

    /// The workers' end.
    pub(crate) fn feed(&self) -> Feed {
        self.feed.clone()
    }

    /// The sync task's end (once).
    pub(crate) fn take_receiver(&mut self) -> Option<mpsc::Receiver<Op>> {
        self.rx.take()
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Detaches the program from every interface (the counters stay as they were).
    pub(crate) fn detach(&self) {
        let mut s = self.shared.state();
        if let Some(p) = s.program.take() {
            if let Ok(c) = p.counters() {
                s.last = c;
            }
            drop(p);
            tracing::info!("relay XDP fast path detached");
        }
    }
}

impl Drop for FastPath {
    /// A relay stopped any way (shutdown, a failed task, its handle dropped) leaves no
    /// program attached.
    fn drop(&mut self) {
        self.detach();
    }
}

/// True when `/proc/sys/net/<path>` reads 0.
fn sysctl_off(path: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/{path}")).is_ok_and(|v| v.trim() == "0")
}

/// True for a veth (sysfs shows a link to a peer: its `iflink` differs from its `ifindex`, and
/// it is no device of a driver).
fn is_veth(interface: &str) -> bool {
    let dir = std::path::Path::new("/sys/class/net").join(interface);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let linked = matches!((read("ifindex"), read("iflink")), (Some(a), Some(b)) if a != b);
    linked && !dir.join("device").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_map_changes() {
        let peer: Ipv6Addr = "2001:0:c633:6401:0:63bf:39cc:9bf5".parse().unwrap();
        let mapping: SocketAddrV4 = "192.0.2.1:40000".parse().unwrap();
        let trusted = Event::PeerTrusted {
            peer,
            mapping,
            via: teredo::relay::Acceptance::EmbeddedMapping,
            exchange: None,
        };
        assert_eq!(Op::of(&trusted), Some(Op::Upsert(peer, mapping)));
        assert_eq!(
            Op::of(&Event::PeerRefreshed { peer, mapping }),
            Some(Op::Upsert(peer, mapping))
        );
        for e in [
            Event::PeerExpired {
                peer,
                trusted: true,
            },
            Event::PeerEvicted {
                peer,
                trusted: true,
            },
            Event::PeerUnreachable { peer, dropped: 0 },
        ] {
            assert_eq!(Op::of(&e), Some(Op::Remove(peer)), "{e:?}");
        }
        // Never in the map: nothing to do.
        for e in [
            Event::PeerExpired {
                peer,
                trusted: false,
            },
            Event::PeerEvicted {
                peer,
                trusted: false,
            },
        ] {
            assert_eq!(Op::of(&e), None, "{e:?}");
        }
    }

    #[test]
    fn a_full_queue_asks_for_a_resync_and_is_counted() {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                program: None,
                last: RelayCounters::default(),
            }),
            resync: AtomicBool::new(false),
            metrics: SyncMetrics::new().unwrap(),
        });
        let registry = Registry::new();
        shared.metrics.register(&registry).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let feed = Feed {
            tx,
            shared: Arc::clone(&shared),
        };
        let peer: Ipv6Addr = "2001:0:c633:6401:0:63bf:39cc:9bf5".parse().unwrap();
        let gone = Event::PeerUnreachable { peer, dropped: 1 };
        feed.event(&gone);
        assert!(!shared.resync.load(Ordering::Acquire));
        feed.event(&gone);
        assert!(shared.resync.load(Ordering::Acquire));
        assert_eq!(rx.try_recv().unwrap(), Op::Remove(peer));
        assert!(rx.try_recv().is_err(), "the second change was dropped");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains("teredo_relay_fast_path_sync_errors_total{reason=\"queue_full\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("teredo_relay_fast_path_sync_errors_total{reason=\"upsert\"} 0\n"));
        assert!(text.contains("teredo_relay_fast_path_peers 0\n"));
    }

    #[test]
    fn auto_runs_without_what_xdp_refuses_in_one_line() {
        let bound: SocketAddrV4 = "0.0.0.0:3545".parse().unwrap();
        let mut o = RelayOptions {
            fast_path: FastPathMode::Auto,
            ..RelayOptions::default()
        };
        assert!(FastPath::start(&o, bound).unwrap().is_none());
        o.fast_path = FastPathMode::Xdp;
        let e = FastPath::start(&o, bound).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.starts_with("--fast-path xdp cannot run on a wildcard address")
                || e.starts_with("built without the XDP program"),
            "{e}"
        );
        o.fast_path = FastPathMode::None;
        assert!(FastPath::start(&o, bound).unwrap().is_none());
    }

    #[test]
    fn a_loopback_is_no_veth() {
        assert!(!is_veth("lo"));
        assert!(!is_veth("no-such-interface"));
    }
}
