//! The RFC 4787 behaviour kinds a NAT is built from: mapping (§4.1), filtering (§5), port
//! assignment (§4.2.1) and IP address pooling (§4.1). Each has a short spec name and parses
//! from it (see [`NatConfig::from_spec`](crate::NatConfig::from_spec)).

use std::fmt;
use std::str::FromStr;

use crate::config::NatConfigError;
use crate::spec::bad_value;
#[cfg(doc)]
use crate::NatConfig;

/// Mapping behaviour (RFC 4787 §4.1): when does an internal endpoint's new session reuse an
/// existing mapping? This decides whether a Teredo client sees one mapping for both server
/// addresses (EIM) or a fresh one per destination (the "symmetric" NATs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MappingBehavior {
    /// Same external endpoint for every remote (REQ-1; spec name `ei`).
    EndpointIndependent,
    /// Reused only towards the same remote IP, whatever its port (spec name `ad`).
    AddressDependent,
    /// Reused only towards the same remote IP:port (spec name `apd`).
    AddressAndPortDependent,
}

/// Filtering behaviour (RFC 4787 §5): which unsolicited inbound datagrams reach a mapping?
/// This decides whether a Teredo client's cone probe (an answer from the server's *other*
/// address) gets through, and whether peers need a bubble from the client first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FilteringBehavior {
    /// Anyone may send to a live mapping (spec name `ei`).
    EndpointIndependent,
    /// Only remote IPs the mapping has sent to, from any port (spec name `ad`).
    AddressDependent,
    /// Only remote IP:ports the mapping has sent to (spec name `apd`).
    AddressAndPortDependent,
}

/// The three RFC 4787 behaviour names are shared by mapping and filtering: one set of impls
/// for both (`ALL`, `as_str`, `Display`, `FromStr` with the short and long names).
macro_rules! rfc4787_behavior {
    ($ty:ident, $what:literal) => {
        impl $ty {
            /// Every behaviour, for exhaustive tests and help texts.
            pub const ALL: &'static [Self] = &[
                Self::EndpointIndependent,
                Self::AddressDependent,
                Self::AddressAndPortDependent,
            ];

            /// The short spec name (`ei`, `ad`, `apd`), as accepted by
            /// [`NatConfig::from_spec`].
            pub fn as_str(self) -> &'static str {
                match self {
                    Self::EndpointIndependent => "ei",
                    Self::AddressDependent => "ad",
                    Self::AddressAndPortDependent => "apd",
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = NatConfigError;

            /// Accepts the short names and the long kebab-case ones (`endpoint-independent`,
            /// `address-dependent`, `address-and-port-dependent`).
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match parse_behavior(s) {
                    Some(0) => Ok(Self::EndpointIndependent),
                    Some(1) => Ok(Self::AddressDependent),
                    Some(_) => Ok(Self::AddressAndPortDependent),
                    None => Err(bad_value($what, s, BEHAVIOR_EXPECTED)),
                }
            }
        }
    };
}

rfc4787_behavior!(MappingBehavior, "mapping");
rfc4787_behavior!(FilteringBehavior, "filtering");

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
#[non_exhaustive]
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
#[non_exhaustive]
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
