//! Forwarding rate through the sharded core, in process (no sockets, no TUN): what the
//! relay's user-space part costs per packet, with 1, 100 and 10 000 trusted peers and
//! 100-byte inner IPv6 packets, in both directions, on one and two threads; and the memory
//! per peer with 1 000 000 trusted peers (measured in a child process: RSS before and after
//! filling the table through the core).
//!
//! `cargo bench -p teredo-relay --bench forwarding` prints the figures. Trust is set up the
//! real way, through the core: a native packet per peer (queued, indirect bubble), then the
//! peer's direct bubble from its mapping (trusted, queue flushed).

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use teredo::addr::TeredoAddr;
use teredo::relay::{Handled, RelayConfig};
use teredo::wire::ipv6::{emit_bubble, emit_ipv6_header};
use teredo::Local;
use teredo_relay::shards::ShardedRelay;

/// IPv6 packet size of the forwarded traffic (PERF.md: 100-byte inner packets).
const PACKET: usize = 100;
/// How long each case runs.
const RUN: Duration = Duration::from_millis(1500);
/// The native host.
const NATIVE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
/// The peers' server.
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn peer(i: u32) -> (Ipv6Addr, SocketAddrV4) {
    // 203.0.113.0/24 and 192.0.2.0/24 × ports: distinct global mappings.
    let ip = Ipv4Addr::from(0xc633_6400 + (i % 250) + 10);
    let port = 1024 + (i / 250) as u16;
    let mapped = SocketAddrV4::new(ip, port);
    let addr = TeredoAddr {
        server: SERVER,
        flags: 0,
        mapped,
    }
    .to_ipv6();
    (addr, mapped)
}

fn packet(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut p = vec![0u8; PACKET];
    emit_ipv6_header(&mut p, src, dst, 17, 64, PACKET - 40).unwrap();
    p
}

/// A sharded relay with `n` trusted peers; returns it and the peers.
fn trusted(
    n: u32,
    shards: usize,
    max_peers: usize,
) -> (Arc<ShardedRelay>, Vec<(Ipv6Addr, SocketAddrV4)>) {
    let cfg = RelayConfig {
        max_peers: max_peers.div_ceil(shards),
        ..RelayConfig::default()
    };
    let now = Instant::now();
    let relay = Arc::new(ShardedRelay::new(cfg, shards, Some(1), now));
    let mut out = vec![0u8; 65_535];
    let peers: Vec<_> = (0..n).map(peer).collect();
    let mut bub = [0u8; 40];
    for &(addr, mapped) in &peers {
        let i = relay.shard_of(&addr);
        let mut s = relay.lock(i);
        let r = s.core.handle_ipv6(now, &packet(NATIVE, addr));
        assert!(matches!(r, Ok(Handled::Queued { .. })), "{r:?}");
        while s.core.poll_output(&mut out).is_some() {}
        emit_bubble(&mut bub, addr, "fe80::1".parse().unwrap(), 255).unwrap();
        let _ = s
            .core
            .handle_udp(now, Local::Primary, mapped, &bub)
            .unwrap();
        while s.core.poll_output(&mut out).is_some() {}
    }
    (relay, peers)
}

/// Runs `f(k)` for consecutive `k` for [`RUN`]; returns packets per second.
fn rate(mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    let mut k = 0usize;
    loop {
        for _ in 0..4096 {
            f(k);
            k += 1;
        }
        let t = start.elapsed();
        if t >= RUN {
            return k as f64 / t.as_secs_f64();
        }
    }
}

fn transmit<'a>(
    relay: &'a ShardedRelay,
    packets: &'a [Vec<u8>],
    now: Instant,
) -> impl FnMut(usize) + 'a {
    move |k| {
        let p = &packets[k % packets.len()];
        let i = relay.shard_of_ipv6(p);
        let r = relay.lock(i).core.handle_ipv6(now, p);
        assert!(
            matches!(
                r,
                Ok(Handled::Encapsulated {
                    in_place: Some(_),
                    ..
                })
            ),
            "{r:?}"
        );
        black_box(r.ok());
    }
}

fn receive<'a>(
    relay: &'a ShardedRelay,
    datagrams: &'a [(SocketAddrV4, Vec<u8>)],
    now: Instant,
) -> impl FnMut(usize) + 'a {
    move |k| {
        let (from, d) = &datagrams[k % datagrams.len()];
        let i = relay.shard_of_udp(d);
        let r = relay.lock(i).core.handle_udp(now, Local::Primary, *from, d);
        assert!(matches!(r, Ok(Handled::Forwarded { .. })), "{r:?}");
        black_box(r.ok());
    }
}

fn forwarding() {
    println!("teredo-relay in-process forwarding through the sharded core ({PACKET}-byte packets, {RUN:?} per case)");
    println!(
        "{:>7} {:>7} | {:>14} {:>14} | {:>16} {:>16} {:>20}",
        "peers",
        "shards",
        "n2t 1 thread",
        "t2n 1 thread",
        "n2t 2 threads",
        "t2n 2 threads",
        "n2t+t2n 2 threads"
    );
    for n in [1u32, 100, 10_000] {
        for shards in [1usize, 16] {
            let (relay, peers) = trusted(n, shards, 1 << 20);
            let to_peer: Vec<Vec<u8>> = peers.iter().map(|(a, _)| packet(NATIVE, *a)).collect();
            let from_peer: Vec<(SocketAddrV4, Vec<u8>)> = peers
                .iter()
                .map(|(a, m)| (*m, packet(*a, NATIVE)))
                .collect();
            let now = Instant::now();
            let n2t = rate(transmit(&relay, &to_peer, now));
            let t2n = rate(receive(&relay, &from_peer, now));
            let two = |a: &(dyn Fn() -> f64 + Sync), b: &(dyn Fn() -> f64 + Sync)| {
                std::thread::scope(|s| {
                    let x = s.spawn(a);
                    let y = s.spawn(b);
                    x.join().unwrap() + y.join().unwrap()
                })
            };
            // Two threads on disjoint halves of the peers (as two workers would see them).
            let (ta, tb) = to_peer.split_at(to_peer.len() / 2);
            let (ta, tb) = if ta.is_empty() { (tb, tb) } else { (ta, tb) };
            let (ra, rb) = from_peer.split_at(from_peer.len() / 2);
            let (ra, rb) = if ra.is_empty() { (rb, rb) } else { (ra, rb) };
            let n2t2 = two(&|| rate(transmit(&relay, ta, now)), &|| {
                rate(transmit(&relay, tb, now))
            });
            let t2n2 = two(&|| rate(receive(&relay, ra, now)), &|| {
                rate(receive(&relay, rb, now))
            });
            let mixed = two(&|| rate(transmit(&relay, &to_peer, now)), &|| {
                rate(receive(&relay, &from_peer, now))
            });
            let m = |x: f64| format!("{:.2} Mpps", x / 1e6);
            println!(
                "{n:>7} {shards:>7} | {:>14} {:>14} | {:>16} {:>16} {:>20}",
                m(n2t),
                m(t2n),
                m(n2t2),
                m(t2n2),
                m(mixed)
            );
        }
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// In a fresh process: RSS growth for `n` trusted peers.
fn memory_child(n: u32) {
    let shards = 16;
    let before = rss_bytes();
    let (relay, _) = trusted(n, shards, 2 * n as usize);
    let filled = rss_bytes();
    // Let the bubble retransmission timers fire (popped, so only the heap's capacity stays).
    let later = Instant::now() + Duration::from_secs(3);
    for i in 0..relay.len() {
        relay.lock(i).core.handle_timeout(later);
    }
    let (_, g) = relay.totals();
    let after = rss_bytes();
    assert_eq!(g.peers_trusted, n as usize);
    println!(
        "memory: {n} trusted peers in {shards} shards: RSS {:.1} MB -> {:.1} MB filled, {:.1} MB after the bubble timers fired: {:.0} B/peer (core entry {} B)",
        before as f64 / 1e6,
        filled as f64 / 1e6,
        after as f64 / 1e6,
        (filled - before) as f64 / f64::from(n),
        teredo::relay::PEER_ENTRY_BYTES,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--memory-child") {
        memory_child(args[i + 1].parse().unwrap());
        return;
    }
    forwarding();
    for n in [10_000u32, 1_000_000] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--memory-child", &n.to_string()])
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
