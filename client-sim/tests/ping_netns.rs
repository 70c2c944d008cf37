//! `ping` and `udp-echo` over real UDP sockets in a private network namespace: the real
//! tokio server (`teredo-server`, native side = a channel), and, standing in for the relay
//! driver, a small loop around the sans-IO relay on 198.51.100.20:3545 whose native side is
//! the echo host 2001:db8::99 (ICMPv6 echo, UDP echo on port 7) with 2001::/32 routed to the
//! relay. Needs root; without it the tests print SKIPPED, or fail when CI is set.
//!
//! Each component runs on its own thread that entered the namespace (`setns`) with its own
//! current-thread tokio runtime (the pattern of qualify_netns.rs).

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use client_sim::ping::{ping, PingOptions, PingReport, Probe, EXIT_NO_REPLY};
use client_sim::qualify::{NatChoice, QualifyOptions};
use client_sim::respond::respond;
use netsim::packets;
use netsim::NatPreset;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use teredo::addr::is_teredo;
use teredo::client::Profile;
use teredo::relay::{Relay, RelayConfig, RelayCounters, TrustPolicy};
use teredo::{Local, Output};
use teredo_rt::Shutdown;
use teredo_server::{start, NativeSide, ServerOptions};
use testkit::netns::runtime;
use testkit::{check, root_or_skip, Netns};
use tokio::sync::mpsc;

const PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const RELAY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 20), 3545);
const ECHO_HOST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);

/// A network namespace with the lab addresses on `lo`, deleted on drop.
fn lab(tag: &str) -> Netns {
    check(Netns::with_lo_addrs(
        "ping",
        tag,
        &[
            "198.51.100.1",
            "198.51.100.2",
            "198.51.100.10",
            "198.51.100.11",
            "198.51.100.20",
        ],
        24,
    ))
}

/// The server (native side: a channel) and the relay with the echo host behind it. Stop
/// them by dropping the returned sender; the relay's thread returns its counters.
fn start_network(
    ns: &Netns,
    trust: TrustPolicy,
) -> (
    std_mpsc::Sender<()>,
    JoinHandle<()>,
    JoinHandle<RelayCounters>,
) {
    let (native_tx, native_rx) = mpsc::channel::<Vec<u8>>(1024);
    let (stop_tx, stop_rx) = std_mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std_mpsc::channel::<()>();
    let ready = ready_tx.clone();
    let server = ns.thread(move || {
        runtime().block_on(async move {
            let mut o = ServerOptions::new(PRIMARY);
            o.native = NativeSide::Channel(native_tx);
            let (trigger, shutdown) = Shutdown::new();
            let server = start(o, shutdown).await.expect("server starts");
            ready.send(()).unwrap();
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            trigger.trigger();
            server.wait().await.unwrap();
        });
    });
    let relay = ns.thread(move || runtime().block_on(relay_loop(trust, native_rx, ready_tx)));
    for _ in 0..2 {
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("network ready");
    }
    (stop_tx, server, relay)
}

/// The relay on real UDP; its native side is the echo host. Ends when the server's native
/// channel closes.
async fn relay_loop(
    trust: TrustPolicy,
    mut native_rx: mpsc::Receiver<Vec<u8>>,
    ready: std_mpsc::Sender<()>,
) -> RelayCounters {
    let sock = tokio::net::UdpSocket::bind(RELAY).await.unwrap();
    let cfg = RelayConfig {
        trust,
        ..RelayConfig::default()
    };
    let mut relay = Relay::new(cfg, ChaCha8Rng::seed_from_u64(5), teredo_rt::now());
    let (mut buf, mut out) = (vec![0u8; 65_536], vec![0u8; 65_536]);
    let mut native: VecDeque<Vec<u8>> = VecDeque::new();
    ready.send(()).unwrap();
    loop {
        // Drain the relay and the native segment.
        loop {
            while let Some(o) = relay.poll_output(&mut out) {
                match o {
                    Output::Udp { to, len, .. } => {
                        let _ = sock.send_to(&out[..len], to).await;
                    }
                    o => native.push_back(out[..o.len()].to_vec()),
                }
            }
            let Some(p) = native.pop_front() else {
                break;
            };
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).unwrap());
            if dst == ECHO_HOST {
                native.extend(packets::answer(&p, true));
            } else if is_teredo(&dst) {
                // A trusted peer's packet is sent from `p` itself (zero copy).
                if let Ok(h) = relay.handle_ipv6(teredo_rt::now(), &p) {
                    if let Some(ip) = h.in_place() {
                        if let Output::Udp { to, .. } = ip.output {
                            let _ = sock.send_to(ip.bytes(&p), to).await;
                        }
                    }
                }
            }
        }
        let timer = relay.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, SocketAddr::V4(from))) = r {
                    let d = &buf[..n];
                    if let Ok(h) = relay.handle_udp(teredo_rt::now(), Local::Primary, from, d) {
                        // Forwarded in place: the IPv6 part of the datagram goes native.
                        if let Some(ip) = h.in_place() {
                            native.push_back(ip.bytes(d).to_vec());
                        }
                    }
                }
            }
            p = native_rx.recv() => match p {
                Some(p) => native.push_back(p),
                None => break,
            },
            () = async {
                match timer {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => relay.handle_timeout(teredo_rt::now()),
        }
    }
    relay.counters().clone()
}

fn run_ping(
    ns: &Netns,
    seed: u64,
    profile: Profile,
    nat: NatChoice,
    probe: Probe,
) -> JoinHandle<PingReport> {
    ns.thread(move || {
        runtime().block_on(async move {
            let mut q = QualifyOptions::new(PRIMARY);
            q.profile = profile;
            q.nat = nat;
            q.bind = CLIENT;
            q.seed = Some(seed);
            q.timeout = Duration::from_secs(20);
            let p = PingOptions {
                interval: Duration::from_millis(200),
                wait: Duration::from_secs(4),
                ..PingOptions::new(probe)
            };
            let (_trigger, shutdown) = Shutdown::new();
            ping(q, p, shutdown, &mut |_| {}).await.expect("ping runs")
        })
    })
}

#[test]
fn ping_and_udp_echo_through_server_and_relay() {
    if !root_or_skip("ping_and_udp_echo_through_server_and_relay") {
        return;
    }
    let strict_ns = lab("ps");
    let lenient_ns = lab("pl");
    let (stop_s, server_s, relay_s) = start_network(&strict_ns, TrustPolicy::Strict);
    let (stop_l, server_l, relay_l) = start_network(&lenient_ns, TrustPolicy::Lenient);
    let pr = NatChoice::Preset(NatPreset::PortRestricted);
    let sym = NatChoice::Preset(NatPreset::Symmetric);
    let icmp = Probe::Icmp(ECHO_HOST);
    let udp = Probe::Udp(SocketAddrV6::new(ECHO_HOST, packets::UDP_ECHO_PORT, 0, 0));

    let icmp_pr = run_ping(&strict_ns, 1, Profile::Rfc5991, pr.clone(), icmp);
    let udp_none = run_ping(&strict_ns, 2, Profile::Rfc5991, NatChoice::None, udp);
    let sym_strict = run_ping(&strict_ns, 3, Profile::Miredo, sym.clone(), icmp);
    let sym_lenient = run_ping(&lenient_ns, 4, Profile::Miredo, sym, icmp);

    let r = icmp_pr.join().unwrap();
    assert_eq!((r.transmitted, r.received, r.exit_code), (3, 3, 0), "{r:?}");
    assert_eq!(r.via.as_deref(), Some("198.51.100.20:3545"), "{r:?}");
    assert_eq!(r.packet_loss_percent, 0.0);
    assert!(r.rtt_min_ms.is_some() && r.replies.iter().all(|x| x.bytes == 64));
    assert!(r
        .summary()
        .contains("3 packets transmitted, 3 received, 0% packet loss"));

    let r = udp_none.join().unwrap();
    assert_eq!((r.transmitted, r.received, r.exit_code), (3, 3, 0), "{r:?}");
    assert_eq!(r.protocol, "udp");

    // Behind a symmetric NAT a strict relay drops the answer to its bubble as spoofed.
    let r = sym_strict.join().unwrap();
    assert_eq!((r.received, r.exit_code), (0, EXIT_NO_REPLY), "{r:?}");
    assert_eq!(r.packet_loss_percent, 100.0);
    let r = sym_lenient.join().unwrap();
    assert_eq!((r.received, r.exit_code), (3, 0), "{r:?}");

    // The binary: ping's lines and exit status.
    let bin = env!("CARGO_BIN_EXE_client-sim");
    let out = strict_ns
        .command(bin)
        .arg("ping")
        .args([
            "--server",
            "198.51.100.1",
            "--bind",
            "198.51.100.10",
            "--profile",
            "rfc5991",
            "--count",
            "2",
            "--interval",
            "200ms",
            "2001:db8::99",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run client-sim");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = writeln!(std::io::stderr(), "{text}");
    assert!(
        text.starts_with("PING 2001:db8::99 from 2001:0:c633:6401:"),
        "{text}"
    );
    assert!(
        text.contains("64 bytes from 2001:db8::99: seq=1 hlim=64 time="),
        "{text}"
    );
    assert!(
        text.contains("2 packets transmitted, 2 received, 0% packet loss, rtt min/avg/max = "),
        "{text}"
    );
    assert!(text.contains("via 198.51.100.20:3545"), "{text}");

    drop(stop_s);
    drop(stop_l);
    server_s.join().unwrap();
    server_l.join().unwrap();
    let strict = relay_s.join().unwrap();
    assert!(
        strict.dropped(teredo::DropReason::SpoofedSource) > 0,
        "{strict:?}"
    );
    let lenient = relay_l.join().unwrap();
    assert!(lenient.lenient_accepts > 0, "{lenient:?}");
}

/// `respond` is the other end of a Teredo-to-Teredo ping: behind port-restricted NAT
/// models, a win7 client answers a miredo client's echo requests through its core, and its
/// report names the requester.
#[test]
fn respond_answers_a_teredo_peer() {
    if !root_or_skip("respond_answers_a_teredo_peer") {
        return;
    }
    let ns = lab("pr");
    let (stop, server, relay) = start_network(&ns, TrustPolicy::Strict);
    let pr = NatChoice::Preset(NatPreset::PortRestricted);
    let (addr_tx, addr_rx) = std_mpsc::channel();
    let (trigger, shutdown) = Shutdown::new();
    let q = {
        let mut q = QualifyOptions::new(PRIMARY);
        q.profile = Profile::Win7;
        q.nat = pr.clone();
        // Not the pinger's address: a NAT model drops datagrams to its own address
        // (hairpin, which this driver does not do).
        q.bind = Ipv4Addr::new(198, 51, 100, 11);
        q.seed = Some(11);
        q
    };
    let responder = ns.thread(move || {
        runtime().block_on(async move {
            let mut ready = |r: &client_sim::qualify::QualifyReport| {
                let _ = addr_tx.send(r.status.teredo_address.clone());
            };
            respond(
                q,
                Duration::from_secs(60),
                shutdown,
                &mut ready,
                &mut |_| {},
            )
            .await
            .expect("respond runs")
        })
    });
    let addr: Ipv6Addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the responder qualifies")
        .expect("with an address")
        .parse()
        .unwrap();
    let r = run_ping(&ns, 12, Profile::Miredo, pr, Probe::Icmp(addr))
        .join()
        .unwrap();
    trigger.trigger();
    let answered = responder.join().unwrap();
    assert_eq!((r.transmitted, r.received, r.exit_code), (3, 3, 0), "{r:?}");
    assert_eq!(answered.exit_code, 0);
    assert_eq!(
        (answered.requests, answered.answered),
        (3, 3),
        "{answered:?}"
    );
    assert_eq!(answered.peers, [r.source.clone().unwrap()], "{answered:?}");
    assert_eq!(answered.address, Some(addr.to_string()));
    assert!(answered.answered_for_ms < 60_000, "stopped by the trigger");
    assert!(answered
        .to_string()
        .contains("3 echo requests from 1 peer(s), 3 answered"));
    drop(stop);
    server.join().unwrap();
    let _ = relay.join().unwrap();
}
