//! The relay's configuration as the library takes it (the CLI builds one, the lab and the
//! tests build their own), and its validation.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use prometheus::Registry;
use teredo::addr::{is_ipv6_non_global, is_teredo};
use teredo::relay::RelayConfig;
pub use teredo_fastpath::FastPathMode;
use teredo_rt::UdpOptions;
use tokio::sync::mpsc;

/// Default UDP address of the relay: every local IPv4 address, port 3545 (a relay has one
/// socket, so unlike a server it may bind the wildcard; see [`RelayOptions::bind`]).
pub const DEFAULT_BIND: SocketAddrV4 = SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 3545);
/// Default TUN device name.
pub const DEFAULT_TUN_NAME: &str = "teredo0";
/// MTU of the TUN device (the Teredo link MTU, RFC 4380 §5.1.2).
pub const TUN_MTU: u32 = 1280;
/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Upper bound on `workers` (a sanity limit, far above any core count we run on).
pub const MAX_WORKERS: usize = 256;

/// Where the relay's native IPv6 side is.
#[derive(Clone)]
pub enum NativeSide {
    /// A TUN device of this name, created by [`start`](crate::start) with one queue per
    /// worker (`IFF_MULTI_QUEUE`), MTU 1280, up, with `fe80::ffff:ffff:ffff/64` and the route
    /// `2001::/32 via fe80::1 dev NAME` (see `tun.rs`). Needs `CAP_NET_ADMIN`.
    Tun {
        /// Interface name (at most 15 bytes).
        name: String,
    },
    /// No native side: packets from clients are dropped (`native_disabled`), nothing arrives
    /// from native IPv6.
    Disabled,
    /// In-process native side for the lab and the tests: see [`NativeChannel`].
    Channel(NativeChannel),
}

impl Default for NativeSide {
    fn default() -> Self {
        Self::Tun {
            name: DEFAULT_TUN_NAME.to_owned(),
        }
    }
}

impl NativeSide {
    /// Short name for logs: `tun:NAME`, `disabled` or `channel`.
    pub fn describe(&self) -> String {
        match self {
            Self::Tun { name } => format!("tun:{name}"),
            Self::Disabled => "disabled".to_owned(),
            Self::Channel(_) => "channel".to_owned(),
        }
    }

    /// A channel native side holding up to `capacity` packets in each direction, and the
    /// other ends of it for the caller.
    pub fn channel(capacity: usize) -> (Self, NativeEnds) {
        let (to_native_tx, to_native_rx) = mpsc::channel(capacity);
        let (from_native_tx, from_native_rx) = mpsc::channel(capacity);
        (
            Self::Channel(NativeChannel {
                to_native: to_native_tx,
                from_native: Arc::new(Mutex::new(Some(from_native_rx))),
            }),
            NativeEnds {
                inject: from_native_tx,
                received: to_native_rx,
            },
        )
    }
}

impl fmt::Debug for NativeSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The relay's half of [`NativeSide::Channel`]: packets for native IPv6 go to `to_native`
/// (never waited for: a full or closed channel drops the packet as `send_failed`); native
/// packets come from `from_native`, taken by [`start`](crate::start) (so a clone of the
/// options cannot start a second relay on the same channel).
#[derive(Clone, Debug)]
pub struct NativeChannel {
    pub(crate) to_native: mpsc::Sender<Vec<u8>>,
    pub(crate) from_native: Arc<Mutex<Option<mpsc::Receiver<Vec<u8>>>>>,
}

/// The caller's ends of [`NativeSide::channel`].
#[derive(Debug)]
pub struct NativeEnds {
    /// Send complete IPv6 packets here as if native IPv6 had routed them to the relay.
    pub inject: mpsc::Sender<Vec<u8>>,
    /// Packets the relay wrote to native IPv6 (client packets, ICMPv6 errors).
    pub received: mpsc::Receiver<Vec<u8>>,
}

/// Everything [`run`](crate::run) needs. Build it with [`RelayOptions::default`] and adjust
/// the public fields.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// UDP address of the relay's Teredo socket(s). One socket per worker, all bound here
    /// with `SO_REUSEPORT`. `0.0.0.0` is fine for a relay with one IPv4 address; on a host
    /// with several, bind the one clients reach (a wildcard socket answers from whatever
    /// address the route picks, and clients' NATs filter on it). Port 0 picks one (tests).
    pub bind: SocketAddrV4,
    /// The native IPv6 side.
    pub native: NativeSide,
    /// The sans-IO core's settings. `max_peers` and `global_queue_bytes` are totals: each of
    /// the [`RelayOptions::shards`] gets its share (rounded up).
    pub core: RelayConfig,
    /// Worker count: UDP sockets and TUN queues, each with a receive task.
    pub workers: usize,
    /// Peer-table shards (locks); `None` = 8 per worker, rounded up to a power of two.
    pub shards: Option<usize>,
    /// Seed of the cores' RNGs (nonces, hash keys) for a replayable run; `None` draws from
    /// the OS.
    pub seed: Option<u64>,
    /// Address of the Prometheus `/metrics` endpoint; `None` serves none.
    pub metrics_addr: Option<SocketAddr>,
    /// Socket options of the UDP sockets (`reuse_port` is forced on).
    pub udp: UdpOptions,
    /// Registry the relay's metrics (and the process metrics) are registered in.
    pub registry: Registry,
    /// Kernel offloads used to forward with fewer system calls (see [`Offload`]).
    pub offload: Offload,
    /// The XDP fast path for trusted peers (`--fast-path`).
    pub fast_path: FastPathMode,
    /// Where native IPv6 arrives (`--native-interface`): the fast path is attached there
    /// too. `None`: only to the interface holding the bind address (enough when one
    /// interface carries both sides).
    pub native_interface: Option<String>,
}

/// Kernel offloads the workers use. Both are on by default; a kernel or route that refuses
/// one falls back to one packet per system call by itself, so turning them off is only
/// for measurements and debugging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offload {
    /// Native→Teredo: send a run of equal-length datagrams to one peer as one UDP GSO
    /// (`UDP_SEGMENT`) send; the kernel routes it once and splits it on the way out.
    pub udp_gso: bool,
    /// Teredo→native: write a run of same-flow inner UDP packets to the TUN as one
    /// `IFF_VNET_HDR` GSO packet (USO); the kernel forwards it once and splits it on the
    /// way out.
    pub tun_gso: bool,
}

impl Default for Offload {
    fn default() -> Self {
        Self {
            udp_gso: true,
            tun_gso: true,
        }
    }
}

impl Default for RelayOptions {
    /// 0.0.0.0:3545, TUN `teredo0`, the core's RFC defaults (strict trust, 1,048,576 peers,
    /// 4096 queued bytes per peer, no ICMPv6 errors), one worker per core.
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND,
            native: NativeSide::default(),
            core: RelayConfig::default(),
            workers: default_workers(),
            shards: None,
            seed: None,
            metrics_addr: None,
            udp: UdpOptions::default(),
            registry: Registry::new(),
            offload: Offload::default(),
            fast_path: FastPathMode::None,
            native_interface: None,
        }
    }
}

/// The number of CPUs this process may run on (1 if unknown).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl RelayOptions {
    /// The shard count actually used.
    pub fn shard_count(&self) -> usize {
        self.shards
            .unwrap_or_else(|| (self.workers.max(1) * 8).next_power_of_two())
            .clamp(1, self.core.max_peers.max(1))
    }

    /// Checks the settings; returns warnings worth logging.
    pub fn validate(&self) -> Result<Vec<String>, ConfigError> {
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return Err(ConfigError::Workers(self.workers));
        }
        if self.shards == Some(0) {
            return Err(ConfigError::Shards);
        }
        if self.core.max_peers == 0 {
            return Err(ConfigError::MaxPeers);
        }
        let ip = *self.bind.ip();
        if ip.is_multicast() || ip.is_broadcast() {
            return Err(ConfigError::Bind(self.bind));
        }
        if let NativeSide::Tun { name } = &self.native {
            if !valid_ifname(name) {
                return Err(ConfigError::TunName(name.clone()));
            }
        }
        if let Some(name) = &self.native_interface {
            if !valid_ifname(name) {
                return Err(ConfigError::InterfaceName(name.clone()));
            }
        }
        if self.fast_path == FastPathMode::Xdp {
            if let Some(why) = self.fast_path_unsupported() {
                return Err(ConfigError::FastPath(why));
            }
        }
        if let Some(src) = self.core.icmp_source {
            if is_ipv6_non_global(&src) || is_teredo(&src) {
                return Err(ConfigError::IcmpSource(src));
            }
        }
        let mut warnings = Vec::new();
        if self.native_interface.is_some() && self.fast_path == FastPathMode::None {
            warnings.push("--native-interface does nothing without --fast-path".to_owned());
        }
        if self.core.queue_bytes_per_peer < usize::try_from(TUN_MTU).unwrap_or(1280) {
            warnings.push(format!(
                "queue of {} bytes per peer is smaller than one 1280-byte packet: large packets \
                 to a peer that is not trusted yet are dropped (queue_full)",
                self.core.queue_bytes_per_peer
            ));
        }
        if self.core.icmp_source.is_none() {
            warnings.push(
                "no ICMPv6 source address (--icmp-source): native senders get no destination \
                 unreachable errors when a Teredo peer does not answer"
                    .to_owned(),
            );
        }
        Ok(warnings)
    }

    /// Why the XDP fast path cannot work with these settings, if it cannot: the program
    /// matches datagrams by the relay's address, and forwards to the kernel's native side
    /// what the core would write to its TUN (any other native side would be bypassed).
    pub fn fast_path_unsupported(&self) -> Option<&'static str> {
        if self.bind.ip().is_unspecified() {
            return Some("run on a wildcard address: bind the relay's IPv4 address (--bind)");
        }
        if !matches!(self.native, NativeSide::Tun { .. }) {
            return Some("run without a TUN native side (--native tun[:NAME])");
        }
        None
    }

    /// The core configuration of one of `shards` shards.
    pub fn shard_config(&self, shards: usize) -> RelayConfig {
        let shards = shards.max(1);
        let mut c = self.core;
        c.max_peers = self.core.max_peers.div_ceil(shards).max(1);
        c.global_queue_bytes = self.core.global_queue_bytes.div_ceil(shards);
        c.bubble_rate = self.core.bubble_rate.div_ceil(shards as u32);
        c
    }
}

/// Whether Linux accepts `name` as an interface name.
fn valid_ifname(name: &str) -> bool {
    !(name.is_empty()
        || name.len() > MAX_IFNAME_LEN
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0))
}

/// A configuration [`RelayOptions::validate`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Worker count 0 or above [`MAX_WORKERS`].
    #[error("workers must be between 1 and {MAX_WORKERS} (got {0})")]
    Workers(usize),
    /// Zero shards.
    #[error("shards must be at least 1")]
    Shards,
    /// A peer table without room.
    #[error("max-peers must be at least 1")]
    MaxPeers,
    /// A multicast or broadcast bind address.
    #[error("cannot bind the relay to {0}: not a unicast or wildcard address")]
    Bind(SocketAddrV4),
    /// An interface name Linux would refuse.
    #[error("invalid TUN device name {0:?}: 1 to 15 bytes, no '/', ':', whitespace or NUL")]
    TunName(String),
    /// An interface name Linux would refuse.
    #[error("invalid native interface name {0:?}: 1 to 15 bytes, no '/', ':', whitespace or NUL")]
    InterfaceName(String),
    /// A fast path that cannot work with the other settings.
    #[error("--fast-path xdp cannot {0}")]
    FastPath(&'static str),
    /// An ICMPv6 error source that is not one of the relay's global addresses.
    #[error("ICMPv6 source {0} must be a global unicast, non-Teredo IPv6 address of the relay")]
    IcmpSource(Ipv6Addr),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let o = RelayOptions::default();
        assert_eq!(o.bind, "0.0.0.0:3545".parse().unwrap());
        assert!(matches!(&o.native, NativeSide::Tun { name } if name == "teredo0"));
        assert_eq!(o.core, RelayConfig::default());
        assert!(o.workers >= 1);
        assert!(o.shard_count().is_power_of_two());
        assert_eq!(o.shard_count(), (o.workers * 8).next_power_of_two());
        let w = o.validate().unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("--icmp-source"));
    }

    #[test]
    fn shard_config_splits_the_totals() {
        let mut o = RelayOptions::default();
        o.core.max_peers = 1000;
        o.core.global_queue_bytes = 1001;
        o.shards = Some(8);
        let c = o.shard_config(o.shard_count());
        assert_eq!(c.max_peers, 125);
        assert_eq!(c.global_queue_bytes, 126);
        assert_eq!(c.queue_bytes_per_peer, o.core.queue_bytes_per_peer);
        // Never more shards than peers, never a shard without room.
        o.core.max_peers = 3;
        assert_eq!(o.shard_count(), 3);
        assert_eq!(o.shard_config(3).max_peers, 1);
    }

    #[test]
    fn refuses_bad_settings() {
        let bad = |f: &dyn Fn(&mut RelayOptions)| {
            let mut o = RelayOptions::default();
            f(&mut o);
            o.validate().unwrap_err().to_string()
        };
        assert_eq!(
            bad(&|o| o.workers = 0),
            "workers must be between 1 and 256 (got 0)"
        );
        assert_eq!(bad(&|o| o.shards = Some(0)), "shards must be at least 1");
        assert_eq!(
            bad(&|o| o.core.max_peers = 0),
            "max-peers must be at least 1"
        );
        assert!(bad(&|o| o.bind = "224.0.0.1:3545".parse().unwrap()).contains("224.0.0.1:3545"));
        for name in ["", "a-very-long-interface", "a/b", "te redo", "tun:0"] {
            let e = bad(&|o| {
                o.native = NativeSide::Tun {
                    name: name.to_owned(),
                };
            });
            assert!(e.starts_with("invalid TUN device name"), "{e}");
        }
        for src in ["fe80::1", "::1", "ff02::1", "2001:0:c633:6401::1", "::"] {
            let e = bad(&|o| o.core.icmp_source = Some(src.parse().unwrap()));
            assert!(e.starts_with(&format!("ICMPv6 source {src}")), "{e}");
        }
        let mut o = RelayOptions::default();
        o.core.icmp_source = Some("2001:db8::1".parse().unwrap());
        assert_eq!(o.validate().unwrap(), Vec::<String>::new());
        o.core.queue_bytes_per_peer = 100;
        assert!(o.validate().unwrap()[0].contains("100 bytes"));
    }

    #[test]
    fn fast_path_combinations() {
        let mut o = RelayOptions::default();
        o.core.icmp_source = Some("2001:db8::1".parse().unwrap());
        o.native_interface = Some("nat0".to_owned());
        assert!(o.validate().unwrap()[0].starts_with("--native-interface does nothing"));
        o.fast_path = FastPathMode::Xdp;
        assert_eq!(
            o.validate().unwrap_err().to_string(),
            "--fast-path xdp cannot run on a wildcard address: bind the relay's IPv4 address \
             (--bind)"
        );
        o.bind = "198.51.100.30:3545".parse().unwrap();
        assert_eq!(o.validate().unwrap(), Vec::<String>::new());
        o.native = NativeSide::Disabled;
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--native tun"));
        // Auto only logs it (the fast path module does) and runs without.
        o.fast_path = FastPathMode::Auto;
        assert!(o.validate().is_ok());
        assert!(o.fast_path_unsupported().is_some());
        o.native = NativeSide::default();
        o.native_interface = Some("a/b".to_owned());
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("invalid native interface name"));
    }

    #[test]
    fn channel_ends_are_connected() {
        let (side, mut ends) = NativeSide::channel(2);
        let NativeSide::Channel(ch) = &side else {
            panic!("{side:?}")
        };
        ch.to_native.try_send(vec![1]).unwrap();
        assert_eq!(ends.received.try_recv().unwrap(), vec![1]);
        ends.inject.try_send(vec![2]).unwrap();
        let mut rx = ch.from_native.lock().unwrap().take().unwrap();
        assert_eq!(rx.try_recv().unwrap(), vec![2]);
        assert_eq!(format!("{side:?}"), "channel");
    }
}
