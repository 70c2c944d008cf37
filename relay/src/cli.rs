//! The command line of `teredo-relay` (clap derive; every flag has an environment fallback
//! `TEREDO_RELAY_*`).

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;

use clap::{Parser, ValueEnum};
use teredo::relay::{
    TrustPolicy, UnknownPeerPolicy, DEFAULT_MAX_PEERS, DEFAULT_QUEUE_BYTES_PER_PEER,
};
use teredo_rt::LogFormat;

use crate::config::{
    default_workers, FastPathMode, NativeSide, Offload, RelayOptions, DEFAULT_TUN_NAME, MAX_WORKERS,
};

/// Most runtime threads the binary starts (the worker count, capped).
pub const MAX_THREADS: usize = MAX_WORKERS;

/// Teredo relay (RFC 4380 §5.4): forwards between native IPv6 (packets routed to 2001::/32)
/// and Teredo clients over UDP/IPv4, bubbling through a client's server until the client
/// has proved its NAT mapping.
#[derive(Clone, Debug, PartialEq, Eq, Parser)]
#[command(name = "teredo-relay", version)]
pub struct Args {
    /// UDP address of the relay's Teredo socket, shared by all workers (SO_REUSEPORT).
    /// 0.0.0.0 suits a host with one IPv4 address; on a host with several, bind the one
    /// clients reach: a wildcard socket answers from whatever address the route picks.
    #[arg(
        long,
        env = "TEREDO_RELAY_BIND",
        value_name = "IPV4:PORT",
        default_value = "0.0.0.0:3545"
    )]
    pub bind: SocketAddrV4,

    /// Native IPv6 side: `tun` or `tun:NAME` creates a TUN device (MTU 1280, one queue per
    /// worker, route 2001::/32 via fe80::1; needs CAP_NET_ADMIN and iproute2); `none` drops
    /// packets from clients (counted as native_disabled) and receives nothing.
    #[arg(
        long,
        env = "TEREDO_RELAY_NATIVE",
        value_name = "tun[:NAME]|none",
        default_value = "tun:teredo0"
    )]
    pub native: NativeMode,

    /// How datagrams from clients are authenticated: strict = RFC 4380 §5.4.2 (outer source
    /// must equal the mapping in the Teredo address); lenient also accepts a direct bubble
    /// answering our indirect bubble from another mapping (clients behind symmetric NATs).
    #[arg(long, env = "TEREDO_RELAY_TRUST", value_enum, default_value_t = TrustMode::Strict)]
    pub trust: TrustMode,

    /// A datagram from a client the relay has no entry for, whose outer source equals the
    /// mapping in its Teredo address: `accept` creates the peer, trusted (after a relay
    /// restart, clients that send first are not dropped until their next connectivity test,
    /// about 30 s); `drop` discards it as unknown_peer, as Miredo's relay does (RFC 4380
    /// §5.4.2 allows both).
    #[arg(
        long,
        env = "TEREDO_RELAY_UNKNOWN_PEERS",
        value_enum,
        default_value_t = UnknownPeers::Accept
    )]
    pub unknown_peers: UnknownPeers,

    /// Peer table size, over all workers; when full, the least recently used untrusted
    /// peer is evicted.
    #[arg(long, env = "TEREDO_RELAY_MAX_PEERS", value_name = "N", default_value_t = DEFAULT_MAX_PEERS)]
    pub max_peers: usize,

    /// Bytes of packets queued per peer while its bubble exchange runs (Miredo: 1280).
    #[arg(
        long,
        env = "TEREDO_RELAY_QUEUE_BYTES",
        value_name = "N",
        default_value_t = DEFAULT_QUEUE_BYTES_PER_PEER
    )]
    pub queue_bytes: usize,

    /// Workers (UDP sockets and TUN queues) [default: the number of CPUs].
    #[arg(long, env = "TEREDO_RELAY_WORKERS", value_name = "N")]
    pub workers: Option<usize>,

    /// The relay's own native IPv6 address, used as the source of ICMPv6 destination
    /// unreachable errors (sent when a Teredo peer never answers). Without it no ICMPv6
    /// errors are sent at all.
    #[arg(long, env = "TEREDO_RELAY_ICMP_SOURCE", value_name = "IPV6")]
    pub icmp_source: Option<Ipv6Addr>,

    /// Kernel offloads: `all` (default), `udp` (UDP GSO: a run of equal-length datagrams to
    /// one peer in one send), `tun` (TUN GSO: a run of same-flow packets written to the
    /// TUN as one), `none` (one packet per system call, as measured without offload).
    #[arg(long, env = "TEREDO_RELAY_OFFLOAD", value_enum, default_value_t = OffloadMode::All)]
    pub offload: OffloadMode,

    /// Serve Prometheus metrics on http://IP:PORT/metrics.
    #[arg(long, env = "TEREDO_RELAY_METRICS_ADDR", value_name = "IP:PORT")]
    pub metrics_addr: Option<SocketAddr>,

    /// When the peer table is full of trusted peers, evict the least recently used one to
    /// make room (true), or refuse the new peer, counted as peer_table_full (false).
    /// Untrusted peers are always evicted first.
    #[arg(
        long,
        env = "TEREDO_RELAY_EVICT_TRUSTED",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub evict_trusted: bool,

    /// Bubble rounds per second over all peers (each new destination costs a bubble to the
    /// server its address names), in bursts of up to 100 per shard; rounds over the limit
    /// are skipped (the exchange still gives up on time). 0 = no limit.
    #[arg(
        long,
        env = "TEREDO_RELAY_BUBBLE_RATE",
        value_name = "N",
        default_value_t = 0
    )]
    pub bubble_rate: u32,

    /// Forward trusted peers' packets in the kernel: `xdp` attaches an XDP program to the
    /// interface holding the --bind address and to --native-interface (needs root or
    /// CAP_BPF + CAP_NET_ADMIN, a build with clang and libbpf-dev, a --bind address that is
    /// not 0.0.0.0 and a TUN native side) and fails if it cannot; `auto` falls back to
    /// `none` with the reason logged. Bubbles, queues, untrusted or expired peers and every
    /// drop still go through this relay.
    #[arg(long, env = "TEREDO_RELAY_FAST_PATH", value_enum, default_value_t = FastPathArg::None)]
    pub fast_path: FastPathArg,

    /// The interface native IPv6 arrives on, where the fast path is attached too (not
    /// needed when the --bind address's interface carries both sides).
    #[arg(long, env = "TEREDO_RELAY_NATIVE_INTERFACE", value_name = "NAME")]
    pub native_interface: Option<String>,

    /// Log format on stderr (the filter comes from RUST_LOG, default info).
    #[arg(long, env = "TEREDO_RELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The `--native` choices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NativeMode {
    /// A TUN device of this name.
    Tun(String),
    /// No native side.
    None,
}

impl FromStr for NativeMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "tun" => Ok(Self::Tun(DEFAULT_TUN_NAME.to_owned())),
            _ => match s.strip_prefix("tun:") {
                Some(name) if !name.is_empty() => Ok(Self::Tun(name.to_owned())),
                _ => Err(format!("expected `tun`, `tun:NAME` or `none`, got {s:?}")),
            },
        }
    }
}

impl fmt::Display for NativeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tun(name) => write!(f, "tun:{name}"),
            Self::None => f.write_str("none"),
        }
    }
}

/// The `--fast-path` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FastPathArg {
    /// Every packet goes through the user-space relay
    None,
    /// XDP program forwarding trusted peers' packets; fail if it cannot be attached
    Xdp,
    /// XDP where it can be attached, else none (the reason is logged)
    Auto,
}

/// The `--trust` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TrustMode {
    /// RFC 4380 §5.4.2: only the embedded (or recorded) mapping
    Strict,
    /// Also a direct bubble answering our bubble from another mapping (symmetric NATs)
    Lenient,
}

/// The `--unknown-peers` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum UnknownPeers {
    /// Create the peer, trusted
    Accept,
    /// Drop the datagram (unknown_peer), as Miredo
    Drop,
}

/// The `--offload` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OffloadMode {
    /// UDP GSO and TUN GSO
    All,
    /// UDP GSO only (native→Teredo)
    Udp,
    /// TUN GSO only (Teredo→native)
    Tun,
    /// Neither: one packet per system call on the TUN, plain sendmmsg on UDP
    None,
}

impl Args {
    /// The library configuration these flags describe (validated later, by
    /// [`start`](crate::start)).
    pub fn to_options(&self) -> RelayOptions {
        let mut o = RelayOptions {
            bind: self.bind,
            workers: self.workers.unwrap_or_else(default_workers),
            metrics_addr: self.metrics_addr,
            ..RelayOptions::default()
        };
        o.native = match &self.native {
            NativeMode::Tun(name) => NativeSide::Tun { name: name.clone() },
            NativeMode::None => NativeSide::Disabled,
        };
        o.core.trust = match self.trust {
            TrustMode::Strict => TrustPolicy::Strict,
            TrustMode::Lenient => TrustPolicy::Lenient,
        };
        o.core.unknown_peers = match self.unknown_peers {
            UnknownPeers::Accept => UnknownPeerPolicy::Accept,
            UnknownPeers::Drop => UnknownPeerPolicy::Drop,
        };
        o.core.max_peers = self.max_peers;
        o.core.queue_bytes_per_peer = self.queue_bytes;
        o.core.icmp_source = self.icmp_source;
        o.core.evict_trusted = self.evict_trusted;
        o.core.bubble_rate = self.bubble_rate;
        o.fast_path = match self.fast_path {
            FastPathArg::None => FastPathMode::None,
            FastPathArg::Xdp => FastPathMode::Xdp,
            FastPathArg::Auto => FastPathMode::Auto,
        };
        o.native_interface = self.native_interface.clone();
        o.offload = Offload {
            udp_gso: matches!(self.offload, OffloadMode::All | OffloadMode::Udp),
            tun_gso: matches!(self.offload, OffloadMode::All | OffloadMode::Tun),
        };
        o
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    use teredo_rt::cli::env_lock;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        teredo_rt::cli::try_parse("teredo-relay", args)
    }

    #[test]
    fn command_is_consistent_and_every_flag_is_documented() {
        teredo_rt::cli::assert_conventions(Args::command());
        let help = Args::command().render_long_help().to_string();
        assert!(help.contains("Without it no ICMPv6"), "{help}");
    }

    #[test]
    fn defaults() {
        let _env = env_lock();
        let a = parse(&[]).unwrap();
        let o = a.to_options();
        assert_eq!(o.bind, "0.0.0.0:3545".parse().unwrap());
        assert!(matches!(&o.native, NativeSide::Tun { name } if name == "teredo0"));
        assert_eq!(o.core.trust, TrustPolicy::Strict);
        assert_eq!(o.core.unknown_peers, UnknownPeerPolicy::Accept);
        assert_eq!(o.core.max_peers, 1 << 20);
        assert_eq!(o.core.queue_bytes_per_peer, 4096);
        assert_eq!(o.core.icmp_source, None);
        assert!(o.core.evict_trusted);
        assert_eq!(o.core.bubble_rate, 0, "no bubble limit by default");
        assert_eq!(o.workers, default_workers());
        assert_eq!(o.metrics_addr, None);
        assert_eq!(a.log_format, LogFormat::Text);
        assert_eq!(o.fast_path, FastPathMode::None, "no fast path by default");
        assert_eq!(o.native_interface, None);
    }

    #[test]
    fn fast_path_flags() {
        let _env = env_lock();
        let o = parse(&[
            "--bind",
            "198.51.100.30:3545",
            "--fast-path",
            "xdp",
            "--native-interface",
            "nat0",
        ])
        .unwrap()
        .to_options();
        assert_eq!(o.fast_path, FastPathMode::Xdp);
        assert_eq!(o.native_interface.as_deref(), Some("nat0"));
        let o = parse(&["--fast-path", "auto"]).unwrap().to_options();
        assert_eq!(o.fast_path, FastPathMode::Auto);
        assert!(parse(&["--fast-path", "af_xdp"]).is_err());
        // Refused by the configuration with one line.
        let e = parse(&["--fast-path", "xdp"])
            .unwrap()
            .to_options()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--fast-path xdp cannot run on a wildcard address"),
            "{e}"
        );
    }

    #[test]
    fn every_flag() {
        let _env = env_lock();
        let a = parse(&[
            "--bind",
            "198.51.100.30:3545",
            "--native",
            "tun:relay7",
            "--trust",
            "lenient",
            "--unknown-peers",
            "drop",
            "--max-peers",
            "1000",
            "--queue-bytes",
            "1280",
            "--workers",
            "3",
            "--icmp-source",
            "2001:db8::1",
            "--metrics-addr",
            "127.0.0.1:9101",
            "--evict-trusted",
            "false",
            "--bubble-rate",
            "5000",
            "--log-format",
            "json",
        ])
        .unwrap();
        let o = a.to_options();
        assert_eq!(o.bind, "198.51.100.30:3545".parse().unwrap());
        assert!(matches!(&o.native, NativeSide::Tun { name } if name == "relay7"));
        assert_eq!(o.core.trust, TrustPolicy::Lenient);
        assert_eq!(o.core.unknown_peers, UnknownPeerPolicy::Drop);
        assert_eq!(o.core.max_peers, 1000);
        assert_eq!(o.core.queue_bytes_per_peer, 1280);
        assert_eq!(o.workers, 3);
        assert_eq!(o.core.icmp_source, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(o.metrics_addr, Some("127.0.0.1:9101".parse().unwrap()));
        assert!(!o.core.evict_trusted);
        assert_eq!(o.core.bubble_rate, 5000);
        assert_eq!(a.log_format, LogFormat::Json);
        assert!(o.validate().unwrap().is_empty());

        let a = parse(&["--native", "none"]).unwrap();
        assert!(matches!(a.to_options().native, NativeSide::Disabled));
        assert_eq!(
            a.to_options().offload,
            Offload::default(),
            "both on by default"
        );
        for (mode, udp_gso, tun_gso) in [
            ("all", true, true),
            ("udp", true, false),
            ("tun", false, true),
            ("none", false, false),
        ] {
            let o = parse(&["--offload", mode]).unwrap().to_options();
            assert_eq!(o.offload, Offload { udp_gso, tun_gso }, "{mode}");
        }
        assert!(parse(&["--offload", "gro"]).is_err());
        let a = parse(&["--native", "tun"]).unwrap();
        assert_eq!(a.native, NativeMode::Tun("teredo0".to_owned()));
        assert_eq!(a.native.to_string(), "tun:teredo0");
    }

    #[test]
    fn bad_values_are_clap_errors() {
        let _env = env_lock();
        for bad in [
            &["--bind", "2001:db8::1"][..],
            &["--bind", "198.51.100.30"],
            &["--native", "raw"],
            &["--native", "tun:"],
            &["--trust", "maybe"],
            &["--max-peers", "-1"],
            &["--evict-trusted", "sometimes"],
            &["--bubble-rate", "10/s"],
            &["--icmp-source", "198.51.100.1"],
            &["--metrics-addr", "localhost"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // Values clap accepts but the configuration refuses.
        let o = parse(&["--workers", "0"]).unwrap().to_options();
        assert!(o.validate().is_err());
        let o = parse(&["--native", "tun:way-too-long-name"])
            .unwrap()
            .to_options();
        assert!(o.validate().is_err());
    }

    /// The only test setting `TEREDO_RELAY_*` variables; the others wait on `env_lock`.
    #[test]
    fn environment_fallbacks() {
        let _env = env_lock();
        let [a, b]: [Result<Args, _>; 2] = teredo_rt::cli::parse_with_env(
            "teredo-relay",
            &[
                ("TEREDO_RELAY_NATIVE", "none"),
                ("TEREDO_RELAY_TRUST", "lenient"),
                ("TEREDO_RELAY_WORKERS", "2"),
                ("TEREDO_RELAY_FAST_PATH", "auto"),
                ("TEREDO_RELAY_NATIVE_INTERFACE", "eth1"),
            ],
            &[&[], &["--trust", "strict"]],
        )
        .try_into()
        .expect("two command lines");
        let a = a.unwrap();
        assert_eq!(a.native, NativeMode::None);
        assert_eq!(a.trust, TrustMode::Lenient);
        assert_eq!(a.workers, Some(2));
        assert_eq!(a.fast_path, FastPathArg::Auto);
        assert_eq!(a.native_interface.as_deref(), Some("eth1"));
        assert_eq!(
            b.unwrap().trust,
            TrustMode::Strict,
            "flags override the environment"
        );
    }
}
