//! The relay's two inputs, UDP datagrams from clients and native IPv6 packets, plus its
//! clock, driven as one operation sequence.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::addr::{is_ipv4_global_unicast, is_teredo, TeredoAddr, TEREDO_PORT};
use crate::io::{Kind, Local, Output};
use crate::relay::{
    check_invariants, BubbleSource, Event, Handled, Relay, RelayConfig, RelayCounters, TrustPolicy,
};
use crate::wire::ipv6::emit_bubble;
use crate::wire::packet::{IPV6_HEADER_LEN, MAX_UDP_PAYLOAD};
use crate::wire::trailer::TYPE_NONCE;
use crate::wire::{TeredoPacket, Trailers};

use super::{advance, assert_complete_ipv6, fix_payload_len, patch_addr, FuzzRng, Input, MAX_OPS};

/// The Teredo server of the harness's clients (the lab's).
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The relay's own global address, the source of its ICMPv6 errors.
const ICMP_SOURCE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);
/// A native IPv6 host sending to clients.
const NATIVE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// Clients known to the harness.
const CLIENTS: usize = 6;

/// Which input the raw operations of the sequence feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Udp,
    Ipv6,
}

/// Relay UDP side: raw operations are datagrams `[from: 6 bytes][len: u16][bytes]`, mixed
/// with native packets, bubble answers and clock steps (see [`relay_ipv6`] for the format).
pub fn relay_udp(data: &[u8]) {
    let _ = run(data, Side::Udp);
}

/// Relay IPv6 side. Input: three config bytes (trust policy, caps, bubble source, ICMPv6
/// errors, trusted eviction, bubble rate), then operations `[op: u8][args]`; `op % 8`:
/// 0–2 raw input of this side (IPv6 packet `[len: u16][bytes]`), 3 IPv6 packet to client
/// `k` (`[k][len][bytes]`, destination and length patched), 4 datagram from client `k`
/// (`[k][flags][len][bytes]`: source address patched, destination too with flag bit 2,
/// length with bit 0, sent from its embedded mapping or another one with bit 1), 5 answer the last bubble to client `k` (`[k][flags]`), 6 clock step, 7 raw
/// input of the other side. After every operation all outputs are drained and checked:
/// UDP payloads re-parse, IPv6 packets are complete, the gauges respect the caps and the
/// peer table is internally consistent.
pub fn relay_ipv6(data: &[u8]) {
    let _ = run(data, Side::Ipv6);
}

struct Harness {
    relay: Relay,
    cfg: RelayConfig,
    now: Instant,
    buf: Vec<u8>,
    /// Per client: the last indirect bubble's IPv6 source and nonce.
    last_bubble: [Option<(Ipv6Addr, Option<[u8; 4]>)>; CLIENTS],
}

fn client_addr(k: usize) -> TeredoAddr {
    TeredoAddr {
        server: SERVER,
        flags: 0,
        mapped: client_mapping(k),
    }
}

fn client_mapping(k: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10 + k as u8), 40_000 + k as u16)
}

fn config(a: u8, b: u8, c: u8) -> RelayConfig {
    let mut cfg = RelayConfig {
        trust: if a & 1 == 0 {
            TrustPolicy::Lenient
        } else {
            TrustPolicy::Strict
        },
        max_peers: 1 + usize::from(a >> 1 & 7),
        queue_packets_per_peer: 1 + usize::from(b & 7),
        queue_bytes_per_peer: 256 << (b >> 3 & 3),
        global_queue_bytes: 2048,
        direct_bubbles: a & 0x10 != 0,
        bubble_source: if a & 0x20 != 0 {
            BubbleSource::Fixed(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xffff, 0xffff, 0xffff))
        } else {
            BubbleSource::PerPeer
        },
        icmp_source: (a & 0x40 == 0).then_some(ICMP_SOURCE),
        max_outputs: 4 + usize::from(b >> 5) * 4,
        max_output_bytes: 16 << 10,
        evict_trusted: c & 1 == 0,
        bubble_rate: u32::from(c >> 1 & 1),
        bubble_burst: 1 + u32::from(c >> 2 & 3),
        ..RelayConfig::default()
    };
    if a & 0x80 != 0 {
        cfg.validity = Duration::from_secs(2);
        cfg.idle_timeout = Duration::from_secs(5);
    }
    cfg
}

fn run(data: &[u8], side: Side) -> RelayCounters {
    let mut input = Input::new(data);
    let (a, b, c) = (input.u8(), input.u8(), input.u8());
    let cfg = config(a, b, c);
    let now = super::epoch();
    let mut h = Harness {
        relay: Relay::new(
            cfg,
            FuzzRng::new(u64::from(a) << 16 | u64::from(b) << 8 | u64::from(c)),
            now,
        ),
        cfg,
        now,
        buf: vec![0u8; MAX_UDP_PAYLOAD],
        last_bubble: [None; CLIENTS],
    };
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 8;
        match (op, side) {
            (0..=2, Side::Ipv6) | (7, Side::Udp) => {
                let pkt = input.chunk();
                h.ipv6(pkt);
            }
            (0..=2, Side::Udp) | (7, Side::Ipv6) => {
                let from = input.addr();
                let dg = input.chunk();
                h.udp(from, dg);
            }
            (3, _) => {
                let k = usize::from(input.u8()) % CLIENTS;
                let mut pkt = input.chunk().to_vec();
                fix_payload_len(&mut pkt);
                patch_addr(&mut pkt, 8, NATIVE);
                patch_addr(&mut pkt, 24, client_addr(k).to_ipv6());
                h.ipv6(&pkt);
            }
            (4, _) => {
                let k = usize::from(input.u8()) % CLIENTS;
                let flags = input.u8();
                let mut dg = input.chunk().to_vec();
                if flags & 1 != 0 {
                    fix_payload_len(&mut dg);
                }
                patch_addr(&mut dg, 8, client_addr(k).to_ipv6());
                if flags & 4 != 0 {
                    patch_addr(&mut dg, 24, NATIVE);
                }
                let from = if flags & 2 == 0 {
                    client_mapping(k)
                } else {
                    client_mapping((k + 1) % CLIENTS)
                };
                h.udp(from, &dg);
            }
            (5, _) => {
                let k = usize::from(input.u8()) % CLIENTS;
                let flags = input.u8();
                h.answer_bubble(k, flags);
            }
            _ => {
                let step = input.step();
                h.now = advance(h.now, step);
                h.run_timers();
            }
        }
        h.drain();
        h.check();
    }
    h.relay.counters().clone()
}

impl Harness {
    /// A native packet; an in-place result is checked as the output it stands for.
    fn ipv6(&mut self, pkt: &[u8]) {
        if let Ok(h) = self.relay.handle_ipv6(self.now, pkt) {
            self.in_place(h, pkt);
        }
    }

    /// A datagram; an in-place result is checked as the output it stands for.
    fn udp(&mut self, from: SocketAddrV4, dg: &[u8]) {
        if let Ok(h) = self.relay.handle_udp(self.now, Local::Primary, from, dg) {
            self.in_place(h, dg);
        }
    }

    /// Checks what the caller would send out of its own buffer, after the queued outputs
    /// (the order a driver uses).
    fn in_place(&mut self, h: Handled, input: &[u8]) {
        let Some(ip) = h.in_place() else {
            return;
        };
        self.drain();
        let bytes = ip.bytes(input);
        assert_eq!(bytes.len(), ip.output.len());
        self.buf[..bytes.len()].copy_from_slice(bytes);
        self.check_output(ip.output);
    }

    /// A direct bubble from client `k` to the source of the relay's last bubble to it, with
    /// its nonce echoed (flag bit 0), from the embedded mapping or another one (bit 1).
    fn answer_bubble(&mut self, k: usize, flags: u8) {
        let Some((src, nonce)) = self.last_bubble[k] else {
            return;
        };
        let mut dg = [0u8; IPV6_HEADER_LEN + 6];
        let mut len = emit_bubble(&mut dg, client_addr(k).to_ipv6(), src, 0).expect("fits");
        if let (Some(n), true) = (nonce, flags & 1 != 0) {
            len += Trailers::emit(TYPE_NONCE, &n, &mut dg[len..]).expect("fits");
        }
        let from = if flags & 2 == 0 {
            client_mapping(k)
        } else {
            SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 99), 50_000 + k as u16)
        };
        self.udp(from, &dg[..len]);
    }

    fn run_timers(&mut self) {
        for _ in 0..64 {
            match self.relay.poll_timeout() {
                Some(t) if t <= self.now => {
                    self.relay.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
    }

    fn drain(&mut self) {
        let mut n = 0;
        while let Some(o) = self.relay.poll_output(&mut self.buf) {
            n += 1;
            assert!(
                n <= self.cfg.max_outputs,
                "more outputs than the queue holds"
            );
            self.check_output(o);
        }
        while let Some(e) = self.relay.poll_event() {
            if let Event::PeerTrusted { peer, .. } = e {
                assert!(is_teredo(&peer), "{e:?}");
            }
        }
        // Drained after every operation, so the bounded queue never overflows.
        assert_eq!(self.relay.events_lost(), 0);
    }

    fn check_output(&mut self, o: Output) {
        match o {
            Output::Udp { to, len, kind, .. } => self.check_udp(to, len, kind),
            Output::Ipv6 { len, kind } => {
                let pkt = &self.buf[..len];
                assert_complete_ipv6(pkt, "relay native output");
                let src = Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[8..24]).expect("16"));
                assert!(
                    is_teredo(&src) || Some(src) == self.cfg.icmp_source,
                    "native output from {src}"
                );
                assert_eq!(kind == Kind::Icmpv6Error, Some(src) == self.cfg.icmp_source);
            }
            Output::Upnp(r) => panic!("a relay asks no UPnP gateway: {r:?}"),
        }
    }

    fn check_udp(&mut self, to: SocketAddrV4, len: usize, kind: Kind) {
        assert!(is_ipv4_global_unicast(*to.ip()), "UDP output to {to}");
        let p = TeredoPacket::parse(&self.buf[..len]).expect("UDP output re-parses");
        // A bubble the relay made is bubble-shaped; `Data` may be too: a native host can send
        // an empty packet with no next header, and the relay forwards it as the data it is.
        assert!(!kind.is_bubble() || p.is_bubble(), "{kind:?}");
        assert!(
            matches!(kind, Kind::Data | Kind::Bubble | Kind::IndirectBubble),
            "{kind:?}"
        );
        assert!(p.auth.is_none() && p.origin.is_none());
        let dst = p.dst();
        let t = TeredoAddr::from_ipv6(&dst).expect("UDP output to a Teredo address");
        if kind.is_bubble() && to == SocketAddrV4::new(t.server, TEREDO_PORT) {
            // An indirect bubble: remember it for answer_bubble.
            if let Some(k) = (0..CLIENTS).find(|&k| client_addr(k).to_ipv6() == dst) {
                let nonce = Trailers::new(p.trailers).find_map(|t| t.nonce());
                self.last_bubble[k] = Some((p.src(), nonce));
            }
        } else if kind == Kind::Data {
            let peer = self.relay.peer(&dst).expect("data goes to a known peer");
            assert_eq!(peer.mapping, to, "data goes to the peer's mapping");
        }
    }

    fn check(&self) {
        let g = self.relay.gauges();
        assert!(g.peers <= self.cfg.max_peers, "{g:?}");
        assert!(g.queued_bytes <= self.cfg.global_queue_bytes, "{g:?}");
        assert!(
            g.queued_packets <= g.peers * self.cfg.queue_packets_per_peer,
            "{g:?}"
        );
        assert!(g.pending_outputs == 0, "drained");
        assert_eq!(g.peers, g.peers_trusted + g.peers_untrusted);
        if let Err(e) = check_invariants(&self.relay) {
            panic!("relay invariant: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::encode;

    /// The operations reach the relay's deep states: a native packet to a client is queued
    /// behind a bubble, the client's answer makes it trusted and the packet is delivered,
    /// then the client's own packet goes native. Without this the fuzzer would only ever
    /// exercise the drop paths.
    #[test]
    fn harness_reaches_trust_and_forwarding() {
        for side in [Side::Udp, Side::Ipv6] {
            let mut v = vec![14, 0xff, 0];
            let mut pkt = vec![0u8; IPV6_HEADER_LEN + 8];
            pkt[6] = 58;
            pkt[7] = 64;
            v.extend_from_slice(&[3, 0]);
            encode::chunk(&mut v, &pkt);
            v.extend_from_slice(&[5, 0, 1]);
            v.extend_from_slice(&[4, 0, 5]);
            encode::chunk(&mut v, &pkt);
            let c = run(&v, side);
            assert_eq!(c.bubbles_sent, 1, "{c:?}");
            assert_eq!(c.flushed, 1, "{c:?}");
            assert_eq!(c.forwarded, 1, "{c:?}");
        }
    }
}
