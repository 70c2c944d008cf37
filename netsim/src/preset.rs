//! [`NatPreset`]: the classic NAT types as named combinations of the RFC 4787 behaviours.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::spec::bad_value;
use crate::{
    FilteringBehavior, MappingBehavior, NatConfig, NatConfigError, Pooling, PortAllocation,
    CONNTRACK_UDP_UNREPLIED,
};

/// The classic NAT types, by their kebab-case names (`none`, `full-cone`, `restricted`,
/// `port-restricted`, `masquerade`, `symmetric`, `symmetric-address`; outside
/// [`NatPreset::ALL`], `port-preserving-symmetric` and `sequential-symmetric`). All but
/// `symmetric` and `sequential-symmetric` preserve ports; all use the REQ-5 minimum timeout of 120 s, outbound-only refresh and
/// hairpinning (REQ-9). The doc of each variant says what a Teredo client (RFC 4380
/// qualification: optional cone probe, then restricted RS to the primary and the secondary
/// server address) sees behind it, and which kernel NAT it matches: the nftables rulesets of
/// the test kit (`testkit::nft::NatKind`, NAT.md §9 recipes R1–R5), whose routers the
/// end-to-end test `nat_fidelity` runs every client profile behind, cell by cell against this
/// model. Differences that no Teredo qualification sees: the kernel's timeouts are 30 s
/// (unanswered) / 120 s (answered) and refreshed both ways, its random ports are per flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NatPreset {
    /// No NAT: the client's own address is global. [`NatPreset::config`] returns `None`; the
    /// lab bypasses the model. A Teredo client reports NAT type none (its mapping equals its
    /// socket address); XP's cone probe succeeds, so its address has C=1. Kernel: a host on
    /// the Internet segment, no router.
    None,
    /// Full cone, EIM + EIF. The only preset where the cone probe succeeds (the RA comes from
    /// the server's other address, which only endpoint-independent filtering lets in): the
    /// client qualifies with the cone flag and peers can reach it without bubbles. The
    /// secondary-address check sees the same mapping. Kernel: `NatKind::FullCone`, R4
    /// (masquerade + a dynamic map learning external port → internal endpoint + DNAT).
    FullCone,
    /// (Address-)restricted cone, EIM + ADF. The cone probe times out; both server addresses
    /// report the same mapping, so the client qualifies as restricted (C=0). A peer gets in
    /// once the client has sent anything (a bubble) to the peer's IP. Kernel:
    /// `NatKind::AddressRestricted`, R5 (R4 + a permit set; refused datagrams are dropped in
    /// FORWARD, before conntrack confirms them, so they reserve nothing).
    Restricted,
    /// Port-restricted cone, EIM + APDF. Like `restricted`, but a peer gets in only from the
    /// exact IP:port the client sent to; Teredo's direct bubbles still work because the
    /// mapping itself is endpoint-independent. Kernel: `NatKind::PortRestricted`, R1
    /// (`masquerade`) **plus a stateful WAN input firewall** (`iifname wan ct state new
    /// drop`, what home routers have): refused datagrams die before conntrack confirms them.
    PortRestricted,
    /// A bare Linux masquerade: `port-restricted` plus the conntrack trap
    /// ([`NatConfig::unsolicited_reserve`] = 30 s). The cone probe's RA, sent from the
    /// server's secondary address, is refused and reserves the mapping's port toward the
    /// secondary, so the secondary-address check that follows gets another port: a client
    /// that runs the cone probe (the xp-sp2 profile; any profile with `cone_probe` set) sees
    /// "symmetric (port)" (XP goes offline, "client behind symmetric NAT"); the others see
    /// `restricted`. After that diversion every new flow of the client leaves from the new
    /// port (Linux reuses the newest mapping of a socket), so a client with RFC 6081
    /// symmetric NAT support and the cone probe on reaches relays and peers from a mapping
    /// other than its address's: a strict relay refuses it, as behind `symmetric`. Kernel:
    /// `NatKind::BareMasquerade`, R1 alone (`masquerade`, no firewall: common on Linux routers
    /// and in containers).
    Masquerade,
    /// Symmetric, APDM + APDF with random ports. The cone probe times out and the
    /// secondary-address check sees a different mapping (another port): an RFC 4380 client
    /// declares "symmetric NAT" and stops (Windows: "symmetric (port)"); Miredo 1.2, which skips
    /// that check, qualifies with a mapping valid towards the primary server address only.
    /// Peers need RFC 6081 symmetric NAT support. Kernel: `NatKind::Symmetric`, R3
    /// (`masquerade random,fully-random`; it reserves ports like R1 too, unseen here since
    /// every destination gets its own random port anyway).
    Symmetric,
    /// Symmetric (address), ADM + APDF with arbitrary pooling over **at least 2** external
    /// addresses ([`NatPreset::config`] refuses fewer). The two server addresses differ, so
    /// the secondary-address check sees a different mapping, on another external address
    /// (Windows: "symmetric (address)"); the cone probe times out. Kernel: no ruleset of the
    /// test kit (it would need a router with two WAN addresses).
    SymmetricAddress,
    /// Port-preserving symmetric (RFC 6081 §3.3), APDM + APDF with port preservation: each
    /// destination gets its own mapping, on the client's own port when that is still free
    /// on the external address. The first mapping (to the primary server address) keeps the
    /// client's port and the secondary-address check sees another one: "symmetric (port)",
    /// with the mapped port equal to the local one (RFC 6081's Port-Preserving NAT flag).
    /// A port-preserving client then reaches peers through a fresh local port, which this
    /// NAT preserves. Not in [`NatPreset::ALL`] (see [`NatPreset::PREDICTABLE`]). Kernel: no
    /// ruleset of the test kit.
    PortPreservingSymmetric,
    /// Sequential port-symmetric (RFC 6081 §3.4), APDM + APDF with sequential ports: each
    /// new mapping takes the next free port after the previous one. The secondary-address
    /// check sees the next port: "symmetric (port)", not port-preserving; a client with the
    /// sequential extension predicts the port of a fresh mapping from two RSs around it (its
    /// echo test). Not in [`NatPreset::ALL`] (see [`NatPreset::PREDICTABLE`]). Kernel: no
    /// ruleset of the test kit.
    SequentialSymmetric,
}

impl NatPreset {
    /// Every preset, for `--help` texts, scenario matrices and exhaustive tests.
    pub const ALL: &'static [Self] = &[
        Self::None,
        Self::FullCone,
        Self::Restricted,
        Self::PortRestricted,
        Self::Masquerade,
        Self::Symmetric,
        Self::SymmetricAddress,
    ];

    /// The symmetric NATs whose ports a client can predict (RFC 6081 Figure 1's
    /// "port-preserving" and "sequential" columns), usable by name (`FromStr`) and in the
    /// connectivity lab's rows, but kept out of [`Self::ALL`]'s scenario matrix and kernel
    /// comparisons.
    pub const PREDICTABLE: &'static [Self] =
        &[Self::PortPreservingSymmetric, Self::SequentialSymmetric];

    /// The kebab-case name, as accepted by `FromStr` and printed by `Display`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::FullCone => "full-cone",
            Self::Restricted => "restricted",
            Self::PortRestricted => "port-restricted",
            Self::Masquerade => "masquerade",
            Self::Symmetric => "symmetric",
            Self::SymmetricAddress => "symmetric-address",
            Self::PortPreservingSymmetric => "port-preserving-symmetric",
            Self::SequentialSymmetric => "sequential-symmetric",
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
            Self::PortRestricted | Self::Masquerade => (
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
            Self::PortPreservingSymmetric => (
                M::AddressAndPortDependent,
                F::AddressAndPortDependent,
                PortAllocation::Preserving,
                Pooling::Paired,
            ),
            Self::SequentialSymmetric => (
                M::AddressAndPortDependent,
                F::AddressAndPortDependent,
                PortAllocation::Sequential,
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
            unsolicited_reserve: (self == Self::Masquerade).then_some(CONNTRACK_UDP_UNREPLIED),
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
            .chain(Self::PREDICTABLE)
            .copied()
            .find(|p| p.as_str() == lower)
            .ok_or_else(|| {
                bad_value(
                    "preset",
                    s,
                    "none, full-cone, restricted, port-restricted, masquerade, symmetric, \
                     symmetric-address, port-preserving-symmetric or sequential-symmetric",
                )
            })
    }
}
