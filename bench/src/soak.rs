//! The soak's pieces that are not the bench's: the server's traffic (router solicitations
//! from many mappings), the samples (RSS, open file descriptors, `/metrics` counters) and
//! their table.
//!
//! The soak (`soak` binary) runs our `teredo-server` and `teredo-relay` in the bench's
//! relay namespace and drives both from the AF_PACKET generator for minutes at a fixed
//! fraction of their measured maximum, sampling each process at the start, every interval
//! and at the end. A process whose memory or descriptors grow with time shows up as a
//! rising column; drops show up per reason.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use teredo::wire::auth::Auth;
use teredo::wire::ndp::emit_rs;
use testkit::metrics::sum_by_label;

use crate::frames::{udp4_frame, PEER_V4, TEREDO_PORT};

/// The server's primary address in the soak (in the relay namespace; the secondary is .31).
pub const SOAK_SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);
/// Client `i` of the server load solicits from `PEER_V4:(RS_PORT_BASE + i)` (above the
/// relay peers' ports).
pub const RS_PORT_BASE: u16 = 50_000;
/// Most soliciting clients.
pub const MAX_RS_CLIENTS: u32 = (u16::MAX - RS_PORT_BASE) as u32;
/// Link-local source of the solicitations (RFC 4380 restricted RS, as Windows sends it).
const RS_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xffff, 0xffff, 0xfffe);

/// The restricted RS of soliciting client `i` (nonce-only authentication, a nonce per
/// client), in a frame from its mapping to the soak server's primary address.
pub fn rs_frame(i: u32) -> Vec<u8> {
    let port = RS_PORT_BASE.saturating_add(u16::try_from(i).unwrap_or(u16::MAX));
    let mut nonce = [0u8; 8];
    nonce[..4].copy_from_slice(&i.to_be_bytes());
    nonce[4..].copy_from_slice(b"soak");
    let auth = Auth::nonce_only(nonce);
    let mut buf = [0u8; 128];
    let len =
        emit_rs(&mut buf, Some(&auth), RS_LINK_LOCAL, false).expect("an RS always fits 128 bytes");
    udp4_frame(
        SocketAddrV4::new(PEER_V4, port),
        SocketAddrV4::new(SOAK_SERVER_V4, TEREDO_PORT),
        &buf[..len],
    )
}

/// `relay` frames interleaved with `server` frames so that, sent in a loop, they come in
/// the ratio `relay_rate : server_rate` (at least one of each when both rates are > 0),
/// spread evenly rather than in blocks.
pub fn interleave(
    relay: &[Vec<u8>],
    server: &[Vec<u8>],
    relay_rate: f64,
    server_rate: f64,
) -> Vec<Vec<u8>> {
    let total = relay_rate + server_rate;
    if relay.is_empty() || relay_rate <= 0.0 || total <= 0.0 {
        return server.to_vec();
    }
    if server.is_empty() || server_rate <= 0.0 {
        return relay.to_vec();
    }
    // The ring has one frame of each relay peer, and as many server frames as the ratio
    // asks for (cycling through the soliciting clients).
    let n_server = ((relay.len() as f64 * server_rate / relay_rate).round() as usize).max(1);
    let n = relay.len() + n_server;
    let mut out = Vec::with_capacity(n);
    let (mut r, mut s) = (0usize, 0usize);
    for k in 0..n {
        // Bresenham: server frame k is due when its share of k+1 frames passes s.
        let due = ((k + 1) * n_server) / n;
        if due > s && s < n_server {
            out.push(server[s % server.len()].clone());
            s += 1;
        } else if r < relay.len() {
            out.push(relay[r].clone());
            r += 1;
        } else {
            out.push(server[s % server.len()].clone());
            s += 1;
        }
    }
    out
}

/// Open file descriptors of `pid` (entries of `/proc/PID/fd`).
pub fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(Iterator::count)
}

/// One process at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcSample {
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
    /// Dropped packets per reason so far (its `/metrics`), zero counts left out.
    pub drops: BTreeMap<String, u64>,
}

impl ProcSample {
    /// `pid`'s RSS and descriptors now, then the drop counter `dropped_metric` from the
    /// text `metrics()` fetches (zeros when the process or its endpoint is gone). The
    /// descriptors are counted before the fetch, so its connection is not among them.
    pub fn take(pid: u32, metrics: impl FnOnce() -> Option<String>, dropped_metric: &str) -> Self {
        let rss_kib = crate::procfs::vm_rss_kib(pid).unwrap_or(0);
        let fds = open_fds(pid).unwrap_or(0);
        Self {
            rss_kib,
            fds,
            drops: metrics()
                .as_deref()
                .map(|m| {
                    sum_by_label(m, dropped_metric, "reason")
                        .into_iter()
                        .filter(|(_, n)| *n > 0)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// One row of the soak: both processes and the traffic of the interval before it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Seconds since the traffic started.
    pub at_secs: f64,
    /// Frames the generator offered in the interval (relay + server).
    pub offered: u64,
    /// Of those, to the relay (by the ring's ratio).
    pub offered_relay_pps: f64,
    /// Of those, RSs to the server.
    pub offered_server_pps: f64,
    /// Packets the relay forwarded to the native side in the interval, per second (counted
    /// on the generator's native interface).
    pub relay_out_pps: f64,
    /// Router advertisements that came back in the interval, per second (counted on the
    /// generator's Internet interface).
    pub server_out_pps: f64,
    /// UDP receive-buffer overflows in the relay namespace so far (the kernel's drops
    /// before either process saw the datagram; not in their `/metrics`).
    pub kernel_rcvbuf_errors: u64,
    /// The relay.
    pub relay: ProcSample,
    /// The server.
    pub server: ProcSample,
}

/// The soak's closing line: the load average before and at the end.
pub fn load_line(before: [f64; 3], after: [f64; 3]) -> String {
    format!(
        "load average {:.2} {:.2} {:.2} before, {:.2} {:.2} {:.2} at the end",
        before[0], before[1], before[2], after[0], after[1], after[2]
    )
}

fn drops_cell(d: &BTreeMap<String, u64>) -> String {
    if d.is_empty() {
        return "-".to_owned();
    }
    d.iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The samples as a text table, then start → end lines for RSS and descriptors.
pub fn table(samples: &[Sample]) -> String {
    let header = [
        "t (s)",
        "relay in/out pps",
        "server RS/RA per s",
        "relay RSS KiB",
        "relay fds",
        "server RSS KiB",
        "server fds",
        "relay drops (total)",
        "server drops (total)",
        "kernel rcvbuf drops",
    ];
    let rows: Vec<Vec<String>> = samples
        .iter()
        .map(|s| {
            vec![
                format!("{:.0}", s.at_secs),
                format!("{:.0}/{:.0}", s.offered_relay_pps, s.relay_out_pps),
                format!("{:.0}/{:.0}", s.offered_server_pps, s.server_out_pps),
                s.relay.rss_kib.to_string(),
                s.relay.fds.to_string(),
                s.server.rss_kib.to_string(),
                s.server.fds.to_string(),
                drops_cell(&s.relay.drops),
                drops_cell(&s.server.drops),
                s.kernel_rcvbuf_errors.to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(l, "{c:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(
        &mut out,
        &rule.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for r in &rows {
        line(&mut out, &r.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if let (Some(a), Some(b)) = (samples.first(), samples.last()) {
        for (label, a, b) in [
            ("relay: ", &a.relay, &b.relay),
            ("server:", &a.server, &b.server),
        ] {
            let _ = writeln!(
                out,
                "{label} RSS {} -> {} KiB ({:+}), fds {} -> {} ({:+})",
                a.rss_kib,
                b.rss_kib,
                b.rss_kib as i64 - a.rss_kib as i64,
                a.fds,
                b.fds,
                b.fds as i64 - a.fds as i64
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::parse_udp4_frame;
    use teredo::wire::TeredoPacket;

    #[test]
    fn rs_frames_parse_as_solicitations_from_distinct_mappings() {
        let a = rs_frame(0);
        let b = rs_frame(7);
        let ua = parse_udp4_frame(&a).unwrap();
        let ub = parse_udp4_frame(&b).unwrap();
        assert_eq!(ua.dst, SocketAddrV4::new(SOAK_SERVER_V4, 3544));
        assert_eq!(ua.src, SocketAddrV4::new(PEER_V4, RS_PORT_BASE));
        assert_eq!(ub.src.port(), RS_PORT_BASE + 7);
        let p = TeredoPacket::parse(ua.payload).unwrap();
        let nonce = p.auth.unwrap().nonce;
        assert_eq!(&nonce[4..], b"soak");
        assert_ne!(
            TeredoPacket::parse(ub.payload).unwrap().auth.unwrap().nonce,
            nonce
        );
    }

    #[test]
    fn interleave_keeps_the_ratio_and_spreads() {
        let relay: Vec<Vec<u8>> = (0..10u8).map(|i| vec![b'r', i]).collect();
        let server: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b's', i]).collect();
        let ring = interleave(&relay, &server, 1000.0, 500.0);
        let n_s = ring.iter().filter(|f| f[0] == b's').count();
        let n_r = ring.iter().filter(|f| f[0] == b'r').count();
        assert_eq!((n_r, n_s), (10, 5));
        // No two server frames in a row with a 2:1 ratio.
        assert!(ring
            .windows(2)
            .all(|w| !(w[0][0] == b's' && w[1][0] == b's')));
        assert_eq!(interleave(&relay, &server, 0.0, 1.0).len(), 3);
        assert_eq!(interleave(&relay, &server, 1.0, 0.0).len(), 10);
        assert_eq!(
            interleave(&relay, &server, 1000.0, 1.0)
                .iter()
                .filter(|f| f[0] == b's')
                .count(),
            1
        );
    }

    #[test]
    fn metrics_are_summed_by_reason() {
        use testkit::metrics::sum_all;

        let text = "# HELP teredo_relay_packets_dropped_total x\n\
                    # TYPE teredo_relay_packets_dropped_total counter\n\
                    teredo_relay_packets_dropped_total{reason=\"spoofed_source\",worker=\"0\"} 3\n\
                    teredo_relay_packets_dropped_total{worker=\"1\",reason=\"spoofed_source\"} 4\n\
                    teredo_relay_packets_dropped_total{reason=\"queue_full\"} 0\n\
                    teredo_relay_packets_dropped_total_other{reason=\"x\"} 9\n\
                    teredo_relay_packets_total{direction=\"in\"} 10\n\
                    teredo_relay_packets_total 5\n";
        let d = sum_by_label(text, "teredo_relay_packets_dropped_total", "reason");
        assert_eq!(d.get("spoofed_source"), Some(&7));
        assert_eq!(d.get("queue_full"), Some(&0));
        assert!(!d.contains_key("x"));
        assert_eq!(sum_all(text, "teredo_relay_packets_total"), 15);
        let s = ProcSample::take(
            std::process::id(),
            || Some(text.to_owned()),
            "teredo_relay_packets_dropped_total",
        );
        assert!(s.rss_kib > 0 && s.fds > 0);
        assert_eq!(s.drops.len(), 1, "zero counts left out");
    }

    #[test]
    fn table_shows_start_and_end() {
        let mut a = Sample::default();
        a.relay.rss_kib = 5000;
        a.relay.fds = 12;
        let mut b = a.clone();
        b.at_secs = 600.0;
        b.relay.rss_kib = 5004;
        b.server.drops.insert("malformed".into(), 2);
        let t = table(&[a, b]);
        assert!(
            t.contains("relay:  RSS 5000 -> 5004 KiB (+4), fds 12 -> 12 (+0)"),
            "{t}"
        );
        assert!(t.contains("malformed=2"), "{t}");
    }
}
