//! Sans-IO tests: TEREDO.md (b) relay checks 16–20, Strict vs Lenient with a
//! symmetric-NAT client, peer-table eviction and expiry, queues, ICMPv6 errors, the
//! zero-copy entry points, then property tests (arbitrary bytes, truncations, structured
//! operation sequences with invariants).

use std::collections::HashMap as Map;
use std::net::Ipv4Addr;

use proptest::collection::vec;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::addr::is_ipv4_global_unicast;
use crate::wire::ipv6::{emit_bubble, icmpv6_checksum_ok, Echo};
use crate::wire::origin::OriginIndication;

/// X's Teredo server.
const SX: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// X's mapping as embedded in its address (and as seen by its server).
const XMAP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 40005);
/// A native IPv6 host.
const H: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
/// The relay's own native address (source of its ICMPv6 errors).
const RELAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const SX_3544: SocketAddrV4 = SocketAddrV4::new(SX, TEREDO_PORT);

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn teredo(server: Ipv4Addr, flags: u16, mapped: SocketAddrV4) -> Ipv6Addr {
    TeredoAddr {
        server,
        flags,
        mapped,
    }
    .to_ipv6()
}

/// Client X: RFC 5991 random flags, C = 0.
fn x() -> Ipv6Addr {
    teredo(SX, 0x1027, XMAP)
}

fn cfg() -> RelayConfig {
    RelayConfig {
        icmp_source: Some(RELAY_V6),
        ..RelayConfig::default()
    }
}

/// An ICMPv6 echo: 40 + 8 + `data_len` bytes (148 with 100 bytes of data, as Miredo's
/// test pings in TEREDO.md §14 R-a).
fn echo(src: Ipv6Addr, dst: Ipv6Addr, reply: bool, seq: u16, data_len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..data_len).map(|i| i as u8).collect();
    let e = Echo {
        reply,
        id: 0x4242,
        seq,
        data: &data,
    };
    let mut v = vec![0u8; 48 + data_len];
    e.emit(&mut v, src, dst, 64).unwrap();
    v
}

fn ping(seq: u16) -> Vec<u8> {
    echo(H, x(), false, seq, 100)
}

fn seq_of(ipv6: &[u8]) -> u16 {
    Echo::parse(ipv6).unwrap().seq
}

fn bubble(src: Ipv6Addr, dst: Ipv6Addr, trailer: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 40];
    emit_bubble(&mut v, src, dst, 0).unwrap();
    v.extend_from_slice(trailer);
    v
}

fn nonce_trailer(n: [u8; 4]) -> Vec<u8> {
    vec![0x01, 4, n[0], n[1], n[2], n[3]]
}

type Out = (Output, Vec<u8>);

/// The tests' view of an output: where it goes and how long it is. The [`Kind`] of every
/// output is checked by the `Lab` itself against its bytes, so the assertions below only
/// say what matters to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Udp { to: SocketAddrV4, len: usize },
    Ipv6 { len: usize },
}

impl Output {
    fn of(o: crate::io::Output, bytes: &[u8]) -> Self {
        let bubble = TeredoPacket::parse(bytes).is_ok_and(|p| p.is_bubble());
        match o {
            crate::io::Output::Udp {
                local,
                to,
                len,
                kind,
            } => {
                assert_eq!(local, Local::Primary);
                assert_eq!(kind.is_bubble(), bubble, "{kind:?}");
                // Indirect bubbles go to the peer's server, at port 3544.
                if bubble {
                    assert_eq!(kind == Kind::IndirectBubble, to.port() == TEREDO_PORT);
                }
                Self::Udp { to, len }
            }
            crate::io::Output::Ipv6 { len, kind } => {
                let own = bytes.len() >= 40 && ipv6_src(bytes) == RELAY_V6;
                assert_eq!(kind == Kind::Icmpv6Error, own, "{kind:?}");
                Self::Ipv6 { len }
            }
            crate::io::Output::Upnp(r) => panic!("a relay asks no UPnP gateway: {r:?}"),
        }
    }
}

/// The tests' view of [`super::Handled`]: the in-place part is turned into an output by the
/// `Lab` (after the queued ones, as a driver sends them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handled {
    Encapsulated { to: SocketAddrV4 },
    Queued { bubble_sent: bool },
    Bubble { via: Acceptance, flushed: usize },
    Forwarded { via: Acceptance, flushed: usize },
}

impl From<super::Handled> for Handled {
    fn from(h: super::Handled) -> Self {
        match h {
            super::Handled::Encapsulated { to, .. } => Self::Encapsulated { to },
            super::Handled::Queued { bubble_sent } => Self::Queued { bubble_sent },
            super::Handled::Bubble { via, flushed } => Self::Bubble { via, flushed },
            super::Handled::Forwarded { via, flushed, .. } => Self::Forwarded { via, flushed },
        }
    }
}

/// A relay in virtual time.
struct Lab {
    relay: Relay,
    t0: Instant,
    now: Instant,
    buf: Vec<u8>,
}

impl Lab {
    fn new(cfg: RelayConfig) -> Self {
        Self::with_seed(cfg, 7)
    }

    fn with_seed(cfg: RelayConfig, seed: u64) -> Self {
        let t0 = t0();
        Self {
            relay: Relay::new(cfg, ChaCha8Rng::seed_from_u64(seed), t0),
            t0,
            now: t0,
            buf: vec![0u8; MAX_UDP_PAYLOAD],
        }
    }

    fn at(&mut self, s: f64) {
        let t = self.t0 + secs(s);
        assert!(t >= self.now);
        self.now = t;
    }

    fn elapsed(&self) -> f64 {
        (self.now - self.t0).as_secs_f64()
    }

    fn native(&mut self, pkt: &[u8]) -> (Result<Handled, DropReason>, Vec<Out>) {
        let r = self.relay.handle_ipv6(self.now, pkt);
        self.outputs(r, pkt)
    }

    fn udp(&mut self, from: SocketAddrV4, data: &[u8]) -> (Result<Handled, DropReason>, Vec<Out>) {
        let r = self.relay.handle_udp(self.now, Local::Primary, from, data);
        self.outputs(r, data)
    }

    /// The queued outputs, then what the caller sends in place.
    fn outputs(
        &mut self,
        r: Result<super::Handled, DropReason>,
        input: &[u8],
    ) -> (Result<Handled, DropReason>, Vec<Out>) {
        let mut out = self.drain();
        if let Some(ip) = r.as_ref().ok().and_then(super::Handled::in_place) {
            let bytes = ip.bytes(input);
            out.push((Output::of(ip.output, bytes), bytes.to_vec()));
        }
        (r.map(Handled::from), out)
    }

    fn drain(&mut self) -> Vec<Out> {
        let mut v = Vec::new();
        while let Some(o) = self.relay.poll_output(&mut self.buf) {
            let bytes = &self.buf[..o.len()];
            v.push((Output::of(o, bytes), bytes.to_vec()));
        }
        v
    }

    /// Fires every timer up to `t0 + s` (seconds), returning the outputs with the time
    /// they were produced. Checks that `handle_timeout(now)` always makes progress.
    fn run_to(&mut self, s: f64) -> Vec<(f64, Out)> {
        let end = self.t0 + secs(s);
        let mut v = Vec::new();
        for _ in 0..1_000_000 {
            match self.relay.poll_timeout() {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.relay.handle_timeout(self.now);
                    let el = self.elapsed();
                    v.extend(self.drain().into_iter().map(|o| (el, o)));
                    if let Some(next) = self.relay.poll_timeout() {
                        assert!(next > self.now, "handle_timeout made no progress");
                    }
                }
                _ => break,
            }
        }
        self.now = self.now.max(end);
        v
    }

    /// Sends a native packet to X and answers the indirect bubble with X's direct bubble
    /// from its embedded mapping: X is trusted afterwards.
    fn trust_x(&mut self) -> Vec<Out> {
        let (r, out) = self.native(&ping(0));
        assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
        let b = indirect_bubble(&out[..1]);
        let (r, out) = self.udp(XMAP, &bubble(x(), b.src, &[]));
        assert!(matches!(r, Ok(Handled::Bubble { flushed: 1, .. })), "{r:?}");
        out
    }
}

/// The fields of an indirect bubble the tests look at.
#[derive(Debug)]
struct SeenBubble {
    src: Ipv6Addr,
    nonce: [u8; 4],
}

/// Checks `out` is exactly one indirect bubble to SX:3544 for X (TEREDO.md check 16).
fn indirect_bubble(out: &[Out]) -> SeenBubble {
    assert_eq!(out.len(), 1, "{out:?}");
    let (o, bytes) = &out[0];
    assert_eq!(
        *o,
        Output::Udp {
            to: SX_3544,
            len: INDIRECT_BUBBLE_LEN
        }
    );
    check_indirect(bytes, x())
}

fn check_indirect(bytes: &[u8], dst: Ipv6Addr) -> SeenBubble {
    let p = TeredoPacket::parse(bytes).unwrap();
    assert!(p.is_bubble());
    assert_eq!((p.ipv6_payload().len(), p.next_header()), (0, 59));
    assert_eq!(p.dst(), dst);
    assert_eq!(p.hop_limit(), DEFAULT_BUBBLE_HOP_LIMIT);
    assert!(is_link_local(&p.src()));
    assert!(p.auth.is_none() && p.origin.is_none());
    let t: Vec<_> = Trailers::new(p.trailers).collect();
    assert_eq!(t.len(), 1);
    SeenBubble {
        src: p.src(),
        nonce: t[0].nonce().unwrap(),
    }
}

/// An ICMPv6 destination unreachable (address) to `to` quoting `quoted`'s start.
fn check_icmp(bytes: &[u8], to: Ipv6Addr, quoted: &[u8]) {
    assert!(icmpv6_checksum_ok(bytes));
    assert_eq!(ipv6_src(bytes), RELAY_V6);
    assert_eq!(ipv6_dst(bytes), to);
    assert_eq!(bytes[6], NEXT_HEADER_ICMPV6);
    assert_eq!(&bytes[40..42], &[1, 3]);
    assert!(bytes.len() <= ICMP_ERROR_MAX_LEN);
    let q = &bytes[48..];
    assert_eq!(q, &quoted[..q.len()]);
    assert_eq!(q.len(), quoted.len().min(ICMP_ERROR_MAX_LEN - 48));
}

// ---- check 16: bubble, then deliver ---------------------------------------------------

#[test]
fn check16_bubble_then_deliver() {
    let mut lab = Lab::new(cfg());
    let (r, out) = lab.native(&ping(1));
    assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
    // One indirect bubble to SX:3544 (with a nonce trailer), no data to X.
    let b = indirect_bubble(&out);
    assert_eq!(b.src, lab.relay.per_peer_link_local(&x(), b.nonce));
    let info = lab.relay.peer(&x()).unwrap();
    assert!(!info.trusted);
    assert_eq!(info.phase, PeerPhase::Bubbling);
    assert_eq!(info.mapping, XMAP);
    // More packets while untrusted: queued, no more bubbles before the timer.
    for seq in 2..=3 {
        lab.at(f64::from(seq) * 0.3);
        let (r, out) = lab.native(&ping(seq));
        assert_eq!(r, Ok(Handled::Queued { bubble_sent: false }));
        assert!(out.is_empty());
    }
    // X's direct bubble (src X, dst = our bubble source) from X's mapping.
    lab.at(1.0);
    let (r, out) = lab.udp(XMAP, &bubble(x(), b.src, &[]));
    assert_eq!(
        r,
        Ok(Handled::Bubble {
            via: Acceptance::EmbeddedMapping,
            flushed: 3
        })
    );
    let seqs: Vec<u16> = out
        .iter()
        .map(|(o, bytes)| {
            assert_eq!(*o, Output::Udp { to: XMAP, len: 148 });
            seq_of(bytes)
        })
        .collect();
    assert_eq!(seqs, [1, 2, 3], "FIFO, to exactly X's mapping");
    assert_eq!(
        out[0].1,
        ping(1),
        "unchanged: plain IPv6 in UDP, no auth, no OI"
    );
    let info = lab.relay.peer(&x()).unwrap();
    assert!(info.trusted && info.valid);
    assert_eq!(info.phase, PeerPhase::Idle);
    // Trusted: data goes straight to the mapping, no bubble.
    let (r, out) = lab.native(&ping(4));
    assert_eq!(r, Ok(Handled::Encapsulated { to: XMAP }));
    assert_eq!(out, vec![(Output::Udp { to: XMAP, len: 148 }, ping(4))]);
    // X's replies are forwarded natively, trailers stripped.
    let reply = echo(x(), H, true, 4, 100);
    let mut with_trailer = reply.clone();
    with_trailer.extend_from_slice(&[0x01, 4, 9, 9, 9, 9]);
    for data in [&reply, &with_trailer] {
        let (r, out) = lab.udp(XMAP, data);
        assert_eq!(
            r,
            Ok(Handled::Forwarded {
                via: Acceptance::EmbeddedMapping,
                flushed: 0
            })
        );
        assert_eq!(out, vec![(Output::Ipv6 { len: 148 }, reply.clone())]);
    }
    // The retransmission timer of the finished exchange sends nothing.
    assert!(lab.run_to(10.0).is_empty());
    let c = lab.relay.counters();
    assert_eq!((c.bubbles_sent, c.flushed, c.forwarded), (1, 3, 2));
    assert_eq!(c.dropped_total(), 0);
}

#[test]
fn check16_queue_bound_fifo() {
    // Miredo's budget (1280 B) keeps 8 of 10 148-byte packets (and sends them LIFO);
    // ours keeps the first 8 in order. The default budget keeps all 10.
    for (budget, kept) in [(1280, 8u16), (DEFAULT_QUEUE_BYTES_PER_PEER, 10)] {
        let mut lab = Lab::new(RelayConfig {
            queue_bytes_per_peer: budget,
            ..cfg()
        });
        let mut src = None;
        for seq in 1..=10u16 {
            lab.at(f64::from(seq) * 0.1);
            let (r, out) = lab.native(&ping(seq));
            if seq == 1 {
                src = Some(indirect_bubble(&out).src);
            }
            if seq <= kept {
                assert!(matches!(r, Ok(Handled::Queued { .. })), "{seq}: {r:?}");
            } else {
                assert_eq!(r, Err(DropReason::QueueFull));
            }
        }
        assert_eq!(lab.relay.gauges().queued_bytes, 148 * usize::from(kept));
        let (r, out) = lab.udp(XMAP, &bubble(x(), src.unwrap(), &[]));
        assert!(matches!(r, Ok(Handled::Bubble { flushed, .. }) if flushed == usize::from(kept)));
        let seqs: Vec<u16> = out.iter().map(|(_, b)| seq_of(b)).collect();
        assert_eq!(seqs, (1..=kept).collect::<Vec<_>>());
        assert!(out.iter().map(|(_, b)| b.len()).sum::<usize>() <= budget);
        assert_eq!(
            lab.relay.counters().dropped(DropReason::QueueFull),
            u64::from(10 - kept)
        );
        assert_eq!(lab.relay.gauges().queued_bytes, 0);
    }
}

#[test]
fn queue_packet_cap() {
    let mut lab = Lab::new(RelayConfig {
        queue_packets_per_peer: 2,
        ..cfg()
    });
    let r: Vec<_> = (1..=3).map(|s| lab.native(&ping(s)).0).collect();
    assert!(matches!(r[0], Ok(Handled::Queued { bubble_sent: true })));
    assert!(matches!(r[1], Ok(Handled::Queued { bubble_sent: false })));
    assert_eq!(r[2], Err(DropReason::QueueFull));
}

#[test]
fn direct_bubbles_for_a_relay_behind_a_nat() {
    let mut lab = Lab::new(RelayConfig {
        direct_bubbles: true,
        ..cfg()
    });
    let (_, out) = lab.native(&ping(1));
    assert_eq!(out.len(), 2);
    let b = check_indirect(&out[0].1, x());
    assert_eq!(
        out[0].0,
        Output::Udp {
            to: SX_3544,
            len: 46
        }
    );
    // The direct bubble goes to the embedded mapping, without a nonce trailer
    // (RFC 6081 §5.2.4.2), from the same source.
    assert_eq!(out[1].0, Output::Udp { to: XMAP, len: 40 });
    let p = TeredoPacket::parse(&out[1].1).unwrap();
    assert!(p.is_bubble() && p.trailers.is_empty());
    assert_eq!((p.src(), p.dst()), (b.src, x()));
    // Retransmissions repeat both.
    let later = lab.run_to(2.0);
    assert_eq!(later.len(), 2);
    assert_eq!(lab.relay.counters().direct_bubbles_sent, 2);
}

#[test]
fn cone_bit_is_ignored() {
    let mut lab = Lab::new(cfg());
    let cone = teredo(SX, FLAG_CONE_FOR_TEST, XMAP);
    let (r, out) = lab.native(&echo(H, cone, false, 1, 10));
    assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].0,
        Output::Udp {
            to: SX_3544,
            len: 46
        }
    );
}

const FLAG_CONE_FOR_TEST: u16 = crate::addr::FLAG_CONE;

#[test]
fn fixed_bubble_source_and_hop_limit() {
    let ll = crate::addr::LL_MIREDO_RESTRICTED;
    let mut lab = Lab::new(RelayConfig {
        bubble_source: BubbleSource::Fixed(ll),
        bubble_hop_limit: 0,
        ..cfg()
    });
    let (_, out) = lab.native(&ping(1));
    let p = TeredoPacket::parse(&out[0].1).unwrap();
    assert_eq!((p.src(), p.hop_limit()), (ll, 0));
}

#[test]
fn per_peer_link_local_changes_with_peer_and_nonce() {
    let lab = Lab::new(cfg());
    let r = &lab.relay;
    let y = teredo(SX, 0, "203.0.113.9:1".parse().unwrap());
    let a = r.per_peer_link_local(&x(), [1, 2, 3, 4]);
    assert!(is_link_local(&a));
    assert_eq!(a.octets()[8] & 3, 0);
    assert_eq!(a, r.per_peer_link_local(&x(), [1, 2, 3, 4]));
    assert_ne!(a, r.per_peer_link_local(&x(), [1, 2, 3, 5]));
    assert_ne!(a, r.per_peer_link_local(&y, [1, 2, 3, 4]));
    // Keyed: another seed gives other addresses.
    let other = Relay::new(cfg(), ChaCha8Rng::seed_from_u64(8), lab.t0);
    assert_ne!(a, other.per_peer_link_local(&x(), [1, 2, 3, 4]));
}

// ---- check 17: pacing and give-up ---------------------------------------------------

/// Splits outputs into indirect bubbles (times) and ICMPv6 errors; anything else (data
/// or bubbles to X's mapping) fails the test.
fn classify(at: f64, out: &[Out], bubbles: &mut Vec<f64>, icmps: &mut Vec<(f64, Vec<u8>)>) {
    for (o, bytes) in out {
        match o {
            Output::Udp { to, .. } if *to == SX_3544 => {
                check_indirect(bytes, x());
                bubbles.push(at);
            }
            Output::Ipv6 { .. } => icmps.push((at, bytes.clone())),
            o => panic!("unexpected output {o:?} at {at}"),
        }
    }
}

fn assert_paced(bubbles: &[f64]) {
    for w in bubbles.windows(2) {
        assert!(w[1] - w[0] >= 2.0 - 1e-9, "bubbles {bubbles:?}");
    }
    for (i, &t) in bubbles.iter().enumerate() {
        let in_window = bubbles[i..].iter().filter(|&&u| u < t + 300.0).count();
        assert!(
            in_window <= 4,
            "more than 4 bubbles in 300 s from {t}: {bubbles:?}"
        );
    }
}

#[test]
fn check17_pacing_and_give_up_with_one_packet_per_second() {
    let mut lab = Lab::new(cfg());
    let (mut bubbles, mut icmps) = (Vec::new(), Vec::new());
    let mut results = Vec::new();
    for s in 0..=320u16 {
        for (at, o) in lab.run_to(f64::from(s)) {
            classify(at, std::slice::from_ref(&o), &mut bubbles, &mut icmps);
        }
        let (r, out) = lab.native(&ping(s));
        classify(f64::from(s), &out, &mut bubbles, &mut icmps);
        results.push(r);
    }
    assert_paced(&bubbles);
    // Timer-driven: 0, 2, 4, 6 (RFC: ≥ 2 s apart; Miredo 3 s because of its 1 s clock),
    // then nothing until the 300 s window is over, then a new exchange.
    assert_eq!(bubbles, [0.0, 2.0, 4.0, 6.0, 300.0, 302.0, 304.0, 306.0]);
    // Give-up 2 s after the 4th bubble: the queue (seq 0..=7) is dropped and the sender
    // of the first queued packet gets "address unreachable".
    let (t, first) = &icmps[0];
    assert_eq!(*t, 8.0);
    check_icmp(first, H, &ping(0));
    for (s, r) in results.iter().enumerate() {
        match s {
            0..=7 | 300..=307 => assert!(matches!(r, Ok(Handled::Queued { .. })), "{s}"),
            // While failed, packets are refused with an ICMPv6 error each (1/s is under
            // the rate limit).
            _ => assert_eq!(*r, Err(DropReason::PeerUnreachable), "{s}"),
        }
    }
    let errors_for = |s: u16| icmps.iter().filter(|(_, b)| b[48..] == ping(s)[..]).count();
    assert_eq!(errors_for(0), 1);
    for s in 8..300u16 {
        assert_eq!(errors_for(s), 1, "{s}");
    }
    assert_eq!(icmps.iter().filter(|(t, _)| *t == 308.0).count(), 2);
    let c = lab.relay.counters();
    assert_eq!(c.give_ups, 2);
    assert_eq!(c.bubbles_sent, 8);
    // 8 queued at the first give-up + 292 refused + 8 at the second + 13 refused after it.
    assert_eq!(c.dropped(DropReason::PeerUnreachable), 8 + 292 + 8 + 13);
}

#[test]
fn check17_retransmits_on_the_timer_without_new_packets() {
    let mut lab = Lab::new(cfg());
    let (_, out) = lab.native(&ping(1));
    let first = indirect_bubble(&out);
    let (mut bubbles, mut icmps) = (vec![0.0], Vec::new());
    let mut nonces = vec![first.nonce];
    for (at, o) in lab.run_to(400.0) {
        if let Output::Udp { .. } = o.0 {
            nonces.push(check_indirect(&o.1, x()).nonce);
        }
        classify(at, std::slice::from_ref(&o), &mut bubbles, &mut icmps);
    }
    assert_eq!(bubbles, [0.0, 2.0, 4.0, 6.0]);
    assert_eq!(icmps.len(), 1);
    assert_eq!(icmps[0].0, 8.0);
    check_icmp(&icmps[0].1, H, &ping(1));
    // A fresh nonce in every bubble (RFC 6081 §5.2.4.1).
    let mut sorted = nonces.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 4);
    let c = lab.relay.counters();
    assert_eq!((c.give_ups, c.dropped(DropReason::PeerUnreachable)), (1, 1));
    // The failed entry was kept until the window ended, then expired.
    assert!(lab.relay.peer(&x()).is_none());
    assert_eq!(lab.relay.gauges(), RelayGauges::default());
}

#[test]
fn failed_peer_is_remembered_for_the_whole_window() {
    let mut lab = Lab::new(cfg());
    lab.native(&ping(1)).0.unwrap();
    lab.run_to(299.0);
    let info = lab.relay.peer(&x()).expect("kept while the window runs");
    assert_eq!(info.phase, PeerPhase::Failed);
    // A packet after a silent minute still may not restart the bubbles.
    let (r, out) = lab.native(&ping(2));
    assert_eq!(r, Err(DropReason::PeerUnreachable));
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0].0, Output::Ipv6 { .. }));
    // After the window: a new exchange.
    lab.run_to(300.0);
    let (r, out) = lab.native(&ping(3));
    assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
    indirect_bubble(&out);
}

#[test]
fn check17_icmp_errors_are_rate_limited() {
    let mut lab = Lab::new(cfg());
    lab.native(&ping(0)).0.unwrap();
    lab.run_to(8.0); // give-up: one error, 9 tokens left
                     // 100 packets/s for 10 s into the failed peer.
    let mut sent = Vec::new();
    for i in 0..1000u16 {
        lab.at(8.0 + f64::from(i) * 0.01);
        let (r, out) = lab.native(&ping(i));
        assert_eq!(r, Err(DropReason::PeerUnreachable));
        if !out.is_empty() {
            sent.push(lab.elapsed());
        }
    }
    // Token bucket: 10 deep, 10/s: at most burst + rate × t in any interval.
    for (i, &t) in sent.iter().enumerate() {
        for (j, &u) in sent.iter().enumerate().skip(i) {
            assert!((j - i + 1) as f64 <= 10.0 + 10.0 * (u - t) + 1e-6);
        }
    }
    assert!((100..=110).contains(&sent.len()), "{}", sent.len());
    let c = lab.relay.counters();
    assert_eq!(c.icmp_errors_sent as usize, sent.len() + 1);
    assert_eq!(c.icmp_errors_rate_limited as usize, 1000 - sent.len());
}

#[test]
fn icmp_errors_follow_rfc4443() {
    // Without a source address no error is sent (the give-up is still counted).
    let mut lab = Lab::new(RelayConfig {
        icmp_source: None,
        ..cfg()
    });
    lab.native(&ping(0)).0.unwrap();
    assert!(lab
        .run_to(20.0)
        .iter()
        .all(|(_, (o, _))| matches!(o, Output::Udp { .. })));
    assert_eq!(lab.relay.counters().give_ups, 1);

    // A large invoking packet is quoted up to the 1280-byte minimum MTU.
    let mut lab = Lab::new(cfg());
    let big = echo(H, x(), false, 1, 1400);
    lab.native(&big).0.unwrap();
    let out = lab.run_to(20.0);
    let (_, (o, bytes)) = out.last().unwrap();
    assert_eq!(*o, Output::Ipv6 { len: 1280 });
    check_icmp(bytes, H, &big);

    // Never an error about an ICMPv6 error.
    let mut lab = Lab::new(cfg());
    let mut err = echo(H, x(), false, 1, 20);
    err[40] = 1; // destination unreachable
    finish_icmpv6(&mut err);
    lab.native(&err).0.unwrap();
    assert!(lab
        .run_to(20.0)
        .iter()
        .all(|(_, (o, _))| matches!(o, Output::Udp { .. })));
}

// ---- check 18: egress IPv4 filters ------------------------------------------------

#[test]
fn check18_non_global_embedded_addresses_emit_nothing() {
    let mut lab = Lab::new(RelayConfig {
        direct_bubbles: true,
        ..cfg()
    });
    for mapped in [
        "192.168.1.5:40005",
        "10.0.0.1:1",
        "127.0.0.1:5",
        "169.254.0.1:5",
        "172.16.5.5:5",
        "224.0.0.1:5",
        "255.255.255.255:5",
        "0.1.2.3:5",
        "192.88.99.1:5",
        "203.0.113.5:0",
    ] {
        let dst = teredo(SX, 0, mapped.parse().unwrap());
        let (r, out) = lab.native(&echo(H, dst, false, 1, 10));
        assert_eq!(r, Err(DropReason::NonGlobalMappedAddress), "{mapped}");
        assert!(out.is_empty());
    }
    for server in [
        "10.0.0.1",
        "192.168.0.1",
        "127.0.0.1",
        "224.0.0.1",
        "0.0.0.0",
    ] {
        let dst = teredo(server.parse().unwrap(), 0, XMAP);
        let (r, out) = lab.native(&echo(H, dst, false, 1, 10));
        assert_eq!(r, Err(DropReason::NonGlobalServer), "{server}");
        assert!(out.is_empty());
    }
    assert!(lab.run_to(400.0).is_empty(), "no bubble later either");
    assert_eq!(lab.relay.gauges().peers, 0);
}

#[test]
fn native_side_filters() {
    let mut lab = Lab::new(cfg());
    let cases: [(Vec<u8>, DropReason); 7] = [
        (
            echo(H, "2001:db8::5".parse().unwrap(), false, 1, 8),
            DropReason::NotTeredoDestination,
        ),
        (
            echo(H, "ff02::1".parse().unwrap(), false, 1, 8),
            DropReason::NonGlobalDestination,
        ),
        (
            echo(H, "2002::1".parse().unwrap(), false, 1, 8),
            DropReason::NotTeredoDestination,
        ),
        (
            echo("fe80::1".parse().unwrap(), x(), false, 1, 8),
            DropReason::NonGlobalNativeSource,
        ),
        (
            echo(Ipv6Addr::UNSPECIFIED, x(), false, 1, 8),
            DropReason::NonGlobalNativeSource,
        ),
        (ping(1)[..39].to_vec(), DropReason::Truncated),
        ([&ping(1)[..], &[0u8][..]].concat(), DropReason::Malformed),
    ];
    for (pkt, reason) in cases {
        let (r, out) = lab.native(&pkt);
        assert_eq!(r, Err(reason));
        assert!(out.is_empty());
    }
    let mut v4 = ping(1);
    v4[0] = 0x45;
    assert_eq!(lab.native(&v4).0, Err(DropReason::BadIpVersion));
    assert_eq!(lab.native(&ping(1)[..100]).0, Err(DropReason::BadLength));
    assert_eq!(lab.relay.gauges().peers, 0);
    assert_eq!(lab.relay.counters().dropped_total(), 9);
}

// ---- check 19: ingress anti-spoofing ---------------------------------------------------

/// After a relay restart the relay knows no peer; a client that sends first must not be
/// dropped until its next connectivity test (RFC 4380 §5.4.2 only allows the drop).
#[test]
fn unknown_peer_with_matching_mapping_is_accepted_by_default() {
    let mut lab = Lab::new(cfg());
    let ymap: SocketAddrV4 = "203.0.113.9:5000".parse().unwrap();
    let y = teredo(SX, 0, ymap);
    let data = echo(y, H, false, 1, 20);
    let (r, out) = lab.udp(ymap, &data);
    assert!(matches!(r, Ok(Handled::Forwarded { .. })), "{r:?}");
    assert_eq!(out, vec![(Output::Ipv6 { len: data.len() }, data)]);
    let info = lab.relay.peer(&y).expect("peer created");
    assert!(info.trusted);
    assert_eq!(info.mapping, ymap);
    assert_eq!(lab.relay.counters().unknown_peers_accepted, 1);
    // The way back needs no bubble: the peer is trusted and fresh.
    let (r, _) = lab.native(&echo(H, y, true, 1, 20));
    assert!(
        matches!(r, Ok(Handled::Encapsulated { to, .. }) if to == ymap),
        "{r:?}"
    );
    // Never a mapping the relay may not send to: a private source embedding itself.
    let private: SocketAddrV4 = "192.168.1.5:5000".parse().unwrap();
    let (r, out) = lab.udp(private, &echo(teredo(SX, 0, private), H, false, 1, 20));
    assert!(r.is_err(), "{r:?}");
    assert!(out.is_empty());
    // A spoofed source (mapping mismatch) still creates nothing.
    let zmap: SocketAddrV4 = "203.0.113.10:6000".parse().unwrap();
    let (r, _) = lab.udp(ymap, &echo(teredo(SX, 0, zmap), H, false, 1, 20));
    assert_eq!(r, Err(DropReason::SpoofedSource));
    assert!(lab.relay.peer(&teredo(SX, 0, zmap)).is_none());
}

#[test]
fn check19_ingress_anti_spoofing() {
    let mut lab = Lab::new(cfg());
    lab.trust_x();
    let reply = echo(x(), H, true, 1, 20);
    // Received from :40001 but the source embeds :40005.
    let wrong_port: SocketAddrV4 = "203.0.113.5:40001".parse().unwrap();
    let wrong_ip: SocketAddrV4 = "203.0.113.6:40005".parse().unwrap();
    for from in [wrong_port, wrong_ip] {
        for data in [reply.clone(), bubble(x(), H, &[])] {
            let (r, out) = lab.udp(from, &data);
            assert_eq!(r, Err(DropReason::SpoofedSource));
            assert!(out.is_empty());
        }
    }
    // Non-Teredo IPv6 source.
    let (r, out) = lab.udp(XMAP, &echo("2001:db8::7".parse().unwrap(), H, true, 1, 20));
    assert_eq!(r, Err(DropReason::NotTeredoSource));
    assert!(out.is_empty());
    // Mapping matches but no peer entry (the relay never sent to it): dropped with
    // UnknownPeerPolicy::Drop, as Miredo; the default creates the peer (next test).
    let ymap: SocketAddrV4 = "203.0.113.9:5000".parse().unwrap();
    let y = teredo(SX, 0, ymap);
    let mut dropping = Lab::new(RelayConfig {
        unknown_peers: UnknownPeerPolicy::Drop,
        ..cfg()
    });
    for data in [echo(y, H, false, 1, 20), bubble(y, H, &[])] {
        let (r, out) = dropping.udp(ymap, &data);
        assert_eq!(r, Err(DropReason::UnknownPeer));
        assert!(out.is_empty());
    }
    assert!(dropping.relay.peer(&y).is_none());
    // Trusted peer: forwarded, trailers stripped; auth header and origin indication
    // tolerated.
    let mut full = Vec::new();
    full.extend_from_slice(&[0, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0]);
    let mut oi = [0u8; 8];
    OriginIndication(SX_3544).emit(&mut oi).unwrap();
    full.extend_from_slice(&oi);
    full.extend_from_slice(&reply);
    full.extend_from_slice(&[0x01, 4, 1, 2, 3, 4, 0x80, 0]);
    let (r, out) = lab.udp(XMAP, &full);
    assert!(matches!(r, Ok(Handled::Forwarded { .. })));
    assert_eq!(
        out,
        vec![(Output::Ipv6 { len: reply.len() }, reply.clone())]
    );
    // Destinations: Teredo (client to client), link-local / multicast (not a bubble).
    for (dst, reason) in [
        (teredo(SX, 0, ymap), DropReason::TeredoDestination),
        ("fe80::1".parse().unwrap(), DropReason::NonGlobalDestination),
        ("ff02::1".parse().unwrap(), DropReason::NonGlobalDestination),
        (Ipv6Addr::LOCALHOST, DropReason::NonGlobalDestination),
    ] {
        let (r, out) = lab.udp(XMAP, &echo(x(), dst, false, 1, 8));
        assert_eq!(r, Err(reason), "{dst}");
        assert!(out.is_empty());
    }
    // …but a bubble to a link-local destination is fine (and consumed).
    let (r, out) = lab.udp(XMAP, &bubble(x(), "fe80::1".parse().unwrap(), &[]));
    assert!(matches!(r, Ok(Handled::Bubble { .. })));
    assert!(out.is_empty());
    // Malformed datagrams.
    for (data, reason) in [
        (vec![0u8; 10], DropReason::Truncated),
        (reply[..60].to_vec(), DropReason::BadLength),
        (
            [&reply[..], &[0x41, 0][..]].concat(),
            DropReason::MandatoryTrailer,
        ),
        (
            [
                &oi[..],
                &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
                &reply[..],
            ]
            .concat(),
            DropReason::BadEncapsulation,
        ),
        (vec![0u8; MAX_UDP_PAYLOAD + 1], DropReason::Oversized),
    ] {
        assert_eq!(lab.udp(XMAP, &data).0, Err(reason));
    }
}

// ---- check 20: staleness --------------------------------------------------------

#[test]
fn check20_staleness_triggers_a_new_exchange() {
    let mut lab = Lab::new(cfg());
    lab.trust_x();
    // Still valid at 29 s although only the relay talked since: direct.
    lab.at(29.0);
    let (r, _) = lab.native(&ping(1));
    assert_eq!(r, Ok(Handled::Encapsulated { to: XMAP }));
    assert!(lab.run_to(30.5).is_empty());
    // > 30 s without reception: the next packet is held and bubbles first.
    let (r, out) = lab.native(&ping(2));
    assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
    let b = indirect_bubble(&out);
    let info = lab.relay.peer(&x()).unwrap();
    assert!(info.trusted && !info.valid);
    // X answers from its mapping: the packet is released.
    lab.at(31.0);
    let (r, out) = lab.udp(XMAP, &bubble(x(), b.src, &nonce_trailer(b.nonce)));
    assert!(matches!(r, Ok(Handled::Bubble { flushed: 1, .. })));
    assert_eq!(out, vec![(Output::Udp { to: XMAP, len: 148 }, ping(2))]);
    let (r, _) = lab.native(&ping(3));
    assert_eq!(r, Ok(Handled::Encapsulated { to: XMAP }));
}

#[test]
fn stale_peer_that_stays_silent_loses_trust() {
    let mut lab = Lab::new(cfg());
    lab.trust_x();
    lab.at(40.0);
    lab.native(&ping(1)).0.unwrap();
    let out = lab.run_to(60.0);
    assert_eq!(
        out.len(),
        4,
        "3 retransmissions and an ICMPv6 error: {out:?}"
    );
    let info = lab.relay.peer(&x()).unwrap();
    assert!(!info.trusted);
    assert_eq!(info.phase, PeerPhase::Failed);
    assert_eq!(lab.relay.gauges().peers_trusted, 0);
}

// ---- Strict vs Lenient with a symmetric-NAT client -------------------------------

/// X behind a symmetric NAT: its server saw XMAP (embedded), the relay sees another
/// mapping.
const XSYM: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 50000);

fn symmetric_setup(trust: TrustPolicy) -> (Lab, SeenBubble) {
    let mut lab = Lab::new(RelayConfig { trust, ..cfg() });
    let (_, out) = lab.native(&ping(1));
    let b = indirect_bubble(&out);
    lab.at(0.5);
    (lab, b)
}

#[test]
fn strict_drops_a_symmetric_nat_answer() {
    let (mut lab, b) = symmetric_setup(TrustPolicy::Strict);
    let (r, out) = lab.udp(XSYM, &bubble(x(), b.src, &nonce_trailer(b.nonce)));
    assert_eq!(r, Err(DropReason::SpoofedSource));
    assert!(out.is_empty());
    let info = lab.relay.peer(&x()).unwrap();
    assert!(!info.trusted);
    assert_eq!(info.queued_packets, 1);
}

#[test]
fn lenient_trusts_a_nonce_answer_and_records_the_actual_mapping() {
    let (mut lab, b) = symmetric_setup(TrustPolicy::Lenient);
    // RFC 6081 §5.2.4.4: the direct bubble echoes our nonce (dst: X's choice).
    let (r, out) = lab.udp(XSYM, &bubble(x(), H, &nonce_trailer(b.nonce)));
    assert_eq!(
        r,
        Ok(Handled::Bubble {
            via: Acceptance::Nonce,
            flushed: 1
        })
    );
    assert_eq!(out, vec![(Output::Udp { to: XSYM, len: 148 }, ping(1))]);
    assert_eq!(lab.relay.peer(&x()).unwrap().mapping, XSYM);
    let (r, _) = lab.native(&ping(2));
    assert_eq!(r, Ok(Handled::Encapsulated { to: XSYM }));
    let (r, out) = lab.udp(XSYM, &echo(x(), H, true, 2, 20));
    assert!(matches!(
        r,
        Ok(Handled::Forwarded {
            via: Acceptance::RecordedMapping,
            ..
        })
    ));
    assert_eq!(out.len(), 1);
    // Any other mapping is still refused.
    let other: SocketAddrV4 = "203.0.113.5:50001".parse().unwrap();
    assert_eq!(
        lab.udp(other, &echo(x(), H, true, 3, 20)).0,
        Err(DropReason::SpoofedSource)
    );
    assert_eq!(lab.relay.counters().lenient_accepts, 1);
}

#[test]
fn lenient_trusts_an_answer_to_the_per_peer_link_local() {
    // Miredo-style clients ignore trailers but answer to the bubble's source.
    let (mut lab, b) = symmetric_setup(TrustPolicy::Lenient);
    let (r, out) = lab.udp(XSYM, &bubble(x(), b.src, &[]));
    assert_eq!(
        r,
        Ok(Handled::Bubble {
            via: Acceptance::LinkLocal,
            flushed: 1
        })
    );
    assert_eq!(out[0].0, Output::Udp { to: XSYM, len: 148 });
}

#[test]
fn lenient_accepts_the_previous_nonce_after_a_retransmission() {
    let (mut lab, first) = symmetric_setup(TrustPolicy::Lenient);
    let again = lab.run_to(2.0);
    assert_eq!(again.len(), 1);
    let second = check_indirect(&again[0].1 .1, x());
    assert_ne!(first.nonce, second.nonce);
    let (r, _) = lab.udp(XSYM, &bubble(x(), H, &nonce_trailer(first.nonce)));
    assert!(matches!(
        r,
        Ok(Handled::Bubble {
            via: Acceptance::Nonce,
            ..
        })
    ));
}

#[test]
fn lenient_refuses_everything_else() {
    let (mut lab, b) = symmetric_setup(TrustPolicy::Lenient);
    let wrong = [b.nonce[0] ^ 1, b.nonce[1], b.nonce[2], b.nonce[3]];
    let mut with_oi = vec![0u8; 8];
    OriginIndication(XSYM).emit(&mut with_oi).unwrap();
    with_oi.extend_from_slice(&bubble(x(), b.src, &nonce_trailer(b.nonce)));
    let mut data_with_nonce = echo(x(), H, true, 1, 20);
    data_with_nonce.extend_from_slice(&nonce_trailer(b.nonce));
    let other_ll = bubble(x(), "fe80::1".parse().unwrap(), &nonce_trailer(wrong));
    for (from, data, reason) in [
        (
            XSYM,
            bubble(x(), H, &nonce_trailer(wrong)),
            DropReason::SpoofedSource,
        ),
        (XSYM, other_ll, DropReason::SpoofedSource),
        // Came through a server (origin indication): not a direct bubble.
        (XSYM, with_oi, DropReason::SpoofedSource),
        // Only bubbles can carry the proof.
        (XSYM, data_with_nonce, DropReason::SpoofedSource),
        // Proof is fine, but the mapping could never be sent to.
        (
            "10.0.0.1:5".parse().unwrap(),
            bubble(x(), b.src, &nonce_trailer(b.nonce)),
            DropReason::NonGlobalSource,
        ),
    ] {
        let (r, out) = lab.udp(from, &data);
        assert_eq!(r, Err(reason));
        assert!(out.is_empty());
    }
    assert!(!lab.relay.peer(&x()).unwrap().trusted);
    // After trust the nonces are spent: a replay from yet another mapping fails.
    lab.udp(XSYM, &bubble(x(), H, &nonce_trailer(b.nonce)))
        .0
        .unwrap();
    let third: SocketAddrV4 = "203.0.113.5:50002".parse().unwrap();
    assert_eq!(
        lab.udp(third, &bubble(x(), b.src, &nonce_trailer(b.nonce)))
            .0,
        Err(DropReason::SpoofedSource)
    );
}

#[test]
fn fixed_bubble_source_is_no_evidence() {
    let ll = crate::addr::LL_MIREDO_RESTRICTED;
    let mut lab = Lab::new(RelayConfig {
        trust: TrustPolicy::Lenient,
        bubble_source: BubbleSource::Fixed(ll),
        ..cfg()
    });
    let (_, out) = lab.native(&ping(1));
    let b = indirect_bubble_fixed(&out);
    assert_eq!(
        lab.udp(XSYM, &bubble(x(), ll, &[])).0,
        Err(DropReason::SpoofedSource)
    );
    assert!(matches!(
        lab.udp(XSYM, &bubble(x(), ll, &nonce_trailer(b))).0,
        Ok(Handled::Bubble {
            via: Acceptance::Nonce,
            ..
        })
    ));
}

fn indirect_bubble_fixed(out: &[Out]) -> [u8; 4] {
    let p = TeredoPacket::parse(&out[0].1).unwrap();
    Trailers::new(p.trailers).next().unwrap().nonce().unwrap()
}

mod events;
mod refresh;
mod table;
