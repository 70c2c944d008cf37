//! The server's Prometheus metrics.
//!
//! Every series is created (at zero) when the metrics are registered, so a scrape shows the
//! full set from the start. The drivers never look a label up on the hot path: each worker
//! resolves its handles once (`ServerMetrics::worker`) and increments plain atomics.

use prometheus::{Histogram, IntCounter, IntCounterVec, Registry};
use teredo::io::Local;
use teredo::DropReason;
use teredo_rt::{ComponentMetrics, DropCounters};

/// `teredo_server_packets_received_total{address}`.
pub const PACKETS_RECEIVED: &str = "teredo_server_packets_received_total";
/// `teredo_server_router_solicitations_total{address,cone}`.
pub const ROUTER_SOLICITATIONS: &str = "teredo_server_router_solicitations_total";
/// `teredo_server_router_advertisements_total{address}` (the address the RA left from).
pub const ROUTER_ADVERTISEMENTS: &str = "teredo_server_router_advertisements_total";
/// `teredo_server_packets_forwarded_total{direction,kind}`.
pub const PACKETS_FORWARDED: &str = "teredo_server_packets_forwarded_total";
/// `teredo_server_packets_dropped_total{reason}`.
pub const PACKETS_DROPPED: &str = "teredo_server_packets_dropped_total";
/// `teredo_server_handling_duration_seconds` histogram.
pub const HANDLING_DURATION: &str = "teredo_server_handling_duration_seconds";
/// `teredo_server_build_info{version}` = 1.
pub const BUILD_INFO: &str = "teredo_server_build_info";

/// Histogram buckets of the handling duration: 1 µs to 100 ms.
pub const DURATION_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1,
];

/// The server's addresses, in [`Local::index`] order.
pub(crate) const LOCALS: [Local; 2] = [Local::Primary, Local::Secondary];
const DIRECTIONS: [&str; 2] = ["to_client", "to_native"];
const KINDS: [&str; 2] = ["bubble", "icmpv6"];

/// The registered metric families.
#[derive(Clone, Debug)]
pub(crate) struct ServerMetrics {
    received: [IntCounter; 2],
    solicitations: IntCounterVec,
    advertisements: [IntCounter; 2],
    forwarded: IntCounterVec,
    dropped: DropCounters,
    duration: Histogram,
}

impl ServerMetrics {
    /// Creates every family and series (at zero) and registers them, the build info and the
    /// process metrics in `registry`. The process metrics may already be there (several
    /// components sharing one registry in the lab); the server's own may not.
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = ComponentMetrics::new(registry, BUILD_INFO, env!("CARGO_PKG_VERSION"))?;
        let addresses = LOCALS.map(Local::as_str);
        let received = m.counters(
            PACKETS_RECEIVED,
            "UDP datagrams received, by local address.",
            "address",
            addresses,
        )?;
        let solicitations = m.counter_vec(
            ROUTER_SOLICITATIONS,
            "Valid router solicitations received, by local address and cone flag.",
            &["address", "cone"],
        )?;
        let advertisements = m.counters(
            ROUTER_ADVERTISEMENTS,
            "Router advertisements sent, by the local address they left from.",
            "address",
            addresses,
        )?;
        let forwarded = m.counter_vec(
            PACKETS_FORWARDED,
            "Bubbles and ICMPv6 packets relayed to Teredo clients or to native IPv6.",
            &["direction", "kind"],
        )?;
        let dropped = m.drops(
            PACKETS_DROPPED,
            "Datagrams dropped, by reason.",
            DropReason::SERVER.iter().copied(),
        )?;
        let duration = m.histogram(
            HANDLING_DURATION,
            "Time from receiving a datagram (its receive batch) to having sent the answer (its send batch), or dropped it.",
            DURATION_BUCKETS,
        )?;
        for l in addresses {
            for cone in ["true", "false"] {
                solicitations.with_label_values(&[l, cone]);
            }
        }
        for d in DIRECTIONS {
            for k in KINDS {
                forwarded.with_label_values(&[d, k]);
            }
        }
        Ok(Self {
            received,
            solicitations,
            advertisements,
            forwarded,
            dropped,
            duration,
        })
    }

    /// Pre-resolved handles for the worker receiving on `local`.
    pub(crate) fn worker(&self, local: Local) -> WorkerMetrics {
        let solicitations = [false, true].map(|cone| {
            self.solicitations
                .with_label_values(&[local.as_str(), if cone { "true" } else { "false" }])
        });
        let forwarded =
            DIRECTIONS.map(|d| KINDS.map(|k| self.forwarded.with_label_values(&[d, k])));
        WorkerMetrics {
            received: self.received[local.index()].clone(),
            solicitations,
            advertisements: self.advertisements.clone(),
            forwarded,
            dropped: self.dropped.clone(),
            duration: self.duration.clone(),
        }
    }
}

/// One worker's resolved series.
#[derive(Clone, Debug)]
pub(crate) struct WorkerMetrics {
    /// Datagrams received on this worker's address.
    pub(crate) received: IntCounter,
    /// Router solicitations on this worker's address, indexed by the cone flag.
    solicitations: [IntCounter; 2],
    /// Router advertisements, indexed by [`Local::index`].
    advertisements: [IntCounter; 2],
    /// Forwarded packets, `[direction][kind]`.
    forwarded: [[IntCounter; 2]; 2],
    /// Drops by reason.
    dropped: DropCounters,
    /// Handling duration.
    pub(crate) duration: Histogram,
}

/// Where a packet was forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// To a Teredo client, over UDP.
    ToClient = 0,
    /// To the native IPv6 side.
    ToNative = 1,
}

impl WorkerMetrics {
    pub(crate) fn solicitation(&self, cone: bool) {
        self.solicitations[usize::from(cone)].inc();
    }

    pub(crate) fn advertisement(&self, from: Local) {
        self.advertisements[from.index()].inc();
    }

    pub(crate) fn forwarded(&self, direction: Direction, bubble: bool) {
        self.forwarded[direction as usize][usize::from(!bubble)].inc();
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        self.dropped.inc(reason);
    }
}

#[cfg(test)]
mod tests {
    use testkit::metrics::registry_text;

    use super::*;

    /// Checks teredo-rt's component conventions too (one server a registry, shared process
    /// metrics).
    #[test]
    fn every_series_starts_at_zero() {
        let (t, _) = teredo_rt::component::assert_component_conventions(
            "teredo_server_",
            env!("CARGO_PKG_VERSION"),
            ServerMetrics::register,
        );
        for l in ["primary", "secondary"] {
            assert!(t.contains(&format!("{PACKETS_RECEIVED}{{address=\"{l}\"}} 0\n")));
            assert!(t.contains(&format!("{ROUTER_ADVERTISEMENTS}{{address=\"{l}\"}} 0\n")));
            for c in ["true", "false"] {
                assert!(t.contains(&format!(
                    "{ROUTER_SOLICITATIONS}{{address=\"{l}\",cone=\"{c}\"}} 0\n"
                )));
            }
        }
        for r in DropReason::SERVER {
            assert!(
                t.contains(&format!("{PACKETS_DROPPED}{{reason=\"{r}\"}} 0\n")),
                "{r}"
            );
        }
        assert!(t.contains(&format!("{HANDLING_DURATION}_count 0\n")));
        assert!(t.contains(BUILD_INFO));
    }

    #[test]
    fn handles_hit_the_right_series() {
        let registry = Registry::new();
        let m = ServerMetrics::register(&registry).unwrap();
        let w = m.worker(Local::Secondary);
        w.received.inc();
        w.solicitation(true);
        w.advertisement(Local::Primary);
        w.forwarded(Direction::ToNative, false);
        w.dropped(DropReason::SendFailed);
        w.dropped(DropReason::Truncated);
        let t = registry_text(&registry);
        for want in [
            format!("{PACKETS_RECEIVED}{{address=\"secondary\"}} 1\n"),
            format!("{PACKETS_RECEIVED}{{address=\"primary\"}} 0\n"),
            format!("{ROUTER_SOLICITATIONS}{{address=\"secondary\",cone=\"true\"}} 1\n"),
            format!("{ROUTER_SOLICITATIONS}{{address=\"secondary\",cone=\"false\"}} 0\n"),
            format!("{ROUTER_ADVERTISEMENTS}{{address=\"primary\"}} 1\n"),
            format!("{PACKETS_FORWARDED}{{direction=\"to_native\",kind=\"icmpv6\"}} 1\n"),
            format!("{PACKETS_FORWARDED}{{direction=\"to_native\",kind=\"bubble\"}} 0\n"),
            format!("{PACKETS_DROPPED}{{reason=\"send_failed\"}} 1\n"),
            format!("{PACKETS_DROPPED}{{reason=\"truncated\"}} 1\n"),
        ] {
            assert!(t.contains(&want), "missing {want}");
        }
    }
}
