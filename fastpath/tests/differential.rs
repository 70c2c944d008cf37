//! Differential tests of the XDP fast path against the sans-IO core.
//!
//! Every frame goes (a) to the core alone, as the kernel would deliver its UDP payload to the
//! server's socket, and (b) through the XDP program (`BPF_PROG_TEST_RUN`), its passed frames
//! then to a second core. Both must give the same UDP output bytes, addresses and ports, and
//! the same counters (RSs by address and cone flag, RAs by the address they left from, drops
//! by reason, forwards) once the program's own counters are added to the second core's. The
//! expected RA bytes always come from the core, never from a constant here.
//!
//! Needs root (BPF) and a build with the program (clang, libbpf-dev); outside CI it skips
//! loudly without them, in CI it fails.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Instant;

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use rand::{Rng as _, SeedableRng as _};
use teredo::addr::{LL_TEREDO_CONE, LL_WINDOWS_CONE, LL_WINDOWS_RESTRICTED, LL_XP_RESTRICTED};
use teredo::io::Local;
use teredo::server::{Handled, Server, ServerConfig};
use teredo::wire::auth::Auth;
use teredo::wire::ndp::emit_rs;
use teredo::{Kind, Output};
use teredo_fastpath::{FastPathConfig, PassReason, XdpAction, XdpServer};

const PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const SECONDARY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 40000);
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];
const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// The program, or `None` (after a loud skip) where it cannot run outside CI.
fn load(cfg: &ServerConfig) -> Option<XdpServer> {
    if !testkit::root_or_skip("fastpath differential tests (BPF_PROG_TEST_RUN)") {
        return None;
    }
    let fast = FastPathConfig::from_core(cfg).expect("fast path config");
    match XdpServer::load(&fast) {
        Ok(x) => Some(x),
        Err(e @ teredo_fastpath::Error::NotBuilt(_)) => {
            assert!(!testkit::in_ci(), "{e}; CI is set, and CI must never skip");
            eprintln!("\n*** SKIPPED: fastpath differential tests: {e} ***");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// A frame and what the kernel would hand the server's socket of it.
struct Frame {
    name: String,
    bytes: Vec<u8>,
    /// `(local, from, payload)` when the kernel delivers it to one of the server's sockets.
    delivered: Option<(Local, SocketAddrV4, Vec<u8>)>,
}

fn udp_frame(name: &str, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> Frame {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv4(from.ip().octets(), to.ip().octets(), 64)
        .udp(from.port(), to.port());
    let mut bytes = Vec::new();
    b.write(&mut bytes, payload).unwrap();
    let local = if *to.ip() == PRIMARY {
        Some(Local::Primary)
    } else if *to.ip() == SECONDARY {
        Some(Local::Secondary)
    } else {
        None
    };
    let delivered = local
        .filter(|_| to.port() == teredo::addr::TEREDO_PORT)
        .map(|l| (l, from, payload.to_vec()));
    Frame {
        name: name.to_owned(),
        bytes,
        delivered,
    }
}

fn to_server(local: Local) -> SocketAddrV4 {
    let ip = if local == Local::Primary {
        PRIMARY
    } else {
        SECONDARY
    };
    SocketAddrV4::new(ip, teredo::addr::TEREDO_PORT)
}

fn rs(auth: Option<&Auth<'_>>, src: Ipv6Addr, xp: bool) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let n = emit_rs(&mut buf, auth, src, xp).unwrap();
    buf[..n].to_vec()
}

/// The RS's IPv6 packet starts at `off`; its ICMPv6 checksum is recomputed after `f` edits it.
fn edit_rs(mut d: Vec<u8>, off: usize, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    f(&mut d);
    let ip = &mut d[off..];
    teredo::wire::ipv6::finish_icmpv6(ip);
    d
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for w in h.chunks(2) {
        s += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The folded (not inverted) IPv4 pseudo-header sum of a UDP frame, what a sender leaves in
/// the checksum field for the device to finish.
fn pseudo_header_sum(frame: &[u8]) -> u16 {
    let mut s: u32 = 17 + u32::from(u16::from_be_bytes([frame[38], frame[39]]));
    for w in frame[26..34].chunks(2) {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// An edit of an RS whose ICMPv6 checksum is then recomputed.
type Edit = fn(&mut Vec<u8>);

/// The hand-written cases: every form the program answers, every kind of input the core
/// drops, what the kernel itself drops, and traffic that is not the server's.
fn cases() -> Vec<(Frame, Option<XdpAction>)> {
    use XdpAction::{Pass, Tx};
    let nonce = Auth::nonce_only([1, 2, 3, 4, 5, 6, 7, 8]);
    let p = to_server(Local::Primary);
    let s = to_server(Local::Secondary);
    let mut v = vec![
        (
            udp_frame(
                "cone RS to primary",
                CLIENT,
                p,
                &rs(None, LL_WINDOWS_CONE, false),
            ),
            Some(Tx),
        ),
        (
            udp_frame(
                "cone RS to secondary",
                CLIENT,
                s,
                &rs(None, LL_TEREDO_CONE, false),
            ),
            Some(Tx),
        ),
        (
            udp_frame(
                "restricted RS with nonce to primary",
                CLIENT,
                p,
                &rs(Some(&nonce), LL_WINDOWS_RESTRICTED, false),
            ),
            Some(Tx),
        ),
        (
            udp_frame(
                "restricted RS with nonce to secondary",
                CLIENT,
                s,
                &rs(Some(&nonce), LL_WINDOWS_RESTRICTED, false),
            ),
            Some(Tx),
        ),
        (
            udp_frame(
                "XP RS with source link-layer option",
                CLIENT,
                p,
                &rs(Some(&nonce), LL_XP_RESTRICTED, true),
            ),
            Some(Tx),
        ),
        (
            udp_frame(
                "cone RS with nonce, confirmation 1",
                CLIENT,
                p,
                &rs(
                    Some(&Auth {
                        confirmation: 1,
                        ..nonce
                    }),
                    LL_TEREDO_CONE,
                    false,
                ),
            ),
            Some(Tx),
        ),
        (
            udp_frame(
                "RS from a 100.64/10 source",
                SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 1), 1),
                p,
                &rs(None, LL_WINDOWS_CONE, false),
            ),
            Some(Tx),
        ),
        (
            udp_frame(
                "RS with client ID",
                CLIENT,
                p,
                &rs(
                    Some(&Auth {
                        client_id: b"id",
                        ..nonce
                    }),
                    LL_WINDOWS_CONE,
                    false,
                ),
            ),
            Some(Pass),
        ),
        (
            udp_frame(
                "RS from 10/8",
                SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 5000),
                p,
                &rs(None, LL_WINDOWS_CONE, false),
            ),
            Some(Pass),
        ),
        (
            udp_frame(
                "RS from 192.88.99/24",
                SocketAddrV4::new(Ipv4Addr::new(192, 88, 99, 1), 5000),
                p,
                &rs(None, LL_WINDOWS_CONE, false),
            ),
            Some(Pass),
        ),
        (
            udp_frame(
                "RS from the secondary itself (loop)",
                s,
                p,
                &rs(None, LL_WINDOWS_CONE, false),
            ),
            Some(Pass),
        ),
        (udp_frame("truncated", CLIENT, p, &[0x60, 0, 0]), Some(Pass)),
        (udp_frame("empty", CLIENT, p, &[]), Some(Pass)),
        (
            udp_frame(
                "to another port",
                CLIENT,
                SocketAddrV4::new(PRIMARY, 53),
                &rs(None, LL_WINDOWS_CONE, false),
            ),
            Some(Pass),
        ),
        (
            udp_frame(
                "to another address",
                CLIENT,
                SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 3), 3544),
                &rs(None, LL_WINDOWS_CONE, false),
            ),
            Some(Pass),
        ),
    ];
    let good = rs(None, LL_WINDOWS_CONE, false);
    let edits: [(&str, Edit); 6] = [
        ("hop limit 254", |d| d[7] = 254),
        ("code 1", |d| d[41] = 1),
        ("global source", |d| d[8] = 0x20),
        ("not ICMPv6", |d| d[6] = 17),
        ("RA instead of RS", |d| d[40] = 134),
        ("to ff02::1", |d| d[39] = 1),
    ];
    for (name, f) in edits {
        v.push((
            udp_frame(name, CLIENT, p, &edit_rs(good.clone(), 0, f)),
            Some(Pass),
        ));
    }
    let mut bad_sum = good.clone();
    bad_sum[42] ^= 1;
    v.push((
        udp_frame("bad ICMPv6 checksum", CLIENT, p, &bad_sum),
        Some(Pass),
    ));
    let mut short = good.clone();
    short[5] = 16; // payload length beyond the datagram
    v.push((
        udp_frame("IPv6 payload length too large", CLIENT, p, &short),
        Some(Pass),
    ));
    let mut v4 = good.clone();
    v4[0] = 0x40;
    v.push((udp_frame("IPv4 inside", CLIENT, p, &v4), Some(Pass)));
    let mut trailer = good.clone();
    trailer.extend_from_slice(&[0x01, 2, 0, 0]); // nonce trailer, ignorable
    v.push((
        udp_frame("RS with a trailer", CLIENT, p, &trailer),
        Some(Pass),
    ));
    let mut mandatory = good.clone();
    mandatory.extend_from_slice(&[0x40, 2, 0, 0]);
    v.push((
        udp_frame("RS with a mandatory trailer", CLIENT, p, &mandatory),
        Some(Pass),
    ));
    let mut origin = vec![0, 0, 1, 2, 3, 4, 5, 6];
    origin.extend_from_slice(&good);
    v.push((
        udp_frame("RS with an origin indication", CLIENT, p, &origin),
        Some(Pass),
    ));
    // An RS with 72 bytes of options: valid for the core, beyond the program's 64.
    let big = edit_rs(good.clone(), 0, |d| {
        d.extend_from_slice(&[1, 8, 0, 0, 0, 0, 0, 0].repeat(8));
        d[5] = 8 + 64;
    });
    v.push((
        udp_frame("RS with 64 bytes of options", CLIENT, p, &big),
        Some(Pass),
    ));
    // Bubbles and ICMPv6 for the forwarding cases.
    let client_teredo = teredo::TeredoAddr {
        server: PRIMARY,
        flags: 0,
        mapped: CLIENT,
    }
    .to_ipv6();
    let peer = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 50), 6000);
    let peer_teredo = teredo::TeredoAddr {
        server: PRIMARY,
        flags: 0x8000,
        mapped: peer,
    }
    .to_ipv6();
    let mut bubble = [0u8; 40];
    teredo::wire::ipv6::emit_bubble(&mut bubble, client_teredo, peer_teredo, 21).unwrap();
    v.push((
        udp_frame("bubble to a client", CLIENT, p, &bubble),
        Some(Pass),
    ));
    v.push((udp_frame("spoofed bubble", peer, p, &bubble), Some(Pass)));
    let mut native = [0u8; 40];
    teredo::wire::ipv6::emit_bubble(
        &mut native,
        client_teredo,
        "2001:db8::1".parse().unwrap(),
        21,
    )
    .unwrap();
    v.push((
        udp_frame("bubble to native IPv6", CLIENT, p, &native),
        Some(Pass),
    ));

    // What the kernel drops before the socket: a bad UDP checksum (the program must pass it
    // unanswered; neither path's core sees it).
    let mut f = udp_frame("bad UDP checksum", CLIENT, p, &good);
    f.bytes[40] ^= 0x55;
    f.delivered = None;
    v.push((f, Some(Pass)));
    let mut f = udp_frame("bad IPv4 header checksum", CLIENT, p, &good);
    f.bytes[24] ^= 0x55;
    f.delivered = None;
    v.push((f, Some(Pass)));
    // A zero UDP checksum is valid over IPv4.
    let mut f = udp_frame("RS with UDP checksum 0", CLIENT, p, &good);
    f.bytes[40] = 0;
    f.bytes[41] = 0;
    v.push((f, Some(Tx)));
    // A local veth peer's datagram carries only the pseudo-header sum (CHECKSUM_PARTIAL),
    // which the kernel accepts from it.
    let mut f = udp_frame("RS with a partial UDP checksum", CLIENT, p, &good);
    let partial = pseudo_header_sum(&f.bytes);
    f.bytes[40..42].copy_from_slice(&partial.to_be_bytes());
    v.push((f, Some(Tx)));
    // IPv4 options: the kernel delivers the same payload; the program leaves them to it.
    let mut f = udp_frame("RS with IPv4 options", CLIENT, p, &good);
    f.bytes.splice(34..34, [1u8, 1, 1, 0]);
    f.bytes[14] = 0x46;
    let tot = u16::from_be_bytes([f.bytes[16], f.bytes[17]]) + 4;
    f.bytes[16..18].copy_from_slice(&tot.to_be_bytes());
    f.bytes[24..26].fill(0);
    let c = ipv4_checksum(&f.bytes[14..38]);
    f.bytes[24..26].copy_from_slice(&c.to_be_bytes());
    v.push((f, Some(Pass)));
    // Not IPv4 at all.
    let mut f = udp_frame("IPv6 ethertype", CLIENT, p, &good);
    f.bytes[12..14].copy_from_slice(&[0x86, 0xdd]);
    f.delivered = None;
    v.push((f, Some(Pass)));
    v
}

/// The counters both ways must agree on.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    /// Valid RSs by (address index, cone).
    rs: BTreeMap<(usize, bool), u64>,
    /// RAs by the address index they left from.
    ra: BTreeMap<usize, u64>,
    drops: BTreeMap<&'static str, u64>,
    forwarded: u64,
}

/// One delivered datagram through a core: counts it, returns its UDP output.
fn core_step(
    core: &mut Server,
    tally: &mut Tally,
    (local, from, payload): &(Local, SocketAddrV4, Vec<u8>),
) -> Option<(Local, SocketAddrV4, Vec<u8>)> {
    let mut buf = vec![0u8; 65_536];
    match core.handle_udp(Instant::now(), *local, *from, payload) {
        Ok(Handled::RouterSolicitation { cone, .. }) => {
            *tally.rs.entry((local.index(), cone)).or_default() += 1;
        }
        Ok(_) => tally.forwarded += 1,
        Err(r) => *tally.drops.entry(r.as_str()).or_default() += 1,
    }
    match core.poll_output(&mut buf)? {
        Output::Udp {
            local,
            to,
            len,
            kind,
        } => {
            if kind == Kind::RouterAdvertisement {
                *tally.ra.entry(local.index()).or_default() += 1;
            }
            Some((local, to, buf[..len].to_vec()))
        }
        _ => None,
    }
}

/// Checks that `out` is the frame carrying the core's answer `want` back to the sender of
/// `input`, with valid IPv4 and UDP checksums.
fn check_tx(
    name: &str,
    cfg: &ServerConfig,
    input: &[u8],
    out: &[u8],
    want: &(Local, SocketAddrV4, Vec<u8>),
) {
    let (local, to, payload) = want;
    assert_eq!(&out[..6], &input[6..12], "{name}: destination MAC");
    assert_eq!(&out[6..12], &input[..6], "{name}: source MAC");
    let pkt = SlicedPacket::from_ethernet(out).unwrap_or_else(|e| panic!("{name}: {e}"));
    let Some(etherparse::NetSlice::Ipv4(ip)) = &pkt.net else {
        panic!("{name}: not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.calc_header_checksum(),
        h.header_checksum,
        "{name}: IPv4 checksum"
    );
    let from = if *local == Local::Primary {
        cfg.primary
    } else {
        cfg.secondary
    };
    assert_eq!(Ipv4Addr::from(h.source), from, "{name}: reply address");
    assert_eq!(Ipv4Addr::from(h.destination), *to.ip(), "{name}");
    let Some(TransportSlice::Udp(udp)) = &pkt.transport else {
        panic!("{name}: not UDP")
    };
    assert_eq!(udp.source_port(), cfg.port, "{name}");
    assert_eq!(udp.destination_port(), to.port(), "{name}");
    assert_eq!(
        udp.payload(),
        &payload[..],
        "{name}: RA bytes differ from the core's"
    );
    let uh = udp.to_header();
    assert_eq!(
        uh.calc_checksum_ipv4(&h, udp.payload()).unwrap(),
        uh.checksum,
        "{name}: UDP checksum"
    );
    assert_eq!(
        out.len(),
        14 + 20 + 8 + payload.len(),
        "{name}: frame length"
    );
}

/// Runs `frames` both ways and compares; returns how many the program answered.
fn differential(cfg: ServerConfig, frames: &[(Frame, Option<XdpAction>)]) -> Option<u64> {
    let mut xdp = load(&cfg)?;
    let before = xdp.counters().unwrap();
    let mut alone = Server::new(cfg);
    let mut behind = Server::new(cfg);
    let (mut t_alone, mut t_fast) = (Tally::default(), Tally::default());
    for (f, expect) in frames {
        let name = &f.name;
        let want = f
            .delivered
            .as_ref()
            .and_then(|d| core_step(&mut alone, &mut t_alone, d));
        let (action, out) = xdp.test_run(&f.bytes).unwrap();
        if let Some(e) = expect {
            assert_eq!(action, *e, "{name}: verdict");
        }
        match action {
            XdpAction::Tx => {
                let want = want
                    .unwrap_or_else(|| panic!("{name}: answered in XDP, the core sends nothing"));
                check_tx(name, &cfg, &f.bytes, &out, &want);
            }
            XdpAction::Pass => {
                assert_eq!(out, f.bytes, "{name}: a passed frame must be untouched");
                let got = f
                    .delivered
                    .as_ref()
                    .and_then(|d| core_step(&mut behind, &mut t_fast, d));
                assert_eq!(
                    got, want,
                    "{name}: the core behind the fast path answers otherwise"
                );
            }
            other => panic!("{name}: unexpected verdict {other:?}"),
        }
    }
    let c = xdp.counters().unwrap().since(&before);
    for local in [Local::Primary, Local::Secondary] {
        for cone in [false, true] {
            let n = c.answered(local, cone);
            if n > 0 {
                *t_fast.rs.entry((local.index(), cone)).or_default() += n;
                let from = if cone { local.other() } else { local };
                *t_fast.ra.entry(from.index()).or_default() += n;
            }
        }
    }
    assert_eq!(t_fast, t_alone, "counters: fast path + core vs core alone");
    let passed: u64 = PassReason::ALL.iter().map(|r| c.passed(*r)).sum();
    assert_eq!(
        passed + c.answered_total(),
        frames.len() as u64,
        "every frame counted once"
    );
    Some(c.answered_total())
}

#[test]
fn hand_written_cases_match_the_core() {
    let cfg = ServerConfig::new(PRIMARY);
    let frames = cases();
    let Some(answered) = differential(cfg, &frames) else {
        return;
    };
    let want = frames
        .iter()
        .filter(|(_, e)| *e == Some(XdpAction::Tx))
        .count() as u64;
    assert_eq!(answered, want);
}

#[test]
fn without_mtu_option_and_native_side() {
    let mut cfg = ServerConfig::new(PRIMARY);
    cfg.mtu = None;
    cfg.native = false;
    differential(cfg, &cases());
}

#[test]
fn pass_reasons_are_counted() {
    let cfg = ServerConfig::new(PRIMARY);
    let Some(mut xdp) = load(&cfg) else {
        return;
    };
    let p = to_server(Local::Primary);
    let good = rs(None, LL_WINDOWS_CONE, false);
    let mut trailer = good.clone();
    trailer.extend_from_slice(&[0x01, 2, 0, 0]);
    let mut bubble = [0u8; 40];
    teredo::wire::ipv6::emit_bubble(
        &mut bubble,
        "2001:0:c633:6401::1".parse().unwrap(),
        "2001:0:c633:6401::2".parse().unwrap(),
        1,
    )
    .unwrap();
    for (frame, reason) in [
        (
            udp_frame("", CLIENT, SocketAddrV4::new(PRIMARY, 53), &good),
            PassReason::NotForServer,
        ),
        (
            udp_frame("", CLIENT, p, &bubble),
            PassReason::NotRouterSolicitation,
        ),
        (
            udp_frame("", CLIENT, p, &trailer),
            PassReason::UnhandledForm,
        ),
        (
            udp_frame(
                "",
                SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1),
                p,
                &good,
            ),
            PassReason::Invalid,
        ),
    ] {
        let before = xdp.counters().unwrap();
        assert_eq!(xdp.test_run(&frame.bytes).unwrap().0, XdpAction::Pass);
        let c = xdp.counters().unwrap().since(&before);
        assert_eq!(c.passed(reason), 1, "{reason:?}");
    }
    xdp.set_enabled(false).unwrap();
    let before = xdp.counters().unwrap();
    let f = udp_frame("", CLIENT, p, &good);
    assert_eq!(
        xdp.test_run(&f.bytes).unwrap().0,
        XdpAction::Pass,
        "switched off"
    );
    assert_eq!(
        xdp.counters()
            .unwrap()
            .since(&before)
            .passed(PassReason::Disabled),
        1
    );
}

/// Seeded random RSs, mutated: random bytes flipped, cut or appended, random sources. The
/// program may answer or pass each; whatever it answers must be the core's answer, and the
/// counters must agree.
#[test]
fn mutated_router_solicitations_match_the_core() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4380);
    let srcs = [
        LL_WINDOWS_CONE,
        LL_WINDOWS_RESTRICTED,
        LL_TEREDO_CONE,
        LL_XP_RESTRICTED,
    ];
    let froms = [
        CLIENT,
        SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 200), 3544),
        SocketAddrV4::new(Ipv4Addr::new(172, 16, 0, 1), 1),
        SocketAddrV4::new(SECONDARY, 3544),
        SocketAddrV4::new(Ipv4Addr::new(240, 0, 0, 1), 65535),
    ];
    let mut frames = Vec::new();
    for i in 0..3000 {
        let nonce: [u8; 8] = rng.random();
        let auth = Auth::nonce_only(nonce);
        let src = srcs[rng.random_range(0..srcs.len())];
        let mut d = rs(
            rng.random_bool(0.5).then_some(&auth),
            src,
            rng.random_bool(0.2),
        );
        let off = if d[0] == 0 { 13 } else { 0 };
        match rng.random_range(0..6) {
            0 => {}
            1 => {
                let n = rng.random_range(1..4);
                for _ in 0..n {
                    let at = rng.random_range(0..d.len());
                    let bit = rng.random_range(0..8);
                    d[at] ^= 1 << bit;
                }
            }
            2 => {
                // Flip, then repair the ICMPv6 checksum: reaches the deeper checks.
                let at = rng.random_range(off..d.len());
                let bit = rng.random_range(0..8);
                d[at] ^= 1 << bit;
                if d.len() >= off + 44 && d[off..].len() == 40 + usize::from(d[off + 5]) {
                    d = edit_rs(d, off, |_| {});
                }
            }
            3 => d.truncate(rng.random_range(0..d.len())),
            4 => d.extend((0..rng.random_range(1..12)).map(|_| rng.random::<u8>())),
            _ => {
                let at = rng.random_range(0..d.len());
                d[at] = rng.random();
            }
        }
        let from = froms[rng.random_range(0..froms.len())];
        let to = to_server(if rng.random_bool(0.5) {
            Local::Primary
        } else {
            Local::Secondary
        });
        frames.push((udp_frame(&format!("mutant {i}"), from, to, &d), None));
    }
    let Some(answered) = differential(ServerConfig::new(PRIMARY), &frames) else {
        return;
    };
    assert!(
        answered > 300 && answered < 2700,
        "{answered} of 3000 answered: a poor mix"
    );
}
