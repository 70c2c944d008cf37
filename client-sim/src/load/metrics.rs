//! `client-sim load`'s own Prometheus metrics (`loadgen_*`, and `natsim_*` summed over every
//! simulated NAT). Every series exists at zero from the start; workers increment plain
//! handles resolved once here, never looking a label up per packet.

use netsim::NatDrop;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use teredo_rt::register;

/// Labels of `loadgen_qualifications_total{result}`: the qualification outcomes, plus
/// `error` (a socket could not be opened).
pub const QUALIFY_RESULTS: &[&str] = &[
    "qualified",
    "dormant",
    "symmetric_nat",
    "server_unreachable",
    "managed_network",
    "timeout",
    "error",
];

/// Labels of `loadgen_clients{state}`: `pending` (not started yet), `probe`, `qualified`,
/// `dormant`, `offline`.
pub const CLIENT_STATES: &[&str] = &["pending", "probe", "qualified", "dormant", "offline"];

/// Buckets of `loadgen_rtt_seconds`: 50 µs doubling up to about 6.5 s.
pub fn rtt_buckets() -> Vec<f64> {
    (0..18).map(|k| 50e-6 * f64::from(1u32 << k)).collect()
}

/// Buckets of `loadgen_qualification_duration_seconds`: 1 ms doubling up to about 65 s.
pub fn qualification_buckets() -> Vec<f64> {
    (0..17).map(|k| 1e-3 * f64::from(1u32 << k)).collect()
}

/// The registered handles.
#[derive(Clone, Debug)]
pub struct LoadMetrics {
    /// `loadgen_packets_sent_total`.
    pub sent: IntCounter,
    /// `loadgen_packets_received_total` (distinct answers).
    pub received: IntCounter,
    /// `loadgen_packets_lost_total`, added at the end of each trial.
    pub lost: IntCounter,
    /// `loadgen_packets_out_of_order_total`.
    pub out_of_order: IntCounter,
    /// `loadgen_packets_duplicated_total`.
    pub duplicated: IntCounter,
    /// `loadgen_send_errors_total` (socket errors and local refusals).
    pub send_errors: IntCounter,
    /// `loadgen_socket_errors_total{reason}`: NAT mappings that got no socket.
    pub socket_errors: IntCounterVec,
    /// `loadgen_rtt_seconds`.
    pub rtt: Histogram,
    /// `loadgen_qualifications_total{result}`.
    pub qualifications: IntCounterVec,
    /// `loadgen_qualification_duration_seconds` (qualified clients only).
    pub qualification_duration: Histogram,
    /// `loadgen_clients{state}`.
    pub clients: IntGaugeVec,
    /// `loadgen_offered_packets_per_second`: the rate of the current trial (0 between).
    pub offered_rate: IntGauge,
    /// `natsim_mappings`: live mappings of every simulated NAT.
    pub nat_mappings: IntGauge,
    /// `natsim_mappings_created_total`.
    pub nat_mappings_created: IntCounter,
    /// `natsim_packets_total{direction,verdict}`.
    pub nat_packets: IntCounterVec,
    /// `natsim_packets_dropped_total{reason}`.
    pub nat_dropped: IntCounterVec,
}

impl LoadMetrics {
    /// Creates and registers every family and series (at zero), the build info and the
    /// process metrics.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| register(registry, IntCounter::new(name, help)?);
        let sent = counter(
            "loadgen_packets_sent_total",
            "Load packets sent (handed to the client or the socket).",
        )?;
        let received = counter(
            "loadgen_packets_received_total",
            "Distinct answers received.",
        )?;
        let lost = counter(
            "loadgen_packets_lost_total",
            "Packets without an answer, counted when a trial ends (after the drain time).",
        )?;
        let out_of_order = counter(
            "loadgen_packets_out_of_order_total",
            "Answers below the highest sequence number already seen from the same client.",
        )?;
        let duplicated = counter("loadgen_packets_duplicated_total", "Answers seen before.")?;
        let send_errors = counter(
            "loadgen_send_errors_total",
            "Sends that failed at the socket or were refused by the client.",
        )?;
        let rtt = register(
            registry,
            Histogram::with_opts(
                HistogramOpts::new("loadgen_rtt_seconds", "Round-trip time of the answers.")
                    .buckets(rtt_buckets()),
            )?,
        )?;
        let qualifications = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "loadgen_qualifications_total",
                    "Clients that finished qualifying, by result.",
                ),
                &["result"],
            )?,
        )?;
        for r in QUALIFY_RESULTS {
            qualifications.with_label_values(&[*r]);
        }
        let qualification_duration = register(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "loadgen_qualification_duration_seconds",
                    "Time from a client's first router solicitation to its qualification.",
                )
                .buckets(qualification_buckets()),
            )?,
        )?;
        let clients = register(
            registry,
            IntGaugeVec::new(
                Opts::new("loadgen_clients", "Simulated clients, by state."),
                &["state"],
            )?,
        )?;
        for s in CLIENT_STATES {
            clients.with_label_values(&[*s]);
        }
        let offered_rate = register(
            registry,
            IntGauge::new(
                "loadgen_offered_packets_per_second",
                "Offered rate of the trial running now (0 when none is).",
            )?,
        )?;
        let nat_mappings = register(
            registry,
            IntGauge::new(
                "natsim_mappings",
                "Live mappings, summed over every simulated NAT.",
            )?,
        )?;
        let nat_mappings_created = counter(
            "natsim_mappings_created_total",
            "Mappings created by the simulated NATs.",
        )?;
        let nat_packets = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "natsim_packets_total",
                    "Datagrams through the simulated NATs, by direction and verdict.",
                ),
                &["direction", "verdict"],
            )?,
        )?;
        for d in ["outbound", "inbound"] {
            for v in ["translated", "dropped"] {
                nat_packets.with_label_values(&[d, v]);
            }
        }
        let nat_dropped = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "natsim_packets_dropped_total",
                    "Datagrams dropped by the simulated NATs, by reason.",
                ),
                &["reason"],
            )?,
        )?;
        for r in NatDrop::ALL {
            nat_dropped.with_label_values(&[r.as_str()]);
        }
        let socket_errors = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "loadgen_socket_errors_total",
                    "Simulated NAT mappings that got no socket, by reason.",
                ),
                &["reason"],
            )?,
        )?;
        for r in super::sockets::SOCKET_FAILURES {
            socket_errors.with_label_values(&[r]);
        }
        let info = register(
            registry,
            IntGaugeVec::new(
                Opts::new("loadgen_build_info", "Build information; always 1."),
                &["version"],
            )?,
        )?;
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        teredo_rt::register_process_metrics(registry)?;
        Ok(Self {
            sent,
            received,
            lost,
            out_of_order,
            duplicated,
            send_errors,
            socket_errors,
            rtt,
            qualifications,
            qualification_duration,
            clients,
            offered_rate,
            nat_mappings,
            nat_mappings_created,
            nat_packets,
            nat_dropped,
        })
    }

    /// Registers `loadgen_generator_info{replica,first_client,clients} 1`: which generator
    /// this is among several (`replica` empty without `--replica-index`), so that one
    /// Prometheus scraping every replica tells them apart by more than their address.
    pub fn register_generator_info(
        registry: &Registry,
        replica: Option<u32>,
        first_client: u64,
        clients: u32,
    ) -> prometheus::Result<()> {
        let info = register(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "loadgen_generator_info",
                    "This generator's replica index and client range; always 1.",
                ),
                &["replica", "first_client", "clients"],
            )?,
        )?;
        info.with_label_values(&[
            replica.map(|r| r.to_string()).unwrap_or_default().as_str(),
            first_client.to_string().as_str(),
            clients.to_string().as_str(),
        ])
        .set(1);
        Ok(())
    }

    /// Moves one client from gauge state `from` to `to`.
    pub fn move_client(&self, from: &str, to: &str) {
        if from != to {
            self.clients.with_label_values(&[from]).dec();
            self.clients.with_label_values(&[to]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder as _, TextEncoder};

    use super::*;

    #[test]
    fn every_series_exists_at_zero() {
        let r = Registry::new();
        let m = LoadMetrics::register(&r).unwrap();
        LoadMetrics::register_generator_info(&r, Some(2), 1000, 500).unwrap();
        m.clients.with_label_values(&["pending"]).set(3);
        m.move_client("pending", "probe");
        let mut out = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in [
            "loadgen_packets_sent_total 0",
            "loadgen_packets_lost_total 0",
            "loadgen_rtt_seconds_count 0",
            "loadgen_qualifications_total{result=\"timeout\"} 0",
            "loadgen_qualification_duration_seconds_count 0",
            "loadgen_clients{state=\"pending\"} 2",
            "loadgen_clients{state=\"probe\"} 1",
            "loadgen_clients{state=\"offline\"} 0",
            "natsim_packets_dropped_total{reason=\"filtered\"} 0",
            "natsim_packets_total{direction=\"inbound\",verdict=\"dropped\"} 0",
            "loadgen_build_info{version=",
            "loadgen_generator_info{clients=\"500\",first_client=\"1000\",replica=\"2\"} 1",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
    }
}
