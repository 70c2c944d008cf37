//! [`NatConfig`]: everything that defines one simulated NAT, its defaults and its validation,
//! and [`NatConfigError`], why a configuration or a spec string was refused.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::spec::format_duration;
use crate::{
    FilteringBehavior, MappingBehavior, NatPreset, Pooling, PortAllocation, DEFAULT_MAX_MAPPINGS,
    DEFAULT_PORT_RANGE, DEFAULT_TIMEOUT, MAX_DURATION, SPEC_KEYS,
};
#[cfg(doc)]
use crate::{Nat, NatDrop};

/// Why a configuration or a spec string was refused. Spec errors name the offending key so a
/// bad `--nat` flag is one clear line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NatConfigError {
    /// A spec item without `=`.
    #[error("NAT spec item `{item}` is not `key=value`")]
    NotKeyValue {
        /// The item as written.
        item: String,
    },
    /// A spec key this parser does not know.
    #[error("unknown NAT spec key `{key}` (known keys: {})", SPEC_KEYS.join(", "))]
    UnknownKey {
        /// The key as written.
        key: String,
    },
    /// The same spec key twice (which one wins would be a guess).
    #[error("NAT spec key `{key}` is given more than once")]
    DuplicateKey {
        /// The key as written.
        key: String,
    },
    /// A value that does not parse for its key.
    #[error("bad value `{value}` for NAT spec key `{key}`: expected {expected}")]
    BadValue {
        /// The key (spec name) the value belongs to.
        key: String,
        /// The value as written.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A well-formed value outside what the model accepts.
    #[error("NAT `{key}` = {value} is out of range: {allowed}")]
    OutOfRange {
        /// The config field, by its spec key name.
        key: &'static str,
        /// The offending value, printed.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// `external_ips` is empty: a NAT without an outside address translates nothing.
    #[error("a NAT needs at least one external IPv4 address (spec key `ips`)")]
    NoExternalIps,
    /// An external address listed twice (it would double its weight in pooling).
    #[error("external IPv4 address {0} is listed twice (spec key `ips`)")]
    DuplicateExternalIp(Ipv4Addr),
    /// A preset that needs a larger address pool than it was given.
    #[error("the `{preset}` NAT preset needs at least {needed} external IPv4 addresses, got {got} (spec key `ips`)")]
    TooFewExternalIps {
        /// The preset asked for.
        preset: NatPreset,
        /// How many addresses it needs.
        needed: usize,
        /// How many it got.
        got: usize,
    },
    /// `preset=none` in a spec: "no NAT" has no NAT configuration.
    #[error("NAT preset `none` means no NAT and has no configuration to combine with other keys")]
    NoNatPreset,
}

/// Everything that defines one simulated NAT. Fields are public so labs can build free
/// combinations; [`NatConfig::validate`] (called by the parsers, presets and [`Nat::try_new`])
/// rejects nonsense, while [`Nat::new`] copes with anything without panicking.
#[derive(Debug, Clone, PartialEq)]
pub struct NatConfig {
    /// When a new session reuses a mapping (RFC 4787 §4.1). Spec key `mapping`.
    pub mapping: MappingBehavior,
    /// Which unsolicited inbound datagrams pass (RFC 4787 §5). Spec key `filtering`.
    pub filtering: FilteringBehavior,
    /// How external ports are chosen (RFC 4787 §4.2.1). Spec key `ports`.
    pub ports: PortAllocation,
    /// How external addresses are chosen from `external_ips` (RFC 4787 §4.1). Spec key `pooling`.
    pub pooling: Pooling,
    /// The NAT's outside addresses; at least one. Spec key `ips` (`a+b+c`).
    pub external_ips: Vec<Ipv4Addr>,
    /// Idle time after which a mapping (and each of its filter permits) expires; REQ-5 says
    /// ≥ 2 min for a compliant NAT, but shorter values are allowed to exercise refresh.
    /// Spec key `timeout`.
    pub timeout: Duration,
    /// Whether inbound datagrams that pass filtering also refresh the mapping (REQ-6a MAY;
    /// Linux conntrack does, pion vnet does not). Spec key `inbound-refresh`.
    pub inbound_refresh: bool,
    /// Whether datagrams to the NAT's own external addresses are hairpinned (REQ-9) or dropped.
    /// Spec key `hairpin`.
    pub hairpinning: bool,
    /// Whether the NAT runs a UPnP Internet Gateway Device that accepts port mappings
    /// (RFC 6081 §3.2's "UPnP-enabled" NATs; see [`Nat::add_port_mapping`]). Off by default
    /// and in every preset. Spec key `upnp`.
    pub upnp: bool,
    /// Probability in `0.0..=1.0` that a datagram is lost, drawn independently per datagram and
    /// per direction from the seeded RNG. Spec key `loss` (`0.1` or `10%`).
    pub loss: f64,
    /// Fixed one-way latency added per traversal, returned to the caller (no queueing here).
    /// Spec key `delay`.
    pub delay: Duration,
    /// Largest random extra latency per traversal, drawn uniformly in `0..=jitter` from the
    /// seeded RNG and added to `delay`: a driver that holds each datagram for its delay makes
    /// them overtake each other (reordering). Spec key `jitter`.
    pub jitter: Duration,
    /// External ports the NAT may allocate; port 0 is never allocated. Spec key `port-range`
    /// (`1024-65535`).
    pub port_range: RangeInclusive<u16>,
    /// Cap on simultaneous mappings; a new mapping beyond it is dropped as
    /// [`NatDrop::TableFull`]. Spec key `max-mappings`.
    pub max_mappings: usize,
    /// Linux conntrack's trap behind a bare masquerade: an inbound datagram the NAT refuses
    /// (filtered, or no mapping) reserves its external endpoint toward its source for this long
    /// (renewed by each further one). An outbound datagram that would then leave from a
    /// reserved endpoint toward that remote gets a **new** mapping (another port) instead, and
    /// — as Linux gives a new flow the mapping of the internal endpoint's most recent flow —
    /// so does every remote contacted after it; the old mapping keeps serving the remotes it
    /// already holds permits for until it expires. `None` (the default, spec `off`): refused
    /// datagrams leave nothing. Linux: [`CONNTRACK_UDP_UNREPLIED`](crate::CONNTRACK_UDP_UNREPLIED),
    /// 30 s. Spec key `unsolicited-reserve`.
    pub unsolicited_reserve: Option<Duration>,
    /// Seed of the NAT's private RNG (loss, random ports, arbitrary pooling, paired hash).
    /// Spec key `seed`.
    pub seed: u64,
}

impl NatConfig {
    /// The external address used by [`NatConfig::default`] (TEST-NET-3, RFC 5737).
    pub const DEFAULT_EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

    /// A port-restricted cone NAT (EIM + APDF, port preserving, paired, 120 s, hairpinning on,
    /// no UPnP, no unsolicited reservation, no impairment) on the given addresses: Linux
    /// masquerade behind a stateful WAN firewall, the most common home NAT, hence the base that
    /// spec keys modify.
    pub fn new(external_ips: Vec<Ipv4Addr>, seed: u64) -> Self {
        Self {
            mapping: MappingBehavior::EndpointIndependent,
            filtering: FilteringBehavior::AddressAndPortDependent,
            ports: PortAllocation::Preserving,
            pooling: Pooling::Paired,
            external_ips,
            timeout: DEFAULT_TIMEOUT,
            inbound_refresh: false,
            hairpinning: true,
            upnp: false,
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            port_range: DEFAULT_PORT_RANGE,
            max_mappings: DEFAULT_MAX_MAPPINGS,
            unsolicited_reserve: None,
            seed,
        }
    }

    /// Checks what the model needs to behave meaningfully: at least one distinct external
    /// address, a non-empty port range without port 0, a timeout in `(0, 1 year]`, a delay
    /// ≤ 1 year, a loss probability in `0.0..=1.0` and room for at least one mapping.
    pub fn validate(&self) -> Result<(), NatConfigError> {
        if self.external_ips.is_empty() {
            return Err(NatConfigError::NoExternalIps);
        }
        for (i, ip) in self.external_ips.iter().enumerate() {
            if self.external_ips[..i].contains(ip) {
                return Err(NatConfigError::DuplicateExternalIp(*ip));
            }
        }
        let (lo, hi) = (*self.port_range.start(), *self.port_range.end());
        if lo == 0 || lo > hi {
            return Err(NatConfigError::OutOfRange {
                key: "port-range",
                value: format!("{lo}-{hi}"),
                allowed: "LOW-HIGH with 1 <= LOW <= HIGH <= 65535",
            });
        }
        if self.timeout.is_zero() || self.timeout > MAX_DURATION {
            return Err(NatConfigError::OutOfRange {
                key: "timeout",
                value: format_duration(self.timeout),
                allowed: "more than 0 and at most 1 year",
            });
        }
        if let Some(d) = self.unsolicited_reserve {
            if d.is_zero() || d > MAX_DURATION {
                return Err(NatConfigError::OutOfRange {
                    key: "unsolicited-reserve",
                    value: format_duration(d),
                    allowed: "off, or more than 0 and at most 1 year",
                });
            }
        }
        if self.jitter > MAX_DURATION {
            return Err(NatConfigError::OutOfRange {
                key: "jitter",
                value: format_duration(self.jitter),
                allowed: "at most 1 year",
            });
        }
        if self.delay > MAX_DURATION {
            return Err(NatConfigError::OutOfRange {
                key: "delay",
                value: format_duration(self.delay),
                allowed: "at most 1 year",
            });
        }
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(NatConfigError::OutOfRange {
                key: "loss",
                value: self.loss.to_string(),
                allowed: "a probability between 0.0 and 1.0",
            });
        }
        if self.max_mappings == 0 {
            return Err(NatConfigError::OutOfRange {
                key: "max-mappings",
                value: "0".to_owned(),
                allowed: "at least 1",
            });
        }
        Ok(())
    }
}

impl Default for NatConfig {
    /// [`NatConfig::new`] on [`NatConfig::DEFAULT_EXTERNAL_IP`] with seed 0.
    fn default() -> Self {
        Self::new(vec![Self::DEFAULT_EXTERNAL_IP], 0)
    }
}
