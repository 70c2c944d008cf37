//! A NAT model as a pure, deterministic state machine, in the terms of RFC 4787.
//!
//! One [`Nat`] is one NAT device: an inside (private endpoints) and an outside (the simulated
//! IPv4 Internet, one or more external addresses). It translates UDP datagrams only; payloads
//! never pass through it, so the same model serves the in-process lab (buffers in memory) and
//! client-sim's socket driver (one real UDP socket per external mapping).
//!
//! The knobs are RFC 4787's, independently: mapping behaviour (§4.1), filtering behaviour (§5),
//! port assignment (§4.2.1), IP address pooling (§4.1, REQ-2), mapping timer and refresh
//! direction (§4.3), hairpinning (§6), plus WAN impairment (loss, fixed delay) and table caps.
//! [`NatPreset`] names the classic combinations (full cone … symmetric) and
//! [`NatConfig::from_spec`] parses free combinations (`mapping=apd,filtering=ei,…`).
//!
//! # Why it is shaped like this
//! * **Sans-IO, no clock, no global RNG**: every input carries `now`, the caller owns time and
//!   sleeps until [`Nat::poll_timeout`]. Randomness (loss, random ports, arbitrary pooling) comes
//!   from a `ChaCha8Rng` seeded from [`NatConfig::seed`], so the same config + seed + inputs give
//!   the same outputs, and a lab run can be replayed from its seed. Hash maps are only used for
//!   lookups, never iterated where iteration order could leak into results; expiry is ordered by
//!   a `BTreeSet`.
//! * **Bounded memory**: at most [`NatConfig::max_mappings`] mappings (overflow is the counted
//!   drop [`NatDrop::TableFull`], after expired mappings were reclaimed), and each mapping
//!   remembers at most [`MAX_REMOTES_PER_MAPPING`] remote endpoints for filtering (the least
//!   recently used is forgotten first).
//! * **Every drop is counted** ([`NatCounters`]) and has a metric label ([`NatDrop::as_str`]).
//!
//! # Semantics worth knowing
//! * A mapping expires `timeout` after the last packet that refreshed it: outbound packets
//!   always refresh (REQ-6), inbound ones only with [`NatConfig::inbound_refresh`]. Expired
//!   mappings are removed by [`Nat::expire`] and lazily whenever a lookup meets one.
//! * Filtering is evaluated per mapping, against the remotes that mapping has sent to; each such
//!   permit lapses `timeout` after the last outbound packet to that remote (as conntrack flows
//!   or the permit set of an nftables recipe would), even while the mapping itself is kept alive
//!   by traffic to other remotes.
//! * Loss and delay model the NAT's WAN link: a lost outbound datagram has still created or
//!   refreshed its mapping (the NAT processed it, the link lost it); a lost inbound datagram never
//!   reached the NAT (no lookup, no refresh). The delay is returned to the caller, the model does
//!   not queue. A hairpinned datagram crosses the device once: one loss draw, one delay.
//! * Hairpinning (REQ-9) is folded into [`Nat::outbound`]: sending to one of the NAT's own
//!   external addresses yields [`Outbound::Hairpin`] with the *external* source (REQ-9a) and
//!   the internal destination, after the destination mapping's filtering — so callers cannot
//!   forget the case.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How many remote endpoints one mapping remembers for filtering. The oldest (least recently
/// sent to) is forgotten first, so a client spraying bubbles at many peers cannot grow the
/// table without bound; 64 is far more than a Teredo client talks to at once.
pub const MAX_REMOTES_PER_MAPPING: usize = 64;

/// Default cap on simultaneous mappings per NAT (roughly one external address's worth of ports).
pub const DEFAULT_MAX_MAPPINGS: usize = 65_536;

/// Default external port range: everything but the well-known ports (RFC 4787 §4.2.1, REQ-3a).
pub const DEFAULT_PORT_RANGE: RangeInclusive<u16> = 1024..=65535;

/// Default mapping timeout: RFC 4787 REQ-5's minimum, two minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest accepted timeout or delay (one year). Longer values are almost certainly typos, and
/// the bound keeps every duration exactly printable by [`NatConfig::to_spec`].
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// How often random port allocation re-draws on a collision before scanning for a free port.
const RANDOM_PORT_TRIES: usize = 16;

/// Mapping behaviour (RFC 4787 §4.1): when does an internal endpoint's new session reuse an
/// existing mapping? This decides whether a Teredo client sees one mapping for both server
/// addresses (EIM) or a fresh one per destination (the "symmetric" NATs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MappingBehavior {
    /// Same external endpoint for every remote (REQ-1; spec name `ei`).
    EndpointIndependent,
    /// Reused only towards the same remote IP, whatever its port (spec name `ad`).
    AddressDependent,
    /// Reused only towards the same remote IP:port (spec name `apd`).
    AddressAndPortDependent,
}

impl MappingBehavior {
    /// Every behaviour, for exhaustive tests and help texts.
    pub const ALL: &'static [Self] = &[
        Self::EndpointIndependent,
        Self::AddressDependent,
        Self::AddressAndPortDependent,
    ];

    /// The short spec name (`ei`, `ad`, `apd`), as accepted by [`NatConfig::from_spec`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EndpointIndependent => "ei",
            Self::AddressDependent => "ad",
            Self::AddressAndPortDependent => "apd",
        }
    }
}

impl fmt::Display for MappingBehavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MappingBehavior {
    type Err = NatConfigError;

    /// Accepts the short names and the long kebab-case ones (`endpoint-independent`,
    /// `address-dependent`, `address-and-port-dependent`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match parse_behavior(s) {
            Some(0) => Ok(Self::EndpointIndependent),
            Some(1) => Ok(Self::AddressDependent),
            Some(_) => Ok(Self::AddressAndPortDependent),
            None => Err(bad_value("mapping", s, BEHAVIOR_EXPECTED)),
        }
    }
}

/// Filtering behaviour (RFC 4787 §5): which unsolicited inbound datagrams reach a mapping?
/// This decides whether a Teredo client's cone probe (an answer from the server's *other*
/// address) gets through, and whether peers need a bubble from the client first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilteringBehavior {
    /// Anyone may send to a live mapping (spec name `ei`).
    EndpointIndependent,
    /// Only remote IPs the mapping has sent to, from any port (spec name `ad`).
    AddressDependent,
    /// Only remote IP:ports the mapping has sent to (spec name `apd`).
    AddressAndPortDependent,
}

impl FilteringBehavior {
    /// Every behaviour, for exhaustive tests and help texts.
    pub const ALL: &'static [Self] = &[
        Self::EndpointIndependent,
        Self::AddressDependent,
        Self::AddressAndPortDependent,
    ];

    /// The short spec name (`ei`, `ad`, `apd`), as accepted by [`NatConfig::from_spec`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EndpointIndependent => "ei",
            Self::AddressDependent => "ad",
            Self::AddressAndPortDependent => "apd",
        }
    }
}

impl fmt::Display for FilteringBehavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FilteringBehavior {
    type Err = NatConfigError;

    /// Accepts the short names and the long kebab-case ones (`endpoint-independent`,
    /// `address-dependent`, `address-and-port-dependent`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match parse_behavior(s) {
            Some(0) => Ok(Self::EndpointIndependent),
            Some(1) => Ok(Self::AddressDependent),
            Some(_) => Ok(Self::AddressAndPortDependent),
            None => Err(bad_value("filtering", s, BEHAVIOR_EXPECTED)),
        }
    }
}

const BEHAVIOR_EXPECTED: &str = "ei, ad or apd (or endpoint-independent, address-dependent, \
                                 address-and-port-dependent)";

fn parse_behavior(s: &str) -> Option<u8> {
    match s.trim().to_ascii_lowercase().as_str() {
        "ei" | "eim" | "eif" | "endpoint-independent" => Some(0),
        "ad" | "adm" | "adf" | "address-dependent" => Some(1),
        "apd" | "apdm" | "apdf" | "address-and-port-dependent" => Some(2),
        _ => None,
    }
}

/// How a new mapping's external port is chosen (RFC 4787 §4.2.1). Never "port overloading"
/// (REQ-3): two live mappings never share an external IP:port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortAllocation {
    /// Port preservation: the internal port if it is in range and free on the chosen external
    /// address, else the next free port as for [`PortAllocation::Sequential`]. What Linux
    /// masquerade and most home routers do; RFC 6081's "port-preserving" case.
    Preserving,
    /// The next free port after the previous allocation on that external address, step 1,
    /// starting at the bottom of the port range and wrapping (RFC 6081's "sequential" NATs,
    /// whose next port is predictable). Freed ports are reused only after a wrap.
    Sequential,
    /// Uniformly from the port range, drawn from the seeded RNG (re-drawn on collision, then a
    /// scan from a random start). No port prediction is possible.
    Random,
}

impl PortAllocation {
    /// Every allocation strategy.
    pub const ALL: &'static [Self] = &[Self::Preserving, Self::Sequential, Self::Random];

    /// The spec name (`preserving`, `sequential`, `random`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preserving => "preserving",
            Self::Sequential => "sequential",
            Self::Random => "random",
        }
    }
}

impl fmt::Display for PortAllocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PortAllocation {
    type Err = NatConfigError;

    /// Accepts `preserving` (`preserve`), `sequential` (`seq`), `random`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "preserving" | "preserve" => Ok(Self::Preserving),
            "sequential" | "seq" => Ok(Self::Sequential),
            "random" => Ok(Self::Random),
            _ => Err(bad_value("ports", s, "preserving, sequential or random")),
        }
    }
}

/// IP address pooling over [`NatConfig::external_ips`] (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pooling {
    /// One internal IP always gets the same external IP (REQ-2), chosen by a seeded hash of the
    /// internal IP, so it stays the same even across mapping expiry and reboots.
    Paired,
    /// Each new mapping picks a pool address at random (seeded RNG), preferring one that the
    /// same internal endpoint holds no live mapping on. With a dependent mapping behaviour and
    /// ≥ 2 addresses, a client's second destination therefore lands on another external
    /// address: Windows' "symmetric (address)". If the chosen address has no free port, the
    /// others are tried in order.
    Arbitrary,
}

impl Pooling {
    /// Every pooling behaviour.
    pub const ALL: &'static [Self] = &[Self::Paired, Self::Arbitrary];

    /// The spec name (`paired`, `arbitrary`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paired => "paired",
            Self::Arbitrary => "arbitrary",
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Pooling {
    type Err = NatConfigError;

    /// Accepts `paired` and `arbitrary` (`random`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "paired" => Ok(Self::Paired),
            "arbitrary" | "random" => Ok(Self::Arbitrary),
            _ => Err(bad_value("pooling", s, "paired or arbitrary")),
        }
    }
}

/// Why a configuration or a spec string was refused. Spec errors name the offending key so a
/// bad `--nat` flag is one clear line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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

fn bad_value(key: &str, value: &str, expected: &'static str) -> NatConfigError {
    NatConfigError::BadValue {
        key: key.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

/// The spec keys [`NatConfig::from_spec`] understands (also listed in its unknown-key error).
pub const SPEC_KEYS: &[&str] = &[
    "preset",
    "mapping",
    "filtering",
    "ports",
    "pooling",
    "ips",
    "seed",
    "timeout",
    "inbound-refresh",
    "hairpin",
    "loss",
    "delay",
    "port-range",
    "max-mappings",
];

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
    /// Probability in `0.0..=1.0` that a datagram is lost, drawn independently per datagram and
    /// per direction from the seeded RNG. Spec key `loss` (`0.1` or `10%`).
    pub loss: f64,
    /// Fixed one-way latency added per traversal, returned to the caller (no queueing here).
    /// Spec key `delay`.
    pub delay: Duration,
    /// External ports the NAT may allocate; port 0 is never allocated. Spec key `port-range`
    /// (`1024-65535`).
    pub port_range: RangeInclusive<u16>,
    /// Cap on simultaneous mappings; a new mapping beyond it is dropped as
    /// [`NatDrop::TableFull`]. Spec key `max-mappings`.
    pub max_mappings: usize,
    /// Seed of the NAT's private RNG (loss, random ports, arbitrary pooling, paired hash).
    /// Spec key `seed`.
    pub seed: u64,
}

impl NatConfig {
    /// The external address used by [`NatConfig::default`] (TEST-NET-3, RFC 5737).
    pub const DEFAULT_EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

    /// A port-restricted cone NAT (EIM + APDF, port preserving, paired, 120 s, hairpinning on,
    /// no impairment) on the given addresses: Linux masquerade's behaviour and the most common
    /// home NAT, hence the base that spec keys modify.
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
            loss: 0.0,
            delay: Duration::ZERO,
            port_range: DEFAULT_PORT_RANGE,
            max_mappings: DEFAULT_MAX_MAPPINGS,
            seed,
        }
    }

    /// Parses a free combination such as
    /// `mapping=apd,filtering=ei,ports=random,timeout=20s,hairpin=off,loss=0.1,delay=50ms`
    /// on top of [`NatConfig::default`]; see [`NatConfig::apply_spec`] for the keys.
    pub fn from_spec(spec: &str) -> Result<Self, NatConfigError> {
        let mut config = Self::default();
        config.apply_spec(spec)?;
        Ok(config)
    }

    /// Applies a comma-separated `key=value` spec on top of `self` and validates the result;
    /// on error `self` is left unchanged. Keys (case-insensitive, `_` = `-`):
    ///
    /// | key | values |
    /// |---|---|
    /// | `preset` | a [`NatPreset`] name except `none`: replaces every field but `ips` and `seed` |
    /// | `mapping`, `filtering` | `ei`, `ad`, `apd` (or the long names) |
    /// | `ports` | `preserving`, `sequential`, `random` |
    /// | `pooling` | `paired`, `arbitrary` |
    /// | `ips` | IPv4 addresses joined by `+` |
    /// | `seed` | u64 |
    /// | `timeout`, `delay` | integer with unit `ns`, `us`, `ms`, `s`, `m`, `h` |
    /// | `inbound-refresh`, `hairpin` | `on`/`off`, `true`/`false`, `yes`/`no`, `1`/`0` |
    /// | `loss` | `0.0..=1.0` or a percentage `10%` |
    /// | `port-range` | `LOW-HIGH` or a single port |
    /// | `max-mappings` | positive integer |
    ///
    /// The result does not depend on key order: `ips` and `seed` apply first, then `preset`,
    /// then the rest. Unknown or repeated keys and bad values are errors naming the key.
    pub fn apply_spec(&mut self, spec: &str) -> Result<(), NatConfigError> {
        let mut items: Vec<(&'static str, &str)> = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(NatConfigError::NotKeyValue {
                    item: item.to_owned(),
                });
            };
            let normalized = key.trim().to_ascii_lowercase().replace('_', "-");
            let Some(&known) = SPEC_KEYS.iter().find(|k| **k == normalized) else {
                return Err(NatConfigError::UnknownKey {
                    key: key.trim().to_owned(),
                });
            };
            if items.iter().any(|(k, _)| *k == known) {
                return Err(NatConfigError::DuplicateKey {
                    key: key.trim().to_owned(),
                });
            }
            items.push((known, value.trim()));
        }
        let get = |key: &str| items.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);

        let mut next = self.clone();
        if let Some(v) = get("ips") {
            next.external_ips = parse_ips(v)?;
        }
        if let Some(v) = get("seed") {
            next.seed = v
                .parse()
                .map_err(|_| bad_value("seed", v, "an unsigned 64-bit integer"))?;
        }
        if let Some(v) = get("preset") {
            let preset: NatPreset = v.parse()?;
            next = preset
                .config(next.external_ips, next.seed)?
                .ok_or(NatConfigError::NoNatPreset)?;
        }
        for &(key, v) in &items {
            match key {
                "mapping" => next.mapping = v.parse()?,
                "filtering" => next.filtering = v.parse()?,
                "ports" => next.ports = v.parse()?,
                "pooling" => next.pooling = v.parse()?,
                "timeout" => {
                    next.timeout = parse_duration(v).ok_or_else(|| duration_err(key, v))?
                }
                "delay" => next.delay = parse_duration(v).ok_or_else(|| duration_err(key, v))?,
                "inbound-refresh" => next.inbound_refresh = parse_bool(key, v)?,
                "hairpin" => next.hairpinning = parse_bool(key, v)?,
                "loss" => next.loss = parse_loss(v)?,
                "port-range" => next.port_range = parse_port_range(v)?,
                "max-mappings" => {
                    next.max_mappings = v
                        .parse()
                        .map_err(|_| bad_value(key, v, "a positive integer"))?;
                }
                // Applied above.
                _ => {}
            }
        }
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// The spec string that [`NatConfig::from_spec`] turns back into this config (every key,
    /// no preset), for logs and reproducible run descriptions. Also this type's `Display`.
    pub fn to_spec(&self) -> String {
        let ips: Vec<String> = self.external_ips.iter().map(Ipv4Addr::to_string).collect();
        format!(
            "mapping={},filtering={},ports={},pooling={},ips={},seed={},timeout={},\
             inbound-refresh={},hairpin={},loss={},delay={},port-range={}-{},max-mappings={}",
            self.mapping,
            self.filtering,
            self.ports,
            self.pooling,
            ips.join("+"),
            self.seed,
            format_duration(self.timeout),
            on_off(self.inbound_refresh),
            on_off(self.hairpinning),
            self.loss,
            format_duration(self.delay),
            self.port_range.start(),
            self.port_range.end(),
            self.max_mappings,
        )
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

impl fmt::Display for NatConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_spec())
    }
}

impl FromStr for NatConfig {
    type Err = NatConfigError;

    /// Same as [`NatConfig::from_spec`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_spec(s)
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, NatConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(bad_value(key, v, "on or off")),
    }
}

fn parse_ips(v: &str) -> Result<Vec<Ipv4Addr>, NatConfigError> {
    v.split('+')
        .map(|ip| {
            ip.trim()
                .parse()
                .map_err(|_| bad_value("ips", v, "IPv4 addresses joined by `+`"))
        })
        .collect()
}

fn parse_loss(v: &str) -> Result<f64, NatConfigError> {
    let err = || {
        bad_value(
            "loss",
            v,
            "a probability 0.0..=1.0 or a percentage like 10%",
        )
    };
    let loss = match v.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map_err(|_| err())? / 100.0,
        None => v.parse::<f64>().map_err(|_| err())?,
    };
    if loss.is_finite() {
        Ok(loss)
    } else {
        Err(err())
    }
}

fn parse_port_range(v: &str) -> Result<RangeInclusive<u16>, NatConfigError> {
    let err = || {
        bad_value(
            "port-range",
            v,
            "LOW-HIGH (ports 1..=65535) or a single port",
        )
    };
    let (lo, hi) = v.split_once('-').unwrap_or((v, v));
    let lo: u16 = lo.trim().parse().map_err(|_| err())?;
    let hi: u16 = hi.trim().parse().map_err(|_| err())?;
    Ok(lo..=hi)
}

const DURATION_UNITS: &[(&str, u128)] = &[
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

fn duration_err(key: &str, v: &str) -> NatConfigError {
    bad_value(
        key,
        v,
        "an integer with a unit ns, us, ms, s, m or h (e.g. 20s, 50ms)",
    )
}

/// `20s`, `50ms`, `2m`, … (integers only, so parsing and printing are exact).
fn parse_duration(v: &str) -> Option<Duration> {
    let split = v.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = v.split_at(split);
    let number: u128 = number.parse().ok()?;
    let unit = match unit.trim() {
        "min" => "m",
        "µs" => "us",
        other => other,
    };
    let (_, nanos_per_unit) = DURATION_UNITS.iter().find(|(u, _)| *u == unit)?;
    let nanos = number.checked_mul(*nanos_per_unit)?;
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    // The remainder is below 10^9 and fits.
    let subsec = (nanos % 1_000_000_000) as u32;
    Some(Duration::new(secs, subsec))
}

/// The largest unit that prints `d` exactly (`120s` → `2m`).
fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (unit, per) in DURATION_UNITS {
        if nanos % per == 0 {
            return format!("{}{unit}", nanos / per);
        }
    }
    format!("{nanos}ns")
}

/// The classic NAT types, by their kebab-case names (`none`, `full-cone`, `restricted`,
/// `port-restricted`, `symmetric`, `symmetric-address`). All but `symmetric` preserve ports;
/// all use the REQ-5 minimum timeout of 120 s, outbound-only refresh and hairpinning (REQ-9).
/// The doc of each variant says what a Teredo client (RFC 4380 qualification: optional cone
/// probe, then restricted RS to the primary and the secondary server address) sees behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatPreset {
    /// No NAT: the client's own address is global. [`NatPreset::config`] returns `None`; the
    /// lab bypasses the model. A Teredo client reports NAT type none (its mapping equals its
    /// socket address); XP's cone probe succeeds, so its address has C=1.
    None,
    /// Full cone, EIM + EIF. The only preset where the cone probe succeeds (the RA comes from
    /// the server's other address, which only endpoint-independent filtering lets in): the
    /// client qualifies with the cone flag and peers can reach it without bubbles. The
    /// secondary-address check sees the same mapping.
    FullCone,
    /// (Address-)restricted cone, EIM + ADF. The cone probe times out; both server addresses
    /// report the same mapping, so the client qualifies as restricted (C=0). A peer gets in
    /// once the client has sent anything (a bubble) to the peer's IP.
    Restricted,
    /// Port-restricted cone, EIM + APDF (Linux masquerade). Like `restricted`, but a peer gets
    /// in only from the exact IP:port the client sent to; Teredo's direct bubbles still work
    /// because the mapping itself is endpoint-independent.
    PortRestricted,
    /// Symmetric, APDM + APDF with random ports. The cone probe times out and the
    /// secondary-address check sees a different mapping (another port): an RFC 4380 client
    /// declares "symmetric NAT" and stops (Windows: "symmetric (port)"); Miredo 1.2, which skips
    /// that check, qualifies with a mapping valid towards the primary server address only.
    /// Peers need RFC 6081 symmetric NAT support.
    Symmetric,
    /// Symmetric (address), ADM + APDF with arbitrary pooling over **at least 2** external
    /// addresses ([`NatPreset::config`] refuses fewer). The two server addresses differ, so
    /// the secondary-address check sees a different mapping, on another external address
    /// (Windows: "symmetric (address)"); the cone probe times out.
    SymmetricAddress,
}

impl NatPreset {
    /// Every preset, for `--help` texts, scenario matrices and exhaustive tests.
    pub const ALL: &'static [Self] = &[
        Self::None,
        Self::FullCone,
        Self::Restricted,
        Self::PortRestricted,
        Self::Symmetric,
        Self::SymmetricAddress,
    ];

    /// The kebab-case name, as accepted by `FromStr` and printed by `Display`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::FullCone => "full-cone",
            Self::Restricted => "restricted",
            Self::PortRestricted => "port-restricted",
            Self::Symmetric => "symmetric",
            Self::SymmetricAddress => "symmetric-address",
        }
    }

    /// How many external addresses the preset needs (2 for `symmetric-address`, else 1).
    pub fn min_external_ips(self) -> usize {
        match self {
            Self::SymmetricAddress => 2,
            _ => 1,
        }
    }

    /// The preset's configuration on the given external addresses and RNG seed; `Ok(None)` for
    /// [`NatPreset::None`]. Fails if there are too few addresses (none at all, or one for
    /// `symmetric-address`) or duplicates.
    pub fn config(
        self,
        external_ips: Vec<Ipv4Addr>,
        seed: u64,
    ) -> Result<Option<NatConfig>, NatConfigError> {
        use FilteringBehavior as F;
        use MappingBehavior as M;
        let (mapping, filtering, ports, pooling) = match self {
            Self::None => return Ok(None),
            Self::FullCone => (
                M::EndpointIndependent,
                F::EndpointIndependent,
                PortAllocation::Preserving,
                Pooling::Paired,
            ),
            Self::Restricted => (
                M::EndpointIndependent,
                F::AddressDependent,
                PortAllocation::Preserving,
                Pooling::Paired,
            ),
            Self::PortRestricted => (
                M::EndpointIndependent,
                F::AddressAndPortDependent,
                PortAllocation::Preserving,
                Pooling::Paired,
            ),
            Self::Symmetric => (
                M::AddressAndPortDependent,
                F::AddressAndPortDependent,
                PortAllocation::Random,
                Pooling::Paired,
            ),
            Self::SymmetricAddress => (
                M::AddressDependent,
                F::AddressAndPortDependent,
                PortAllocation::Preserving,
                Pooling::Arbitrary,
            ),
        };
        if !external_ips.is_empty() && external_ips.len() < self.min_external_ips() {
            return Err(NatConfigError::TooFewExternalIps {
                preset: self,
                needed: self.min_external_ips(),
                got: external_ips.len(),
            });
        }
        let config = NatConfig {
            mapping,
            filtering,
            ports,
            pooling,
            ..NatConfig::new(external_ips, seed)
        };
        config.validate()?;
        Ok(Some(config))
    }
}

impl fmt::Display for NatPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NatPreset {
    type Err = NatConfigError;

    /// Accepts exactly the names of [`NatPreset::as_str`] (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Self::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == lower)
            .ok_or_else(|| {
                bad_value(
                    "preset",
                    s,
                    "none, full-cone, restricted, port-restricted, symmetric or symmetric-address",
                )
            })
    }
}

/// Why the NAT dropped a datagram. `Copy`, and [`NatDrop::as_str`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum NatDrop {
    /// Inbound to a live mapping from a remote its filtering does not admit (RFC 4787 §5).
    #[error("filtered by the NAT")]
    Filtered,
    /// Inbound (or hairpinned) to an external IP:port with no live mapping.
    #[error("no NAT mapping")]
    NoMapping,
    /// Lost on the NAT's WAN link (the configured loss probability).
    #[error("lost")]
    Lost,
    /// A new mapping was needed but the table is at [`NatConfig::max_mappings`].
    #[error("NAT mapping table full")]
    TableFull,
    /// A new mapping was needed but its external address has no free port in the range.
    #[error("no free external port")]
    NoPort,
    /// Sent to the NAT's own external address while hairpinning is off.
    #[error("hairpinning is off")]
    HairpinOff,
}

impl NatDrop {
    /// Every reason, so drivers can pre-initialise one metric series per label.
    pub const ALL: &'static [Self] = &[
        Self::Filtered,
        Self::NoMapping,
        Self::Lost,
        Self::TableFull,
        Self::NoPort,
        Self::HairpinOff,
    ];

    /// The snake_case metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filtered => "filtered",
            Self::NoMapping => "no_mapping",
            Self::Lost => "lost",
            Self::TableFull => "table_full",
            Self::NoPort => "no_port",
            Self::HairpinOff => "hairpin_off",
        }
    }
}

/// Monotonic counters, exported by drivers as `natsim_*` metrics. Each [`NatDrop`] has its own
/// counter (see [`NatCounters::dropped`]), and
/// `mappings_created == mappings_expired + mappings_flushed + Nat::mappings()` always holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatCounters {
    /// Mappings created.
    pub mappings_created: u64,
    /// Mappings removed because their timer ran out.
    pub mappings_expired: u64,
    /// Mappings forgotten by [`Nat::reboot`].
    pub mappings_flushed: u64,
    /// Outbound datagrams translated and sent on (not counting lost ones).
    pub outbound_translated: u64,
    /// Inbound datagrams translated and delivered inside.
    pub inbound_translated: u64,
    /// Inbound or hairpinned datagrams refused by filtering ([`NatDrop::Filtered`]).
    pub inbound_filtered: u64,
    /// Inbound or hairpinned datagrams to no live mapping ([`NatDrop::NoMapping`]).
    pub inbound_no_mapping: u64,
    /// Datagrams hairpinned back inside.
    pub hairpinned: u64,
    /// Datagrams lost on the WAN link, both directions ([`NatDrop::Lost`]).
    pub lost: u64,
    /// New mappings refused by the table cap ([`NatDrop::TableFull`]).
    pub table_full: u64,
    /// New mappings refused for lack of a free port ([`NatDrop::NoPort`]).
    pub no_port: u64,
    /// Datagrams to the NAT's own address dropped with hairpinning off ([`NatDrop::HairpinOff`]).
    pub hairpin_off: u64,
    /// Calls to [`Nat::reboot`].
    pub reboots: u64,
}

impl NatCounters {
    /// The counter of one drop reason, for metrics labelled by [`NatDrop::as_str`].
    pub fn dropped(&self, reason: NatDrop) -> u64 {
        match reason {
            NatDrop::Filtered => self.inbound_filtered,
            NatDrop::NoMapping => self.inbound_no_mapping,
            NatDrop::Lost => self.lost,
            NatDrop::TableFull => self.table_full,
            NatDrop::NoPort => self.no_port,
            NatDrop::HairpinOff => self.hairpin_off,
        }
    }

    /// All drops, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        NatDrop::ALL.iter().map(|r| self.dropped(*r)).sum()
    }
}

/// An outbound datagram translated for the Internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Translation {
    /// The source the remote sees: the mapping's external IP:port.
    pub external: SocketAddrV4,
    /// Latency to add before delivering it ([`NatConfig::delay`]).
    pub delay: Duration,
}

/// An inbound datagram translated for the inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InboundTranslation {
    /// The internal endpoint to deliver to (the source stays the remote's address).
    pub internal: SocketAddrV4,
    /// Latency to add before delivering it ([`NatConfig::delay`]).
    pub delay: Duration,
}

/// A datagram from one internal endpoint to one of the NAT's own external endpoints, turned
/// back inside (RFC 4787 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hairpin {
    /// The source the receiver sees: the *sender's* external mapping (REQ-9a, "external source
    /// IP address and port"), so it looks like any datagram from the Internet.
    pub from: SocketAddrV4,
    /// The internal endpoint behind the destination mapping.
    pub to: SocketAddrV4,
    /// Latency to add before delivering it ([`NatConfig::delay`], once).
    pub delay: Duration,
}

/// What [`Nat::outbound`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outbound {
    /// Send it to the remote, from the translated source.
    Forward(Translation),
    /// The remote was the NAT's own external endpoint: deliver it inside instead.
    Hairpin(Hairpin),
}

impl Outbound {
    /// The latency to add, whichever way the datagram goes.
    pub fn delay(&self) -> Duration {
        match self {
            Self::Forward(t) => t.delay,
            Self::Hairpin(h) => h.delay,
        }
    }
}

/// What a mapping is keyed by besides the internal endpoint, per mapping behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dest {
    Any,
    Ip(Ipv4Addr),
    IpPort(SocketAddrV4),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct MappingKey {
    internal: SocketAddrV4,
    dest: Dest,
}

/// `None` as an instant: never (a timeout beyond what `Instant` can represent).
type Deadline = Option<Instant>;

fn passed(deadline: Deadline, now: Instant) -> bool {
    deadline.is_some_and(|d| now >= d)
}

#[derive(Debug, Clone)]
struct Mapping {
    key: MappingKey,
    pool_idx: usize,
    expires: Deadline,
    /// Filter permits: remote endpoint (port 0 under ADF) and when the permit lapses, least
    /// recently refreshed first; at most [`MAX_REMOTES_PER_MAPPING`]. Empty under EIF.
    permits: VecDeque<(SocketAddrV4, Deadline)>,
}

/// One simulated NAT device. See the module docs for the model; all methods are
/// deterministic functions of the config, the seed and the inputs so far.
#[derive(Debug, Clone)]
pub struct Nat {
    config: NatConfig,
    rng: ChaCha8Rng,
    /// The mapping table, by external endpoint (unique: no port overloading).
    by_external: HashMap<SocketAddrV4, Mapping>,
    /// The same mappings, by what an outbound datagram looks them up with.
    by_key: HashMap<MappingKey, SocketAddrV4>,
    /// Expiry order (deterministic iteration for `expire`).
    expiry: BTreeSet<(Instant, SocketAddrV4)>,
    /// Sequential allocation cursor per pool address.
    cursors: Vec<u16>,
    /// Live mappings per pool address (skips scanning a full address).
    used: Vec<usize>,
    /// Arbitrary pooling: live mappings per internal endpoint and pool address.
    endpoint_pool: HashMap<SocketAddrV4, Vec<u32>>,
    counters: NatCounters,
}

impl Nat {
    /// A NAT with an empty table. Never panics, whatever the config: without external
    /// addresses or free ports every new mapping is [`NatDrop::NoPort`], a loss outside
    /// `0.0..=1.0` saturates, and a timeout too large for `Instant` never expires. Use
    /// [`Nat::try_new`] (or [`NatConfig::validate`]) to refuse such configs instead.
    pub fn new(config: NatConfig) -> Self {
        let n = config.external_ips.len();
        let lo = (*config.port_range.start()).max(1);
        Self {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            by_external: HashMap::new(),
            by_key: HashMap::new(),
            expiry: BTreeSet::new(),
            cursors: vec![lo; n],
            used: vec![0; n],
            endpoint_pool: HashMap::new(),
            counters: NatCounters::default(),
            config,
        }
    }

    /// [`NatConfig::validate`], then [`Nat::new`].
    pub fn try_new(config: NatConfig) -> Result<Self, NatConfigError> {
        config.validate()?;
        Ok(Self::new(config))
    }

    /// The configuration this NAT runs.
    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    /// Whether `ip` is one of this NAT's external addresses: where a lab routes inbound
    /// datagrams for this NAT, and what [`Nat::outbound`] hairpins.
    pub fn is_external(&self, ip: Ipv4Addr) -> bool {
        self.config.external_ips.contains(&ip)
    }

    /// An outbound datagram from `internal` to `remote` at `now`.
    ///
    /// Finds or creates the mapping the mapping behaviour selects, refreshes it, records
    /// `remote` for filtering, then draws loss. If `remote` is one of the NAT's own external
    /// addresses the datagram is hairpinned instead (see [`Hairpin`]): with hairpinning off it
    /// is dropped as [`NatDrop::HairpinOff`] without creating a mapping; otherwise the
    /// sender's mapping is created/refreshed as for any remote, and the destination mapping's
    /// filtering (and inbound refresh, if configured) applies as for an inbound datagram from
    /// the sender's external endpoint — so hole punching between two clients behind the same
    /// NAT works as it would across NATs.
    pub fn outbound(
        &mut self,
        now: Instant,
        internal: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Result<Outbound, NatDrop> {
        if self.is_external(*remote.ip()) {
            return self.hairpin(now, internal, remote).map(Outbound::Hairpin);
        }
        let external = self.map_outbound(now, internal, remote)?;
        if self.lose() {
            return self.reject(NatDrop::Lost);
        }
        self.counters.outbound_translated += 1;
        Ok(Outbound::Forward(Translation {
            external,
            delay: self.config.delay,
        }))
    }

    /// An inbound datagram from `remote` to the NAT's `external` endpoint at `now`.
    ///
    /// Draws loss first (the datagram crosses the WAN link before the NAT), then looks the
    /// mapping up by `external` (expired mappings are removed on the spot: [`NatDrop::NoMapping`])
    /// and applies filtering: EIF admits anyone, ADF a remote IP this mapping has sent to, APDF
    /// a remote IP:port it has sent to, each permit lasting `timeout` after the last outbound
    /// datagram to that remote. Refreshes the mapping only with [`NatConfig::inbound_refresh`].
    pub fn inbound(
        &mut self,
        now: Instant,
        external: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Result<InboundTranslation, NatDrop> {
        if self.lose() {
            return self.reject(NatDrop::Lost);
        }
        let internal = self.deliver(now, external, remote)?;
        self.counters.inbound_translated += 1;
        Ok(InboundTranslation {
            internal,
            delay: self.config.delay,
        })
    }

    /// Removes every mapping whose timer has run out at `now` (lookups also do this lazily for
    /// the mapping they meet). Call it when [`Nat::poll_timeout`] is reached.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, external)) = self.expiry.first() {
            if deadline > now {
                break;
            }
            self.remove(external);
            self.counters.mappings_expired += 1;
            tracing::debug!(%external, "nat mapping expired");
        }
    }

    /// When the next mapping expires, if any: the instant to call [`Nat::expire`] at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiry.first().map(|(deadline, _)| *deadline)
    }

    /// The "NAT reboot" fault: forgets every mapping (counted in `mappings_flushed`) and
    /// restarts sequential allocation from the bottom of the port range. The RNG is not
    /// reseeded, so a run stays a deterministic function of its seed.
    pub fn reboot(&mut self) {
        self.counters.mappings_flushed += self.by_external.len() as u64;
        self.counters.reboots += 1;
        self.by_external.clear();
        self.by_key.clear();
        self.expiry.clear();
        self.endpoint_pool.clear();
        let lo = (*self.config.port_range.start()).max(1);
        self.cursors.iter_mut().for_each(|c| *c = lo);
        self.used.iter_mut().for_each(|u| *u = 0);
        tracing::debug!("nat rebooted");
    }

    /// Mappings in the table, including expired ones not yet removed (call [`Nat::expire`]
    /// first for an exact live count).
    pub fn mappings(&self) -> usize {
        self.by_external.len()
    }

    /// The external endpoint an outbound datagram from `internal` to `remote` would use now,
    /// if the mapping exists (it may be expired but not yet removed; call [`Nat::expire`]
    /// first). Does not create anything. What a test compares with a Teredo client's mapped
    /// address.
    pub fn mapping_for(
        &self,
        internal: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Option<SocketAddrV4> {
        self.by_key.get(&self.key_for(internal, remote)).copied()
    }

    /// The counters so far.
    pub fn counters(&self) -> &NatCounters {
        &self.counters
    }

    fn hairpin(
        &mut self,
        now: Instant,
        internal: SocketAddrV4,
        dst: SocketAddrV4,
    ) -> Result<Hairpin, NatDrop> {
        if !self.config.hairpinning {
            return self.reject(NatDrop::HairpinOff);
        }
        let from = self.map_outbound(now, internal, dst)?;
        if self.lose() {
            return self.reject(NatDrop::Lost);
        }
        let to = self.deliver(now, dst, from)?;
        self.counters.hairpinned += 1;
        Ok(Hairpin {
            from,
            to,
            delay: self.config.delay,
        })
    }

    fn reject<T>(&mut self, reason: NatDrop) -> Result<T, NatDrop> {
        let c = &mut self.counters;
        match reason {
            NatDrop::Filtered => c.inbound_filtered += 1,
            NatDrop::NoMapping => c.inbound_no_mapping += 1,
            NatDrop::Lost => c.lost += 1,
            NatDrop::TableFull => c.table_full += 1,
            NatDrop::NoPort => c.no_port += 1,
            NatDrop::HairpinOff => c.hairpin_off += 1,
        }
        tracing::trace!(reason = reason.as_str(), "nat drop");
        Err(reason)
    }

    /// One loss draw; no RNG use at all when loss is off, so loss-free runs keep the same
    /// port choices whatever else changes.
    fn lose(&mut self) -> bool {
        // NaN (only reachable through an unvalidated config) means "no loss".
        if self.config.loss.is_nan() || self.config.loss <= 0.0 {
            return false;
        }
        self.rng.random::<f64>() < self.config.loss
    }

    fn key_for(&self, internal: SocketAddrV4, remote: SocketAddrV4) -> MappingKey {
        let dest = match self.config.mapping {
            MappingBehavior::EndpointIndependent => Dest::Any,
            MappingBehavior::AddressDependent => Dest::Ip(*remote.ip()),
            MappingBehavior::AddressAndPortDependent => Dest::IpPort(remote),
        };
        MappingKey { internal, dest }
    }

    fn permit_key(&self, remote: SocketAddrV4) -> Option<SocketAddrV4> {
        match self.config.filtering {
            FilteringBehavior::EndpointIndependent => None,
            FilteringBehavior::AddressDependent => Some(SocketAddrV4::new(*remote.ip(), 0)),
            FilteringBehavior::AddressAndPortDependent => Some(remote),
        }
    }

    /// Finds or creates the mapping for an outbound datagram, refreshes it and records the
    /// remote; returns its external endpoint.
    fn map_outbound(
        &mut self,
        now: Instant,
        internal: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Result<SocketAddrV4, NatDrop> {
        let key = self.key_for(internal, remote);
        let existing = self.by_key.get(&key).copied();
        let external = match existing {
            Some(external) if !self.is_expired(external, now) => external,
            Some(external) => {
                self.remove(external);
                self.counters.mappings_expired += 1;
                self.create(now, key)?
            }
            None => self.create(now, key)?,
        };
        self.refresh(external, now);
        if let Some(permit) = self.permit_key(remote) {
            let until = now.checked_add(self.config.timeout);
            if let Some(m) = self.by_external.get_mut(&external) {
                if let Some(pos) = m.permits.iter().position(|(r, _)| *r == permit) {
                    m.permits.remove(pos);
                } else if m.permits.len() >= MAX_REMOTES_PER_MAPPING {
                    m.permits.pop_front();
                }
                m.permits.push_back((permit, until));
            }
        }
        Ok(external)
    }

    /// Lookup and filtering of a datagram arriving at `external` from `remote`; returns the
    /// internal endpoint.
    fn deliver(
        &mut self,
        now: Instant,
        external: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Result<SocketAddrV4, NatDrop> {
        if !self.by_external.contains_key(&external) {
            return self.reject(NatDrop::NoMapping);
        }
        if self.is_expired(external, now) {
            self.remove(external);
            self.counters.mappings_expired += 1;
            return self.reject(NatDrop::NoMapping);
        }
        let permit = self.permit_key(remote);
        let refresh = self.config.inbound_refresh;
        let until = now.checked_add(self.config.timeout);
        let Some(m) = self.by_external.get_mut(&external) else {
            return self.reject(NatDrop::NoMapping);
        };
        let internal = m.key.internal;
        if let Some(permit) = permit {
            let Some(pos) = m
                .permits
                .iter()
                .position(|(r, lapses)| *r == permit && !passed(*lapses, now))
            else {
                return self.reject(NatDrop::Filtered);
            };
            if refresh {
                m.permits.remove(pos);
                m.permits.push_back((permit, until));
            }
        }
        if refresh {
            self.refresh(external, now);
        }
        Ok(internal)
    }

    fn is_expired(&self, external: SocketAddrV4, now: Instant) -> bool {
        self.by_external
            .get(&external)
            .is_some_and(|m| passed(m.expires, now))
    }

    /// Pushes the mapping's deadline to `now + timeout` (never earlier than it was, should
    /// the caller's clock step back).
    fn refresh(&mut self, external: SocketAddrV4, now: Instant) {
        let Some(m) = self.by_external.get_mut(&external) else {
            return;
        };
        let new = match (m.expires, now.checked_add(self.config.timeout)) {
            (Some(old), Some(new)) => Some(old.max(new)),
            _ => None,
        };
        if new == m.expires {
            return;
        }
        if let Some(old) = m.expires {
            self.expiry.remove(&(old, external));
        }
        if let Some(new) = new {
            self.expiry.insert((new, external));
        }
        m.expires = new;
    }

    fn create(&mut self, now: Instant, key: MappingKey) -> Result<SocketAddrV4, NatDrop> {
        // Reclaim expired mappings first: they must not hold table slots or ports that a
        // real NAT would already have freed. Amortised, each mapping expires once.
        self.expire(now);
        if self.by_external.len() >= self.config.max_mappings {
            return self.reject(NatDrop::TableFull);
        }
        let Some((pool_idx, port)) = self.allocate(key.internal) else {
            return self.reject(NatDrop::NoPort);
        };
        let external = SocketAddrV4::new(self.config.external_ips[pool_idx], port);
        let expires = now.checked_add(self.config.timeout);
        if let Some(deadline) = expires {
            self.expiry.insert((deadline, external));
        }
        self.by_external.insert(
            external,
            Mapping {
                key,
                pool_idx,
                expires,
                permits: VecDeque::new(),
            },
        );
        self.by_key.insert(key, external);
        self.used[pool_idx] += 1;
        if let Some(counts) = self.endpoint_counts(key.internal) {
            counts[pool_idx] += 1;
        }
        self.counters.mappings_created += 1;
        tracing::debug!(internal = %key.internal, %external, "nat mapping created");
        Ok(external)
    }

    fn remove(&mut self, external: SocketAddrV4) {
        let Some(m) = self.by_external.remove(&external) else {
            return;
        };
        self.by_key.remove(&m.key);
        if let Some(deadline) = m.expires {
            self.expiry.remove(&(deadline, external));
        }
        self.used[m.pool_idx] = self.used[m.pool_idx].saturating_sub(1);
        if let Some(counts) = self.endpoint_pool.get_mut(&m.key.internal) {
            counts[m.pool_idx] = counts[m.pool_idx].saturating_sub(1);
            if counts.iter().all(|c| *c == 0) {
                self.endpoint_pool.remove(&m.key.internal);
            }
        }
    }

    /// Per-pool-address mapping counts of an internal endpoint, kept only where they matter
    /// (arbitrary pooling over several addresses).
    fn endpoint_counts(&mut self, internal: SocketAddrV4) -> Option<&mut Vec<u32>> {
        let n = self.config.external_ips.len();
        if self.config.pooling != Pooling::Arbitrary || n < 2 {
            return None;
        }
        Some(
            self.endpoint_pool
                .entry(internal)
                .or_insert_with(|| vec![0; n]),
        )
    }

    /// The allocatable ports, without port 0; `None` if empty.
    fn port_bounds(&self) -> Option<(u16, u16)> {
        let lo = (*self.config.port_range.start()).max(1);
        let hi = *self.config.port_range.end();
        (lo <= hi).then_some((lo, hi))
    }

    /// Picks a pool address and a free port on it for a new mapping of `internal`.
    fn allocate(&mut self, internal: SocketAddrV4) -> Option<(usize, u16)> {
        let n = self.config.external_ips.len();
        if n == 0 {
            return None;
        }
        match self.config.pooling {
            Pooling::Paired => {
                let idx = paired_index(self.config.seed, *internal.ip(), n);
                self.allocate_port(idx, internal.port()).map(|p| (idx, p))
            }
            Pooling::Arbitrary => {
                let first = self.pick_arbitrary(internal, n);
                (0..n).map(|k| (first + k) % n).find_map(|idx| {
                    self.allocate_port(idx, internal.port())
                        .map(|port| (idx, port))
                })
            }
        }
    }

    /// A uniformly random pool index among those `internal` has no live mapping on (all of
    /// them if it has mappings everywhere).
    fn pick_arbitrary(&mut self, internal: SocketAddrV4, n: usize) -> usize {
        if n == 1 {
            return 0;
        }
        let counts = self.endpoint_pool.get(&internal);
        let is_free = |i: usize| counts.is_none_or(|c| c.get(i).is_none_or(|n| *n == 0));
        let free = (0..n).filter(|i| is_free(*i)).count();
        if free == 0 {
            return self.rng.random_range(0..n);
        }
        let nth = self.rng.random_range(0..free);
        (0..n).filter(|i| is_free(*i)).nth(nth).unwrap_or(0)
    }

    fn port_free(&self, ip: Ipv4Addr, port: u16) -> bool {
        !self.by_external.contains_key(&SocketAddrV4::new(ip, port))
    }

    /// The first free port at or after `start`, wrapping within `lo..=hi`.
    fn scan_free(&self, ip: Ipv4Addr, start: u16, lo: u16, hi: u16) -> Option<u16> {
        let start = start.clamp(lo, hi);
        (start..=hi)
            .chain(lo..start)
            .find(|p| self.port_free(ip, *p))
    }

    fn allocate_port(&mut self, idx: usize, internal_port: u16) -> Option<u16> {
        let (lo, hi) = self.port_bounds()?;
        if self.used[idx] > usize::from(hi - lo) {
            return None;
        }
        let ip = self.config.external_ips[idx];
        match self.config.ports {
            PortAllocation::Preserving
                if (lo..=hi).contains(&internal_port) && self.port_free(ip, internal_port) =>
            {
                Some(internal_port)
            }
            PortAllocation::Preserving | PortAllocation::Sequential => {
                let port = self.scan_free(ip, self.cursors[idx], lo, hi)?;
                self.cursors[idx] = if port == hi { lo } else { port + 1 };
                Some(port)
            }
            PortAllocation::Random => {
                for _ in 0..RANDOM_PORT_TRIES {
                    let port = self.rng.random_range(lo..=hi);
                    if self.port_free(ip, port) {
                        return Some(port);
                    }
                }
                let start = self.rng.random_range(lo..=hi);
                self.scan_free(ip, start, lo, hi)
            }
        }
    }
}

/// Paired pooling's address for an internal IP: a seeded hash, so it is stable for the whole
/// run (REQ-2 "always the same") without any per-host state.
fn paired_index(seed: u64, internal: Ipv4Addr, n: usize) -> usize {
    // splitmix64 finaliser.
    let mut z = (seed ^ u64::from(u32::from(internal))).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // The remainder is below `n`, which is a usize.
    (z % n as u64) as usize
}

/// Asserts the internal consistency of the tables: both indexes agree, pool and port
/// bookkeeping, expiry records, permit caps, counters. Used by the unit tests and the fuzz
/// harness.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_invariants(nat: &Nat) {
    let c = &nat.config;
    let n = c.external_ips.len();
    assert!(nat.mappings() <= c.max_mappings);
    assert_eq!(nat.by_key.len(), nat.by_external.len());
    let mut deadlines = 0;
    let mut used = vec![0; n];
    let mut per_endpoint: HashMap<SocketAddrV4, Vec<u32>> = HashMap::new();
    for (external, m) in &nat.by_external {
        assert_eq!(nat.by_key.get(&m.key), Some(external));
        assert_eq!(c.external_ips[m.pool_idx], *external.ip());
        assert!(external.port() != 0 && c.port_range.contains(&external.port()));
        assert!(m.permits.len() <= MAX_REMOTES_PER_MAPPING);
        if let Some(deadline) = m.expires {
            deadlines += 1;
            assert!(nat.expiry.contains(&(deadline, *external)));
        }
        used[m.pool_idx] += 1;
        if c.pooling == Pooling::Paired {
            assert_eq!(m.pool_idx, paired_index(c.seed, *m.key.internal.ip(), n));
        } else if n >= 2 {
            per_endpoint
                .entry(m.key.internal)
                .or_insert_with(|| vec![0; n])[m.pool_idx] += 1;
        }
    }
    assert_eq!(nat.expiry.len(), deadlines);
    assert_eq!(nat.used, used);
    assert_eq!(nat.endpoint_pool, per_endpoint);
    let k = &nat.counters;
    assert_eq!(
        k.mappings_created,
        k.mappings_expired + k.mappings_flushed + nat.mappings() as u64
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use FilteringBehavior as F;
    use MappingBehavior as M;

    fn ep(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn two_ips() -> Vec<Ipv4Addr> {
        vec![ip("203.0.113.1"), ip("203.0.113.2")]
    }

    fn preset_nat(preset: NatPreset) -> Nat {
        Nat::try_new(preset.config(two_ips(), 42).unwrap().unwrap()).unwrap()
    }

    /// A NAT on 203.0.113.1 with the default (port-restricted) behaviour, modified by `f`.
    fn nat_with(f: impl FnOnce(&mut NatConfig)) -> Nat {
        let mut config = NatConfig::new(vec![ip("203.0.113.1")], 7);
        f(&mut config);
        Nat::try_new(config).unwrap()
    }

    #[track_caller]
    fn fwd(result: Result<Outbound, NatDrop>) -> SocketAddrV4 {
        match result {
            Ok(Outbound::Forward(t)) => t.external,
            other => panic!("expected a forwarded datagram, got {other:?}"),
        }
    }

    /// RFC 5780 §4.3 mapping tests I/II/III: one internal endpoint to (IP1,P1), (IP2,P1),
    /// (IP2,P2); compare the external endpoints.
    fn probe_mapping(nat: &mut Nat, now: Instant) -> MappingBehavior {
        let x = ep("10.0.0.2:5000");
        let m1 = fwd(nat.outbound(now, x, ep("198.51.100.1:3478")));
        let m2 = fwd(nat.outbound(now, x, ep("198.51.100.2:3478")));
        let m3 = fwd(nat.outbound(now, x, ep("198.51.100.2:3479")));
        if m1 == m2 {
            assert_eq!(m2, m3);
            M::EndpointIndependent
        } else if m2 == m3 {
            M::AddressDependent
        } else {
            M::AddressAndPortDependent
        }
    }

    /// RFC 5780 §4.4 filtering tests: after a binding to (IP1,P1), unsolicited datagrams from
    /// a new IP and port, then from the same IP with a new port, then from IP1:P1 itself.
    fn probe_filtering(nat: &mut Nat, now: Instant) -> FilteringBehavior {
        let x = ep("10.0.0.3:6000");
        let server = ep("198.51.100.1:3478");
        let m = fwd(nat.outbound(now, x, server));
        let behaviour = match (
            nat.inbound(now, m, ep("198.51.100.2:3479")),
            nat.inbound(now, m, ep("198.51.100.1:3479")),
        ) {
            (Ok(_), Ok(_)) => F::EndpointIndependent,
            (Err(NatDrop::Filtered), Ok(_)) => F::AddressDependent,
            (Err(NatDrop::Filtered), Err(NatDrop::Filtered)) => F::AddressAndPortDependent,
            other => panic!("inconsistent filtering: {other:?}"),
        };
        assert_eq!(nat.inbound(now, m, server).unwrap().internal, x);
        behaviour
    }

    #[test]
    fn every_combination_probes_as_configured() {
        let now = Instant::now();
        for &mapping in M::ALL {
            for &filtering in F::ALL {
                for &ports in PortAllocation::ALL {
                    for &pooling in Pooling::ALL {
                        let mut nat = Nat::try_new(NatConfig {
                            mapping,
                            filtering,
                            ports,
                            pooling,
                            ..NatConfig::new(two_ips(), 3)
                        })
                        .unwrap();
                        let what = format!("{mapping}/{filtering}/{ports}/{pooling}");
                        assert_eq!(probe_mapping(&mut nat, now), mapping, "{what}");
                        assert_eq!(probe_filtering(&mut nat, now), filtering, "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn presets_match_the_rfc4787_table() {
        let now = Instant::now();
        let table = [
            (
                NatPreset::FullCone,
                M::EndpointIndependent,
                F::EndpointIndependent,
            ),
            (
                NatPreset::Restricted,
                M::EndpointIndependent,
                F::AddressDependent,
            ),
            (
                NatPreset::PortRestricted,
                M::EndpointIndependent,
                F::AddressAndPortDependent,
            ),
            (
                NatPreset::Symmetric,
                M::AddressAndPortDependent,
                F::AddressAndPortDependent,
            ),
            (
                NatPreset::SymmetricAddress,
                M::AddressDependent,
                F::AddressAndPortDependent,
            ),
        ];
        for (preset, mapping, filtering) in table {
            let config = preset.config(two_ips(), 1).unwrap().unwrap();
            assert_eq!(
                (config.mapping, config.filtering),
                (mapping, filtering),
                "{preset}"
            );
            let expected_ports = if preset == NatPreset::Symmetric {
                PortAllocation::Random
            } else {
                PortAllocation::Preserving
            };
            assert_eq!(config.ports, expected_ports, "{preset}");
            assert_eq!(config.timeout, secs(120), "{preset}");
            assert!(config.hairpinning && !config.inbound_refresh, "{preset}");
            let mut nat = preset_nat(preset);
            assert_eq!(probe_mapping(&mut nat, now), mapping, "{preset}");
            assert_eq!(probe_filtering(&mut nat, now), filtering, "{preset}");
        }
        assert_eq!(NatPreset::None.config(two_ips(), 1), Ok(None));
    }

    /// What the preset docs promise a Teredo client: the cone probe (RS to the primary, RA
    /// from the secondary) passes only behind full cone; the secondary-address check sees a
    /// different mapping only behind the symmetric presets.
    #[test]
    fn presets_as_a_teredo_client_sees_them() {
        let now = Instant::now();
        let client = ep("192.168.1.10:40000");
        let primary = ep("198.51.100.10:3544");
        let secondary = ep("198.51.100.11:3544");
        for &preset in &NatPreset::ALL[1..] {
            let mut nat = preset_nat(preset);
            let m1 = fwd(nat.outbound(now, client, primary));
            let cone = nat.inbound(now, m1, secondary).is_ok();
            let m2 = fwd(nat.outbound(now, client, secondary));
            assert_eq!(cone, preset == NatPreset::FullCone, "{preset} cone probe");
            let symmetric = matches!(preset, NatPreset::Symmetric | NatPreset::SymmetricAddress);
            assert_eq!(m1 != m2, symmetric, "{preset} secondary check");
            if preset == NatPreset::SymmetricAddress {
                assert_ne!(m1.ip(), m2.ip(), "symmetric-address changes the address");
                assert_eq!(m1.port(), client.port(), "and preserves the port");
            }
        }
    }

    #[test]
    fn preset_names_round_trip() {
        let names: Vec<&str> = NatPreset::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "none",
                "full-cone",
                "restricted",
                "port-restricted",
                "symmetric",
                "symmetric-address"
            ]
        );
        for &preset in NatPreset::ALL {
            assert_eq!(preset.as_str().parse::<NatPreset>(), Ok(preset));
            assert_eq!(preset.to_string(), preset.as_str());
        }
        let err = "cone".parse::<NatPreset>().unwrap_err();
        assert!(matches!(&err, NatConfigError::BadValue { key, .. } if key == "preset"));
    }

    #[test]
    fn symmetric_address_needs_two_addresses() {
        let one = vec![ip("203.0.113.1")];
        assert_eq!(
            NatPreset::SymmetricAddress.config(one.clone(), 0),
            Err(NatConfigError::TooFewExternalIps {
                preset: NatPreset::SymmetricAddress,
                needed: 2,
                got: 1
            })
        );
        for &preset in &NatPreset::ALL[1..] {
            assert_eq!(
                preset.config(Vec::new(), 0),
                Err(NatConfigError::NoExternalIps)
            );
            if preset != NatPreset::SymmetricAddress {
                assert!(preset.config(one.clone(), 0).unwrap().is_some());
            }
        }
    }

    #[test]
    fn port_preservation_falls_back_to_sequential() {
        let now = Instant::now();
        let server = ep("198.51.100.10:3544");
        let mut nat = nat_with(|_| {});
        assert_eq!(
            fwd(nat.outbound(now, ep("10.0.0.2:5000"), server)).port(),
            5000
        );
        // Same port on a second host: not overloaded, the next port from the range's base.
        assert_eq!(
            fwd(nat.outbound(now, ep("10.0.0.3:5000"), server)).port(),
            1024
        );
        assert_eq!(
            fwd(nat.outbound(now, ep("10.0.0.4:5000"), server)).port(),
            1025
        );
        // A port outside the range (well-known) is not preserved either.
        assert_eq!(
            fwd(nat.outbound(now, ep("10.0.0.5:53"), server)).port(),
            1026
        );
        // Preserved again once free.
        assert_eq!(
            fwd(nat.outbound(now, ep("10.0.0.6:6000"), server)).port(),
            6000
        );
    }

    #[test]
    fn sequential_allocation_steps_by_one_and_wraps() {
        let t0 = Instant::now();
        let server = ep("198.51.100.10:3544");
        let mut nat = nat_with(|c| {
            c.ports = PortAllocation::Sequential;
            c.port_range = 20000..=20002;
            c.timeout = secs(10);
        });
        let hosts: Vec<SocketAddrV4> = (2..6)
            .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 5000))
            .collect();
        for (i, host) in hosts[..3].iter().enumerate() {
            assert_eq!(
                fwd(nat.outbound(t0, *host, server)).port(),
                20000 + i as u16
            );
        }
        assert_eq!(nat.outbound(t0, hosts[3], server), Err(NatDrop::NoPort));
        assert_eq!(nat.counters().no_port, 1);
        // Keep hosts 1 and 2 alive; host 0's mapping lapses and its port is reused after the
        // wrap.
        fwd(nat.outbound(t0 + secs(5), hosts[1], server));
        fwd(nat.outbound(t0 + secs(5), hosts[2], server));
        assert_eq!(
            fwd(nat.outbound(t0 + secs(10), hosts[3], server)).port(),
            20000
        );
        assert_eq!(nat.counters().mappings_expired, 1);

        // APDM + sequential: one endpoint's sessions get consecutive ports (RFC 6081 §5.5).
        let mut nat = nat_with(|c| {
            c.mapping = M::AddressAndPortDependent;
            c.ports = PortAllocation::Sequential;
        });
        let x = ep("10.0.0.2:5000");
        let ports: Vec<u16> = (0..3)
            .map(|i| {
                fwd(nat.outbound(t0, x, SocketAddrV4::new(ip("198.51.100.1"), 3000 + i))).port()
            })
            .collect();
        assert_eq!(ports, [1024, 1025, 1026]);
    }

    fn random_ports(seed: u64) -> Vec<u16> {
        let now = Instant::now();
        let mut nat = nat_with(|c| {
            c.mapping = M::AddressAndPortDependent;
            c.ports = PortAllocation::Random;
            c.port_range = 40000..=40999;
            c.seed = seed;
        });
        let x = ep("10.0.0.2:5000");
        (0..50)
            .map(|i| {
                fwd(nat.outbound(now, x, SocketAddrV4::new(ip("198.51.100.1"), 1000 + i))).port()
            })
            .collect()
    }

    #[test]
    fn random_allocation_is_reproducible_from_the_seed() {
        let a = random_ports(1);
        assert_eq!(a, random_ports(1));
        assert_ne!(a, random_ports(2));
        assert!(a.iter().all(|p| (40000..=40999).contains(p)));
        let mut distinct = a.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), a.len(), "no port overloading");
        // Not simply sequential from somewhere.
        assert!(a.windows(2).any(|w| w[1] != w[0] + 1));
    }

    #[test]
    fn mapping_expires_after_the_timeout() {
        let t0 = Instant::now();
        let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.10:3544"));
        let mut nat = nat_with(|_| {});
        let m = fwd(nat.outbound(t0, x, server));
        assert_eq!(nat.poll_timeout(), Some(t0 + secs(120)));
        assert_eq!(nat.inbound(t0 + secs(119), m, server).unwrap().internal, x);
        assert_eq!(
            nat.inbound(t0 + secs(120), m, server),
            Err(NatDrop::NoMapping)
        );
        assert_eq!(nat.mappings(), 0);
        assert_eq!(nat.poll_timeout(), None);
        let c = nat.counters();
        assert_eq!((c.mappings_expired, c.inbound_no_mapping), (1, 1));
    }

    #[test]
    fn outbound_refreshes_and_expire_removes() {
        let t0 = Instant::now();
        let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.10:3544"));
        let mut nat = nat_with(|_| {});
        let m = fwd(nat.outbound(t0, x, server));
        assert_eq!(fwd(nat.outbound(t0 + secs(100), x, server)), m);
        assert_eq!(nat.poll_timeout(), Some(t0 + secs(220)));
        assert!(nat.inbound(t0 + secs(219), m, server).is_ok());
        nat.expire(t0 + secs(219));
        assert_eq!(nat.mappings(), 1);
        nat.expire(t0 + secs(220));
        assert_eq!(nat.mappings(), 0);
        assert_eq!(nat.mapping_for(x, server), None);
        assert_eq!(nat.counters().mappings_expired, 1);
    }

    #[test]
    fn inbound_refreshes_only_when_configured() {
        let t0 = Instant::now();
        let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.10:3544"));
        for inbound_refresh in [false, true] {
            let mut nat = nat_with(|c| c.inbound_refresh = inbound_refresh);
            let m = fwd(nat.outbound(t0, x, server));
            assert!(nat.inbound(t0 + secs(100), m, server).is_ok());
            let later = nat.inbound(t0 + secs(121), m, server);
            if inbound_refresh {
                assert!(later.is_ok());
                assert_eq!(nat.poll_timeout(), Some(t0 + secs(241)));
            } else {
                assert_eq!(later, Err(NatDrop::NoMapping));
            }
        }
    }

    #[test]
    fn filter_permits_lapse_per_remote() {
        let t0 = Instant::now();
        let x = ep("10.0.0.2:5000");
        let (peer, server) = (ep("198.51.100.20:4000"), ep("198.51.100.10:3544"));
        let mut nat = nat_with(|_| {});
        let m = fwd(nat.outbound(t0, x, peer));
        fwd(nat.outbound(t0 + secs(60), x, server));
        fwd(nat.outbound(t0 + secs(120), x, server));
        // The mapping lives on thanks to the server keep-alives, but the hole towards the
        // peer was last used at t0.
        assert!(nat.inbound(t0 + secs(150), m, server).is_ok());
        assert_eq!(nat.inbound(t0 + secs(150), m, peer), Err(NatDrop::Filtered));
    }

    #[test]
    fn remotes_per_mapping_are_bounded_lru() {
        let now = Instant::now();
        let x = ep("10.0.0.2:5000");
        let remote = |i: u16| SocketAddrV4::new(ip("198.51.100.1"), 1000 + i);
        let mut nat = nat_with(|_| {});
        let m = fwd(nat.outbound(now, x, remote(0)));
        for i in 1..MAX_REMOTES_PER_MAPPING as u16 {
            fwd(nat.outbound(now, x, remote(i)));
        }
        // Touch remote 0 again, then one more remote evicts the least recently used: remote 1.
        fwd(nat.outbound(now, x, remote(0)));
        fwd(nat.outbound(now, x, remote(MAX_REMOTES_PER_MAPPING as u16)));
        assert!(nat.inbound(now, m, remote(0)).is_ok());
        assert_eq!(nat.inbound(now, m, remote(1)), Err(NatDrop::Filtered));
        assert!(nat.inbound(now, m, remote(2)).is_ok());
        assert!(nat
            .inbound(now, m, remote(MAX_REMOTES_PER_MAPPING as u16))
            .is_ok());
        assert_eq!(nat.by_external[&m].permits.len(), MAX_REMOTES_PER_MAPPING);
    }

    #[test]
    fn hairpinning_uses_the_external_source_and_filters() {
        let now = Instant::now();
        let (a, b, server) = (
            ep("10.0.0.2:4000"),
            ep("10.0.0.3:5000"),
            ep("198.51.100.10:3544"),
        );
        let mut nat = nat_with(|_| {});
        let a_ext = fwd(nat.outbound(now, a, server));
        let b_ext = fwd(nat.outbound(now, b, server));
        // Port-restricted: A has not sent to B's mapping yet, so B's datagram is filtered at
        // A's mapping — but it opened B's mapping towards A's.
        assert_eq!(nat.outbound(now, b, a_ext), Err(NatDrop::Filtered));
        let expected = Hairpin {
            from: a_ext,
            to: b,
            delay: Duration::ZERO,
        };
        assert_eq!(nat.outbound(now, a, b_ext), Ok(Outbound::Hairpin(expected)));
        let back = nat.outbound(now, b, a_ext).unwrap();
        assert_eq!(
            back,
            Outbound::Hairpin(Hairpin {
                from: b_ext,
                to: a,
                delay: Duration::ZERO
            })
        );
        assert_eq!(
            nat.outbound(now, a, ep("203.0.113.1:9")),
            Err(NatDrop::NoMapping)
        );
        let c = nat.counters();
        assert_eq!(
            (c.hairpinned, c.inbound_filtered, c.inbound_no_mapping),
            (2, 1, 1)
        );
        assert_eq!(c.outbound_translated, 2);

        // Full cone: straight through.
        let mut nat = preset_nat(NatPreset::FullCone);
        let a_ext = fwd(nat.outbound(now, a, server));
        let b_ext = fwd(nat.outbound(now, b, server));
        assert!(matches!(
            nat.outbound(now, b, a_ext),
            Ok(Outbound::Hairpin(Hairpin { from, to, .. })) if from == b_ext && to == a
        ));
    }

    #[test]
    fn hairpinning_off_drops_without_a_mapping() {
        let now = Instant::now();
        let (a, b, server) = (
            ep("10.0.0.2:4000"),
            ep("10.0.0.3:5000"),
            ep("198.51.100.10:3544"),
        );
        let mut nat = nat_with(|c| c.hairpinning = false);
        fwd(nat.outbound(now, a, server));
        let b_ext = fwd(nat.outbound(now, b, server));
        assert_eq!(nat.outbound(now, a, b_ext), Err(NatDrop::HairpinOff));
        assert_eq!(nat.counters().hairpin_off, 1);
        assert_eq!(nat.counters().dropped(NatDrop::HairpinOff), 1);
        assert_eq!(nat.mappings(), 2);
    }

    #[test]
    fn loss_rate_is_roughly_as_configured_and_reproducible() {
        let now = Instant::now();
        let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.10:3544"));
        let run = || {
            let mut nat = nat_with(|c| {
                c.loss = 0.1;
                c.filtering = F::EndpointIndependent;
            });
            let mut results = Vec::new();
            for _ in 0..10_000 {
                results.push(nat.outbound(now, x, server).err());
            }
            let m = nat.mapping_for(x, server).unwrap();
            for _ in 0..10_000 {
                results.push(nat.inbound(now, m, server).err());
            }
            (results, nat.counters().clone())
        };
        let (results, counters) = run();
        let lost_out = results[..10_000].iter().filter(|r| r.is_some()).count();
        let lost_in = results[10_000..].iter().filter(|r| r.is_some()).count();
        assert!(results.iter().flatten().all(|r| *r == NatDrop::Lost));
        // Binomial(10 000, 0.1): σ = 30, so ±100 is more than 3σ.
        assert!((900..=1100).contains(&lost_out), "{lost_out}");
        assert!((900..=1100).contains(&lost_in), "{lost_in}");
        assert_eq!(counters.lost, (lost_out + lost_in) as u64);
        assert_eq!(counters.outbound_translated, 10_000 - lost_out as u64);
        assert_eq!(counters.inbound_translated, 10_000 - lost_in as u64);
        assert_eq!(run(), (results, counters), "same seed, same losses");

        let mut nat = nat_with(|c| c.loss = 1.0);
        assert_eq!(nat.outbound(now, x, server), Err(NatDrop::Lost));
        assert_eq!(nat.mappings(), 1, "a lost outbound datagram still maps");
    }

    #[test]
    fn delay_is_reported() {
        let now = Instant::now();
        let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.10:3544"));
        let mut nat = nat_with(|c| c.delay = Duration::from_millis(50));
        let out = nat.outbound(now, x, server).unwrap();
        assert_eq!(out.delay(), Duration::from_millis(50));
        let m = fwd(Ok(out));
        assert_eq!(
            nat.inbound(now, m, server).unwrap().delay,
            Duration::from_millis(50)
        );
    }

    #[test]
    fn table_cap_is_a_counted_drop() {
        let t0 = Instant::now();
        let server = ep("198.51.100.10:3544");
        let host = |i: u8| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 5000);
        let mut nat = nat_with(|c| c.max_mappings = 3);
        for i in 1..=3 {
            fwd(nat.outbound(t0, host(i), server));
        }
        assert_eq!(nat.outbound(t0, host(4), server), Err(NatDrop::TableFull));
        assert_eq!(nat.counters().table_full, 1);
        assert_eq!(nat.mappings(), 3);
        // Existing mappings keep working.
        fwd(nat.outbound(t0 + secs(1), host(1), server));
        // Once the others expire there is room again.
        fwd(nat.outbound(t0 + secs(120), host(4), server));
        assert_eq!(nat.mappings(), 2);
        assert_eq!(nat.counters().mappings_expired, 2);
    }

    #[test]
    fn reboot_forgets_everything() {
        let t0 = Instant::now();
        let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.10:3544"));
        let mut nat = nat_with(|c| c.ports = PortAllocation::Sequential);
        let m = fwd(nat.outbound(t0, x, server));
        fwd(nat.outbound(t0, ep("10.0.0.3:5000"), server));
        nat.reboot();
        assert_eq!(nat.mappings(), 0);
        assert_eq!(nat.poll_timeout(), None);
        assert_eq!(nat.mapping_for(x, server), None);
        assert_eq!(nat.inbound(t0, m, server), Err(NatDrop::NoMapping));
        // Sequential allocation restarts at the base: the same port again.
        assert_eq!(fwd(nat.outbound(t0, x, server)), m);
        let c = nat.counters();
        assert_eq!(
            (c.mappings_created, c.mappings_flushed, c.reboots),
            (3, 2, 1)
        );
    }

    #[test]
    fn paired_pooling_keeps_an_internal_ip_on_one_address() {
        let now = Instant::now();
        let pool = vec![ip("203.0.113.1"), ip("203.0.113.2"), ip("203.0.113.3")];
        let mut nat = Nat::try_new(NatConfig {
            mapping: M::AddressAndPortDependent,
            ..NatConfig::new(pool.clone(), 5)
        })
        .unwrap();
        let mut seen = Vec::new();
        for host in 1..=16u8 {
            let mut ips = Vec::new();
            for port in 0..4u16 {
                for r in 0..4u16 {
                    let internal = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, host), 5000 + port);
                    let remote = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1 + r as u8), 3544);
                    ips.push(*fwd(nat.outbound(now, internal, remote)).ip());
                }
            }
            ips.dedup();
            assert_eq!(ips.len(), 1, "host {host}");
            seen.push(ips[0]);
        }
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() >= 2, "hosts spread over the pool: {seen:?}");
    }

    #[test]
    fn arbitrary_pooling_moves_new_sessions_to_other_addresses() {
        let now = Instant::now();
        let pool = vec![ip("203.0.113.1"), ip("203.0.113.2"), ip("203.0.113.3")];
        let mut nat = Nat::try_new(NatConfig {
            mapping: M::AddressDependent,
            pooling: Pooling::Arbitrary,
            ..NatConfig::new(pool, 5)
        })
        .unwrap();
        let x = ep("10.0.0.2:5000");
        let mut ips: Vec<Ipv4Addr> = (1..=3)
            .map(|r| {
                *fwd(nat.outbound(
                    now,
                    x,
                    SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, r), 3544),
                ))
                .ip()
            })
            .collect();
        ips.sort_unstable();
        ips.dedup();
        assert_eq!(ips.len(), 3);
    }

    #[test]
    fn spec_parses_free_combinations() {
        let c = NatConfig::from_spec(
            "mapping=apd,filtering=ei,ports=random,timeout=20s,hairpin=off,loss=0.1,delay=50ms",
        )
        .unwrap();
        assert_eq!(c.mapping, M::AddressAndPortDependent);
        assert_eq!(c.filtering, F::EndpointIndependent);
        assert_eq!(c.ports, PortAllocation::Random);
        assert_eq!(c.timeout, secs(20));
        assert!(!c.hairpinning);
        assert_eq!(c.loss, 0.1);
        assert_eq!(c.delay, Duration::from_millis(50));
        assert_eq!(c.external_ips, [NatConfig::DEFAULT_EXTERNAL_IP]);

        assert_eq!(NatConfig::from_spec("").unwrap(), NatConfig::default());
        let c = NatConfig::from_spec(
            " MAPPING = Address-Dependent , Inbound_Refresh=yes, loss=10%, port-range=2000-2999, \
             max-mappings=10, seed=9, pooling=arbitrary, ips=192.0.2.1+192.0.2.2, timeout=2m",
        )
        .unwrap();
        assert_eq!(c.mapping, M::AddressDependent);
        assert!(c.inbound_refresh);
        assert_eq!(c.loss, 0.1);
        assert_eq!(c.port_range, 2000..=2999);
        assert_eq!((c.max_mappings, c.seed), (10, 9));
        assert_eq!(c.external_ips, [ip("192.0.2.1"), ip("192.0.2.2")]);
        assert_eq!(c.timeout, secs(120));

        // Presets as a base, overridable, independent of key order.
        let c = NatConfig::from_spec("filtering=apd,preset=full-cone").unwrap();
        assert_eq!(
            (c.mapping, c.filtering),
            (M::EndpointIndependent, F::AddressAndPortDependent)
        );
        let a = NatConfig::from_spec("preset=symmetric-address,ips=192.0.2.1+192.0.2.2,seed=3")
            .unwrap();
        let b = NatConfig::from_spec("seed=3,ips=192.0.2.1+192.0.2.2,preset=symmetric-address")
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            Some(a),
            NatPreset::SymmetricAddress
                .config(vec![ip("192.0.2.1"), ip("192.0.2.2")], 3)
                .unwrap()
        );

        // apply_spec on top of a preset leaves addresses and seed alone.
        let mut c = NatPreset::Symmetric.config(two_ips(), 11).unwrap().unwrap();
        c.apply_spec("timeout=20s").unwrap();
        assert_eq!(
            (c.timeout, c.seed, c.ports),
            (secs(20), 11, PortAllocation::Random)
        );
    }

    #[test]
    fn spec_errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("mapping=xyz", "mapping"),
            ("filtering=", "filtering"),
            ("ports=odd", "ports"),
            ("pooling=sometimes", "pooling"),
            ("colour=red", "colour"),
            ("timeout=20", "timeout"),
            ("timeout=20 fortnights", "timeout"),
            ("timeout=0s", "timeout"),
            ("delay=-5ms", "delay"),
            ("delay=2000d", "delay"),
            ("hairpin=maybe", "hairpin"),
            ("inbound-refresh=2", "inbound-refresh"),
            ("loss=1.5", "loss"),
            ("loss=lots", "loss"),
            ("loss=NaN", "loss"),
            ("port-range=2000-1000", "port-range"),
            ("port-range=0-10", "port-range"),
            ("port-range=70000", "port-range"),
            ("max-mappings=0", "max-mappings"),
            ("max-mappings=-1", "max-mappings"),
            ("seed=x", "seed"),
            ("ips=", "ips"),
            ("ips=203.0.113.1+203.0.113.1", "ips"),
            ("ips=::1", "ips"),
            ("preset=cone", "preset"),
            ("preset=none", "none"),
            ("preset=symmetric-address", "ips"),
            ("mapping=ei,mapping=ad", "mapping"),
            ("mapping", "mapping"),
        ];
        for (spec, key) in cases {
            let err = NatConfig::from_spec(spec).expect_err(spec);
            let msg = err.to_string();
            assert!(msg.contains(key), "{spec}: {msg}");
        }
        assert!(matches!(
            NatConfig::from_spec("colour=red"),
            Err(NatConfigError::UnknownKey { key }) if key == "colour"
        ));
        assert!(matches!(
            NatConfig::from_spec("mapping=ei,Mapping=ad"),
            Err(NatConfigError::DuplicateKey { key }) if key == "Mapping"
        ));
        assert!(matches!(
            NatConfig::from_spec("mapping"),
            Err(NatConfigError::NotKeyValue { .. })
        ));
        assert!(matches!(
            NatConfig::from_spec("loss=1.5"),
            Err(NatConfigError::OutOfRange { key: "loss", .. })
        ));
        // A failed apply leaves the config unchanged.
        let mut c = NatConfig::default();
        assert!(c.apply_spec("timeout=5s,loss=2").is_err());
        assert_eq!(c, NatConfig::default());
    }

    #[test]
    fn spec_round_trips_every_preset() {
        for &preset in &NatPreset::ALL[1..] {
            let mut c = preset.config(two_ips(), 99).unwrap().unwrap();
            c.delay = Duration::from_micros(1500);
            c.loss = 0.015;
            let spec = c.to_spec();
            assert_eq!(NatConfig::from_spec(&spec).as_ref(), Ok(&c), "{spec}");
            assert_eq!(spec.parse::<NatConfig>(), Ok(c));
        }
        assert_eq!(format_duration(secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(parse_duration("1h"), Some(secs(3600)));
    }

    #[test]
    fn new_copes_with_degenerate_configs() {
        let now = Instant::now();
        let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.10:3544"));
        let mut nat = Nat::new(NatConfig::new(Vec::new(), 0));
        assert_eq!(nat.outbound(now, x, server), Err(NatDrop::NoPort));
        let mut nat = Nat::new(NatConfig {
            port_range: 0..=0,
            ..NatConfig::default()
        });
        assert_eq!(nat.outbound(now, x, server), Err(NatDrop::NoPort));
        let mut nat = Nat::new(NatConfig {
            timeout: Duration::MAX,
            loss: f64::NAN,
            ..NatConfig::default()
        });
        let m = fwd(nat.outbound(now, x, server));
        assert_eq!(
            nat.poll_timeout(),
            None,
            "a timeout beyond Instant never expires"
        );
        assert!(nat.inbound(now + secs(1_000_000), m, server).is_ok());
        assert!(Nat::try_new(NatConfig::new(Vec::new(), 0)).is_err());
    }

    // ---- property tests ----

    #[derive(Debug, Clone)]
    enum Remote {
        Internet(u8, u16),
        Own(usize, u16),
    }

    #[derive(Debug, Clone)]
    enum Op {
        Out {
            host: u8,
            port: u16,
            remote: Remote,
        },
        In {
            ip: u8,
            port: u16,
            remote: (u8, u16),
        },
        Advance(u64),
        Expire,
        Reboot,
    }

    /// External ports, biased towards the ones the operations' internal ports map to (the
    /// preserved 1000/1001 and the bottom of the range), so inbound and hairpin operations
    /// often hit live mappings.
    fn arb_external_port() -> impl Strategy<Value = u16> {
        prop_oneof![3 => 1000u16..1004, 1 => 995u16..1045]
    }

    fn arb_remote() -> impl Strategy<Value = Remote> {
        prop_oneof![
            4 => (1u8..4, prop::sample::select(vec![3544u16, 3545, 40000])).prop_map(|(h, p)| Remote::Internet(h, p)),
            1 => (0usize..3, arb_external_port()).prop_map(|(i, p)| Remote::Own(i, p)),
        ]
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..5, prop::sample::select(vec![1000u16, 1001, 5000]), arb_remote())
                .prop_map(|(host, port, remote)| Op::Out { host, port, remote }),
            4 => (prop_oneof![3 => Just(1u8), 1 => 1u8..4], arb_external_port(), (1u8..4, prop::sample::select(vec![3544u16, 3545, 40000])))
                .prop_map(|(ip, port, remote)| Op::In { ip, port, remote }),
            2 => (0u64..90_000).prop_map(Op::Advance),
            1 => Just(Op::Expire),
            1 => Just(Op::Reboot),
        ]
    }

    fn arb_config() -> impl Strategy<Value = NatConfig> {
        (
            (0usize..3, 0usize..3, 0usize..3, 0usize..2, 1u8..=3),
            (1000u16..1010, 0u16..40, 1usize..30),
            (
                0.0f64..0.5,
                any::<bool>(),
                any::<bool>(),
                1u64..300,
                0u64..100,
                any::<u64>(),
            ),
        )
            .prop_map(
                |((m, f, p, pool, n), (lo, span, max), (loss, inr, hp, timeout, delay, seed))| {
                    NatConfig {
                        mapping: M::ALL[m],
                        filtering: F::ALL[f],
                        ports: PortAllocation::ALL[p],
                        pooling: Pooling::ALL[pool],
                        external_ips: (1..=n).map(|i| Ipv4Addr::new(203, 0, 113, i)).collect(),
                        timeout: secs(timeout),
                        inbound_refresh: inr,
                        hairpinning: hp,
                        loss,
                        delay: Duration::from_millis(delay),
                        port_range: lo..=lo + span,
                        max_mappings: max,
                        seed,
                    }
                },
            )
    }

    /// Configs `validate` would refuse; `Nat::new` must still not panic.
    fn arb_wild_config() -> impl Strategy<Value = NatConfig> {
        (
            arb_config(),
            prop::collection::vec(
                prop::sample::select(vec![ip("203.0.113.1"), ip("203.0.113.2")]),
                0..3,
            ),
            (any::<u16>(), any::<u16>()),
            prop_oneof![Just(f64::NAN), Just(-1.0), Just(2.0), 0.0f64..1.0],
            prop_oneof![
                Just(Duration::MAX),
                Just(Duration::ZERO),
                (1u64..100).prop_map(secs)
            ],
            0usize..4,
        )
            .prop_map(|(base, ips, (a, b), loss, timeout, max)| NatConfig {
                external_ips: ips,
                port_range: a.min(b).max(990)..=b.max(a).min(1050),
                loss,
                timeout,
                max_mappings: max,
                ..base
            })
    }

    /// Runs `ops` and records every observable output, with instants relative to the start
    /// so runs from different origins compare equal.
    fn run(config: &NatConfig, ops: &[Op]) -> (Vec<String>, NatCounters) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut nat = Nat::new(config.clone());
        let mut log = Vec::new();
        for op in ops {
            let entry = match op {
                Op::Out { host, port, remote } => {
                    let internal = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, *host), *port);
                    let remote = match *remote {
                        Remote::Internet(h, p) => {
                            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, h), p)
                        }
                        Remote::Own(i, p) => {
                            let ips = &config.external_ips;
                            let ip = ips
                                .get(i % ips.len().max(1))
                                .copied()
                                .unwrap_or(NatConfig::DEFAULT_EXTERNAL_IP);
                            SocketAddrV4::new(ip, p)
                        }
                    };
                    let result = nat.outbound(now, internal, remote);
                    if let Ok(Outbound::Forward(t)) = result {
                        assert_eq!(nat.mapping_for(internal, remote), Some(t.external));
                    }
                    format!("{result:?}")
                }
                Op::In {
                    ip,
                    port,
                    remote: (h, p),
                } => {
                    let external = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, *ip), *port);
                    let remote = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, *h), *p);
                    format!("{:?}", nat.inbound(now, external, remote))
                }
                Op::Advance(ms) => {
                    now += Duration::from_millis(*ms);
                    continue;
                }
                Op::Expire => {
                    nat.expire(now);
                    if let Some(next) = nat.poll_timeout() {
                        assert!(next > now);
                    }
                    "expire".to_owned()
                }
                Op::Reboot => {
                    nat.reboot();
                    "reboot".to_owned()
                }
            };
            log.push(format!(
                "{entry} mappings={} next={:?}",
                nat.mappings(),
                nat.poll_timeout().map(|t| t - t0)
            ));
            check_invariants(&nat);
        }
        (log, nat.counters().clone())
    }

    proptest! {
        #[test]
        fn random_operations_keep_invariants_and_are_deterministic(
            config in arb_config(),
            ops in prop::collection::vec(arb_op(), 0..200),
        ) {
            let first = run(&config, &ops);
            prop_assert_eq!(&first, &run(&config, &ops));
            prop_assert_eq!(first.1.dropped_total() + first.1.outbound_translated
                + first.1.inbound_translated + first.1.hairpinned,
                ops.iter().filter(|o| matches!(o, Op::Out { .. } | Op::In { .. })).count() as u64);
        }

        #[test]
        fn degenerate_configs_never_panic(
            config in arb_wild_config(),
            ops in prop::collection::vec(arb_op(), 0..100),
        ) {
            let first = run(&config, &ops);
            prop_assert_eq!(&first, &run(&config, &ops));
        }

        #[test]
        fn spec_round_trips(config in arb_config()) {
            prop_assert_eq!(NatConfig::from_spec(&config.to_spec()), Ok(config));
        }
    }
}
