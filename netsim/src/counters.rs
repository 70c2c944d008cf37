//! Drop reasons ([`NatDrop`]) and the counters drivers export as metrics ([`NatCounters`]).

#[cfg(doc)]
use crate::{Nat, NatConfig};

/// Why the NAT dropped a datagram. `Copy`, and [`NatDrop::as_str`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
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
/// `mappings_created == mappings_expired + mappings_flushed + mappings_removed +
/// Nat::mappings()` always holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatCounters {
    /// Mappings created.
    pub mappings_created: u64,
    /// Mappings removed because their timer ran out.
    pub mappings_expired: u64,
    /// Mappings forgotten by [`Nat::reboot`].
    pub mappings_flushed: u64,
    /// Mappings ended by the driver ([`Nat::remove_mapping`]).
    pub mappings_removed: u64,
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
    /// UPnP control requests to the IGD (add, get address, delete), refused ones included.
    pub upnp_requests: u64,
    /// UPnP requests the IGD refused (no IGD, conflict, table full, no such entry).
    pub upnp_refused: u64,
    /// Port mappings added (or renewed) through `AddPortMapping`.
    pub upnp_mappings_added: u64,
    /// Inbound (or hairpinned) datagrams delivered through a UPnP port mapping.
    pub upnp_inbound: u64,
    /// Outbound datagrams that found their mapping's port reserved toward their destination
    /// and got a mapping of their own ([`NatConfig::unsolicited_reserve`]).
    ///
    /// [`NatConfig::unsolicited_reserve`]: crate::NatConfig::unsolicited_reserve
    pub mappings_diverted: u64,
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
