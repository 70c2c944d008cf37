//! The command line of `teredo-server` (clap derive; every flag has an environment
//! fallback `TEREDO_SERVER_*`).

use std::net::{Ipv4Addr, SocketAddr};

use clap::{Parser, ValueEnum};
use teredo_rt::LogFormat;

use crate::config::{FastPathMode, NativeSide, ServerOptions};

/// Teredo server (RFC 4380 §5.3): answers qualification router solicitations and relays
/// bubbles and ICMPv6 between Teredo clients and to native IPv6.
#[derive(Clone, Debug, PartialEq, Eq, Parser)]
#[command(name = "teredo-server", version)]
pub struct Args {
    /// Primary IPv4 address: bound on --port and embedded in the advertised prefix
    /// 2001:0:PRIMARY::/64.
    #[arg(long, env = "TEREDO_SERVER_PRIMARY", value_name = "IPV4")]
    pub primary: Ipv4Addr,

    /// Secondary IPv4 address, bound too; cone router solicitations are answered from the
    /// other address [default: primary + 1].
    #[arg(long, env = "TEREDO_SERVER_SECONDARY", value_name = "IPV4")]
    pub secondary: Option<Ipv4Addr>,

    /// UDP port of both addresses.
    #[arg(long, env = "TEREDO_SERVER_PORT", default_value_t = 3544)]
    pub port: u16,

    /// Serve Prometheus metrics on http://IP:PORT/metrics.
    #[arg(long, env = "TEREDO_SERVER_METRICS_ADDR", value_name = "IP:PORT")]
    pub metrics_addr: Option<SocketAddr>,

    /// Where packets from clients to native (non-Teredo) IPv6 destinations go.
    #[arg(long, env = "TEREDO_SERVER_NATIVE", value_enum, default_value_t = NativeMode::Raw)]
    pub native: NativeMode,

    /// MTU option of router advertisements; 0 omits the option (as Microsoft's servers do).
    #[arg(long, env = "TEREDO_SERVER_MTU", default_value_t = 1280)]
    pub mtu: u32,

    /// Largest ICMPv6 payload relayed, in bytes (bubbles are exempt); 88 is Miredo's policy
    /// against being an open relay.
    #[arg(
        long,
        env = "TEREDO_SERVER_ICMPV6_MAX_PAYLOAD",
        default_value_t = 1240,
        value_name = "BYTES"
    )]
    pub icmpv6_max_payload: usize,

    /// Answer at most N router solicitations per second from any one source IPv4 address
    /// (bursts of up to N), per server address; the rest are dropped as rate_limited. RS
    /// sources can be spoofed, so this bounds the RAs a flood can aim at one victim. Memory
    /// is a fixed 1 MiB table per address. 0 = no limit.
    #[arg(
        long,
        env = "TEREDO_SERVER_RS_RATE_LIMIT",
        default_value_t = 0,
        value_name = "N"
    )]
    pub rs_rate_limit: u32,

    /// Answer router solicitations in the kernel: `xdp` attaches an XDP program to the
    /// interfaces holding both addresses (needs root or CAP_BPF + CAP_NET_ADMIN, and a build
    /// with clang and libbpf-dev) and fails if it cannot; `auto` falls back to `none` with the
    /// reason logged. Everything the program does not fully validate (and all other traffic)
    /// still reaches this server. Not with --rs-rate-limit.
    #[arg(long, env = "TEREDO_SERVER_FAST_PATH", value_enum, default_value_t = FastPathArg::None)]
    pub fast_path: FastPathArg,

    /// Log format on stderr (the filter comes from RUST_LOG, default info).
    #[arg(long, env = "TEREDO_SERVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The `--native` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NativeMode {
    /// Send them through a raw IPv6 socket, header included, as received (needs CAP_NET_RAW)
    Raw,
    /// Drop them (counted as native_disabled)
    None,
}

/// The `--fast-path` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FastPathArg {
    /// Every datagram goes to the user-space server
    None,
    /// XDP program answering valid router solicitations; fail if it cannot be attached
    Xdp,
    /// XDP where it can be attached, else none (the reason is logged)
    Auto,
}

impl Args {
    /// The library configuration these flags describe (validated later, by
    /// [`start`](crate::start)).
    pub fn to_options(&self) -> ServerOptions {
        let mut o = ServerOptions::new(self.primary);
        if let Some(s) = self.secondary {
            o.secondary = s;
        }
        o.port = self.port;
        o.metrics_addr = self.metrics_addr;
        o.native = match self.native {
            NativeMode::Raw => NativeSide::Raw,
            NativeMode::None => NativeSide::Disabled,
        };
        o.mtu = (self.mtu != 0).then_some(self.mtu);
        o.icmpv6_max_payload = self.icmpv6_max_payload;
        o.rs_rate_limit = self.rs_rate_limit;
        o.fast_path = match self.fast_path {
            FastPathArg::None => FastPathMode::None,
            FastPathArg::Xdp => FastPathMode::Xdp,
            FastPathArg::Auto => FastPathMode::Auto,
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
        teredo_rt::cli::try_parse("teredo-server", args)
    }

    #[test]
    fn command_is_consistent_and_every_flag_is_documented() {
        teredo_rt::cli::assert_conventions(Args::command());
    }

    #[test]
    fn defaults() {
        let _env = env_lock();
        let a = parse(&["--primary", "198.51.100.1"]).unwrap();
        let o = a.to_options();
        assert_eq!(o.primary, "198.51.100.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(o.secondary, "198.51.100.2".parse::<Ipv4Addr>().unwrap());
        assert_eq!(o.port, 3544);
        assert_eq!(o.metrics_addr, None);
        assert!(matches!(o.native, NativeSide::Raw));
        assert_eq!(o.mtu, Some(1280));
        assert_eq!(o.icmpv6_max_payload, 1240);
        assert_eq!(o.rs_rate_limit, 0, "no RS rate limit by default");
        assert_eq!(o.fast_path, FastPathMode::None, "no fast path by default");
        assert_eq!(a.log_format, LogFormat::Text);
    }

    #[test]
    fn every_flag() {
        let _env = env_lock();
        let a = parse(&[
            "--primary",
            "203.0.113.5",
            "--secondary",
            "203.0.113.9",
            "--port",
            "0",
            "--metrics-addr",
            "127.0.0.1:9100",
            "--native",
            "none",
            "--mtu",
            "0",
            "--icmpv6-max-payload",
            "88",
            "--rs-rate-limit",
            "5",
            "--log-format",
            "json",
            "--fast-path",
            "xdp",
        ])
        .unwrap();
        let o = a.to_options();
        assert_eq!(o.secondary, "203.0.113.9".parse::<Ipv4Addr>().unwrap());
        assert_eq!(o.port, 0);
        assert_eq!(o.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(matches!(o.native, NativeSide::Disabled));
        assert!(!o.core_config().native);
        assert_eq!(o.mtu, None);
        assert_eq!(o.icmpv6_max_payload, 88);
        assert_eq!(o.rs_rate_limit, 5);
        assert_eq!(o.core_config().rs_rate_limit, 5);
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(o.fast_path, FastPathMode::Xdp);
    }

    #[test]
    fn bad_values_are_clap_errors() {
        let _env = env_lock();
        for bad in [
            &["--primary", "2001:db8::1"][..],
            &["--primary", "198.51.100.1", "--native", "tun"],
            &["--primary", "198.51.100.1", "--port", "70000"],
            &["--primary", "198.51.100.1", "--metrics-addr", "localhost"],
            &["--primary", "198.51.100.1", "--rs-rate-limit", "5/s"],
            &["--primary", "198.51.100.1", "--rs-rate-limit", "-1"],
            &["--primary", "198.51.100.1", "--fast-path", "af_xdp"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    /// The only test setting `TEREDO_SERVER_*` variables; the others wait on `env_lock`.
    #[test]
    fn environment_fallbacks() {
        let _env = env_lock();
        assert!(parse(&[]).is_err(), "--primary is required");
        let [a, b]: [Result<Args, _>; 2] = teredo_rt::cli::parse_with_env(
            "teredo-server",
            &[
                ("TEREDO_SERVER_PRIMARY", "198.51.100.7"),
                ("TEREDO_SERVER_NATIVE", "none"),
                ("TEREDO_SERVER_MTU", "0"),
            ],
            &[&[], &["--primary", "198.51.100.20"]],
        )
        .try_into()
        .expect("two command lines");
        let a = a.unwrap();
        assert_eq!(a.primary, "198.51.100.7".parse::<Ipv4Addr>().unwrap());
        assert_eq!(a.native, NativeMode::None);
        assert_eq!(a.to_options().mtu, None);
        assert_eq!(
            b.unwrap().primary,
            "198.51.100.20".parse::<Ipv4Addr>().unwrap(),
            "flags override the environment"
        );
    }
}
