//! The Teredo relay state machine (RFC 4380 §5.4, RFC 5991 §3.2, RFC 6081 §5.2), sans-IO.
//!
//! A relay sits between native IPv6 (it announces 2001::/32) and Teredo clients on the IPv4
//! Internet. Native packets for a client are sent over UDP to the client's NAT mapping once
//! the client is *trusted*; until then they are queued and an **indirect bubble** goes to the
//! client's server (which relays it with an origin indication), so that the client answers
//! with a **direct bubble** that opens its NAT and proves its mapping. Packets from clients
//! are checked against the mapping embedded in their Teredo source and forwarded natively.
//!
//! # Driving it
//! * [`Relay::handle_ipv6`]: a native IPv6 packet routed to 2001::/32 (transmit, §5.4.1).
//! * [`Relay::handle_udp`]: a datagram received on the relay's Teredo UDP port (receive,
//!   §5.4.2).
//! * [`Relay::handle_timeout`] at [`Relay::poll_timeout`]: bubble retransmissions, give-ups,
//!   peer expiry.
//! * After every input drain [`Relay::poll_output`] until it returns `None`. Outputs may be
//!   waiting even when an input returned `Err` (the packet was dropped, but e.g. a bubble or
//!   an ICMPv6 error was still produced).
//!
//! Zero-copy fast path: [`Relay::handle_ipv6_in_place`] and [`Relay::handle_udp_in_place`]
//! do the same work but, when the input itself is what must be sent (a packet for a trusted
//! peer is sent as the UDP payload unchanged; a client's packet goes native as the IPv6 part
//! of the datagram), they say so ([`InPlace`]) instead of copying it into the output queue.
//! The driver then sends straight from its receive buffer: no copy and no allocation on the
//! trusted path. To keep packets to a peer in order, the transmit variant only does this when
//! no output is pending (otherwise it falls back to queueing the copy).
//! [`Relay::handle_ipv6`] / [`Relay::handle_udp`] copy the bytes once into a reused output
//! arena, so they do not allocate either once warmed up.
//!
//! # Choices (and where they differ from Miredo, TEREDO.md §6.5, §6.6, §7.2)
//! * **Cone bit ignored** (RFC 5991 §3.2, RFC 4380 §5.4.1 "MAY ... always perform case 3"):
//!   every untrusted destination goes through the bubble exchange.
//! * **Bubble source.** [`BubbleSource::PerPeer`] (default): a link-local address
//!   `fe80::<IID>` whose IID is SipHash-2-4 (key drawn from the caller's RNG) of the peer's
//!   address and the nonce of that bubble, with the two low bits of the first IID byte
//!   cleared (as Miredo). A client that answers the indirect bubble sends its direct bubble to
//!   that address, which therefore proves it saw our bubble even if it ignores RFC 6081
//!   trailers (Miredo clients). Because it changes with every nonce, it cannot be replayed
//!   the way Miredo's per-peer constant can. [`BubbleSource::Fixed`] uses one address (e.g.
//!   Miredo's relay address fe80::ffff:ffff:ffff); a fixed address proves nothing, so it is
//!   then never used as evidence.
//! * **Nonce trailer.** Every indirect bubble carries a fresh 4-byte RFC 6081 Nonce trailer
//!   (the "Nonce Sent"); the nonce of the previous bubble is remembered too, so a late answer
//!   to a retransmitted bubble still counts. Direct bubbles carry no trailer (RFC 6081
//!   §5.2.4.2: none before an indirect bubble was received from the peer).
//! * **Bubble hop limit** [`RelayConfig::bubble_hop_limit`], default 255: a bubble is a
//!   link-scope message of the Teredo pseudo-link (servers relay it over UDP, nobody routes
//!   it), and 255 is the conventional hop limit of link-scope messages (RFC 4861). RFC 4380
//!   says nothing; Miredo sends 0. Both are accepted by every known client.
//! * **Pacing** (RFC 4380 §5.2.6, §5.4.1): at least [`RelayConfig::bubble_interval`] (2 s)
//!   between bubbles to a peer, at most [`RelayConfig::max_bubbles_per_window`] (4) per
//!   [`RelayConfig::bubble_window`] (300 s) without an answer. Unlike Miredo the relay has a
//!   real retransmission timer: the indirect bubble is repeated every 2 s, up to
//!   [`RelayConfig::bubble_retries`] (3) times, whether or not more packets arrive. 2 s after
//!   the last bubble the relay **gives up**: the queue is dropped (counted as
//!   `peer_unreachable`), an ICMPv6 Destination Unreachable (code 3, address unreachable)
//!   goes to the sender of the first queued packet, and packets to that peer are refused
//!   (with the same ICMPv6 error) until the 300 s window is over. ICMPv6 errors are
//!   rate-limited globally by a token bucket in virtual time ([`RelayConfig::icmp_rate`],
//!   [`RelayConfig::icmp_burst`]) and never sent about ICMPv6 errors or to non-global sources
//!   (RFC 4443 §2.4). They need a source address of the relay
//!   ([`RelayConfig::icmp_source`]); without one they are not sent.
//! * **Queue** (RFC 4380 §5.4.1 "MAY queue ... SHOULD limit"): FIFO per peer, bounded by
//!   [`RelayConfig::queue_bytes_per_peer`] and [`RelayConfig::queue_packets_per_peer`], plus
//!   a global byte cap [`RelayConfig::global_queue_bytes`]; a packet that does not fit is
//!   dropped (drop-tail: the first packets, e.g. a TCP SYN, are kept and delivered in order).
//!   Miredo keeps 1280 bytes and delivers them LIFO. Queues live outside the peer table, in a
//!   slab of reused buffers, only for peers that have queued packets.
//! * **Trust** ([`TrustPolicy`]): `Strict` is RFC 4380 §5.4.2: a datagram is accepted only
//!   from the mapping embedded in its Teredo source (or, for a trusted peer, the mapping
//!   recorded for it). `Lenient` also accepts a direct bubble from another mapping when it
//!   answers our indirect bubble (matching Nonce trailer, RFC 6081 §5.2.4.4, or sent to the
//!   per-peer link-local source, Miredo's extension) and then records that actual mapping:
//!   this is what makes clients behind symmetric NATs reachable.
//! * **Unknown peers** (RFC 4380 §5.4.2 "MAY be silently discarded"): dropped as
//!   `unknown_peer`, as Miredo. A peer entry is created when the native side sends to a
//!   Teredo address, so answers to our own traffic always find one.
//! * **Validity**: a trusted peer is used directly while its last reception is less than
//!   [`RelayConfig::validity`] (30 s) old; after that the next packet is queued and a new
//!   bubble exchange runs first (TEREDO.md check 20; Miredo does the same).
//! * **Peer table**: at most [`RelayConfig::max_peers`] entries. When full, the least
//!   recently used *untrusted* peer is evicted (approximately: see below); when every peer is
//!   trusted the least recently used trusted one is ([`RelayConfig::evict_trusted`]; off,
//!   the new one is refused: `peer_table_full`). Evictions are counted by kind
//!   ([`RelayCounters::trusted_evictions`]).
//! * **Bubble rate** ([`RelayConfig::bubble_rate`], off by default): a token bucket over all
//!   peers caps the bubble rounds per second, so that a flood of distinct destinations
//!   cannot turn the relay into a reflector towards the servers those addresses name. Peers unused for
//!   [`RelayConfig::idle_timeout`] (default 2 × validity) are removed.
//! * **Expiry in O(1) amortized**: each peer has exactly one record `(stamp, slot)` in one
//!   of two FIFO queues (untrusted, trusted). Records are not moved when a peer is used;
//!   instead, when a record reaches the front and is due, the peer's real state is checked:
//!   expired peers are removed, others are pushed to the back again (of the queue matching
//!   their state) with their current last-use time. A peer therefore lives between
//!   `idle_timeout` and about 2 × `idle_timeout` after its last use (Miredo's two-generation
//!   scheme has the same bound), and each record is touched at most once per idle period.
//!   Eviction pops the untrusted queue the same way, re-queueing (at most 16 per eviction)
//!   peers used since their record was written. Pacing state lives in the entry: a peer
//!   evicted from a full table and created again starts a fresh exchange (RFC 4380 §7.3.3
//!   acknowledges this list-thrashing effect); one native packet still yields at most one
//!   bubble at that moment.
//! * **Hashing**: the peer table is keyed by attacker-chosen addresses, so it hashes with
//!   SipHash-2-4 keyed from the caller's RNG (no global RNG, no hash flooding, replayable).
//! * **Memory** (about 66 bytes per trusted peer, RSS growth with a million of them in the
//!   relay crate's `forwarding` bench; Miredo ≈ 130):
//!   peers live in a slab of 40-byte entries ([`PEER_ENTRY_BYTES`], the address included)
//!   with a free list; an open-addressing index of 8-byte buckets (32 bits of the keyed hash
//!   and the slab slot, linear probing, at most 3/4 full, backward-shift deletion) maps
//!   addresses to slots; the expiry record is 8 bytes (`u32` time, `u32` slot). What only a
//!   peer in a bubble exchange needs (window, bubble count, nonces, retransmission timer,
//!   queue) is in a separate exchange slab, freed when the exchange is answered; the timer
//!   heap holds only running exchanges (a timer is removed, not left to fire, when its
//!   exchange ends). Times are stored as 32-bit millisecond offsets from a base that moves
//!   forward (O(peers), about every 12.4 days) so that offsets never overflow; offsets older
//!   than the new base become the base, which changes no decision because every configured
//!   duration is capped at [`MAX_TIMER`] (2^30 ms). When the table empties, memory is given
//!   back in [`Relay::handle_timeout`]: slabs under a quarter full are compacted (the index
//!   rebuilt), expiry queues and the timer heap under a quarter of their capacity shrink.
//!   None of this is on the forwarding path, which neither allocates nor moves anything.
//! * **Backpressure**: the output queue is bounded ([`RelayConfig::max_outputs`],
//!   [`RelayConfig::max_output_bytes`]); an output that does not fit is dropped and counted
//!   (`output_queue_full`). [`Relay::handle_timeout`] stops processing timers while the
//!   output queue is full and leaves them due, so drain it and call again.

use std::collections::VecDeque;
use std::fmt;
use std::hash::Hasher;
use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::addr::{
    is_ipv4_global_unicast, is_ipv6_non_global, is_link_local, is_teredo, TeredoAddr, TEREDO_PORT,
};
use crate::wire::ipv6::{emit_bubble, emit_ipv6_header, finish_icmpv6, ICMPV6_DEST_UNREACHABLE};
use crate::wire::packet::{
    check_ipv6_exact_len, ipv6_dst, ipv6_src, IPV6_HEADER_LEN, MAX_UDP_PAYLOAD, NEXT_HEADER_ICMPV6,
};
use crate::wire::trailer::{Trailers, TYPE_NONCE};
use crate::wire::TeredoPacket;
use crate::DropReason;

/// Default [`RelayConfig::bubble_burst`].
pub const DEFAULT_BUBBLE_BURST: u32 = 100;
/// Default [`RelayConfig::max_peers`] (Miredo with libJudy).
pub const DEFAULT_MAX_PEERS: usize = 1 << 20;
/// Default [`RelayConfig::queue_bytes_per_peer`].
pub const DEFAULT_QUEUE_BYTES_PER_PEER: usize = 4096;
/// Default [`RelayConfig::queue_packets_per_peer`].
pub const DEFAULT_QUEUE_PACKETS_PER_PEER: usize = 32;
/// Default [`RelayConfig::global_queue_bytes`]: 16 MiB.
pub const DEFAULT_GLOBAL_QUEUE_BYTES: usize = 16 << 20;
/// Peer validity (RFC 4380 §5.2.4): 30 s since the last reception.
pub const VALIDITY: Duration = Duration::from_secs(30);
/// Bubble spacing and retransmission timeout (RFC 4380 §5.2.6, §5.4.1): 2 s.
pub const BUBBLE_INTERVAL: Duration = Duration::from_secs(2);
/// Bubble repetitions after the first (RFC 4380 §5.4.1): 3.
pub const BUBBLE_RETRIES: u8 = 3;
/// Window of the bubble cap (RFC 4380 §5.2.6): 300 s.
pub const BUBBLE_WINDOW: Duration = Duration::from_secs(300);
/// Bubbles allowed per window without an answer (RFC 4380 §5.2.6): 4.
pub const MAX_BUBBLES_PER_WINDOW: u8 = 4;
/// Default hop limit of the relay's bubbles (see the module documentation).
pub const DEFAULT_BUBBLE_HOP_LIMIT: u8 = 255;
/// Default ICMPv6 error rate (Miredo: one per 100 ms).
pub const DEFAULT_ICMP_RATE: u32 = 10;
/// Default ICMPv6 error burst.
pub const DEFAULT_ICMP_BURST: u32 = 10;
/// Hop limit of the ICMPv6 errors the relay originates.
pub const ICMP_HOP_LIMIT: u8 = 64;
/// Largest ICMPv6 error (RFC 4443 §2.4 (c): the IPv6 minimum MTU).
pub const ICMP_ERROR_MAX_LEN: usize = 1280;
/// ICMPv6 Destination Unreachable code 3: address unreachable.
pub const ICMPV6_ADDRESS_UNREACHABLE: u8 = 3;
/// Size of an indirect bubble: IPv6 header + 6-byte Nonce trailer.
pub const INDIRECT_BUBBLE_LEN: usize = IPV6_HEADER_LEN + 6;
/// Default [`RelayConfig::max_outputs`].
pub const DEFAULT_MAX_OUTPUTS: usize = 4096;
/// Default [`RelayConfig::max_output_bytes`]: 1 MiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1 << 20;
/// Floor applied to every duration of the configuration, so that a zero cannot make a
/// driver spin without time advancing.
pub const MIN_TIMER: Duration = Duration::from_millis(100);
/// Ceiling applied to every duration of the configuration: 2^30 ms, about 12.4 days (the
/// peer table stores times as 32-bit millisecond offsets, see the module documentation).
pub const MAX_TIMER: Duration = Duration::from_millis(MAX_TIMER_MS);
/// Bytes of one peer entry in the peer slab, its address included. On top of it each peer
/// has one 8-byte bucket in the index (kept at most 3/4 full, so 8 to 16 bytes per peer
/// after the power-of-two rounding) and one 8-byte expiry record; a peer in a bubble
/// exchange also has an exchange record and possibly a queue.
pub const PEER_ENTRY_BYTES: usize = size_of::<Peer>();

/// [`MAX_TIMER`] in milliseconds.
const MAX_TIMER_MS: u64 = 1 << 30;
/// The base of the 32-bit time offsets moves when the latest time is this far past it.
const REBASE_AT: u64 = 1 << 31;
/// Records an eviction looks at before evicting regardless of recent use.
const EVICT_SCAN: usize = 16;
/// "No queue" in [`Exchange::queue`].
const NO_QUEUE: u32 = u32::MAX;
/// "None" for slab indexes (a peer's exchange, a timer's heap position, the free lists) and
/// empty index buckets.
const NONE: u32 = u32::MAX;
/// "Never" as a tick.
const NEVER: u64 = u64::MAX;
/// "Never" as a 32-bit time offset.
const NEVER32: u32 = u32::MAX;
/// Slabs, queues and heaps with fewer slots than this are never shrunk.
const SHRINK_MIN: usize = 64;

/// How the relay decides that a datagram really comes from the Teredo client it claims.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TrustPolicy {
    /// RFC 4380 §5.4.2: the outer IPv4 source and port must equal the mapping embedded in
    /// the Teredo source address (or the mapping recorded for a trusted peer).
    #[default]
    Strict,
    /// Strict, plus: a direct bubble from another mapping is accepted when it answers our
    /// indirect bubble (RFC 6081 §5.2.4.4 Nonce trailer, or sent to the per-peer link-local
    /// source), and its actual mapping is recorded. Makes symmetric-NAT clients work.
    Lenient,
}

impl TrustPolicy {
    /// `strict` or `lenient`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Lenient => "lenient",
        }
    }
}

/// The IPv6 source address of the relay's bubbles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BubbleSource {
    /// A link-local address derived per peer and per nonce with a keyed hash (see the module
    /// documentation); a direct bubble sent back to it proves it answers our bubble.
    #[default]
    PerPeer,
    /// Always this address (e.g. fe80::ffff:ffff:ffff as Miredo's relay interface). Never
    /// used as evidence by [`TrustPolicy::Lenient`].
    Fixed(Ipv6Addr),
}

/// Relay settings. [`RelayConfig::default`] gives the RFC values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    /// How datagrams from clients are authenticated.
    pub trust: TrustPolicy,
    /// Peer table cap (default 1,048,576).
    pub max_peers: usize,
    /// Bytes of IPv6 packets queued per untrusted peer (default 4096; Miredo 1280).
    pub queue_bytes_per_peer: usize,
    /// Packets queued per untrusted peer (default 32).
    pub queue_packets_per_peer: usize,
    /// Bytes queued over all peers (default 16 MiB).
    pub global_queue_bytes: usize,
    /// A trusted peer is used directly while its last reception is younger than this (30 s).
    pub validity: Duration,
    /// Peers unused for this long are removed (default 2 × validity = 60 s; removal happens
    /// between one and about two times this after the last use).
    pub idle_timeout: Duration,
    /// Minimum spacing of bubbles to a peer, and retransmission timeout (2 s).
    pub bubble_interval: Duration,
    /// Repetitions of the indirect bubble after the first (3).
    pub bubble_retries: u8,
    /// Window of the bubble cap (300 s).
    pub bubble_window: Duration,
    /// Bubbles per window without an answer (4).
    pub max_bubbles_per_window: u8,
    /// Also send a direct bubble to the client's embedded mapping, to open the relay's own
    /// NAT when the relay sits behind one (RFC 4380 §5.4.1). Default false.
    pub direct_bubbles: bool,
    /// IPv6 source of bubbles.
    pub bubble_source: BubbleSource,
    /// Hop limit of bubbles (default 255; Miredo 0).
    pub bubble_hop_limit: u8,
    /// Source of the ICMPv6 errors sent to native hosts: one of the relay's own global
    /// addresses (RFC 4443 §2.2). `None` disables them (the give-ups are still counted).
    pub icmp_source: Option<Ipv6Addr>,
    /// ICMPv6 errors per second, long-run (default 10; 0 disables them).
    pub icmp_rate: u32,
    /// ICMPv6 errors that may be sent back to back (token bucket depth, default 10).
    pub icmp_burst: u32,
    /// Outputs waiting in [`Relay::poll_output`] (default 4096).
    pub max_outputs: usize,
    /// Bytes of outputs waiting in [`Relay::poll_output`] (default 1 MiB).
    pub max_output_bytes: usize,
    /// When the table is full and no untrusted peer can be evicted, evict the least
    /// recently used trusted peer (default true); false refuses the new peer
    /// (`peer_table_full`). A host that answers bubbles from its own address can fill the
    /// table with trusted peers; evicting them keeps the relay usable for everyone else.
    pub evict_trusted: bool,
    /// Bubble rounds (an indirect bubble, plus the direct one if enabled) per second over
    /// all peers, long-run; 0 = no limit (the default). Each new destination costs a bubble
    /// to the server its address names, so a flood of destinations would otherwise make the
    /// relay a packet reflector. A round over the limit is skipped but counts as sent, so
    /// the exchange gives up on schedule.
    pub bubble_rate: u32,
    /// Bubble rounds that may be sent back to back (token bucket depth; default 100).
    pub bubble_burst: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            trust: TrustPolicy::Strict,
            max_peers: DEFAULT_MAX_PEERS,
            queue_bytes_per_peer: DEFAULT_QUEUE_BYTES_PER_PEER,
            queue_packets_per_peer: DEFAULT_QUEUE_PACKETS_PER_PEER,
            global_queue_bytes: DEFAULT_GLOBAL_QUEUE_BYTES,
            validity: VALIDITY,
            idle_timeout: VALIDITY * 2,
            bubble_interval: BUBBLE_INTERVAL,
            bubble_retries: BUBBLE_RETRIES,
            bubble_window: BUBBLE_WINDOW,
            max_bubbles_per_window: MAX_BUBBLES_PER_WINDOW,
            direct_bubbles: false,
            bubble_source: BubbleSource::PerPeer,
            bubble_hop_limit: DEFAULT_BUBBLE_HOP_LIMIT,
            icmp_source: None,
            icmp_rate: DEFAULT_ICMP_RATE,
            icmp_burst: DEFAULT_ICMP_BURST,
            max_outputs: DEFAULT_MAX_OUTPUTS,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            evict_trusted: true,
            bubble_rate: 0,
            bubble_burst: DEFAULT_BUBBLE_BURST,
        }
    }
}

/// How a datagram from a client was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Acceptance {
    /// The outer source equals the mapping embedded in the Teredo source (RFC 4380 §5.4.2).
    EmbeddedMapping,
    /// The outer source equals the mapping recorded for a trusted peer (learnt earlier
    /// through [`TrustPolicy::Lenient`]).
    RecordedMapping,
    /// Lenient: a direct bubble echoing the nonce of our indirect bubble (RFC 6081 §5.2.4.4).
    Nonce,
    /// Lenient: a direct bubble sent to the per-peer link-local source of our bubble.
    LinkLocal,
}

impl Acceptance {
    /// snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmbeddedMapping => "embedded_mapping",
            Self::RecordedMapping => "recorded_mapping",
            Self::Nonce => "nonce",
            Self::LinkLocal => "link_local",
        }
    }
}

/// What an accepted input did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// A native packet for a trusted, valid peer, sent over UDP to its mapping.
    Encapsulated {
        /// The peer's mapping.
        to: SocketAddrV4,
    },
    /// A native packet queued while a bubble exchange with the peer runs.
    Queued {
        /// This packet started the exchange and its first bubble was sent.
        bubble_sent: bool,
    },
    /// A bubble from a client: it updated the peer (trusted) and was consumed.
    Bubble {
        /// How it was authenticated.
        via: Acceptance,
        /// Queued packets released to the client.
        flushed: usize,
    },
    /// A packet from a client forwarded to the native side.
    Forwarded {
        /// How it was authenticated.
        via: Acceptance,
        /// Queued packets released to the client.
        flushed: usize,
    },
}

/// Result of the zero-copy entry points: what the caller sends from its own input buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InPlace {
    /// Send the IPv6 packet passed to [`Relay::handle_ipv6_in_place`], unchanged, as the
    /// payload of a UDP datagram to `to`.
    Udp {
        /// The peer's mapping.
        to: SocketAddrV4,
    },
    /// Write `data[offset..offset + len]` of the datagram passed to
    /// [`Relay::handle_udp_in_place`] to the native side.
    Ipv6 {
        /// Start of the IPv6 packet in the datagram.
        offset: usize,
        /// Its length (trailers excluded).
        len: usize,
        /// How it was authenticated.
        via: Acceptance,
        /// Queued packets released to the client (waiting in [`Relay::poll_output`]).
        flushed: usize,
    },
    /// Nothing to send from the input; any output waits in [`Relay::poll_output`].
    Done(Handled),
}

/// An output written into the caller's buffer by [`Relay::poll_output`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `len` bytes from the relay's Teredo UDP socket to `to`.
    Udp {
        /// Destination.
        to: SocketAddrV4,
        /// Bytes written.
        len: usize,
    },
    /// Write `len` bytes (an IPv6 packet) to the native side.
    Ipv6 {
        /// Bytes written.
        len: usize,
    },
}

/// Counters for metrics (monotonic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayCounters {
    /// Native packets sent to clients over UDP (direct and released from queues).
    pub encapsulated: u64,
    /// Client packets forwarded natively.
    pub forwarded: u64,
    /// Native packets put in a queue.
    pub queued: u64,
    /// Queued packets released to a client.
    pub flushed: u64,
    /// Indirect bubbles sent.
    pub bubbles_sent: u64,
    /// Direct bubbles sent ([`RelayConfig::direct_bubbles`]).
    pub direct_bubbles_sent: u64,
    /// Bubbles received and accepted.
    pub bubbles_received: u64,
    /// Bubble exchanges that got no answer.
    pub give_ups: u64,
    /// ICMPv6 errors sent.
    pub icmp_errors_sent: u64,
    /// ICMPv6 errors suppressed by the rate limit.
    pub icmp_errors_rate_limited: u64,
    /// Peer entries created.
    pub peers_created: u64,
    /// Peers evicted because the table was full (trusted ones included).
    pub evictions: u64,
    /// Of those, trusted peers ([`RelayConfig::evict_trusted`]).
    pub trusted_evictions: u64,
    /// Bubble rounds skipped by [`RelayConfig::bubble_rate`].
    pub bubbles_rate_limited: u64,
    /// Peers removed after the idle timeout.
    pub expirations: u64,
    /// Datagrams accepted only thanks to [`TrustPolicy::Lenient`].
    pub lenient_accepts: u64,
    /// Every dropped packet by reason, indexed like [`DropReason::ALL`] (see
    /// [`Self::dropped`]): the `Err` results of the inputs **and** packets dropped later
    /// (queues discarded on give-up, eviction, expiry; outputs that did not fit). A driver
    /// should export these rather than count the `Err` results itself.
    pub dropped_by_reason: [u64; DropReason::ALL.len()],
}

impl Default for RelayCounters {
    fn default() -> Self {
        Self {
            encapsulated: 0,
            forwarded: 0,
            queued: 0,
            flushed: 0,
            bubbles_sent: 0,
            direct_bubbles_sent: 0,
            bubbles_received: 0,
            give_ups: 0,
            icmp_errors_sent: 0,
            icmp_errors_rate_limited: 0,
            peers_created: 0,
            evictions: 0,
            trusted_evictions: 0,
            bubbles_rate_limited: 0,
            expirations: 0,
            lenient_accepts: 0,
            dropped_by_reason: [0; DropReason::ALL.len()],
        }
    }
}

impl RelayCounters {
    /// Packets dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        reason_index(reason)
            .and_then(|i| self.dropped_by_reason.get(i).copied())
            .unwrap_or(0)
    }

    /// Packets dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_by_reason.iter().sum()
    }

    fn drop_n(&mut self, reason: DropReason, n: u64) {
        if let Some(c) = reason_index(reason).and_then(|i| self.dropped_by_reason.get_mut(i)) {
            *c += n;
        }
    }
}

fn reason_index(reason: DropReason) -> Option<usize> {
    DropReason::ALL.iter().position(|r| *r == reason)
}

/// Current sizes, for gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayGauges {
    /// Peer entries.
    pub peers: usize,
    /// Trusted peers (valid or not).
    pub peers_trusted: usize,
    /// Untrusted peers (bubbling, failed or idle).
    pub peers_untrusted: usize,
    /// Packets held in queues.
    pub queued_packets: usize,
    /// Bytes held in queues.
    pub queued_bytes: usize,
    /// Outputs waiting in [`Relay::poll_output`].
    pub pending_outputs: usize,
}

/// Where a peer is in the bubble exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerPhase {
    /// No exchange running.
    Idle,
    /// Bubbles sent, waiting for an answer; the retransmission timer runs.
    Bubbling,
    /// The exchange got no answer: packets are refused until the bubble window ends.
    Failed,
}

/// A read-only view of a peer entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The mapping packets are sent to: embedded in the address, or recorded on trust.
    pub mapping: SocketAddrV4,
    /// The peer proved its mapping.
    pub trusted: bool,
    /// Trusted and heard from within [`RelayConfig::validity`].
    pub valid: bool,
    /// Bubble exchange state.
    pub phase: PeerPhase,
    /// Bubbles sent in the current window.
    pub bubbles: u8,
    /// Queued packets.
    pub queued_packets: usize,
    /// Queued bytes.
    pub queued_bytes: usize,
}

const F_TRUSTED: u8 = 1;
/// The slab slot is free; its [`Peer::xchg`] links the free list.
const F_FREE: u8 = 2;
const X_NONCE: u8 = 1;
const X_PREV_NONCE: u8 = 2;

/// Takes one token from a bucket of `burst` tokens refilled at `rate` per second, kept in
/// thousandths; `now` in ms. False (nothing taken) when empty or when `rate` is 0.
fn take_token(tokens: &mut u64, last: &mut u64, rate: u32, burst: u32, now: u64) -> bool {
    let rate = u64::from(rate);
    let elapsed = now.saturating_sub(*last);
    *last = (*last).max(now);
    // `rate` tokens per second = `rate` thousandths of a token per millisecond.
    *tokens = tokens
        .saturating_add(elapsed.saturating_mul(rate))
        .min(u64::from(burst) * 1000);
    if rate > 0 && *tokens >= 1000 {
        *tokens -= 1000;
        true
    } else {
        false
    }
}

/// One peer: 40 bytes in the peer slab, found through the [`Index`]. Times are 32-bit
/// millisecond offsets from [`Relay::base`]. What only a peer in a bubble exchange needs
/// lives in an [`Exchange`], queued packets in the queue slab.
#[derive(Clone, Copy, Debug)]
struct Peer {
    addr: Ipv6Addr,
    /// Last accepted reception (validity).
    last_rx: u32,
    /// Last use in either direction (expiry, eviction order).
    last_used: u32,
    /// Last bubble sent ([`NEVER32`] if none).
    last_bubble: u32,
    /// Slot of the peer's exchange while it is [`PeerPhase::Bubbling`] or
    /// [`PeerPhase::Failed`], else [`NONE`]. In a free slot: the next free slot.
    xchg: u32,
    mapping: SocketAddrV4,
    flags: u8,
    phase: PeerPhase,
}

impl Peer {
    fn trusted(&self) -> bool {
        self.flags & F_TRUSTED != 0
    }

    fn live(&self) -> bool {
        self.flags & F_FREE == 0
    }
}

/// The state of a peer's bubble exchange, from its first bubble until it is answered (or,
/// after a give-up, until the peer is removed or tries again): pacing, nonces, the
/// retransmission timer and the queue. One slab slot per peer in an exchange, so trusted
/// peers do not pay for it.
#[derive(Clone, Copy, Debug)]
struct Exchange {
    /// Owner (peer slot); [`NONE`] when the slot is free.
    peer: u32,
    /// Position in the timer heap, or [`NONE`].
    timer: u32,
    /// Slot in the queue slab, or [`NO_QUEUE`].
    queue: u32,
    /// Start of the bubble window (first bubble since the last answer), a time offset.
    window_start: u32,
    /// Nonce of the latest indirect bubble (valid with [`X_NONCE`]).
    nonce: [u8; 4],
    /// Nonce of the one before (valid with [`X_PREV_NONCE`]).
    prev_nonce: [u8; 4],
    nonces: u8,
    /// Bubbles sent in the current window.
    bubbles: u8,
}

/// What the pacing rules allow now.
enum Gate {
    Now,
    At(u64),
    Exhausted,
}

/// Durations of the configuration in milliseconds, clamped to [`MIN_TIMER`]..=[`MAX_TIMER`].
#[derive(Clone, Copy, Debug)]
struct Timing {
    validity: u64,
    idle: u64,
    interval: u64,
    window: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.clamp(MIN_TIMER, MAX_TIMER).as_millis()).unwrap_or(MAX_TIMER_MS)
}

/// Moves a time offset `d` milliseconds back, saturating at 0 ([`NEVER32`] stays).
fn shift_back(r: &mut u32, d: u64) {
    if *r != NEVER32 {
        *r = u32::try_from(u64::from(*r).saturating_sub(d)).unwrap_or(0);
    }
}

/// Shrinks a vector whose length fell below a quarter of its capacity (amortized O(1): the
/// next reallocation needs the length to halve or double again).
fn shrink_vec<T>(v: &mut Vec<T>) {
    if v.capacity() >= SHRINK_MIN && v.len() < v.capacity() / 4 {
        v.shrink_to(v.len() * 2);
    }
}

/// [`shrink_vec`] for a deque.
fn shrink_deque<T>(v: &mut VecDeque<T>) {
    if v.capacity() >= SHRINK_MIN && v.len() < v.capacity() / 4 {
        v.shrink_to(v.len() * 2);
    }
}

/// A bucket of the [`Index`]: the low 32 bits of the peer's keyed hash and its slab slot.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    hash: u32,
    /// [`NONE`]: empty.
    slot: u32,
}

const EMPTY: Bucket = Bucket {
    hash: 0,
    slot: NONE,
};

/// The peer index: address → slab slot. Open addressing with linear probing over 8-byte
/// buckets, at most 3/4 full; the address itself is only in the slab (a bucket's hash is
/// compared first, so a lookup reads the slab of other peers only on a 32-bit hash match).
/// Deletion shifts the following entries back (no tombstones), so probe sequences stay as
/// short as the load allows. The home bucket of an entry is `hash & mask`, so growing and
/// compacting need no rehashing.
#[derive(Debug, Default)]
struct Index {
    buckets: Vec<Bucket>,
    len: usize,
}

impl Index {
    /// Buckets for `n` entries (a power of two, at least 16, at most 3/4 full).
    fn capacity_for(n: usize) -> usize {
        let mut c = 16usize;
        while n.saturating_mul(4) > c.saturating_mul(3) {
            c = c.saturating_mul(2);
        }
        c
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// The bucket of the entry with `hash` for which `is(slot)` holds.
    fn find(&self, hash: u32, mut is: impl FnMut(u32) -> bool) -> Option<usize> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            // Never more than 3/4 full: an empty bucket ends every probe.
            let b = self.buckets.get(i)?;
            if b.slot == NONE {
                return None;
            }
            if b.hash == hash && is(b.slot) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    fn slot(&self, bucket: usize) -> Option<u32> {
        self.buckets
            .get(bucket)
            .map(|b| b.slot)
            .filter(|s| *s != NONE)
    }

    /// Adds an entry (the caller knows it is absent).
    fn insert(&mut self, hash: u32, slot: u32) {
        if (self.len + 1).saturating_mul(4) > self.buckets.len().saturating_mul(3) {
            self.rebuild(Self::capacity_for(self.len + 1), |s| s);
        }
        self.place(Bucket { hash, slot });
        self.len += 1;
    }

    fn place(&mut self, b: Bucket) {
        let mask = self.mask();
        let mut i = b.hash as usize & mask;
        while let Some(cur) = self.buckets.get_mut(i) {
            if cur.slot == NONE {
                *cur = b;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Removes the entry in `bucket`: later entries of the probe run move back into the
    /// hole when it lies on their path from their home bucket.
    fn remove_at(&mut self, bucket: usize) {
        let mask = self.mask();
        if self.slot(bucket).is_none() {
            return;
        }
        let mut hole = bucket;
        let mut k = bucket;
        loop {
            k = (k + 1) & mask;
            let Some(&b) = self.buckets.get(k) else {
                break;
            };
            if b.slot == NONE {
                break;
            }
            let home = b.hash as usize & mask;
            if k.wrapping_sub(home) & mask >= k.wrapping_sub(hole) & mask {
                if let Some(h) = self.buckets.get_mut(hole) {
                    *h = b;
                }
                hole = k;
            }
        }
        if let Some(h) = self.buckets.get_mut(hole) {
            *h = EMPTY;
        }
        self.len -= 1;
    }

    /// Moves every entry into `cap` buckets, renumbering slots with `remap`.
    fn rebuild(&mut self, cap: usize, remap: impl Fn(u32) -> u32) {
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; cap]);
        self.len = 0;
        for b in old {
            if b.slot != NONE {
                self.place(Bucket {
                    hash: b.hash,
                    slot: remap(b.slot),
                });
                self.len += 1;
            }
        }
    }
}

/// The bubble retransmission timers: a binary min-heap of `(due, exchange slot)` with each
/// exchange's position in [`Exchange::timer`], so that a timer is removed as soon as its
/// exchange ends (answered, given up, peer removed). Only peers in an exchange have one.
#[derive(Debug, Default)]
struct Timers {
    heap: Vec<(u32, u32)>,
}

impl Timers {
    fn peek(&self) -> Option<(u32, u32)> {
        self.heap.first().copied()
    }

    /// Arms (or moves) the timer of exchange `slot` to `due`.
    fn set(&mut self, xs: &mut [Exchange], slot: u32, due: u32) {
        let Some(x) = xs.get_mut(slot as usize) else {
            return;
        };
        let pos = match self.heap.get_mut(x.timer as usize) {
            Some(e) => {
                e.0 = due;
                x.timer as usize
            }
            None => {
                x.timer = u32::try_from(self.heap.len()).unwrap_or(NONE);
                self.heap.push((due, slot));
                self.heap.len() - 1
            }
        };
        let pos = self.sift_up(xs, pos);
        self.sift_down(xs, pos);
    }

    /// Disarms the timer of exchange `slot`, if any.
    fn remove(&mut self, xs: &mut [Exchange], slot: u32) {
        let Some(x) = xs.get_mut(slot as usize) else {
            return;
        };
        let pos = std::mem::replace(&mut x.timer, NONE) as usize;
        if pos >= self.heap.len() {
            return;
        }
        let Some(last) = self.heap.pop() else {
            return;
        };
        if let Some(e) = self.heap.get_mut(pos) {
            *e = last;
            self.note(xs, pos);
            let pos = self.sift_up(xs, pos);
            self.sift_down(xs, pos);
        }
    }

    /// Records in its exchange where the entry at `pos` now is.
    fn note(&self, xs: &mut [Exchange], pos: usize) {
        if let Some(x) = self.heap.get(pos).and_then(|e| xs.get_mut(e.1 as usize)) {
            x.timer = pos as u32;
        }
    }

    fn swap(&mut self, xs: &mut [Exchange], a: usize, b: usize) {
        self.heap.swap(a, b);
        self.note(xs, a);
        self.note(xs, b);
    }

    fn sift_up(&mut self, xs: &mut [Exchange], mut pos: usize) -> usize {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.heap.get(pos) >= self.heap.get(parent) {
                break;
            }
            self.swap(xs, pos, parent);
            pos = parent;
        }
        pos
    }

    fn sift_down(&mut self, xs: &mut [Exchange], mut pos: usize) {
        loop {
            let left = 2 * pos + 1;
            let Some(l) = self.heap.get(left) else {
                break;
            };
            let child = match self.heap.get(left + 1) {
                Some(r) if r < l => left + 1,
                _ => left,
            };
            if self.heap.get(child) >= self.heap.get(pos) {
                break;
            }
            self.swap(xs, pos, child);
            pos = child;
        }
    }
}

/// A queued packet's bytes, one slab slot per peer with a non-empty queue. Packets are
/// stored back to back; each is a complete IPv6 packet, so its length is in its header.
#[derive(Debug, Default)]
struct QueueSlot {
    bytes: Vec<u8>,
    packets: usize,
}

#[derive(Debug, Default)]
struct QueueSlab {
    slots: Vec<QueueSlot>,
    free: Vec<u32>,
    /// Capacity kept by free slots for reuse; bounded by the global queue cap.
    retained: usize,
}

impl QueueSlab {
    fn alloc(&mut self) -> Option<u32> {
        if let Some(i) = self.free.pop() {
            if let Some(s) = self.slots.get(i as usize) {
                self.retained = self.retained.saturating_sub(s.bytes.capacity());
            }
            return Some(i);
        }
        let i = u32::try_from(self.slots.len())
            .ok()
            .filter(|i| *i != NO_QUEUE)?;
        self.slots.push(QueueSlot::default());
        Some(i)
    }

    fn release(&mut self, i: u32, retain_limit: usize) {
        let Some(s) = self.slots.get_mut(i as usize) else {
            return;
        };
        s.bytes.clear();
        s.packets = 0;
        if self.retained + s.bytes.capacity() > retain_limit {
            s.bytes = Vec::new();
        } else {
            self.retained += s.bytes.capacity();
        }
        self.free.push(i);
    }
}

/// Iterates over the IPv6 packets stored back to back in `bytes`.
fn split_packets(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let plen = bytes.get(4..6).map(|b| u16::from_be_bytes([b[0], b[1]]))?;
        let len = IPV6_HEADER_LEN + usize::from(plen);
        let pkt = bytes.get(..len)?;
        bytes = bytes.get(len..).unwrap_or(&[]);
        Some(pkt)
    })
}

/// An output waiting for [`Relay::poll_output`]. Data outputs point into the arena.
#[derive(Clone, Copy, Debug)]
enum Pending {
    Bubble {
        to: SocketAddrV4,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        nonce: Option<[u8; 4]>,
        hop_limit: u8,
    },
    Udp {
        to: SocketAddrV4,
        off: usize,
        len: usize,
    },
    Ipv6 {
        off: usize,
        len: usize,
    },
}

impl Pending {
    fn wire_len(&self) -> usize {
        match self {
            Self::Bubble { nonce, .. } => IPV6_HEADER_LEN + if nonce.is_some() { 6 } else { 0 },
            Self::Udp { len, .. } | Self::Ipv6 { len, .. } => *len,
        }
    }
}

/// Bounded output queue: small descriptors plus one reused byte arena.
#[derive(Debug)]
struct OutQueue {
    items: VecDeque<Pending>,
    /// Bytes of data outputs, appended in order.
    arena: Vec<u8>,
    /// Absolute offset of `arena[0]`.
    base: usize,
    /// Bytes of all pending outputs (the cap applies to this).
    live: usize,
    max_items: usize,
    max_bytes: usize,
}

impl OutQueue {
    fn new(max_items: usize, max_bytes: usize) -> Self {
        Self {
            items: VecDeque::new(),
            arena: Vec::new(),
            base: 0,
            live: 0,
            max_items,
            max_bytes,
        }
    }

    fn has_room(&self, len: usize) -> bool {
        self.items.len() < self.max_items && self.live.saturating_add(len) <= self.max_bytes
    }

    fn push_bubble(&mut self, p: Pending) -> bool {
        let len = p.wire_len();
        if !self.has_room(len) {
            return false;
        }
        self.live += len;
        self.items.push_back(p);
        true
    }

    /// Appends `len` bytes written by `fill` and a descriptor built from their offset.
    fn push_data(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
        make: impl FnOnce(usize) -> Pending,
    ) -> bool {
        if !self.has_room(len) {
            return false;
        }
        let start = self.arena.len();
        self.arena.resize(start + len, 0);
        if let Some(dst) = self.arena.get_mut(start..) {
            fill(dst);
        }
        self.live += len;
        self.items.push_back(make(self.base + start));
        true
    }

    fn push_copy(&mut self, data: &[u8], make: impl FnOnce(usize) -> Pending) -> bool {
        self.push_data(data.len(), |d| d.copy_from_slice(data), make)
    }

    fn data(&self, off: usize, len: usize) -> Option<&[u8]> {
        let start = off.checked_sub(self.base)?;
        self.arena.get(start..start.checked_add(len)?)
    }

    /// Removes the front output after it was written (or discarded).
    fn pop_front(&mut self) {
        let Some(p) = self.items.pop_front() else {
            return;
        };
        self.live = self.live.saturating_sub(p.wire_len());
        if self.items.is_empty() {
            self.base += self.arena.len();
            self.arena.clear();
            return;
        }
        // Reclaim the consumed prefix of the arena once it is large: O(live) copies
        // amortized over at least `max_bytes / 2` consumed bytes.
        if let Pending::Udp { off, len, .. } | Pending::Ipv6 { off, len } = p {
            let dead = (off + len).saturating_sub(self.base);
            if dead > (self.max_bytes / 2).max(1 << 16) && dead <= self.arena.len() {
                self.arena.drain(..dead);
                self.base += dead;
            }
        }
    }
}

/// SipHash-2-4 (Aumasson & Bernstein), keyed: the peer table's hasher and the per-peer
/// link-local derivation.
#[derive(Clone, Debug)]
struct SipHasher24 {
    v: [u64; 4],
    tail: u64,
    ntail: usize,
    length: usize,
}

impl SipHasher24 {
    fn new_with_keys(k0: u64, k1: u64) -> Self {
        Self {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            length: 0,
        }
    }

    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[2] = v[2].wrapping_add(v[3]);
        v[1] = v[1].rotate_left(13);
        v[3] = v[3].rotate_left(16);
        v[1] ^= v[0];
        v[3] ^= v[2];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[1]);
        v[0] = v[0].wrapping_add(v[3]);
        v[1] = v[1].rotate_left(17);
        v[3] = v[3].rotate_left(21);
        v[1] ^= v[2];
        v[3] ^= v[0];
        v[2] = v[2].rotate_left(32);
    }

    /// SipHash-2-4 of exactly 16 bytes (an IPv6 address): the same value as
    /// [`Hasher::write`] then [`Hasher::finish`], without the buffering.
    fn hash_16(k0: u64, k1: u64, bytes: &[u8; 16]) -> u64 {
        let m = u128::from_le_bytes(*bytes);
        let mut s = Self::new_with_keys(k0, k1);
        s.compress(m as u64);
        s.compress((m >> 64) as u64);
        s.length = 16;
        s.finish()
    }

    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        Self::round(&mut self.v);
        Self::round(&mut self.v);
        self.v[0] ^= m;
    }
}

impl Hasher for SipHasher24 {
    fn write(&mut self, mut bytes: &[u8]) {
        self.length = self.length.wrapping_add(bytes.len());
        while self.ntail != 0 {
            let Some((&b, rest)) = bytes.split_first() else {
                return;
            };
            self.tail |= u64::from(b) << (8 * self.ntail);
            self.ntail += 1;
            bytes = rest;
            if self.ntail == 8 {
                let m = self.tail;
                self.compress(m);
                self.tail = 0;
                self.ntail = 0;
            }
        }
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.compress(u64::from_le_bytes(w));
        }
        for (i, &b) in chunks.remainder().iter().enumerate() {
            self.tail |= u64::from(b) << (8 * i);
        }
        self.ntail = chunks.remainder().len();
    }

    fn finish(&self) -> u64 {
        let mut s = self.clone();
        let b = ((self.length as u64 & 0xff) << 56) | self.tail;
        s.compress(b);
        s.v[2] ^= 0xff;
        for _ in 0..4 {
            Self::round(&mut s.v);
        }
        s.v[0] ^ s.v[1] ^ s.v[2] ^ s.v[3]
    }
}

/// The relay state machine. See the module documentation.
pub struct Relay {
    cfg: RelayConfig,
    t: Timing,
    rng: Box<dyn RngCore + Send>,
    /// Key of the peer index's hash.
    map_key: (u64, u64),
    /// Key of the per-peer link-local derivation.
    ll_key: (u64, u64),
    epoch: Instant,
    /// Latest time seen (ms since `epoch`); time never goes backwards inside the relay.
    now: u64,
    /// Origin of the 32-bit time offsets stored in the peer table (ms since `epoch`).
    base: u64,
    /// The peer slab; free slots are linked from `free_peer`.
    peers: Vec<Peer>,
    free_peer: u32,
    /// Live peers.
    live: usize,
    index: Index,
    trusted: usize,
    /// Exchange slab (peers bubbling or failed) and its free slots.
    exchanges: Vec<Exchange>,
    free_exchanges: Vec<u32>,
    /// Expiry / eviction records: `[untrusted, trusted]`, each `(stamp, peer slot)`, exactly
    /// one per live peer.
    lru: [VecDeque<(u32, u32)>; 2],
    /// Bubble retransmission timers, one per bubbling peer.
    timers: Timers,
    queues: QueueSlab,
    queued_bytes: usize,
    queued_packets: usize,
    out: OutQueue,
    /// ICMPv6 token bucket, in thousandths of a token.
    icmp_tokens: u64,
    icmp_last: u64,
    /// Bubble token bucket, in thousandths of a token.
    bubble_tokens: u64,
    bubble_last: u64,
    counters: RelayCounters,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("cfg", &self.cfg)
            .field("peers", &self.live)
            .field("trusted", &self.trusted)
            .field("queued_bytes", &self.queued_bytes)
            .field("pending_outputs", &self.out.items.len())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Creates a relay. `now` is its epoch; `rng` provides the nonces and the hash keys (a
    /// seeded RNG makes a run replayable).
    pub fn new(config: RelayConfig, rng: impl RngCore + Send + 'static, now: Instant) -> Self {
        let mut rng: Box<dyn RngCore + Send> = Box::new(rng);
        let map_key = (rng.next_u64(), rng.next_u64());
        let ll_key = (rng.next_u64(), rng.next_u64());
        let t = Timing {
            validity: millis(config.validity),
            idle: millis(config.idle_timeout),
            interval: millis(config.bubble_interval),
            window: millis(config.bubble_window),
        };
        Self {
            t,
            rng,
            map_key,
            ll_key,
            epoch: now,
            now: 0,
            base: 0,
            peers: Vec::new(),
            free_peer: NONE,
            live: 0,
            index: Index::default(),
            trusted: 0,
            exchanges: Vec::new(),
            free_exchanges: Vec::new(),
            lru: [VecDeque::new(), VecDeque::new()],
            timers: Timers::default(),
            queues: QueueSlab::default(),
            queued_bytes: 0,
            queued_packets: 0,
            out: OutQueue::new(config.max_outputs, config.max_output_bytes),
            icmp_tokens: u64::from(config.icmp_burst) * 1000,
            icmp_last: 0,
            bubble_tokens: u64::from(config.bubble_burst) * 1000,
            bubble_last: 0,
            counters: RelayCounters::default(),
            cfg: config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.cfg
    }

    /// Counters.
    pub fn counters(&self) -> &RelayCounters {
        &self.counters
    }

    /// Current sizes.
    pub fn gauges(&self) -> RelayGauges {
        RelayGauges {
            peers: self.live,
            peers_trusted: self.trusted,
            peers_untrusted: self.live - self.trusted.min(self.live),
            queued_packets: self.queued_packets,
            queued_bytes: self.queued_bytes,
            pending_outputs: self.out.items.len(),
        }
    }

    /// The entry for a Teredo address, if any.
    pub fn peer(&self, addr: &Ipv6Addr) -> Option<PeerInfo> {
        let p = self.peers.get(self.find(addr)? as usize)?;
        let x = self.exchanges.get(p.xchg as usize);
        let slot = x.and_then(|x| self.queues.slots.get(x.queue as usize));
        Some(PeerInfo {
            mapping: p.mapping,
            trusted: p.trusted(),
            valid: self.valid(p, self.now),
            phase: p.phase,
            bubbles: x.map_or(0, |x| x.bubbles),
            queued_packets: slot.map_or(0, |s| s.packets),
            queued_bytes: slot.map_or(0, |s| s.bytes.len()),
        })
    }

    /// The link-local source the relay uses for a bubble to `peer` carrying `nonce`, under
    /// [`BubbleSource::PerPeer`].
    pub fn per_peer_link_local(&self, peer: &Ipv6Addr, nonce: [u8; 4]) -> Ipv6Addr {
        let mut h = SipHasher24::new_with_keys(self.ll_key.0, self.ll_key.1);
        h.write(&peer.octets());
        h.write(&nonce);
        let mut o = [0u8; 16];
        o[0] = 0xfe;
        o[1] = 0x80;
        o[8..].copy_from_slice(&h.finish().to_be_bytes());
        o[8] &= 0xfc;
        Ipv6Addr::from(o)
    }

    fn bubble_source(&self, peer: &Ipv6Addr, nonce: [u8; 4]) -> Ipv6Addr {
        match self.cfg.bubble_source {
            BubbleSource::PerPeer => self.per_peer_link_local(peer, nonce),
            BubbleSource::Fixed(a) => a,
        }
    }

    fn tick(&mut self, now: Instant) -> u64 {
        let t = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(NEVER - 1)
            .min(NEVER - 1);
        self.now = self.now.max(t);
        if self.now - self.base >= REBASE_AT {
            self.rebase();
        }
        self.now
    }

    fn count_drop(&mut self, reason: DropReason) {
        self.counters.drop_n(reason, 1);
    }

    // ---- time offsets -------------------------------------------------------------------

    /// The 32-bit offset of tick `t` (at least [`Self::base`]).
    fn rel(&self, t: u64) -> u32 {
        u32::try_from(t.saturating_sub(self.base))
            .unwrap_or(NEVER32 - 1)
            .min(NEVER32 - 1)
    }

    /// The tick of offset `r` (not [`NEVER32`]).
    fn abs(&self, r: u32) -> u64 {
        self.base.saturating_add(u64::from(r))
    }

    /// Moves the base of the time offsets to `now - MAX_TIMER` once `now` is [`REBASE_AT`]
    /// past it (every 12.4 days or so; O(peers)). Offsets older than the new base become 0,
    /// i.e. at least [`MAX_TIMER`] old, which changes no decision: every configured duration
    /// is at most that. Offsets are at most `REBASE_AT + MAX_TIMER` (a timer due one bubble
    /// interval ahead), well within 32 bits.
    fn rebase(&mut self) {
        let base = self.now.saturating_sub(MAX_TIMER_MS);
        let d = base.saturating_sub(self.base);
        if d == 0 {
            return;
        }
        for p in &mut self.peers {
            shift_back(&mut p.last_rx, d);
            shift_back(&mut p.last_used, d);
            shift_back(&mut p.last_bubble, d);
        }
        for x in &mut self.exchanges {
            shift_back(&mut x.window_start, d);
        }
        // Monotonic: the queues stay ordered and the heap stays a heap.
        for q in &mut self.lru {
            for r in q.iter_mut() {
                shift_back(&mut r.0, d);
            }
        }
        for e in &mut self.timers.heap {
            shift_back(&mut e.0, d);
        }
        self.base = base;
        tracing::debug!(base, "relay time offsets rebased");
    }

    // ---- peer table ---------------------------------------------------------------------

    /// The peer index's hash of an address: the low 32 bits of keyed SipHash-2-4.
    fn hash(&self, addr: &Ipv6Addr) -> u32 {
        SipHasher24::hash_16(self.map_key.0, self.map_key.1, &addr.octets()) as u32
    }

    fn find_hashed(&self, hash: u32, addr: &Ipv6Addr) -> Option<u32> {
        let peers = &self.peers;
        let b = self.index.find(hash, |s| {
            peers.get(s as usize).is_some_and(|p| p.addr == *addr)
        })?;
        self.index.slot(b)
    }

    /// The slab slot of the peer with address `addr`.
    fn find(&self, addr: &Ipv6Addr) -> Option<u32> {
        self.find_hashed(self.hash(addr), addr)
    }

    fn valid(&self, p: &Peer, now: u64) -> bool {
        p.trusted() && now.saturating_sub(self.abs(p.last_rx)) < self.t.validity
    }

    fn insert_peer(
        &mut self,
        now: u64,
        hash: u32,
        addr: Ipv6Addr,
        mapping: SocketAddrV4,
    ) -> Result<u32, DropReason> {
        if self.live >= self.cfg.max_peers {
            self.expire(now);
            if self.live >= self.cfg.max_peers && !self.evict_one() {
                return Err(DropReason::PeerTableFull);
            }
        }
        let now32 = self.rel(now);
        let peer = Peer {
            addr,
            last_rx: 0,
            last_used: now32,
            last_bubble: NEVER32,
            xchg: NONE,
            mapping,
            flags: 0,
            phase: PeerPhase::Idle,
        };
        let i = match self.peers.get_mut(self.free_peer as usize) {
            Some(slot) => {
                let i = self.free_peer;
                self.free_peer = slot.xchg;
                *slot = peer;
                i
            }
            None => {
                let i = u32::try_from(self.peers.len())
                    .ok()
                    .filter(|i| *i != NONE)
                    .ok_or(DropReason::PeerTableFull)?;
                self.peers.push(peer);
                i
            }
        };
        self.live += 1;
        self.index.insert(hash, i);
        self.push_lru(0, now32, i);
        self.counters.peers_created += 1;
        Ok(i)
    }

    fn remove_peer(&mut self, now: u64, i: u32, reason: DropReason) {
        let Some(p) = self.peers.get(i as usize).copied().filter(Peer::live) else {
            return;
        };
        let hash = self.hash(&p.addr);
        if let Some(b) = self.index.find(hash, |s| s == i) {
            self.index.remove_at(b);
        }
        if p.trusted() {
            self.trusted = self.trusted.saturating_sub(1);
        }
        if p.xchg != NONE {
            let queue = self.close_exchange(p.xchg);
            self.discard_queue(now, queue, reason, false);
        }
        if let Some(slot) = self.peers.get_mut(i as usize) {
            slot.flags = F_FREE;
            slot.xchg = self.free_peer;
            self.free_peer = i;
            self.live -= 1;
        }
    }

    /// The exchange of peer `i`, created if needed; [`NONE`] if there is no such peer.
    fn open_exchange(&mut self, i: u32, now32: u32) -> u32 {
        let Some(p) = self.peers.get_mut(i as usize) else {
            return NONE;
        };
        if p.xchg != NONE {
            return p.xchg;
        }
        let x = Exchange {
            peer: i,
            timer: NONE,
            queue: NO_QUEUE,
            window_start: now32,
            nonce: [0; 4],
            prev_nonce: [0; 4],
            nonces: 0,
            bubbles: 0,
        };
        let s = match self.free_exchanges.pop() {
            Some(s) => {
                if let Some(slot) = self.exchanges.get_mut(s as usize) {
                    *slot = x;
                }
                s
            }
            None => {
                // At most one exchange per peer, so this fits in a u32 like the peer slots.
                let s = u32::try_from(self.exchanges.len()).unwrap_or(NONE);
                self.exchanges.push(x);
                s
            }
        };
        p.xchg = s;
        s
    }

    /// Frees exchange `s` (the caller unlinks its peer) and disarms its timer; returns its
    /// queue slot for the caller to flush or discard.
    fn close_exchange(&mut self, s: u32) -> u32 {
        self.timers.remove(&mut self.exchanges, s);
        let Some(x) = self.exchanges.get_mut(s as usize) else {
            return NO_QUEUE;
        };
        x.peer = NONE;
        let queue = std::mem::replace(&mut x.queue, NO_QUEUE);
        self.free_exchanges.push(s);
        queue
    }

    /// Gives memory back after the table shrank: the expiry queues and the timer heap when
    /// below a quarter of their capacity; the peer and exchange slabs (compacted, the index
    /// rebuilt) when below a quarter of their length. Amortized O(1) per removal; never on
    /// the forwarding path.
    fn shrink(&mut self) {
        for q in &mut self.lru {
            shrink_deque(q);
        }
        shrink_vec(&mut self.timers.heap);
        if self.peers.len() >= SHRINK_MIN && self.live < self.peers.len() / 4 {
            self.compact_peers();
        }
        let xlive = self.exchanges.len() - self.free_exchanges.len();
        if self.exchanges.len() >= SHRINK_MIN && xlive < self.exchanges.len() / 4 {
            self.compact_exchanges();
        }
        shrink_vec(&mut self.free_exchanges);
    }

    /// Moves the live peers to the front of the slab (in order) and renumbers every
    /// reference to them.
    fn compact_peers(&mut self) {
        let mut remap = Vec::with_capacity(self.peers.len());
        let mut n = 0u32;
        self.peers.retain(|p| {
            remap.push(if p.live() { n } else { NONE });
            n += u32::from(p.live());
            p.live()
        });
        self.peers.shrink_to_fit();
        self.free_peer = NONE;
        let map = |s: u32| remap.get(s as usize).copied().unwrap_or(NONE);
        for q in &mut self.lru {
            for r in q.iter_mut() {
                r.1 = map(r.1);
            }
        }
        for x in &mut self.exchanges {
            if x.peer != NONE {
                x.peer = map(x.peer);
            }
        }
        self.index.rebuild(Index::capacity_for(self.live), map);
    }

    /// Moves the live exchanges to the front of their slab (in order, so the timer heap's
    /// order is kept) and renumbers every reference to them.
    fn compact_exchanges(&mut self) {
        let mut remap = Vec::with_capacity(self.exchanges.len());
        let mut n = 0u32;
        self.exchanges.retain(|x| {
            let live = x.peer != NONE;
            remap.push(if live { n } else { NONE });
            n += u32::from(live);
            live
        });
        self.exchanges.shrink_to_fit();
        self.free_exchanges.clear();
        let map = |s: u32| remap.get(s as usize).copied().unwrap_or(NONE);
        for p in &mut self.peers {
            if p.live() && p.xchg != NONE {
                p.xchg = map(p.xchg);
            }
        }
        for e in &mut self.timers.heap {
            e.1 = map(e.1);
        }
    }

    // ---- transmit: native IPv6 → Teredo client (RFC 4380 §5.4.1) ------------------------

    /// Handles a native IPv6 packet routed to the relay (destination in 2001::/32). On
    /// `Ok(Encapsulated)` the UDP datagram waits in [`Self::poll_output`]; on `Ok(Queued)`
    /// the packet is held and a bubble may be waiting. On `Err` the packet was dropped (and
    /// counted); an ICMPv6 error or a bubble may still be waiting.
    pub fn handle_ipv6(&mut self, now: Instant, ipv6: &[u8]) -> Result<Handled, DropReason> {
        self.transmit(now, ipv6, false).map(|(h, _)| h)
    }

    /// As [`Self::handle_ipv6`], but for a trusted, valid peer with no output pending it
    /// returns [`InPlace::Udp`]: the caller sends `ipv6` itself (zero copy).
    pub fn handle_ipv6_in_place(
        &mut self,
        now: Instant,
        ipv6: &[u8],
    ) -> Result<InPlace, DropReason> {
        self.transmit(now, ipv6, true)
            .map(|(h, caller_sends)| match h {
                Handled::Encapsulated { to } if caller_sends => InPlace::Udp { to },
                h => InPlace::Done(h),
            })
    }

    fn transmit(
        &mut self,
        now: Instant,
        ipv6: &[u8],
        in_place: bool,
    ) -> Result<(Handled, bool), DropReason> {
        let now = self.tick(now);
        let r = self.transmit_inner(now, ipv6, in_place);
        if let Err(reason) = r {
            self.count_drop(reason);
            tracing::debug!(
                reason = reason.as_str(),
                len = ipv6.len(),
                "relay transmit drop"
            );
        }
        r
    }

    fn transmit_inner(
        &mut self,
        now: u64,
        ipv6: &[u8],
        in_place: bool,
    ) -> Result<(Handled, bool), DropReason> {
        if ipv6.len() < IPV6_HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        if ipv6[0] >> 4 != 6 {
            return Err(DropReason::BadIpVersion);
        }
        check_ipv6_exact_len(ipv6)?;
        if ipv6.len() > MAX_UDP_PAYLOAD {
            return Err(DropReason::TooLarge);
        }
        let (src, dst) = (ipv6_src(ipv6), ipv6_dst(ipv6));
        if dst.is_multicast() {
            return Err(DropReason::NonGlobalDestination);
        }
        let Some(t) = TeredoAddr::from_ipv6(&dst) else {
            return Err(DropReason::NotTeredoDestination);
        };
        // RFC 4380 §5.4.1 / §7.4.3: never send to a non-global IPv4 (or port 0).
        if !is_ipv4_global_unicast(*t.mapped.ip()) || t.mapped.port() == 0 {
            return Err(DropReason::NonGlobalMappedAddress);
        }
        if !is_ipv4_global_unicast(t.server) {
            return Err(DropReason::NonGlobalServer);
        }
        // A router must not forward packets from unspecified, loopback, link-local or
        // multicast sources; ICMPv6 errors could not go back to them either.
        if is_ipv6_non_global(&src) {
            return Err(DropReason::NonGlobalNativeSource);
        }

        // Fast path: trusted and valid.
        let hash = self.hash(&dst);
        let found = self.find_hashed(hash, &dst);
        if let Some(i) = found {
            let (now32, base, validity) = (self.rel(now), self.base, self.t.validity);
            if let Some(p) = self.peers.get_mut(i as usize) {
                if p.trusted() && now.saturating_sub(base + u64::from(p.last_rx)) < validity {
                    p.last_used = now32;
                    let to = p.mapping;
                    if in_place && self.out.items.is_empty() {
                        self.counters.encapsulated += 1;
                        return Ok((Handled::Encapsulated { to }, true));
                    }
                    if !self.out.push_copy(ipv6, |off| Pending::Udp {
                        to,
                        off,
                        len: ipv6.len(),
                    }) {
                        return Err(DropReason::OutputQueueFull);
                    }
                    self.counters.encapsulated += 1;
                    return Ok((Handled::Encapsulated { to }, false));
                }
            }
        }
        self.hold(now, hash, found, dst, t, ipv6)
    }

    /// Queues a packet for a peer that is not trusted and valid, starting a bubble exchange.
    fn hold(
        &mut self,
        now: u64,
        hash: u32,
        found: Option<u32>,
        addr: Ipv6Addr,
        t: TeredoAddr,
        ipv6: &[u8],
    ) -> Result<(Handled, bool), DropReason> {
        let i = match found {
            Some(i) => i,
            None => self.insert_peer(now, hash, addr, t.mapped)?,
        };
        let (now32, window, base) = (self.rel(now), self.t.window, self.base);
        let Some(p) = self.peers.get_mut(i as usize) else {
            return Err(DropReason::PeerTableFull);
        };
        p.last_used = now32;
        if p.phase == PeerPhase::Failed {
            let x = self.exchanges.get_mut(p.xchg as usize);
            let over = x.as_ref().is_none_or(|x| {
                now >= base
                    .saturating_add(u64::from(x.window_start))
                    .saturating_add(window)
            });
            if over {
                p.phase = PeerPhase::Idle;
                if let Some(x) = x {
                    x.bubbles = 0;
                }
            } else {
                self.icmp_unreachable(now, ipv6);
                return Err(DropReason::PeerUnreachable);
            }
        }
        // Idle peers have no queue (it is flushed on trust and discarded on give-up), so
        // starting the exchange first changes nothing but the order of two outputs.
        let mut bubble_sent = false;
        if p.phase == PeerPhase::Idle {
            match self.start_exchange(now, i) {
                Start::Sent => bubble_sent = true,
                Start::Deferred => {}
                Start::GaveUp => {
                    self.icmp_unreachable(now, ipv6);
                    return Err(DropReason::PeerUnreachable);
                }
            }
        }
        // A packet that does not fit is dropped, but the exchange runs anyway.
        self.enqueue(i, ipv6)?;
        Ok((Handled::Queued { bubble_sent }, false))
    }

    fn enqueue(&mut self, i: u32, ipv6: &[u8]) -> Result<(), DropReason> {
        let Some(p) = self.peers.get(i as usize) else {
            return Err(DropReason::PeerTableFull);
        };
        // A peer that is not trusted and valid is in an exchange (bubbling or failed).
        let Some(x) = self.exchanges.get_mut(p.xchg as usize) else {
            return Err(DropReason::QueueFull);
        };
        let (bytes, packets) = self
            .queues
            .slots
            .get(x.queue as usize)
            .map_or((0, 0), |s| (s.bytes.len(), s.packets));
        if packets >= self.cfg.queue_packets_per_peer
            || bytes.saturating_add(ipv6.len()) > self.cfg.queue_bytes_per_peer
        {
            return Err(DropReason::QueueFull);
        }
        if self.queued_bytes.saturating_add(ipv6.len()) > self.cfg.global_queue_bytes {
            return Err(DropReason::GlobalQueueFull);
        }
        if x.queue == NO_QUEUE {
            x.queue = self.queues.alloc().ok_or(DropReason::GlobalQueueFull)?;
        }
        let Some(slot) = self.queues.slots.get_mut(x.queue as usize) else {
            return Err(DropReason::GlobalQueueFull);
        };
        slot.bytes.extend_from_slice(ipv6);
        slot.packets += 1;
        self.queued_bytes += ipv6.len();
        self.queued_packets += 1;
        self.counters.queued += 1;
        Ok(())
    }

    // ---- bubbles ----------------------------------------------------------------------

    fn gate(&mut self, i: u32, now: u64) -> Gate {
        let (window, interval, max, base) = (
            self.t.window,
            self.t.interval,
            self.cfg.max_bubbles_per_window,
            self.base,
        );
        let Some(p) = self.peers.get(i as usize) else {
            return Gate::Exhausted;
        };
        let Some(x) = self.exchanges.get_mut(p.xchg as usize) else {
            return Gate::Exhausted;
        };
        let at = |r: u32, d: u64| base.saturating_add(u64::from(r)).saturating_add(d);
        if x.bubbles > 0 && now >= at(x.window_start, window) {
            x.bubbles = 0;
        }
        if x.bubbles >= max {
            Gate::Exhausted
        } else if p.last_bubble != NEVER32 && now < at(p.last_bubble, interval) {
            Gate::At(at(p.last_bubble, interval))
        } else {
            Gate::Now
        }
    }

    fn start_exchange(&mut self, now: u64, i: u32) -> Start {
        let now32 = self.rel(now);
        self.open_exchange(i, now32);
        if let Some(p) = self.peers.get_mut(i as usize) {
            p.phase = PeerPhase::Bubbling;
        }
        match self.gate(i, now) {
            Gate::Now => {
                self.send_bubbles(now, i);
                Start::Sent
            }
            Gate::At(at) => {
                self.arm(i, at);
                Start::Deferred
            }
            Gate::Exhausted => {
                self.give_up(now, i);
                Start::GaveUp
            }
        }
    }

    fn send_bubbles(&mut self, now: u64, i: u32) {
        let Some(addr) = self.peers.get(i as usize).map(|p| p.addr) else {
            return;
        };
        let nonce = self.rng.next_u32().to_be_bytes();
        let src = self.bubble_source(&addr, nonce);
        let (now32, interval) = (self.rel(now), self.t.interval);
        let Some(p) = self.peers.get_mut(i as usize) else {
            return;
        };
        let Some(x) = self.exchanges.get_mut(p.xchg as usize) else {
            return;
        };
        if x.nonces & X_NONCE != 0 {
            x.prev_nonce = x.nonce;
            x.nonces |= X_PREV_NONCE;
        }
        x.nonce = nonce;
        x.nonces |= X_NONCE;
        if x.bubbles == 0 {
            x.window_start = now32;
        }
        x.bubbles = x.bubbles.saturating_add(1);
        p.last_bubble = now32;
        p.last_used = now32;
        let mapping = p.mapping;
        let server = TeredoAddr::from_octets_unchecked(&addr.octets()).server;
        let hop_limit = self.cfg.bubble_hop_limit;
        let indirect = Pending::Bubble {
            to: SocketAddrV4::new(server, TEREDO_PORT),
            src,
            dst: addr,
            nonce: Some(nonce),
            hop_limit,
        };
        let (rate, burst) = (self.cfg.bubble_rate, self.cfg.bubble_burst);
        if rate > 0
            && !take_token(
                &mut self.bubble_tokens,
                &mut self.bubble_last,
                rate,
                burst,
                now,
            )
        {
            // Skipped, but counted in the exchange: it still gives up on schedule.
            self.counters.bubbles_rate_limited += 1;
            self.arm(i, now.saturating_add(interval));
            return;
        }
        if self.out.push_bubble(indirect) {
            self.counters.bubbles_sent += 1;
        } else {
            self.count_drop(DropReason::OutputQueueFull);
        }
        if self.cfg.direct_bubbles {
            let direct = Pending::Bubble {
                to: mapping,
                src,
                dst: addr,
                nonce: None,
                hop_limit,
            };
            if self.out.push_bubble(direct) {
                self.counters.direct_bubbles_sent += 1;
            } else {
                self.count_drop(DropReason::OutputQueueFull);
            }
        }
        tracing::trace!(peer = %addr, %server, "relay bubble");
        self.arm(i, now.saturating_add(interval));
    }

    /// Arms the retransmission timer of peer `i`'s exchange for `at`.
    fn arm(&mut self, i: u32, at: u64) {
        let due = self.rel(at);
        if let Some(p) = self.peers.get(i as usize) {
            self.timers.set(&mut self.exchanges, p.xchg, due);
        }
    }

    /// A bubble exchange got no answer: drop the queue, tell the sender, refuse packets to
    /// the peer until the bubble window is over.
    fn give_up(&mut self, now: u64, i: u32) {
        let now32 = self.rel(now);
        let Some(p) = self.peers.get_mut(i as usize) else {
            return;
        };
        p.phase = PeerPhase::Failed;
        if p.trusted() {
            p.flags &= !F_TRUSTED;
            self.trusted = self.trusted.saturating_sub(1);
        }
        let (addr, s) = (p.addr, p.xchg);
        self.timers.remove(&mut self.exchanges, s);
        let Some(x) = self.exchanges.get_mut(s as usize) else {
            return;
        };
        if x.bubbles == 0 {
            x.window_start = now32;
        }
        let slot = std::mem::replace(&mut x.queue, NO_QUEUE);
        self.counters.give_ups += 1;
        tracing::debug!(peer = %addr, "relay bubble exchange gave up");
        self.discard_queue(now, slot, DropReason::PeerUnreachable, true);
    }

    /// Drops the packets of a queue slot, counting them under `reason`; optionally sends an
    /// ICMPv6 error to the sender of the first one.
    fn discard_queue(&mut self, now: u64, slot: u32, reason: DropReason, icmp: bool) {
        let Some(s) = self.queues.slots.get_mut(slot as usize) else {
            return;
        };
        let bytes = std::mem::take(&mut s.bytes);
        let packets = std::mem::take(&mut s.packets);
        if icmp {
            if let Some(first) = split_packets(&bytes).next() {
                self.icmp_unreachable(now, first);
            }
        }
        self.counters.drop_n(reason, packets as u64);
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes.len());
        self.queued_packets = self.queued_packets.saturating_sub(packets);
        if let Some(s) = self.queues.slots.get_mut(slot as usize) {
            s.bytes = bytes;
        }
        self.queues.release(slot, self.cfg.global_queue_bytes);
    }

    /// Sends the packets of queue `slot` (of a newly trusted peer), in order, to `to`.
    fn flush(&mut self, slot: u32, to: SocketAddrV4) -> usize {
        let Some(s) = self.queues.slots.get_mut(slot as usize) else {
            return 0;
        };
        let bytes = std::mem::take(&mut s.bytes);
        let packets = std::mem::take(&mut s.packets);
        let mut sent = 0;
        for pkt in split_packets(&bytes) {
            let len = pkt.len();
            if self.out.push_copy(pkt, |off| Pending::Udp { to, off, len }) {
                sent += 1;
            } else {
                self.count_drop(DropReason::OutputQueueFull);
            }
        }
        self.counters.flushed += sent as u64;
        self.counters.encapsulated += sent as u64;
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes.len());
        self.queued_packets = self.queued_packets.saturating_sub(packets);
        if let Some(s) = self.queues.slots.get_mut(slot as usize) {
            s.bytes = bytes;
        }
        self.queues.release(slot, self.cfg.global_queue_bytes);
        sent
    }
    // ---- ICMPv6 errors ------------------------------------------------------------------

    fn icmp_take(&mut self, now: u64) -> bool {
        let (rate, burst) = (self.cfg.icmp_rate, self.cfg.icmp_burst);
        take_token(&mut self.icmp_tokens, &mut self.icmp_last, rate, burst, now)
    }

    /// Queues an ICMPv6 Destination Unreachable (address unreachable) about `invoking` for
    /// its sender, subject to RFC 4443 §2.4 and the rate limit.
    fn icmp_unreachable(&mut self, now: u64, invoking: &[u8]) {
        let Some(src) = self.cfg.icmp_source else {
            return;
        };
        if invoking.len() < IPV6_HEADER_LEN {
            return;
        }
        let dst = ipv6_src(invoking);
        if is_ipv6_non_global(&dst) {
            return;
        }
        // Never an error about an error.
        if invoking[6] == NEXT_HEADER_ICMPV6
            && invoking.get(IPV6_HEADER_LEN).is_some_and(|t| *t < 128)
        {
            return;
        }
        let quote = invoking.len().min(ICMP_ERROR_MAX_LEN - IPV6_HEADER_LEN - 8);
        let total = IPV6_HEADER_LEN + 8 + quote;
        if !self.out.has_room(total) {
            self.count_drop(DropReason::OutputQueueFull);
            return;
        }
        if !self.icmp_take(now) {
            self.counters.icmp_errors_rate_limited += 1;
            return;
        }
        let quoted = &invoking[..quote];
        let ok = self.out.push_data(
            total,
            |b| {
                if emit_ipv6_header(b, src, dst, NEXT_HEADER_ICMPV6, ICMP_HOP_LIMIT, 8 + quote)
                    .is_ok()
                {
                    b[IPV6_HEADER_LEN] = ICMPV6_DEST_UNREACHABLE;
                    b[IPV6_HEADER_LEN + 1] = ICMPV6_ADDRESS_UNREACHABLE;
                    b[IPV6_HEADER_LEN + 2..IPV6_HEADER_LEN + 8].fill(0);
                    b[IPV6_HEADER_LEN + 8..].copy_from_slice(quoted);
                    finish_icmpv6(b);
                }
            },
            |off| Pending::Ipv6 { off, len: total },
        );
        if ok {
            self.counters.icmp_errors_sent += 1;
        }
    }

    // ---- receive: Teredo client → native (RFC 4380 §5.4.2) -------------------------------

    /// Handles a datagram received on the relay's Teredo port from `from`. A packet for the
    /// native side waits in [`Self::poll_output`] as [`Output::Ipv6`] (trailers stripped);
    /// queued packets released by the new trust wait there as [`Output::Udp`].
    pub fn handle_udp(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        data: &[u8],
    ) -> Result<Handled, DropReason> {
        self.receive(now, from, data, false).map(|(h, _)| h)
    }

    /// As [`Self::handle_udp`], but a packet for the native side is not copied: the caller
    /// writes `data[offset..offset + len]` ([`InPlace::Ipv6`]).
    pub fn handle_udp_in_place(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        data: &[u8],
    ) -> Result<InPlace, DropReason> {
        self.receive(now, from, data, true)
            .map(|(h, range)| match (h, range) {
                (Handled::Forwarded { via, flushed }, Some((offset, len))) => InPlace::Ipv6 {
                    offset,
                    len,
                    via,
                    flushed,
                },
                (h, _) => InPlace::Done(h),
            })
    }

    fn receive(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        data: &[u8],
        in_place: bool,
    ) -> Result<(Handled, Option<(usize, usize)>), DropReason> {
        let now = self.tick(now);
        let r = self.receive_inner(now, from, data, in_place);
        if let Err(reason) = r {
            self.count_drop(reason);
            tracing::debug!(%from, reason = reason.as_str(), len = data.len(), "relay receive drop");
        }
        r
    }

    fn receive_inner(
        &mut self,
        now: u64,
        from: SocketAddrV4,
        data: &[u8],
        in_place: bool,
    ) -> Result<(Handled, Option<(usize, usize)>), DropReason> {
        if data.len() > MAX_UDP_PAYLOAD {
            return Err(DropReason::Oversized);
        }
        // Auth headers and origin indications are tolerated and ignored.
        let pkt = TeredoPacket::parse(data)?;
        let src = pkt.src();
        let Some(t) = TeredoAddr::from_ipv6(&src) else {
            return Err(DropReason::NotTeredoSource);
        };
        let bubble = pkt.is_bubble();
        let dst = pkt.dst();
        let (via, i) = self.authenticate(&pkt, &t, src, dst, from, bubble)?;
        let flushed = self.accept(now, i, from, via);
        if bubble {
            self.counters.bubbles_received += 1;
            return Ok((Handled::Bubble { via, flushed }, None));
        }
        if is_teredo(&dst) {
            return Err(DropReason::TeredoDestination);
        }
        // Link-local destinations are only for bubbles (answers to our link-local source).
        if is_ipv6_non_global(&dst) {
            return Err(DropReason::NonGlobalDestination);
        }
        let handled = Handled::Forwarded { via, flushed };
        if in_place {
            self.counters.forwarded += 1;
            return Ok((handled, Some((pkt.ipv6_offset, pkt.ipv6.len()))));
        }
        let len = pkt.ipv6.len();
        if !self
            .out
            .push_copy(pkt.ipv6, |off| Pending::Ipv6 { off, len })
        {
            return Err(DropReason::OutputQueueFull);
        }
        self.counters.forwarded += 1;
        Ok((handled, None))
    }

    /// RFC 4380 §5.4.2 source check, plus the [`TrustPolicy::Lenient`] exceptions. Returns
    /// the peer's slot too.
    fn authenticate(
        &self,
        pkt: &TeredoPacket<'_>,
        t: &TeredoAddr,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        from: SocketAddrV4,
        bubble: bool,
    ) -> Result<(Acceptance, u32), DropReason> {
        let found = self.find(&src);
        if t.mapped == from {
            return match found {
                Some(i) => Ok((Acceptance::EmbeddedMapping, i)),
                None => Err(DropReason::UnknownPeer),
            };
        }
        let Some((i, p)) = found.and_then(|i| Some((i, self.peers.get(i as usize)?))) else {
            return Err(DropReason::SpoofedSource);
        };
        if p.trusted() && p.mapping == from {
            return Ok((Acceptance::RecordedMapping, i));
        }
        // Lenient: only a direct bubble (no origin indication: it did not come through a
        // server) answering our indirect bubble.
        if self.cfg.trust != TrustPolicy::Lenient || !bubble || pkt.origin.is_some() {
            return Err(DropReason::SpoofedSource);
        }
        // The nonces of the current exchange (none once it is answered).
        let nonces = self.exchanges.get(p.xchg as usize).map_or([None; 2], |x| {
            [
                (x.nonces & X_NONCE != 0).then_some(x.nonce),
                (x.nonces & X_PREV_NONCE != 0).then_some(x.prev_nonce),
            ]
        });
        let outstanding = |n: &[u8; 4]| nonces.contains(&Some(*n));
        let proof = if Trailers::new(pkt.trailers)
            .filter(|tr| tr.ty == TYPE_NONCE)
            .filter_map(|tr| tr.nonce())
            .any(|n| outstanding(&n))
        {
            Some(Acceptance::Nonce)
        } else if self.cfg.bubble_source == BubbleSource::PerPeer
            && is_link_local(&dst)
            && nonces
                .iter()
                .flatten()
                .any(|n| dst == self.per_peer_link_local(&src, *n))
        {
            Some(Acceptance::LinkLocal)
        } else {
            None
        };
        let Some(via) = proof else {
            return Err(DropReason::SpoofedSource);
        };
        // The mapping we are about to record must be one we may send to.
        if !is_ipv4_global_unicast(*from.ip()) || from.port() == 0 {
            return Err(DropReason::NonGlobalSource);
        }
        Ok((via, i))
    }

    /// Marks peer `i` trusted with mapping `from`, ends its exchange and releases its queue.
    fn accept(&mut self, now: u64, i: u32, from: SocketAddrV4, via: Acceptance) -> usize {
        let now32 = self.rel(now);
        let Some(p) = self.peers.get_mut(i as usize) else {
            return 0;
        };
        if !p.trusted() {
            p.flags |= F_TRUSTED;
            self.trusted += 1;
        }
        if p.mapping != from {
            tracing::debug!(peer = %p.addr, old = %p.mapping, new = %from, via = via.as_str(), "relay peer mapping");
        }
        p.mapping = from;
        p.last_rx = now32;
        p.last_used = now32;
        p.phase = PeerPhase::Idle;
        let s = std::mem::replace(&mut p.xchg, NONE);
        if matches!(via, Acceptance::Nonce | Acceptance::LinkLocal) {
            self.counters.lenient_accepts += 1;
        }
        if s == NONE {
            return 0;
        }
        let queue = self.close_exchange(s);
        self.flush(queue, from)
    }

    // ---- time ---------------------------------------------------------------------------

    /// When [`Self::handle_timeout`] wants to be called: the next bubble retransmission or
    /// give-up, or the next expiry check. May be in the past (call it now).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|(due, _)| self.abs(due));
        let expiry = self
            .lru
            .iter()
            .filter_map(|q| {
                q.front()
                    .map(|(stamp, _)| self.abs(*stamp).saturating_add(self.t.idle))
            })
            .min();
        let at = match (timer, expiry) {
            (Some(a), Some(b)) => a.min(b),
            (a, None) => a?,
            (None, b) => b?,
        };
        self.epoch.checked_add(Duration::from_millis(at))
    }

    /// Runs due timers: bubble retransmissions, give-ups (ICMPv6 errors), peer expiry. Stops
    /// early while the output queue is full; drain it and call again.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick(now);
        let interval = self.t.interval;
        while let Some((due, s)) = self.timers.peek() {
            if self.abs(due) > now {
                break;
            }
            // Backpressure: two bubbles and an ICMPv6 error must fit.
            if !self
                .out
                .has_room(2 * INDIRECT_BUBBLE_LEN + ICMP_ERROR_MAX_LEN)
                || self.out.items.len() + 3 > self.out.max_items
            {
                break;
            }
            self.timers.remove(&mut self.exchanges, s);
            let Some(i) = self.exchanges.get(s as usize).map(|x| x.peer) else {
                continue;
            };
            let Some(p) = self.peers.get(i as usize) else {
                continue;
            };
            // Timers are disarmed when an exchange ends, so the peer is bubbling, and a
            // timer is armed for the exact due time; both are checked anyway.
            if p.phase != PeerPhase::Bubbling {
                continue;
            }
            if p.last_bubble != NEVER32 {
                let due = self.abs(p.last_bubble).saturating_add(interval);
                if due > now {
                    self.arm(i, due);
                    continue;
                }
            }
            self.retransmit(now, i);
        }
        self.expire(now);
        self.shrink();
    }

    fn retransmit(&mut self, now: u64, i: u32) {
        let limit = self
            .cfg
            .bubble_retries
            .saturating_add(1)
            .min(self.cfg.max_bubbles_per_window);
        let Some(p) = self.peers.get(i as usize) else {
            return;
        };
        let Some(x) = self.exchanges.get(p.xchg as usize) else {
            return;
        };
        if x.bubbles >= limit {
            self.give_up(now, i);
            return;
        }
        match self.gate(i, now) {
            Gate::Now => self.send_bubbles(now, i),
            Gate::At(at) => self.arm(i, at),
            Gate::Exhausted => self.give_up(now, i),
        }
    }

    /// When the peer may be removed.
    fn expires_at(&self, p: &Peer) -> u64 {
        let idle = self.abs(p.last_used).saturating_add(self.t.idle);
        match p.phase {
            PeerPhase::Bubbling => NEVER,
            // Remember the bubble count until the window is over (RFC 4380 §5.2.6).
            PeerPhase::Failed => idle.max(self.exchanges.get(p.xchg as usize).map_or(0, |x| {
                self.abs(x.window_start).saturating_add(self.t.window)
            })),
            PeerPhase::Idle => idle,
        }
    }

    fn push_lru(&mut self, q: usize, stamp: u32, slot: u32) {
        let queue = &mut self.lru[q & 1];
        let stamp = queue.back().map_or(stamp, |(b, _)| stamp.max(*b));
        queue.push_back((stamp, slot));
    }

    /// Removes the peers whose records are due and who really expired; re-queues the others.
    fn expire(&mut self, now: u64) {
        for q in 0..2 {
            while let Some(&(stamp, i)) = self.lru[q].front() {
                if self.abs(stamp).saturating_add(self.t.idle) > now {
                    break;
                }
                self.lru[q].pop_front();
                let Some(p) = self.peers.get(i as usize).copied().filter(Peer::live) else {
                    continue;
                };
                let exp = self.expires_at(&p);
                if exp <= now {
                    self.remove_peer(now, i, DropReason::PeerExpired);
                    self.counters.expirations += 1;
                    continue;
                }
                // Not expired: check again at its expiry, but never schedule past `now`
                // (the queues stay ordered, so nobody behind waits longer than an idle
                // period).
                let next = self.rel(exp.saturating_sub(self.t.idle).min(now));
                self.push_lru(usize::from(p.trusted()), next, i);
            }
        }
    }

    /// Evicts the least recently used untrusted peer (approximately). False when there is
    /// none.
    fn evict_one(&mut self) -> bool {
        let mut scanned = 0;
        while let Some((stamp, i)) = self.lru[0].pop_front() {
            let Some(p) = self.peers.get(i as usize).copied().filter(Peer::live) else {
                continue;
            };
            if p.trusted() {
                self.push_lru(1, p.last_used, i);
                continue;
            }
            scanned += 1;
            if p.last_used > stamp && scanned < EVICT_SCAN {
                self.push_lru(0, p.last_used, i);
                continue;
            }
            let now = self.now;
            self.remove_peer(now, i, DropReason::PeerEvicted);
            self.counters.evictions += 1;
            return true;
        }
        self.cfg.evict_trusted && self.evict_trusted()
    }

    /// Evicts the least recently used trusted peer (approximately, as [`Self::evict_one`]).
    /// False when there is none.
    fn evict_trusted(&mut self) -> bool {
        let mut scanned = 0;
        while let Some((stamp, i)) = self.lru[1].pop_front() {
            let Some(p) = self.peers.get(i as usize).copied().filter(Peer::live) else {
                continue;
            };
            scanned += 1;
            if p.last_used > stamp && scanned < EVICT_SCAN {
                self.push_lru(usize::from(p.trusted()), p.last_used, i);
                continue;
            }
            let now = self.now;
            self.remove_peer(now, i, DropReason::PeerEvicted);
            self.counters.evictions += 1;
            self.counters.trusted_evictions += 1;
            return true;
        }
        false
    }

    // ---- outputs ------------------------------------------------------------------------

    /// Writes the next output into `buf` ([`MAX_UDP_PAYLOAD`] bytes always suffice).
    /// `None` when there is nothing to send. An output that does not fit in `buf` is
    /// discarded and counted (`output_buffer_too_small`).
    pub fn poll_output(&mut self, buf: &mut [u8]) -> Option<Output> {
        loop {
            let p = *self.out.items.front()?;
            let r = self.write_output(&p, buf);
            self.out.pop_front();
            match r {
                Some(o) => return Some(o),
                None => {
                    self.count_drop(DropReason::OutputBufferTooSmall);
                    tracing::warn!(
                        need = p.wire_len(),
                        have = buf.len(),
                        "relay poll_output buffer too small; output discarded"
                    );
                }
            }
        }
    }

    fn write_output(&self, p: &Pending, buf: &mut [u8]) -> Option<Output> {
        match *p {
            Pending::Bubble {
                to,
                src,
                dst,
                nonce,
                hop_limit,
            } => {
                let mut len = emit_bubble(buf, src, dst, hop_limit).ok()?;
                if let Some(n) = nonce {
                    len += Trailers::emit(TYPE_NONCE, &n, buf.get_mut(len..)?).ok()?;
                }
                Some(Output::Udp { to, len })
            }
            Pending::Udp { to, off, len } => {
                let data = self.out.data(off, len)?;
                buf.get_mut(..len)?.copy_from_slice(data);
                Some(Output::Udp { to, len })
            }
            Pending::Ipv6 { off, len } => {
                let data = self.out.data(off, len)?;
                buf.get_mut(..len)?.copy_from_slice(data);
                Some(Output::Ipv6 { len })
            }
        }
    }
}

/// Outcome of starting a bubble exchange.
enum Start {
    Sent,
    Deferred,
    GaveUp,
}

/// Checks the internal consistency of the peer table: slab and free list, index,
/// exactly one expiry record per live peer, exchanges and their back links, the timer
/// heap, the counts.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_invariants(r: &Relay) -> Result<(), String> {
    let live: Vec<u32> = (0..r.peers.len() as u32)
        .filter(|&i| r.peers[i as usize].live())
        .collect();
    if live.len() != r.live {
        return Err(format!("live {} != {}", live.len(), r.live));
    }
    let mut free = 0;
    let mut f = r.free_peer;
    while f != NONE {
        let p = r.peers.get(f as usize).ok_or("free list out of the slab")?;
        if p.live() {
            return Err(format!("live slot {f} in the free list"));
        }
        free += 1;
        f = p.xchg;
        if free > r.peers.len() {
            return Err("free list loops".into());
        }
    }
    if free + r.live != r.peers.len() {
        return Err(format!(
            "{free} free + {} live != {}",
            r.live,
            r.peers.len()
        ));
    }
    if r.index.len != r.live || r.index.len * 4 > r.index.buckets.len() * 3 {
        return Err(format!(
            "index {} of {}",
            r.index.len,
            r.index.buckets.len()
        ));
    }
    let occupied = r.index.buckets.iter().filter(|b| b.slot != NONE).count();
    if occupied != r.live {
        return Err(format!("{occupied} buckets for {} peers", r.live));
    }
    let mut records = vec![0usize; r.peers.len()];
    for &(_, s) in r.lru.iter().flatten() {
        *records
            .get_mut(s as usize)
            .ok_or(format!("record for slot {s}"))? += 1;
    }
    let (mut trusted, mut in_exchange) = (0, 0);
    for &i in &live {
        let p = &r.peers[i as usize];
        if r.find(&p.addr) != Some(i) {
            return Err(format!("{} not found at {i}", p.addr));
        }
        if records[i as usize] != 1 {
            return Err(format!("{} records for slot {i}", records[i as usize]));
        }
        trusted += usize::from(p.trusted());
        let bubbling_or_failed = p.phase != PeerPhase::Idle;
        if bubbling_or_failed != (p.xchg != NONE) {
            return Err(format!("slot {i}: {:?} with exchange {}", p.phase, p.xchg));
        }
        if let Some(x) = r.exchanges.get(p.xchg as usize) {
            in_exchange += 1;
            if x.peer != i {
                return Err(format!("exchange {} belongs to {} not {i}", p.xchg, x.peer));
            }
            // Bubbling ⟺ a timer runs.
            if (p.phase == PeerPhase::Bubbling) != (x.timer != NONE) {
                return Err(format!("slot {i}: {:?} with timer {}", p.phase, x.timer));
            }
        }
    }
    if trusted != r.trusted {
        return Err(format!("trusted {trusted} != {}", r.trusted));
    }
    if in_exchange + r.free_exchanges.len() != r.exchanges.len() {
        return Err(format!(
            "{in_exchange} exchanges + {} free != {}",
            r.free_exchanges.len(),
            r.exchanges.len()
        ));
    }
    for &s in &r.free_exchanges {
        let x = &r.exchanges[s as usize];
        if x.peer != NONE || x.timer != NONE || x.queue != NO_QUEUE {
            return Err(format!("free exchange {s}: {x:?}"));
        }
    }
    check_heap(&r.timers, &r.exchanges)?;
    if r.timers.heap.len() > in_exchange {
        return Err("more timers than exchanges".into());
    }
    Ok(())
}

#[cfg(any(test, feature = "fuzzing"))]
fn check_heap(t: &Timers, xs: &[Exchange]) -> Result<(), String> {
    for (pos, e) in t.heap.iter().enumerate() {
        if pos > 0 && t.heap[(pos - 1) / 2] > *e {
            return Err(format!("heap order at {pos}"));
        }
        if xs.get(e.1 as usize).map(|x| x.timer) != Some(pos as u32) {
            return Err(format!("timer of exchange {} is not at {pos}", e.1));
        }
    }
    let armed = xs.iter().filter(|x| x.timer != NONE).count();
    if armed != t.heap.len() {
        return Err(format!("{armed} armed, {} in the heap", t.heap.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Sans-IO tests: TEREDO.md (b) relay checks 16–20, Strict vs Lenient with a
    //! symmetric-NAT client, peer-table eviction and expiry, queues, ICMPv6 errors, the
    //! zero-copy entry points, then property tests (arbitrary bytes, truncations, structured
    //! operation sequences with invariants).

    use std::collections::HashMap as Map;
    use std::net::Ipv4Addr;

    use proptest::collection::vec;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::wire::ipv6::{emit_bubble, icmpv6_checksum_ok, Echo};
    use crate::wire::origin::OriginIndication;

    /// X's Teredo server.
    const SX: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    /// X's mapping as embedded in its address (and as seen by its server).
    const XMAP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 40005);
    /// A native IPv6 host.
    const H: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
    /// The relay's own native address (source of its ICMPv6 errors).
    const RELAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const SX_3544: SocketAddrV4 = SocketAddrV4::new(SX, TEREDO_PORT);

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn teredo(server: Ipv4Addr, flags: u16, mapped: SocketAddrV4) -> Ipv6Addr {
        TeredoAddr {
            server,
            flags,
            mapped,
        }
        .to_ipv6()
    }

    /// Client X: RFC 5991 random flags, C = 0.
    fn x() -> Ipv6Addr {
        teredo(SX, 0x1027, XMAP)
    }

    fn cfg() -> RelayConfig {
        RelayConfig {
            icmp_source: Some(RELAY_V6),
            ..RelayConfig::default()
        }
    }

    /// An ICMPv6 echo: 40 + 8 + `data_len` bytes (148 with 100 bytes of data, as Miredo's
    /// test pings in TEREDO.md §14 R-a).
    fn echo(src: Ipv6Addr, dst: Ipv6Addr, reply: bool, seq: u16, data_len: usize) -> Vec<u8> {
        let data: Vec<u8> = (0..data_len).map(|i| i as u8).collect();
        let e = Echo {
            reply,
            id: 0x4242,
            seq,
            data: &data,
        };
        let mut v = vec![0u8; 48 + data_len];
        e.emit(&mut v, src, dst, 64).unwrap();
        v
    }

    fn ping(seq: u16) -> Vec<u8> {
        echo(H, x(), false, seq, 100)
    }

    fn seq_of(ipv6: &[u8]) -> u16 {
        Echo::parse(ipv6).unwrap().seq
    }

    fn bubble(src: Ipv6Addr, dst: Ipv6Addr, trailer: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 40];
        emit_bubble(&mut v, src, dst, 0).unwrap();
        v.extend_from_slice(trailer);
        v
    }

    fn nonce_trailer(n: [u8; 4]) -> Vec<u8> {
        vec![0x01, 4, n[0], n[1], n[2], n[3]]
    }

    type Out = (Output, Vec<u8>);

    /// A relay in virtual time.
    struct Lab {
        relay: Relay,
        t0: Instant,
        now: Instant,
        buf: Vec<u8>,
    }

    impl Lab {
        fn new(cfg: RelayConfig) -> Self {
            Self::with_seed(cfg, 7)
        }

        fn with_seed(cfg: RelayConfig, seed: u64) -> Self {
            let t0 = t0();
            Self {
                relay: Relay::new(cfg, ChaCha8Rng::seed_from_u64(seed), t0),
                t0,
                now: t0,
                buf: vec![0u8; MAX_UDP_PAYLOAD],
            }
        }

        fn at(&mut self, s: f64) {
            let t = self.t0 + secs(s);
            assert!(t >= self.now);
            self.now = t;
        }

        fn elapsed(&self) -> f64 {
            (self.now - self.t0).as_secs_f64()
        }

        fn native(&mut self, pkt: &[u8]) -> (Result<Handled, DropReason>, Vec<Out>) {
            let r = self.relay.handle_ipv6(self.now, pkt);
            (r, self.drain())
        }

        fn udp(
            &mut self,
            from: SocketAddrV4,
            data: &[u8],
        ) -> (Result<Handled, DropReason>, Vec<Out>) {
            let r = self.relay.handle_udp(self.now, from, data);
            (r, self.drain())
        }

        fn drain(&mut self) -> Vec<Out> {
            let mut v = Vec::new();
            while let Some(o) = self.relay.poll_output(&mut self.buf) {
                let (Output::Udp { len, .. } | Output::Ipv6 { len }) = o;
                v.push((o, self.buf[..len].to_vec()));
            }
            v
        }

        /// Fires every timer up to `t0 + s` (seconds), returning the outputs with the time
        /// they were produced. Checks that `handle_timeout(now)` always makes progress.
        fn run_to(&mut self, s: f64) -> Vec<(f64, Out)> {
            let end = self.t0 + secs(s);
            let mut v = Vec::new();
            for _ in 0..1_000_000 {
                match self.relay.poll_timeout() {
                    Some(at) if at <= end => {
                        self.now = self.now.max(at);
                        self.relay.handle_timeout(self.now);
                        let el = self.elapsed();
                        v.extend(self.drain().into_iter().map(|o| (el, o)));
                        if let Some(next) = self.relay.poll_timeout() {
                            assert!(next > self.now, "handle_timeout made no progress");
                        }
                    }
                    _ => break,
                }
            }
            self.now = self.now.max(end);
            v
        }

        /// Sends a native packet to X and answers the indirect bubble with X's direct bubble
        /// from its embedded mapping: X is trusted afterwards.
        fn trust_x(&mut self) -> Vec<Out> {
            let (r, out) = self.native(&ping(0));
            assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
            let b = indirect_bubble(&out[..1]);
            let (r, out) = self.udp(XMAP, &bubble(x(), b.src, &[]));
            assert!(matches!(r, Ok(Handled::Bubble { flushed: 1, .. })), "{r:?}");
            out
        }
    }

    /// The fields of an indirect bubble the tests look at.
    #[derive(Debug)]
    struct SeenBubble {
        src: Ipv6Addr,
        nonce: [u8; 4],
    }

    /// Checks `out` is exactly one indirect bubble to SX:3544 for X (TEREDO.md check 16).
    fn indirect_bubble(out: &[Out]) -> SeenBubble {
        assert_eq!(out.len(), 1, "{out:?}");
        let (o, bytes) = &out[0];
        assert_eq!(
            *o,
            Output::Udp {
                to: SX_3544,
                len: INDIRECT_BUBBLE_LEN
            }
        );
        check_indirect(bytes, x())
    }

    fn check_indirect(bytes: &[u8], dst: Ipv6Addr) -> SeenBubble {
        let p = TeredoPacket::parse(bytes).unwrap();
        assert!(p.is_bubble());
        assert_eq!((p.ipv6_payload().len(), p.next_header()), (0, 59));
        assert_eq!(p.dst(), dst);
        assert_eq!(p.hop_limit(), DEFAULT_BUBBLE_HOP_LIMIT);
        assert!(is_link_local(&p.src()));
        assert!(p.auth.is_none() && p.origin.is_none());
        let t: Vec<_> = Trailers::new(p.trailers).collect();
        assert_eq!(t.len(), 1);
        SeenBubble {
            src: p.src(),
            nonce: t[0].nonce().unwrap(),
        }
    }

    /// An ICMPv6 destination unreachable (address) to `to` quoting `quoted`'s start.
    fn check_icmp(bytes: &[u8], to: Ipv6Addr, quoted: &[u8]) {
        assert!(icmpv6_checksum_ok(bytes));
        assert_eq!(ipv6_src(bytes), RELAY_V6);
        assert_eq!(ipv6_dst(bytes), to);
        assert_eq!(bytes[6], NEXT_HEADER_ICMPV6);
        assert_eq!(&bytes[40..42], &[1, 3]);
        assert!(bytes.len() <= ICMP_ERROR_MAX_LEN);
        let q = &bytes[48..];
        assert_eq!(q, &quoted[..q.len()]);
        assert_eq!(q.len(), quoted.len().min(ICMP_ERROR_MAX_LEN - 48));
    }

    // ---- check 16: bubble, then deliver ---------------------------------------------------

    #[test]
    fn check16_bubble_then_deliver() {
        let mut lab = Lab::new(cfg());
        let (r, out) = lab.native(&ping(1));
        assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
        // One indirect bubble to SX:3544 (with a nonce trailer), no data to X.
        let b = indirect_bubble(&out);
        assert_eq!(b.src, lab.relay.per_peer_link_local(&x(), b.nonce));
        let info = lab.relay.peer(&x()).unwrap();
        assert!(!info.trusted);
        assert_eq!(info.phase, PeerPhase::Bubbling);
        assert_eq!(info.mapping, XMAP);
        // More packets while untrusted: queued, no more bubbles before the timer.
        for seq in 2..=3 {
            lab.at(f64::from(seq) * 0.3);
            let (r, out) = lab.native(&ping(seq));
            assert_eq!(r, Ok(Handled::Queued { bubble_sent: false }));
            assert!(out.is_empty());
        }
        // X's direct bubble (src X, dst = our bubble source) from X's mapping.
        lab.at(1.0);
        let (r, out) = lab.udp(XMAP, &bubble(x(), b.src, &[]));
        assert_eq!(
            r,
            Ok(Handled::Bubble {
                via: Acceptance::EmbeddedMapping,
                flushed: 3
            })
        );
        let seqs: Vec<u16> = out
            .iter()
            .map(|(o, bytes)| {
                assert_eq!(*o, Output::Udp { to: XMAP, len: 148 });
                seq_of(bytes)
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3], "FIFO, to exactly X's mapping");
        assert_eq!(
            out[0].1,
            ping(1),
            "unchanged: plain IPv6 in UDP, no auth, no OI"
        );
        let info = lab.relay.peer(&x()).unwrap();
        assert!(info.trusted && info.valid);
        assert_eq!(info.phase, PeerPhase::Idle);
        // Trusted: data goes straight to the mapping, no bubble.
        let (r, out) = lab.native(&ping(4));
        assert_eq!(r, Ok(Handled::Encapsulated { to: XMAP }));
        assert_eq!(out, vec![(Output::Udp { to: XMAP, len: 148 }, ping(4))]);
        // X's replies are forwarded natively, trailers stripped.
        let reply = echo(x(), H, true, 4, 100);
        let mut with_trailer = reply.clone();
        with_trailer.extend_from_slice(&[0x01, 4, 9, 9, 9, 9]);
        for data in [&reply, &with_trailer] {
            let (r, out) = lab.udp(XMAP, data);
            assert_eq!(
                r,
                Ok(Handled::Forwarded {
                    via: Acceptance::EmbeddedMapping,
                    flushed: 0
                })
            );
            assert_eq!(out, vec![(Output::Ipv6 { len: 148 }, reply.clone())]);
        }
        // The retransmission timer of the finished exchange sends nothing.
        assert!(lab.run_to(10.0).is_empty());
        let c = lab.relay.counters();
        assert_eq!((c.bubbles_sent, c.flushed, c.forwarded), (1, 3, 2));
        assert_eq!(c.dropped_total(), 0);
    }

    #[test]
    fn check16_queue_bound_fifo() {
        // Miredo's budget (1280 B) keeps 8 of 10 148-byte packets (and sends them LIFO);
        // ours keeps the first 8 in order. The default budget keeps all 10.
        for (budget, kept) in [(1280, 8u16), (DEFAULT_QUEUE_BYTES_PER_PEER, 10)] {
            let mut lab = Lab::new(RelayConfig {
                queue_bytes_per_peer: budget,
                ..cfg()
            });
            let mut src = None;
            for seq in 1..=10u16 {
                lab.at(f64::from(seq) * 0.1);
                let (r, out) = lab.native(&ping(seq));
                if seq == 1 {
                    src = Some(indirect_bubble(&out).src);
                }
                if seq <= kept {
                    assert!(matches!(r, Ok(Handled::Queued { .. })), "{seq}: {r:?}");
                } else {
                    assert_eq!(r, Err(DropReason::QueueFull));
                }
            }
            assert_eq!(lab.relay.gauges().queued_bytes, 148 * usize::from(kept));
            let (r, out) = lab.udp(XMAP, &bubble(x(), src.unwrap(), &[]));
            assert!(
                matches!(r, Ok(Handled::Bubble { flushed, .. }) if flushed == usize::from(kept))
            );
            let seqs: Vec<u16> = out.iter().map(|(_, b)| seq_of(b)).collect();
            assert_eq!(seqs, (1..=kept).collect::<Vec<_>>());
            assert!(out.iter().map(|(_, b)| b.len()).sum::<usize>() <= budget);
            assert_eq!(
                lab.relay.counters().dropped(DropReason::QueueFull),
                u64::from(10 - kept)
            );
            assert_eq!(lab.relay.gauges().queued_bytes, 0);
        }
    }

    #[test]
    fn queue_packet_cap() {
        let mut lab = Lab::new(RelayConfig {
            queue_packets_per_peer: 2,
            ..cfg()
        });
        let r: Vec<_> = (1..=3).map(|s| lab.native(&ping(s)).0).collect();
        assert!(matches!(r[0], Ok(Handled::Queued { bubble_sent: true })));
        assert!(matches!(r[1], Ok(Handled::Queued { bubble_sent: false })));
        assert_eq!(r[2], Err(DropReason::QueueFull));
    }

    #[test]
    fn direct_bubbles_for_a_relay_behind_a_nat() {
        let mut lab = Lab::new(RelayConfig {
            direct_bubbles: true,
            ..cfg()
        });
        let (_, out) = lab.native(&ping(1));
        assert_eq!(out.len(), 2);
        let b = check_indirect(&out[0].1, x());
        assert_eq!(
            out[0].0,
            Output::Udp {
                to: SX_3544,
                len: 46
            }
        );
        // The direct bubble goes to the embedded mapping, without a nonce trailer
        // (RFC 6081 §5.2.4.2), from the same source.
        assert_eq!(out[1].0, Output::Udp { to: XMAP, len: 40 });
        let p = TeredoPacket::parse(&out[1].1).unwrap();
        assert!(p.is_bubble() && p.trailers.is_empty());
        assert_eq!((p.src(), p.dst()), (b.src, x()));
        // Retransmissions repeat both.
        let later = lab.run_to(2.0);
        assert_eq!(later.len(), 2);
        assert_eq!(lab.relay.counters().direct_bubbles_sent, 2);
    }

    #[test]
    fn cone_bit_is_ignored() {
        let mut lab = Lab::new(cfg());
        let cone = teredo(SX, FLAG_CONE_FOR_TEST, XMAP);
        let (r, out) = lab.native(&echo(H, cone, false, 1, 10));
        assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].0,
            Output::Udp {
                to: SX_3544,
                len: 46
            }
        );
    }

    const FLAG_CONE_FOR_TEST: u16 = crate::addr::FLAG_CONE;

    #[test]
    fn fixed_bubble_source_and_hop_limit() {
        let ll = crate::addr::LL_MIREDO_RESTRICTED;
        let mut lab = Lab::new(RelayConfig {
            bubble_source: BubbleSource::Fixed(ll),
            bubble_hop_limit: 0,
            ..cfg()
        });
        let (_, out) = lab.native(&ping(1));
        let p = TeredoPacket::parse(&out[0].1).unwrap();
        assert_eq!((p.src(), p.hop_limit()), (ll, 0));
    }

    #[test]
    fn per_peer_link_local_changes_with_peer_and_nonce() {
        let lab = Lab::new(cfg());
        let r = &lab.relay;
        let y = teredo(SX, 0, "203.0.113.9:1".parse().unwrap());
        let a = r.per_peer_link_local(&x(), [1, 2, 3, 4]);
        assert!(is_link_local(&a));
        assert_eq!(a.octets()[8] & 3, 0);
        assert_eq!(a, r.per_peer_link_local(&x(), [1, 2, 3, 4]));
        assert_ne!(a, r.per_peer_link_local(&x(), [1, 2, 3, 5]));
        assert_ne!(a, r.per_peer_link_local(&y, [1, 2, 3, 4]));
        // Keyed: another seed gives other addresses.
        let other = Relay::new(cfg(), ChaCha8Rng::seed_from_u64(8), lab.t0);
        assert_ne!(a, other.per_peer_link_local(&x(), [1, 2, 3, 4]));
    }

    // ---- check 17: pacing and give-up ---------------------------------------------------

    /// Splits outputs into indirect bubbles (times) and ICMPv6 errors; anything else (data
    /// or bubbles to X's mapping) fails the test.
    fn classify(at: f64, out: &[Out], bubbles: &mut Vec<f64>, icmps: &mut Vec<(f64, Vec<u8>)>) {
        for (o, bytes) in out {
            match o {
                Output::Udp { to, .. } if *to == SX_3544 => {
                    check_indirect(bytes, x());
                    bubbles.push(at);
                }
                Output::Ipv6 { .. } => icmps.push((at, bytes.clone())),
                o => panic!("unexpected output {o:?} at {at}"),
            }
        }
    }

    fn assert_paced(bubbles: &[f64]) {
        for w in bubbles.windows(2) {
            assert!(w[1] - w[0] >= 2.0 - 1e-9, "bubbles {bubbles:?}");
        }
        for (i, &t) in bubbles.iter().enumerate() {
            let in_window = bubbles[i..].iter().filter(|&&u| u < t + 300.0).count();
            assert!(
                in_window <= 4,
                "more than 4 bubbles in 300 s from {t}: {bubbles:?}"
            );
        }
    }

    #[test]
    fn check17_pacing_and_give_up_with_one_packet_per_second() {
        let mut lab = Lab::new(cfg());
        let (mut bubbles, mut icmps) = (Vec::new(), Vec::new());
        let mut results = Vec::new();
        for s in 0..=320u16 {
            for (at, o) in lab.run_to(f64::from(s)) {
                classify(at, std::slice::from_ref(&o), &mut bubbles, &mut icmps);
            }
            let (r, out) = lab.native(&ping(s));
            classify(f64::from(s), &out, &mut bubbles, &mut icmps);
            results.push(r);
        }
        assert_paced(&bubbles);
        // Timer-driven: 0, 2, 4, 6 (RFC: ≥ 2 s apart; Miredo 3 s because of its 1 s clock),
        // then nothing until the 300 s window is over, then a new exchange.
        assert_eq!(bubbles, [0.0, 2.0, 4.0, 6.0, 300.0, 302.0, 304.0, 306.0]);
        // Give-up 2 s after the 4th bubble: the queue (seq 0..=7) is dropped and the sender
        // of the first queued packet gets "address unreachable".
        let (t, first) = &icmps[0];
        assert_eq!(*t, 8.0);
        check_icmp(first, H, &ping(0));
        for (s, r) in results.iter().enumerate() {
            match s {
                0..=7 | 300..=307 => assert!(matches!(r, Ok(Handled::Queued { .. })), "{s}"),
                // While failed, packets are refused with an ICMPv6 error each (1/s is under
                // the rate limit).
                _ => assert_eq!(*r, Err(DropReason::PeerUnreachable), "{s}"),
            }
        }
        let errors_for = |s: u16| icmps.iter().filter(|(_, b)| b[48..] == ping(s)[..]).count();
        assert_eq!(errors_for(0), 1);
        for s in 8..300u16 {
            assert_eq!(errors_for(s), 1, "{s}");
        }
        assert_eq!(icmps.iter().filter(|(t, _)| *t == 308.0).count(), 2);
        let c = lab.relay.counters();
        assert_eq!(c.give_ups, 2);
        assert_eq!(c.bubbles_sent, 8);
        // 8 queued at the first give-up + 292 refused + 8 at the second + 13 refused after it.
        assert_eq!(c.dropped(DropReason::PeerUnreachable), 8 + 292 + 8 + 13);
    }

    #[test]
    fn check17_retransmits_on_the_timer_without_new_packets() {
        let mut lab = Lab::new(cfg());
        let (_, out) = lab.native(&ping(1));
        let first = indirect_bubble(&out);
        let (mut bubbles, mut icmps) = (vec![0.0], Vec::new());
        let mut nonces = vec![first.nonce];
        for (at, o) in lab.run_to(400.0) {
            if let Output::Udp { .. } = o.0 {
                nonces.push(check_indirect(&o.1, x()).nonce);
            }
            classify(at, std::slice::from_ref(&o), &mut bubbles, &mut icmps);
        }
        assert_eq!(bubbles, [0.0, 2.0, 4.0, 6.0]);
        assert_eq!(icmps.len(), 1);
        assert_eq!(icmps[0].0, 8.0);
        check_icmp(&icmps[0].1, H, &ping(1));
        // A fresh nonce in every bubble (RFC 6081 §5.2.4.1).
        let mut sorted = nonces.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
        let c = lab.relay.counters();
        assert_eq!((c.give_ups, c.dropped(DropReason::PeerUnreachable)), (1, 1));
        // The failed entry was kept until the window ended, then expired.
        assert!(lab.relay.peer(&x()).is_none());
        assert_eq!(lab.relay.gauges(), RelayGauges::default());
    }

    #[test]
    fn failed_peer_is_remembered_for_the_whole_window() {
        let mut lab = Lab::new(cfg());
        lab.native(&ping(1)).0.unwrap();
        lab.run_to(299.0);
        let info = lab.relay.peer(&x()).expect("kept while the window runs");
        assert_eq!(info.phase, PeerPhase::Failed);
        // A packet after a silent minute still may not restart the bubbles.
        let (r, out) = lab.native(&ping(2));
        assert_eq!(r, Err(DropReason::PeerUnreachable));
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0].0, Output::Ipv6 { .. }));
        // After the window: a new exchange.
        lab.run_to(300.0);
        let (r, out) = lab.native(&ping(3));
        assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
        indirect_bubble(&out);
    }

    #[test]
    fn check17_icmp_errors_are_rate_limited() {
        let mut lab = Lab::new(cfg());
        lab.native(&ping(0)).0.unwrap();
        lab.run_to(8.0); // give-up: one error, 9 tokens left
                         // 100 packets/s for 10 s into the failed peer.
        let mut sent = Vec::new();
        for i in 0..1000u16 {
            lab.at(8.0 + f64::from(i) * 0.01);
            let (r, out) = lab.native(&ping(i));
            assert_eq!(r, Err(DropReason::PeerUnreachable));
            if !out.is_empty() {
                sent.push(lab.elapsed());
            }
        }
        // Token bucket: 10 deep, 10/s: at most burst + rate × t in any interval.
        for (i, &t) in sent.iter().enumerate() {
            for (j, &u) in sent.iter().enumerate().skip(i) {
                assert!((j - i + 1) as f64 <= 10.0 + 10.0 * (u - t) + 1e-6);
            }
        }
        assert!((100..=110).contains(&sent.len()), "{}", sent.len());
        let c = lab.relay.counters();
        assert_eq!(c.icmp_errors_sent as usize, sent.len() + 1);
        assert_eq!(c.icmp_errors_rate_limited as usize, 1000 - sent.len());
    }

    #[test]
    fn icmp_errors_follow_rfc4443() {
        // Without a source address no error is sent (the give-up is still counted).
        let mut lab = Lab::new(RelayConfig {
            icmp_source: None,
            ..cfg()
        });
        lab.native(&ping(0)).0.unwrap();
        assert!(lab
            .run_to(20.0)
            .iter()
            .all(|(_, (o, _))| matches!(o, Output::Udp { .. })));
        assert_eq!(lab.relay.counters().give_ups, 1);

        // A large invoking packet is quoted up to the 1280-byte minimum MTU.
        let mut lab = Lab::new(cfg());
        let big = echo(H, x(), false, 1, 1400);
        lab.native(&big).0.unwrap();
        let out = lab.run_to(20.0);
        let (_, (o, bytes)) = out.last().unwrap();
        assert_eq!(*o, Output::Ipv6 { len: 1280 });
        check_icmp(bytes, H, &big);

        // Never an error about an ICMPv6 error.
        let mut lab = Lab::new(cfg());
        let mut err = echo(H, x(), false, 1, 20);
        err[40] = 1; // destination unreachable
        finish_icmpv6(&mut err);
        lab.native(&err).0.unwrap();
        assert!(lab
            .run_to(20.0)
            .iter()
            .all(|(_, (o, _))| matches!(o, Output::Udp { .. })));
    }

    // ---- check 18: egress IPv4 filters ------------------------------------------------

    #[test]
    fn check18_non_global_embedded_addresses_emit_nothing() {
        let mut lab = Lab::new(RelayConfig {
            direct_bubbles: true,
            ..cfg()
        });
        for mapped in [
            "192.168.1.5:40005",
            "10.0.0.1:1",
            "127.0.0.1:5",
            "169.254.0.1:5",
            "172.16.5.5:5",
            "224.0.0.1:5",
            "255.255.255.255:5",
            "0.1.2.3:5",
            "192.88.99.1:5",
            "203.0.113.5:0",
        ] {
            let dst = teredo(SX, 0, mapped.parse().unwrap());
            let (r, out) = lab.native(&echo(H, dst, false, 1, 10));
            assert_eq!(r, Err(DropReason::NonGlobalMappedAddress), "{mapped}");
            assert!(out.is_empty());
        }
        for server in [
            "10.0.0.1",
            "192.168.0.1",
            "127.0.0.1",
            "224.0.0.1",
            "0.0.0.0",
        ] {
            let dst = teredo(server.parse().unwrap(), 0, XMAP);
            let (r, out) = lab.native(&echo(H, dst, false, 1, 10));
            assert_eq!(r, Err(DropReason::NonGlobalServer), "{server}");
            assert!(out.is_empty());
        }
        assert!(lab.run_to(400.0).is_empty(), "no bubble later either");
        assert_eq!(lab.relay.gauges().peers, 0);
    }

    #[test]
    fn native_side_filters() {
        let mut lab = Lab::new(cfg());
        let cases: [(Vec<u8>, DropReason); 7] = [
            (
                echo(H, "2001:db8::5".parse().unwrap(), false, 1, 8),
                DropReason::NotTeredoDestination,
            ),
            (
                echo(H, "ff02::1".parse().unwrap(), false, 1, 8),
                DropReason::NonGlobalDestination,
            ),
            (
                echo(H, "2002::1".parse().unwrap(), false, 1, 8),
                DropReason::NotTeredoDestination,
            ),
            (
                echo("fe80::1".parse().unwrap(), x(), false, 1, 8),
                DropReason::NonGlobalNativeSource,
            ),
            (
                echo(Ipv6Addr::UNSPECIFIED, x(), false, 1, 8),
                DropReason::NonGlobalNativeSource,
            ),
            (ping(1)[..39].to_vec(), DropReason::Truncated),
            ([&ping(1)[..], &[0u8][..]].concat(), DropReason::Malformed),
        ];
        for (pkt, reason) in cases {
            let (r, out) = lab.native(&pkt);
            assert_eq!(r, Err(reason));
            assert!(out.is_empty());
        }
        let mut v4 = ping(1);
        v4[0] = 0x45;
        assert_eq!(lab.native(&v4).0, Err(DropReason::BadIpVersion));
        assert_eq!(lab.native(&ping(1)[..100]).0, Err(DropReason::BadLength));
        assert_eq!(lab.relay.gauges().peers, 0);
        assert_eq!(lab.relay.counters().dropped_total(), 9);
    }

    // ---- check 19: ingress anti-spoofing ---------------------------------------------------

    #[test]
    fn check19_ingress_anti_spoofing() {
        let mut lab = Lab::new(cfg());
        lab.trust_x();
        let reply = echo(x(), H, true, 1, 20);
        // Received from :40001 but the source embeds :40005.
        let wrong_port: SocketAddrV4 = "203.0.113.5:40001".parse().unwrap();
        let wrong_ip: SocketAddrV4 = "203.0.113.6:40005".parse().unwrap();
        for from in [wrong_port, wrong_ip] {
            for data in [reply.clone(), bubble(x(), H, &[])] {
                let (r, out) = lab.udp(from, &data);
                assert_eq!(r, Err(DropReason::SpoofedSource));
                assert!(out.is_empty());
            }
        }
        // Non-Teredo IPv6 source.
        let (r, out) = lab.udp(XMAP, &echo("2001:db8::7".parse().unwrap(), H, true, 1, 20));
        assert_eq!(r, Err(DropReason::NotTeredoSource));
        assert!(out.is_empty());
        // Mapping matches but no peer entry (the relay never sent to it): dropped as Miredo.
        let ymap: SocketAddrV4 = "203.0.113.9:5000".parse().unwrap();
        let y = teredo(SX, 0, ymap);
        for data in [echo(y, H, false, 1, 20), bubble(y, H, &[])] {
            let (r, out) = lab.udp(ymap, &data);
            assert_eq!(r, Err(DropReason::UnknownPeer));
            assert!(out.is_empty());
        }
        assert!(lab.relay.peer(&y).is_none());
        // Trusted peer: forwarded, trailers stripped; auth header and origin indication
        // tolerated.
        let mut full = Vec::new();
        full.extend_from_slice(&[0, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0]);
        let mut oi = [0u8; 8];
        OriginIndication(SX_3544).emit(&mut oi).unwrap();
        full.extend_from_slice(&oi);
        full.extend_from_slice(&reply);
        full.extend_from_slice(&[0x01, 4, 1, 2, 3, 4, 0x80, 0]);
        let (r, out) = lab.udp(XMAP, &full);
        assert!(matches!(r, Ok(Handled::Forwarded { .. })));
        assert_eq!(
            out,
            vec![(Output::Ipv6 { len: reply.len() }, reply.clone())]
        );
        // Destinations: Teredo (client to client), link-local / multicast (not a bubble).
        for (dst, reason) in [
            (teredo(SX, 0, ymap), DropReason::TeredoDestination),
            ("fe80::1".parse().unwrap(), DropReason::NonGlobalDestination),
            ("ff02::1".parse().unwrap(), DropReason::NonGlobalDestination),
            (Ipv6Addr::LOCALHOST, DropReason::NonGlobalDestination),
        ] {
            let (r, out) = lab.udp(XMAP, &echo(x(), dst, false, 1, 8));
            assert_eq!(r, Err(reason), "{dst}");
            assert!(out.is_empty());
        }
        // …but a bubble to a link-local destination is fine (and consumed).
        let (r, out) = lab.udp(XMAP, &bubble(x(), "fe80::1".parse().unwrap(), &[]));
        assert!(matches!(r, Ok(Handled::Bubble { .. })));
        assert!(out.is_empty());
        // Malformed datagrams.
        for (data, reason) in [
            (vec![0u8; 10], DropReason::Truncated),
            (reply[..60].to_vec(), DropReason::BadLength),
            (
                [&reply[..], &[0x41, 0][..]].concat(),
                DropReason::MandatoryTrailer,
            ),
            (
                [
                    &oi[..],
                    &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
                    &reply[..],
                ]
                .concat(),
                DropReason::BadEncapsulation,
            ),
            (vec![0u8; MAX_UDP_PAYLOAD + 1], DropReason::Oversized),
        ] {
            assert_eq!(lab.udp(XMAP, &data).0, Err(reason));
        }
    }

    // ---- check 20: staleness --------------------------------------------------------

    #[test]
    fn check20_staleness_triggers_a_new_exchange() {
        let mut lab = Lab::new(cfg());
        lab.trust_x();
        // Still valid at 29 s although only the relay talked since: direct.
        lab.at(29.0);
        let (r, _) = lab.native(&ping(1));
        assert_eq!(r, Ok(Handled::Encapsulated { to: XMAP }));
        assert!(lab.run_to(30.5).is_empty());
        // > 30 s without reception: the next packet is held and bubbles first.
        let (r, out) = lab.native(&ping(2));
        assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
        let b = indirect_bubble(&out);
        let info = lab.relay.peer(&x()).unwrap();
        assert!(info.trusted && !info.valid);
        // X answers from its mapping: the packet is released.
        lab.at(31.0);
        let (r, out) = lab.udp(XMAP, &bubble(x(), b.src, &nonce_trailer(b.nonce)));
        assert!(matches!(r, Ok(Handled::Bubble { flushed: 1, .. })));
        assert_eq!(out, vec![(Output::Udp { to: XMAP, len: 148 }, ping(2))]);
        let (r, _) = lab.native(&ping(3));
        assert_eq!(r, Ok(Handled::Encapsulated { to: XMAP }));
    }

    #[test]
    fn stale_peer_that_stays_silent_loses_trust() {
        let mut lab = Lab::new(cfg());
        lab.trust_x();
        lab.at(40.0);
        lab.native(&ping(1)).0.unwrap();
        let out = lab.run_to(60.0);
        assert_eq!(
            out.len(),
            4,
            "3 retransmissions and an ICMPv6 error: {out:?}"
        );
        let info = lab.relay.peer(&x()).unwrap();
        assert!(!info.trusted);
        assert_eq!(info.phase, PeerPhase::Failed);
        assert_eq!(lab.relay.gauges().peers_trusted, 0);
    }

    // ---- Strict vs Lenient with a symmetric-NAT client -------------------------------

    /// X behind a symmetric NAT: its server saw XMAP (embedded), the relay sees another
    /// mapping.
    const XSYM: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 50000);

    fn symmetric_setup(trust: TrustPolicy) -> (Lab, SeenBubble) {
        let mut lab = Lab::new(RelayConfig { trust, ..cfg() });
        let (_, out) = lab.native(&ping(1));
        let b = indirect_bubble(&out);
        lab.at(0.5);
        (lab, b)
    }

    #[test]
    fn strict_drops_a_symmetric_nat_answer() {
        let (mut lab, b) = symmetric_setup(TrustPolicy::Strict);
        let (r, out) = lab.udp(XSYM, &bubble(x(), b.src, &nonce_trailer(b.nonce)));
        assert_eq!(r, Err(DropReason::SpoofedSource));
        assert!(out.is_empty());
        let info = lab.relay.peer(&x()).unwrap();
        assert!(!info.trusted);
        assert_eq!(info.queued_packets, 1);
    }

    #[test]
    fn lenient_trusts_a_nonce_answer_and_records_the_actual_mapping() {
        let (mut lab, b) = symmetric_setup(TrustPolicy::Lenient);
        // RFC 6081 §5.2.4.4: the direct bubble echoes our nonce (dst: X's choice).
        let (r, out) = lab.udp(XSYM, &bubble(x(), H, &nonce_trailer(b.nonce)));
        assert_eq!(
            r,
            Ok(Handled::Bubble {
                via: Acceptance::Nonce,
                flushed: 1
            })
        );
        assert_eq!(out, vec![(Output::Udp { to: XSYM, len: 148 }, ping(1))]);
        assert_eq!(lab.relay.peer(&x()).unwrap().mapping, XSYM);
        let (r, _) = lab.native(&ping(2));
        assert_eq!(r, Ok(Handled::Encapsulated { to: XSYM }));
        let (r, out) = lab.udp(XSYM, &echo(x(), H, true, 2, 20));
        assert!(matches!(
            r,
            Ok(Handled::Forwarded {
                via: Acceptance::RecordedMapping,
                ..
            })
        ));
        assert_eq!(out.len(), 1);
        // Any other mapping is still refused.
        let other: SocketAddrV4 = "203.0.113.5:50001".parse().unwrap();
        assert_eq!(
            lab.udp(other, &echo(x(), H, true, 3, 20)).0,
            Err(DropReason::SpoofedSource)
        );
        assert_eq!(lab.relay.counters().lenient_accepts, 1);
    }

    #[test]
    fn lenient_trusts_an_answer_to_the_per_peer_link_local() {
        // Miredo-style clients ignore trailers but answer to the bubble's source.
        let (mut lab, b) = symmetric_setup(TrustPolicy::Lenient);
        let (r, out) = lab.udp(XSYM, &bubble(x(), b.src, &[]));
        assert_eq!(
            r,
            Ok(Handled::Bubble {
                via: Acceptance::LinkLocal,
                flushed: 1
            })
        );
        assert_eq!(out[0].0, Output::Udp { to: XSYM, len: 148 });
    }

    #[test]
    fn lenient_accepts_the_previous_nonce_after_a_retransmission() {
        let (mut lab, first) = symmetric_setup(TrustPolicy::Lenient);
        let again = lab.run_to(2.0);
        assert_eq!(again.len(), 1);
        let second = check_indirect(&again[0].1 .1, x());
        assert_ne!(first.nonce, second.nonce);
        let (r, _) = lab.udp(XSYM, &bubble(x(), H, &nonce_trailer(first.nonce)));
        assert!(matches!(
            r,
            Ok(Handled::Bubble {
                via: Acceptance::Nonce,
                ..
            })
        ));
    }

    #[test]
    fn lenient_refuses_everything_else() {
        let (mut lab, b) = symmetric_setup(TrustPolicy::Lenient);
        let wrong = [b.nonce[0] ^ 1, b.nonce[1], b.nonce[2], b.nonce[3]];
        let mut with_oi = vec![0u8; 8];
        OriginIndication(XSYM).emit(&mut with_oi).unwrap();
        with_oi.extend_from_slice(&bubble(x(), b.src, &nonce_trailer(b.nonce)));
        let mut data_with_nonce = echo(x(), H, true, 1, 20);
        data_with_nonce.extend_from_slice(&nonce_trailer(b.nonce));
        let other_ll = bubble(x(), "fe80::1".parse().unwrap(), &nonce_trailer(wrong));
        for (from, data, reason) in [
            (
                XSYM,
                bubble(x(), H, &nonce_trailer(wrong)),
                DropReason::SpoofedSource,
            ),
            (XSYM, other_ll, DropReason::SpoofedSource),
            // Came through a server (origin indication): not a direct bubble.
            (XSYM, with_oi, DropReason::SpoofedSource),
            // Only bubbles can carry the proof.
            (XSYM, data_with_nonce, DropReason::SpoofedSource),
            // Proof is fine, but the mapping could never be sent to.
            (
                "10.0.0.1:5".parse().unwrap(),
                bubble(x(), b.src, &nonce_trailer(b.nonce)),
                DropReason::NonGlobalSource,
            ),
        ] {
            let (r, out) = lab.udp(from, &data);
            assert_eq!(r, Err(reason));
            assert!(out.is_empty());
        }
        assert!(!lab.relay.peer(&x()).unwrap().trusted);
        // After trust the nonces are spent: a replay from yet another mapping fails.
        lab.udp(XSYM, &bubble(x(), H, &nonce_trailer(b.nonce)))
            .0
            .unwrap();
        let third: SocketAddrV4 = "203.0.113.5:50002".parse().unwrap();
        assert_eq!(
            lab.udp(third, &bubble(x(), b.src, &nonce_trailer(b.nonce)))
                .0,
            Err(DropReason::SpoofedSource)
        );
    }

    #[test]
    fn fixed_bubble_source_is_no_evidence() {
        let ll = crate::addr::LL_MIREDO_RESTRICTED;
        let mut lab = Lab::new(RelayConfig {
            trust: TrustPolicy::Lenient,
            bubble_source: BubbleSource::Fixed(ll),
            ..cfg()
        });
        let (_, out) = lab.native(&ping(1));
        let b = indirect_bubble_fixed(&out);
        assert_eq!(
            lab.udp(XSYM, &bubble(x(), ll, &[])).0,
            Err(DropReason::SpoofedSource)
        );
        assert!(matches!(
            lab.udp(XSYM, &bubble(x(), ll, &nonce_trailer(b))).0,
            Ok(Handled::Bubble {
                via: Acceptance::Nonce,
                ..
            })
        ));
    }

    fn indirect_bubble_fixed(out: &[Out]) -> [u8; 4] {
        let p = TeredoPacket::parse(&out[0].1).unwrap();
        Trailers::new(p.trailers).next().unwrap().nonce().unwrap()
    }

    // ---- peer table -------------------------------------------------------------------

    fn peer_n(n: u16) -> Ipv6Addr {
        teredo(
            SX,
            0,
            SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 50), 1000 + n),
        )
    }

    fn mapping_n(n: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 50), 1000 + n)
    }

    /// Sends one packet to peer `n`; returns the bubble source if a bubble went out.
    fn send_to(lab: &mut Lab, n: u16) -> (Result<Handled, DropReason>, Option<Ipv6Addr>) {
        let (r, out) = lab.native(&echo(H, peer_n(n), false, n, 20));
        let src = out.iter().find_map(|(o, b)| {
            matches!(o, Output::Udp { to, .. } if *to == SX_3544)
                .then(|| TeredoPacket::parse(b).unwrap().src())
        });
        (r, src)
    }

    fn answer(lab: &mut Lab, n: u16) {
        let (r, _) = lab.udp(mapping_n(n), &bubble(peer_n(n), H, &[]));
        assert!(matches!(r, Ok(Handled::Bubble { .. })), "{r:?}");
    }

    #[test]
    fn eviction_prefers_least_recently_used_untrusted_peers() {
        let mut lab = Lab::new(RelayConfig {
            max_peers: 3,
            evict_trusted: false,
            ..cfg()
        });
        for n in 0..3 {
            lab.at(f64::from(n) * 0.1);
            assert!(send_to(&mut lab, n).0.is_ok());
        }
        answer(&mut lab, 1); // peer 1 trusted
        lab.at(1.0);
        assert!(send_to(&mut lab, 3).0.is_ok()); // evicts peer 0
        assert!(lab.relay.peer(&peer_n(0)).is_none());
        assert_eq!(lab.relay.counters().dropped(DropReason::PeerEvicted), 1);
        // Peer 2 is older than peer 3, but used again: peer 3 goes first.
        lab.at(1.2);
        assert!(send_to(&mut lab, 2).0.is_ok());
        lab.at(1.4);
        assert!(send_to(&mut lab, 4).0.is_ok());
        assert!(lab.relay.peer(&peer_n(3)).is_none());
        assert!(lab.relay.peer(&peer_n(2)).is_some());
        assert!(lab.relay.peer(&peer_n(1)).is_some_and(|p| p.trusted));
        // All trusted: a new peer is refused, nothing emitted.
        answer(&mut lab, 2);
        answer(&mut lab, 4);
        let (r, out) = lab.native(&echo(H, peer_n(5), false, 5, 20));
        assert_eq!(r, Err(DropReason::PeerTableFull));
        assert!(out.is_empty());
        let g = lab.relay.gauges();
        assert_eq!((g.peers, g.peers_trusted, g.peers_untrusted), (3, 3, 0));
        assert_eq!(lab.relay.counters().evictions, 2);
        // Timer records of evicted peers are harmless; the survivors keep working.
        lab.run_to(20.0);
        let (r, _) = lab.native(&echo(H, peer_n(4), false, 4, 20));
        assert_eq!(r, Ok(Handled::Encapsulated { to: mapping_n(4) }));
    }

    #[test]
    fn with_only_trusted_peers_the_least_recently_used_one_is_evicted() {
        let mut lab = Lab::new(RelayConfig {
            max_peers: 3,
            ..cfg()
        });
        assert!(lab.relay.config().evict_trusted, "the default");
        for n in 0..3 {
            lab.at(f64::from(n) * 0.1);
            assert!(send_to(&mut lab, n).0.is_ok());
            answer(&mut lab, n);
        }
        // All trusted: the oldest (peer 0) makes room, and the newcomer bubbles.
        lab.at(1.0);
        let (r, bubbled) = send_to(&mut lab, 3);
        assert!(r.is_ok(), "{r:?}");
        assert!(bubbled.is_some(), "the new peer bubbles");
        assert!(lab.relay.peer(&peer_n(0)).is_none());
        let c = lab.relay.counters();
        assert_eq!((c.evictions, c.trusted_evictions), (1, 1));
        let g = lab.relay.gauges();
        assert_eq!((g.peers, g.peers_trusted, g.peers_untrusted), (3, 2, 1));
        // Peer 1 is now the oldest, but used again: peer 2 goes next.
        answer(&mut lab, 3);
        lab.at(2.0);
        let (r, _) = lab.native(&echo(H, peer_n(1), false, 1, 20));
        assert_eq!(r, Ok(Handled::Encapsulated { to: mapping_n(1) }));
        lab.at(2.5);
        assert!(send_to(&mut lab, 4).0.is_ok());
        assert!(lab.relay.peer(&peer_n(2)).is_none());
        for n in [1, 3, 4] {
            assert!(lab.relay.peer(&peer_n(n)).is_some(), "peer {n}");
        }
        assert_eq!(lab.relay.counters().trusted_evictions, 2);
        // An untrusted peer is still preferred: peer 5 evicts the untrusted peer 4.
        lab.at(3.0);
        assert!(send_to(&mut lab, 5).0.is_ok());
        assert!(lab.relay.peer(&peer_n(4)).is_none());
        assert_eq!(lab.relay.counters().trusted_evictions, 2);
        assert_eq!(lab.relay.counters().evictions, 3);
    }

    #[test]
    fn bubble_rate_caps_bubbles_over_all_peers_and_exchanges_still_give_up() {
        let mut lab = Lab::new(RelayConfig {
            bubble_rate: 2,
            bubble_burst: 2,
            max_outputs: 10_000,
            ..cfg()
        });
        let mut bubbles = 0;
        for n in 0..10 {
            let (r, src) = send_to(&mut lab, n);
            assert!(matches!(r, Ok(Handled::Queued { .. })), "{r:?}");
            bubbles += usize::from(src.is_some());
        }
        assert_eq!(bubbles, 2, "the burst");
        assert_eq!(lab.relay.counters().bubbles_rate_limited, 8);
        assert_eq!(lab.relay.counters().bubbles_sent, 2);
        // Over the whole exchange (4 rounds each, 2 s apart, then give-up) no more than the
        // burst plus the rate per second of virtual time go out.
        let out = lab.run_to(30.0);
        let sent = out
            .iter()
            .filter(|(_, (o, _))| matches!(o, Output::Udp { to, .. } if *to == SX_3544))
            .count();
        let c = lab.relay.counters();
        assert_eq!(c.bubbles_sent as usize, 2 + sent);
        assert!(c.bubbles_sent <= 2 + 2 * 30, "{}", c.bubbles_sent);
        assert_eq!(
            c.bubbles_sent + c.bubbles_rate_limited,
            40,
            "4 rounds x 10 peers"
        );
        assert_eq!(c.give_ups, 10);
        assert_eq!(c.dropped(DropReason::PeerUnreachable), 10);
    }

    #[test]
    fn evicted_then_recreated_peer_is_paced_correctly() {
        let mut lab = Lab::new(RelayConfig {
            max_peers: 1,
            ..cfg()
        });
        send_to(&mut lab, 0).0.unwrap();
        lab.at(0.5);
        send_to(&mut lab, 1).0.unwrap(); // evicts 0
        lab.at(1.0);
        send_to(&mut lab, 0).0.unwrap(); // evicts 1, new incarnation of 0 with a bubble at 1.0
        let out = lab.run_to(30.0);
        let times: Vec<f64> = out
            .iter()
            .filter(|(_, (o, _))| matches!(o, Output::Udp { .. }))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            times,
            [3.0, 5.0, 7.0],
            "stale timers of earlier incarnations act not"
        );
    }

    #[test]
    fn idle_peers_expire() {
        let mut lab = Lab::new(cfg());
        lab.trust_x();
        lab.run_to(59.0);
        assert!(lab.relay.peer(&x()).is_some());
        lab.run_to(121.0);
        assert!(lab.relay.peer(&x()).is_none());
        assert_eq!(lab.relay.counters().expirations, 1);
        assert_eq!(lab.relay.gauges(), RelayGauges::default());
        assert_eq!(lab.relay.poll_timeout(), None);
        // A peer in use does not expire.
        lab.trust_x();
        for i in 1..=30 {
            let t = 121.0 + f64::from(i) * 10.0;
            lab.run_to(t);
            lab.at(t);
            lab.udp(XMAP, &echo(x(), H, true, 1, 8)).0.unwrap();
        }
        assert!(lab.relay.peer(&x()).is_some());
    }

    #[test]
    fn global_queue_cap() {
        let mut lab = Lab::new(RelayConfig {
            global_queue_bytes: 200,
            ..cfg()
        });
        // 68-byte packets: two fit, the third does not, yet its peer is still bubbled.
        assert!(send_to(&mut lab, 0).0.is_ok());
        assert!(send_to(&mut lab, 1).0.is_ok());
        let (r, src) = send_to(&mut lab, 2);
        assert_eq!(r, Err(DropReason::GlobalQueueFull));
        assert!(src.is_some());
        assert_eq!(lab.relay.gauges().queued_bytes, 136);
    }

    #[test]
    fn peer_entry_is_small() {
        let n = size_of::<Peer>();
        println!("size_of::<Peer>() = {n}");
        assert!(n <= 40, "{n}");
        assert_eq!(PEER_ENTRY_BYTES, n);
        assert_eq!(size_of::<Bucket>(), 8);
        assert_eq!(size_of::<(u32, u32)>(), 8);
    }

    // ---- peer slab, index, exchanges, timers, time offsets --------------------------

    #[test]
    fn slab_slots_are_reused_after_expiry_and_eviction() {
        let mut lab = Lab::new(RelayConfig {
            max_peers: 4,
            ..cfg()
        });
        for n in 0..4 {
            send_to(&mut lab, n).0.unwrap();
            answer(&mut lab, n);
        }
        assert_eq!(lab.relay.peers.len(), 4);
        check_invariants(&lab.relay).unwrap();
        // Idle peers expire; their slots go to the free list (too few to compact).
        lab.run_to(200.0);
        assert_eq!(lab.relay.gauges(), RelayGauges::default());
        assert_eq!(lab.relay.peers.len(), 4);
        check_invariants(&lab.relay).unwrap();
        // New peers take the freed slots, with fresh state.
        for n in 10..14 {
            let (r, src) = send_to(&mut lab, n);
            assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
            assert!(src.is_some());
            let info = lab.relay.peer(&peer_n(n)).unwrap();
            assert_eq!((info.trusted, info.phase), (false, PeerPhase::Bubbling));
            assert_eq!((info.bubbles, info.queued_packets), (1, 1));
            assert_eq!(info.mapping, mapping_n(n));
        }
        assert_eq!(lab.relay.peers.len(), 4);
        for n in 0..4 {
            assert!(lab.relay.peer(&peer_n(n)).is_none());
            // No stale index entry: an answer from an expired peer finds nothing.
            assert_eq!(
                lab.udp(mapping_n(n), &bubble(peer_n(n), H, &[])).0,
                Err(DropReason::UnknownPeer)
            );
        }
        check_invariants(&lab.relay).unwrap();
        // Full: a new peer evicts the least recently used one and takes its slot.
        let slot = lab.relay.find(&peer_n(10)).unwrap();
        lab.at(200.5);
        send_to(&mut lab, 15).0.unwrap();
        assert!(lab.relay.peer(&peer_n(10)).is_none());
        assert_eq!(lab.relay.find(&peer_n(15)), Some(slot));
        assert_eq!(lab.relay.peers.len(), 4);
        assert_eq!(
            lab.udp(mapping_n(10), &bubble(peer_n(10), H, &[])).0,
            Err(DropReason::UnknownPeer)
        );
        check_invariants(&lab.relay).unwrap();
        // The evicted peer's exchange (queue, timer) went with it; the newcomer's timer runs
        // on its own schedule.
        assert_eq!(lab.relay.gauges().queued_packets, 4);
        let out = lab.run_to(206.6);
        let bubbles_to = |n: u16| {
            out.iter()
                .filter(|(_, (o, b))| {
                    matches!(o, Output::Udp { to, .. } if *to == SX_3544)
                        && TeredoPacket::parse(b).unwrap().dst() == peer_n(n)
                })
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
        };
        assert!(bubbles_to(10).is_empty());
        assert_eq!(bubbles_to(15), [202.5, 204.5, 206.5]);
        assert_eq!(bubbles_to(11).len(), 3);
        check_invariants(&lab.relay).unwrap();
    }

    #[test]
    fn memory_is_given_back_when_the_table_empties() {
        let mut lab = Lab::new(cfg());
        for n in 0..300 {
            send_to(&mut lab, n).0.unwrap();
            answer(&mut lab, n);
        }
        // Peers answered at once: one exchange slot was enough, and no timer is left.
        assert_eq!(lab.relay.exchanges.len(), 1);
        assert!(lab.relay.timers.heap.is_empty());
        assert_eq!(lab.relay.peers.len(), 300);
        assert_eq!(lab.relay.index.buckets.len(), 512);
        check_invariants(&lab.relay).unwrap();
        // Ten peers stay in use; the others expire and the slab is compacted.
        for step in 1..=30 {
            let t = f64::from(step) * 10.0;
            lab.run_to(t);
            lab.at(t);
            for n in 0..10 {
                lab.udp(mapping_n(n), &echo(peer_n(n), H, true, 1, 8))
                    .0
                    .unwrap();
            }
            check_invariants(&lab.relay).unwrap();
        }
        assert_eq!(lab.relay.gauges().peers, 10);
        assert_eq!(lab.relay.peers.len(), 10);
        assert_eq!(lab.relay.index.buckets.len(), 16);
        assert!(lab.relay.lru.iter().map(VecDeque::capacity).sum::<usize>() < 64);
        for n in 0..10 {
            assert_eq!(
                lab.native(&echo(H, peer_n(n), false, 1, 8)).0,
                Ok(Handled::Encapsulated { to: mapping_n(n) })
            );
        }
        for n in 10..300 {
            assert!(lab.relay.peer(&peer_n(n)).is_none());
        }

        // Exchanges: 300 peers bubble, 290 answer; the other ten keep their exact schedule
        // after the exchange slab is compacted, then give up.
        let mut lab = Lab::new(cfg());
        for n in 0..300 {
            send_to(&mut lab, n).0.unwrap();
        }
        assert_eq!(lab.relay.exchanges.len(), 300);
        assert_eq!(lab.relay.timers.heap.len(), 300);
        lab.at(1.0);
        for n in 10..300 {
            answer(&mut lab, n);
        }
        assert_eq!(lab.relay.timers.heap.len(), 10);
        lab.relay.handle_timeout(lab.now);
        assert_eq!(lab.relay.exchanges.len(), 10);
        check_invariants(&lab.relay).unwrap();
        let out = lab.run_to(20.0);
        let bubbles: Vec<f64> = out
            .iter()
            .filter(|(_, (o, _))| matches!(o, Output::Udp { .. }))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(bubbles, [[2.0; 10], [4.0; 10], [6.0; 10]].concat());
        assert_eq!(lab.relay.counters().give_ups, 10);
        assert!(lab.relay.timers.heap.is_empty());
        check_invariants(&lab.relay).unwrap();
    }

    const DAY: f64 = 86_400.0;

    #[test]
    fn time_offsets_are_rebased_far_in_the_future() {
        let mut lab = Lab::new(RelayConfig {
            validity: Duration::from_secs(5 * 86_400),
            idle_timeout: Duration::from_secs(10 * 86_400),
            ..cfg()
        });
        lab.trust_x();
        // X is used every 4 days for 100 days: well past 2^32 ms, through several rebases.
        let mut t = 0.0;
        while t < 100.0 * DAY {
            t += 4.0 * DAY;
            lab.run_to(t);
            lab.at(t);
            assert_eq!(
                lab.native(&ping(1)).0,
                Ok(Handled::Encapsulated { to: XMAP }),
                "{t}"
            );
            lab.udp(XMAP, &echo(x(), H, true, 1, 8)).0.unwrap();
            check_invariants(&lab.relay).unwrap();
        }
        assert!(
            lab.relay.base as f64 >= 50.0 * DAY * 1000.0,
            "{}",
            lab.relay.base
        );
        // Validity still counts in milliseconds after the rebases.
        lab.at(t + 5.0 * DAY - 0.001);
        lab.relay.handle_timeout(lab.now);
        assert!(lab.relay.peer(&x()).is_some_and(|i| i.valid));
        lab.at(t + 5.0 * DAY);
        lab.relay.handle_timeout(lab.now);
        assert!(lab.relay.peer(&x()).is_some_and(|i| !i.valid));
        // An exchange across a rebase keeps its exact 2 s schedule.
        let base = lab.relay.base;
        let start = (base + REBASE_AT) as f64 / 1000.0 - 3.0;
        assert!(start > lab.elapsed());
        lab.run_to(start);
        lab.at(start);
        let (r, src) = send_to(&mut lab, 7);
        assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
        assert!(src.is_some());
        let out = lab.run_to(start + 20.0);
        assert!(lab.relay.base > base, "rebased during the exchange");
        let times: Vec<f64> = out.iter().map(|(t, _)| *t - start).collect();
        assert_eq!(times.len(), 4, "{out:?}");
        for (t, want) in times.iter().zip([2.0, 4.0, 6.0, 8.0]) {
            assert!((t - want).abs() < 1e-6, "{times:?}");
        }
        assert!(
            matches!(out[3].1 .0, Output::Ipv6 { .. }),
            "ICMPv6 at the give-up"
        );
        assert_eq!(lab.relay.counters().give_ups, 1);
        check_invariants(&lab.relay).unwrap();
    }

    #[test]
    fn a_huge_time_jump_makes_nothing_look_fresh() {
        let mut lab = Lab::new(cfg());
        lab.trust_x();
        send_to(&mut lab, 3).0.unwrap();
        answer(&mut lab, 3);
        // 200 days later (offsets would have wrapped four times), without any timer call
        // in between: X is trusted but stale, so the packet waits for a new exchange.
        lab.at(200.0 * DAY);
        let (r, out) = lab.native(&ping(1));
        assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
        let b = indirect_bubble(&out);
        let info = lab.relay.peer(&x()).unwrap();
        assert!(info.trusted && !info.valid);
        // The other peer is long expired and goes at the next timer call.
        lab.relay.handle_timeout(lab.now);
        assert!(lab.relay.peer(&peer_n(3)).is_none());
        assert_eq!(lab.relay.counters().expirations, 1);
        // X answers: valid again, packet delivered.
        let (r, out) = lab.udp(XMAP, &bubble(x(), b.src, &[]));
        assert!(matches!(r, Ok(Handled::Bubble { flushed: 1, .. })), "{r:?}");
        assert_eq!(out.len(), 1);
        assert!(lab.relay.peer(&x()).unwrap().valid);
        check_invariants(&lab.relay).unwrap();
    }

    #[test]
    fn durations_are_capped_at_max_timer() {
        assert_eq!(millis(Duration::ZERO), 100);
        assert_eq!(millis(Duration::from_secs(30)), 30_000);
        assert_eq!(millis(MAX_TIMER), MAX_TIMER_MS);
        assert_eq!(millis(Duration::MAX), MAX_TIMER_MS);
        // An "infinite" idle timeout still removes an idle peer, after at most twice
        // MAX_TIMER (12.4 days).
        let mut lab = Lab::new(RelayConfig {
            idle_timeout: Duration::MAX,
            validity: Duration::MAX,
            ..cfg()
        });
        lab.trust_x();
        lab.at(10.0 * DAY);
        assert_eq!(
            lab.native(&ping(1)).0,
            Ok(Handled::Encapsulated { to: XMAP })
        );
        lab.run_to(10.0 * DAY + 2.0 * MAX_TIMER.as_secs_f64() + 1.0);
        assert!(lab.relay.peer(&x()).is_none());
        assert_eq!(lab.relay.poll_timeout(), None);
    }

    /// A run with churn: evictions, expiry, compaction, retransmissions, give-ups.
    fn churn(seed: u64) -> Vec<(f64, Out)> {
        let mut lab = Lab::with_seed(
            RelayConfig {
                max_peers: 40,
                trust: TrustPolicy::Lenient,
                ..cfg()
            },
            seed,
        );
        let mut all = Vec::new();
        for i in 0..600u16 {
            let t = f64::from(i) * 0.7;
            all.extend(lab.run_to(t));
            lab.at(t);
            let n = (i * 7) % 97;
            let (_, out) = lab.native(&echo(H, peer_n(n), false, i, 20));
            all.extend(out.iter().cloned().map(|o| (t, o)));
            if i % 3 == 0 {
                let (_, out) = lab.udp(mapping_n(n), &bubble(peer_n(n), H, &[]));
                all.extend(out.into_iter().map(|o| (t, o)));
            }
            if i % 5 == 0 {
                // A symmetric-NAT answer with the nonce of the latest bubble, if any.
                if let Some((_, b)) = out.iter().find(|(o, _)| matches!(o, Output::Udp { .. })) {
                    let nonce = check_indirect(b, peer_n(n)).nonce;
                    let (_, out) = lab.udp(XSYM, &bubble(peer_n(n), H, &nonce_trailer(nonce)));
                    all.extend(out.into_iter().map(|o| (t, o)));
                }
            }
        }
        all.extend(lab.run_to(1000.0));
        check_invariants(&lab.relay).unwrap();
        let c = lab.relay.counters();
        assert!(
            c.evictions > 0 && c.expirations > 0 && c.give_ups > 0,
            "{c:?}"
        );
        assert!(c.lenient_accepts > 0, "{c:?}");
        all
    }

    #[test]
    fn same_seed_same_outputs() {
        let a = churn(7);
        assert!(a.len() > 500);
        assert_eq!(a, churn(7));
        assert_ne!(a, churn(8));
    }

    #[derive(Clone, Debug)]
    enum IndexOp {
        Insert(u32),
        Remove(usize),
    }

    fn arb_index_op() -> impl Strategy<Value = IndexOp> {
        prop_oneof![
            // Few home buckets, many near the end of the table: long runs that wrap around.
            3 => (any::<u32>(), prop_oneof![Just(0u32), Just(13), Just(14), Just(15), 0u32..16])
                .prop_map(|(hi, lo)| IndexOp::Insert(hi << 4 | lo)),
            1 => any::<u32>().prop_map(IndexOp::Insert),
            3 => any::<usize>().prop_map(IndexOp::Remove),
        ]
    }

    #[derive(Clone, Debug)]
    enum TimerOp {
        Set(u32, u32),
        Remove(u32),
        Pop,
    }

    fn arb_timer_op() -> impl Strategy<Value = TimerOp> {
        prop_oneof![
            3 => (0u32..24, 0u32..40).prop_map(|(s, d)| TimerOp::Set(s, d)),
            1 => (0u32..24).prop_map(TimerOp::Remove),
            1 => Just(TimerOp::Pop),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn index_matches_a_model(ops in vec(arb_index_op(), 1..400)) {
            let mut index = Index::default();
            let mut model: Vec<(u32, u32)> = Vec::new();
            let mut gone: Vec<(u32, u32)> = Vec::new();
            let mut next = 0u32;
            for op in ops {
                match op {
                    IndexOp::Insert(hash) => {
                        index.insert(hash, next);
                        model.push((next, hash));
                        next += 1;
                    }
                    IndexOp::Remove(k) if !model.is_empty() => {
                        let (slot, hash) = model.swap_remove(k % model.len());
                        let b = index.find(hash, |s| s == slot);
                        prop_assert!(b.is_some());
                        index.remove_at(b.unwrap());
                        gone.push((slot, hash));
                    }
                    IndexOp::Remove(_) => {}
                }
                prop_assert_eq!(index.len, model.len());
                prop_assert!(index.len * 4 <= index.buckets.len() * 3);
                for &(slot, hash) in &model {
                    let b = index.find(hash, |s| s == slot);
                    prop_assert_eq!(b.and_then(|b| index.slot(b)), Some(slot));
                }
                for &(slot, hash) in &gone {
                    prop_assert!(index.find(hash, |s| s == slot).is_none());
                }
            }
            // Rebuilt smaller with renumbered slots, everything is still found.
            index.rebuild(Index::capacity_for(model.len()), |s| s + 1000);
            for &(slot, hash) in &model {
                prop_assert!(index.find(hash, |s| s == slot + 1000).is_some());
            }
        }

        #[test]
        fn timer_heap_matches_a_model(ops in vec(arb_timer_op(), 1..300)) {
            let x = Exchange {
                peer: 0,
                timer: NONE,
                queue: NO_QUEUE,
                window_start: 0,
                nonce: [0; 4],
                prev_nonce: [0; 4],
                nonces: 0,
                bubbles: 0,
            };
            let mut xs = vec![x; 24];
            let mut timers = Timers::default();
            let mut model: std::collections::BTreeMap<u32, u32> = Default::default();
            for op in ops {
                match op {
                    TimerOp::Set(s, due) => {
                        timers.set(&mut xs, s, due);
                        model.insert(s, due);
                    }
                    TimerOp::Remove(s) => {
                        timers.remove(&mut xs, s);
                        model.remove(&s);
                    }
                    TimerOp::Pop => {
                        let want = model.iter().map(|(s, d)| (*d, *s)).min();
                        prop_assert_eq!(timers.peek(), want);
                        if let Some((_, s)) = want {
                            timers.remove(&mut xs, s);
                            model.remove(&s);
                        }
                    }
                }
                check_heap(&timers, &xs).map_err(TestCaseError::fail)?;
                prop_assert_eq!(timers.heap.len(), model.len());
                prop_assert_eq!(timers.peek(), model.iter().map(|(s, d)| (*d, *s)).min());
            }
        }
    }

    // ---- outputs ----------------------------------------------------------------------

    #[test]
    fn zero_copy_entry_points() {
        let mut lab = Lab::new(cfg());
        lab.trust_x();
        let p = ping(7);
        assert_eq!(
            lab.relay.handle_ipv6_in_place(lab.now, &p),
            Ok(InPlace::Udp { to: XMAP })
        );
        assert!(lab.drain().is_empty());
        // With an output pending, the packet is queued behind it (order to a peer is kept).
        lab.relay
            .handle_ipv6(lab.now, &echo(H, peer_n(2), false, 1, 8))
            .unwrap();
        assert_eq!(
            lab.relay.handle_ipv6_in_place(lab.now, &p),
            Ok(InPlace::Done(Handled::Encapsulated { to: XMAP }))
        );
        let out = lab.drain();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], (Output::Udp { to: XMAP, len: 148 }, p.clone()));
        // Receive: the caller writes the IPv6 part of its own buffer.
        let reply = echo(x(), H, true, 7, 30);
        let mut dgram = vec![0, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0];
        dgram.extend_from_slice(&reply);
        dgram.extend_from_slice(&[0x01, 4, 1, 1, 1, 1]);
        let r = lab
            .relay
            .handle_udp_in_place(lab.now, XMAP, &dgram)
            .unwrap();
        let InPlace::Ipv6 {
            offset,
            len,
            via,
            flushed,
        } = r
        else {
            panic!("{r:?}");
        };
        assert_eq!((offset, via, flushed), (13, Acceptance::EmbeddedMapping, 0));
        assert_eq!(&dgram[offset..offset + len], &reply[..]);
        assert!(lab.drain().is_empty());
        let r = lab
            .relay
            .handle_udp_in_place(lab.now, XMAP, &bubble(x(), H, &[]))
            .unwrap();
        assert!(matches!(r, InPlace::Done(Handled::Bubble { .. })));
        let c = lab.relay.counters();
        assert_eq!((c.encapsulated, c.forwarded), (3, 1));
    }

    #[test]
    fn small_poll_buffer_discards_and_counts() {
        let mut lab = Lab::new(cfg());
        lab.relay.handle_ipv6(lab.now, &ping(1)).unwrap();
        let mut small = [0u8; 20];
        assert_eq!(lab.relay.poll_output(&mut small), None);
        assert_eq!(
            lab.relay
                .counters()
                .dropped(DropReason::OutputBufferTooSmall),
            1
        );
        assert!(lab.drain().is_empty());
    }

    #[test]
    fn output_queue_is_bounded_and_timers_wait_for_room() {
        let mut lab = Lab::new(RelayConfig {
            max_outputs: 8,
            ..cfg()
        });
        // Without draining, only 8 bubbles fit; the rest are counted.
        for n in 0..10 {
            lab.relay
                .handle_ipv6(lab.now, &echo(H, peer_n(n), false, n, 8))
                .unwrap();
        }
        assert_eq!(lab.relay.gauges().pending_outputs, 8);
        assert_eq!(lab.relay.counters().dropped(DropReason::OutputQueueFull), 2);
        lab.drain();
        // At 2 s all ten retransmit; handle_timeout stops while the queue is full and the
        // timers stay due.
        lab.at(2.0);
        lab.relay.handle_timeout(lab.now);
        assert_eq!(lab.relay.gauges().pending_outputs, 6);
        assert!(lab.relay.poll_timeout().unwrap() <= lab.now);
        let mut n = lab.drain().len();
        lab.relay.handle_timeout(lab.now);
        n += lab.drain().len();
        assert_eq!(n, 10);
        assert_eq!(lab.relay.counters().dropped(DropReason::OutputQueueFull), 2);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let mut lab = Lab::new(cfg());
        lab.trust_x();
        lab.at(10.0);
        lab.native(&ping(1)).0.unwrap();
        let before = lab.t0; // earlier than the relay's latest time
        assert_eq!(
            lab.relay.handle_ipv6(before, &ping(2)),
            Ok(Handled::Encapsulated { to: XMAP })
        );
        lab.relay.handle_timeout(before);
        assert!(lab.relay.poll_timeout().is_some());
    }

    // ---- SipHash ----------------------------------------------------------------------

    fn key() -> (u64, u64) {
        let k: Vec<u8> = (0..16).collect();
        (
            u64::from_le_bytes(k[..8].try_into().unwrap()),
            u64::from_le_bytes(k[8..].try_into().unwrap()),
        )
    }

    #[test]
    fn siphash24_reference_vectors() {
        // Aumasson & Bernstein, SipHash paper Appendix A and the reference vectors.
        let (k0, k1) = key();
        let h = |m: &[u8]| {
            let mut s = SipHasher24::new_with_keys(k0, k1);
            s.write(m);
            s.finish()
        };
        assert_eq!(h(&[]), 0x726f_db47_dd0e_0e31);
        let m: Vec<u8> = (0..15).collect();
        assert_eq!(h(&m), 0xa129_ca61_49be_45e5);
    }

    // ---- property tests -----------------------------------------------------------------

    fn arb_sa() -> impl Strategy<Value = SocketAddrV4> {
        prop_oneof![
            Just(XMAP),
            Just(XSYM),
            Just(mapping_n(0)),
            (any::<u32>(), any::<u16>()).prop_map(|(ip, port)| SocketAddrV4::new(ip.into(), port)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn siphash_matches_std_sip_hasher(
            k0 in any::<u64>(),
            k1 in any::<u64>(),
            parts in vec(vec(any::<u8>(), 0..20), 0..6),
        ) {
            #[allow(deprecated)]
            let mut reference = std::hash::SipHasher::new_with_keys(k0, k1);
            let mut ours = SipHasher24::new_with_keys(k0, k1);
            for p in &parts {
                reference.write(p);
                ours.write(p);
            }
            prop_assert_eq!(ours.finish(), reference.finish());
        }

        #[test]
        fn siphash_of_16_bytes_matches_the_generic_one(
            k0 in any::<u64>(),
            k1 in any::<u64>(),
            b in any::<[u8; 16]>(),
        ) {
            let mut generic = SipHasher24::new_with_keys(k0, k1);
            generic.write(&b);
            prop_assert_eq!(SipHasher24::hash_16(k0, k1, &b), generic.finish());
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            lenient in any::<bool>(),
            inputs in vec((any::<bool>(), arb_sa(), vec(any::<u8>(), 0..200), 0u64..5000), 1..40),
        ) {
            let mut lab = Lab::new(RelayConfig {
                trust: if lenient { TrustPolicy::Lenient } else { TrustPolicy::Strict },
                direct_bubbles: true,
                ..cfg()
            });
            lab.trust_x();
            for (udp, from, mut data, dt) in inputs {
                lab.now += Duration::from_millis(dt);
                if data.len() >= 40 && !udp {
                    data[0] = 0x60 | (data[0] & 0x0f);
                }
                let _ = if udp {
                    lab.relay.handle_udp(lab.now, from, &data)
                } else {
                    lab.relay.handle_ipv6(lab.now, &data)
                };
                let _ = lab.relay.handle_udp_in_place(lab.now, from, &data);
                let _ = lab.relay.handle_ipv6_in_place(lab.now, &data);
                lab.relay.handle_timeout(lab.now);
                lab.drain();
            }
        }

        #[test]
        fn arbitrary_tails_after_a_valid_header_never_panic(
            tail in vec(any::<u8>(), 0..100),
            plen in 0u16..120,
            nh in any::<u8>(),
            from in arb_sa(),
        ) {
            let mut lab = Lab::new(RelayConfig { trust: TrustPolicy::Lenient, ..cfg() });
            lab.trust_x();
            let mut data = bubble(x(), H, &tail);
            data[4..6].copy_from_slice(&plen.to_be_bytes());
            data[6] = nh;
            let _ = lab.udp(from, &data);
            let _ = lab.udp(XMAP, &data);
            let mut native = bubble(H, x(), &tail);
            native[4..6].copy_from_slice(&plen.to_be_bytes());
            let _ = lab.native(&native);
        }

        #[test]
        fn every_truncation_is_refused(data_len in 0usize..64, trailer in vec(any::<u8>(), 0..12)) {
            let mut lab = Lab::new(cfg());
            lab.trust_x();
            let p = echo(H, x(), false, 1, data_len);
            for n in 0..p.len() {
                prop_assert!(lab.relay.handle_ipv6(lab.now, &p[..n]).is_err(), "native {}", n);
            }
            let reply = echo(x(), H, true, 1, data_len);
            let mut d = vec![0, 1, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9, 0];
            let mut oi = [0u8; 8];
            OriginIndication(SX_3544).emit(&mut oi).unwrap();
            d.extend_from_slice(&oi);
            d.extend_from_slice(&reply);
            let ipv6_end = d.len();
            d.extend_from_slice(&trailer);
            for n in 0..ipv6_end {
                prop_assert!(lab.relay.handle_udp(lab.now, XMAP, &d[..n]).is_err(), "udp {}", n);
                prop_assert!(lab.drain().is_empty());
            }
            // Cutting inside the trailers only shortens them.
            for n in ipv6_end..=d.len() {
                let r = lab.relay.handle_udp(lab.now, XMAP, &d[..n]);
                prop_assert!(r.is_ok() || r == Err(DropReason::MandatoryTrailer), "{:?}", r);
                if r.is_ok() {
                    prop_assert_eq!(lab.drain(), vec![(Output::Ipv6 { len: reply.len() }, reply.clone())]);
                }
            }
        }
    }

    // ---- structured fuzz: operation sequences with invariants ---------------------------

    /// Peers of the structured test: X (its NAT may be symmetric), and two cone-ish peers.
    fn peers() -> [(Ipv6Addr, SocketAddrV4, SocketAddrV4); 3] {
        [
            (x(), XMAP, XSYM),
            (peer_n(1), mapping_n(1), mapping_n(1)),
            (peer_n(2), mapping_n(2), "203.0.113.77:9".parse().unwrap()),
        ]
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Native packet of `size` data bytes to peer `i`.
        Native(usize, usize),
        /// Direct bubble from peer `i`: from its actual mapping (else embedded), echoing the
        /// latest nonce seen (else a wrong one), sent to the latest bubble source (else H).
        Bubble(usize, bool, bool, bool),
        /// Data from peer `i` to H, from its actual mapping (else embedded), with a trailer.
        Data(usize, bool, bool),
        /// Time passes (ms) and the timers run.
        Wait(u64),
        /// Arbitrary datagram.
        Junk(SocketAddrV4, Vec<u8>),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..3, 0usize..300).prop_map(|(i, s)| Op::Native(i, s)),
            3 => (0usize..3, any::<bool>(), any::<bool>(), any::<bool>())
                .prop_map(|(i, a, n, d)| Op::Bubble(i, a, n, d)),
            2 => (0usize..3, any::<bool>(), any::<bool>()).prop_map(|(i, a, t)| Op::Data(i, a, t)),
            3 => prop_oneof![0u64..3000, 0u64..70_000].prop_map(Op::Wait),
            1 => (arb_sa(), vec(any::<u8>(), 0..80)).prop_map(|(f, d)| Op::Junk(f, d)),
        ]
    }

    fn arb_config() -> impl Strategy<Value = RelayConfig> {
        (
            any::<bool>(),
            any::<bool>(),
            1usize..4,
            100usize..1500,
            200usize..3000,
            1u32..20,
            any::<bool>(),
            prop_oneof![2 => Just(0u32), 1 => 1u32..4],
        )
            .prop_map(
                |(lenient, direct, max_peers, per_peer, global, burst, evict_trusted, bubbles)| {
                    RelayConfig {
                        trust: if lenient {
                            TrustPolicy::Lenient
                        } else {
                            TrustPolicy::Strict
                        },
                        direct_bubbles: direct,
                        max_peers,
                        queue_bytes_per_peer: per_peer,
                        global_queue_bytes: global,
                        icmp_burst: burst,
                        max_outputs: 64,
                        evict_trusted,
                        bubble_rate: bubbles,
                        bubble_burst: bubbles,
                        ..cfg()
                    }
                },
            )
    }

    fn at(now: Instant, out: Vec<Out>) -> Vec<(Instant, Out)> {
        out.into_iter().map(|o| (now, o)).collect()
    }

    /// Runs a sequence and checks, after every step: outputs go only to global unicast
    /// IPv4 (port ≠ 0); UDP outputs are bubbles to a server:3544 or a peer, or data for a
    /// peer that is trusted with exactly that mapping; native outputs are forwarded client
    /// packets or well-formed ICMPv6 errors; bubbles to a peer are ≥ 2 s apart; caps hold;
    /// gauges are consistent; `handle_timeout` makes progress.
    fn run_ops(cfg: RelayConfig, ops: &[Op]) -> Result<RelayCounters, TestCaseError> {
        let mut lab = Lab::new(cfg);
        let peers = peers();
        let mut last_bubble: Map<Ipv6Addr, Instant> = Map::new();
        let mut seen: Map<Ipv6Addr, (Ipv6Addr, [u8; 4])> = Map::new();
        for op in ops {
            let now = lab.now;
            let existed: Vec<bool> = peers
                .iter()
                .map(|p| lab.relay.peer(&p.0).is_some())
                .collect();
            let out: Vec<(Instant, Out)> = match op {
                Op::Native(i, size) => {
                    at(now, lab.native(&echo(H, peers[*i].0, false, 1, *size)).1)
                }
                Op::Bubble(i, actual, right_nonce, to_src) => {
                    let (addr, embedded, actual_map) = peers[*i];
                    let s = seen.get(&addr).copied();
                    let nonce = match s {
                        Some((_, n)) if *right_nonce => n,
                        _ => [0xee; 4],
                    };
                    let dst = match s {
                        Some((src, _)) if *to_src => src,
                        _ => H,
                    };
                    let from = if *actual { actual_map } else { embedded };
                    at(
                        now,
                        lab.udp(from, &bubble(addr, dst, &nonce_trailer(nonce))).1,
                    )
                }
                Op::Data(i, actual, trailer) => {
                    let (addr, embedded, actual_map) = peers[*i];
                    let mut d = echo(addr, H, true, 1, 16);
                    if *trailer {
                        d.extend_from_slice(&[0x05, 2, 1, 2]);
                    }
                    at(
                        now,
                        lab.udp(if *actual { actual_map } else { embedded }, &d).1,
                    )
                }
                Op::Wait(ms) => {
                    let until = lab.elapsed() + (*ms as f64) / 1000.0;
                    let t0 = lab.t0;
                    lab.run_to(until)
                        .into_iter()
                        .map(|(t, o)| (t0 + secs(t), o))
                        .collect()
                }
                Op::Junk(from, d) => at(now, lab.udp(*from, d).1),
            };
            for (when, (o, bytes)) in &out {
                match *o {
                    Output::Udp { to, len } => {
                        prop_assert_eq!(len, bytes.len());
                        prop_assert!(is_ipv4_global_unicast(*to.ip()) && to.port() != 0);
                        let p = TeredoPacket::parse(bytes).unwrap();
                        prop_assert!(p.auth.is_none() && p.origin.is_none());
                        if p.is_bubble() {
                            let t = TeredoAddr::from_ipv6(&p.dst()).unwrap();
                            if to.port() == TEREDO_PORT {
                                prop_assert_eq!(to.ip(), &t.server);
                                let b = check_indirect(bytes, p.dst());
                                seen.insert(p.dst(), (b.src, b.nonce));
                                // Pacing state belongs to the entry: a peer evicted from a
                                // full table and created again starts afresh.
                                let recreated = peers
                                    .iter()
                                    .zip(&existed)
                                    .any(|(q, e)| q.0 == p.dst() && !e);
                                if let Some(prev) = last_bubble.insert(p.dst(), *when) {
                                    prop_assert!(recreated || *when - prev >= BUBBLE_INTERVAL);
                                }
                            } else {
                                prop_assert!(lab.relay.config().direct_bubbles);
                                prop_assert!(p.trailers.is_empty());
                            }
                        } else {
                            let info = lab.relay.peer(&p.dst()).unwrap();
                            prop_assert!(info.trusted);
                            prop_assert_eq!(info.mapping, to);
                        }
                    }
                    Output::Ipv6 { len } => {
                        prop_assert_eq!(len, bytes.len());
                        if ipv6_src(bytes) == RELAY_V6 {
                            prop_assert!(icmpv6_checksum_ok(bytes));
                            prop_assert_eq!(&bytes[40..42], &[1u8, 3][..]);
                            prop_assert_eq!(ipv6_dst(bytes), H);
                        } else {
                            let info = lab.relay.peer(&ipv6_src(bytes)).unwrap();
                            prop_assert!(info.trusted);
                            prop_assert_eq!(ipv6_dst(bytes), H);
                            prop_assert!(check_ipv6_exact_len(bytes).is_ok());
                        }
                    }
                }
            }
            let cfg = *lab.relay.config();
            let g = lab.relay.gauges();
            prop_assert!(g.peers <= cfg.max_peers);
            prop_assert!(g.queued_bytes <= cfg.global_queue_bytes);
            prop_assert_eq!(g.pending_outputs, 0);
            prop_assert_eq!(g.peers_trusted + g.peers_untrusted, g.peers);
            let mut trusted = 0;
            let mut queued = (0, 0);
            for (addr, _, _) in peers {
                if let Some(info) = lab.relay.peer(&addr) {
                    trusted += usize::from(info.trusted);
                    queued.0 += info.queued_packets;
                    queued.1 += info.queued_bytes;
                    prop_assert!(info.queued_bytes <= cfg.queue_bytes_per_peer);
                    prop_assert!(info.queued_packets == 0 || !info.valid);
                    prop_assert!(info.bubbles <= cfg.max_bubbles_per_window);
                }
            }
            prop_assert_eq!(trusted, g.peers_trusted);
            prop_assert_eq!(queued, (g.queued_packets, g.queued_bytes));
            check_invariants(&lab.relay).map_err(TestCaseError::fail)?;
            if let Some(t) = lab.relay.poll_timeout() {
                lab.relay.handle_timeout(lab.now);
                prop_assert!(lab.drain().is_empty() || t <= lab.now);
            }
        }
        Ok(lab.relay.counters().clone())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn structured_fuzz(cfg in arb_config(), ops in vec(arb_op(), 1..60)) {
            run_ops(cfg, &ops)?;
        }
    }

    /// The structured generator reaches every interesting path (so the invariants above are
    /// exercised where they matter).
    #[test]
    fn structured_fuzz_covers_the_relay() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;

        let mut runner = TestRunner::deterministic();
        let strategy = (arb_config(), vec(arb_op(), 1..60));
        let mut total = RelayCounters::default();
        for _ in 0..300 {
            let (cfg, ops) = strategy.new_tree(&mut runner).unwrap().current();
            let c = run_ops(cfg, &ops).unwrap();
            total.bubbles_sent += c.bubbles_sent;
            total.direct_bubbles_sent += c.direct_bubbles_sent;
            total.flushed += c.flushed;
            total.encapsulated += c.encapsulated;
            total.forwarded += c.forwarded;
            total.give_ups += c.give_ups;
            total.icmp_errors_sent += c.icmp_errors_sent;
            total.icmp_errors_rate_limited += c.icmp_errors_rate_limited;
            total.evictions += c.evictions;
            total.trusted_evictions += c.trusted_evictions;
            total.bubbles_rate_limited += c.bubbles_rate_limited;
            total.expirations += c.expirations;
            total.lenient_accepts += c.lenient_accepts;
            for (t, n) in total.dropped_by_reason.iter_mut().zip(c.dropped_by_reason) {
                *t += n;
            }
        }
        let c = &total;
        for (what, n) in [
            ("bubbles", c.bubbles_sent),
            ("direct bubbles", c.direct_bubbles_sent),
            ("flushed", c.flushed),
            ("encapsulated", c.encapsulated - c.flushed),
            ("forwarded", c.forwarded),
            ("give-ups", c.give_ups),
            ("icmp", c.icmp_errors_sent),
            ("icmp rate limited", c.icmp_errors_rate_limited),
            ("evictions", c.evictions),
            ("trusted evictions", c.trusted_evictions),
            ("bubbles rate limited", c.bubbles_rate_limited),
            ("expirations", c.expirations),
            ("lenient", c.lenient_accepts),
        ] {
            assert!(n > 0, "never reached: {what}");
        }
        for r in [
            DropReason::SpoofedSource,
            DropReason::UnknownPeer,
            DropReason::QueueFull,
            DropReason::GlobalQueueFull,
            DropReason::PeerTableFull,
            DropReason::PeerUnreachable,
            DropReason::PeerEvicted,
        ] {
            assert!(c.dropped(r) > 0, "never dropped: {r}");
        }
    }
}
