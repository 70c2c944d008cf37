//! Counters for metrics.

use crate::DropReason;

#[cfg(doc)]
use super::Client;

/// Counters for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCounters {
    /// RSs handed to the driver.
    pub rs_sent: u64,
    /// UPnP port mappings the IGD granted (RFC 6081 §5.3.3).
    pub upnp_mappings: u64,
    /// UPnP requests answered with a failure (no IGD, refused).
    pub upnp_failures: u64,
    /// RAs accepted.
    pub ra_accepted: u64,
    /// Datagrams refused by [`Client::handle_udp`] on the qualification path: router
    /// advertisements (from anywhere), anything else from the server while not qualified,
    /// and malformed datagrams from the server or while not qualified.
    pub ra_rejected: u64,
    /// Datagrams refused by [`Client::handle_udp`] per reason, both paths, indexed like
    /// [`DropReason::ALL`]; see [`Self::rejected`].
    pub rejected_by_reason: [u64; DropReason::ALL.len()],
    /// Datagrams accepted on the data path (delivered packets, bubbles, echo-test replies).
    pub data_accepted: u64,
    /// Datagrams refused by [`Client::handle_udp`] on the data path (everything that is
    /// not counted in `ra_rejected`).
    pub data_rejected: u64,
    /// Packets dropped after [`Client::handle_udp`] or [`Client::handle_ipv6`] returned, and
    /// application packets refused by [`Client::handle_ipv6`], per reason, indexed like
    /// [`DropReason::ALL`]: queued packets discarded later (`peer_unreachable`,
    /// `peer_evicted`, `address_lost`), packets that did not fit the output queue when a
    /// queue was flushed or a bubble answered (`output_queue_full`), outputs larger than the
    /// caller's buffer (`output_buffer_too_small`). A received packet that does not fit the
    /// delivery queue of [`Client::poll_output`] is a refusal of `handle_udp`
    /// (`output_queue_full`) and counts in `rejected_by_reason`. See [`Self::dropped`].
    pub dropped_by_reason: [u64; DropReason::ALL.len()],
    /// Application packets sent over UDP (directly, or released from a queue).
    pub ipv6_sent: u64,
    /// Packets delivered to the application.
    pub ipv6_delivered: u64,
    /// Application packets put in a peer queue.
    pub queued: u64,
    /// Queued packets released to a peer.
    pub flushed: u64,
    /// Bubbles sent to reach a peer (direct and indirect counted separately).
    pub bubbles_sent: u64,
    /// Bubbles accepted (relayed by the server, or direct from a peer).
    pub bubbles_received: u64,
    /// Direct bubbles sent in answer to bubbles relayed by the server.
    pub reply_bubbles_sent: u64,
    /// Answers to relayed bubbles suppressed by the rate limit.
    pub reply_bubbles_suppressed: u64,
    /// Echo requests of direct IPv6 connectivity tests sent.
    pub echo_tests_sent: u64,
    /// Echo tests answered (a relay found and trusted).
    pub echo_tests_ok: u64,
    /// Peers that answered no probe.
    pub give_ups: u64,
    /// Random ports opened (RFC 6081 §5.4.4.2, §5.5.4.1).
    pub random_ports_opened: u64,
    /// Random ports closed (trusted on the primary port, re-mapped, peer forgotten).
    pub random_ports_closed: u64,
    /// Random ports not opened: [`MAX_RANDOM_PORTS`](super::MAX_RANDOM_PORTS) were open.
    pub random_ports_refused: u64,
    /// Echo tests started (RFC 6081 §5.5.4.1.1; each sends two RSs and a bubble).
    pub echo_tests_started: u64,
    /// Echo tests that predicted a port (both RAs came back).
    pub echo_test_predictions: u64,
    /// Direct bubbles of the Peer Refresh Timer (RFC 6081 §5.4.2.1).
    pub peer_refresh_bubbles: u64,
    /// Local discovery bubbles sent (RFC 4380 §5.2.8).
    pub discovery_sent: u64,
    /// Local discovery bubbles accepted.
    pub discovery_received: u64,
    /// Indirect bubbles sent with an RFC 6081 Alternate Address trailer (Hairpinning).
    pub hairpin_trailers_sent: u64,
    /// Well-formed Alternate Address trailers received in relayed bubbles.
    pub hairpin_trailers_received: u64,
    /// Direct bubbles sent to a peer's alternate addresses.
    pub hairpin_bubbles_sent: u64,
    /// Peers trusted at an address only the Hairpinning extension accepts (a non-global
    /// address: the peer's LAN address), by the nonce their direct bubble echoed.
    pub hairpin_peers_trusted: u64,
    /// Direct bubbles with an ND Option solicitation sent (RFC 6081 §5.7 Server Load
    /// Reduction), retransmissions included.
    pub solicitations_sent: u64,
    /// Solicitations received in accepted direct bubbles.
    pub solicitations_received: u64,
    /// Advertisements sent in answer to solicitations.
    pub advertisements_sent: u64,
    /// Advertisements received in accepted direct bubbles.
    pub advertisements_received: u64,
    /// Peers that answered none of the 3 solicitations: RFC 4380's indirect bubble followed.
    pub solicitation_fallbacks: u64,
    /// Peer entries created.
    pub peers_created: u64,
    /// Peer entries reused for another peer because the table was full.
    pub peers_evicted: u64,
    /// Transitions into `qualified`.
    pub qualifications: u64,
    /// Mapping changes detected by a refresh.
    pub address_changes: u64,
    /// Transitions into `offline`.
    pub failures: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
}

impl Default for ClientCounters {
    fn default() -> Self {
        Self {
            rs_sent: 0,
            upnp_mappings: 0,
            upnp_failures: 0,
            ra_accepted: 0,
            ra_rejected: 0,
            rejected_by_reason: [0; DropReason::ALL.len()],
            data_accepted: 0,
            data_rejected: 0,
            dropped_by_reason: [0; DropReason::ALL.len()],
            ipv6_sent: 0,
            ipv6_delivered: 0,
            queued: 0,
            flushed: 0,
            bubbles_sent: 0,
            bubbles_received: 0,
            reply_bubbles_sent: 0,
            reply_bubbles_suppressed: 0,
            echo_tests_sent: 0,
            echo_tests_ok: 0,
            give_ups: 0,
            random_ports_opened: 0,
            random_ports_closed: 0,
            random_ports_refused: 0,
            echo_tests_started: 0,
            echo_test_predictions: 0,
            peer_refresh_bubbles: 0,
            discovery_sent: 0,
            discovery_received: 0,
            hairpin_trailers_sent: 0,
            hairpin_trailers_received: 0,
            hairpin_bubbles_sent: 0,
            hairpin_peers_trusted: 0,
            solicitations_sent: 0,
            solicitations_received: 0,
            advertisements_sent: 0,
            advertisements_received: 0,
            solicitation_fallbacks: 0,
            peers_created: 0,
            peers_evicted: 0,
            qualifications: 0,
            address_changes: 0,
            failures: 0,
            events_dropped: 0,
        }
    }
}

impl ClientCounters {
    /// Refusals counted under `reason`.
    pub fn rejected(&self, reason: DropReason) -> u64 {
        reason_index(reason)
            .and_then(|i| self.rejected_by_reason.get(i).copied())
            .unwrap_or(0)
    }

    /// Application packets dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        reason_index(reason)
            .and_then(|i| self.dropped_by_reason.get(i).copied())
            .unwrap_or(0)
    }

    /// Application packets dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_by_reason.iter().sum()
    }

    /// Datagrams refused by [`Client::handle_udp`], both paths.
    pub fn rejected_total(&self) -> u64 {
        self.ra_rejected + self.data_rejected
    }

    pub(super) fn count_reject(&mut self, reason: DropReason, path: Path) {
        match path {
            Path::Qualification => self.ra_rejected += 1,
            Path::Data => self.data_rejected += 1,
        }
        if let Some(c) = reason_index(reason).and_then(|i| self.rejected_by_reason.get_mut(i)) {
            *c += 1;
        }
    }

    pub(super) fn count_drop(&mut self, reason: DropReason, n: u64) {
        if let Some(c) = reason_index(reason).and_then(|i| self.dropped_by_reason.get_mut(i)) {
            *c += n;
        }
    }
}

/// Which part of [`Client::handle_udp`] handled a datagram (for the split counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Path {
    Qualification,
    Data,
}

pub(super) fn reason_index(reason: DropReason) -> Option<usize> {
    DropReason::ALL.iter().position(|r| *r == reason)
}
