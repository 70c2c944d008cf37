//! The simulated network of teredo-lab (DESIGN.md, mode 1): the NAT model, a pure,
//! deterministic state machine in the terms of RFC 4787, and [`sim::Sim`], the in-memory IPv4
//! Internet on virtual time where sans-IO Teredo clients (each behind a [`Nat`]), the server,
//! the relay and an IPv6 echo host exchange buffers. client-sim's lab, the core's tests and the
//! fuzz targets share both. The NAT model itself knows nothing of Teredo (no `teredo` types).
//!
//! One [`Nat`] is one NAT device: an inside (private endpoints) and an outside (the simulated
//! IPv4 Internet, one or more external addresses). It translates UDP datagrams only; payloads
//! never pass through it, so the same model serves the in-process lab (buffers in memory) and
//! client-sim's socket driver (one real UDP socket per external mapping).
//!
//! The knobs are RFC 4787's, independently: mapping behaviour (§4.1), filtering behaviour (§5),
//! port assignment (§4.2.1), IP address pooling (§4.1, REQ-2), mapping timer and refresh
//! direction (§4.3), hairpinning (§6), Linux conntrack's port reservation by refused inbound
//! datagrams ([`NatConfig::unsolicited_reserve`]), plus WAN impairment (loss, fixed delay) and table caps.
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
//! * A driver whose mappings are real sockets on an address other NATs share (client-sim's
//!   load generator) calls [`Nat::outbound_checked`]: the model offers each endpoint it would
//!   give a new mapping, and a [`PortCheck::Taken`] one is skipped like a port in use, so the
//!   preset's allocation behaviour is kept and every mapping has a socket. It closes a
//!   socket when [`Nat::receives_on`] turns false, and ends a mapping its client provably no
//!   longer needs with [`Nat::remove_mapping`] (not a NAT behaviour; what `conntrack -D` does).
//!
//! # Presets and what they are meant to match
//!
//! | [`NatPreset`] | mapping | filtering | ports | what it models | kernel ruleset (`testkit::nft::NatKind`) |
//! |---|---|---|---|---|---|
//! | `full-cone` | EIM | EIF | preserving | full cone: the only preset where a Teredo client's cone probe succeeds | `FullCone` (R4) |
//! | `restricted` | EIM | ADF | preserving | (address-)restricted cone: the client qualifies as restricted | `AddressRestricted` (R5) |
//! | `port-restricted` | EIM | APDF | preserving | the most common home NAT ([`NatConfig::new`]'s base) | `PortRestricted` (R1 + WAN input firewall) |
//! | `masquerade` | EIM | APDF | preserving, refused inbound reserves the port 30 s | bare Linux masquerade: cone-probing clients see "symmetric (port)" | `BareMasquerade` (R1 alone) |
//! | `symmetric` | APDM | APDF | random | symmetric: Windows reports "symmetric (port)" | `Symmetric` (R3) |
//! | `symmetric-address` | ADM | APDF | preserving, arbitrary pooling over ≥ 2 addresses | Windows reports "symmetric (address)" | none |
//!
//! All presets use the REQ-5 minimum timeout of 120 s, outbound-only refresh (Linux conntrack
//! also refreshes on inbound: [`NatConfig::inbound_refresh`]) and hairpinning.
//!
//! # Modules
//! * `behaviour`: the RFC 4787 kinds; `preset`: the named combinations; `config` and `spec`:
//!   [`NatConfig`] and its `key=value` syntax; `counters`: [`NatDrop`] and [`NatCounters`].
//! * `nat`: the [`Nat`] state machine; `table`: its mapping table; `ports`: pooling and port
//!   allocation; `loss`: the WAN link's loss.
//! * [`sim`]: the simulated network (event queue, nodes, routing, native IPv6 segment);
//!   [`pcap`]: its captures; [`packets`]: the ICMPv6 echo and UDP packets its hosts answer
//!   (client-sim's `ping` and load generator build theirs with them too).
//! * `fuzzing` (cargo feature `fuzzing`, hidden from the docs): the harness of the cargo-fuzz
//!   target `nat`.

mod behaviour;
mod config;
mod counters;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod igd;
mod leases;
mod loss;
mod nat;
pub mod packets;
pub mod pcap;
mod ports;
mod preset;
mod reserve;
pub mod sim;
mod spec;
mod table;
#[cfg(test)]
mod tests;

use std::ops::RangeInclusive;
use std::time::Duration;

pub use behaviour::{FilteringBehavior, MappingBehavior, Pooling, PortAllocation};
pub use config::{NatConfig, NatConfigError};
pub use counters::{NatCounters, NatDrop};
pub use igd::{UpnpError, MAX_LEASES};
pub use leases::Lease;
pub use nat::{Hairpin, InboundTranslation, Nat, Outbound, PortCheck, Translation};
pub use preset::NatPreset;
pub use spec::SPEC_KEYS;

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

/// Linux's `nf_conntrack_udp_timeout`: how long an unanswered UDP flow (and so a port
/// reservation, [`NatConfig::unsolicited_reserve`]) lives, renewed by each datagram.
pub const CONNTRACK_UDP_UNREPLIED: Duration = Duration::from_secs(30);
