//! Differential tests of the relay's XDP fast path against the sans-IO core.
//!
//! Every frame goes (a) through the path the program replaces: a model of the kernel's
//! receive step (IPv4/UDP checks up to the relay's socket, or IPv6 forwarding into the TUN:
//! hop limit − 1, time exceeded, packet too big), the core alone (`teredo::relay::Relay`),
//! then the kernel's forwarding step of what the core writes to the TUN (hop limit − 1 out
//! of the native interface) or its socket send; and (b) through the program
//! (`BPF_PROG_TEST_RUN` with a real ingress interface, so `bpf_fib_lookup` sees real routes
//! and neighbours in a namespace of the test's own), its passed frames, which must be
//! untouched, then through the same kernel model and a second core. The program's peer map
//! is filled the way the relay does it, from the second core's trust events. The output
//! bytes must be the same (the IPv6 packet; outer addresses, ports and valid checksums for
//! what goes to a client: the IPv4 ID, TTL and DF are the program's own), and so must the
//! counters: the program's forwards plus the second core's counters equal the lone core's.
//!
//! Needs root (BPF, namespaces) and a build with the program (clang, libbpf-dev); outside
//! CI it skips loudly without them, in CI it fails.

use std::ffi::CString;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use teredo::relay::{Event, Handled, Relay, RelayConfig};
use teredo::wire::auth::Auth;
use teredo::wire::ipv6::emit_bubble;
use teredo::wire::origin::OriginIndication;
use teredo::{DropReason, Local, Output, TeredoAddr};
use teredo_fastpath::{
    monotonic_ns, PeerEntry, RelayCounters, RelayFastPathConfig, RelayPassReason, XdpAction,
    XdpRelay,
};
use testkit::Netns;

const RELAY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3544);
const GW4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const INET_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const GW4_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0xfe];
const NAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xfe);
const NAT_MAC: [u8; 6] = [2, 0, 0, 0, 2, 1];
const GW6_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0xfe];
/// MTU of the native interface: IPv6 packets from clients longer than this get a packet
/// too big from the kernel (the program's route lookup says so).
const NAT_MTU: usize = 1600;
const TUN_MTU: usize = 1280;
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// A native host.
const H: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 1);
const H2: Ipv6Addr = Ipv6Addr::new(0x2606, 0x4700, 0, 0, 0, 0, 0, 0x1111);
const VALIDITY: Duration = Duration::from_secs(30);
/// Trusted, fresh.
const XMAP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 40000);
/// Trusted, fresh.
const WMAP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 11), 1024);
/// Trusted, but last heard from longer than the validity ago.
const SMAP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 12), 5000);
/// Known, untrusted: a bubble exchange runs.
const YMAP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 13), 6000);
/// Unknown.
const ZMAP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 14), 7000);
const ETH: usize = 14;
const UDP_AT: usize = ETH + 20;
const PAYLOAD_AT: usize = UDP_AT + 8;

fn teredo(mapped: SocketAddrV4) -> Ipv6Addr {
    TeredoAddr {
        server: SERVER,
        flags: 0,
        mapped,
    }
    .to_ipv6()
}

// ---- frames ----------------------------------------------------------------------------

/// An IPv6 packet with `payload_len` bytes of a pattern after the header (nobody looks at
/// the upper layer), a traffic class and flow label for the route lookup's flowinfo.
fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, next_header: u8, payload_len: usize) -> Vec<u8> {
    let mut v = vec![0u8; 40 + payload_len];
    v[..4].copy_from_slice(&[0x6a, 0xbc, 0xde, 0xf1]);
    v[4..6].copy_from_slice(&u16::try_from(payload_len).unwrap().to_be_bytes());
    v[6] = next_header;
    v[7] = hop;
    v[8..24].copy_from_slice(&src.octets());
    v[24..40].copy_from_slice(&dst.octets());
    for (i, b) in v[40..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    v
}

/// A client's datagram to `to` as it arrives on the Teredo side.
fn udp_to(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(GW4_MAC, INET_MAC)
        .ipv4(from.ip().octets(), to.ip().octets(), 64)
        .udp(from.port(), to.port())
        .write(&mut v, payload)
        .unwrap();
    v
}

fn udp(from: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    udp_to(from, RELAY, payload)
}

/// A native packet as it arrives on the native side.
fn native(ipv6: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ETH + ipv6.len());
    v.extend_from_slice(&NAT_MAC);
    v.extend_from_slice(&GW6_MAC);
    v.extend_from_slice(&[0x86, 0xdd]);
    v.extend_from_slice(ipv6);
    v
}

fn bubble(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut b = vec![0u8; 40];
    emit_bubble(&mut b, src, dst, 255).unwrap();
    b
}

/// One's complement sum of `b` as big-endian words, folded (not inverted).
fn csum(b: &[u8], mut s: u32) -> u16 {
    for w in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn pseudo(ip: &[u8], udp_len: usize) -> u32 {
    u32::from(csum(&ip[12..20], 17 + u32::try_from(udp_len).unwrap()))
}

/// Recomputes the IPv4 header checksum and, when the lengths allow, the UDP checksum of
/// an Ethernet/IPv4/UDP frame (after an edit). A zero UDP checksum stays zero.
fn repair(f: &mut [u8]) {
    if f.len() < ETH + 20 || f[12..14] != [8, 0] {
        return;
    }
    let hl = usize::from(f[ETH] & 0xf) * 4;
    if hl < 20 || f.len() < ETH + hl {
        return;
    }
    f[ETH + 10..ETH + 12].fill(0);
    let c = !csum(&f[ETH..ETH + hl], 0);
    f[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
    let u = ETH + hl;
    if f[ETH + 9] != 17 || f.len() < u + 8 {
        return;
    }
    let ulen = usize::from(u16::from_be_bytes([f[u + 4], f[u + 5]]));
    if ulen < 8 || f.len() < u + ulen || f[u + 6..u + 8] == [0, 0] {
        return;
    }
    f[u + 6..u + 8].fill(0);
    let p = pseudo(&f[ETH..], ulen);
    let c = !csum(&f[u..u + ulen], p);
    let c = if c == 0 { 0xffff } else { c };
    f[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
}

// ---- the kernel, as the slow path sees it ---------------------------------------------

/// What the kernel makes of a received frame.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KernelIn {
    /// A datagram for the relay's socket.
    Udp(SocketAddrV4, Vec<u8>),
    /// An IPv6 packet forwarded into the TUN (hop limit already decremented).
    Tun(Vec<u8>),
}

fn is_martian(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 0 || o[0] == 127 || a.is_multicast() || a.is_broadcast()
}

/// The kernel's receive step: the checks before a UDP socket sees a datagram, or the
/// forwarding of a native packet into the TUN (route 2001::/32, MTU 1280). Only what the
/// program could forward has to be modelled exactly; anything else it passes, and both
/// paths then see this same model.
fn kernel_receive(f: &[u8]) -> Result<KernelIn, &'static str> {
    if f.len() < ETH {
        return Err("runt");
    }
    match [f[12], f[13]] {
        [8, 0] => kernel_udp(&f[ETH..]),
        [0x86, 0xdd] => kernel_forward_to_tun(f),
        [0x81, 0] | [0x88, 0xa8] => Err("vlan_without_device"),
        _ => Err("not_ip"),
    }
}

fn kernel_udp(ip: &[u8]) -> Result<KernelIn, &'static str> {
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[0] & 0xf < 5 {
        return Err("ipv4_header");
    }
    let hl = usize::from(ip[0] & 0xf) * 4;
    if ip.len() < hl || csum(&ip[..hl], 0) != 0xffff {
        return Err("ipv4_checksum");
    }
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if tot < hl || tot > ip.len() {
        return Err("ipv4_length");
    }
    let ip = &ip[..tot];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    if is_martian(src) {
        return Err("martian_source");
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return Err("fragment_never_completed");
    }
    if ip[16..20] != RELAY.ip().octets() {
        return Err("not_local");
    }
    if ip[9] != 17 {
        return Err("not_udp");
    }
    let u = &ip[hl..];
    if u.len() < 8 {
        return Err("udp_truncated");
    }
    let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
    if ulen < 8 || ulen > u.len() {
        return Err("udp_length");
    }
    if u16::from_be_bytes([u[2], u[3]]) != RELAY.port() {
        return Err("port_closed");
    }
    let check = u16::from_be_bytes([u[6], u[7]]);
    // Valid, zero, or the pseudo-header sum a local sender's CHECKSUM_PARTIAL leaves.
    let p = pseudo(ip, ulen);
    if check != 0 && check != csum(&[], p) && csum(&u[..ulen], p) != 0xffff {
        return Err("udp_checksum");
    }
    let from = SocketAddrV4::new(src, u16::from_be_bytes([u[0], u[1]]));
    Ok(KernelIn::Udp(from, u[8..ulen].to_vec()))
}

fn ipv6_at(p: &[u8], at: usize) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&p[at..at + 16]).unwrap())
}

fn kernel_forward_to_tun(f: &[u8]) -> Result<KernelIn, &'static str> {
    let p = &f[ETH..];
    if p.len() < 40 || p[0] >> 4 != 6 {
        return Err("ipv6_header");
    }
    let len = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
    if len > p.len() {
        return Err("ipv6_truncated");
    }
    let (src, dst) = (ipv6_at(p, 8), ipv6_at(p, 24));
    if src.is_multicast() || src.to_ipv4_mapped().is_some() {
        return Err("ipv6_bad_source");
    }
    if !teredo::addr::is_teredo(&dst) {
        return Err("routed_elsewhere");
    }
    if f[0] & 1 != 0 {
        return Err("forward_not_to_this_host"); // ip6_forward: PACKET_HOST only
    }
    if p[7] <= 1 {
        return Err("time_exceeded");
    }
    if src.is_unspecified() || src.is_loopback() || teredo::addr::is_link_local(&src) {
        return Err("ipv6_forward_bad_source");
    }
    if len > TUN_MTU {
        return Err("packet_too_big");
    }
    let mut v = p[..len].to_vec();
    v[7] -= 1;
    Ok(KernelIn::Tun(v))
}

/// The kernel's forwarding of what the relay writes to the TUN, out of the native side.
fn kernel_forward_native(p: &[u8]) -> Result<Vec<u8>, &'static str> {
    if p[7] <= 1 {
        return Err("time_exceeded");
    }
    if ipv6_at(p, 24) == NAT6 {
        return Err("local_delivery");
    }
    if p.len() > NAT_MTU {
        return Err("packet_too_big");
    }
    let mut v = p.to_vec();
    v[7] -= 1;
    Ok(v)
}

/// What the slow path sent for a packet the core forwarded in place.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Sent {
    /// Out of the native interface (hop limit decremented).
    Native(Vec<u8>),
    /// From the relay's socket.
    Udp(SocketAddrV4, Vec<u8>),
}

/// Everything the slow path did with one frame.
#[derive(Debug, Default, PartialEq, Eq)]
struct Slow {
    kernel_drop: Option<&'static str>,
    result: Option<Result<Handled, DropReason>>,
    sent: Option<Result<Sent, &'static str>>,
    outputs: Vec<(Output, Vec<u8>)>,
    events: Vec<Event>,
}

fn slow(core: &mut Relay, now: Instant, frame: &[u8]) -> Slow {
    let mut s = Slow::default();
    let input = match kernel_receive(frame) {
        Ok(i) => i,
        Err(d) => {
            s.kernel_drop = Some(d);
            return s;
        }
    };
    let (r, data) = match &input {
        KernelIn::Udp(from, payload) => (
            core.handle_udp(now, Local::Primary, *from, payload),
            payload,
        ),
        KernelIn::Tun(p) => (core.handle_ipv6(now, p), p),
    };
    if let Some(ip) = r.as_ref().ok().and_then(Handled::in_place) {
        let bytes = ip.bytes(data);
        s.sent = Some(match ip.output {
            Output::Ipv6 { .. } => kernel_forward_native(bytes).map(Sent::Native),
            Output::Udp { to, .. } => Ok(Sent::Udp(to, bytes.to_vec())),
            _ => Err("unexpected in-place output"),
        });
    }
    s.result = Some(r);
    let mut buf = vec![0u8; 65_536];
    while let Some(o) = core.poll_output(&mut buf) {
        s.outputs.push((o, buf[..o.len()].to_vec()));
    }
    while let Some(e) = core.poll_event() {
        s.events.push(e);
    }
    s
}

// ---- the lab ---------------------------------------------------------------------------

/// The interface a frame arrives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Iface {
    /// The Teredo (IPv4) side, `inet0`.
    Inet,
    /// The native side, `nat0`.
    Nat,
}

/// A relay namespace: `inet0` (192.0.2.1/24, default route via 192.0.2.254) and `nat0`
/// (2001:db8:1::1/64, default route via 2001:db8:1::fe, MTU 1600), each one end of a veth
/// pair, permanent neighbour entries for both gateways, IPv6 forwarding on, IPv4 forwarding
/// on these two interfaces only.
fn topology() -> Netns {
    let ns = Netns::new("relay_differential", "relay").expect("namespace");
    let setup = || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        ns.disable_dad()?;
        ns.ip(&[
            "link",
            "add",
            "inet0",
            "address",
            &mac(INET_MAC),
            "type",
            "veth",
            "peer",
            "name",
            "inet0p",
        ])?;
        ns.ip(&[
            "link",
            "add",
            "nat0",
            "address",
            &mac(NAT_MAC),
            "mtu",
            &NAT_MTU.to_string(),
            "type",
            "veth",
            "peer",
            "name",
            "nat0p",
        ])?;
        for dev in ["inet0", "inet0p", "nat0", "nat0p"] {
            ns.link_up(dev)?;
        }
        ns.add_addr("inet0", &format!("{}/24", RELAY.ip()))?;
        ns.add_addr("nat0", &format!("{NAT6}/64"))?;
        ns.neigh_permanent("inet0", &GW4.to_string(), &mac(GW4_MAC))?;
        ns.neigh_permanent("nat0", &GW6.to_string(), &mac(GW6_MAC))?;
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &GW4.to_string(),
            "dev",
            "inet0",
        ])?;
        ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &GW6.to_string(),
            "dev",
            "nat0",
        ])?;
        // bpf_fib_lookup(AF_INET) wants IPv4 forwarding on the interface the native packet
        // came in on: only there (and on inet0 for the single-interface cases), as a relay
        // host needs it.
        ns.sysctl("net.ipv4.conf.nat0.forwarding", "1")?;
        ns.sysctl("net.ipv4.conf.inet0.forwarding", "1")?;
        ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        Ok(())
    };
    setup().unwrap_or_else(|e| panic!("relay namespace: {e:#}"));
    ns
}

fn mac(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

fn ifindex(name: &str) -> u32 {
    let c = CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name} in this namespace");
    i
}

fn fast_config() -> RelayFastPathConfig {
    RelayFastPathConfig {
        relay: RELAY,
        tun_mtu: TUN_MTU as u32,
        validity: VALIDITY,
        max_peers: 1024,
    }
}

/// The program loaded, or `None` (after a loud skip) where it cannot run outside CI.
fn load(cfg: &RelayFastPathConfig) -> Option<XdpRelay> {
    if !testkit::root_or_skip("relay fast path differential tests (BPF_PROG_TEST_RUN)") {
        return None;
    }
    match XdpRelay::load(cfg) {
        Ok(x) => Some(x),
        Err(e @ teredo_fastpath::Error::NotBuilt(_)) => {
            assert!(!testkit::in_ci(), "{e}; CI is set, and CI must never skip");
            eprintln!("\n*** SKIPPED: relay fast path differential tests: {e} ***");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn core_config() -> RelayConfig {
    RelayConfig {
        validity: VALIDITY,
        icmp_source: Some(NAT6),
        ..RelayConfig::default()
    }
}

/// Makes `mapping`'s peer trusted the way a client does: a native packet for it (queued,
/// indirect bubble to its server), then its direct bubble from its mapping.
fn trust(core: &mut Relay, at: Instant, mapping: SocketAddrV4) -> Vec<Event> {
    let peer = teredo(mapping);
    let r = core.handle_ipv6(at, &ipv6(H, peer, 64, 17, 8));
    assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
    let mut buf = vec![0u8; 65_536];
    let o = core.poll_output(&mut buf).expect("indirect bubble");
    assert!(
        matches!(o, Output::Udp { to, .. } if to == SocketAddrV4::new(SERVER, 3544)),
        "{o:?}"
    );
    let bubble_src = ipv6_at(&buf, 8);
    let r = core.handle_udp(at, Local::Primary, mapping, &bubble(peer, bubble_src));
    assert!(matches!(r, Ok(Handled::Bubble { flushed: 1, .. })), "{r:?}");
    while core.poll_output(&mut buf).is_some() {}
    std::iter::from_fn(|| core.poll_event()).collect()
}

/// Two cores in the same state (same seed, same inputs): X and W trusted at `now`, S trusted
/// 40 s before (expired), Y in a bubble exchange; and the events that state produced with
/// their times.
fn cores(t0: Instant, now: Instant) -> (Relay, Relay, Vec<(Instant, Event)>) {
    let mk = || Relay::new(core_config(), ChaCha8Rng::seed_from_u64(6081), t0);
    let (mut alone, mut behind) = (mk(), mk());
    let mut events = Vec::new();
    for (at, m) in [(t0, SMAP), (now, XMAP), (now, WMAP)] {
        trust(&mut alone, at, m);
        events.extend(trust(&mut behind, at, m).into_iter().map(|e| (at, e)));
    }
    let y = ipv6(H, teredo(YMAP), 64, 17, 8);
    for core in [&mut alone, &mut behind] {
        assert_eq!(
            core.handle_ipv6(now, &y),
            Ok(Handled::Queued { bubble_sent: true })
        );
        let mut buf = vec![0u8; 2048];
        while core.poll_output(&mut buf).is_some() {}
        while core.poll_event().is_some() {}
    }
    (alone, behind, events)
}

/// The relay's map update for a core event: trusted peers in (stamped `stamp`), gone ones
/// out.
fn apply(xdp: &mut XdpRelay, e: &Event, stamp: u64) {
    match *e {
        Event::PeerTrusted { peer, mapping, .. } => xdp
            .upsert_peer(
                peer,
                PeerEntry {
                    mapping,
                    last_rx_ns: stamp,
                    last_used_ns: stamp,
                },
            )
            .unwrap(),
        Event::PeerUnreachable { peer, .. }
        | Event::PeerExpired { peer, .. }
        | Event::PeerEvicted { peer, .. } => xdp.remove_peer(&peer).unwrap(),
        _ => {}
    }
}

/// What a hand-written case expects of the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Forward,
    Pass(RelayPassReason),
}

struct Case {
    name: String,
    frame: Vec<u8>,
    ingress: Iface,
    expect: Option<Expect>,
}

fn case(name: &str, frame: Vec<u8>, ingress: Iface, expect: Expect) -> Case {
    Case {
        name: name.to_owned(),
        frame,
        ingress,
        expect: Some(expect),
    }
}

/// What a run found.
#[derive(Debug, Default)]
struct Outcome {
    to_native: u64,
    to_teredo: u64,
}

/// Runs `cases` both ways in a fresh relay namespace and compares (see the module
/// documentation). `None` when skipped.
fn differential(cases: &[Case]) -> Option<Outcome> {
    let cfg = fast_config();
    let mut xdp = load(&cfg)?;
    let ns = topology();
    let out = ns
        .run_in(move || Ok(run_cases(&mut xdp, cases)))
        .unwrap_or_else(|e| panic!("{e:#}"));
    Some(out)
}

fn run_cases(xdp: &mut XdpRelay, cases: &[Case]) -> Outcome {
    let (inet, nat) = (ifindex("inet0"), ifindex("nat0"));
    #[allow(clippy::disallowed_methods)] // the cores' epoch: any instant will do
    let t0 = Instant::now();
    let now = t0 + Duration::from_secs(40);
    let (mut alone, mut behind, events) = cores(t0, now);
    let mono = monotonic_ns();
    for (at, e) in &events {
        let age = u64::try_from(now.duration_since(*at).as_nanos()).unwrap();
        apply(xdp, e, mono - age);
    }
    assert_eq!(xdp.peers().len(), 3, "X, W and S in the map");
    let before = xdp.counters().unwrap();
    for c in cases {
        let name = &c.name;
        let ingress = if c.ingress == Iface::Inet { inet } else { nat };
        let want = slow(&mut alone, now, &c.frame);
        let c0 = c.expect.map(|_| xdp.counters().unwrap());
        let (action, out) = xdp
            .test_run(&c.frame, ingress)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        match action {
            XdpAction::Pass => {
                assert_eq!(out, c.frame, "{name}: a passed frame must be untouched");
                let got = slow(&mut behind, now, &c.frame);
                assert_eq!(
                    got, want,
                    "{name}: the core behind the fast path did otherwise"
                );
                let stamp = monotonic_ns();
                for e in &got.events {
                    apply(xdp, e, stamp);
                }
            }
            XdpAction::Tx | XdpAction::REDIRECT => {
                check_forwarded(name, c, ingress, action, &out, &want, (inet, nat))
            }
            other => panic!("{name}: verdict {other:?}"),
        }
        if let (Some(e), Some(c0)) = (c.expect, c0) {
            let d = xdp.counters().unwrap().since(&c0);
            let got = if d.to_native + d.to_teredo == 1 {
                Expect::Forward
            } else {
                let r = RelayPassReason::ALL
                    .into_iter()
                    .find(|r| d.passed_for(*r) == 1)
                    .unwrap_or_else(|| panic!("{name}: not counted: {d:?}"));
                Expect::Pass(r)
            };
            assert_eq!(got, e, "{name}");
            assert_eq!(d.total(), 1, "{name}: counted once");
        }
    }
    let c = xdp.counters().unwrap().since(&before);
    assert_eq!(c.total(), cases.len() as u64, "every frame counted once");
    let mut fast = behind.counters().clone();
    fast.forwarded += c.to_native;
    fast.encapsulated += c.to_teredo;
    assert_eq!(
        &fast,
        alone.counters(),
        "counters: fast path + core vs core alone"
    );
    Outcome {
        to_native: c.to_native,
        to_teredo: c.to_teredo,
    }
}

/// A frame the program forwarded: the lone core must have forwarded it in place, with
/// nothing else to send and nothing to report, and the kernel must have sent it on; the
/// program's frame must carry the same bytes.
fn check_forwarded(
    name: &str,
    c: &Case,
    ingress: u32,
    action: XdpAction,
    out: &[u8],
    want: &Slow,
    (inet, nat): (u32, u32),
) {
    let _ = c;
    assert!(
        want.outputs.is_empty(),
        "{name}: the core also sent {:?}",
        want.outputs
    );
    assert!(
        want.events.is_empty(),
        "{name}: the core also reported {:?}",
        want.events
    );
    let sent = match &want.sent {
        Some(Ok(s)) => s,
        other => panic!(
            "{name}: forwarded by XDP, but the slow path did {:?} / {other:?} (kernel: {:?})",
            want.result, want.kernel_drop
        ),
    };
    match sent {
        Sent::Native(p) => {
            assert!(
                matches!(want.result, Some(Ok(Handled::Forwarded { .. }))),
                "{name}"
            );
            let expect = if ingress == nat {
                XdpAction::Tx
            } else {
                XdpAction::REDIRECT
            };
            assert_eq!(action, expect, "{name}: verdict");
            assert_eq!(&out[..6], &GW6_MAC, "{name}: destination MAC");
            assert_eq!(&out[6..12], &NAT_MAC, "{name}: source MAC");
            assert_eq!(&out[12..14], &[0x86, 0xdd], "{name}: ethertype");
            assert_eq!(
                &out[ETH..],
                &p[..],
                "{name}: IPv6 packet differs from the slow path's"
            );
        }
        Sent::Udp(to, payload) => {
            assert!(
                matches!(want.result, Some(Ok(Handled::Encapsulated { .. }))),
                "{name}"
            );
            let expect = if ingress == inet {
                XdpAction::Tx
            } else {
                XdpAction::REDIRECT
            };
            assert_eq!(action, expect, "{name}: verdict");
            assert_eq!(&out[..6], &GW4_MAC, "{name}: destination MAC");
            assert_eq!(&out[6..12], &INET_MAC, "{name}: source MAC");
            assert_eq!(&out[12..14], &[8, 0], "{name}: ethertype");
            assert_eq!(
                out.len(),
                PAYLOAD_AT + payload.len(),
                "{name}: frame length"
            );
            let ip = &out[ETH..UDP_AT];
            assert_eq!(ip[0], 0x45, "{name}: version, header length");
            assert_eq!(
                usize::from(u16::from_be_bytes([ip[2], ip[3]])),
                28 + payload.len(),
                "{name}: total length"
            );
            assert_eq!(
                u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff,
                0,
                "{name}: not a fragment"
            );
            assert_ne!(ip[8], 0, "{name}: TTL");
            assert_eq!(ip[9], 17, "{name}: protocol");
            assert_eq!(csum(ip, 0), 0xffff, "{name}: IPv4 header checksum");
            assert_eq!(&ip[12..16], &RELAY.ip().octets(), "{name}: source address");
            assert_eq!(
                &ip[16..20],
                &to.ip().octets(),
                "{name}: destination address"
            );
            let u = &out[UDP_AT..];
            assert_eq!(
                u16::from_be_bytes([u[0], u[1]]),
                RELAY.port(),
                "{name}: source port"
            );
            assert_eq!(
                u16::from_be_bytes([u[2], u[3]]),
                to.port(),
                "{name}: destination port"
            );
            assert_eq!(
                usize::from(u16::from_be_bytes([u[4], u[5]])),
                8 + payload.len(),
                "{name}: UDP length"
            );
            assert_ne!(&u[6..8], &[0, 0], "{name}: a UDP checksum");
            assert_eq!(
                csum(u, pseudo(&out[ETH..], u.len())),
                0xffff,
                "{name}: UDP checksum"
            );
            assert_eq!(
                &u[8..],
                &payload[..],
                "{name}: payload differs from the slow path's"
            );
        }
    }
}

// ---- the cases -------------------------------------------------------------------------

/// Payload lengths around the program's checksum chunks (512 bytes: the UDP datagram of a
/// client's packet is 48 bytes longer, the IPv6 packet summed when encapsulating 40) and odd
/// ones.
const LENGTHS: [usize; 17] = [
    0, 1, 7, 13, 100, 463, 464, 465, 471, 472, 473, 975, 976, 983, 984, 985, 1240,
];

fn with_udp_checksum(mut f: Vec<u8>, c: [u8; 2]) -> Vec<u8> {
    f[UDP_AT + 6..UDP_AT + 8].copy_from_slice(&c);
    f
}

fn partial_checksum(f: &[u8]) -> [u8; 2] {
    let ulen = usize::from(u16::from_be_bytes([f[UDP_AT + 4], f[UDP_AT + 5]]));
    csum(&[], pseudo(&f[ETH..], ulen)).to_be_bytes()
}

#[allow(clippy::too_many_lines)]
fn cases() -> Vec<Case> {
    use Expect::{Forward, Pass};
    use Iface::{Inet, Nat};
    use RelayPassReason as R;
    let (x, w, s, y, z) = (
        teredo(XMAP),
        teredo(WMAP),
        teredo(SMAP),
        teredo(YMAP),
        teredo(ZMAP),
    );
    let mut v = Vec::new();
    // Valid, both directions, many lengths.
    for n in LENGTHS {
        v.push(case(
            &format!("X to H, {n} bytes"),
            udp(XMAP, &ipv6(x, H, 64, 17, n)),
            Inet,
            Forward,
        ));
        v.push(case(
            &format!("H to X, {n} bytes"),
            native(&ipv6(H, x, 64, 17, n)),
            Nat,
            Forward,
        ));
    }
    for n in [1300, 1487, 1488, 1489, NAT_MTU - 40] {
        v.push(case(
            &format!("W to H2, {n} bytes"),
            udp(WMAP, &ipv6(w, H2, 64, 6, n)),
            Inet,
            Forward,
        ));
    }
    // Up to 2048 bytes the program checks the UDP checksum (then finds the packet too big
    // for the native side); longer ones are left to the kernel, which delivers them to the
    // core, which forwards them into a packet too big.
    for (n, e) in [
        (1999, R::NoRoute),
        (2000, R::NoRoute),
        (2001, R::Ipv4Unchecked),
        (2052, R::Ipv4Unchecked),
    ] {
        v.push(case(
            &format!("W to H2, a {}-byte datagram", n + 48),
            udp(WMAP, &ipv6(w, H2, 64, 6, n)),
            Inet,
            Pass(e),
        ));
    }
    let mut bad = udp(WMAP, &ipv6(w, H2, 64, 6, 2000));
    bad[PAYLOAD_AT + 1999] ^= 1;
    v.push(case(
        "a 2048-byte datagram with a bad UDP checksum",
        bad,
        Inet,
        Pass(R::Ipv4Unchecked),
    ));
    v.push(case(
        "W to H2, beyond the native MTU",
        udp(WMAP, &ipv6(w, H2, 64, 6, NAT_MTU - 39)),
        Inet,
        Pass(R::NoRoute),
    ));
    v.push(case(
        "H to W, 1280 bytes",
        native(&ipv6(H2, w, 64, 58, TUN_MTU - 40)),
        Nat,
        Forward,
    ));
    v.push(case(
        "H to W, 1281 bytes",
        native(&ipv6(H2, w, 64, 58, TUN_MTU - 39)),
        Nat,
        Pass(R::TooBig),
    ));
    v.push(case(
        "X to H in on the native side (XDP_TX)",
        udp(XMAP, &ipv6(x, H, 64, 17, 20)),
        Nat,
        Forward,
    ));
    v.push(case(
        "H to X in on the Teredo side (XDP_TX)",
        native(&ipv6(H, x, 64, 17, 20)),
        Inet,
        Forward,
    ));
    // Checksums.
    let f = udp(XMAP, &ipv6(x, H, 64, 17, 33));
    v.push(case(
        "UDP checksum 0",
        with_udp_checksum(f.clone(), [0, 0]),
        Inet,
        Forward,
    ));
    let p = partial_checksum(&f);
    v.push(case(
        "partial UDP checksum",
        with_udp_checksum(f.clone(), p),
        Inet,
        Forward,
    ));
    let mut bad = f.clone();
    bad[UDP_AT + 7] ^= 0x10;
    v.push(case("bad UDP checksum", bad, Inet, Pass(R::Ipv4Unchecked)));
    let mut bad = f.clone();
    bad[PAYLOAD_AT + 60] ^= 1;
    v.push(case(
        "payload changed under its UDP checksum",
        bad,
        Inet,
        Pass(R::Ipv4Unchecked),
    ));
    let mut bad = f.clone();
    bad[ETH + 10] ^= 0x10;
    v.push(case("bad IPv4 checksum", bad, Inet, Pass(R::Ipv4Unchecked)));
    // Hop limits.
    for (hop, e) in [(0, Pass(R::HopLimit)), (1, Pass(R::HopLimit)), (2, Forward)] {
        v.push(case(
            &format!("X to H, hop limit {hop}"),
            udp(XMAP, &ipv6(x, H, hop, 17, 8)),
            Inet,
            e,
        ));
        v.push(case(
            &format!("H to X, hop limit {hop}"),
            native(&ipv6(H, x, hop, 17, 8)),
            Nat,
            e,
        ));
    }
    // Bubbles, trust, validity.
    v.push(case(
        "direct bubble from X",
        udp(XMAP, &bubble(x, "fe80::1".parse().unwrap())),
        Inet,
        Pass(R::Bubble),
    ));
    v.push(case(
        "spoofed: X's address from W's mapping",
        udp(WMAP, &ipv6(x, H, 64, 17, 8)),
        Inet,
        Pass(R::NotTrusted),
    ));
    v.push(case(
        "spoofed: X's address from another port",
        udp(SocketAddrV4::new(*XMAP.ip(), 40001), &ipv6(x, H, 64, 17, 8)),
        Inet,
        Pass(R::NotTrusted),
    ));
    v.push(case(
        "H to Y (untrusted)",
        native(&ipv6(H, y, 64, 17, 8)),
        Nat,
        Pass(R::NotTrusted),
    ));
    v.push(case(
        "H to Z (unknown)",
        native(&ipv6(H, z, 64, 17, 8)),
        Nat,
        Pass(R::NotTrusted),
    ));
    v.push(case(
        "S to H (expired)",
        udp(SMAP, &ipv6(s, H, 64, 17, 8)),
        Inet,
        Pass(R::Expired),
    ));
    v.push(case(
        "H to S (expired)",
        native(&ipv6(H, s, 64, 17, 8)),
        Nat,
        Pass(R::Expired),
    ));
    v.push(case(
        "Z to H (unknown: the core accepts it)",
        udp(ZMAP, &ipv6(z, H, 64, 17, 8)),
        Inet,
        Pass(R::NotTrusted),
    ));
    v.push(case(
        "H to Z, now trusted",
        native(&ipv6(H, z, 64, 17, 9)),
        Nat,
        Forward,
    ));
    v.push(case(
        "Y to H (from its mapping: the core trusts it)",
        udp(YMAP, &ipv6(y, H, 64, 17, 8)),
        Inet,
        Pass(R::NotTrusted),
    ));
    v.push(case(
        "H to Y, now trusted",
        native(&ipv6(H, y, 64, 17, 9)),
        Nat,
        Forward,
    ));
    v.push(case(
        "Y to H, now trusted",
        udp(YMAP, &ipv6(y, H, 64, 17, 10)),
        Inet,
        Forward,
    ));
    // Destinations and sources the core or the kernel refuse.
    for (what, dst) in [
        ("a Teredo destination", w),
        ("a link-local destination", "fe80::1".parse().unwrap()),
        ("a multicast destination", "ff0e::1".parse().unwrap()),
        (
            "a v4-mapped destination",
            "::ffff:192.0.2.9".parse().unwrap(),
        ),
        (
            "a v4-compatible destination",
            "::192.0.2.9".parse().unwrap(),
        ),
        ("the loopback destination", Ipv6Addr::LOCALHOST),
    ] {
        v.push(case(
            &format!("X to {what}"),
            udp(XMAP, &ipv6(x, dst, 64, 17, 8)),
            Inet,
            Pass(R::Refused),
        ));
    }
    v.push(case(
        "X to the relay's own native address",
        udp(XMAP, &ipv6(x, NAT6, 64, 17, 8)),
        Inet,
        Pass(R::NoRoute),
    ));
    v.push(case(
        "non-Teredo source",
        udp(XMAP, &ipv6(H, H2, 64, 17, 8)),
        Inet,
        Pass(R::Refused),
    ));
    for (what, src) in [
        ("link-local", "fe80::1".parse().unwrap()),
        ("v4-mapped", "::ffff:192.0.2.9".parse().unwrap()),
        ("v4-compatible", "::192.0.2.9".parse().unwrap()),
        ("unspecified", Ipv6Addr::UNSPECIFIED),
        ("multicast", "ff02::1".parse().unwrap()),
    ] {
        v.push(case(
            &format!("H to X from a {what} source"),
            native(&ipv6(src, x, 64, 17, 8)),
            Nat,
            Pass(R::Refused),
        ));
    }
    for (what, m) in [
        (
            "a private mapping",
            SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 4000),
        ),
        (
            "mapped port 0",
            SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 20), 0),
        ),
    ] {
        v.push(case(
            &format!("H to a Teredo address with {what}"),
            native(&ipv6(H, teredo(m), 64, 17, 8)),
            Nat,
            Pass(R::Refused),
        ));
    }
    let private_server = TeredoAddr {
        server: Ipv4Addr::new(192, 168, 1, 1),
        flags: 0,
        mapped: XMAP,
    }
    .to_ipv6();
    v.push(case(
        "H to a Teredo address with a private server",
        native(&ipv6(H, private_server, 64, 17, 8)),
        Nat,
        Pass(R::Refused),
    ));
    v.push(case(
        "X to H, hop-by-hop options",
        udp(XMAP, &ipv6(x, H, 64, 0, 8)),
        Inet,
        Pass(R::Refused),
    ));
    v.push(case(
        "H to X, hop-by-hop options",
        native(&ipv6(H, x, 64, 0, 8)),
        Nat,
        Pass(R::Refused),
    ));
    // Forms the program leaves to the core.
    let inner = ipv6(x, H, 64, 17, 8);
    let mut auth = vec![0u8; 13];
    Auth::nonce_only([1, 2, 3, 4, 5, 6, 7, 8])
        .emit(&mut auth)
        .unwrap();
    v.push(case(
        "auth header",
        udp(XMAP, &[auth.as_slice(), &inner].concat()),
        Inet,
        Pass(R::UnhandledForm),
    ));
    let mut origin = vec![0u8; 8];
    OriginIndication(XMAP).emit(&mut origin).unwrap();
    v.push(case(
        "origin indication",
        udp(XMAP, &[origin.as_slice(), &inner].concat()),
        Inet,
        Pass(R::UnhandledForm),
    ));
    v.push(case(
        "nonce trailer",
        udp(XMAP, &[inner.as_slice(), &[1, 1, 9, 9, 9, 9]].concat()),
        Inet,
        Pass(R::UnhandledForm),
    ));
    v.push(case(
        "mandatory unknown trailer",
        udp(XMAP, &[inner.as_slice(), &[0x40, 1, 0, 0, 0, 0]].concat()),
        Inet,
        Pass(R::UnhandledForm),
    ));
    let mut vlan = udp(XMAP, &inner);
    vlan.splice(12..12, [0x81, 0, 0, 5]);
    v.push(case("VLAN-tagged", vlan, Inet, Pass(R::UnhandledForm)));
    // Lengths.
    v.push(case(
        "truncated IPv6",
        udp(XMAP, &inner[..30]),
        Inet,
        Pass(R::Refused),
    ));
    v.push(case(
        "IPv6 longer than the datagram",
        udp(XMAP, &inner[..45]),
        Inet,
        Pass(R::Refused),
    ));
    v.push(case(
        "empty datagram",
        udp(XMAP, &[]),
        Inet,
        Pass(R::Refused),
    ));
    let mut v4 = inner.clone();
    v4[0] = 0x45;
    v.push(case("IPv4 inside", udp(XMAP, &v4), Inet, Pass(R::Refused)));
    let mut short = udp(XMAP, &inner);
    let ulen = u16::from_be_bytes([short[UDP_AT + 4], short[UDP_AT + 5]]) - 4;
    short[UDP_AT + 4..UDP_AT + 6].copy_from_slice(&ulen.to_be_bytes());
    repair(&mut short);
    v.push(case(
        "UDP length shorter than the IPv4 payload",
        short,
        Inet,
        Pass(R::Ipv4Unchecked),
    ));
    let mut long = udp(XMAP, &inner);
    long.truncate(long.len() - 3);
    v.push(case(
        "frame shorter than the IPv4 total length",
        long,
        Inet,
        Pass(R::Ipv4Unchecked),
    ));
    let mut padded = udp(XMAP, &ipv6(x, H, 64, 17, 3));
    padded.extend_from_slice(&[0xee; 17]);
    v.push(case(
        "Ethernet padding after the datagram",
        padded,
        Inet,
        Forward,
    ));
    let mut padded = native(&ipv6(H, x, 64, 17, 3));
    padded.extend_from_slice(&[0xee; 9]);
    v.push(case(
        "Ethernet padding after the native packet",
        padded,
        Nat,
        Forward,
    ));
    let mut cut = native(&ipv6(H, x, 64, 17, 30));
    cut.truncate(cut.len() - 1);
    v.push(case("native packet cut short", cut, Nat, Pass(R::Refused)));
    let mut group = native(&ipv6(H, x, 64, 17, 8));
    group[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    v.push(case(
        "native packet to a multicast MAC",
        group,
        Nat,
        Pass(R::Refused),
    ));
    let mut bad_version = native(&ipv6(H, x, 64, 17, 8));
    bad_version[ETH] = 0x40;
    v.push(case(
        "native packet of version 4",
        bad_version,
        Nat,
        Pass(R::Refused),
    ));
    v.push(case(
        "native runt",
        native(&ipv6(H, x, 64, 17, 8))[..40].to_vec(),
        Nat,
        Pass(R::NotForRelay),
    ));
    // IPv4 forms.
    let mut opts = udp(XMAP, &inner);
    opts.splice(UDP_AT..UDP_AT, [1u8, 1, 1, 0]);
    opts[ETH] = 0x46;
    let tot = u16::from_be_bytes([opts[ETH + 2], opts[ETH + 3]]) + 4;
    opts[ETH + 2..ETH + 4].copy_from_slice(&tot.to_be_bytes());
    repair(&mut opts);
    v.push(case("IPv4 options", opts, Inet, Pass(R::Ipv4Unchecked)));
    for (what, flags) in [("more fragments", 0x2000u16), ("fragment offset", 0x0010)] {
        let mut frag = udp(XMAP, &inner);
        frag[ETH + 6..ETH + 8].copy_from_slice(&flags.to_be_bytes());
        repair(&mut frag);
        v.push(case(
            &format!("IPv4 {what}"),
            frag,
            Inet,
            Pass(R::Ipv4Unchecked),
        ));
    }
    // Other traffic.
    v.push(case(
        "to another port",
        udp_to(XMAP, SocketAddrV4::new(*RELAY.ip(), 53), &inner),
        Inet,
        Pass(R::NotForRelay),
    ));
    v.push(case(
        "to another address",
        udp_to(
            XMAP,
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 3544),
            &inner,
        ),
        Inet,
        Pass(R::NotForRelay),
    ));
    let mut tcp = udp(XMAP, &inner);
    tcp[ETH + 9] = 6;
    repair(&mut tcp);
    v.push(case(
        "TCP to the relay's address",
        tcp,
        Inet,
        Pass(R::NotForRelay),
    ));
    let mut arp = udp(XMAP, &inner);
    arp[12..14].copy_from_slice(&[8, 6]);
    v.push(case("ARP ethertype", arp, Inet, Pass(R::NotForRelay)));
    v.push(case(
        "native, not for 2001:0::/32",
        native(&ipv6(H, H2, 64, 17, 8)),
        Nat,
        Pass(R::NotForRelay),
    ));
    // BPF_PROG_TEST_RUN takes nothing shorter than an Ethernet header.
    v.push(case(
        "Ethernet header alone",
        udp(XMAP, &inner)[..ETH].to_vec(),
        Inet,
        Pass(R::NotForRelay),
    ));
    v.push(case(
        "IPv4 header cut short",
        udp(XMAP, &inner)[..ETH + 12].to_vec(),
        Inet,
        Pass(R::NotForRelay),
    ));
    v
}

#[test]
fn hand_written_cases_match_the_core() {
    let cases = cases();
    let Some(o) = differential(&cases) else {
        return;
    };
    let want = cases
        .iter()
        .filter(|c| c.expect == Some(Expect::Forward))
        .count() as u64;
    assert_eq!(o.to_native + o.to_teredo, want);
}

/// Seeded random frames of both directions (valid ones of trusted, expired, untrusted and
/// unknown peers, bubbles), mutated: bits flipped, bytes replaced (checksums repaired or
/// not), cut, padded, hop limits and sources changed, the other ingress interface. The
/// program may forward or pass each; whatever it forwards must be what the slow path
/// sends, and the counters must agree.
#[test]
fn mutated_frames_match_the_core() {
    let mut rng = ChaCha8Rng::seed_from_u64(4380);
    let maps = [XMAP, WMAP, SMAP, YMAP, ZMAP];
    let natives = [H, H2, NAT6, "fe80::7".parse().unwrap()];
    let mut cases = Vec::new();
    for i in 0..3000 {
        let m = maps[rng.random_range(0..maps.len())];
        let h = natives[rng.random_range(0..natives.len())];
        let n = rng.random_range(0..1300);
        let to_native = rng.random_bool(0.5);
        let mut f = if to_native {
            let p = if rng.random_bool(0.1) {
                bubble(teredo(m), "fe80::1".parse().unwrap())
            } else {
                ipv6(teredo(m), h, rng.random_range(0..=255), 17, n)
            };
            udp(m, &p)
        } else {
            native(&ipv6(
                h,
                teredo(m),
                rng.random_range(0..=255),
                58,
                n.min(1250),
            ))
        };
        let natural = if to_native { Iface::Inet } else { Iface::Nat };
        let other = if to_native { Iface::Nat } else { Iface::Inet };
        let ingress = if rng.random_bool(0.2) { other } else { natural };
        match rng.random_range(0..8) {
            0 | 1 => {}
            2 => {
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..f.len());
                    f[at] ^= 1 << rng.random_range(0..8);
                }
            }
            3 => {
                let at = rng.random_range(ETH..f.len());
                f[at] = rng.random();
                repair(&mut f);
            }
            4 => f.truncate(rng.random_range(ETH..f.len())),
            5 => f.extend((0..rng.random_range(1..24)).map(|_| rng.random::<u8>())),
            6 => {
                let at = if to_native { PAYLOAD_AT + 7 } else { ETH + 7 };
                if at < f.len() {
                    f[at] = rng.random_range(0..3);
                    repair(&mut f);
                }
            }
            _ => {
                if to_native && rng.random_bool(0.3) {
                    let port = u16::from_be_bytes([f[UDP_AT], f[UDP_AT + 1]]) ^ 1;
                    f[UDP_AT..UDP_AT + 2].copy_from_slice(&port.to_be_bytes());
                    repair(&mut f);
                } else if to_native {
                    let o = maps[rng.random_range(0..maps.len())];
                    f[ETH + 12..ETH + 16].copy_from_slice(&o.ip().octets());
                    f[UDP_AT..UDP_AT + 2].copy_from_slice(&o.port().to_be_bytes());
                    repair(&mut f);
                } else {
                    let o = natives[rng.random_range(0..natives.len())];
                    f[ETH + 8..ETH + 24].copy_from_slice(&o.octets());
                }
            }
        }
        cases.push(Case {
            name: format!("mutant {i}"),
            frame: f,
            ingress,
            expect: None,
        });
    }
    let Some(o) = differential(&cases) else {
        return;
    };
    let forwarded = o.to_native + o.to_teredo;
    eprintln!("mutations: {o:?}");
    assert!(
        (300..2700).contains(&forwarded) && o.to_native > 100 && o.to_teredo > 100,
        "{o:?} of 3000 forwarded: a poor mix"
    );
}

/// The map's API as the relay uses it, attaching to both sides, and the stamps the program
/// moves.
#[test]
fn peer_map_and_stamps() {
    let mut cfg = fast_config();
    cfg.max_peers = 4;
    let Some(mut xdp) = load(&cfg) else {
        return;
    };
    let entry = |m| PeerEntry {
        mapping: m,
        last_rx_ns: monotonic_ns(),
        last_used_ns: monotonic_ns(),
    };
    for m in [XMAP, WMAP, SMAP, YMAP] {
        xdp.upsert_peer(teredo(m), entry(m)).unwrap();
    }
    assert!(
        xdp.upsert_peer(teredo(ZMAP), entry(ZMAP)).is_err(),
        "map full"
    );
    xdp.upsert_peer(teredo(XMAP), entry(XMAP)).unwrap();
    xdp.remove_peer(&teredo(YMAP)).unwrap();
    xdp.remove_peer(&teredo(YMAP)).unwrap();
    let mut got: Vec<_> = xdp
        .peers()
        .into_iter()
        .map(|(a, e)| (a, e.mapping))
        .collect();
    got.sort();
    let mut want: Vec<_> = [XMAP, WMAP, SMAP]
        .into_iter()
        .map(|m| (teredo(m), m))
        .collect();
    want.sort();
    assert_eq!(got, want);
    xdp.clear_peers().unwrap();
    assert!(xdp.peers().is_empty());

    let ns = topology();
    ns.run_in(move || {
        // One program on both sides, as the relay attaches it.
        for dev in ["inet0", "nat0"] {
            let mode = xdp.attach(dev).unwrap_or_else(|e| panic!("{e}"));
            eprintln!("relay program attached to {dev}: {}", mode.as_str());
        }
        let (inet, nat) = (ifindex("inet0"), ifindex("nat0"));
        let x = teredo(XMAP);
        let old = monotonic_ns() - 1_000_000_000;
        let stale = PeerEntry {
            mapping: XMAP,
            last_rx_ns: old,
            last_used_ns: old,
        };
        xdp.upsert_peer(x, stale).unwrap();
        let stamps = |xdp: &XdpRelay| xdp.peers()[0].1;
        let (a, _) = xdp.test_run(&native(&ipv6(H, x, 64, 17, 8)), nat).unwrap();
        assert_eq!(a, XdpAction::REDIRECT);
        let e = stamps(&xdp);
        assert_eq!(e.last_rx_ns, old, "to the peer: last_rx unchanged");
        assert!(e.last_used_ns > old, "to the peer: last_used moved");
        let (a, _) = xdp
            .test_run(&udp(XMAP, &ipv6(x, H, 64, 17, 8)), inet)
            .unwrap();
        assert_eq!(a, XdpAction::REDIRECT);
        let e2 = stamps(&xdp);
        assert!(
            e2.last_rx_ns > old && e2.last_used_ns >= e.last_used_ns,
            "from the peer"
        );
        // Expired: passed, stamps untouched.
        let expired = PeerEntry {
            last_rx_ns: monotonic_ns() - 31_000_000_000,
            ..stale
        };
        xdp.upsert_peer(x, expired).unwrap();
        let before = xdp.counters().unwrap();
        let (a, _) = xdp.test_run(&native(&ipv6(H, x, 64, 17, 8)), nat).unwrap();
        assert_eq!(a, XdpAction::Pass);
        assert_eq!(stamps(&xdp), expired);
        let d = xdp.counters().unwrap().since(&before);
        assert_eq!(d.passed_for(RelayPassReason::Expired), 1);
        // Switched off: everything passes, counted as disabled.
        xdp.set_enabled(false).unwrap();
        xdp.upsert_peer(x, entry(XMAP)).unwrap();
        let before = xdp.counters().unwrap();
        let (a, _) = xdp.test_run(&native(&ipv6(H, x, 64, 17, 8)), nat).unwrap();
        assert_eq!(a, XdpAction::Pass);
        let d: RelayCounters = xdp.counters().unwrap().since(&before);
        assert_eq!(d.passed_for(RelayPassReason::Disabled), 1);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}
