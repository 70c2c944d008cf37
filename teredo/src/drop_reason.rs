//! Why a packet was dropped. Every refusal in the core has one, and its `as_str()` is the
//! `reason` label of the `*_packets_dropped_total` metrics, so nothing is dropped silently.

use crate::wire::WireError;

/// Bits of [`DropReason::components`]: who reports a reason. `D` marks the reasons only a
/// driver counts (I/O), never returned by a core.
mod bits {
    pub(super) const S: u8 = 1;
    pub(super) const R: u8 = 2;
    pub(super) const C: u8 = 4;
    pub(super) const D: u8 = 8;
}
use bits::{C, D, R, S};

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $label:literal in [$($who:ident),+],)*) => {
        /// A counted reason for dropping a packet (the metric label is [`DropReason::as_str`]).
        ///
        /// Each variant is declared once, with the components that report it; the
        /// per-component lists ([`Self::SERVER`], [`Self::RELAY`], [`Self::CLIENT`]) are
        /// derived from that declaration, never kept by hand.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, so drivers can zero-initialise one series per label.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The snake_case metric label.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)*
                }
            }

            /// Who reports this reason (bits `S`erver, `R`elay, `C`lient, `D`river only).
            const fn components(self) -> u8 {
                match self {
                    $(Self::$variant => 0 $(| $who)+,)*
                }
            }
        }
    };
}

/// How many reasons carry all of `mask`'s bits.
const fn count(mask: u8) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < DropReason::ALL.len() {
        if DropReason::ALL[i].components() & mask == mask {
            n += 1;
        }
        i += 1;
    }
    n
}

/// The reasons that carry all of `mask`'s bits, in declaration order.
const fn select<const N: usize>(mask: u8) -> [DropReason; N] {
    let mut out = [DropReason::Truncated; N];
    let (mut i, mut n) = (0, 0);
    while i < DropReason::ALL.len() {
        if DropReason::ALL[i].components() & mask == mask {
            out[n] = DropReason::ALL[i];
            n += 1;
        }
        i += 1;
    }
    out
}

const SERVER: [DropReason; count(S)] = select(S);
const RELAY: [DropReason; count(R)] = select(R);
const CLIENT: [DropReason; count(C)] = select(C);

impl DropReason {
    /// The reasons a server (core or driver) can report, to zero-initialise its series.
    pub const SERVER: &'static [Self] = &SERVER;
    /// The reasons a relay (core or driver) can report, to zero-initialise its series.
    pub const RELAY: &'static [Self] = &RELAY;
    /// The reasons a client can report. Some are documented as relay reasons; the client
    /// uses them with the same meaning for its own peers (queues, pacing, table, outputs).
    pub const CLIENT: &'static [Self] = &CLIENT;

    /// Whether only a driver counts this reason (an I/O outcome, never a core's verdict).
    pub const fn is_driver_only(self) -> bool {
        self.components() & D != 0
    }
}

drop_reasons! {
    /// Fewer bytes than a header needs.
    Truncated => "truncated" in [S, R, C],
    /// Inner packet is not IPv6.
    BadIpVersion => "bad_ip_version" in [S, R, C],
    /// IPv6 payload length larger than the datagram.
    BadLength => "bad_length" in [S, R, C],
    /// Malformed authentication header or origin indication (or in the wrong order).
    BadEncapsulation => "bad_encapsulation" in [S, R, C],
    /// An RFC 6081 trailer whose type orders the packet discarded.
    MandatoryTrailer => "mandatory_trailer" in [S, R, C],
    /// ICMPv6 checksum mismatch.
    BadChecksum => "bad_checksum" in [S, C],
    /// A malformed router solicitation or ICMPv6 message.
    Malformed => "malformed" in [S, R, C],
    /// The datagram filled the whole receive buffer: it may have been truncated.
    Oversized => "oversized" in [S, R, C],
    /// Outer IPv4 source is not global unicast (RFC 4380 §5.3.1 case 3).
    NonGlobalSource => "non_global_source" in [S, R],
    /// Packet came from one of the server's own addresses and port (forwarding loop).
    Loop => "loop" in [S],
    /// An origin indication in a packet sent to the server: only servers insert them.
    UnexpectedOrigin => "unexpected_origin" in [S, C],
    /// Neither a bubble nor ICMPv6 (RFC 4380 §5.3.1 case 2).
    NotBubbleOrIcmpv6 => "not_bubble_or_icmpv6" in [S],
    /// ICMPv6 larger than the configured cap, or a relayed packet that would not fit in one
    /// UDP datagram once the origin indication is put in front of it.
    TooLarge => "too_large" in [S, R, C],
    /// Teredo source whose embedded mapping differs from the outer source (anti-spoofing).
    SpoofedSource => "spoofed_source" in [S, R, C],
    /// None of the acceptance cases of RFC 4380 §5.3.1 (e.g. non-Teredo source to a foreign
    /// Teredo destination).
    NotAllowed => "not_allowed" in [S, C],
    /// Link-local, multicast, loopback or unspecified IPv6 destination (other than an RS).
    NonGlobalDestination => "non_global_destination" in [S, R, C],
    /// Teredo destination embedding a non-global IPv4 address.
    NonGlobalMappedAddress => "non_global_mapped_address" in [S, R, C],
    /// Native IPv6 forwarding is disabled.
    NativeDisabled => "native_disabled" in [S],
    /// A packet addressed to the server itself that it does not answer.
    NotForUs => "not_for_us" in [S],
    /// The driver could not send (socket error).
    SendFailed => "send_failed" in [S, R, D],
    /// The operating system gave no IPv4 source address with the datagram (e.g. an
    /// IPv6-mapped or missing address), so nothing can be checked or answered.
    NoSourceAddress => "no_source_address" in [S, R, D],
    /// Server: a router solicitation over the per-source rate limit (`--rs-rate-limit`): its
    /// source, which may be spoofed, already got its share of router advertisements.
    RateLimited => "rate_limited" in [S],
    /// Client: a datagram not from the configured server (primary or secondary IPv4, UDP
    /// port 3544) where only a router advertisement is expected.
    UnexpectedSource => "unexpected_source" in [C],
    /// Client: an RA without an authentication header, or whose nonce matches no router
    /// solicitation outstanding (RFC 4380 §5.2.2: MUST discard).
    BadNonce => "bad_nonce" in [C],
    /// Client: an RA whose confirmation byte is not 0 (the server asks for a new key).
    BadConfirmation => "bad_confirmation" in [C],
    /// Client: an RA without an origin indication (RFC 4380 §5.2.1).
    MissingOrigin => "missing_origin" in [C],
    /// Client: a packet from the server that is not a router advertisement (the
    /// qualification state machine only consumes RAs).
    NotRouterAdvertisement => "not_router_advertisement" in [C],
    /// Client: an RA whose IPv6 destination is not the link-local source of the RS.
    WrongDestination => "wrong_destination" in [C],
    /// Client: an RA whose prefix is not `2001:0:<server IPv4>::/64` (or the obsolete
    /// 3ffe:831f form) for the configured server.
    ForeignPrefix => "foreign_prefix" in [C],
    /// Client: an RA whose MTU option lies outside 1280..=65535.
    BadMtu => "bad_mtu" in [C],
    /// Client: an RA from the server address the cone rule (RFC 4380 §5.3.2) excludes: a
    /// cone RS must be answered from the other address, any other RS from the same one.
    UnexpectedServerAddress => "unexpected_server_address" in [C],
    /// Relay: a native packet whose destination is not a Teredo address (2001:0::/32).
    NotTeredoDestination => "not_teredo_destination" in [R],
    /// Relay: a Teredo destination whose server IPv4 (where indirect bubbles go) is not
    /// global unicast.
    NonGlobalServer => "non_global_server" in [R, C],
    /// Relay: a native packet from an unspecified, loopback, link-local or multicast source
    /// (not forwardable, and no ICMPv6 error could go back).
    NonGlobalNativeSource => "non_global_native_source" in [R],
    /// Relay: a datagram whose IPv6 source is not a Teredo address (RFC 4380 §5.4.2).
    NotTeredoSource => "not_teredo_source" in [R],
    /// Relay: a datagram from a Teredo client the relay has no peer entry for (RFC 4380
    /// §5.4.2 "MAY be silently discarded"; Miredo drops too).
    UnknownPeer => "unknown_peer" in [R],
    /// Relay: a client's packet (other than a bubble) to a Teredo address; clients reach
    /// each other directly, not through a relay.
    TeredoDestination => "teredo_destination" in [R],
    /// Relay: the per-peer queue of an untrusted peer is full (bytes or packets).
    QueueFull => "queue_full" in [R, C],
    /// Relay: the queues of all peers together hold the global byte cap.
    GlobalQueueFull => "global_queue_full" in [R, C],
    /// Relay: the peer table is full and no untrusted peer can be evicted.
    PeerTableFull => "peer_table_full" in [R, C],
    /// Relay: the peer never answered the bubbles (queued packets dropped at give-up, and
    /// packets refused until the bubble window is over).
    PeerUnreachable => "peer_unreachable" in [R, C],
    /// Relay: queued packets of a peer evicted to make room in the peer table.
    PeerEvicted => "peer_evicted" in [R, C],
    /// Relay: queued packets of a peer removed after its idle timeout.
    PeerExpired => "peer_expired" in [R],
    /// An output did not fit in the bounded output queue (the driver is not draining it).
    OutputQueueFull => "output_queue_full" in [R, C],
    /// The buffer passed to `poll_output` was too small for the output, which was discarded.
    OutputBufferTooSmall => "output_buffer_too_small" in [R, C],
    /// Client: no Teredo address (not qualified, or dormant), so nothing goes through the
    /// data path.
    NotQualified => "not_qualified" in [C],
    /// Client: a packet whose IPv6 destination is not the client's Teredo address (RFC 4380
    /// §5.2.3: "the client should check that the IPv6 destination address correspond to its
    /// own Teredo address").
    NotOurAddress => "not_our_address" in [C],
    /// Client: an application packet whose IPv6 source is not the client's Teredo address.
    WrongSource => "wrong_source" in [C],
    /// Client: a packet no rule of RFC 4380 §5.2.3 accepts: a non-Teredo source without a
    /// trusted peer entry at that mapping (case 6; dropped, never answered with a direct IPv6
    /// connectivity test: CVE-2006-6266), or a non-bubble from the server that the server
    /// did not vouch for.
    UntrustedSource => "untrusted_source" in [C],
    /// Client: a datagram on the local discovery group (RFC 4380 §5.2.8) that is not a
    /// discovery bubble from this link: not a bubble to ff02::1, a source that is not a
    /// Teredo address with our mapped IPv4, an IPv4 source off our subnet, or our own.
    DiscoveryRejected => "discovery_rejected" in [C],
    /// Client: an indirect bubble whose RFC 6081 Alternate Address trailer is malformed
    /// (§4.3: length not 8, 14, 20 or 26; an entry that is not unicast or has port 0),
    /// dropped as §5.6.4.2 says (Hairpinning extension on).
    BadAlternateAddress => "bad_alternate_address" in [C],
    /// Client: an alternate address of a peer the Hairpinning extension will not send a
    /// bubble to although the trailer is well formed: loopback, 0.0.0.0/8, 240.0.0.0/4, or
    /// the client's own socket address (counted per entry; the bubble is still processed).
    ImplausibleAlternate => "implausible_alternate" in [C],
    /// Client: a packet with a link-local source that is neither a bubble nor a router
    /// advertisement (no forged neighbour discovery reaches the host through the tunnel).
    LinkLocalSource => "link_local_source" in [C],
    /// Client: a packet carrying an IPv6 routing header (CVE-2006-6263: source routing
    /// through the tunnel).
    RoutingHeader => "routing_header" in [C],
    /// Client: queued packets discarded because the Teredo address changed or was lost
    /// (new mapping, offline, dormant).
    AddressLost => "address_lost" in [C],
    /// Client: a datagram on an extra local port (an RFC 6081 random port, §5.4, §5.5) that
    /// is not open, or from another IPv6 source than the peer the port was opened for (a
    /// random port serves one peer).
    ClosedPort => "closed_port" in [C],
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

    #[test]
    fn component_lists_are_derived_from_the_declaration() {
        for r in DropReason::ALL {
            let who = r.components();
            assert!(who & (S | R | C) != 0, "{r} is reported by no component");
            assert_eq!(DropReason::SERVER.contains(r), who & S != 0, "{r}");
            assert_eq!(DropReason::RELAY.contains(r), who & R != 0, "{r}");
            assert_eq!(DropReason::CLIENT.contains(r), who & C != 0, "{r}");
            if r.is_driver_only() {
                assert!(
                    !DropReason::CLIENT.contains(r),
                    "{r}: the client has no driver"
                );
            }
        }
        assert!(DropReason::SERVER.contains(&DropReason::NoSourceAddress));
        assert!(DropReason::RELAY.contains(&DropReason::NoSourceAddress));
        assert!(!DropReason::Loop.is_driver_only());
        assert!(DropReason::SendFailed.is_driver_only());
    }
}
