//! Test scaffolding: a minimal NAT ([`Nat`]), one client qualifying through the real
//! server ([`Lab`]), and clients, the server, a relay and a native echo host exchanging
//! datagrams in memory ([`Net`]), on virtual time. Everything the client tests know about
//! the server, the relay and the NAT goes through this file, so that the shared NAT and
//! simulation crate can replace it with a small edit.

use std::collections::HashSet;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::addr::server_link_local;
use crate::addr::{TeredoAddr, TEREDO_PORT};
use crate::client::*;
use crate::io::{Kind, Local, Output};
use crate::server::{Server, ServerConfig};
use crate::wire::auth::Auth;
use crate::wire::ipv6::Echo;
use crate::wire::ndp::RaParams;
use crate::wire::packet::{ipv6_dst, ipv6_src, MAX_UDP_PAYLOAD};
use crate::wire::TeredoPacket;
use crate::DropReason;

use std::collections::VecDeque as Fifo;

use crate::addr::is_teredo;
pub(super) use crate::relay::{Acceptance, TrustPolicy};
use crate::relay::{Handled as RelayHandled, Relay, RelayConfig};

/// The relay, on the IPv4 Internet (port 3545, as in TEREDO.md §14).
pub(super) const RELAY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 250), 3545);
/// The native echo host.
pub(super) const H: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
/// The second client's NAT and inside address.
pub(super) const EXT_Y: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 6), 41000);
pub(super) const PRIVATE_Y: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 2, 10), 6000);
pub(super) const PING_ID: u16 = 0x5157;

pub(super) const P: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub(super) const S: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// A client behind a NAT.
pub(super) const PRIVATE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 10), 5000);
/// A client with a global address (no NAT).
pub(super) const GLOBAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 77), 5000);
/// The NAT's external address.
pub(super) const EXT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 40000);

#[allow(clippy::disallowed_methods)]
pub(super) fn t0() -> Instant {
    Instant::now()
}

pub(super) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// How the fake NAT picks the external address for a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mapping {
    /// No translation.
    Identity,
    /// Endpoint-independent: one external address for everything.
    Fixed(SocketAddrV4),
    /// A different port per destination IPv4.
    SymmetricPort(SocketAddrV4),
    /// A different external IPv4 per destination IPv4.
    SymmetricAddress(SocketAddrV4),
}

/// A minimal NAT: mapping per [`Mapping`], and optionally address-restricted filtering
/// (inbound only from an IPv4 the mapping has sent to).
pub(super) struct Nat {
    pub(super) mapping: Mapping,
    pub(super) restricted: bool,
    pub(super) sent: HashSet<(SocketAddrV4, Ipv4Addr)>,
}

impl Nat {
    pub(super) fn new(mapping: Mapping, restricted: bool) -> Self {
        Self {
            mapping,
            restricted,
            sent: HashSet::new(),
        }
    }

    /// A full-cone NAT with one external address.
    pub(super) fn cone(ext: SocketAddrV4) -> Self {
        Self::new(Mapping::Fixed(ext), false)
    }

    /// An address-restricted NAT with one external address.
    pub(super) fn restricted(ext: SocketAddrV4) -> Self {
        Self::new(Mapping::Fixed(ext), true)
    }

    /// The NAT rebinds: from now on everything leaves from `ext` (filtering state is kept).
    pub(super) fn rebind(&mut self, ext: SocketAddrV4) {
        self.mapping = Mapping::Fixed(ext);
    }

    pub(super) fn outbound(&mut self, local: SocketAddrV4, to: SocketAddrV4) -> SocketAddrV4 {
        let d = to.ip().octets()[3];
        let ext = match self.mapping {
            Mapping::Identity => local,
            Mapping::Fixed(e) => e,
            Mapping::SymmetricPort(e) => SocketAddrV4::new(*e.ip(), e.port() + u16::from(d)),
            Mapping::SymmetricAddress(e) => {
                let o = e.ip().octets();
                SocketAddrV4::new(Ipv4Addr::new(o[0], o[1], o[2], o[3] + d), e.port())
            }
        };
        self.sent.insert((ext, *to.ip()));
        ext
    }

    pub(super) fn inbound(&self, from: SocketAddrV4, to: SocketAddrV4) -> bool {
        if !self.sent.iter().any(|(e, _)| *e == to) {
            return false;
        }
        !self.restricted || self.sent.contains(&(to, *from.ip()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NatKind {
    NoNat,
    Cone,
    Restricted,
    SymPort,
    SymAddr,
}

pub(super) const KINDS: [NatKind; 5] = [
    NatKind::NoNat,
    NatKind::Cone,
    NatKind::Restricted,
    NatKind::SymPort,
    NatKind::SymAddr,
];

pub(super) fn nat_for(kind: NatKind) -> (Nat, SocketAddrV4) {
    match kind {
        NatKind::NoNat => (Nat::new(Mapping::Identity, false), GLOBAL),
        NatKind::Cone => (Nat::new(Mapping::Fixed(EXT), false), PRIVATE),
        NatKind::Restricted => (Nat::new(Mapping::Fixed(EXT), true), PRIVATE),
        NatKind::SymPort => (Nat::new(Mapping::SymmetricPort(EXT), true), PRIVATE),
        NatKind::SymAddr => (Nat::new(Mapping::SymmetricAddress(EXT), true), PRIVATE),
    }
}

/// One client, one NAT, one real [`Server`], in memory, on virtual time.
pub(super) struct Lab {
    pub(super) client: Client,
    pub(super) server: Server,
    pub(super) nat: Nat,
    pub(super) t0: Instant,
    pub(super) now: Instant,
    pub(super) server_up: bool,
    /// (time since t0, destination, RS source link-local) of every RS sent.
    pub(super) rs_log: Vec<(Duration, SocketAddrV4, Ipv6Addr)>,
    pub(super) drops: Vec<DropReason>,
    pub(super) events: Vec<(Duration, Event)>,
    /// Times of the local discovery bubbles sent.
    pub(super) discovery_log: Vec<Duration>,
}

impl Lab {
    pub(super) fn new(cfg: ClientConfig, kind: NatKind, seed: u64) -> Self {
        Self::with_server(cfg, kind, seed, true)
    }

    pub(super) fn with_server(
        cfg: ClientConfig,
        kind: NatKind,
        seed: u64,
        server_up: bool,
    ) -> Self {
        let (nat, local) = nat_for(kind);
        let t0 = t0();
        let client = Client::new(cfg, ChaCha8Rng::seed_from_u64(seed), local, t0);
        let mut lab = Self {
            client,
            server: Server::new(ServerConfig::new(P)),
            nat,
            t0,
            now: t0,
            server_up,
            rs_log: Vec::new(),
            drops: Vec::new(),
            events: Vec::new(),
            discovery_log: Vec::new(),
        };
        lab.pump();
        lab
    }

    pub(super) fn profile(p: Profile, kind: NatKind) -> Self {
        Self::new(ClientConfig::profile(p, P), kind, 7)
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Moves datagrams until nothing is left to send.
    pub(super) fn pump(&mut self) {
        let mut buf = [0u8; 1500];
        let mut sbuf = vec![0u8; MAX_UDP_PAYLOAD];
        while let Some(t) = next_udp(&mut self.client, &mut buf) {
            // Alone on its link: local discovery bubbles reach nobody (logged).
            if *t.to.ip() == DISCOVERY_GROUP {
                assert_eq!(t.kind, Kind::DiscoveryBubble);
                self.discovery_log.push(self.elapsed());
                continue;
            }
            let pkt = TeredoPacket::parse(&buf[..t.len]).expect("RS parses");
            self.rs_log.push((self.elapsed(), t.to, pkt.src()));
            let src = self.nat.outbound(self.client.local(), t.to);
            if !self.server_up || t.to.port() != TEREDO_PORT {
                continue;
            }
            let local = match *t.to.ip() {
                ip if ip == P => Local::Primary,
                ip if ip == S => Local::Secondary,
                _ => continue,
            };
            if self
                .server
                .handle_udp(self.now, local, src, &buf[..t.len])
                .is_err()
            {
                continue;
            }
            while let Some(out) = self.server.poll_output(&mut sbuf) {
                let Output::Udp {
                    local: from_local,
                    to,
                    len,
                    ..
                } = out
                else {
                    continue;
                };
                let from = SocketAddrV4::new(self.server.address(from_local), TEREDO_PORT);
                if self.nat.inbound(from, to) {
                    if let Err(r) =
                        self.client
                            .handle_udp(self.now, Local::Primary, from, &sbuf[..len])
                    {
                        self.drops.push(r);
                    }
                }
            }
        }
        while let Some(e) = self.client.poll_event() {
            self.events.push((self.elapsed(), e));
        }
    }

    /// Runs timers for `d` of virtual time, jumping from one `poll_timeout` to the next.
    pub(super) fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.pump();
        let mut guard = 0;
        while let Some(t) = self.client.poll_timeout() {
            if t > end {
                break;
            }
            guard += 1;
            assert!(guard < 100_000, "timer loop does not advance");
            self.now = self.now.max(t);
            self.client.handle_timeout(self.now);
            self.pump();
        }
        self.now = end;
    }

    pub(super) fn addr(&self) -> TeredoAddr {
        TeredoAddr::from_ipv6(&self.client.address().expect("qualified")).unwrap()
    }

    pub(super) fn rs_times(&self) -> Vec<u64> {
        self.rs_log.iter().map(|(t, _, _)| t.as_secs()).collect()
    }

    pub(super) fn qualified_events(&self) -> Vec<(Ipv6Addr, NatType)> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Qualified { address, nat } => Some((*address, *nat)),
                _ => None,
            })
            .collect()
    }
}

impl Nat {
    /// Whether `to` is this NAT's external address (or the client's own without NAT).
    pub(super) fn owns(&self, local: SocketAddrV4, to: SocketAddrV4) -> bool {
        match self.mapping {
            Mapping::Identity => local == to,
            _ => self.sent.iter().any(|(e, _)| *e == to),
        }
    }
}

/// The echo reply a host's stack would send to `pkt`, if it is an echo request.
pub(super) fn echo_reply_for(pkt: &[u8]) -> Option<Vec<u8>> {
    let e = Echo::parse(pkt).ok().filter(|e| !e.reply)?;
    let mut b = vec![0u8; pkt.len()];
    let n = Echo { reply: true, ..e }
        .emit(&mut b, ipv6_dst(pkt), ipv6_src(pkt), 64)
        .ok()?;
    b.truncate(n);
    Some(b)
}

pub(super) fn echo_request(src: Ipv6Addr, dst: Ipv6Addr, seq: u16) -> Vec<u8> {
    let mut b = vec![0u8; 80];
    let n = Echo {
        reply: false,
        id: PING_ID,
        seq,
        data: &[0xab; 32],
    }
    .emit(&mut b, src, dst, 64)
    .unwrap();
    b.truncate(n);
    b
}

pub(super) struct Host {
    pub(super) client: Client,
    pub(super) nat: Nat,
    /// Packets delivered to the application.
    pub(super) inbox: Vec<Vec<u8>>,
    /// Answer echo requests, as a host's stack does.
    pub(super) echo_responder: bool,
    pub(super) drops: Vec<DropReason>,
}

/// Clients behind their NATs, the server, a relay routed 2001::/32 from the native side,
/// and the echo host H, exchanging datagrams in memory with zero latency.
pub(super) struct Net {
    pub(super) t0: Instant,
    pub(super) now: Instant,
    pub(super) server: Server,
    pub(super) relay: Relay,
    pub(super) hosts: Vec<Host>,
    pub(super) wire: Fifo<(SocketAddrV4, SocketAddrV4, Vec<u8>)>,
    pub(super) native: Fifo<Vec<u8>>,
    /// Every datagram on the IPv4 Internet: (time, from, to, payload).
    pub(super) log: Vec<(Duration, SocketAddrV4, SocketAddrV4, Vec<u8>)>,
    pub(super) relay_accepts: Vec<Acceptance>,
    pub(super) relay_drops: Vec<DropReason>,
    /// Datagrams a NAT filtered.
    pub(super) filtered: usize,
    pub(super) h_up: bool,
}

impl Net {
    pub(super) fn new(trust: TrustPolicy) -> Self {
        let t0 = t0();
        let cfg = RelayConfig {
            trust,
            icmp_source: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20)),
            ..RelayConfig::default()
        };
        Self {
            t0,
            now: t0,
            server: Server::new(ServerConfig::new(P)),
            relay: Relay::new(cfg, ChaCha8Rng::seed_from_u64(99), t0),
            hosts: Vec::new(),
            wire: Fifo::new(),
            native: Fifo::new(),
            log: Vec::new(),
            relay_accepts: Vec::new(),
            relay_drops: Vec::new(),
            filtered: 0,
            h_up: true,
        }
    }

    pub(super) fn add_host(&mut self, cfg: ClientConfig, nat: Nat, local: SocketAddrV4) -> usize {
        let seed = 11 + self.hosts.len() as u64;
        let client = Client::new(cfg, ChaCha8Rng::seed_from_u64(seed), local, self.now);
        self.hosts.push(Host {
            client,
            nat,
            inbox: Vec::new(),
            echo_responder: true,
            drops: Vec::new(),
        });
        self.hosts.len() - 1
    }

    pub(super) fn add(&mut self, p: Profile, kind: NatKind) -> usize {
        let (nat, local) = nat_for(kind);
        self.add_host(ClientConfig::profile(p, P), nat, local)
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    pub(super) fn client(&self, i: usize) -> &Client {
        &self.hosts[i].client
    }

    pub(super) fn addr(&self, i: usize) -> Ipv6Addr {
        self.client(i).address().expect("qualified")
    }

    pub(super) fn send(&mut self, from: SocketAddrV4, to: SocketAddrV4, data: Vec<u8>) {
        self.log.push((self.elapsed(), from, to, data.clone()));
        self.wire.push_back((from, to, data));
    }

    pub(super) fn arrive(&mut self, from: SocketAddrV4, to: SocketAddrV4, data: &[u8]) {
        let now = self.now;
        let local = match *to.ip() {
            ip if ip == P && to.port() == TEREDO_PORT => Some(Local::Primary),
            ip if ip == S && to.port() == TEREDO_PORT => Some(Local::Secondary),
            _ => None,
        };
        if let Some(local) = local {
            if self.server.handle_udp(now, local, from, data).is_ok() {
                let mut b = vec![0u8; MAX_UDP_PAYLOAD];
                while let Some(out) = self.server.poll_output(&mut b) {
                    match out {
                        Output::Udp {
                            local: from_local,
                            to,
                            len,
                            ..
                        } => {
                            let from =
                                SocketAddrV4::new(self.server.address(from_local), TEREDO_PORT);
                            self.send(from, to, b[..len].to_vec());
                        }
                        Output::Ipv6 { len, .. } => self.native.push_back(b[..len].to_vec()),
                        Output::Upnp(r) => panic!("a server asks no UPnP gateway: {r:?}"),
                    }
                }
            }
            return;
        }
        if to == RELAY {
            let r = self.relay.handle_udp(now, Local::Primary, from, data);
            if let Some(ip) = r.as_ref().ok().and_then(RelayHandled::in_place) {
                self.native.push_back(ip.bytes(data).to_vec());
            }
            match r {
                Ok(RelayHandled::Bubble { via, .. } | RelayHandled::Forwarded { via, .. }) => {
                    self.relay_accepts.push(via);
                }
                Ok(_) => {}
                Err(r) => self.relay_drops.push(r),
            }
            return;
        }
        for h in &mut self.hosts {
            if h.nat.owns(h.client.local(), to) {
                if h.nat.inbound(from, to) {
                    if let Err(r) = h.client.handle_udp(now, Local::Primary, from, data) {
                        h.drops.push(r);
                    }
                } else {
                    self.filtered += 1;
                }
                return;
            }
        }
    }

    pub(super) fn native_arrive(&mut self, p: &[u8]) {
        let dst = ipv6_dst(p);
        if dst == H {
            if let Some(r) = echo_reply_for(p).filter(|_| self.h_up) {
                self.native.push_back(r);
            }
        } else if is_teredo(&dst) {
            if let Ok(RelayHandled::Encapsulated {
                to,
                in_place: Some(_),
            }) = self.relay.handle_ipv6(self.now, p)
            {
                self.send(RELAY, to, p.to_vec());
            }
        }
    }

    /// Moves everything until the network is quiet.
    pub(super) fn pump(&mut self) {
        let mut b = vec![0u8; MAX_UDP_PAYLOAD];
        for _ in 0..100_000 {
            let mut busy = false;
            for i in 0..self.hosts.len() {
                // Datagrams leave first, then the host answers what was delivered: what it
                // sends in answer leaves on the next round.
                let mut delivered = Vec::new();
                while let Some(o) = self.hosts[i].client.poll_output(&mut b) {
                    match o {
                        Output::Udp { to, len, .. } => {
                            let h = &mut self.hosts[i];
                            let ext = h.nat.outbound(h.client.local(), to);
                            self.send(ext, to, b[..len].to_vec());
                        }
                        Output::Ipv6 { len, .. } => delivered.push(b[..len].to_vec()),
                        // This network's NATs have no UPnP gateway: left unanswered.
                        Output::Upnp(_) => {}
                    }
                    busy = true;
                }
                for pkt in delivered {
                    let h = &mut self.hosts[i];
                    if let Some(r) = echo_reply_for(&pkt).filter(|_| h.echo_responder) {
                        let _ = h.client.handle_ipv6(self.now, &r);
                    }
                    h.inbox.push(pkt);
                }
            }
            while let Some(o) = self.relay.poll_output(&mut b) {
                match o {
                    Output::Udp { to, len, .. } => self.send(RELAY, to, b[..len].to_vec()),
                    Output::Ipv6 { len, .. } => self.native.push_back(b[..len].to_vec()),
                    Output::Upnp(r) => panic!("a relay asks no UPnP gateway: {r:?}"),
                }
                busy = true;
            }
            if let Some((from, to, data)) = self.wire.pop_front() {
                self.arrive(from, to, &data);
                busy = true;
            } else if let Some(p) = self.native.pop_front() {
                self.native_arrive(&p);
                busy = true;
            }
            if !busy {
                return;
            }
        }
        panic!("the network does not settle");
    }

    pub(super) fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.pump();
        for _ in 0..100_000 {
            let next = self
                .hosts
                .iter()
                .map(|h| h.client.poll_timeout())
                .fold(self.relay.poll_timeout(), earliest);
            let Some(t) = next.filter(|t| *t <= end) else {
                self.now = end;
                return;
            };
            self.now = self.now.max(t);
            let now = self.now;
            for h in &mut self.hosts {
                if h.client.poll_timeout().is_some_and(|t| t <= now) {
                    h.client.handle_timeout(now);
                }
            }
            if self.relay.poll_timeout().is_some_and(|t| t <= now) {
                self.relay.handle_timeout(now);
            }
            self.pump();
        }
        panic!("timers do not advance");
    }

    pub(super) fn ping(
        &mut self,
        i: usize,
        dst: Ipv6Addr,
        seq: u16,
    ) -> Result<Handled, DropReason> {
        let pkt = echo_request(self.addr(i), dst, seq);
        let r = self.hosts[i].client.handle_ipv6(self.now, &pkt);
        self.pump();
        r
    }

    /// Sequence numbers of the echo replies host `i` got from `from`.
    pub(super) fn replies(&self, i: usize, from: Ipv6Addr) -> Vec<u16> {
        self.hosts[i]
            .inbox
            .iter()
            .filter(|p| ipv6_src(p) == from)
            .filter_map(|p| Echo::parse(p).ok())
            .filter(|e| e.reply && e.id == PING_ID)
            .map(|e| e.seq)
            .collect()
    }

    /// `n` pings one second apart, then ten quiet seconds; the replies.
    pub(super) fn ping_run(&mut self, i: usize, dst: Ipv6Addr, n: u16) -> Vec<u16> {
        for seq in 0..n {
            let _ = self.ping(i, dst, seq);
            self.run_for(secs(1));
        }
        self.run_for(secs(10));
        self.replies(i, dst)
    }

    /// The datagrams logged since `mark`, as (from, to, parsed packet).
    pub(super) fn since(&self, mark: usize) -> Vec<(SocketAddrV4, SocketAddrV4, TeredoPacket<'_>)> {
        self.log[mark..]
            .iter()
            .map(|(_, f, t, d)| (*f, *t, TeredoPacket::parse(d).unwrap()))
            .collect()
    }
}

pub(super) fn qualified_net(trust: TrustPolicy, p: Profile, kind: NatKind) -> (Net, usize) {
    let mut net = Net::new(trust);
    let x = net.add(p, kind);
    net.run_for(secs(25));
    assert_eq!(net.client(x).state(), State::Qualified, "{p} {kind:?}");
    (net, x)
}

/// A client of `profile` whose first RS has been taken: (client, nonce, RS source).
pub(super) fn probing(profile: Profile) -> (Client, Instant, [u8; 8], Ipv6Addr) {
    let now = t0();
    let mut c = Client::new(
        ClientConfig::profile(profile, P),
        ChaCha8Rng::seed_from_u64(3),
        PRIVATE,
        now,
    );
    let mut buf = [0u8; MAX_RS_LEN];
    let t = next_udp(&mut c, &mut buf).unwrap();
    assert_eq!(t.to, SocketAddrV4::new(P, 3544));
    assert_eq!(t.kind, Kind::RouterSolicitation);
    let pkt = TeredoPacket::parse(&buf[..t.len]).unwrap();
    (c, now, pkt.auth.unwrap().nonce, pkt.src())
}

pub(super) fn ra(
    nonce: Option<[u8; 8]>,
    dst: Ipv6Addr,
    primary: Ipv4Addr,
    mtu: Option<u32>,
) -> Vec<u8> {
    let p = RaParams {
        auth: nonce.map(Auth::nonce_only),
        origin: EXT,
        src: server_link_local(P),
        dst,
        primary,
        mtu,
    };
    let mut buf = vec![0u8; 256];
    let n = p.emit(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// A datagram the client emitted: the fields of [`Output::Udp`] the tests look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sent {
    pub(super) to: SocketAddrV4,
    pub(super) len: usize,
    pub(super) kind: Kind,
}

/// The client's next output, which must be a datagram; `None` when there is none. A UPnP
/// request (win7 asks before qualifying) is skipped unanswered, as by a driver without an
/// IGD; `tests/upnp.rs` answers them.
pub(super) fn next_udp(c: &mut Client, buf: &mut [u8]) -> Option<Sent> {
    loop {
        match c.poll_output(buf)? {
            Output::Udp {
                local,
                to,
                len,
                kind,
            } => {
                // The primary socket, or an RFC 6081 random port (`tests/random_port.rs`).
                assert!(
                    matches!(local, Local::Primary | Local::Port(_)),
                    "a client sends from {local:?}"
                );
                return Some(Sent { to, len, kind });
            }
            Output::Upnp(_) => {}
            other => panic!("expected a datagram, got {other:?}"),
        }
    }
}

/// The client's next output, which must be a packet for the host: its length.
pub(super) fn next_ipv6(c: &mut Client, buf: &mut [u8]) -> Option<usize> {
    match c.poll_output(buf)? {
        Output::Ipv6 { len, kind } => {
            assert_eq!(kind, Kind::Data);
            Some(len)
        }
        other => panic!("expected a packet for the host, got {other:?}"),
    }
}
