//! The frames of the differential tests: hand-written cases with what the program must do,
//! and seeded mutations.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use teredo::wire::auth::Auth;
use teredo::wire::origin::OriginIndication;
use teredo::TeredoAddr;
use teredo_fastpath::RelayPassReason;

use super::frames::{
    bubble, csum, ipv6, native, pseudo, repair, teredo, udp, udp_to, Iface, ETH, H, H2, NAT6,
    NAT_MTU, PAYLOAD_AT, RELAY, SMAP, TUN_MTU, UDP_AT, WMAP, XMAP, YMAP, ZMAP,
};

/// What a hand-written case expects of the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    Forward,
    Pass(RelayPassReason),
}

pub(crate) struct Case {
    pub(crate) name: String,
    pub(crate) frame: Vec<u8>,
    pub(crate) ingress: Iface,
    pub(crate) expect: Option<Expect>,
}

pub(crate) fn case(name: &str, frame: Vec<u8>, ingress: Iface, expect: Expect) -> Case {
    Case {
        name: name.to_owned(),
        frame,
        ingress,
        expect: Some(expect),
    }
}

/// Payload lengths around the program's checksum chunks (512 bytes: the UDP datagram of a
/// client's packet is 48 bytes longer, the IPv6 packet summed when encapsulating 40) and odd
/// ones.
pub(crate) const LENGTHS: [usize; 17] = [
    0, 1, 7, 13, 100, 463, 464, 465, 471, 472, 473, 975, 976, 983, 984, 985, 1240,
];

pub(crate) fn with_udp_checksum(mut f: Vec<u8>, c: [u8; 2]) -> Vec<u8> {
    f[UDP_AT + 6..UDP_AT + 8].copy_from_slice(&c);
    f
}

pub(crate) fn partial_checksum(f: &[u8]) -> [u8; 2] {
    let ulen = usize::from(u16::from_be_bytes([f[UDP_AT + 4], f[UDP_AT + 5]]));
    csum(&[], pseudo(&f[ETH..], ulen)).to_be_bytes()
}

#[allow(clippy::too_many_lines)]
pub(crate) fn cases() -> Vec<Case> {
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

/// `n` seeded random frames of both directions (valid ones of trusted, expired, untrusted
/// and unknown peers, bubbles), mutated: bits flipped, bytes replaced (checksums repaired or
/// not), cut, padded, hop limits and sources changed, the other ingress interface.
pub(crate) fn mutants(n: usize, seed: u64) -> Vec<Case> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let maps = [XMAP, WMAP, SMAP, YMAP, ZMAP];
    let natives = [H, H2, NAT6, "fe80::7".parse().unwrap()];
    let mut cases = Vec::new();
    for i in 0..n {
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
    cases
}
