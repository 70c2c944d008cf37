//! The relay library (and binary) run over real sockets.
//!
//! `loopback`: needs nothing special. The core drops datagrams whose Teredo addresses embed
//! non-global IPv4s, and 127.0.0.1 is one, so these tests check the driver around the core:
//! binding, counting, the metrics endpoint, configuration errors, shutdown.
//!
//! `netns`: needs root. A private network namespace with 198.51.100.1 (the client's server,
//! played by the test), .10 (client X, played by the test) and .30 (the relay) on its loopback
//! interface lets a whole bubble exchange run over real sockets, with the native side as an
//! in-process channel — and, in `tun_*`, with the binary's TUN device and the kernel's IPv6
//! routing.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use prometheus::Registry;
use teredo::addr::TeredoAddr;
use teredo::wire::ipv6::{emit_bubble, Echo};
use teredo_relay::{start, NativeSide, RelayOptions};
use teredo_rt::Shutdown;
use testkit::metrics;
use tokio::net::UdpSocket;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(5);

/// Polls until `series` reaches `want` (the timer task exports the cores' counters at least
/// once a second).
async fn wait_metric(registry: &Registry, series: &str, want: f64) {
    metrics::wait_registry_value(registry, series, want, LIMIT).await;
}

fn echo(reply: bool, src: Ipv6Addr, dst: Ipv6Addr, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 40 + 8 + data.len()];
    let e = Echo {
        reply,
        id: 0x7e7e,
        seq,
        data,
    };
    let n = e.emit(&mut buf, src, dst, 64).unwrap();
    buf.truncate(n);
    buf
}

fn bubble(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut b = vec![0u8; 40];
    emit_bubble(&mut b, src, dst, 255).unwrap();
    b
}

async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    testkit::wait::recv_udp(socket, LIMIT).await
}

async fn nothing(socket: &UdpSocket, wait: Duration) {
    let mut buf = [0u8; 2048];
    if let Ok(r) = timeout(wait, socket.recv_from(&mut buf)).await {
        let (n, from) = r.unwrap();
        panic!("unexpected {n} bytes from {from}: {:02x?}", &buf[..n]);
    }
}

mod loopback {
    use super::*;

    fn options() -> RelayOptions {
        RelayOptions {
            bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            native: NativeSide::Disabled,
            workers: 2,
            ..RelayOptions::default()
        }
    }

    #[tokio::test]
    async fn counts_drops_serves_metrics_and_stops() {
        let mut o = options();
        o.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
        let registry = o.registry.clone();
        let (trigger, shutdown) = Shutdown::new();
        let relay = start(o, shutdown).await.unwrap();
        let addr = relay.local_addr();
        assert_eq!(*addr.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(addr.port(), 0);
        let metrics = relay.metrics_addr().unwrap();
        assert!(relay.shards().len() >= 2);

        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Too short for an IPv6 header.
        peer.send_to(&[0x60; 10], addr).await.unwrap();
        // A well-formed packet whose source is not a Teredo address.
        let p = bubble(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        peer.send_to(&p, addr).await.unwrap();
        wait_metric(
            &registry,
            "teredo_relay_packets_dropped_total{reason=\"truncated\"}",
            1.0,
        )
        .await;
        wait_metric(
            &registry,
            "teredo_relay_packets_dropped_total{reason=\"not_teredo_source\"}",
            1.0,
        )
        .await;

        // The endpoint serves the same registry.
        let mut stream = tokio::net::TcpStream::connect(metrics).await.unwrap();
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        timeout(LIMIT, stream.read_to_string(&mut body))
            .await
            .unwrap()
            .unwrap();
        assert!(body.contains("teredo_relay_packets_total{direction=\"ipv4_to_ipv6\"} 0"));
        assert!(body.contains("teredo_relay_build_info"));

        trigger.trigger();
        timeout(LIMIT, relay.wait()).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn workers_share_one_port() {
        let o = options();
        let (trigger, shutdown) = Shutdown::new();
        let relay = start(o, shutdown).await.unwrap();
        // A third socket on the same port without SO_REUSEPORT is refused: the port is held.
        let e = std::net::UdpSocket::bind(relay.local_addr()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        trigger.trigger();
        relay.wait().await.unwrap();
    }

    /// A UDP socket that stays readable (overload: datagrams arrive faster than the worker
    /// takes them) must not keep its task running: the TUN task, the timers and the metrics
    /// endpoint share the worker's thread, and tokio's cooperative budget does not see the
    /// non-blocking `recvmmsg` loop. Here, on one thread, a backlog of several batches is
    /// queued before the relay runs; a probe task must get turns while it is being read,
    /// not only once the socket is empty.
    #[tokio::test]
    async fn a_readable_socket_does_not_starve_the_other_tasks() {
        let mut o = options();
        o.workers = 1;
        let registry = o.registry.clone();
        let (trigger, shutdown) = Shutdown::new();
        let relay = start(o, shutdown).await.unwrap();
        let batches = 8;
        let total = (batches * teredo_relay::BATCH) as f64;
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..batches * teredo_relay::BATCH {
            // Too short for an IPv6 header: received, then dropped as truncated.
            peer.send_to(&[0x60; 10], relay.local_addr()).unwrap();
        }
        let series = "teredo_relay_packets_received_total{direction=\"ipv4_to_ipv6\"}";
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            tokio::task::yield_now().await;
            let v = metrics::registry_value(&registry, series);
            if seen.last() != Some(&v) {
                seen.push(v);
            }
            if v >= total {
                break;
            }
        }
        assert_eq!(seen.last(), Some(&total), "{seen:?}");
        assert!(
            seen.iter().any(|&v| v > 0.0 && v < total),
            "the probe ran only before and after the whole backlog: {seen:?}"
        );
        trigger.trigger();
        timeout(LIMIT, relay.wait()).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn start_errors_are_one_line() {
        let (_trigger, shutdown) = Shutdown::new();
        let mut o = options();
        o.workers = 0;
        let e = start(o, shutdown.clone()).await.unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "workers must be between 1 and 256 (got 0)"
        );

        // Address taken by a socket without SO_REUSEPORT.
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = taken.local_addr().unwrap() else {
            unreachable!()
        };
        let mut o = options();
        o.bind = addr;
        let e = format!("{:#}", start(o, shutdown.clone()).await.unwrap_err());
        assert!(
            e.starts_with(&format!("cannot bind UDP socket {addr}: ")),
            "{e}"
        );
        assert!(!e.contains('\n'));

        // The same registry twice.
        let o = options();
        let registry = o.registry.clone();
        let _relay = start(o, shutdown.clone()).await.unwrap();
        let mut o = options();
        o.registry = registry;
        let e = format!("{:#}", start(o, shutdown).await.unwrap_err());
        assert!(e.starts_with("cannot register the relay metrics"), "{e}");
    }

    /// Without CAP_NET_ADMIN the binary fails with one line naming the device and the way
    /// out. Run as an unprivileged user (needs root to switch, skipped otherwise).
    #[test]
    fn binary_without_cap_net_admin_says_so() {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/usr/bin/setpriv").exists() {
            eprintln!("binary_without_cap_net_admin_says_so: SKIPPED (needs root and setpriv)");
            return;
        }
        let out = std::process::Command::new("/usr/bin/setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_teredo-relay"))
            .args(["--bind", "127.0.0.1:0", "--native", "tun:tr-noperm"])
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("teredo-relay: error: cannot create TUN device tr-noperm: "),
            "{stderr}"
        );
        assert!(
            stderr.contains("(needs CAP_NET_ADMIN; use --native none to run without it)"),
            "{stderr}"
        );
    }

    #[test]
    fn binary_rejects_bad_flags() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_teredo-relay"))
            .args(["--native", "raw"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_teredo-relay"))
            .args([
                "--native",
                "none",
                "--bind",
                "127.0.0.1:0",
                "--workers",
                "0",
            ])
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "teredo-relay: error: workers must be between 1 and 256 (got 0)\n"
        );
    }
}

mod netns {
    use std::os::fd::AsRawFd as _;

    use teredo::wire::TeredoPacket;
    use testkit::wait::wait_for;
    use testkit::{check, function_name, root_or_skip, Netns, Proc, TestDir};

    use super::*;

    const SERVER: &str = "198.51.100.1";
    const CLIENT: &str = "198.51.100.10";
    const RELAY: &str = "198.51.100.30";
    const NATIVE_HOST: &str = "2001:db8::99";
    const ICMP_SOURCE: &str = "2001:db8::1";

    /// A network namespace with the test's addresses on `lo`, deleted on drop.
    fn lab(tag: &str) -> Netns {
        check(Netns::with_lo_addrs(
            "relay",
            tag,
            &[SERVER, CLIENT, RELAY],
            24,
        ))
    }

    fn ip4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn teredo_addr(server: &str, mapped: SocketAddrV4) -> Ipv6Addr {
        TeredoAddr {
            server: ip4(server),
            flags: 0,
            mapped,
        }
        .to_ipv6()
    }

    fn channel_options() -> (RelayOptions, teredo_relay::NativeEnds) {
        let (native, ends) = NativeSide::channel(64);
        let mut o = RelayOptions {
            bind: SocketAddrV4::new(ip4(RELAY), 0),
            native,
            workers: 2,
            seed: Some(7),
            ..RelayOptions::default()
        };
        o.core.icmp_source = Some(ip6(ICMP_SOURCE));
        (o, ends)
    }

    /// TEREDO.md relay check 16, over real sockets: native packet → indirect bubble to the
    /// client's server → the client's direct bubble → queued packet delivered; the client's
    /// reply goes native; then the trusted fast path; metrics match.
    #[test]
    fn bubble_exchange_then_both_directions_with_channel_native_side() {
        if !root_or_skip("bubble_exchange_then_both_directions_with_channel_native_side") {
            return;
        }
        let ns = lab("chan");
        ns.block_on(|| async move {
            let (o, mut ends) = channel_options();
            let registry = o.registry.clone();
            let (trigger, shutdown) = Shutdown::new();
            let relay = start(o, shutdown).await.unwrap();
            let relay_addr = SocketAddr::V4(relay.local_addr());
            let server = UdpSocket::bind(format!("{SERVER}:3544")).await.unwrap();
            let x_map = SocketAddrV4::new(ip4(CLIENT), 40000);
            let x = UdpSocket::bind(x_map).await.unwrap();
            let x6 = teredo_addr(SERVER, x_map);
            let h6 = ip6(NATIVE_HOST);

            // 1. A native echo request for X: queued, indirect bubble to X's server.
            let req = echo(false, h6, x6, 1, b"hello through the relay");
            ends.inject.send(req.clone()).await.unwrap();
            let (b, from) = recv(&server).await;
            assert_eq!(from, relay_addr);
            let bub = TeredoPacket::parse(&b).unwrap();
            assert!(bub.is_bubble(), "{b:02x?}");
            assert_eq!(bub.dst(), x6);
            assert!(
                bub.src().segments()[0] == 0xfe80,
                "per-peer link-local source"
            );
            assert_eq!(b.len(), 46, "bubble + RFC 6081 nonce trailer");
            nothing(&x, Duration::from_millis(200)).await;

            // 2. X answers with a direct bubble from its mapping: the queue is flushed.
            x.send_to(&bubble(x6, bub.src()), relay_addr).await.unwrap();
            let (d, from) = recv(&x).await;
            assert_eq!(from, relay_addr);
            assert_eq!(d, req, "the queued packet, unchanged");

            // 3. X's echo reply goes native.
            let rep = echo(true, x6, h6, 1, b"hello through the relay");
            x.send_to(&rep, relay_addr).await.unwrap();
            let got = timeout(LIMIT, ends.received.recv()).await.unwrap().unwrap();
            assert_eq!(got, rep);

            // 4. Trusted: the next native packet goes straight to X, no bubble.
            let req2 = echo(false, h6, x6, 2, b"second");
            ends.inject.send(req2.clone()).await.unwrap();
            assert_eq!(recv(&x).await.0, req2);
            nothing(&server, Duration::from_millis(100)).await;

            // 5. RFC 4380 §5.4.2: X's address from another port is spoofed.
            let spoof = UdpSocket::bind(SocketAddrV4::new(ip4(CLIENT), 40001))
                .await
                .unwrap();
            spoof.send_to(&rep, relay_addr).await.unwrap();

            let p = "teredo_relay_packets_total";
            let b = "teredo_relay_bytes_total";
            let d = "teredo_relay_packets_dropped_total";
            for (series, want) in [
                (format!("{p}{{direction=\"ipv6_to_ipv4\"}}"), 2.0),
                (format!("{p}{{direction=\"ipv4_to_ipv6\"}}"), 1.0),
                (
                    format!("{b}{{direction=\"ipv6_to_ipv4\"}}"),
                    (req.len() + req2.len()) as f64,
                ),
                (
                    format!("{b}{{direction=\"ipv4_to_ipv6\"}}"),
                    rep.len() as f64,
                ),
                (format!("{d}{{reason=\"spoofed_source\"}}"), 1.0),
                (format!("{d}{{reason=\"send_failed\"}}"), 0.0),
                (
                    "teredo_relay_bubbles_sent_total{kind=\"indirect\"}".into(),
                    1.0,
                ),
                (
                    "teredo_relay_bubbles_sent_total{kind=\"direct\"}".into(),
                    0.0,
                ),
                ("teredo_relay_peers{state=\"trusted\"}".into(), 1.0),
                ("teredo_relay_peers{state=\"untrusted\"}".into(), 0.0),
                ("teredo_relay_queue_packets".into(), 0.0),
                (
                    "teredo_relay_connectivity_test_duration_seconds_count".into(),
                    1.0,
                ),
            ] {
                wait_metric(&registry, &series, want).await;
            }
            let peer = relay
                .shards()
                .lock(relay.shards().shard_of(&x6))
                .core
                .peer(&x6)
                .unwrap();
            assert!(peer.trusted && peer.valid);
            assert_eq!(peer.mapping, x_map);

            trigger.trigger();
            timeout(LIMIT, relay.wait()).await.unwrap().unwrap();
        });
    }

    /// TEREDO.md relay check 17 with short timers: a silent peer gets 4 bubbles, paced by
    /// the timer task, then the sender gets an ICMPv6 destination unreachable from
    /// --icmp-source, and the queued packet is counted as peer_unreachable.
    #[test]
    fn silent_peer_gets_paced_bubbles_then_icmp_error() {
        if !root_or_skip("silent_peer_gets_paced_bubbles_then_icmp_error") {
            return;
        }
        let ns = lab("icmp");
        ns.block_on(|| async move {
            let (mut o, mut ends) = channel_options();
            o.core.bubble_interval = Duration::from_millis(200);
            let registry = o.registry.clone();
            let (trigger, shutdown) = Shutdown::new();
            let relay = start(o, shutdown).await.unwrap();
            let server = UdpSocket::bind(format!("{SERVER}:3544")).await.unwrap();
            let y6 = teredo_addr(SERVER, SocketAddrV4::new(ip4(CLIENT), 40002));
            let h6 = ip6(NATIVE_HOST);
            let req = echo(false, h6, y6, 1, b"anyone there?");
            let started = std::time::Instant::now();
            ends.inject.send(req.clone()).await.unwrap();
            let mut at = Vec::new();
            for _ in 0..4 {
                let (b, _) = recv(&server).await;
                assert_eq!(TeredoPacket::parse(&b).unwrap().dst(), y6);
                at.push(started.elapsed());
            }
            for w in at.windows(2) {
                assert!(w[1] - w[0] >= Duration::from_millis(190), "{at:?}");
            }
            let err = timeout(LIMIT, ends.received.recv()).await.unwrap().unwrap();
            assert_eq!(err[6], 58, "ICMPv6");
            assert_eq!(&err[8..24], &ip6(ICMP_SOURCE).octets());
            assert_eq!(&err[24..40], &h6.octets());
            assert_eq!(
                (err[40], err[41]),
                (1, 3),
                "destination unreachable, address"
            );
            assert_eq!(&err[48..], &req[..], "quotes the packet");
            nothing(&server, Duration::from_millis(300)).await;
            for (series, want) in [
                ("teredo_relay_bubbles_sent_total{kind=\"indirect\"}", 4.0),
                ("teredo_relay_icmp_errors_sent_total", 1.0),
                ("teredo_relay_peers_unreachable_total", 1.0),
                (
                    "teredo_relay_packets_dropped_total{reason=\"peer_unreachable\"}",
                    1.0,
                ),
                ("teredo_relay_connectivity_test_duration_seconds_count", 0.0),
            ] {
                wait_metric(&registry, series, want).await;
            }
            trigger.trigger();
            timeout(LIMIT, relay.wait()).await.unwrap().unwrap();
        });
    }

    /// A UDP-in-IPv6 packet with a correct checksum.
    fn udp6(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let (SocketAddr::V6(s), SocketAddr::V6(d)) = (src, dst) else {
            panic!("IPv6 addresses expected")
        };
        let b = etherparse::PacketBuilder::ipv6(s.ip().octets(), d.ip().octets(), 64)
            .udp(s.port(), d.port());
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, payload).unwrap();
        out
    }

    /// The binary with `--native tun`: the device (MTU 1280, multi-queue, link-local, the
    /// gateway route), then the kernel's own IPv6 stack on both sides of it: a UDP socket
    /// sends to a Teredo address → routed into the TUN → indirect bubble; the client's direct
    /// bubble → the packet; the client's answer → out of the TUN → delivered to the socket.
    #[test]
    fn tun_device_route_and_round_trip_through_the_kernel() {
        if !root_or_skip("tun_device_route_and_round_trip_through_the_kernel") {
            return;
        }
        let ns = lab("tun");
        check(ns.add_addr("lo", "2001:db8::1/128"));
        let dir = check(TestDir::new(function_name!()));
        let mut cmd = ns.command(env!("CARGO_BIN_EXE_teredo-relay"));
        cmd.args([
            "--bind",
            &format!("{RELAY}:3545"),
            "--native",
            "tun:teredo9",
            "--workers",
            "2",
            "--icmp-source",
            "2001:db8::1",
        ])
        .env("RUST_LOG", "info");
        let mut relay = check(Proc::spawn(cmd, "teredo-relay", dir.path()));
        // Wait for the route (the last step of the TUN setup).
        let (route, _) = check(wait_for("the 2001::/32 route", LIMIT, || {
            relay.ensure_running()?;
            let r = ns.ip(&["-6", "route", "show", "2001::/32"])?;
            Ok((!r.trim().is_empty()).then_some(r))
        }));
        assert!(
            route.starts_with("2001::/32 via fe80::1 dev teredo9"),
            "{route}"
        );
        let link = check(ns.ip(&["-d", "link", "show", "teredo9"]));
        assert!(link.contains("mtu 1280"), "{link}");
        assert!(link.contains("UP"), "{link}");
        assert!(link.contains("multi_queue"), "{link}");
        assert!(link.contains("pi off"), "{link}");
        let addrs = check(ns.ip(&["-6", "addr", "show", "dev", "teredo9"]));
        assert!(addrs.contains("fe80::ffff:ffff:ffff/64"), "{addrs}");

        ns.block_on(|| async move {
            let relay_addr: SocketAddr = format!("{RELAY}:3545").parse().unwrap();
            let server = UdpSocket::bind(format!("{SERVER}:3544")).await.unwrap();
            let x_map = SocketAddrV4::new(ip4(CLIENT), 40000);
            let x = UdpSocket::bind(x_map).await.unwrap();
            let x6 = teredo_addr(SERVER, x_map);
            let native = UdpSocket::bind("[2001:db8::1]:0").await.unwrap();
            let native_addr = native.local_addr().unwrap();
            let x6_port = SocketAddr::new(x6.into(), 7777);

            native.send_to(b"ping via tun", x6_port).await.unwrap();
            let (b, from) = recv(&server).await;
            assert_eq!(from, relay_addr);
            let bub = TeredoPacket::parse(&b).unwrap();
            assert!(bub.is_bubble());
            assert_eq!(bub.dst(), x6);
            x.send_to(&bubble(x6, bub.src()), relay_addr).await.unwrap();
            let (d, from) = recv(&x).await;
            assert_eq!(from, relay_addr);
            assert_eq!(
                &d[8..24],
                &ip6("2001:db8::1").octets(),
                "kernel picked the source"
            );
            assert_eq!(&d[24..40], &x6.octets());
            assert_eq!(&d[48..], b"ping via tun");

            let answer = udp6(x6_port, native_addr, b"pong via tun");
            x.send_to(&answer, relay_addr).await.unwrap();
            let mut buf = [0u8; 256];
            let (n, from) = timeout(LIMIT, native.recv_from(&mut buf))
                .await
                .expect("the answer did not come out of the TUN")
                .unwrap();
            assert_eq!(&buf[..n], b"pong via tun");
            assert_eq!(from, x6_port);

            // A burst of one flow in one sendmmsg: equal payloads (merged into TUN GSO
            // writes when they arrive in one batch), a shorter one, one with a corrupt
            // checksum (must stay corrupt: the native host drops it), then a last one.
            let mut burst: Vec<Vec<u8>> = (0..40u8)
                .map(|i| udp6(x6_port, native_addr, &[i; 100]))
                .collect();
            burst.push(udp6(x6_port, native_addr, &[200; 30]));
            let mut corrupt = udp6(x6_port, native_addr, &[201; 100]);
            corrupt[60] ^= 0xff;
            burst.insert(20, corrupt);
            burst.push(udp6(x6_port, native_addr, b"last"));
            let mut sb = teredo_rt::batch::SendBatch::new(64, 64 * 200, false);
            for p in &burst {
                assert!(sb.push(p, relay_addr, 0));
            }
            let xs = x.into_std().unwrap();
            xs.set_nonblocking(false).unwrap();
            sb.send(xs.as_raw_fd(), |s| {
                assert!(s.error.is_none(), "{:?}", s.error)
            })
            .unwrap();
            let mut got = Vec::new();
            loop {
                let (n, from) = timeout(LIMIT, native.recv_from(&mut buf))
                    .await
                    .expect("the burst did not come out of the TUN")
                    .unwrap();
                assert_eq!(from, x6_port);
                got.push(buf[..n].to_vec());
                if &buf[..n] == b"last" {
                    break;
                }
            }
            let mut want: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100]).collect();
            want.push(vec![200; 30]);
            want.push(b"last".to_vec());
            assert_eq!(
                got, want,
                "every packet intact, in order, the corrupt one dropped"
            );
        });

        // SIGTERM: clean exit, and the device (with its route) is gone.
        let status = check(relay.stop_with(libc::SIGTERM, LIMIT));
        assert!(status.success(), "{status}");
        let links = check(ns.ip(&["link", "show"]));
        assert!(!links.contains("teredo9"), "{links}");
    }
}
