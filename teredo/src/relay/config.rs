//! Relay settings and their derived timings.

#[allow(clippy::wildcard_imports)]
use super::*;

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

/// What the relay does with a datagram from a Teredo client it has no entry for, when the
/// outer source equals the mapping in the client's address (RFC 4380 §5.4.2: "the relay MAY
/// silently discard the packet" — a may, not a must).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UnknownPeerPolicy {
    /// Accept it and create the peer, trusted (its mapping is proved as well as any trusted
    /// peer's): after a relay restart, a client that sends first is not dropped until its
    /// next direct IPv6 connectivity test, about 30 s later.
    #[default]
    Accept,
    /// Drop it (`unknown_peer`), as Miredo's relay does.
    Drop,
}

impl UnknownPeerPolicy {
    /// `accept` or `drop`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Drop => "drop",
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
    /// What a datagram from a client without a peer entry does (default: creates it).
    pub unknown_peers: UnknownPeerPolicy,
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
    /// Emit [`Event::PeerRefreshed`] when a trusted peer's reception time moves (default
    /// false). A driver with a fast path that keeps its own table of trusted peers turns it
    /// on, so that packets the fast path left to the core keep that table's entries valid.
    pub peer_refreshed_events: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            trust: TrustPolicy::Strict,
            unknown_peers: UnknownPeerPolicy::Accept,
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
            peer_refreshed_events: false,
        }
    }
}

/// Durations of the configuration in milliseconds, clamped to [`MIN_TIMER`]..=[`MAX_TIMER`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Timing {
    pub(super) validity: u64,
    pub(super) idle: u64,
    pub(super) interval: u64,
    pub(super) window: u64,
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.clamp(MIN_TIMER, MAX_TIMER).as_millis()).unwrap_or(MAX_TIMER_MS)
}
