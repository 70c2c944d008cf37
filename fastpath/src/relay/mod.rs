//! The Teredo relay's kernel fast path: an XDP program that forwards the packets of peers
//! the core ([`teredo::relay::Relay`]) trusts, in both directions (a client's datagram
//! decapsulated to native IPv6, a native packet encapsulated to the client's mapping), and
//! passes everything else to the kernel and the user-space relay, which stays the reference.
//!
//! The relay fills the peer map ([`XdpRelay::upsert_peer`]) from the core's trust events and
//! feeds the program's observations (the [`PeerEntry`] times) back to it.
//! `tests/relay_differential.rs` runs the same frames through the program and through the
//! core with the kernel's forwarding step and compares bytes and counters.

mod abi;
mod clock;
mod program;

pub use abi::{PeerEntry, RelayCounters, RelayFastPathConfig, RelayPassReason, MAX_TUN_MTU};
pub use clock::monotonic_ns;
pub use program::XdpRelay;
