//! The fast path's metrics. The program's per-CPU counters are read at each scrape (a
//! [`Collector`]) into `teredo_relay_fast_path_forwarded_total{direction}` (what it
//! forwarded itself: add it to `teredo_relay_packets_total` for the relay's totals) and
//! `teredo_relay_fast_path_passed_total{reason}` (what it left to the kernel and the core);
//! the sync task sets `teredo_relay_fast_path_peers` (map entries, at each sync) and counts
//! `teredo_relay_fast_path_sync_errors_total{reason}`.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use teredo_fastpath::{RelayCounters, RelayPassReason};

use super::Shared;

/// `teredo_relay_fast_path_forwarded_total{direction}`.
pub const FAST_FORWARDED: &str = "teredo_relay_fast_path_forwarded_total";
/// `teredo_relay_fast_path_passed_total{reason}`.
pub const FAST_PASSED: &str = "teredo_relay_fast_path_passed_total";
/// `teredo_relay_fast_path_peers`.
pub const FAST_PEERS: &str = "teredo_relay_fast_path_peers";
/// `teredo_relay_fast_path_sync_errors_total{reason}`.
pub const FAST_SYNC_ERRORS: &str = "teredo_relay_fast_path_sync_errors_total";

/// Why the peer map may differ from the core's trusted peers (each counted; the first two
/// concern one peer, the last two rebuild the map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncError {
    /// Adding a peer failed (the map is full, or the kernel refused): it stays on the slow
    /// path.
    Upsert,
    /// Removing a peer failed: the program may still forward for it until the next resync.
    Remove,
    /// A change did not fit in the sync task's queue.
    QueueFull,
    /// The core dropped events before they were taken.
    EventsLost,
}

impl SyncError {
    const ALL: [Self; 4] = [
        Self::Upsert,
        Self::Remove,
        Self::QueueFull,
        Self::EventsLost,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Upsert => "upsert",
            Self::Remove => "remove",
            Self::QueueFull => "queue_full",
            Self::EventsLost => "events_lost",
        }
    }
}

/// What the sync task updates.
#[derive(Debug)]
pub(crate) struct SyncMetrics {
    errors: IntCounterVec,
    pub(crate) peers: IntGauge,
}

impl SyncMetrics {
    pub(crate) fn new() -> prometheus::Result<Self> {
        let errors = IntCounterVec::new(
            Opts::new(
                FAST_SYNC_ERRORS,
                "Changes of the XDP fast path's peer map that failed or were lost, by reason.",
            ),
            &["reason"],
        )?;
        for e in SyncError::ALL {
            errors.with_label_values(&[e.as_str()]);
        }
        let peers = IntGauge::new(
            FAST_PEERS,
            "Trusted peers in the XDP fast path's map (at the last sync).",
        )?;
        Ok(Self { errors, peers })
    }

    pub(crate) fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.errors.clone()))?;
        registry.register(Box::new(self.peers.clone()))
    }

    pub(crate) fn error(&self, e: SyncError) {
        self.errors_n(e, 1);
    }

    pub(crate) fn errors_n(&self, e: SyncError, n: u64) {
        self.errors.with_label_values(&[e.as_str()]).inc_by(n);
    }
}

/// The collector reading the program's counters at each scrape.
pub(crate) struct FastPathMetrics {
    shared: Arc<Shared>,
    forwarded: IntCounterVec,
    passed: IntCounterVec,
}

impl FastPathMetrics {
    pub(crate) fn new(shared: Arc<Shared>) -> prometheus::Result<Self> {
        let forwarded = IntCounterVec::new(
            Opts::new(
                FAST_FORWARDED,
                "Packets the XDP fast path forwarded itself, by direction (not in teredo_relay_packets_total).",
            ),
            &["direction"],
        )?;
        let passed = IntCounterVec::new(
            Opts::new(
                FAST_PASSED,
                "Frames the XDP fast path left to the kernel and the user-space relay, by reason.",
            ),
            &["reason"],
        )?;
        let m = Self {
            shared,
            forwarded,
            passed,
        };
        m.update(&RelayCounters::default());
        Ok(m)
    }

    /// Sets every series to the program's counter (they only grow).
    fn update(&self, c: &RelayCounters) {
        fn set(counter: &IntCounter, value: u64) {
            let now = counter.get();
            if value > now {
                counter.inc_by(value - now);
            }
        }
        for (direction, n) in [("to_native", c.to_native), ("to_teredo", c.to_teredo)] {
            set(&self.forwarded.with_label_values(&[direction]), n);
        }
        for r in RelayPassReason::ALL {
            set(
                &self.passed.with_label_values(&[r.as_str()]),
                c.passed_for(r),
            );
        }
    }
}

impl Collector for FastPathMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.forwarded.desc();
        d.extend(self.passed.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let counters = {
            let mut s = self.shared.state();
            if let Some(p) = &s.program {
                match p.counters() {
                    Ok(c) => s.last = c,
                    Err(e) => tracing::debug!(error = %e, "cannot read the fast path counters"),
                }
            }
            s.last
        };
        self.update(&counters);
        let mut f = self.forwarded.collect();
        f.extend(self.passed.collect());
        f
    }
}
