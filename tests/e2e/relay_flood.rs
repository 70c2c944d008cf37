//! Relay peer-table exhaustion (issue 7, part 3): the real `teredo-relay` binary in a
//! namespace, flooded from its native side with packets to distinct Teredo destinations (each
//! one a new peer, a queued packet and a bubble exchange), while its resident memory is read
//! from `/proc/PID/status`.
//!
//! The namespace holds `lo` only: the relay on 198.51.100.30:3545 with its TUN device; the
//! destinations' server address 198.51.100.1 is local too (nobody listens there, so the
//! indirect bubbles end in the namespace); a raw ICMPv6 socket sends one echo request per
//! destination, routed by the kernel into the TUN (2001::/32).
//!
//! The flood runs in two phases: first as many destinations as the table holds
//! (`--max-peers`), then nine times as many more. The relay must stay within its cap
//! (`teredo_relay_peers`), evict (`teredo_relay_peer_evictions_total`), and its RSS must not
//! grow with the flood: after ten times the cap it stays within a bound derived from the cap
//! (a generous per-peer budget plus the global queue cap) above the RSS before the flood,
//! and within a small margin of the RSS once the table was full. Memory is a bound, not a
//! speed, so it is asserted; the figures are printed.
//!
//! `TEREDO_FLOOD_MAX_PEERS` and `TEREDO_FLOOD_FACTOR` change the size (defaults 8192 and 10:
//! 81,920 distinct destinations, a few seconds). The measurement in the notes used 100,000
//! and 10 (a million destinations), run alone:
//! `TEREDO_FLOOD_MAX_PEERS=100000 cargo test -p teredo-tests --test e2e -- relay_flood
//! --nocapture`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use teredo::TeredoAddr;
use teredo_tests::bad_input::P;
use teredo_tests::inproc::{in_netns, metric_value};
use teredo_tests::process::tail;
use teredo_tests::relay::raw_icmpv6;
use teredo_tests::wait::wait_for;
use teredo_tests::{bin_path, check, function_name, require_root, Netns, Proc, TestDir};

const RELAY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 30), 3545);
const METRICS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 30), 9100);
/// The native sender's address (on `lo`).
const NATIVE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
/// Per-peer memory budget of the bound: the table entry, index bucket, expiry record,
/// exchange, timer and queue slot of a peer take a few hundred bytes; 1 KiB leaves room for
/// allocator slack and doubling growth.
const BUDGET_PER_PEER: u64 = 1024;
/// Fixed slack of the bound: allocator arenas, metrics, the runtime.
const SLACK: u64 = 32 << 20;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
fn rss(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context("no value")?
            .parse()?;
        Ok(kib * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn metrics(ns: &Netns) -> Result<String> {
    teredo_tests::metrics::fetch_in(ns, METRICS.into())
}

fn metric(text: &str, series: &str) -> u64 {
    metric_value(text, series).unwrap_or(0.0) as u64
}

/// Evictions of both kinds (untrusted peers, then least recently used trusted ones).
fn evictions(text: &str) -> u64 {
    ["untrusted", "trusted"]
        .iter()
        .map(|r| {
            metric(
                text,
                &format!("teredo_relay_peer_evictions_total{{reason=\"{r}\"}}"),
            )
        })
        .sum()
}

/// The i-th distinct destination: a client of server P at 198.51.100.(1 + i / 64000) and
/// port 1024 + i % 64000 (all global, all distinct for i below 16 million).
fn destination(i: usize) -> Ipv6Addr {
    let ip = Ipv4Addr::new(198, 51, 100, 1 + (i / 64_000 % 250) as u8);
    let port = 1024 + (i % 64_000) as u16;
    TeredoAddr {
        server: P,
        flags: 0,
        mapped: SocketAddrV4::new(ip, port),
    }
    .to_ipv6()
}

/// Packets the TUN device `teredo0` of the calling thread's namespace handed to its reader,
/// and dropped (reader too slow): its link statistics, from `getifaddrs(3)` (netlink in the
/// thread's own namespace, unlike `/sys`).
fn tun_stats() -> Result<(u64, u64)> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed below.
    if unsafe { libc::getifaddrs(&raw mut list) } != 0 {
        bail!("getifaddrs: {}", std::io::Error::last_os_error());
    }
    let mut found = None;
    let mut p = list;
    while !p.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*p };
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        // Only the link entry (AF_PACKET; its address is null for a TUN, which has no
        // hardware address) carries statistics.
        if name.to_bytes() == b"teredo0" && !ifa.ifa_data.is_null() {
            // SAFETY: for AF_PACKET entries ifa_data points to a struct rtnl_link_stats,
            // whose first eight fields are u32 counters: rx/tx packets, rx/tx bytes, rx/tx
            // errors, rx/tx dropped.
            let st = unsafe { &*ifa.ifa_data.cast::<[u32; 8]>() };
            found = Some((u64::from(st[1]), u64::from(st[7])));
        }
        p = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(list) };
    found.context("no teredo0 statistics")
}

/// Packets sent but not read by the relay yet before the flood waits for it.
const IN_FLIGHT: u64 = 256;

/// Sends one ICMPv6 echo request to each destination `from..to` from a raw socket in `ns`,
/// never more than [`IN_FLIGHT`] ahead of what the relay read from its TUN (a full TUN queue
/// drops silently). Returns the packets the TUN dropped all the same.
fn flood(ns: &Netns, from: usize, to: usize) -> Result<u64> {
    in_netns(ns, || {
        let (read0, dropped0) = tun_stats()?;
        let fd = raw_icmpv6()?;
        let msg = [128u8, 0, 0, 0, 0x7e, 0x7e, 0, 1];
        for (sent, i) in (from..to).enumerate() {
            let sent = sent as u64;
            if sent % 64 == 0 {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let (read, dropped) = tun_stats()?;
                    if read + dropped + IN_FLIGHT >= read0 + dropped0 + sent {
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("the relay stopped reading its TUN ({read} read)");
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            // SAFETY: all-zero is a valid sockaddr_in6.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_addr.s6_addr = destination(i).octets();
            loop {
                // SAFETY: valid fd, buffer and address of the sizes given.
                let n = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        msg.as_ptr().cast(),
                        msg.len(),
                        0,
                        (&raw const sa).cast(),
                        size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                };
                if n >= 0 {
                    break;
                }
                let e = std::io::Error::last_os_error();
                // The TUN queue is full (ENOBUFS): let the relay catch up.
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                bail!("sendto {}: {e}", destination(i));
            }
        }
        Ok(tun_stats()?.1 - dropped0)
    })
}

struct Figures {
    rss: u64,
    hwm: u64,
    peers: u64,
    evictions: u64,
    queue_bytes: u64,
    tun_received: u64,
}

/// Waits until the relay has taken in every packet the TUN handed it (its counters stop
/// moving), then reads its memory and metrics.
fn settle(ns: &Netns, relay: &mut Proc) -> Result<Figures> {
    let mut last = String::new();
    let mut stable = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        relay.ensure_running()?;
        std::thread::sleep(Duration::from_millis(1500));
        let m = metrics(ns)?;
        let key = format!(
            "{} {} {}",
            evictions(&m),
            metric(&m, "teredo_relay_peers{state=\"untrusted\"}"),
            metric(&m, "teredo_relay_bubbles_sent_total{kind=\"indirect\"}"),
        );
        stable = if key == last { stable + 1 } else { 0 };
        last = key;
        if stable >= 1 || Instant::now() > deadline {
            let (rss, hwm) = rss(relay.pid())?;
            let tun = in_netns(ns, tun_stats)?.0;
            return Ok(Figures {
                rss,
                hwm,
                peers: metric(&m, "teredo_relay_peers{state=\"untrusted\"}")
                    + metric(&m, "teredo_relay_peers{state=\"trusted\"}"),
                evictions: evictions(&m),
                queue_bytes: metric(&m, "teredo_relay_queue_bytes"),
                tun_received: tun,
            });
        }
    }
}

#[test]
fn peer_table_flood_keeps_memory_bounded() {
    require_root!("ip");
    let test = function_name!();
    let dir = check(TestDir::new(test));
    let max_peers = env_or("TEREDO_FLOOD_MAX_PEERS", 8192);
    let factor = env_or("TEREDO_FLOOD_FACTOR", 10).max(2);
    let ns = check(Netns::new(test, "rly"));
    check(ns.sysctl("net.ipv6.conf.all.accept_dad", "0"));
    check(ns.sysctl("net.ipv6.conf.default.accept_dad", "0"));
    for a in [*RELAY.ip(), P] {
        check(ns.add_addr("lo", &format!("{a}/32")));
    }
    check(
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{NATIVE}/128"),
            "dev",
            "lo",
            "nodad",
        ])
        .map(drop),
    );
    let bin = check(bin_path("teredo-relay"));
    let (bind, metrics_addr, max) = (
        RELAY.to_string(),
        METRICS.to_string(),
        max_peers.to_string(),
    );
    let mut relay = check(ns.spawn(
        "teredo-relay",
        dir.path(),
        bin.to_str().unwrap(),
        &[
            "--bind",
            &bind,
            "--native",
            "tun:teredo0",
            "--workers",
            "1",
            "--max-peers",
            &max,
            "--metrics-addr",
            &metrics_addr,
        ],
    ));
    check(
        wait_for(
            "the relay's 2001::/32 route",
            Duration::from_secs(10),
            || {
                relay.ensure_running()?;
                let r = ns.ip(&["-6", "route", "show", "2001::/32"])?;
                Ok((!r.trim().is_empty()).then_some(r))
            },
        )
        .with_context(|| format!("teredo-relay stderr:\n{}", tail(&relay.stderr(), 30))),
    );
    let before = check(settle(&ns, &mut relay));

    let started = Instant::now();
    let mut tun_dropped = check(flood(&ns, 0, max_peers));
    let full = check(settle(&ns, &mut relay));
    tun_dropped += check(flood(&ns, max_peers, factor * max_peers));
    let after = check(settle(&ns, &mut relay));
    let elapsed = started.elapsed();

    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let total = (factor * max_peers) as u64;
    let seen = after.tun_received - before.tun_received;
    let bound = before.rss
        + max_peers as u64 * BUDGET_PER_PEER
        + teredo::relay::DEFAULT_GLOBAL_QUEUE_BYTES as u64
        + SLACK;
    let report = format!(
        "relay peer-table flood: --max-peers {max_peers}, {total} distinct destinations sent, \
         {seen} read from the TUN ({tun_dropped} dropped there), in {elapsed:.1?}\n\
         \x20 before: RSS {:.1} MiB\n\
         \x20 table full ({max_peers} sent): RSS {:.1} MiB, peers {}, evictions {}, queued {} B\n\
         \x20 after ({total} sent): RSS {:.1} MiB (peak {:.1} MiB), peers {}, evictions {}, \
         queued {} B\n\
         \x20 growth over the full table: {:.1} MiB; bound {:.1} MiB (RSS before + {BUDGET_PER_PEER} B \
         x max-peers + global queue cap + {} MiB)",
        mib(before.rss),
        mib(full.rss),
        full.peers,
        full.evictions,
        full.queue_bytes,
        mib(after.rss),
        mib(after.hwm),
        after.peers,
        after.evictions,
        after.queue_bytes,
        mib(after.rss.saturating_sub(full.rss)),
        mib(bound),
        SLACK >> 20,
    );
    eprintln!("{report}");
    assert!(
        after.peers <= max_peers as u64 + 16,
        "the table outgrew its cap\n{report}"
    );
    assert!(
        after.evictions >= seen.saturating_sub(max_peers as u64 + 16) / 2,
        "the relay did not evict\n{report}"
    );
    assert!(
        seen >= total / 2,
        "most of the flood should reach the relay\n{report}"
    );
    assert!(after.hwm <= bound, "peak RSS above the bound\n{report}");
    // Nine times more destinations than the table holds add no more than a quarter of what
    // the full table took.
    let table = full.rss.saturating_sub(before.rss);
    assert!(
        after.rss <= full.rss + table / 4 + (8 << 20),
        "RSS keeps growing with the flood\n{report}"
    );
    check(relay.stop().map(drop));
}
