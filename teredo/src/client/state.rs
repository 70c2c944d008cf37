//! Where the client is: state, NAT type, probe phase, error, and the `show state` snapshot.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::Duration;

use super::*;

/// Which RS the client is waiting on while qualifying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProbePhase {
    /// Cone RS to the primary (RFC 4380 phase 1).
    Cone,
    /// Restricted RS to the primary.
    Restricted,
    /// Restricted RS to the secondary address (symmetric-NAT check).
    Secondary,
}

impl ProbePhase {
    /// Short snake_case label: `cone`, `restricted`, `secondary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cone => "cone",
            Self::Restricted => "restricted",
            Self::Secondary => "secondary",
        }
    }
}

/// The client's state, as `netsh interface teredo show state` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Not usable: failed, or disabled by the managed-network rule ([`Client::error`] says why).
    Offline,
    /// Qualifying.
    Probe(ProbePhase),
    /// Qualified: [`Client::address`] is usable.
    Qualified,
    /// Windows 7: idle, not refreshing, no address until woken.
    Dormant,
}

impl State {
    /// snake_case metric label: `offline`, `probe_cone`, `probe_restricted`,
    /// `probe_secondary`, `qualified`, `dormant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offline => "offline",
            Self::Probe(ProbePhase::Cone) => "probe_cone",
            Self::Probe(ProbePhase::Restricted) => "probe_restricted",
            Self::Probe(ProbePhase::Secondary) => "probe_secondary",
            Self::Qualified => "qualified",
            Self::Dormant => "dormant",
        }
    }
}

/// Windows spelling: `offline`, `qualified`, `dormant`, and for the probes
/// `probe (primary server)` (observed on Windows for the restricted phase, TEREDO.md §12),
/// `probe (secondary server)` and `probe (cone)` (not observed; same pattern).
impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Offline => "offline",
            Self::Probe(ProbePhase::Cone) => "probe (cone)",
            Self::Probe(ProbePhase::Restricted) => "probe (primary server)",
            Self::Probe(ProbePhase::Secondary) => "probe (secondary server)",
            Self::Qualified => "qualified",
            Self::Dormant => "dormant",
        })
    }
}

/// What the client concluded about its NAT.
///
/// Without a cone probe (rfc5991, miredo) a cone NAT is reported as `restricted`; without
/// a secondary check (miredo) a symmetric NAT is never detected and is reported as
/// `restricted` too — the client reports what it can observe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NatType {
    /// Not determined (yet).
    #[default]
    Unknown,
    /// No NAT: the mapping is the client's own socket address.
    None,
    /// Cone NAT: the cone probe's RA came in from the other server address.
    Cone,
    /// Restricted or port-restricted cone NAT (or an undetected cone/symmetric one).
    Restricted,
    /// Symmetric NAT, same external IPv4 but different ports per destination.
    SymmetricPort,
    /// Symmetric NAT with different external IPv4 addresses per destination.
    SymmetricAddress,
}

impl NatType {
    /// snake_case metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::None => "none",
            Self::Cone => "cone",
            Self::Restricted => "restricted",
            Self::SymmetricPort => "symmetric_port",
            Self::SymmetricAddress => "symmetric_address",
        }
    }

    /// True for both symmetric kinds.
    pub fn is_symmetric(self) -> bool {
        matches!(self, Self::SymmetricPort | Self::SymmetricAddress)
    }
}

/// Windows spelling: `none`, `cone`, `restricted`, `symmetric (port)`,
/// `symmetric (address)`, `unknown`.
impl fmt::Display for NatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unknown => "unknown",
            Self::None => "none",
            Self::Cone => "cone",
            Self::Restricted => "restricted",
            Self::SymmetricPort => "symmetric (port)",
            Self::SymmetricAddress => "symmetric (address)",
        })
    }
}

/// Why the client is offline. The messages are Windows' `Error :` lines (TEREDO.md §12;
/// exact English wording \[UNVERIFIED\]); the secondary one is this lab's wording.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The secondary check found a symmetric NAT and symmetric support is off.
    #[error("client behind symmetric NAT")]
    SymmetricNat,
    /// No valid RA from the primary after the retries (qualification or refresh).
    #[error("cannot reach primary Teredo server over UDP")]
    PrimaryUnreachable,
    /// No valid RA from the secondary address after the retries.
    #[error("cannot reach secondary Teredo server over UDP")]
    SecondaryUnreachable,
    /// Windows' managed-network rule (RFC 5991 App. A) with client type `client`.
    #[error("client is in a managed network")]
    ManagedNetwork,
}

impl ClientError {
    /// snake_case metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SymmetricNat => "symmetric_nat",
            Self::PrimaryUnreachable => "primary_unreachable",
            Self::SecondaryUnreachable => "secondary_unreachable",
            Self::ManagedNetwork => "managed_network",
        }
    }
}

/// A snapshot of what `netsh interface teredo show state` shows; its `Display` prints it in
/// that layout (lines without a value are left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// `Type`: the client type.
    pub client_type: ClientType,
    /// `Server Name`: the configured name, or the primary address.
    pub server_name: String,
    /// `Client Refresh Interval`.
    pub refresh_interval: Duration,
    /// `Client Port`: the local UDP port.
    pub client_port: u16,
    /// `State`.
    pub state: State,
    /// `Network`: managed or unmanaged.
    pub managed_network: bool,
    /// `NAT`.
    pub nat: NatType,
    /// `NAT Special Behaviour` UPnP (RFC 6081 §5.3): not implemented, always false.
    pub upnp: bool,
    /// `NAT Special Behaviour` PortPreserving: mapped port == local port (RFC 6081 §5.4).
    pub port_preserving: Option<bool>,
    /// `Local Mapping`: the client's socket address.
    pub local_mapping: SocketAddrV4,
    /// `External NAT Mapping`: the mapping the server saw.
    pub external_mapping: Option<SocketAddrV4>,
    /// `Error`.
    pub error: Option<ClientError>,
    /// The Teredo address (netsh shows it under `ipconfig`).
    pub address: Option<Ipv6Addr>,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "Yes" } else { "No" };
        writeln!(f, "Type                    : {}", self.client_type)?;
        writeln!(f, "Server Name             : {}", self.server_name)?;
        writeln!(
            f,
            "Client Refresh Interval : {} seconds",
            self.refresh_interval.as_secs()
        )?;
        writeln!(f, "Client Port             : {}", self.client_port)?;
        writeln!(f, "State                   : {}", self.state)?;
        writeln!(
            f,
            "Network                 : {}",
            if self.managed_network {
                "managed"
            } else {
                "unmanaged"
            }
        )?;
        writeln!(f, "NAT                     : {}", self.nat)?;
        if let Some(pp) = self.port_preserving {
            writeln!(
                f,
                "NAT Special Behaviour   : UPNP: {}, PortPreserving: {}",
                yes_no(self.upnp),
                yes_no(pp)
            )?;
        }
        writeln!(f, "Local Mapping           : {}", self.local_mapping)?;
        if let Some(m) = self.external_mapping {
            writeln!(f, "External NAT Mapping    : {m}")?;
        }
        if let Some(a) = self.address {
            writeln!(f, "Address                 : {a}")?;
        }
        if let Some(e) = self.error {
            writeln!(f, "Error                   : {e}")?;
        }
        Ok(())
    }
}
