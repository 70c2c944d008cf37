//! The run's datagrams as one pcap (raw IP link type): UDP/IPv4 datagrams get synthesised
//! IPv4 and UDP headers with the tool's and the target's addresses, UDP/IPv6 datagrams of
//! the native side an IPv6 and UDP header; what a raw ICMPv6 endpoint received (port 0 on
//! both sides) is written as the IPv6 packet it is. Times are the run's clock.

use std::net::SocketAddr;
use std::time::Duration;

use netsim::pcap::PcapLog;

use super::ctx::{Dir, Traced};
use super::report::Report;

/// The pcap file of `report` and the number of datagrams it could not represent.
pub fn pcap(report: &Report) -> (Vec<u8>, u64) {
    let mut log = PcapLog::new();
    let mut all: Vec<&Traced> = report.checks.iter().flat_map(|c| &c.trace).collect();
    all.sort_by_key(|t| t.run_us);
    let mut unrepresentable = 0;
    for t in all {
        let (from, to) = match t.dir {
            Dir::Sent => (t.local, t.remote),
            Dir::Received => (t.remote, t.local),
        };
        let at = Duration::from_micros(t.run_us);
        match (from, to) {
            (SocketAddr::V4(f), SocketAddr::V4(d)) => log.record(at, f, d, &t.bytes),
            // A raw ICMPv6 endpoint's datagram is already the whole IPv6 packet.
            (SocketAddr::V6(f), SocketAddr::V6(d))
                if f.port() == 0 && d.port() == 0 && t.bytes.first().map(|b| b >> 4) == Some(6) =>
            {
                log.record_ipv6(at, &t.bytes);
            }
            (SocketAddr::V6(f), SocketAddr::V6(d)) => {
                match netsim::packets::udp_datagram(f, d, &t.bytes) {
                    Some(p) => log.record_ipv6(at, &p),
                    None => unrepresentable += 1,
                }
            }
            _ => unrepresentable += 1,
        }
    }
    unrepresentable += log.skipped();
    (log.into_bytes(), unrepresentable)
}
