//! The spec syntax of a [`NatConfig`]: `key=value` items joined by commas
//! (`mapping=apd,filtering=ei,timeout=20s,…`), parsed by [`NatConfig::from_spec`] and printed
//! by [`NatConfig::to_spec`] so that printing and parsing round-trip exactly.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use crate::{NatConfig, NatConfigError, NatPreset};

pub(crate) fn bad_value(key: &str, value: &str, expected: &'static str) -> NatConfigError {
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
    "upnp",
    "loss",
    "delay",
    "jitter",
    "port-range",
    "max-mappings",
    "unsolicited-reserve",
];

impl NatConfig {
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
    /// | `timeout`, `delay`, `jitter` | integer with unit `ns`, `us`, `ms`, `s`, `m`, `h` |
    /// | `inbound-refresh`, `hairpin`, `upnp` | `on`/`off`, `true`/`false`, `yes`/`no`, `1`/`0` |
    /// | `loss` | `0.0..=1.0` or a percentage `10%` |
    /// | `port-range` | `LOW-HIGH` or a single port |
    /// | `max-mappings` | positive integer |
    /// | `unsolicited-reserve` | `off` or a duration (`30s`, Linux conntrack's) |
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
                "jitter" => next.jitter = parse_duration(v).ok_or_else(|| duration_err(key, v))?,
                "inbound-refresh" => next.inbound_refresh = parse_bool(key, v)?,
                "hairpin" => next.hairpinning = parse_bool(key, v)?,
                "upnp" => next.upnp = parse_bool(key, v)?,
                "loss" => next.loss = parse_loss(v)?,
                "port-range" => next.port_range = parse_port_range(v)?,
                "unsolicited-reserve" => {
                    next.unsolicited_reserve =
                        match v.to_ascii_lowercase().as_str() {
                            "off" | "no" | "false" | "none" => None,
                            _ => Some(parse_duration(v).ok_or_else(|| {
                                bad_value(key, v, "off, or a duration such as 30s")
                            })?),
                        }
                }
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
             inbound-refresh={},hairpin={},upnp={},loss={},delay={},jitter={},port-range={}-{},max-mappings={},\
             unsolicited-reserve={}",
            self.mapping,
            self.filtering,
            self.ports,
            self.pooling,
            ips.join("+"),
            self.seed,
            format_duration(self.timeout),
            on_off(self.inbound_refresh),
            on_off(self.hairpinning),
            on_off(self.upnp),
            self.loss,
            format_duration(self.delay),
            format_duration(self.jitter),
            self.port_range.start(),
            self.port_range.end(),
            self.max_mappings,
            self.unsolicited_reserve
                .map_or_else(|| "off".to_owned(), format_duration),
        )
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
pub(crate) fn parse_duration(v: &str) -> Option<Duration> {
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
pub(crate) fn format_duration(d: Duration) -> String {
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
