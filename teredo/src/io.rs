//! The one vocabulary the three cores (server, relay, client) speak to their drivers, in the
//! style of quinn-proto: inputs go in (`handle_udp`, `handle_ipv6`, `handle_timeout`), and
//! everything comes out through `poll_output` (an [`Output`]), `poll_timeout` and
//! `poll_event`. An [`Output`] says where the bytes go and what they are ([`Kind`]), so a
//! driver never parses what a core emitted: it picks a socket, counts by kind and sends.

use std::net::SocketAddrV4;
use std::time::Duration;

/// Which of a component's UDP sockets a datagram arrived on or leaves from. A server has
/// two (its primary and secondary addresses: the cone test depends on which one answers); a
/// relay has one, [`Local::Primary`]; a client has its primary socket and, with the RFC 6081
/// port-preserving or sequential port-symmetric extension (§5.4, §5.5), extra sockets on
/// random local ports ([`Local::Port`]). Server and relay drivers never see `Port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Local {
    /// The primary address (for a server, the one embedded in the prefix).
    Primary,
    /// The server's secondary address (conventionally primary + 1).
    Secondary,
    /// A client's extra socket on this local port, same IPv4 as its primary socket (an RFC
    /// 6081 "random port"; the client says which ones are open:
    /// [`Client::extra_ports`](crate::client::Client::extra_ports)). Only clients use it.
    Port(u16),
}

impl Local {
    /// The other address: where a server answers a cone RS from. A client's extra port has
    /// no other and is returned unchanged.
    pub fn other(self) -> Self {
        match self {
            Self::Primary => Self::Secondary,
            Self::Secondary => Self::Primary,
            Self::Port(p) => Self::Port(p),
        }
    }

    /// Index of a server's socket (0 primary, 1 secondary), for drivers that keep them in an
    /// array. A client's extra port ([`Local::Port`], never given to a server or relay)
    /// maps to 0, so that an index is always in bounds.
    pub fn index(self) -> usize {
        match self {
            Self::Primary | Self::Port(_) => 0,
            Self::Secondary => 1,
        }
    }

    /// Metric label (`port` for every extra port of a client).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Secondary => "secondary",
            Self::Port(_) => "port",
        }
    }
}

/// What an output is, so drivers count and log without looking at its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// An IPv6 packet carried for a host: encapsulated to a client, decapsulated to the native
    /// side, or delivered by a client to its host.
    Data,
    /// A bubble (IPv6 header alone, next header 59) sent straight to a peer's mapping.
    Bubble,
    /// A bubble sent through the peer's Teredo server, which relays it (RFC 4380 §5.2.4).
    IndirectBubble,
    /// A router solicitation (client qualification, RFC 4380 §5.2.1).
    RouterSolicitation,
    /// A router advertisement (the server's answer to an RS, RFC 4380 §5.3.2).
    RouterAdvertisement,
    /// An ICMPv6 echo request (a client's connectivity test, RFC 4380 §5.2.9).
    EchoRequest,
    /// An ICMPv6 message relayed as it came (the server's case 2, RFC 4380 §5.3.1).
    Icmpv6,
    /// An ICMPv6 error the component generated itself (e.g. address unreachable).
    Icmpv6Error,
    /// A local discovery bubble (RFC 4380 §5.2.8) to the link-scope multicast group
    /// 224.0.0.253:3544: the driver sends it with IPv4 TTL 1, and it never leaves the link.
    DiscoveryBubble,
    /// A request to the NAT's UPnP gateway ([`Output::Upnp`]; a client, RFC 6081 §5.3).
    UpnpRequest,
}

impl Kind {
    /// Every kind, so drivers can zero-initialise one metric series per label.
    pub const ALL: &'static [Self] = &[
        Self::Data,
        Self::Bubble,
        Self::IndirectBubble,
        Self::RouterSolicitation,
        Self::RouterAdvertisement,
        Self::EchoRequest,
        Self::Icmpv6,
        Self::Icmpv6Error,
        Self::DiscoveryBubble,
        Self::UpnpRequest,
    ];

    /// snake_case metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Bubble => "bubble",
            Self::IndirectBubble => "indirect_bubble",
            Self::RouterSolicitation => "router_solicitation",
            Self::RouterAdvertisement => "router_advertisement",
            Self::EchoRequest => "echo_request",
            Self::Icmpv6 => "icmpv6",
            Self::Icmpv6Error => "icmpv6_error",
            Self::DiscoveryBubble => "discovery_bubble",
            Self::UpnpRequest => "upnp_request",
        }
    }

    /// A bubble of either kind.
    pub fn is_bubble(self) -> bool {
        matches!(
            self,
            Self::Bubble | Self::IndirectBubble | Self::DiscoveryBubble
        )
    }
}

/// Something for the driver to send. `poll_output(&mut buf)` wrote its bytes to `buf[..len]`;
/// an in-place result ([`InPlace`]) points into the caller's own input buffer instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// A UDP datagram: send `len` bytes from the socket `local` to `to`.
    Udp {
        /// The socket to send from.
        local: Local,
        /// Destination.
        to: SocketAddrV4,
        /// Length of the datagram.
        len: usize,
        /// What it is.
        kind: Kind,
    },
    /// An IPv6 packet for the native side (server, relay) or the host (client).
    Ipv6 {
        /// Length of the packet.
        len: usize,
        /// What it is.
        kind: Kind,
    },
    /// A call on the NAT's UPnP Internet Gateway Device (a client's RFC 6081 §5.3
    /// extension). No bytes: `buf` is untouched, `len()` is 0. A driver that can reach an
    /// IGD performs it *before* sending the outputs that follow (the first RS must find the
    /// port mapping in place) and gives the answer back to the core
    /// (`Client::handle_upnp`); one that cannot may ignore it, and the core then works
    /// without the extension.
    Upnp(UpnpRequest),
}

/// What a core asks of a UPnP IGD (UPnP WANIPConnection actions, as RFC 6081 §5.3.3 and
/// §5.3.5.1 call them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UpnpRequest {
    /// `AddPortMapping` (NewRemoteHost "", NewExternalPort = NewInternalPort =
    /// `internal.port()`, UDP, NewInternalClient `internal`, enabled, "TEREDO", `lease`; a
    /// zero lease means "until deleted"), then, if it succeeded, `GetExternalIPAddress`.
    AddPortMapping {
        /// The client's own socket address.
        internal: SocketAddrV4,
        /// NewLeaseDuration.
        lease: Duration,
    },
    /// `DeletePortMapping` (NewRemoteHost "", NewExternalPort, UDP).
    DeletePortMapping {
        /// The external port to unmap.
        external_port: u16,
        /// The client's own socket address (which host asks).
        internal: SocketAddrV4,
    },
}

impl Output {
    /// The length of the bytes to send.
    pub fn len(&self) -> usize {
        match *self {
            Self::Udp { len, .. } | Self::Ipv6 { len, .. } => len,
            Self::Upnp(_) => 0,
        }
    }

    /// Whether there are no bytes (only [`Output::Upnp`], which carries none).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What it is.
    pub fn kind(&self) -> Kind {
        match *self {
            Self::Udp { kind, .. } | Self::Ipv6 { kind, .. } => kind,
            Self::Upnp(_) => Kind::UpnpRequest,
        }
    }
}

/// Zero-copy result of an input: send `input[offset..offset + output.len()]` of the buffer the
/// caller passed in, as `output` says. Only the relay's forwarding for trusted peers emits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InPlace {
    /// Where the bytes start in the input buffer.
    pub offset: usize,
    /// Where they go and what they are.
    pub output: Output,
}

impl InPlace {
    /// The bytes to send, out of the input buffer this result came from.
    pub fn bytes<'a>(&self, input: &'a [u8]) -> &'a [u8] {
        &input[self.offset..self.offset + self.output.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for k in Kind::ALL {
            let s = k.as_str();
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{s}"
            );
            assert!(seen.insert(s), "duplicate label {s}");
        }
    }

    #[test]
    fn in_place_points_into_the_input() {
        let input = [0u8, 1, 2, 3, 4, 5];
        let ip = InPlace {
            offset: 2,
            output: Output::Ipv6 {
                len: 3,
                kind: Kind::Data,
            },
        };
        assert_eq!(ip.bytes(&input), &[2, 3, 4]);
        assert_eq!(Local::Primary.other(), Local::Secondary);
        assert_eq!(Local::Secondary.index(), 1);
        assert_eq!(Local::Port(40_000).index(), 0);
        assert_eq!(Local::Port(40_000).other(), Local::Port(40_000));
    }
}
