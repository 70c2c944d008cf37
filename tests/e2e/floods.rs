//! Floods against the server (issue 7, part 3): spoofed-source router solicitations.
//!
//! The server runs in-process in a namespace holding only `lo` (addresses of
//! `teredo_tests::bad_input`); the RSs are forged with a raw `IP_HDRINCL` socket from many
//! sources no host in the namespace owns, so the RAs go out on `lo` towards nobody, and an
//! `AF_PACKET` sniffer counts every datagram the server emits. The flood is sent in rounds
//! that wait until the server has handled each one (its
//! `teredo_server_handling_duration_seconds_count`), so no RS is lost in the kernel and the
//! counts are exact.
//!
//! * Without a limit: exactly one RA per RS, each to the RS's source, and the bytes out over
//!   the bytes in never exceed the RA/RS size ratio of the smallest RS (the server
//!   amplifies by no more than its protocol requires).
//! * With `rs_rate_limit`: a victim gets at most `burst + rate × elapsed` RAs whatever the
//!   flood, the rest are counted as `rate_limited`, and another client is still answered.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use teredo::addr::{LL_WINDOWS_CONE, LL_WINDOWS_RESTRICTED};
use teredo_server::{NativeSide, ServerOptions};
use teredo_tests::bad_input::{rs, valid_rs, A, P, P_UDP, S};
use teredo_tests::inproc::{udp_socket, InprocServer, RawIpv4, Sniffer, UdpDatagram};
use teredo_tests::{check, function_name, require_root, Netns};

const HANDLED: &str = "teredo_server_handling_duration_seconds_count";
const LIMIT: Duration = Duration::from_secs(10);
/// RSs sent before waiting for the server to catch up.
const ROUND: usize = 100;

struct Lab {
    server: InprocServer,
    raw: RawIpv4,
    sniffer: Sniffer,
    ns: Netns,
}

impl Lab {
    fn new(test: &str, rs_rate_limit: u32) -> Self {
        let ns = check(Netns::new(test, "flood"));
        for ip in [P, S, *A.ip()] {
            check(ns.add_addr("lo", &format!("{ip}/32")));
        }
        check(ns.ip(&["route", "add", "default", "dev", "lo"]));
        let mut o = ServerOptions::new(P);
        o.native = NativeSide::Disabled;
        o.rs_rate_limit = rs_rate_limit;
        let server = check(InprocServer::start(&ns, o));
        Self {
            raw: check(RawIpv4::open(&ns)),
            sniffer: check(Sniffer::open(&ns)),
            server,
            ns,
        }
    }

    fn handled(&self) -> usize {
        self.server.metric(HANDLED).unwrap_or(0.0) as usize
    }

    fn wait_handled(&self, n: usize) {
        check(self.server.wait_metric(HANDLED, n as f64, LIMIT));
    }

    /// Forges every (source, datagram) to P:3544, in rounds; returns the bytes sent.
    fn flood(&self, rss: &[(SocketAddrV4, Vec<u8>)]) -> usize {
        let start = self.handled();
        let mut bytes = 0;
        for (i, chunk) in rss.chunks(ROUND).enumerate() {
            for (from, d) in chunk {
                check(self.raw.send_udp(*from, P_UDP, d));
                bytes += d.len();
            }
            self.wait_handled(start + (i * ROUND + chunk.len()));
        }
        bytes
    }

    /// The datagrams the server sent (from P:3544 or S:3544) since the last look.
    fn sent(&self) -> Vec<UdpDatagram> {
        self.sniffer
            .drain()
            .iter()
            .filter_map(|p| p.udp4())
            .filter(|d| d.src.port() == 3544 && (*d.src.ip() == P || *d.src.ip() == S))
            .filter(|d| !d.payload.is_empty() && *d.dst.ip() != P && *d.dst.ip() != S)
            .collect()
    }

    fn drops(&self) -> BTreeMap<String, u64> {
        let prefix = "teredo_server_packets_dropped_total{reason=\"";
        self.server
            .metrics_text()
            .lines()
            .filter_map(|l| {
                let (reason, value) = l.strip_prefix(prefix)?.split_once("\"} ")?;
                let v = value.trim().parse::<f64>().ok()? as u64;
                (v != 0).then(|| (reason.to_owned(), v))
            })
            .collect()
    }
}

/// The i-th spoofed source: spread over TEST-NET-3 and many ports.
fn spoofed(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(203, 0, 113, (i % 250) as u8 + 1),
        20_000 + (i % 7919) as u16,
    )
}

#[test]
fn spoofed_rs_flood_gets_one_ra_per_rs_and_no_more_bytes_than_the_ra_rs_ratio() {
    require_root!();
    let lab = Lab::new(function_name!(), 0);
    let n = 2_000;
    // Half with a nonce (61 bytes), half without (48 bytes); cone and restricted.
    let rss: Vec<(SocketAddrV4, Vec<u8>)> = (0..n)
        .map(|i| {
            let src = if i % 3 == 0 {
                LL_WINDOWS_CONE
            } else {
                LL_WINDOWS_RESTRICTED
            };
            let nonce = (i % 2 == 0).then(|| (i as u64).to_be_bytes());
            (spoofed(i), rs(src, nonce))
        })
        .collect();
    let smallest_rs = rss.iter().map(|(_, d)| d.len()).min().unwrap();
    let bytes_in = lab.flood(&rss);
    let ras = lab.sent();

    // One RA per RS, to its source.
    assert_eq!(ras.len(), n, "RAs for {n} RSs");
    let mut want: BTreeMap<SocketAddrV4, usize> = BTreeMap::new();
    for (from, _) in &rss {
        *want.entry(*from).or_default() += 1;
    }
    let mut got: BTreeMap<SocketAddrV4, usize> = BTreeMap::new();
    for d in &ras {
        *got.entry(d.dst).or_default() += 1;
    }
    assert_eq!(got, want, "RAs per destination");
    let advertised: f64 = ["primary", "secondary"]
        .iter()
        .map(|a| {
            lab.server
                .metric(&format!(
                    "teredo_server_router_advertisements_total{{address=\"{a}\"}}"
                ))
                .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(advertised as usize, n);
    assert!(lab.drops().is_empty(), "drops: {:?}", lab.drops());

    // Bytes: the largest RA answers the smallest RS at most.
    let largest_ra = ras.iter().map(|d| d.payload.len()).max().unwrap();
    let smallest_ra = ras.iter().map(|d| d.payload.len()).min().unwrap();
    let bytes_out: usize = ras.iter().map(|d| d.payload.len()).sum();
    let ratio = smallest_ra as f64 / smallest_rs as f64;
    let amplification = bytes_out as f64 / bytes_in as f64;
    eprintln!(
        "spoofed RS flood: {n} RSs ({bytes_in} B UDP payload) -> {} RAs ({bytes_out} B), \
         amplification {amplification:.3}, RA/RS size ratio {ratio:.3} \
         (smallest RS {smallest_rs} B, RAs {smallest_ra}..={largest_ra} B)",
        ras.len()
    );
    // The RA of the smallest RS is the smallest RA; a nonce adds its 13 bytes to both.
    assert_eq!(
        largest_ra - smallest_ra,
        13,
        "only the echoed auth header varies"
    );
    assert!(
        amplification <= ratio,
        "amplification {amplification} above the RA/RS ratio {ratio}"
    );
}

#[test]
fn rs_rate_limit_bounds_the_ras_aimed_at_one_victim() {
    require_root!();
    let rate = 10;
    let lab = Lab::new(function_name!(), rate);
    let victim = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 4000);
    let n = 500;
    // Restricted RSs: all answered from P, by the primary worker's table.
    let rss: Vec<_> = (0..n)
        .map(|i| {
            let from = SocketAddrV4::new(*victim.ip(), 4000 + (i % 50) as u16);
            (from, rs(LL_WINDOWS_RESTRICTED, None))
        })
        .collect();
    let started = Instant::now();
    lab.flood(&rss);
    let elapsed = started.elapsed();
    let ras = lab.sent();
    assert!(ras.iter().all(|d| d.dst.ip() == victim.ip()));
    let limited = lab.drops().get("rate_limited").copied().unwrap_or(0);
    assert_eq!(
        ras.len() as u64 + limited,
        n as u64,
        "every RS answered or limited"
    );
    // Tokens: the burst, plus `rate` per second of the flood (rounded up, plus one for the
    // millisecond granularity).
    let bound = rate as usize + (elapsed.as_secs_f64() * f64::from(rate)).ceil() as usize + 1;
    eprintln!(
        "RS flood at one victim, limit {rate}/s: {n} RSs in {elapsed:?} -> {} RAs (bound {bound}), \
         {limited} rate_limited",
        ras.len()
    );
    assert!(ras.len() <= bound, "{} RAs, bound {bound}", ras.len());
    assert!(ras.len() >= rate as usize, "the burst is answered");

    // Another client is not affected.
    let a = check(udp_socket(&lab.ns, A));
    a.set_read_timeout(Some(LIMIT)).unwrap();
    a.send_to(&valid_rs(), P_UDP).unwrap();
    let mut buf = [0u8; 2048];
    let (len, from) = a.recv_from(&mut buf).expect("RA for another client");
    assert_eq!(from, SocketAddr::V4(P_UDP));
    assert!(len > 40);
}
