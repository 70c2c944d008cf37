//! The bad-input corpus (`teredo_tests::bad_input`) over real sockets: every kind is sent to
//! the running server or relay, and for each one the test checks that
//! * exactly the expected `*_packets_dropped_total{reason}` series grew, by one (or none, for
//!   the trailer classes a receiver skips);
//! * nothing was sent where nothing should be: no UDP datagram from the component's socket
//!   (an `AF_PACKET` sniffer sees everything the namespace transmits) and nothing handed to
//!   native IPv6;
//! * the component still answers a valid request afterwards: the server an RS from client A
//!   with its RA; the relay a packet from its trusted peer T to native IPv6 and a native
//!   packet to T.
//!
//! One namespace holds only `lo` with the documentation addresses of `bad_input`; the server
//! (`teredo_server`) and the relay (`teredo_relay`, native side an in-process channel so that
//! malformed IPv6 can be injected) run in-process on threads that entered it. Sources no
//! socket can bind (224.0.0.1, 255.255.255.255, the server's own S:3544) are forged with a raw
//! `IP_HDRINCL` socket. The verdict of every kind is collected and reported in one assertion,
//! one line per kind.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use teredo::wire::TeredoPacket;
use teredo_relay::RelayOptions;
use teredo_server::ServerOptions;
use teredo_tests::bad_input::{
    corpus, echo, tt, valid_rs, Expect, Kind, Target, Via, A, B, LOCAL_ADDRS, M, NATIVE, NONCE,
    NON_GLOBAL_SOURCES, P, P_UDP, RELAY, S, T, U,
};
use teredo_tests::inproc::{native_channel, udp_socket, InprocServer, NativeRx, RawIpv4, Sniffer};
use teredo_tests::inproc_relay::InprocRelay;
use teredo_tests::{check, function_name, require_root, Netns};

/// Upper bound for anything expected (a reply, a counter).
const LIMIT: Duration = Duration::from_secs(5);
/// Settling time after the server counted a datagram, before looking at what it emitted.
const SETTLE: Duration = Duration::from_millis(30);

const SERVER_DROPPED: &str = "teredo_server_packets_dropped_total{reason=\"";
const RELAY_DROPPED: &str = "teredo_relay_packets_dropped_total{reason=\"";
const HANDLED: &str = "teredo_server_handling_duration_seconds_count";

/// Every drop series of a metrics page, by reason.
fn drops(text: &str, prefix: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (reason, value) = l.strip_prefix(prefix)?.split_once("\"} ")?;
            Some((reason.to_owned(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// The series that changed between two drop maps, with the difference.
fn grown(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, i64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = *v as i64 - *before.get(k).unwrap_or(&0) as i64;
            (d != 0).then(|| (k.clone(), d))
        })
        .collect()
}

struct Lab {
    server: InprocServer,
    server_native: NativeRx,
    relay: InprocRelay,
    sniffer: Sniffer,
    raw: RawIpv4,
    sockets: BTreeMap<SocketAddrV4, UdpSocket>,
    /// Deleted last (fields drop in order).
    _ns: Netns,
}

impl Lab {
    fn new(test: &str) -> Self {
        let ns = check(Netns::new(test, "hostile"));
        for ip in LOCAL_ADDRS {
            check(ns.add_addr("lo", &format!("{ip}/32")));
        }
        for (_, from, forged) in NON_GLOBAL_SOURCES {
            if !forged {
                check(ns.add_addr("lo", &format!("{}/32", from.ip())));
            }
        }
        check(ns.ip(&["route", "add", "default", "dev", "lo"]));
        let (side, server_native) = native_channel(64);
        let mut options = ServerOptions::new(P);
        options.native = side;
        let server = check(InprocServer::start(&ns, options));
        assert_eq!(server.primary_addr(), P_UDP);
        let ro = RelayOptions {
            bind: RELAY,
            workers: 1,
            seed: Some(7),
            ..RelayOptions::default()
        };
        let relay = check(InprocRelay::start(&ns, ro, 64));
        assert_eq!(relay.local_addr(), RELAY);
        let mut sockets = BTreeMap::new();
        let mut addrs = vec![A, B, T, U, M];
        addrs.extend(
            NON_GLOBAL_SOURCES
                .iter()
                .filter(|(_, _, forged)| !forged)
                .map(|(_, a, _)| *a),
        );
        for a in addrs {
            let s = check(udp_socket(&ns, a));
            s.set_read_timeout(Some(LIMIT)).unwrap();
            sockets.insert(a, s);
        }
        Self {
            sniffer: check(Sniffer::open(&ns)),
            raw: check(RawIpv4::open(&ns)),
            server,
            server_native,
            relay,
            sockets,
            _ns: ns,
        }
    }

    fn sock(&self, a: SocketAddrV4) -> &UdpSocket {
        &self.sockets[&a]
    }

    /// Empties every socket's receive queue and the sniffer.
    fn flush(&mut self) {
        for s in self.sockets.values() {
            s.set_nonblocking(true).unwrap();
            let mut buf = vec![0u8; 65_536];
            while s.recv_from(&mut buf).is_ok() {}
            s.set_nonblocking(false).unwrap();
        }
        self.sniffer.drain();
        self.server_native.drain();
        self.relay.native_drain();
    }

    fn send(&self, via: Via, to: SocketAddrV4, bytes: &[u8]) -> Result<(), String> {
        match via {
            Via::Udp(from) => self
                .sock(from)
                .send_to(bytes, to)
                .map(drop)
                .map_err(|e| format!("send from {from} to {to}: {e}")),
            Via::Forged(from) => self
                .raw
                .send_udp(from, to, bytes)
                .map_err(|e| format!("{e:#}")),
            Via::Native => self
                .relay
                .inject(bytes.to_vec())
                .map_err(|e| format!("{e:#}")),
        }
    }

    /// UDP datagrams the namespace transmitted from `from` (other than `forged`).
    fn emitted_from(
        &self,
        from: &[SocketAddrV4],
        forged: Option<(SocketAddrV4, &[u8])>,
    ) -> Vec<String> {
        self.sniffer
            .drain()
            .iter()
            .filter_map(|p| p.udp4())
            .filter(|d| from.contains(&d.src))
            .filter(|d| forged.is_none_or(|(src, b)| !(d.src == src && d.payload == b)))
            .map(|d| format!("{} -> {} ({} bytes)", d.src, d.dst, d.payload.len()))
            .collect()
    }

    fn recv(&self, on: SocketAddrV4) -> Result<(Vec<u8>, SocketAddrV4), String> {
        let mut buf = vec![0u8; 65_536];
        match self.sock(on).recv_from(&mut buf) {
            Ok((n, SocketAddr::V4(from))) => Ok((buf[..n].to_vec(), from)),
            Ok((_, from)) => Err(format!("IPv6 sender {from}")),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(format!("nothing received on {on} within {LIMIT:?}"))
            }
            Err(e) => Err(format!("recv on {on}: {e}")),
        }
    }

    // ---- server ----------------------------------------------------------------------

    fn server_drops(&self) -> BTreeMap<String, u64> {
        drops(&self.server.metrics_text(), SERVER_DROPPED)
    }

    fn handled(&self) -> f64 {
        self.server.metric(HANDLED).unwrap_or(0.0)
    }

    /// An RS from A gets its RA from P, echoing A's nonce.
    fn server_answers(&self) -> Result<(), String> {
        self.send(Via::Udp(A), P_UDP, &valid_rs())?;
        let (ra, from) = self.recv(A)?;
        let pkt = TeredoPacket::parse(&ra).map_err(|e| format!("reply does not parse: {e}"))?;
        let nonce = pkt.auth.map(|a| a.nonce);
        let origin = pkt.origin.map(|o| o.0);
        if from != P_UDP
            || nonce != Some(NONCE)
            || origin != Some(A)
            || pkt.ipv6_payload().first() != Some(&134)
        {
            return Err(format!(
                "not the RA expected: from {from}, nonce {nonce:02x?}, origin {origin:?}"
            ));
        }
        Ok(())
    }

    fn server_kind(&mut self, k: &Kind) -> Result<(), String> {
        let before = self.server_drops();
        let handled = self.handled();
        self.send(k.via, P_UDP, &k.bytes)?;
        let deadline = Instant::now() + LIMIT;
        while self.handled() < handled + 1.0 {
            if Instant::now() > deadline {
                return Err("the server never handled it".to_owned());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(SETTLE);
        let diff = grown(&before, &self.server_drops());
        let forged = match k.via {
            Via::Forged(src) => Some((src, &k.bytes[..])),
            _ => None,
        };
        let emitted = self.emitted_from(&[P_UDP, SocketAddrV4::new(S, 3544)], forged);
        let native = self.server_native.drain();
        match k.expect {
            Expect::Drop(reason) => {
                let want = BTreeMap::from([(reason.as_str().to_owned(), 1)]);
                if diff != want {
                    return Err(format!("drop counters grew {diff:?}, want {want:?}"));
                }
                if !emitted.is_empty() || !native.is_empty() {
                    return Err(format!(
                        "the server sent {emitted:?} and {} native packets",
                        native.len()
                    ));
                }
            }
            Expect::Accepted => {
                if !diff.is_empty() {
                    return Err(format!("drop counters grew {diff:?}"));
                }
                if emitted.len() != 1 {
                    return Err(format!("want one RA, the server sent {emitted:?}"));
                }
                // The RA itself is read (and checked) on A's socket.
                let (_, from) = self.recv(A)?;
                if from != P_UDP {
                    return Err(format!("answer from {from}"));
                }
            }
        }
        self.server_answers()
            .map_err(|e| format!("no valid answer afterwards: {e}"))
    }

    // ---- relay -----------------------------------------------------------------------

    fn relay_drops(&self) -> BTreeMap<String, u64> {
        drops(&self.relay.metrics_text(), RELAY_DROPPED)
    }

    /// Native host → T: the relay has no trust for T yet, so it queues the packet and sends
    /// an indirect bubble through the server (P), which reaches T with an origin indication;
    /// T answers with a direct bubble from its mapping and receives the queued packet.
    fn relay_trust_t(&mut self) -> Result<(), String> {
        let first = echo(NATIVE, tt(), false, 0, 16);
        self.send(Via::Native, RELAY, &first)?;
        let (indirect, from) = self.recv(T)?;
        let pkt = TeredoPacket::parse(&indirect).map_err(|e| format!("indirect bubble: {e}"))?;
        if from != P_UDP || !pkt.is_bubble() || pkt.origin.map(|o| o.0) != Some(RELAY) {
            return Err(format!(
                "not an indirect bubble via P: {indirect:02x?} from {from}"
            ));
        }
        let answer = teredo_tests::bad_input::bubble(tt(), pkt.src());
        self.send(Via::Udp(T), RELAY, &answer)?;
        let (flushed, from) = self.recv(T)?;
        if from != RELAY || flushed != first {
            return Err(format!(
                "queued packet not delivered: {flushed:02x?} from {from}"
            ));
        }
        Ok(())
    }

    /// T → native and native → T both go through.
    fn relay_forwards(&mut self, seq: u16) -> Result<(), String> {
        let up = echo(tt(), NATIVE, true, seq, 16);
        self.send(Via::Udp(T), RELAY, &up)?;
        match self.relay.native_recv(LIMIT) {
            Some(p) if p == up => {}
            other => return Err(format!("T's packet not forwarded natively: {other:02x?}")),
        }
        let down = echo(NATIVE, tt(), false, seq, 16);
        self.send(Via::Native, RELAY, &down)?;
        let (got, from) = self.recv(T)?;
        if from != RELAY || got != down {
            return Err(format!(
                "native packet not delivered to T: {got:02x?} from {from}"
            ));
        }
        Ok(())
    }

    fn relay_kind(&mut self, k: &Kind, seq: u16) -> Result<(), String> {
        let before = self.relay_drops();
        self.send(k.via, RELAY, &k.bytes)?;
        match k.expect {
            Expect::Drop(reason) => {
                // The core's counters reach the metrics on the timer task's tick (≤ 1 s).
                let deadline = Instant::now() + LIMIT;
                let label = reason.as_str();
                while self.relay_drops().get(label) <= before.get(label) {
                    if Instant::now() > deadline {
                        let diff = grown(&before, &self.relay_drops());
                        return Err(format!("{label} did not grow; drops grew {diff:?}"));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let emitted = self.emitted_from(&[RELAY], None);
                let native = self.relay.native_drain();
                if !emitted.is_empty() || !native.is_empty() {
                    return Err(format!(
                        "the relay sent {emitted:?} and {} native packets",
                        native.len()
                    ));
                }
            }
            Expect::Accepted => match self.relay.native_recv(LIMIT) {
                Some(p)
                    if k.bytes.starts_with(&p)
                        && p.len() == usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 => {}
                other => return Err(format!("not forwarded natively: {other:02x?}")),
            },
        }
        self.relay_forwards(seq)
            .map_err(|e| format!("no valid forwarding afterwards: {e}"))?;
        if k.expect == Expect::Accepted {
            // Let a tick export anything the core might have counted.
            std::thread::sleep(teredo_relay::TICK + Duration::from_millis(200));
        }
        let diff = grown(&before, &self.relay_drops());
        let want: BTreeMap<String, i64> = match k.expect {
            Expect::Drop(r) => BTreeMap::from([(r.as_str().to_owned(), 1)]),
            Expect::Accepted => BTreeMap::new(),
        };
        if diff != want {
            return Err(format!("drop counters grew {diff:?}, want {want:?}"));
        }
        Ok(())
    }
}

/// Issue 7 part 2: every kind of the corpus, one verdict each.
#[test]
fn corpus_over_real_sockets() {
    require_root!();
    let mut lab = Lab::new(function_name!());
    let kinds = corpus();
    let mut report = Vec::new();
    let mut failed = 0;
    lab.flush();
    check(lab.server_answers().map_err(anyhow::Error::msg));
    let mut relay_ready = false;
    for (i, k) in kinds.iter().enumerate() {
        if k.target != Target::Server && !relay_ready {
            lab.flush();
            check(lab.relay_trust_t().map_err(anyhow::Error::msg));
            relay_ready = true;
        }
        lab.flush();
        let r = match k.target {
            Target::Server => lab.server_kind(k),
            Target::RelayUdp | Target::RelayNative => lab.relay_kind(k, 1 + i as u16),
        };
        let verdict = match k.expect {
            Expect::Drop(r) => format!("dropped as {}", r.as_str()),
            Expect::Accepted => "accepted".to_owned(),
        };
        match r {
            Ok(()) => report.push(format!("ok   {} -> {verdict}", k.name)),
            Err(e) => {
                failed += 1;
                report.push(format!("FAIL {} -> want {verdict}: {e}", k.name));
            }
        }
    }
    let report = report.join("\n");
    eprintln!("{report}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} kinds failed:\n{report}",
        kinds.len()
    );
}
