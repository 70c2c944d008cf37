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
//! * After every input drain [`Relay::poll_output`] until it returns `None`, and
//!   [`Relay::poll_event`] for peer state changes (trusted, unreachable, expired,
//!   evicted; refreshed, on request). Outputs may be waiting even when an input returned
//!   `Err` (the packet was dropped, but e.g. a bubble or an ICMPv6 error was still
//!   produced).
//! * With a kernel fast path forwarding trusted peers' packets itself:
//!   [`Relay::refresh_peer`] with what it saw, [`Relay::trusted_peers`] to (re)build its
//!   table, [`RelayConfig::peer_refreshed_events`] to keep that table fresh.
//!
//! Zero-copy forwarding: when the input itself is what must be sent (a packet for a
//! trusted peer goes as the UDP payload unchanged; a client's packet goes native as the
//! IPv6 part of its datagram), the result carries an [`InPlace`] ([`Handled::in_place`])
//! instead of a copy in the output queue, and the driver sends straight from its receive
//! buffer: no copy and no allocation on the trusted path. To keep packets to a peer in
//! order, transmit only does this when no output is pending (otherwise the copy is queued
//! and `in_place` is `None`). Other outputs are written into a reused arena, so they do not
//! allocate either once warmed up. See [`Handled`] for the caller's side of the contract.
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

mod config;
mod counters;
mod expiry;
mod hash;
#[cfg(any(test, feature = "fuzzing"))]
mod invariants;
mod output;
mod peers;
mod queue;
mod receive;
mod refresh;
mod shard_key;
mod table;
#[cfg(test)]
mod tests;
mod timers;
mod transmit;

#[allow(clippy::wildcard_imports)]
use self::{config::*, hash::*, output::*, peers::*, queue::*, table::*, timers::*};
pub use config::{BubbleSource, RelayConfig, TrustPolicy, UnknownPeerPolicy};
pub use counters::{PeerInfo, PeerPhase, RelayCounters, RelayGauges};
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use invariants::check_invariants;
pub use refresh::{Refresh, TrustedPeer};
pub use shard_key::{shard_key_ipv6, shard_key_udp};

use std::collections::VecDeque;
use std::fmt;
use std::hash::Hasher;
use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::addr::{is_ipv6_non_global, is_link_local, is_teredo, TeredoAddr, TEREDO_PORT};
use crate::io::{InPlace, Kind, Local, Output};
use crate::peer::{self, take_token, Gate, Pacing};
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
pub use crate::peer::{
    BUBBLE_INTERVAL, BUBBLE_RETRIES, BUBBLE_WINDOW, MAX_BUBBLES_PER_WINDOW, VALIDITY,
};
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
/// Events kept for [`Relay::poll_event`]; beyond this the oldest is dropped.
pub const MAX_EVENTS: usize = 1024;
/// [`Event::PeerRefreshed`] is sent when a reception moves a peer's last reception time
/// into a new period of this many milliseconds (so at most once a second per peer, however
/// fast it sends).
pub const REFRESH_EVENT_PERIOD_MS: u64 = 1000;
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
///
/// **Contract**: when a result carries an [`InPlace`] ([`Handled::in_place`]), the core
/// queued nothing for that packet: the caller must send `in_place.bytes(input)` as
/// `in_place.output` says, or the packet is lost. Everything else the input produced waits
/// in [`Relay::poll_output`] (drain it after every input, `Ok` or `Err`). A driver that
/// forwards in place keeps the per-peer order by sending the in-place bytes after the
/// outputs it drained for the same input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "an in-place result is sent by the caller or lost"]
pub enum Handled {
    /// A native packet for a trusted, valid peer, sent over UDP to its mapping.
    Encapsulated {
        /// The peer's mapping.
        to: SocketAddrV4,
        /// `Some`: the caller sends the input packet itself, unchanged, as the UDP payload
        /// (zero copy). `None` (an output was already pending, so order to the peer is
        /// kept): a copy waits in [`Relay::poll_output`].
        in_place: Option<InPlace>,
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
    /// A packet from a client forwarded to the native side: always in place, the caller
    /// writes the IPv6 part of its datagram (trailers excluded) to the native side.
    Forwarded {
        /// How it was authenticated.
        via: Acceptance,
        /// Queued packets released to the client (waiting in [`Relay::poll_output`]).
        flushed: usize,
        /// The IPv6 packet inside the input datagram.
        in_place: InPlace,
    },
}

impl Handled {
    /// What the caller must send out of its own input buffer, if anything.
    pub fn in_place(&self) -> Option<InPlace> {
        match *self {
            Self::Encapsulated { in_place, .. } => in_place,
            Self::Forwarded { in_place, .. } => Some(in_place),
            _ => None,
        }
    }
}

/// A state change of a peer, polled with [`Relay::poll_event`]. Events are kept in a
/// bounded queue ([`MAX_EVENTS`]); when it is full the oldest is dropped and counted
/// ([`Relay::events_lost`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A peer proved its mapping: it became trusted, or its bubble exchange was answered,
    /// or its recorded mapping changed.
    PeerTrusted {
        /// Its Teredo address.
        peer: Ipv6Addr,
        /// The mapping packets now go to.
        mapping: SocketAddrV4,
        /// How it was authenticated.
        via: Acceptance,
        /// How long the bubble exchange this ends took (from the packet that started it),
        /// if one ran: the connectivity-test time drivers put in a histogram.
        exchange: Option<Duration>,
    },
    /// A bubble exchange got no answer (RFC 4380 §5.4.1): queued packets were dropped and
    /// packets to the peer are refused until the bubble window is over.
    PeerUnreachable {
        /// Its Teredo address.
        peer: Ipv6Addr,
        /// Queued packets dropped.
        dropped: usize,
    },
    /// A peer unused for [`RelayConfig::idle_timeout`] was removed.
    PeerExpired {
        /// Its Teredo address.
        peer: Ipv6Addr,
        /// It was trusted.
        trusted: bool,
    },
    /// A trusted peer's reception time moved forward, its mapping unchanged (only with
    /// [`RelayConfig::peer_refreshed_events`]; at most one per peer and
    /// [`REFRESH_EVENT_PERIOD_MS`] of its reception times): lets a fast path that keeps its
    /// own copy of the trusted peers keep it valid while the core forwards the peer's
    /// packets.
    PeerRefreshed {
        /// Its Teredo address.
        peer: Ipv6Addr,
        /// Its (unchanged) mapping.
        mapping: SocketAddrV4,
    },
    /// A peer was evicted because the table was full.
    PeerEvicted {
        /// Its Teredo address.
        peer: Ipv6Addr,
        /// It was trusted ([`RelayConfig::evict_trusted`]).
        trusted: bool,
    },
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
    /// Events for [`Relay::poll_event`], at most [`MAX_EVENTS`] (allocated once).
    events: VecDeque<Event>,
    /// Events dropped because the queue was full.
    events_lost: u64,
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
            events: VecDeque::with_capacity(MAX_EVENTS),
            events_lost: 0,
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

    /// The next peer state change, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Events dropped because nobody polled them before [`MAX_EVENTS`] more arrived.
    pub fn events_lost(&self) -> u64 {
        self.events_lost
    }

    /// Queues an event, dropping the oldest when full (no allocation: the queue was sized
    /// at construction).
    fn emit(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.events_lost += 1;
        }
        self.events.push_back(e);
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
            shift_back(&mut x.started, d);
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
}
