//! [`NatPreset`]: the classic NAT types as named combinations of the RFC 4787 behaviours.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::spec::bad_value;
use crate::{
    FilteringBehavior, MappingBehavior, NatConfig, NatConfigError, Pooling, PortAllocation,
};

/// The classic NAT types, by their kebab-case names (`none`, `full-cone`, `restricted`,
/// `port-restricted`, `symmetric`, `symmetric-address`). All but `symmetric` preserve ports;
/// all use the REQ-5 minimum timeout of 120 s, outbound-only refresh and hairpinning (REQ-9).
/// The doc of each variant says what a Teredo client (RFC 4380 qualification: optional cone
/// probe, then restricted RS to the primary and the secondary server address) sees behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
