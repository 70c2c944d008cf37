//! The nodes of the simulated network besides the server: a client (with its NAT), the echo
//! host on the native segment, and the relay with its IPv4 address.

use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::Duration;

use teredo::client::{Client, Event};
use teredo::io::Local;
use teredo::relay::Relay;

#[cfg(doc)]
use super::{Sim, MAX_DELIVERED_LOG};
#[cfg(doc)]
use crate::packets;
use crate::Nat;

/// A client on the simulated network.
#[derive(Debug)]
pub struct ClientNode {
    /// The state machine.
    pub client: Client,
    /// Its NAT; `None` = the client's own address is on the Internet.
    pub nat: Option<Nat>,
    /// Every event the client emitted, with its virtual time.
    pub events: Vec<(Duration, Event)>,
    /// Packets the client delivered to its application, with their virtual time (the first
    /// [`MAX_DELIVERED_LOG`]).
    pub delivered: Vec<(Duration, Vec<u8>)>,
    /// Deliveries beyond [`MAX_DELIVERED_LOG`] (not logged).
    pub delivered_unlogged: u64,
    /// Answer ICMPv6 echo requests delivered to the client (as a host's stack would).
    pub echo_responder: bool,
    /// The client whose NAT this one shares (same LAN: [`Sim::add_client_behind`]); its own
    /// `nat` is then `None`.
    pub lan_of: Option<usize>,
}

/// The host on the native segment: answers ICMPv6 echo requests and UDP datagrams to
/// [`packets::UDP_ECHO_PORT`] sent to its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoHost {
    /// Its IPv6 address.
    pub addr: Ipv6Addr,
    /// Answering (a host that is down receives and counts, but answers nothing).
    pub up: bool,
    /// Echo requests received.
    pub echo_requests: u64,
    /// UDP datagrams received.
    pub udp_datagrams: u64,
    /// Packets answered.
    pub answered: u64,
    /// Echo replies received (answers to [`Sim::send_native`] echo requests).
    pub echo_replies: u64,
}

impl EchoHost {
    /// A host at `addr`, up.
    pub fn new(addr: Ipv6Addr) -> Self {
        Self {
            addr,
            up: true,
            echo_requests: 0,
            udp_datagrams: 0,
            answered: 0,
            echo_replies: 0,
        }
    }
}

/// The relay and its address on the IPv4 Internet.
pub(super) struct RelayNode {
    pub(super) relay: Relay,
    pub(super) addr: SocketAddrV4,
}

impl ClientNode {
    /// The client's own socket address (private behind a NAT).
    pub fn local(&self) -> SocketAddrV4 {
        self.client.local()
    }

    /// The client's socket on local `port`: its primary one, or an extra port it listens on
    /// (RFC 6081 random ports, [`Client::extra_ports`]).
    pub fn socket(&self, port: u16) -> Option<Local> {
        if port == self.local().port() {
            Some(Local::Primary)
        } else if self.client.listens_on(port) {
            Some(Local::Port(port))
        } else {
            None
        }
    }

    /// The local address a datagram from socket `local` leaves from.
    pub fn source(&self, local: Local) -> SocketAddrV4 {
        match local {
            Local::Port(p) => SocketAddrV4::new(*self.local().ip(), p),
            Local::Primary | Local::Secondary => self.local(),
        }
    }
}
