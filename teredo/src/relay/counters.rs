//! Counters, gauges and the read-only view of a peer, for metrics and tests.

#[allow(clippy::wildcard_imports)]
use super::*;

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
    /// Peers created by a datagram from the client ([`UnknownPeerPolicy::Accept`]).
    pub unknown_peers_accepted: u64,
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
            unknown_peers_accepted: 0,
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

    pub(super) fn drop_n(&mut self, reason: DropReason, n: u64) {
        if let Some(c) = reason_index(reason).and_then(|i| self.dropped_by_reason.get_mut(i)) {
            *c += n;
        }
    }
}

pub(super) fn reason_index(reason: DropReason) -> Option<usize> {
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
