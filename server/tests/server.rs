//! The server library run in-process over real sockets.
//!
//! `loopback`: needs nothing special. The core drops datagrams from non-global sources and
//! 127.0.0.1 is one, so these tests check the driver around the core: binding, counting,
//! the metrics endpoint, configuration errors, shutdown.
//!
//! `netns`: needs root. A private network namespace with 198.51.100.1, .2 (server) and .10
//! (client) on its loopback interface lets real router solicitations reach the server.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use prometheus::Registry;
use teredo::addr::{TeredoAddr, LL_WINDOWS_RESTRICTED};
use teredo::wire::auth::Auth;
use teredo::wire::ndp::emit_rs;
use teredo_rt::Shutdown;
use teredo_server::{start, NativeSide, ServerOptions};
use testkit::metrics::{self, registry_value as metric, value};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(5);

/// Counts heap allocations per thread, so a test can check that the server's hot path
/// (running on its own current-thread runtime) does not allocate.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub(crate) struct Counting;

    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    // SAFETY: defers to the system allocator; the counter is a const-initialised
    // thread-local without destructor, which never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as ours.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as ours.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as ours.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Allocations made by the calling thread so far.
    pub(crate) fn allocations() -> u64 {
        ALLOCATIONS.with(Cell::get)
    }
}

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

/// Polls until `series` reaches `want` (the workers count after the datagram is read).
async fn wait_metric(registry: &Registry, series: &str, want: f64) {
    metrics::wait_registry_value(registry, series, want, LIMIT).await;
}

/// `GET path` over HTTP/1.1; returns (status, head, body).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    metrics::http_request(addr, "GET", path, LIMIT).await
}

fn rs(nonce: Option<[u8; 8]>, src: std::net::Ipv6Addr) -> Vec<u8> {
    let mut buf = [0u8; 128];
    let auth = nonce.map(Auth::nonce_only);
    let n = emit_rs(&mut buf, auth.as_ref(), src, false).unwrap();
    buf[..n].to_vec()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

mod loopback {
    use teredo::DropReason;

    use super::*;

    fn options() -> ServerOptions {
        let mut o = ServerOptions::new(Ipv4Addr::LOCALHOST);
        o.secondary = ip("127.0.0.2");
        o.port = 0;
        o.native = NativeSide::Disabled;
        o
    }

    /// What the XDP program does not do is refused before anything is loaded or bound, in
    /// one line; `auto` goes on without the fast path.
    #[tokio::test]
    async fn fast_path_refuses_the_rate_limit_in_one_line() {
        let mut o = options();
        o.fast_path = teredo_server::FastPathMode::Xdp;
        o.rs_rate_limit = 5;
        let e = format!("{:#}", start(o, Shutdown::new().1).await.unwrap_err());
        // A build without the program says that first.
        let want =
            teredo_fastpath::built().map_or_else(|e| e.to_string(), |()| "--rs-rate-limit".into());
        assert!(e.contains(&want) && !e.contains('\n'), "{e}");
        let mut o = options();
        o.fast_path = teredo_server::FastPathMode::Auto;
        o.rs_rate_limit = 5;
        let (trigger, shutdown) = Shutdown::new();
        let server = start(o, shutdown).await.expect("auto falls back to none");
        trigger.trigger();
        server.wait().await.unwrap();
    }

    /// Under overload the receive loop never finds its socket empty, and tokio's cooperative
    /// budget does not see its non-blocking `recvmmsg`: without yielding after a full batch
    /// it would keep the thread while the other address, the native side and the metrics
    /// endpoint wait. A backlog of several batches is queued before the server runs; a probe
    /// task on the same thread must get turns while it is being read.
    #[tokio::test]
    async fn a_readable_socket_does_not_starve_the_other_tasks() {
        let o = options();
        let registry = o.registry.clone();
        let (trigger, shutdown) = Shutdown::new();
        let server = start(o, shutdown).await.unwrap();
        let total = 8 * 64;
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..total {
            // Too short for anything: received, then dropped as truncated.
            client.send_to(&[0x60; 10], server.primary_addr()).unwrap();
        }
        let series = "teredo_server_packets_received_total{address=\"primary\"}";
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            tokio::task::yield_now().await;
            let v = metric(&registry, series);
            if seen.last() != Some(&v) {
                seen.push(v);
            }
            if v >= f64::from(total) {
                break;
            }
        }
        assert_eq!(seen.last(), Some(&f64::from(total)), "{seen:?}");
        assert!(
            seen.iter().any(|&v| v > 0.0 && v < f64::from(total)),
            "the probe ran only before and after the whole backlog: {seen:?}"
        );
        trigger.trigger();
        timeout(LIMIT, server.wait()).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn counts_drops_serves_metrics_and_stops() {
        let mut o = options();
        o.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
        let registry = o.registry.clone();
        let (trigger, shutdown) = Shutdown::new();
        let server = start(o, shutdown).await.unwrap();
        let (primary, secondary) = (server.primary_addr(), server.secondary_addr());
        assert_eq!(*primary.ip(), Ipv4Addr::LOCALHOST);
        assert_eq!(*secondary.ip(), ip("127.0.0.2"));
        assert_ne!(primary.port(), 0);
        assert_ne!(secondary.port(), 0);
        let metrics_addr = server.metrics_addr().unwrap();

        // Every series exists, at zero, before any traffic.
        let (status, head, body) = http_get(metrics_addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: text/plain"), "{head}");
        let mut zero = vec![];
        for a in ["primary", "secondary"] {
            zero.push(format!(
                "teredo_server_packets_received_total{{address=\"{a}\"}}"
            ));
            zero.push(format!(
                "teredo_server_router_advertisements_total{{address=\"{a}\"}}"
            ));
            for c in ["true", "false"] {
                zero.push(format!(
                    "teredo_server_router_solicitations_total{{address=\"{a}\",cone=\"{c}\"}}"
                ));
            }
        }
        for d in ["to_client", "to_native"] {
            for k in ["bubble", "icmpv6"] {
                zero.push(format!(
                    "teredo_server_packets_forwarded_total{{direction=\"{d}\",kind=\"{k}\"}}"
                ));
            }
        }
        for r in DropReason::SERVER {
            zero.push(format!(
                "teredo_server_packets_dropped_total{{reason=\"{r}\"}}"
            ));
        }
        zero.push("teredo_server_handling_duration_seconds_count".to_owned());
        zero.push("teredo_server_handling_duration_seconds_bucket{le=\"0.000001\"}".to_owned());
        for s in &zero {
            assert_eq!(value(&body, s), Some(0.0), "{s} in\n{body}");
        }
        assert_eq!(
            value(
                &body,
                &format!(
                    "teredo_server_build_info{{version=\"{}\"}}",
                    env!("CARGO_PKG_VERSION")
                )
            ),
            Some(1.0)
        );
        assert!(value(&body, "process_open_fds").unwrap() > 0.0, "{body}");
        assert_eq!(http_get(metrics_addr, "/").await.0, 404);

        // A valid RS from 127.0.0.1 (not global): counted, not answered.
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let solicitation = rs(Some([7; 8]), LL_WINDOWS_RESTRICTED);
        client.send_to(&solicitation, primary).await.unwrap();
        client.send_to(&solicitation, secondary).await.unwrap();
        // Garbage is rejected by the parser first.
        client.send_to(b"hello", primary).await.unwrap();
        let mut v4 = [0u8; 40];
        v4[0] = 0x45;
        client.send_to(&v4, primary).await.unwrap();
        client.send_to(&[], secondary).await.unwrap();

        let dropped = |r: &str| format!("teredo_server_packets_dropped_total{{reason=\"{r}\"}}");
        wait_metric(&registry, &dropped("non_global_source"), 2.0).await;
        wait_metric(&registry, &dropped("truncated"), 2.0).await;
        wait_metric(&registry, &dropped("bad_ip_version"), 1.0).await;
        wait_metric(
            &registry,
            "teredo_server_handling_duration_seconds_count",
            5.0,
        )
        .await;
        let (_, _, body) = http_get(metrics_addr, "/metrics").await;
        assert_eq!(
            value(
                &body,
                "teredo_server_packets_received_total{address=\"primary\"}"
            ),
            Some(3.0)
        );
        assert_eq!(
            value(
                &body,
                "teredo_server_packets_received_total{address=\"secondary\"}"
            ),
            Some(2.0)
        );
        for s in zero.iter().filter(|s| {
            s.contains("solicitations") || s.contains("advertisements") || s.contains("forwarded")
        }) {
            assert_eq!(value(&body, s), Some(0.0), "{s}");
        }
        let mut buf = [0u8; 1500];
        assert!(
            timeout(Duration::from_millis(200), client.recv_from(&mut buf))
                .await
                .is_err(),
            "the server answered a non-global source"
        );

        // Shutdown is prompt and releases the addresses.
        trigger.trigger();
        timeout(Duration::from_secs(2), server.wait())
            .await
            .expect("shutdown took too long")
            .unwrap();
        teredo_rt::bind_udp(primary, &Default::default()).unwrap();
        teredo_rt::bind_udp(secondary, &Default::default()).unwrap();
        assert!(TcpStream::connect(metrics_addr).await.is_err());
    }

    #[tokio::test]
    async fn equal_addresses_are_refused() {
        let mut o = options();
        o.secondary = o.primary;
        let (_trigger, shutdown) = Shutdown::new();
        let e = start(o, shutdown).await.unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "primary and secondary addresses must differ (both are 127.0.0.1)"
        );
        let mut o = options();
        o.primary = ip("224.0.0.1");
        let (_trigger, shutdown) = Shutdown::new();
        let e = start(o, shutdown).await.unwrap_err();
        assert!(format!("{e:#}").contains("224.0.0.1"), "{e:#}");
    }

    #[tokio::test]
    async fn unbindable_addresses_are_named() {
        // 192.0.2.77 (TEST-NET-1) is not configured on this host.
        let mut o = ServerOptions::new(ip("192.0.2.77"));
        o.native = NativeSide::Disabled;
        let (_trigger, shutdown) = Shutdown::new();
        let e = format!("{:#}", start(o, shutdown).await.unwrap_err());
        assert!(
            e.starts_with("cannot bind UDP socket 192.0.2.77:3544: "),
            "{e}"
        );

        let mut o = options();
        o.secondary = ip("192.0.2.77");
        let (_trigger, shutdown) = Shutdown::new();
        let e = format!("{:#}", start(o, shutdown).await.unwrap_err());
        assert!(
            e.starts_with("cannot bind UDP socket 192.0.2.77:0: "),
            "{e}"
        );
    }

    #[tokio::test]
    async fn busy_ports_are_reported() {
        let (_trigger, shutdown) = Shutdown::new();
        let first = start(options(), shutdown.clone()).await.unwrap();
        let mut o = options();
        o.port = first.primary_addr().port();
        let e = format!("{:#}", start(o, shutdown.clone()).await.unwrap_err());
        assert!(
            e.starts_with(&format!(
                "cannot bind UDP socket {}: ",
                first.primary_addr()
            )),
            "{e}"
        );
        assert!(e.contains("in use"), "{e}");

        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut o = options();
        o.metrics_addr = Some(taken.local_addr().unwrap());
        let e = format!("{:#}", start(o, shutdown).await.unwrap_err());
        assert!(
            e.starts_with(&format!(
                "cannot bind metrics endpoint {}",
                taken.local_addr().unwrap()
            )),
            "{e}"
        );
    }

    #[tokio::test]
    async fn one_registry_per_server() {
        let registry = Registry::new();
        let (_trigger, shutdown) = Shutdown::new();
        let mut o = options();
        o.registry = registry.clone();
        let _first = start(o, shutdown.clone()).await.unwrap();
        let mut o = options();
        o.registry = registry;
        let e = format!("{:#}", start(o, shutdown).await.unwrap_err());
        assert!(e.starts_with("cannot register the server metrics"), "{e}");
    }
}

/// Root-only tests in a private network namespace.
mod netns {
    use std::io::Write as _;
    use std::net::Ipv6Addr;

    use socket2::{Domain, Protocol, Socket, Type};
    use teredo::addr::{server_link_local, LL_TEREDO_CONE};
    use teredo::wire::ipv6::{emit_bubble, Echo};
    use teredo::wire::ndp::RouterAdvertisement;
    use teredo::wire::origin::{OriginIndication, ORIGIN_LEN};
    use teredo::wire::TeredoPacket;
    use testkit::{check, root_or_skip, Netns};
    use tokio::sync::mpsc;

    use super::*;

    const PRIMARY: &str = "198.51.100.1";
    const SECONDARY: &str = "198.51.100.2";
    const CLIENT: &str = "198.51.100.10";

    /// A network namespace with the server's and the client's addresses on `lo`, deleted on
    /// drop (also when the test panics).
    fn lab(tag: &str) -> Netns {
        check(Netns::with_lo_addrs(
            "server",
            tag,
            &[PRIMARY, SECONDARY, CLIENT],
            24,
        ))
    }

    fn teredo_addr(server: &str, mapped: SocketAddrV4) -> Ipv6Addr {
        TeredoAddr {
            server: ip(server),
            flags: 0,
            mapped,
        }
        .to_ipv6()
    }

    async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        testkit::wait::recv_udp(socket, LIMIT).await
    }

    fn server_addr(a: &str) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(ip(a), 3544))
    }

    /// A burst of solicitations (more than one receive batch, queued before the server
    /// reads them) from several clients, cone and restricted: every one is answered once,
    /// with its own nonce and mapping, from the right address, and counted.
    #[test]
    fn bursts_of_solicitations_are_all_answered() {
        if !root_or_skip("bursts_of_solicitations_are_all_answered") {
            return;
        }
        const CLIENTS: u16 = 4;
        const PER_CLIENT: u16 = 150;
        let ns = lab("burst");
        ns.block_on(|| async {
            let mut o = ServerOptions::new(ip(PRIMARY));
            o.native = NativeSide::Disabled;
            let registry = o.registry.clone();
            let (trigger, shutdown) = Shutdown::new();
            let server = start(o, shutdown).await.unwrap();
            let mut clients = Vec::new();
            for c in 0..CLIENTS {
                let addr = SocketAddrV4::new(ip(CLIENT), 41000 + c);
                clients.push((addr, UdpSocket::bind(addr).await.unwrap()));
            }
            // Send everything first (the answers wait in the clients' buffers).
            for i in 0..PER_CLIENT {
                for (c, (_, sock)) in clients.iter().enumerate() {
                    let nonce = (u64::from(i) << 8 | c as u64).to_be_bytes();
                    let src = if i % 2 == 0 {
                        LL_TEREDO_CONE
                    } else {
                        LL_WINDOWS_RESTRICTED
                    };
                    sock.send_to(&rs(Some(nonce), src), server_addr(PRIMARY))
                        .await
                        .unwrap();
                }
            }
            for (c, (addr, sock)) in clients.iter().enumerate() {
                let mut seen = vec![false; usize::from(PER_CLIENT)];
                for _ in 0..PER_CLIENT {
                    let (ra, from) = recv(sock).await;
                    let pkt = TeredoPacket::parse(&ra).unwrap();
                    assert_eq!(pkt.origin, Some(OriginIndication(*addr)));
                    let nonce = u64::from_be_bytes(pkt.auth.expect("auth echoed").nonce);
                    assert_eq!(nonce & 0xff, c as u64, "another client's nonce");
                    let i = usize::try_from(nonce >> 8).unwrap();
                    assert!(!seen[i], "RS {i} of client {c} answered twice");
                    seen[i] = true;
                    let want = if i % 2 == 0 { SECONDARY } else { PRIMARY };
                    assert_eq!(from, server_addr(want), "RS {i} answered from {from}");
                }
            }
            let total = f64::from(CLIENTS * PER_CLIENT);
            wait_metric(
                &registry,
                "teredo_server_router_advertisements_total{address=\"primary\"}",
                total / 2.0,
            )
            .await;
            wait_metric(
                &registry,
                "teredo_server_router_advertisements_total{address=\"secondary\"}",
                total / 2.0,
            )
            .await;
            wait_metric(
                &registry,
                "teredo_server_handling_duration_seconds_count",
                total,
            )
            .await;
            trigger.trigger();
            server.wait().await.unwrap();
        });
    }

    #[test]
    fn router_advertisements_and_relaying() {
        if !root_or_skip("router_advertisements_and_relaying") {
            return;
        }
        let ns = lab("ra");
        ns.block_on(|| async {
            let (native_tx, mut native_rx) = mpsc::channel(16);
            let mut o = ServerOptions::new(ip(PRIMARY));
            o.native = NativeSide::Channel(native_tx);
            o.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
            let (trigger, shutdown) = Shutdown::new();
            let server = start(o, shutdown).await.unwrap();
            assert_eq!(server.primary_addr(), "198.51.100.1:3544".parse().unwrap());
            assert_eq!(server.secondary_addr(), "198.51.100.2:3544".parse().unwrap());
            let a_addr = SocketAddrV4::new(ip(CLIENT), 40000);
            let b_addr = SocketAddrV4::new(ip(CLIENT), 40001);
            let a = UdpSocket::bind(a_addr).await.unwrap();
            let b = UdpSocket::bind(b_addr).await.unwrap();

            // Restricted RS with a nonce to the primary: RA from the primary.
            let nonce = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
            a.send_to(&rs(Some(nonce), LL_WINDOWS_RESTRICTED), server_addr(PRIMARY))
                .await
                .unwrap();
            let (ra, from) = recv(&a).await;
            assert_eq!(from, server_addr(PRIMARY));
            let pkt = TeredoPacket::parse(&ra).unwrap();
            let auth = pkt.auth.expect("auth header echoed");
            assert_eq!(auth, Auth::nonce_only(nonce));
            assert_eq!(pkt.origin, Some(OriginIndication(a_addr)));
            let adv = RouterAdvertisement::parse(pkt.ipv6).unwrap();
            let prefix: Ipv6Addr = "2001:0:c633:6401::".parse().unwrap();
            assert_eq!(adv.prefix, (prefix, 64));
            assert_eq!(adv.mtu, Some(1280));
            assert_eq!(adv.src, server_link_local(ip(PRIMARY)));
            assert_eq!(adv.dst, LL_WINDOWS_RESTRICTED);
            assert_eq!(pkt.hop_limit(), 255);
            // Layout of TEREDO.md §4.3: 13 + 8 + 40 + 16 + 32 + 8 bytes.
            assert_eq!(ra.len(), 117);

            // Cone RS without a nonce to the primary: RA from the secondary, without auth,
            // same prefix (it embeds the primary whichever address answers).
            a.send_to(&rs(None, LL_TEREDO_CONE), server_addr(PRIMARY))
                .await
                .unwrap();
            let (ra, from) = recv(&a).await;
            assert_eq!(from, server_addr(SECONDARY));
            let pkt = TeredoPacket::parse(&ra).unwrap();
            assert_eq!(pkt.auth, None);
            assert_eq!(pkt.origin, Some(OriginIndication(a_addr)));
            let adv = RouterAdvertisement::parse(pkt.ipv6).unwrap();
            assert_eq!(adv.prefix, (prefix, 64));
            assert_eq!(adv.dst, LL_TEREDO_CONE);

            // And the other way round on the secondary.
            a.send_to(&rs(Some(nonce), LL_TEREDO_CONE), server_addr(SECONDARY))
                .await
                .unwrap();
            assert_eq!(recv(&a).await.1, server_addr(PRIMARY));
            b.send_to(&rs(Some(nonce), LL_WINDOWS_RESTRICTED), server_addr(SECONDARY))
                .await
                .unwrap();
            let (ra, from) = recv(&b).await;
            assert_eq!(from, server_addr(SECONDARY));
            assert_eq!(
                TeredoPacket::parse(&ra).unwrap().origin,
                Some(OriginIndication(b_addr))
            );

            let a_teredo = teredo_addr(PRIMARY, a_addr);
            let b_teredo = teredo_addr(PRIMARY, b_addr);
            let native: Ipv6Addr = "2001:db8::1".parse().unwrap();

            // Bubble from A to native IPv6: handed to the native side unchanged.
            let mut bubble = [0u8; 40];
            emit_bubble(&mut bubble, a_teredo, native, 0).unwrap();
            a.send_to(&bubble, server_addr(PRIMARY)).await.unwrap();
            let got = timeout(LIMIT, native_rx.recv()).await.unwrap().unwrap();
            assert_eq!(got, bubble);

            // ICMPv6 echo from A to native IPv6.
            let mut echo = [0u8; 64];
            let n = Echo {
                reply: false,
                id: 7,
                seq: 1,
                data: b"teredo",
            }
            .emit(&mut echo, a_teredo, native, 64)
            .unwrap();
            a.send_to(&echo[..n], server_addr(PRIMARY)).await.unwrap();
            let got = timeout(LIMIT, native_rx.recv()).await.unwrap().unwrap();
            assert_eq!(got, &echo[..n]);

            // Indirect bubble from A to B (a client of this server): relayed from the
            // primary with an origin indication naming A's mapping.
            emit_bubble(&mut bubble, a_teredo, b_teredo, 0).unwrap();
            a.send_to(&bubble, server_addr(SECONDARY)).await.unwrap();
            let (got, from) = recv(&b).await;
            assert_eq!(from, server_addr(PRIMARY));
            let mut want = [0u8; ORIGIN_LEN];
            OriginIndication(a_addr).emit(&mut want).unwrap();
            assert_eq!(&got[..ORIGIN_LEN], want);
            assert_eq!(&got[ORIGIN_LEN..], bubble);

            // A bubble whose Teredo source does not match the outer source: dropped.
            emit_bubble(&mut bubble, b_teredo, native, 0).unwrap();
            a.send_to(&bubble, server_addr(PRIMARY)).await.unwrap();

            let metrics_addr = server.metrics_addr().unwrap();
            let dropped = "teredo_server_packets_dropped_total{reason=\"spoofed_source\"}";
            let deadline = tokio::time::Instant::now() + LIMIT;
            let body = loop {
                let (_, _, body) = http_get(metrics_addr, "/metrics").await;
                if value(&body, dropped) == Some(1.0)
                    && value(&body, "teredo_server_handling_duration_seconds_count")
                        == Some(8.0)
                {
                    break body;
                }
                assert!(tokio::time::Instant::now() < deadline, "{body}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            for (series, want) in [
                ("teredo_server_packets_received_total{address=\"primary\"}", 5.0),
                ("teredo_server_packets_received_total{address=\"secondary\"}", 3.0),
                (
                    "teredo_server_router_solicitations_total{address=\"primary\",cone=\"false\"}",
                    1.0,
                ),
                (
                    "teredo_server_router_solicitations_total{address=\"primary\",cone=\"true\"}",
                    1.0,
                ),
                (
                    "teredo_server_router_solicitations_total{address=\"secondary\",cone=\"true\"}",
                    1.0,
                ),
                (
                    "teredo_server_router_solicitations_total{address=\"secondary\",cone=\"false\"}",
                    1.0,
                ),
                ("teredo_server_router_advertisements_total{address=\"primary\"}", 2.0),
                ("teredo_server_router_advertisements_total{address=\"secondary\"}", 2.0),
                (
                    "teredo_server_packets_forwarded_total{direction=\"to_native\",kind=\"bubble\"}",
                    1.0,
                ),
                (
                    "teredo_server_packets_forwarded_total{direction=\"to_native\",kind=\"icmpv6\"}",
                    1.0,
                ),
                (
                    "teredo_server_packets_forwarded_total{direction=\"to_client\",kind=\"bubble\"}",
                    1.0,
                ),
                (
                    "teredo_server_packets_forwarded_total{direction=\"to_client\",kind=\"icmpv6\"}",
                    0.0,
                ),
            ] {
                assert_eq!(value(&body, series), Some(want), "{series}\n{body}");
            }
            let total_dropped: f64 = body
                .lines()
                .filter(|l| l.starts_with("teredo_server_packets_dropped_total{"))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                .sum();
            assert_eq!(total_dropped, 1.0, "{body}");

            trigger.trigger();
            timeout(Duration::from_secs(2), server.wait())
                .await
                .unwrap()
                .unwrap();
        });
    }

    /// The RS → RA path allocates nothing per packet: server and client share one
    /// current-thread runtime, so the thread's allocation count covers the whole path.
    #[test]
    fn rs_to_ra_does_not_allocate() {
        if !root_or_skip("rs_to_ra_does_not_allocate") {
            return;
        }
        let ns = lab("alloc");
        ns.block_on(|| async {
            let mut o = ServerOptions::new(ip(PRIMARY));
            o.native = NativeSide::Disabled;
            let registry = o.registry.clone();
            let (trigger, shutdown) = Shutdown::new();
            let server = start(o, shutdown).await.unwrap();
            let a = UdpSocket::bind(SocketAddrV4::new(ip(CLIENT), 40000))
                .await
                .unwrap();
            let solicitation = rs(Some([9; 8]), LL_WINDOWS_RESTRICTED);
            let cone = rs(Some([9; 8]), LL_TEREDO_CONE);
            let round_trips = |n: usize| {
                let (a, solicitation, cone) = (&a, &solicitation, &cone);
                async move {
                    let mut buf = [0u8; 2048];
                    for i in 0..n {
                        let rs = if i % 2 == 0 { solicitation } else { cone };
                        a.send_to(rs, server_addr(PRIMARY)).await.unwrap();
                        let (len, _) = a.recv_from(&mut buf).await.unwrap();
                        assert_eq!(len, 117);
                    }
                }
            };
            // Warm up (socket registration, lazily created series, …).
            timeout(LIMIT, round_trips(100)).await.unwrap();
            let before = counting::allocations();
            timeout(LIMIT, round_trips(1000)).await.unwrap();
            let allocated = counting::allocations() - before;
            if std::env::var_os("SHOW_ALLOCATIONS").is_some() {
                let _ = writeln!(
                    std::io::stderr(),
                    "{allocated} allocations ({before} before)"
                );
            }
            assert!(
                allocated < 10,
                "{allocated} allocations for 1000 RS -> RA round trips"
            );
            assert_eq!(
                metric(
                    &registry,
                    "teredo_server_router_advertisements_total{address=\"secondary\"}"
                ),
                550.0
            );
            trigger.trigger();
            timeout(Duration::from_secs(2), server.wait())
                .await
                .unwrap()
                .unwrap();
        });
    }

    /// The raw IPv6 side: packets leave exactly as received (hop limit included), routed by
    /// their destination; an unroutable destination counts as `send_failed`.
    #[test]
    fn raw_native_side() {
        if !root_or_skip("raw_native_side") {
            return;
        }
        let ns = lab("raw");
        check(ns.ip(&["-6", "addr", "add", "2001:db8::1/128", "dev", "lo", "nodad"]));
        ns.block_on(|| async {
            // A cooked packet socket sees every IPv6 packet on lo, header included.
            let tap = Socket::new(
                Domain::PACKET,
                Type::DGRAM,
                Some(Protocol::from(i32::from((libc::ETH_P_IPV6 as u16).to_be()))),
            )
            .unwrap();
            tap.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();

            let o = ServerOptions::new(ip(PRIMARY));
            let registry = o.registry.clone();
            let (trigger, shutdown) = Shutdown::new();
            let server = start(o, shutdown).await.unwrap();
            let a_addr = SocketAddrV4::new(ip(CLIENT), 40000);
            let a = UdpSocket::bind(a_addr).await.unwrap();
            let a_teredo = teredo_addr(PRIMARY, a_addr);
            let native: Ipv6Addr = "2001:db8::1".parse().unwrap();

            let mut bubble = [0u8; 40];
            emit_bubble(&mut bubble, a_teredo, native, 0).unwrap();
            let mut echo = [0u8; 64];
            let n = Echo {
                reply: false,
                id: 9,
                seq: 3,
                data: b"native",
            }
            .emit(&mut echo, a_teredo, native, 64)
            .unwrap();
            let echo = echo[..n].to_vec();
            a.send_to(&bubble, server_addr(PRIMARY)).await.unwrap();
            a.send_to(&echo, server_addr(PRIMARY)).await.unwrap();

            let forwarded = |k: &str| {
                format!(
                    "teredo_server_packets_forwarded_total{{direction=\"to_native\",kind=\"{k}\"}}"
                )
            };
            wait_metric(&registry, &forwarded("bubble"), 1.0).await;
            wait_metric(&registry, &forwarded("icmpv6"), 1.0).await;

            // Read what the tap saw (blocking reads off the runtime thread: the socket
            // already belongs to the namespace).
            let seen = tokio::task::spawn_blocking(move || {
                let mut seen = Vec::new();
                let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
                while let Ok(n) = tap.recv(&mut buf) {
                    // SAFETY: recv initialised the first n bytes.
                    seen.push(
                        buf[..n]
                            .iter()
                            .map(|b| unsafe { b.assume_init() })
                            .collect::<Vec<u8>>(),
                    );
                }
                seen
            })
            .await
            .unwrap();
            assert!(seen.contains(&bubble.to_vec()), "bubble not seen: {seen:?}");
            assert!(seen.contains(&echo), "echo not seen: {seen:?}");

            // No route to 2001:db9::/32 in the namespace: the send fails and is counted.
            emit_bubble(&mut bubble, a_teredo, "2001:db9::1".parse().unwrap(), 0).unwrap();
            a.send_to(&bubble, server_addr(PRIMARY)).await.unwrap();
            wait_metric(
                &registry,
                "teredo_server_packets_dropped_total{reason=\"send_failed\"}",
                1.0,
            )
            .await;

            trigger.trigger();
            timeout(Duration::from_secs(2), server.wait())
                .await
                .unwrap()
                .unwrap();
        });
    }
}
