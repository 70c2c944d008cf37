//! Why a packet was dropped. Every refusal in the core has one, and its `as_str()` is the
//! `reason` label of the `*_packets_dropped_total` metrics, so nothing is dropped silently.

use crate::wire::WireError;

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $label:literal,)*) => {
        /// A counted reason for dropping a packet (the metric label is [`DropReason::as_str`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, so drivers can zero-initialise one series per label.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The reasons a server can report, to zero-initialise its metric series.
            pub const SERVER: &'static [Self] = &[
                Self::Truncated, Self::BadIpVersion, Self::BadLength, Self::BadEncapsulation,
                Self::MandatoryTrailer, Self::BadChecksum, Self::Malformed, Self::Oversized,
                Self::NonGlobalSource, Self::Loop, Self::UnexpectedOrigin, Self::NotBubbleOrIcmpv6,
                Self::TooLarge, Self::SpoofedSource, Self::NotAllowed, Self::NonGlobalDestination,
                Self::NonGlobalMappedAddress, Self::NativeDisabled, Self::NotForUs, Self::SendFailed,
                Self::RateLimited, Self::NoSourceAddress,
            ];

            /// The reasons a relay can report, to zero-initialise its metric series.
            pub const RELAY: &'static [Self] = &[
                Self::Truncated, Self::BadIpVersion, Self::BadLength, Self::BadEncapsulation,
                Self::MandatoryTrailer, Self::Malformed, Self::Oversized, Self::TooLarge,
                Self::NonGlobalSource, Self::SpoofedSource, Self::NonGlobalDestination,
                Self::NonGlobalMappedAddress, Self::SendFailed, Self::NotTeredoDestination,
                Self::NonGlobalServer, Self::NonGlobalNativeSource, Self::NotTeredoSource,
                Self::UnknownPeer, Self::TeredoDestination, Self::QueueFull,
                Self::GlobalQueueFull, Self::PeerTableFull, Self::PeerUnreachable,
                Self::PeerEvicted, Self::PeerExpired, Self::OutputQueueFull,
                Self::OutputBufferTooSmall, Self::NoSourceAddress,
            ];

            /// The reasons a client can report, to zero-initialise its metric series. Some
            /// are documented as relay reasons; the client uses them with the same meaning
            /// for its own peers (queues, pacing, table, outputs).
            pub const CLIENT: &'static [Self] = &[
                Self::Truncated, Self::BadIpVersion, Self::BadLength, Self::BadEncapsulation,
                Self::MandatoryTrailer, Self::BadChecksum, Self::Malformed, Self::Oversized,
                Self::UnexpectedOrigin, Self::TooLarge, Self::SpoofedSource, Self::NotAllowed,
                Self::NonGlobalDestination, Self::NonGlobalMappedAddress,
                Self::UnexpectedSource, Self::BadNonce, Self::BadConfirmation,
                Self::MissingOrigin, Self::NotRouterAdvertisement, Self::WrongDestination,
                Self::ForeignPrefix, Self::BadMtu, Self::UnexpectedServerAddress,
                Self::NonGlobalServer, Self::QueueFull, Self::GlobalQueueFull,
                Self::PeerTableFull, Self::PeerUnreachable, Self::PeerEvicted,
                Self::OutputQueueFull, Self::OutputBufferTooSmall, Self::NotQualified,
                Self::NotOurAddress, Self::WrongSource, Self::UntrustedSource,
                Self::LinkLocalSource, Self::RoutingHeader, Self::AddressLost,
            ];

            /// The snake_case metric label.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Fewer bytes than a header needs.
    Truncated => "truncated",
    /// Inner packet is not IPv6.
    BadIpVersion => "bad_ip_version",
    /// IPv6 payload length larger than the datagram.
    BadLength => "bad_length",
    /// Malformed authentication header or origin indication (or in the wrong order).
    BadEncapsulation => "bad_encapsulation",
    /// An RFC 6081 trailer whose type orders the packet discarded.
    MandatoryTrailer => "mandatory_trailer",
    /// ICMPv6 checksum mismatch.
    BadChecksum => "bad_checksum",
    /// A malformed router solicitation or ICMPv6 message.
    Malformed => "malformed",
    /// The datagram filled the whole receive buffer: it may have been truncated.
    Oversized => "oversized",
    /// Outer IPv4 source is not global unicast (RFC 4380 §5.3.1 case 3).
    NonGlobalSource => "non_global_source",
    /// The OS gave no IPv4 source address for a datagram (none at all, or not IPv4): there
    /// is nobody to answer and nothing to check. Counted by drivers; the cores never see it.
    NoSourceAddress => "no_source_address",
    /// Packet came from one of the server's own addresses and port (forwarding loop).
    Loop => "loop",
    /// An origin indication in a packet sent to the server: only servers insert them.
    UnexpectedOrigin => "unexpected_origin",
    /// Neither a bubble nor ICMPv6 (RFC 4380 §5.3.1 case 2).
    NotBubbleOrIcmpv6 => "not_bubble_or_icmpv6",
    /// ICMPv6 larger than the configured cap, or a relayed packet that would not fit in one
    /// UDP datagram once the origin indication is put in front of it.
    TooLarge => "too_large",
    /// Teredo source whose embedded mapping differs from the outer source (anti-spoofing).
    SpoofedSource => "spoofed_source",
    /// None of the acceptance cases of RFC 4380 §5.3.1 (e.g. non-Teredo source to a foreign
    /// Teredo destination).
    NotAllowed => "not_allowed",
    /// Link-local, multicast, loopback or unspecified IPv6 destination (other than an RS).
    NonGlobalDestination => "non_global_destination",
    /// Teredo destination embedding a non-global IPv4 address.
    NonGlobalMappedAddress => "non_global_mapped_address",
    /// Native IPv6 forwarding is disabled.
    NativeDisabled => "native_disabled",
    /// A packet addressed to the server itself that it does not answer.
    NotForUs => "not_for_us",
    /// The driver could not send (socket error).
    SendFailed => "send_failed",
    /// Server: a router solicitation over the per-source rate limit (`--rs-rate-limit`): its
    /// source, which may be spoofed, already got its share of router advertisements.
    RateLimited => "rate_limited",
    /// Client: a datagram not from the configured server (primary or secondary IPv4, UDP
    /// port 3544) where only a router advertisement is expected.
    UnexpectedSource => "unexpected_source",
    /// Client: an RA without an authentication header, or whose nonce matches no router
    /// solicitation outstanding (RFC 4380 §5.2.2: MUST discard).
    BadNonce => "bad_nonce",
    /// Client: an RA whose confirmation byte is not 0 (the server asks for a new key).
    BadConfirmation => "bad_confirmation",
    /// Client: an RA without an origin indication (RFC 4380 §5.2.1).
    MissingOrigin => "missing_origin",
    /// Client: a packet from the server that is not a router advertisement (the
    /// qualification state machine only consumes RAs).
    NotRouterAdvertisement => "not_router_advertisement",
    /// Client: an RA whose IPv6 destination is not the link-local source of the RS.
    WrongDestination => "wrong_destination",
    /// Client: an RA whose prefix is not `2001:0:<server IPv4>::/64` (or the obsolete
    /// 3ffe:831f form) for the configured server.
    ForeignPrefix => "foreign_prefix",
    /// Client: an RA whose MTU option lies outside 1280..=65535.
    BadMtu => "bad_mtu",
    /// Client: an RA from the server address the cone rule (RFC 4380 §5.3.2) excludes: a
    /// cone RS must be answered from the other address, any other RS from the same one.
    UnexpectedServerAddress => "unexpected_server_address",
    /// Relay: a native packet whose destination is not a Teredo address (2001:0::/32).
    NotTeredoDestination => "not_teredo_destination",
    /// Relay: a Teredo destination whose server IPv4 (where indirect bubbles go) is not
    /// global unicast.
    NonGlobalServer => "non_global_server",
    /// Relay: a native packet from an unspecified, loopback, link-local or multicast source
    /// (not forwardable, and no ICMPv6 error could go back).
    NonGlobalNativeSource => "non_global_native_source",
    /// Relay: a datagram whose IPv6 source is not a Teredo address (RFC 4380 §5.4.2).
    NotTeredoSource => "not_teredo_source",
    /// Relay: a datagram from a Teredo client the relay has no peer entry for (RFC 4380
    /// §5.4.2 "MAY be silently discarded"; Miredo drops too).
    UnknownPeer => "unknown_peer",
    /// Relay: a client's packet (other than a bubble) to a Teredo address; clients reach
    /// each other directly, not through a relay.
    TeredoDestination => "teredo_destination",
    /// Relay: the per-peer queue of an untrusted peer is full (bytes or packets).
    QueueFull => "queue_full",
    /// Relay: the queues of all peers together hold the global byte cap.
    GlobalQueueFull => "global_queue_full",
    /// Relay: the peer table is full and no untrusted peer can be evicted.
    PeerTableFull => "peer_table_full",
    /// Relay: the peer never answered the bubbles (queued packets dropped at give-up, and
    /// packets refused until the bubble window is over).
    PeerUnreachable => "peer_unreachable",
    /// Relay: queued packets of a peer evicted to make room in the peer table.
    PeerEvicted => "peer_evicted",
    /// Relay: queued packets of a peer removed after its idle timeout.
    PeerExpired => "peer_expired",
    /// An output did not fit in the bounded output queue (the driver is not draining it).
    OutputQueueFull => "output_queue_full",
    /// The buffer passed to `poll_output` was too small for the output, which was discarded.
    OutputBufferTooSmall => "output_buffer_too_small",
    /// Client: no Teredo address (not qualified, or dormant), so nothing goes through the
    /// data path.
    NotQualified => "not_qualified",
    /// Client: a packet whose IPv6 destination is not the client's Teredo address (RFC 4380
    /// §5.2.3: "the client should check that the IPv6 destination address correspond to its
    /// own Teredo address").
    NotOurAddress => "not_our_address",
    /// Client: an application packet whose IPv6 source is not the client's Teredo address.
    WrongSource => "wrong_source",
    /// Client: a packet no rule of RFC 4380 §5.2.3 accepts: a non-Teredo source without a
    /// trusted peer entry at that mapping (case 6; dropped, never answered with a direct IPv6
    /// connectivity test: CVE-2006-6266), or a non-bubble from the server that the server
    /// did not vouch for.
    UntrustedSource => "untrusted_source",
    /// Client: a packet with a link-local source that is neither a bubble nor a router
    /// advertisement (no forged neighbour discovery reaches the host through the tunnel).
    LinkLocalSource => "link_local_source",
    /// Client: a packet carrying an IPv6 routing header (CVE-2006-6263: source routing
    /// through the tunnel).
    RoutingHeader => "routing_header",
    /// Client: queued packets discarded because the Teredo address changed or was lost
    /// (new mapping, offline, dormant).
    AddressLost => "address_lost",
}

impl From<WireError> for DropReason {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated { .. } | WireError::BufferTooSmall { .. } => Self::Truncated,
            WireError::BadVersion(_) => Self::BadIpVersion,
            WireError::BadLength { .. } => Self::BadLength,
            WireError::AuthAfterOrigin => Self::BadEncapsulation,
            WireError::MandatoryTrailer(_) => Self::MandatoryTrailer,
            WireError::BadChecksum => Self::BadChecksum,
            WireError::Invalid(_) => Self::Malformed,
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in DropReason::ALL {
            let s = r.as_str();
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{s}"
            );
            assert!(seen.insert(s), "duplicate {s}");
        }
    }
}
