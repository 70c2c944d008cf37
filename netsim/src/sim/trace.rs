//! What the simulated Internet carries and records: a datagram, who sent it, the log of every
//! datagram put on the Internet, and the network's own counters.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::Duration;

#[cfg(doc)]
use super::{Sim, MAX_INJECTED_PER_DATAGRAM};

/// One UDP datagram on the simulated Internet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Source address and port as the receiver sees them.
    pub from: SocketAddrV4,
    /// Destination.
    pub to: SocketAddrV4,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// Who put a datagram on the Internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sender {
    /// The server (a router advertisement or a relayed packet).
    Server,
    /// Client `n` (through its NAT, if any).
    Client(usize),
    /// The relay (bubbles and packets for clients).
    Relay,
    /// An observer's injection.
    Injected,
}

/// One datagram of the Internet log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// Virtual time it was sent, since the start.
    pub at: Duration,
    /// Who sent it.
    pub sender: Sender,
    /// Source on the wire.
    pub from: SocketAddrV4,
    /// Destination.
    pub to: SocketAddrV4,
    /// UDP payload length.
    pub len: usize,
}

/// Counters of the simulated Internet itself (the NATs and the nodes count their own).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimCounters {
    /// Datagrams put on the Internet.
    pub datagrams: u64,
    /// Datagrams to an address nobody has.
    pub no_route: u64,
    /// Datagrams to the server's addresses while it is down, or to another port.
    pub server_unreachable: u64,
    /// Bubbles the server relayed to a Teredo client (the indirect bubbles RFC 6081 §5.7
    /// Server Load Reduction spares it).
    pub server_bubbles_relayed: u64,
    /// Datagrams the server refused, per drop reason.
    pub server_dropped: BTreeMap<&'static str, u64>,
    /// Packets the server handed to its native IPv6 side while there is no native segment.
    pub native_discarded: u64,
    /// Packets put on the native IPv6 segment (by the server, the relay, the echo host).
    pub native_packets: u64,
    /// Native packets for an address nobody has (neither the echo host nor 2001::/32).
    pub native_no_route: u64,
    /// Observer injections refused because they exceeded [`MAX_INJECTED_PER_DATAGRAM`] or
    /// 65,507 bytes.
    pub injections_refused: u64,
    /// Datagrams that arrived after one put on the Internet later than them (jitter).
    pub reordered: u64,
    /// Server restarts ([`Sim::restart_server`]).
    pub server_restarts: u64,
    /// Relay restarts ([`Sim::replace_relay`]).
    pub relay_restarts: u64,
    /// Unicast datagrams between two clients on one LAN (behind the same NAT), which never
    /// touch the NAT.
    pub lan_unicast: u64,
    /// Copies of local discovery datagrams (224.0.0.253) delivered on a LAN.
    pub lan_multicast: u64,
    /// Datagrams to the discovery group from a client with no LAN neighbour or none
    /// behind a NAT: link-scope, so they go nowhere.
    pub multicast_dropped: u64,
    /// Datagrams the NAT hairpinned from one client to another behind it.
    pub hairpinned: u64,
    /// Datagrams a NAT (or the Internet) delivered to a client's IPv4 address on a port the
    /// client does not listen on (an RFC 6081 random port it closed, or never opened).
    pub no_listener: u64,
}
