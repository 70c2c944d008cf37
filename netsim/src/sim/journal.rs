//! The journal ([`Sim::enable_journal`]): every datagram's whole path — who sent it, its
//! source before and after the NAT, whether the NAT opened a mapping for it, who received it
//! and what became of it — plus the network's own notes (mappings expired, server down).
//! What a message sequence chart is drawn from; off by default because it keeps every payload.

use std::net::SocketAddrV4;
use std::time::Duration;

#[cfg(doc)]
use super::Sim;

/// A host of the simulated network, as a lane of a sequence chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// Client `n` itself (its socket, inside its NAT if it has one).
    Client(usize),
    /// The NAT of client `n`.
    Nat(usize),
    /// The server's primary address.
    ServerPrimary,
    /// The server's secondary address.
    ServerSecondary,
    /// The relay (IPv4 side and native side alike).
    Relay,
    /// The echo host on the native IPv6 segment.
    NativeHost,
    /// An observer's injections (an on-path attacker).
    Injected,
    /// Nobody: a datagram to an address no node has.
    Nowhere,
}

/// What became of a datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Still queued when the journal was read.
    InFlight,
    /// Handed to `node` and accepted by it.
    Delivered {
        /// Virtual arrival time.
        at: Duration,
        /// Who took it.
        node: Node,
        /// The destination inside the receiver's NAT (after translation), if it has one.
        inner_to: Option<SocketAddrV4>,
    },
    /// Dropped by `node` (a NAT's filter, a server or relay refusal, a client's check).
    Dropped {
        /// Virtual time of the drop.
        at: Duration,
        /// Who dropped it.
        node: Node,
        /// Why, in words (a NAT drop or the core's drop reason).
        reason: String,
    },
}

/// One datagram on the IPv4 Internet, or one packet on the native IPv6 segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// Virtual send time.
    pub at: Duration,
    /// Who sent it.
    pub from_node: Node,
    /// The sender's own source inside its NAT (a client behind a NAT).
    pub inner_from: Option<SocketAddrV4>,
    /// Source on the wire (after the NAT); `None` on the native segment, or when the
    /// sender's NAT dropped it on the way out.
    pub from: Option<SocketAddrV4>,
    /// Destination on the wire; `None` on the native segment.
    pub to: Option<SocketAddrV4>,
    /// The sender's NAT created a mapping for it.
    pub new_mapping: bool,
    /// On the native IPv6 segment rather than over UDP/IPv4.
    pub native: bool,
    /// The UDP payload, or on the native segment the IPv6 packet.
    pub payload: Vec<u8>,
    /// What became of it.
    pub fate: Fate,
}

/// One entry of the journal, in the order things happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalEntry {
    /// A datagram or native packet.
    Hop(Hop),
    /// Something the network itself did to `node` at `at` (a mapping expired, a restart).
    Note {
        /// Virtual time.
        at: Duration,
        /// The host concerned.
        node: Node,
        /// What happened.
        text: String,
    },
}

/// How a client's datagram left: its source inside the NAT, and whether the NAT opened a
/// mapping for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Via {
    pub(super) inner: Option<SocketAddrV4>,
    pub(super) new_mapping: bool,
}
