//! The relay's Prometheus metrics.
//!
//! Every series is created (at zero) when the metrics are registered, so a scrape shows the
//! full set from the start. Labels are bounded: `direction` (2 values), `reason` (the
//! relay's [`DropReason`]s; of evictions, 2), `state` (2), `kind` (2), `what` (2).
//!
//! Two sources feed them:
//! * the **drivers** count what they hand to the kernel (`packets_total`, `bytes_total`) and
//!   their own drops (`send_failed`, `oversized`, `native_disabled`), with handles resolved
//!   once; the per-packet counts are accumulated per receive batch and added with one
//!   `inc_by`, so the hot loop touches no shared cache line per packet;
//! * the **timer task** adds the deltas of the cores' own counters (summed over shards:
//!   drops by reason, bubbles, ICMPv6 errors, evictions, give-ups) and sets the gauges
//!   from their `gauges()`, at least once a second.

use prometheus::{Histogram, IntCounter, IntGauge, Registry};
use teredo::relay::{RelayCounters, RelayGauges};
use teredo::DropReason;
use teredo_rt::{ComponentMetrics, DropCounters};

/// `teredo_relay_packets_received_total{direction}`: datagrams read from clients
/// (`ipv4_to_ipv6`, bubbles included) and packets read from the native side
/// (`ipv6_to_ipv4`): the attempts against which relayed and dropped packets are ratios.
pub const RECEIVED: &str = "teredo_relay_packets_received_total";
/// `teredo_relay_packets_total{direction}`: packets relayed (handed to the kernel).
pub const PACKETS: &str = "teredo_relay_packets_total";
/// `teredo_relay_bytes_total{direction}`: bytes of those packets (the IPv6 packet, without
/// UDP/IPv4 headers or Teredo trailers).
pub const BYTES: &str = "teredo_relay_bytes_total";
/// `teredo_relay_packets_dropped_total{reason}`.
pub const DROPPED: &str = "teredo_relay_packets_dropped_total";
/// `teredo_relay_peers{state}` gauge.
pub const PEERS: &str = "teredo_relay_peers";
/// `teredo_relay_queue_packets` gauge.
pub const QUEUE_PACKETS: &str = "teredo_relay_queue_packets";
/// `teredo_relay_queue_bytes` gauge.
pub const QUEUE_BYTES: &str = "teredo_relay_queue_bytes";
/// `teredo_relay_bubbles_sent_total{kind}`.
pub const BUBBLES_SENT: &str = "teredo_relay_bubbles_sent_total";
/// `teredo_relay_icmp_errors_sent_total`.
pub const ICMP_ERRORS_SENT: &str = "teredo_relay_icmp_errors_sent_total";
/// `teredo_relay_peer_evictions_total{reason}`: peers evicted from the full table.
pub const PEER_EVICTIONS: &str = "teredo_relay_peer_evictions_total";
/// `reason` label values of [`PEER_EVICTIONS`]: an untrusted peer (first choice) or, when
/// none is left, the least recently used trusted one.
pub const EVICTION_REASONS: [&str; 2] = ["untrusted", "trusted"];
/// `teredo_relay_rate_limited_total{what}`: bubble rounds and ICMPv6 errors not sent
/// because of their rate limits.
pub const RATE_LIMITED: &str = "teredo_relay_rate_limited_total";
/// `what` label values of [`RATE_LIMITED`].
pub const RATE_LIMITED_WHAT: [&str; 2] = ["bubble", "icmp_error"];
/// `teredo_relay_peers_unreachable_total`: bubble exchanges that got no answer.
pub const PEERS_UNREACHABLE: &str = "teredo_relay_peers_unreachable_total";
/// Counter family: peer entries created, by what created them (`by`).
pub const PEERS_CREATED: &str = "teredo_relay_peers_created_total";
/// `by` values: a native packet for the peer, or a datagram from the client itself
/// (`--unknown-peers accept`, e.g. after a relay restart).
pub const PEER_CREATORS: [&str; 2] = ["native_packet", "client_datagram"];
/// `teredo_relay_connectivity_test_duration_seconds` histogram.
pub const CONNECTIVITY_TEST_DURATION: &str = "teredo_relay_connectivity_test_duration_seconds";
/// `teredo_relay_build_info{version}` = 1.
pub const BUILD_INFO: &str = "teredo_relay_build_info";

/// `direction` label values, indexed by [`Direction`].
pub const DIRECTIONS: [&str; 2] = ["ipv4_to_ipv6", "ipv6_to_ipv4"];
/// `state` label values of [`PEERS`].
pub const PEER_STATES: [&str; 2] = ["trusted", "untrusted"];
/// `kind` label values of [`BUBBLES_SENT`].
pub const BUBBLE_KINDS: [&str; 2] = ["indirect", "direct"];

/// Buckets of the connectivity-test histogram: a LAN round trip (1 ms) to the give-up after
/// four bubbles 2 s apart (8 s).
pub const CONNECTIVITY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0,
];

/// Every reason the relay can count: the core's [`DropReason::RELAY`], plus
/// `native_disabled` (a client packet with `--native none`).
pub fn drop_reasons() -> impl Iterator<Item = DropReason> {
    DropReason::RELAY
        .iter()
        .copied()
        .chain(std::iter::once(DropReason::NativeDisabled))
}

/// Direction of relayed traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From a Teredo client (UDP/IPv4) to native IPv6.
    Ipv4ToIpv6 = 0,
    /// From native IPv6 to a Teredo client.
    Ipv6ToIpv4 = 1,
}

/// The registered metric families, with resolved handles.
#[derive(Clone, Debug)]
pub struct RelayMetrics {
    received: [IntCounter; 2],
    packets: [IntCounter; 2],
    bytes: [IntCounter; 2],
    dropped: DropCounters,
    peers: [IntGauge; 2],
    queue_packets: IntGauge,
    queue_bytes: IntGauge,
    bubbles: [IntCounter; 2],
    icmp_errors: IntCounter,
    evictions: [IntCounter; 2],
    rate_limited: [IntCounter; 2],
    unreachable: IntCounter,
    created: [IntCounter; 2],
    /// Time from a peer's first queued packet to its trust.
    pub(crate) connectivity: Histogram,
}

impl RelayMetrics {
    /// Creates every family and series (at zero) and registers them, the build info and the
    /// process metrics in `registry`. The process metrics may already be there (several
    /// components sharing one registry in the lab); the relay's own may not.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = ComponentMetrics::new(registry, BUILD_INFO, env!("CARGO_PKG_VERSION"))?;
        Ok(Self {
            received: m.counters(
                RECEIVED,
                "Packets received, by direction: datagrams from Teredo clients (ipv4_to_ipv6, \
                 bubbles included) and packets from the native side (ipv6_to_ipv4).",
                "direction",
                DIRECTIONS,
            )?,
            packets: m.counters(
                PACKETS,
                "Packets relayed, by direction (ipv4_to_ipv6: from Teredo clients to native IPv6).",
                "direction",
                DIRECTIONS,
            )?,
            bytes: m.counters(
                BYTES,
                "Bytes of the IPv6 packets relayed, by direction.",
                "direction",
                DIRECTIONS,
            )?,
            dropped: m.drops(DROPPED, "Packets dropped, by reason.", drop_reasons())?,
            bubbles: m.counters(
                BUBBLES_SENT,
                "Bubbles sent: indirect (through the peer's server) or direct (to its mapping).",
                "kind",
                BUBBLE_KINDS,
            )?,
            peers: m.gauges(PEERS, "Peer table entries, by trust.", "state", PEER_STATES)?,
            queue_packets: m.gauge(
                QUEUE_PACKETS,
                "Packets queued for peers that are not trusted yet.",
            )?,
            queue_bytes: m.gauge(
                QUEUE_BYTES,
                "Bytes queued for peers that are not trusted yet.",
            )?,
            icmp_errors: m.counter(
                ICMP_ERRORS_SENT,
                "ICMPv6 destination unreachable errors sent to native hosts.",
            )?,
            evictions: m.counters(
                PEER_EVICTIONS,
                "Peers evicted to make room in the full peer table: untrusted ones first, then \
                 the least recently used trusted one.",
                "reason",
                EVICTION_REASONS,
            )?,
            rate_limited: m.counters(
                RATE_LIMITED,
                "Bubble rounds and ICMPv6 errors not sent because of their rate limits.",
                "what",
                RATE_LIMITED_WHAT,
            )?,
            unreachable: m.counter(
                PEERS_UNREACHABLE,
                "Bubble exchanges that got no answer (queued packets dropped as peer_unreachable).",
            )?,
            created: m.counters(
                PEERS_CREATED,
                "Peer entries created: for a native packet (a bubble exchange follows), or by a \
                 datagram from a client whose source matches its address (--unknown-peers accept).",
                "by",
                PEER_CREATORS,
            )?,
            connectivity: m.histogram(
                CONNECTIVITY_TEST_DURATION,
                "Time from a peer's first queued packet to its trust (bubble exchange).",
                CONNECTIVITY_BUCKETS,
            )?,
        })
    }

    /// Adds `packets` relayed packets of `bytes` bytes in `direction`.
    pub(crate) fn relayed(&self, direction: Direction, packets: u64, bytes: u64) {
        if packets > 0 {
            self.packets[direction as usize].inc_by(packets);
            self.bytes[direction as usize].inc_by(bytes);
        }
    }

    /// Adds `packets` packets received in `direction`.
    pub(crate) fn received(&self, direction: Direction, packets: u64) {
        if packets > 0 {
            self.received[direction as usize].inc_by(packets);
        }
    }

    /// Counts a packet the driver dropped.
    pub(crate) fn dropped(&self, reason: DropReason) {
        self.dropped_n(reason, 1);
    }

    fn dropped_n(&self, reason: DropReason, n: u64) {
        self.dropped.inc_by(reason, n);
    }

    /// Adds what the cores counted since `last` (both summed over shards) and sets the
    /// gauges.
    pub(crate) fn export_core(&self, last: &RelayCounters, now: &RelayCounters, g: RelayGauges) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            let (a, b) = (
                last.dropped_by_reason.get(i).copied().unwrap_or(0),
                now.dropped_by_reason.get(i).copied().unwrap_or(0),
            );
            self.dropped_n(*r, d(a, b));
        }
        self.bubbles[0].inc_by(d(last.bubbles_sent, now.bubbles_sent));
        self.bubbles[1].inc_by(d(last.direct_bubbles_sent, now.direct_bubbles_sent));
        self.icmp_errors
            .inc_by(d(last.icmp_errors_sent, now.icmp_errors_sent));
        let trusted = d(last.trusted_evictions, now.trusted_evictions);
        self.evictions[0].inc_by(d(last.evictions, now.evictions).saturating_sub(trusted));
        self.evictions[1].inc_by(trusted);
        self.rate_limited[0].inc_by(d(last.bubbles_rate_limited, now.bubbles_rate_limited));
        self.rate_limited[1].inc_by(d(
            last.icmp_errors_rate_limited,
            now.icmp_errors_rate_limited,
        ));
        self.unreachable.inc_by(d(last.give_ups, now.give_ups));
        let by_client = d(last.unknown_peers_accepted, now.unknown_peers_accepted);
        self.created[0].inc_by(d(last.peers_created, now.peers_created).saturating_sub(by_client));
        self.created[1].inc_by(by_client);
        let set = |g: &IntGauge, v: usize| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        set(&self.peers[0], g.peers_trusted);
        set(&self.peers[1], g.peers_untrusted);
        set(&self.queue_packets, g.queued_packets);
        set(&self.queue_bytes, g.queued_bytes);
    }
}

/// Adds `b` to `a`, field by field (to sum the shards' counters).
pub fn add_counters(a: &mut RelayCounters, b: &RelayCounters) {
    a.encapsulated += b.encapsulated;
    a.forwarded += b.forwarded;
    a.queued += b.queued;
    a.flushed += b.flushed;
    a.bubbles_sent += b.bubbles_sent;
    a.direct_bubbles_sent += b.direct_bubbles_sent;
    a.bubbles_received += b.bubbles_received;
    a.give_ups += b.give_ups;
    a.icmp_errors_sent += b.icmp_errors_sent;
    a.icmp_errors_rate_limited += b.icmp_errors_rate_limited;
    a.peers_created += b.peers_created;
    a.evictions += b.evictions;
    a.trusted_evictions += b.trusted_evictions;
    a.bubbles_rate_limited += b.bubbles_rate_limited;
    a.expirations += b.expirations;
    a.lenient_accepts += b.lenient_accepts;
    a.unknown_peers_accepted += b.unknown_peers_accepted;
    for (x, y) in a
        .dropped_by_reason
        .iter_mut()
        .zip(b.dropped_by_reason.iter())
    {
        *x += *y;
    }
}

/// Adds `b` to `a`, field by field.
pub fn add_gauges(a: &mut RelayGauges, b: &RelayGauges) {
    a.peers += b.peers;
    a.peers_trusted += b.peers_trusted;
    a.peers_untrusted += b.peers_untrusted;
    a.queued_packets += b.queued_packets;
    a.queued_bytes += b.queued_bytes;
    a.pending_outputs += b.pending_outputs;
}

#[cfg(test)]
mod tests {
    use testkit::metrics::registry_text;

    use super::*;

    /// With the conventions of every component (teredo-rt), one relay per registry.
    #[test]
    fn every_series_starts_at_zero() {
        let (t, _) = teredo_rt::component::assert_component_conventions(
            "teredo_relay_",
            env!("CARGO_PKG_VERSION"),
            RelayMetrics::register,
        );
        for d in DIRECTIONS {
            assert!(
                t.contains(&format!("{RECEIVED}{{direction=\"{d}\"}} 0\n")),
                "{d}"
            );
            assert!(
                t.contains(&format!("{PACKETS}{{direction=\"{d}\"}} 0\n")),
                "{d}"
            );
            assert!(
                t.contains(&format!("{BYTES}{{direction=\"{d}\"}} 0\n")),
                "{d}"
            );
        }
        for r in drop_reasons() {
            assert!(
                t.contains(&format!("{DROPPED}{{reason=\"{r}\"}} 0\n")),
                "{r}"
            );
        }
        for s in PEER_STATES {
            assert!(t.contains(&format!("{PEERS}{{state=\"{s}\"}} 0\n")), "{s}");
        }
        for k in BUBBLE_KINDS {
            assert!(
                t.contains(&format!("{BUBBLES_SENT}{{kind=\"{k}\"}} 0\n")),
                "{k}"
            );
        }
        for r in EVICTION_REASONS {
            assert!(
                t.contains(&format!("{PEER_EVICTIONS}{{reason=\"{r}\"}} 0\n")),
                "{r}"
            );
        }
        for b in PEER_CREATORS {
            assert!(
                t.contains(&format!("{PEERS_CREATED}{{by=\"{b}\"}} 0\n")),
                "{b}"
            );
        }
        for w in RATE_LIMITED_WHAT {
            assert!(
                t.contains(&format!("{RATE_LIMITED}{{what=\"{w}\"}} 0\n")),
                "{w}"
            );
        }
        for name in [
            QUEUE_PACKETS,
            QUEUE_BYTES,
            ICMP_ERRORS_SENT,
            PEERS_UNREACHABLE,
        ] {
            assert!(t.contains(&format!("\n{name} 0\n")), "{name}");
        }
        assert!(t.contains(&format!("{CONNECTIVITY_TEST_DURATION}_count 0\n")));
        assert!(t.contains(BUILD_INFO));
    }

    #[test]
    fn core_deltas_and_driver_counts_land_in_the_right_series() {
        let registry = Registry::new();
        let m = RelayMetrics::register(&registry).unwrap();
        m.relayed(Direction::Ipv6ToIpv4, 3, 300);
        m.received(Direction::Ipv4ToIpv6, 5);
        m.dropped(DropReason::SendFailed);
        let last = RelayCounters::default();
        let mut now = RelayCounters {
            bubbles_sent: 4,
            direct_bubbles_sent: 1,
            icmp_errors_sent: 2,
            evictions: 5,
            trusted_evictions: 2,
            bubbles_rate_limited: 9,
            icmp_errors_rate_limited: 11,
            give_ups: 6,
            peers_created: 10,
            unknown_peers_accepted: 4,
            ..RelayCounters::default()
        };
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == DropReason::SpoofedSource)
            .unwrap();
        now.dropped_by_reason[i] = 7;
        let g = RelayGauges {
            peers: 3,
            peers_trusted: 1,
            peers_untrusted: 2,
            queued_packets: 8,
            queued_bytes: 800,
            pending_outputs: 0,
        };
        m.export_core(&last, &now, g);
        // A second export of the same totals adds nothing.
        m.export_core(&now, &now, g);
        let t = registry_text(&registry);
        for want in [
            format!("{PACKETS}{{direction=\"ipv6_to_ipv4\"}} 3\n"),
            format!("{RECEIVED}{{direction=\"ipv4_to_ipv6\"}} 5\n"),
            format!("{RECEIVED}{{direction=\"ipv6_to_ipv4\"}} 0\n"),
            format!("{PACKETS}{{direction=\"ipv4_to_ipv6\"}} 0\n"),
            format!("{BYTES}{{direction=\"ipv6_to_ipv4\"}} 300\n"),
            format!("{DROPPED}{{reason=\"send_failed\"}} 1\n"),
            format!("{DROPPED}{{reason=\"spoofed_source\"}} 7\n"),
            format!("{BUBBLES_SENT}{{kind=\"indirect\"}} 4\n"),
            format!("{BUBBLES_SENT}{{kind=\"direct\"}} 1\n"),
            format!("{ICMP_ERRORS_SENT} 2\n"),
            format!("{PEER_EVICTIONS}{{reason=\"untrusted\"}} 3\n"),
            format!("{PEER_EVICTIONS}{{reason=\"trusted\"}} 2\n"),
            format!("{RATE_LIMITED}{{what=\"bubble\"}} 9\n"),
            format!("{RATE_LIMITED}{{what=\"icmp_error\"}} 11\n"),
            format!("{PEERS_UNREACHABLE} 6\n"),
            format!("{PEERS_CREATED}{{by=\"native_packet\"}} 6\n"),
            format!("{PEERS_CREATED}{{by=\"client_datagram\"}} 4\n"),
            format!("{PEERS}{{state=\"trusted\"}} 1\n"),
            format!("{PEERS}{{state=\"untrusted\"}} 2\n"),
            format!("{QUEUE_PACKETS} 8\n"),
            format!("{QUEUE_BYTES} 800\n"),
        ] {
            assert!(t.contains(&want), "missing {want}\n{t}");
        }
    }
}
