//! The server's configuration as the library takes it (the CLI builds one, the lab and the
//! tests build their own), and its validation.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use prometheus::Registry;
use teredo::addr::{is_ipv4_global_unicast, TEREDO_PORT};
use teredo::server::ServerConfig;
pub use teredo_fastpath::FastPathMode;
use teredo_rt::UdpOptions;
use tokio::sync::mpsc;

/// Where packets for native (non-Teredo) IPv6 destinations go.
///
/// A Teredo server only ever sends towards the native side (replies come back through a
/// relay, RFC 4380 §3.4), so every variant is a sink.
#[derive(Clone, Default)]
pub enum NativeSide {
    /// A raw `AF_INET6` socket with protocol `IPPROTO_RAW`, opened by [`start`](crate::start):
    /// the packet is sent as received, IPv6 header included, to its own destination (as
    /// Miredo does; the hop limit is not decremented). Needs `CAP_NET_RAW`.
    #[default]
    Raw,
    /// Native forwarding disabled: such packets are dropped with reason `native_disabled`.
    Disabled,
    /// Hand each packet (a complete IPv6 packet, trailers stripped) to this channel, for the
    /// in-process lab and tests. The server never waits for the receiver: when the channel is
    /// full or closed the packet is dropped with reason `send_failed`.
    Channel(mpsc::Sender<Vec<u8>>),
}

impl NativeSide {
    /// Short name for logs: `raw`, `disabled` or `channel`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Disabled => "disabled",
            Self::Channel(_) => "channel",
        }
    }
}

impl fmt::Debug for NativeSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything [`run`](crate::run) needs. Build it with [`ServerOptions::new`] and adjust
/// the public fields.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Primary IPv4 address: bound, and embedded in the advertised prefix `2001:0:<primary>::/64`.
    pub primary: Ipv4Addr,
    /// Secondary IPv4 address (conventionally primary + 1): bound too; cone router
    /// solicitations received on one address are answered from the other.
    pub secondary: Ipv4Addr,
    /// UDP port of both sockets (3544; 0 picks an ephemeral port per socket, for tests).
    pub port: u16,
    /// Address of the Prometheus `/metrics` endpoint; `None` serves none.
    pub metrics_addr: Option<SocketAddr>,
    /// Where packets to native IPv6 destinations go.
    pub native: NativeSide,
    /// Value of the MTU option in router advertisements; `None` omits the option.
    pub mtu: Option<u32>,
    /// Largest ICMPv6 payload relayed (bubbles are exempt); Miredo's policy is 88.
    pub icmpv6_max_payload: usize,
    /// Router solicitations answered per second per source IPv4 address (bursts of as
    /// many), per server address; 0 = no limit. Over it an RS is dropped as `rate_limited`.
    pub rs_rate_limit: u32,
    /// Key of the rate-limit table's hash; `None` draws one at random (the default).
    pub rs_rate_key: Option<u64>,
    /// Socket options of the two UDP sockets (e.g. `freebind` to bind an address that is
    /// not configured yet).
    pub udp: UdpOptions,
    /// Registry the server's metrics (and the process metrics) are registered in. Keep a
    /// clone to read them in-process.
    pub registry: Registry,
    /// The kernel fast path for router solicitations (`--fast-path`).
    pub fast_path: FastPathMode,
}

impl ServerOptions {
    /// Defaults for `primary`: secondary = primary + 1, port 3544, no metrics endpoint,
    /// raw native side, MTU option 1280, ICMPv6 cap 1240, a fresh registry.
    pub fn new(primary: Ipv4Addr) -> Self {
        let core = ServerConfig::new(primary);
        Self {
            primary,
            secondary: core.secondary,
            port: TEREDO_PORT,
            metrics_addr: None,
            native: NativeSide::Raw,
            mtu: core.mtu,
            icmpv6_max_payload: core.max_icmpv6_payload,
            rs_rate_limit: core.rs_rate_limit,
            rs_rate_key: None,
            udp: UdpOptions::default(),
            registry: Registry::new(),
            fast_path: FastPathMode::None,
        }
    }

    /// Checks the addresses: distinct and unicast. Returns warnings worth logging (an
    /// address that is not global unicast, whose RAs clients will drop).
    pub fn validate(&self) -> Result<Vec<String>, ConfigError> {
        for (role, addr) in [("primary", self.primary), ("secondary", self.secondary)] {
            if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
                return Err(ConfigError::NotUnicast { role, addr });
            }
        }
        if self.primary == self.secondary {
            return Err(ConfigError::SameAddress(self.primary));
        }
        let mut warnings = Vec::new();
        for (role, addr) in [("primary", self.primary), ("secondary", self.secondary)] {
            if !is_ipv4_global_unicast(addr) {
                warnings.push(format!(
                    "{role} address {addr} is not global unicast: Teredo clients will not \
                     qualify with it, and the server drops datagrams from such sources"
                ));
            }
        }
        if let Some(mtu) = self.mtu {
            if mtu < 1280 {
                warnings.push(format!(
                    "MTU option {mtu} is below the IPv6 minimum of 1280: clients ignore it"
                ));
            }
        }
        Ok(warnings)
    }

    /// The sans-IO core's configuration.
    pub fn core_config(&self) -> ServerConfig {
        ServerConfig {
            primary: self.primary,
            secondary: self.secondary,
            mtu: self.mtu,
            max_icmpv6_payload: self.icmpv6_max_payload,
            native: !matches!(self.native, NativeSide::Disabled),
            port: self.port,
            rs_rate_limit: self.rs_rate_limit,
            rs_rate_key: self.rs_rate_key.unwrap_or_else(random_key),
            ..ServerConfig::new(self.primary)
        }
    }
}

/// A hash key from the process's random hasher keys (drawn from the OS).
fn random_key() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x7465_7265_646f);
    h.finish()
}

/// A configuration [`ServerOptions::validate`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Primary and secondary are the same address: the cone test needs two.
    #[error("primary and secondary addresses must differ (both are {0})")]
    SameAddress(Ipv4Addr),
    /// An address that cannot be a server address.
    #[error(
        "{role} address {addr} is not a unicast address (unspecified, multicast or broadcast)"
    )]
    NotUnicast {
        /// `primary` or `secondary`.
        role: &'static str,
        /// The address.
        addr: Ipv4Addr,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_follow_the_core() {
        let o = ServerOptions::new(ip("198.51.100.1"));
        assert_eq!(o.secondary, ip("198.51.100.2"));
        assert_eq!(o.port, 3544);
        assert_eq!(o.mtu, Some(1280));
        assert_eq!(o.icmpv6_max_payload, 1240);
        assert!(matches!(o.native, NativeSide::Raw));
        assert_eq!(o.validate(), Ok(vec![]));
        let core = o.core_config();
        // The rate-limit key is drawn at random unless given.
        assert_eq!(
            core,
            ServerConfig {
                rs_rate_key: core.rs_rate_key,
                ..ServerConfig::new(ip("198.51.100.1"))
            }
        );
        let keyed = ServerOptions {
            rs_rate_key: Some(5),
            ..o
        };
        assert_eq!(keyed.core_config().rs_rate_key, 5);
    }

    #[test]
    fn native_disabled_reaches_the_core() {
        let mut o = ServerOptions::new(ip("198.51.100.1"));
        o.native = NativeSide::Disabled;
        assert!(!o.core_config().native);
        let (tx, _rx) = mpsc::channel(1);
        o.native = NativeSide::Channel(tx);
        assert!(o.core_config().native);
        assert_eq!(format!("{:?}", o.native), "channel");
    }

    #[test]
    fn refuses_equal_or_non_unicast_addresses() {
        let mut o = ServerOptions::new(ip("198.51.100.1"));
        o.secondary = o.primary;
        assert_eq!(
            o.validate().unwrap_err().to_string(),
            "primary and secondary addresses must differ (both are 198.51.100.1)"
        );
        for bad in ["0.0.0.0", "224.0.0.1", "255.255.255.255"] {
            let mut o = ServerOptions::new(ip("198.51.100.1"));
            o.secondary = ip(bad);
            let e = o.validate().unwrap_err();
            assert_eq!(
                e,
                ConfigError::NotUnicast {
                    role: "secondary",
                    addr: ip(bad)
                }
            );
            assert!(e
                .to_string()
                .starts_with(&format!("secondary address {bad} ")));
            let o = ServerOptions::new(ip(bad));
            assert!(matches!(
                o.validate(),
                Err(ConfigError::NotUnicast {
                    role: "primary",
                    ..
                })
            ));
        }
        // Default secondary of 255.255.255.254 is the broadcast address.
        let o = ServerOptions::new(ip("255.255.255.254"));
        assert!(o.validate().is_err());
    }

    #[test]
    fn warns_about_non_global_addresses_and_small_mtu() {
        let mut o = ServerOptions::new(ip("10.0.0.1"));
        o.mtu = Some(1000);
        let w = o.validate().unwrap();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("primary address 10.0.0.1 is not global"));
        assert!(w[1].starts_with("secondary address 10.0.0.2 is not global"));
        assert!(w[2].contains("1000"));
    }
}
