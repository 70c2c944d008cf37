//! The client's UDP side: datagrams from its server, from peers and from anyone, in every
//! state, with a real [`Server`] in the loop so that sequences reach the qualified state.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Instant;

use crate::addr::{TeredoAddr, ALL_ROUTERS, TEREDO_PORT};
use crate::client::{Client, ClientConfig, Profile, State};
use crate::io::{Kind, Local, Output};
use crate::server::{Server, ServerConfig};
use crate::wire::ipv6::{finish_icmpv6, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST};
use crate::wire::packet::{IPV6_HEADER_LEN, MAX_UDP_PAYLOAD, NEXT_HEADER_ICMPV6};
use crate::wire::TeredoPacket;

use super::{advance, assert_complete_ipv6, fix_payload_len, patch_addr, FuzzRng, Input, MAX_OPS};

/// The server (the lab's primary address; secondary = primary + 1).
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The client's socket: a global address, no NAT in front.
const LOCAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 40_000);
/// A native IPv6 host.
const NATIVE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// Teredo peers known to the harness.
const PEERS: usize = 4;
/// Datagrams for the server waiting for a pump operation.
const MAX_PENDING: usize = 64;

fn peer(k: usize) -> TeredoAddr {
    TeredoAddr {
        server: SERVER,
        flags: 0,
        mapped: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 50 + k as u8), 50_000),
    }
}

/// Input: a config byte (profile, peer-table cap), then operations `[op: u8][args]`;
/// `op % 8`: 0 pump (the client's datagrams to the server go through a real [`Server`] and
/// its answers come back), 1 raw datagram `[from: 6][len: u16][bytes]`, 2 datagram from
/// the server `[flags][len][bytes]` (bit 0 secondary address, bit 1 IPv6 destination
/// patched to the client's address), 3 datagram from Teredo peer `k` `[k][flags][len][bytes]`
/// (source, destination and length patched), 4 application packet `[k][flags][len][bytes]`
/// to peer `k` or a native host (bit 0), 5 answer the client's last datagram to a non-server
/// (swapped addresses, echo request turned into a reply) `[flags][from: 6]`, 6 clock step,
/// 7 raw datagram from the server's primary address.
///
/// Checks after every operation: every datagram the client sends parses as a Teredo packet;
/// every packet it delivers is a complete IPv6 packet to its own address; the peer table
/// stays under its cap; a qualified client has an address and a mapping.
pub fn client_udp(data: &[u8]) {
    let _ = run(data);
}

/// What a run reached, for the harness's own tests.
#[derive(Debug, Default)]
struct Reached {
    qualified: bool,
    delivered: usize,
}

fn run(data: &[u8]) -> Reached {
    let mut input = Input::new(data);
    let c = input.u8();
    let profile = Profile::ALL[usize::from(c) % Profile::ALL.len()];
    let mut cfg = ClientConfig::profile(profile, SERVER);
    cfg.max_peers = 1 + usize::from(c >> 4 & 3);
    cfg.queue_packets_per_peer = 1 + usize::from(c >> 6);
    let mut h = Harness {
        now: super::epoch(),
        server: Server::new(ServerConfig::new(SERVER)),
        client: None,
        pending: Vec::new(),
        last_other: None,
        buf: vec![0u8; MAX_UDP_PAYLOAD],
        max_peers: cfg.max_peers,
        reached: Reached::default(),
    };
    h.client = Some(Client::new(cfg, FuzzRng::new(u64::from(c)), LOCAL, h.now));
    h.drain();
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 8 {
            0 => h.pump(),
            1 => {
                let from = input.addr();
                let dg = input.chunk();
                h.deliver(from, dg);
            }
            2 => {
                let flags = input.u8();
                let mut dg = input.chunk().to_vec();
                let ip = if flags & 1 == 0 {
                    SERVER
                } else {
                    h.server.address(Local::Secondary)
                };
                if flags & 2 != 0 {
                    if let Some(a) = h.client().address() {
                        let at = ipv6_start(&dg);
                        patch_addr(&mut dg, at + 24, a);
                    }
                }
                h.deliver(SocketAddrV4::new(ip, TEREDO_PORT), &dg);
            }
            3 => {
                let k = usize::from(input.u8()) % PEERS;
                let flags = input.u8();
                let mut dg = input.chunk().to_vec();
                if flags & 1 != 0 {
                    fix_payload_len(&mut dg);
                }
                patch_addr(&mut dg, 8, peer(k).to_ipv6());
                if let Some(a) = h.client().address() {
                    patch_addr(&mut dg, 24, a);
                }
                h.deliver(peer(k).mapped, &dg);
            }
            4 => {
                let k = usize::from(input.u8()) % PEERS;
                let flags = input.u8();
                let mut pkt = input.chunk().to_vec();
                fix_payload_len(&mut pkt);
                if let Some(a) = h.client().address() {
                    patch_addr(&mut pkt, 8, a);
                }
                let dst = if flags & 1 == 0 {
                    peer(k).to_ipv6()
                } else {
                    NATIVE
                };
                patch_addr(&mut pkt, 24, dst);
                let now = h.now;
                let _ = h.client_mut().handle_ipv6(now, &pkt);
            }
            5 => {
                let flags = input.u8();
                let other = input.addr();
                h.answer_last(flags, other);
            }
            6 => {
                let step = input.step();
                h.now = advance(h.now, step);
                h.run_timers();
            }
            _ => {
                let dg = input.chunk();
                h.deliver(SocketAddrV4::new(SERVER, TEREDO_PORT), dg);
            }
        }
        h.drain();
        h.check();
        h.reached.qualified |= h.client().state() == State::Qualified;
    }
    h.reached
}

struct Harness {
    now: Instant,
    server: Server,
    client: Option<Client>,
    /// Datagrams the client sent to a server address, not yet pumped.
    pending: Vec<(SocketAddrV4, Vec<u8>)>,
    /// The client's last datagram to someone other than its server.
    last_other: Option<(SocketAddrV4, Vec<u8>)>,
    buf: Vec<u8>,
    max_peers: usize,
    reached: Reached,
}

/// Where the IPv6 header starts, skipping an auth header and an origin indication.
fn ipv6_start(dg: &[u8]) -> usize {
    let mut at = 0;
    if dg.len() >= 4 && dg[..2] == [0, 1] {
        at += 13 + usize::from(dg[2]) + usize::from(dg[3]);
    }
    if dg.len() >= at + 2 && dg[at..at + 2] == [0, 0] {
        at += 8;
    }
    at
}

impl Harness {
    fn client(&self) -> &Client {
        self.client.as_ref().expect("created")
    }

    fn client_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("created")
    }

    fn deliver(&mut self, from: SocketAddrV4, dg: &[u8]) {
        let now = self.now;
        let _ = self.client_mut().handle_udp(now, Local::Primary, from, dg);
    }

    fn is_server(&self, a: SocketAddrV4) -> bool {
        a.port() == TEREDO_PORT
            && (*a.ip() == SERVER || *a.ip() == self.server.address(Local::Secondary))
    }

    /// The client's datagrams to its server through the real server, and the answers back.
    fn pump(&mut self) {
        for _ in 0..4 {
            let pending = std::mem::take(&mut self.pending);
            if pending.is_empty() {
                return;
            }
            for (to, dg) in pending {
                let local = if *to.ip() == SERVER {
                    Local::Primary
                } else {
                    Local::Secondary
                };
                if self.server.handle_udp(self.now, local, LOCAL, &dg).is_err() {
                    continue;
                }
                if let Some(Output::Udp {
                    local: from_local,
                    to,
                    len,
                    ..
                }) = self.server.poll_output(&mut self.buf)
                {
                    if to == LOCAL {
                        let from = SocketAddrV4::new(self.server.address(from_local), TEREDO_PORT);
                        let answer = self.buf[..len].to_vec();
                        self.deliver(from, &answer);
                    }
                }
            }
            self.drain();
        }
    }

    /// Answers the client's last datagram to a non-server: addresses swapped, an echo
    /// request turned into a reply (checksum fixed). From its destination (flag bit 0 clear)
    /// or from `other` (a relay answering for a native host).
    fn answer_last(&mut self, flags: u8, other: SocketAddrV4) {
        let Some((to, dg)) = self.last_other.clone() else {
            return;
        };
        let Ok(p) = TeredoPacket::parse(&dg) else {
            return;
        };
        let mut pkt = p.ipv6.to_vec();
        let (src, dst) = (p.src(), p.dst());
        patch_addr(&mut pkt, 8, dst);
        patch_addr(&mut pkt, 24, src);
        if pkt[6] == NEXT_HEADER_ICMPV6 && pkt.get(IPV6_HEADER_LEN) == Some(&ICMPV6_ECHO_REQUEST) {
            pkt[IPV6_HEADER_LEN] = ICMPV6_ECHO_REPLY;
            finish_icmpv6(&mut pkt);
        }
        let from = if flags & 1 == 0 { to } else { other };
        self.deliver(from, &pkt);
    }

    fn run_timers(&mut self) {
        for _ in 0..64 {
            match self.client().poll_timeout() {
                Some(t) if t <= self.now => {
                    let now = self.now;
                    self.client_mut().handle_timeout(now);
                    self.drain();
                }
                _ => break,
            }
        }
    }

    fn drain(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        for _ in 0..100_000 {
            match self.client_mut().poll_output(&mut buf) {
                Some(Output::Udp {
                    local,
                    to,
                    len,
                    kind,
                    ..
                }) => {
                    assert_eq!(local, Local::Primary, "a client has one socket");
                    let dg = &buf[..len];
                    let p = TeredoPacket::parse(dg).expect("client datagram re-parses");
                    assert!(
                        p.origin.is_none(),
                        "client datagrams carry no origin indication"
                    );
                    assert_eq!(
                        p.dst() == ALL_ROUTERS,
                        kind == Kind::RouterSolicitation,
                        "kind {kind:?} of a datagram to {}",
                        p.dst()
                    );
                    // A bubble the client made is bubble-shaped; `Data` may be too: the host
                    // can send an empty packet with no next header, which goes out as data.
                    assert!(!kind.is_bubble() || p.is_bubble(), "kind {kind:?}");
                    if kind == Kind::RouterSolicitation {
                        assert!(self.is_server(to), "RS sent to {to}");
                    }
                    if self.is_server(to) {
                        if self.pending.len() < MAX_PENDING {
                            self.pending.push((to, dg.to_vec()));
                        }
                    } else {
                        self.last_other = Some((to, dg.to_vec()));
                    }
                }
                Some(Output::Ipv6 { len, kind, .. }) => {
                    assert_eq!(kind, Kind::Data, "the client delivers data");
                    assert_complete_ipv6(&buf[..len], "delivered packet");
                    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&buf[24..40]).expect("16"));
                    assert_eq!(Some(dst), self.client().address(), "delivered to us");
                    self.reached.delivered += 1;
                }
                // No IGD here: the request stays unanswered, as with a driver that cannot
                // reach one.
                Some(Output::Upnp(_)) => {}
                None => break,
            }
        }
        self.buf = buf;
        for _ in 0..100_000 {
            if self.client_mut().poll_event().is_none() {
                break;
            }
        }
    }

    fn check(&self) {
        let c = self.client();
        assert!(c.peer_count() <= self.max_peers, "peer table over its cap");
        if c.state() == State::Qualified {
            assert!(
                c.address().is_some() && c.mapping().is_some(),
                "qualified without address"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::encode;

    /// The operations reach the client's deep states: every profile qualifies through the
    /// server in the loop, and a bubble then a packet from a Teredo peer are delivered.
    #[test]
    fn harness_reaches_qualification_and_delivery() {
        for (i, p) in Profile::ALL.iter().enumerate() {
            let mut v = vec![i as u8, 0];
            let mut bubble = vec![0u8; IPV6_HEADER_LEN];
            bubble[6] = 59;
            v.extend_from_slice(&[3, 0, 1]);
            encode::chunk(&mut v, &bubble);
            let mut data = vec![0u8; IPV6_HEADER_LEN + 8];
            data[6] = 59;
            v.extend_from_slice(&[3, 0, 1]);
            encode::chunk(&mut v, &data);
            let r = run(&v);
            assert!(r.qualified, "{p:?}: {r:?}");
            assert_eq!(r.delivered, 1, "{p:?}: {r:?}");
        }
    }
}
