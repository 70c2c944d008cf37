//! Sans-IO acceptance tests: RFC 4380 §5.3.1 and TEREDO.md (b) server checks 1–15, then
//! property tests (arbitrary and structured datagrams) with output invariants.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use super::*;
use crate::addr::{
    is_teredo, server_prefix, LL_MIREDO_RESTRICTED, LL_TEREDO_CONE, LL_WINDOWS_CONE,
    LL_WINDOWS_RESTRICTED, LL_XP_RESTRICTED,
};
use crate::io::Kind;
use crate::wire::ipv6::{emit_bubble, emit_ipv6_header, finish_icmpv6, Echo};
use crate::wire::ndp::{emit_rs, RouterAdvertisement};
use crate::wire::packet::NEXT_HEADER_UDP;
use crate::wire::Trailers;

mod props;

const P: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const S: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Restricted and cone RS sources of current Windows (TEREDO.md "LLr" / "LLc").
const LLR: Ipv6Addr = LL_WINDOWS_RESTRICTED;
const LLC: Ipv6Addr = LL_WINDOWS_CONE;
const N: [u8; 8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
/// A foreign Teredo server.
const FOREIGN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);
/// A native IPv6 host.
const NATIVE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);

/// The only place these tests read the clock: the server ignores `now`, the API wants one.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// Client A's NAT mapping, as the server sees it.
fn a() -> SocketAddrV4 {
    "203.0.113.5:40000".parse().unwrap()
}

/// Client B's NAT mapping.
fn b() -> SocketAddrV4 {
    "192.0.2.77:51000".parse().unwrap()
}

fn server() -> Server {
    Server::new(ServerConfig::new(P))
}

fn teredo(server: Ipv4Addr, flags: u16, mapped: SocketAddrV4) -> Ipv6Addr {
    TeredoAddr {
        server,
        flags,
        mapped,
    }
    .to_ipv6()
}

/// A client of this server (random flags as in RFC 5991).
fn ours(mapped: SocketAddrV4) -> Ipv6Addr {
    teredo(P, 0x1027, mapped)
}

type Outcome = (Result<Handled, DropReason>, Option<(Output, Vec<u8>)>);

/// Feeds one datagram and polls once, checking the output protocol: an `Ok` leaves
/// exactly one output, an `Err` none, and a second poll is always `None`.
fn run(s: &mut Server, local: Local, from: SocketAddrV4, data: &[u8]) -> Outcome {
    let r = s.handle_udp(now(), local, from, data);
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD];
    let out = s.poll_output(&mut buf).map(|o| {
        let len = o.len();
        (o, buf[..len].to_vec())
    });
    assert_eq!(s.poll_output(&mut buf), None, "second poll");
    assert_eq!(r.is_ok(), out.is_some(), "{r:?} / {out:?}");
    (r, out)
}

fn drop_reason(s: &mut Server, local: Local, from: SocketAddrV4, data: &[u8]) -> DropReason {
    let (r, out) = run(s, local, from, data);
    assert_eq!(out, None);
    r.expect_err("expected a drop")
}

fn rs(auth: Option<&Auth<'_>>, src: Ipv6Addr, xp_slla: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 600];
    let n = emit_rs(&mut buf, auth, src, xp_slla).unwrap();
    buf.truncate(n);
    buf
}

/// `auth(N) + IPv6(src → ff02::2, RS)`: 61 bytes.
fn rs_n(src: Ipv6Addr) -> Vec<u8> {
    rs(Some(&Auth::nonce_only(N)), src, false)
}

fn bubble(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut v = vec![0u8; 40];
    emit_bubble(&mut v, src, dst, 0).unwrap();
    v
}

fn echo(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, data_len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..data_len).map(|i| i as u8).collect();
    let e = Echo {
        reply: false,
        id: 0x1234,
        seq: 1,
        data: &data,
    };
    let mut v = vec![0u8; 48 + data_len];
    e.emit(&mut v, src, dst, hop_limit).unwrap();
    v
}

/// An IPv6 packet with any next header and payload.
fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 40];
    emit_ipv6_header(&mut v, src, dst, nh, 64, payload.len()).unwrap();
    v.extend_from_slice(payload);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn oi(sa: SocketAddrV4) -> [u8; 8] {
    let mut o = [0u8; 8];
    OriginIndication(sa).emit(&mut o).unwrap();
    o
}

/// An RFC 6081 nonce trailer: type 1, length 4, 4 bytes (6 bytes in all).
const NONCE_TRAILER: [u8; 6] = [0x01, 4, 0xde, 0xad, 0xbe, 0xef];

/// Checks an RA datagram against TEREDO.md check 1.
fn check_ra(
    out: &Option<(Output, Vec<u8>)>,
    from_local: Local,
    to: SocketAddrV4,
    rs_src: Ipv6Addr,
    auth: Option<Auth<'_>>,
) {
    let (o, bytes) = out.as_ref().expect("an RA");
    assert_eq!(
        *o,
        Output::Udp {
            local: from_local,
            to,
            len: bytes.len(),
            kind: Kind::RouterAdvertisement,
        }
    );
    let p = TeredoPacket::parse(bytes).unwrap();
    assert_eq!(
        p.auth,
        auth.map(|a| Auth {
            confirmation: 0,
            ..a
        })
    );
    if auth.is_none() {
        assert_eq!(&bytes[..2], &[0, 0], "starts with the origin indication");
    }
    assert_eq!(p.origin, Some(OriginIndication(to)));
    assert_eq!(p.src(), server_link_local(P));
    assert_eq!(p.dst(), rs_src);
    assert_eq!((p.hop_limit(), p.next_header()), (255, 58));
    assert_eq!(&p.ipv6_payload()[..2], &[134, 0]);
    assert!(p.trailers.is_empty());
    let ra = RouterAdvertisement::parse(p.ipv6).unwrap();
    assert_eq!(ra.prefix, (server_prefix(P), 64));
    assert_eq!(ra.mtu, Some(1280));
    // Options: exactly one PIO (len 4, /64, A set), then the MTU option.
    let opts = &p.ipv6_payload()[16..];
    assert_eq!(&opts[..4], &[3, 4, 64, 0x40]);
    assert_eq!(&opts[32..34], &[5, 1]);
    assert_eq!(opts.len(), 40);
}

// ---- TEREDO.md check 1 / RFC 4380 §5.3.1 case 4 -------------------------------------

#[test]
fn restricted_rs_answered_from_same_address() {
    let mut s = server();
    let (r, out) = run(&mut s, Local::Primary, a(), &rs_n(LLR));
    assert_eq!(
        r,
        Ok(Handled::RouterSolicitation {
            cone: false,
            reply_from: Local::Primary
        })
    );
    check_ra(&out, Local::Primary, a(), LLR, Some(Auth::nonce_only(N)));
}

#[test]
fn restricted_rs_to_secondary_answered_from_secondary_with_primary_prefix() {
    let mut s = server();
    let (r, out) = run(&mut s, Local::Secondary, a(), &rs_n(LLR));
    assert_eq!(
        r,
        Ok(Handled::RouterSolicitation {
            cone: false,
            reply_from: Local::Secondary
        })
    );
    // check_ra asserts the PIO is 2001:0:<primary>::/64.
    check_ra(&out, Local::Secondary, a(), LLR, Some(Auth::nonce_only(N)));
    assert_eq!(s.address(Local::Secondary), S);
}

#[test]
fn ra_is_byte_identical_to_miredo() {
    // TEREDO.md §4.3: Debian miredo-server 1.2.6, primary 198.51.100.1, client
    // 198.51.100.10:40000, RS from fe80::ffff:ffff:fffe.
    let want: [u8; 117] = [
        0x00, 0x01, 0x00, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x00, //
        0x00, 0x00, 0x63, 0xbf, 0x39, 0xcc, 0x9b, 0xf5, //
        0x60, 0x00, 0x00, 0x00, 0x00, 0x38, 0x3a, 0xff, //
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x80, 0x00, 0xf2, 0x27, 0x39, 0xcc, 0x9b, 0xfe, //
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, //
        0x86, 0x00, 0x95, 0x4d, 0x00, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0x00, 0x00, 0x07, 0xd0, 0x03,
        0x04, 0x40, 0x40, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x20, 0x01,
        0x00, 0x00, 0xc6, 0x33, 0x64, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, //
        0x05, 0x01, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00,
    ];
    let mut s = server();
    let from = "198.51.100.10:40000".parse().unwrap();
    let (_, out) = run(&mut s, Local::Primary, from, &rs_n(LLR));
    assert_eq!(out.unwrap().1, want);
}

// ---- check 2: cone RS → RA from the other address ---------------------------------

#[test]
fn cone_rs_answered_from_other_address() {
    for src in [LLC, LL_TEREDO_CONE] {
        for (local, reply) in [
            (Local::Primary, Local::Secondary),
            (Local::Secondary, Local::Primary),
        ] {
            let mut s = server();
            let (r, out) = run(&mut s, local, a(), &rs_n(src));
            assert_eq!(
                r,
                Ok(Handled::RouterSolicitation {
                    cone: true,
                    reply_from: reply
                }),
                "{src} on {local:?}"
            );
            check_ra(&out, reply, a(), src, Some(Auth::nonce_only(N)));
        }
    }
}

// ---- check 3: RS variants ---------------------------------------------------------

#[test]
fn rs_variants_accepted() {
    let mut s = server();
    // 8-byte RS without options, without auth.
    let plain = rs(None, LLR, false);
    assert_eq!(plain.len(), 48);
    let (_, out) = run(&mut s, Local::Primary, a(), &plain);
    check_ra(&out, Local::Primary, a(), LLR, None);
    // Windows XP: 16-byte source link-layer address option, XP link-local.
    let xp = rs(Some(&Auth::nonce_only(N)), LL_XP_RESTRICTED, true);
    assert_eq!(xp.len(), 13 + 40 + 24);
    let (_, out) = run(&mut s, Local::Primary, a(), &xp);
    check_ra(
        &out,
        Local::Primary,
        a(),
        LL_XP_RESTRICTED,
        Some(Auth::nonce_only(N)),
    );
    // Any fe80::/64 identifier; only the cone bit matters.
    for (src, cone) in [
        (LL_MIREDO_RESTRICTED, false),
        ("fe80::1234:5678:9abc:def0".parse().unwrap(), false),
        ("fe80::8000:1:2:3".parse().unwrap(), true),
    ] {
        let (r, out) = run(&mut s, Local::Primary, a(), &rs_n(src));
        let reply = if cone {
            Local::Secondary
        } else {
            Local::Primary
        };
        assert_eq!(
            r,
            Ok(Handled::RouterSolicitation {
                cone,
                reply_from: reply
            })
        );
        check_ra(&out, reply, a(), src, Some(Auth::nonce_only(N)));
    }
}

// ---- check 4: nonce hygiene -------------------------------------------------------

#[test]
fn auth_echoed_with_id_value_and_confirmation_zero() {
    let mut s = server();
    let auth = Auth {
        client_id: b"client-7",
        auth_value: b"some-hmac-value",
        nonce: N,
        confirmation: 1,
    };
    let (_, out) = run(&mut s, Local::Primary, a(), &rs(Some(&auth), LLR, false));
    check_ra(&out, Local::Primary, a(), LLR, Some(auth));
    let bytes = out.unwrap().1;
    assert_eq!(&bytes[..4], &[0, 1, 8, 15]);
    assert_eq!(bytes[4 + 8 + 15 + 8], 0, "confirmation 0");
}

#[test]
fn rs_without_auth_gets_ra_without_auth_and_no_leaked_nonce() {
    let mut s = server();
    let (_, first) = run(&mut s, Local::Primary, a(), &rs_n(LLR));
    check_ra(&first, Local::Primary, a(), LLR, Some(Auth::nonce_only(N)));
    // Another client, no auth header: Miredo would echo N here.
    let (_, out) = run(&mut s, Local::Primary, b(), &rs(None, LLR, false));
    check_ra(&out, Local::Primary, b(), LLR, None);
    let bytes = out.unwrap().1;
    assert!(
        !bytes.windows(8).any(|w| w == N),
        "nonce leaked: {bytes:02x?}"
    );
    assert_eq!(bytes.len(), 8 + 40 + 56);
}

// ---- check 5 / case 3: non-global RS source ---------------------------------------

#[test]
fn non_global_sources_dropped() {
    let mut s = server();
    for ip in [
        "0.1.2.3",
        "10.0.0.1",
        "127.0.0.1",
        "169.254.1.1",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "192.88.99.1",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
    ] {
        let from = SocketAddrV4::new(ip.parse().unwrap(), 40000);
        for local in [Local::Primary, Local::Secondary] {
            assert_eq!(
                drop_reason(&mut s, local, from, &rs_n(LLR)),
                DropReason::NonGlobalSource,
                "{from}"
            );
            // Also for a bubble from a matching Teredo source (case 3 precedes case 5).
            let d = bubble(ours(from), ours(b()));
            assert_eq!(
                drop_reason(&mut s, local, from, &d),
                DropReason::NonGlobalSource
            );
        }
    }
    let (_, out) = run(&mut s, Local::Primary, a(), &rs_n(LLR));
    check_ra(&out, Local::Primary, a(), LLR, Some(Auth::nonce_only(N)));
}

// ---- check 6 / case 1: malformed ---------------------------------------------------

#[test]
fn malformed_dropped_and_server_survives() {
    let good = rs_n(LLR);
    let ipv6_rs = &good[13..];
    let mut v4 = good.clone();
    v4[13] = 0x45;
    let mut long_plen = good.clone();
    long_plen[13 + 5] += 1;
    let mut auth_overrun = good.clone();
    auth_overrun[2] = 200; // ID-len runs past the datagram
    let oi_truncated = cat(&[&[0, 0, 0xfe, 0xae, 0xfe]]);
    let auth_truncated = good[..12].to_vec();
    let mut bad_sum = good.clone();
    bad_sum[13 + 42] ^= 0x01;
    let mut hop64 = good.clone();
    hop64[13 + 7] = 64;
    let mut code1 = good.clone();
    code1[13 + 41] = 1;
    let with_oi = cat(&[&oi(a()), ipv6_rs]);
    let auth_after_oi = cat(&[&oi(a()), &good]);
    let mandatory_trailer = cat(&[&good, &[0x42, 0]]);
    let oversized = cat(&[&good, &vec![0u8; MAX_UDP_PAYLOAD + 1 - good.len()]]);
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("empty", vec![], DropReason::Truncated),
        ("39 bytes", vec![0x60; 39], DropReason::Truncated),
        (
            "IPv6 header cut",
            ipv6_rs[..39].to_vec(),
            DropReason::Truncated,
        ),
        ("version 4", v4, DropReason::BadIpVersion),
        ("40+plen > len", long_plen, DropReason::BadLength),
        ("auth overrun", auth_overrun, DropReason::Truncated),
        ("auth truncated", auth_truncated, DropReason::Truncated),
        ("OI truncated", oi_truncated, DropReason::Truncated),
        ("RS checksum", bad_sum, DropReason::BadChecksum),
        ("RS hop limit 64", hop64, DropReason::Malformed),
        ("RS code 1", code1, DropReason::Malformed),
        ("OI sent to a server", with_oi, DropReason::UnexpectedOrigin),
        ("auth after OI", auth_after_oi, DropReason::BadEncapsulation),
        (
            "mandatory trailer",
            mandatory_trailer,
            DropReason::MandatoryTrailer,
        ),
        ("65508 bytes", oversized, DropReason::Oversized),
    ];
    let mut s = server();
    for (what, d, want) in cases {
        assert_eq!(drop_reason(&mut s, Local::Primary, a(), &d), want, "{what}");
        let (_, out) = run(&mut s, Local::Primary, a(), &good);
        check_ra(&out, Local::Primary, a(), LLR, Some(Auth::nonce_only(N)));
    }
}

#[test]
fn packets_to_ff02_2_or_server_link_local_that_are_not_rs() {
    let mut s = server();
    let ll = server_link_local(P);
    // RS from a non-link-local source.
    let d = rs_n("2001:db8::1".parse().unwrap());
    assert_eq!(
        drop_reason(&mut s, Local::Primary, a(), &d),
        DropReason::NotForUs
    );
    // A bubble and an echo to ff02::2 from a valid client.
    let d = bubble(ours(a()), ALL_ROUTERS);
    assert_eq!(
        drop_reason(&mut s, Local::Primary, a(), &d),
        DropReason::NotForUs
    );
    // TEREDO.md check 14: echo to the server's link-local gets no reply (documented).
    for src in [ours(a()), LLR] {
        let d = echo(src, ll, 255, 8);
        assert_eq!(
            drop_reason(&mut s, Local::Primary, a(), &d),
            DropReason::NotForUs
        );
    }
    // An RS addressed to the server's link-local instead of ff02::2 (RFC 4861 §6.1.1):
    // nothing sent there is answered.
    let mut v = vec![0u8; 48];
    emit_ipv6_header(&mut v, LLR, ll, 58, 255, 8).unwrap();
    v[40] = 133;
    finish_icmpv6(&mut v);
    assert_eq!(
        drop_reason(&mut s, Local::Primary, a(), &v),
        DropReason::NotForUs
    );
}

// ---- check 7 / case 5: indirect bubble with OI and trailers ------------------------

#[test]
fn indirect_bubble_relayed_with_oi_and_trailer() {
    for local in [Local::Primary, Local::Secondary] {
        let mut s = server();
        let ipv6 = bubble(ours(a()), teredo(P, 0, b()));
        let d = cat(&[&ipv6, &NONCE_TRAILER]);
        let (r, out) = run(&mut s, local, a(), &d);
        assert_eq!(
            r,
            Ok(Handled::ForwardedToClient {
                bubble: true,
                with_origin: true
            })
        );
        let (o, bytes) = out.unwrap();
        assert_eq!(
            o,
            Output::Udp {
                local: Local::Primary,
                to: b(),
                len: 8 + 40 + 6,
                kind: Kind::Bubble,
            }
        );
        assert_eq!(bytes, cat(&[&oi(a()), &ipv6, &NONCE_TRAILER]));
    }
}

/// RFC 6081 §5.1.2 gives the discard rule for unknown `01xxxxxx` trailers to the node that
/// processes the packet: relayed to a client, they pass untouched (as Miredo's server does);
/// where the server is that node (an RS, the native side) it drops them.
#[test]
fn unknown_mandatory_trailers_pass_to_clients_only() {
    let unknown = [0x41, 2, 0xab, 0xcd];
    let mut s = server();
    let ipv6 = bubble(ours(a()), teredo(P, 0, b()));
    let d = cat(&[&ipv6, &NONCE_TRAILER, &unknown]);
    let (r, out) = run(&mut s, Local::Primary, a(), &d);
    assert_eq!(
        r,
        Ok(Handled::ForwardedToClient {
            bubble: true,
            with_origin: true
        })
    );
    assert_eq!(
        out.unwrap().1,
        cat(&[&oi(a()), &ipv6, &NONCE_TRAILER, &unknown])
    );
    let native = cat(&[&echo(ours(a()), NATIVE, 7, 8), &unknown]);
    assert_eq!(
        drop_reason(&mut s, Local::Primary, a(), &native),
        DropReason::MandatoryTrailer
    );
    let rs = cat(&[&rs_n(LLR), &unknown]);
    assert_eq!(
        drop_reason(&mut s, Local::Primary, a(), &rs),
        DropReason::MandatoryTrailer
    );
}

#[test]
fn relayed_packets_lose_the_auth_header_only() {
    let mut s = server();
    let ipv6 = echo(ours(a()), teredo(P, 0x8000, b()), 7, 20);
    let d = cat(&[
        &[0, 1, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9, 0],
        &ipv6,
        &NONCE_TRAILER,
    ]);
    let (r, out) = run(&mut s, Local::Primary, a(), &d);
    assert_eq!(
        r,
        Ok(Handled::ForwardedToClient {
            bubble: false,
            with_origin: true
        })
    );
    assert_eq!(out.unwrap().1, cat(&[&oi(a()), &ipv6, &NONCE_TRAILER]));
}

// ---- check 8: anti-spoofing ---------------------------------------------------------

#[test]
fn spoofed_teredo_source_dropped() {
    let mut s = server();
    let dst = teredo(P, 0, b());
    let other_port = SocketAddrV4::new(*a().ip(), a().port() + 5);
    let other_ip = SocketAddrV4::new("203.0.113.6".parse().unwrap(), a().port());
    for spoofed in [other_port, other_ip] {
        for d in [
            bubble(ours(spoofed), dst),
            echo(ours(spoofed), NATIVE, 64, 8),
        ] {
            assert_eq!(
                drop_reason(&mut s, Local::Primary, a(), &d),
                DropReason::SpoofedSource
            );
        }
    }
    // The server field of the source does not matter, the mapping does.
    let d = bubble(teredo(FOREIGN, 0, a()), dst);
    assert!(run(&mut s, Local::Primary, a(), &d).0.is_ok());
}

// ---- check 9 / case 6: relay-originated bubbles -----------------------------------

#[test]
fn relay_style_bubbles_only_to_our_clients() {
    let relay: SocketAddrV4 = "192.0.2.200:3545".parse().unwrap();
    for src in ["fe80::1234", "2001:db8::1"] {
        let src: Ipv6Addr = src.parse().unwrap();
        let mut s = server();
        let ipv6 = bubble(src, teredo(P, 0, b()));
        let (r, out) = run(&mut s, Local::Primary, relay, &ipv6);
        assert_eq!(
            r,
            Ok(Handled::ForwardedToClient {
                bubble: true,
                with_origin: true
            })
        );
        assert_eq!(out.unwrap().1, cat(&[&oi(relay), &ipv6]));
        let foreign = bubble(src, teredo(FOREIGN, 0, b()));
        assert_eq!(
            drop_reason(&mut s, Local::Primary, relay, &foreign),
            DropReason::NotAllowed
        );
    }
}

#[test]
fn case7_non_teredo_source_to_non_teredo_destination_not_allowed() {
    let mut s = server();
    let from: SocketAddrV4 = "192.0.2.200:3545".parse().unwrap();
    for d in [
        echo("2001:db8::1".parse().unwrap(), NATIVE, 64, 8),
        bubble("2001:db8::1".parse().unwrap(), NATIVE),
    ] {
        assert_eq!(
            drop_reason(&mut s, Local::Primary, from, &d),
            DropReason::NotAllowed
        );
    }
}

// ---- check 10: foreign-server destination from a valid client ---------------------

#[test]
fn valid_client_to_foreign_server_destination_forwarded_without_oi() {
    let mut s = server();
    let ipv6 = bubble(ours(a()), teredo(FOREIGN, 0, b()));
    let d = cat(&[&ipv6, &NONCE_TRAILER]);
    let (r, out) = run(&mut s, Local::Secondary, a(), &d);
    assert_eq!(
        r,
        Ok(Handled::ForwardedToClient {
            bubble: true,
            with_origin: false
        })
    );
    let (o, bytes) = out.unwrap();
    assert_eq!(
        o,
        Output::Udp {
            local: Local::Primary,
            to: b(),
            len: 46,
            kind: Kind::Bubble,
        }
    );
    assert_eq!(bytes, d);
}

// ---- check 11: non-global embedded destination ------------------------------------

#[test]
fn non_global_mapped_destinations_dropped() {
    let mut s = server();
    for ip in [
        "10.0.0.1",
        "127.0.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "192.168.1.5",
        "0.0.0.0",
    ] {
        let mapped = SocketAddrV4::new(ip.parse().unwrap(), 40000);
        for server_field in [P, FOREIGN] {
            let dst = teredo(server_field, 0, mapped);
            for d in [bubble(ours(a()), dst), echo(ours(a()), dst, 64, 8)] {
                assert_eq!(
                    drop_reason(&mut s, Local::Primary, a(), &d),
                    DropReason::NonGlobalMappedAddress,
                    "{mapped}"
                );
            }
        }
    }
}

// ---- check 12 / case 2: only bubbles and ICMPv6 -----------------------------------

#[test]
fn only_bubbles_and_icmpv6_pass() {
    let mut s = server();
    let dst = teredo(P, 0, b());
    let udp = ipv6(
        ours(a()),
        dst,
        NEXT_HEADER_UDP,
        &[0x0d, 0xd8, 0x0d, 0xd8, 0, 8, 0, 0],
    );
    let tcp = ipv6(ours(a()), dst, 6, &[0u8; 20]);
    let fat_bubble = ipv6(ours(a()), dst, NEXT_HEADER_NONE, &[0u8; 4]);
    for (d, what) in [(udp, "UDP"), (tcp, "TCP"), (fat_bubble, "nh 59 + payload")] {
        assert_eq!(
            drop_reason(&mut s, Local::Primary, a(), &d),
            DropReason::NotBubbleOrIcmpv6,
            "{what}"
        );
        // The same to a native destination.
        let mut native = d.clone();
        native[24..40].copy_from_slice(&NATIVE.octets());
        assert_eq!(
            drop_reason(&mut s, Local::Primary, a(), &native),
            DropReason::NotBubbleOrIcmpv6,
            "{what}"
        );
    }
}

#[test]
fn icmpv6_size_cap() {
    let dst = teredo(P, 0, b());
    // Default: 1240 bytes of ICMPv6 (a 1280-byte IPv6 packet).
    let mut s = server();
    let ok = echo(ours(a()), dst, 64, 1240 - 8);
    assert!(run(&mut s, Local::Primary, a(), &ok).0.is_ok());
    let big = echo(ours(a()), dst, 64, 1241 - 8);
    assert_eq!(
        drop_reason(&mut s, Local::Primary, a(), &big),
        DropReason::TooLarge
    );
    let big_native = echo(ours(a()), NATIVE, 64, 1241 - 8);
    assert_eq!(
        drop_reason(&mut s, Local::Primary, a(), &big_native),
        DropReason::TooLarge
    );
    // Miredo's policy: 88 bytes pass, 89 do not.
    let mut s = Server::new(ServerConfig {
        max_icmpv6_payload: 88,
        ..ServerConfig::new(P)
    });
    let ok = echo(ours(a()), dst, 64, 80);
    assert!(run(&mut s, Local::Primary, a(), &ok).0.is_ok());
    let big = echo(ours(a()), dst, 64, 81);
    assert_eq!(
        drop_reason(&mut s, Local::Primary, a(), &big),
        DropReason::TooLarge
    );
    // Bubbles are exempt, trailers included.
    let d = cat(&[&bubble(ours(a()), dst), &[0u8; 500]]);
    assert!(run(&mut s, Local::Primary, a(), &d).0.is_ok());
}

/// Regression: a relayed packet gets an 8-byte origin indication in front, so a datagram
/// close to the UDP maximum was accepted (`Ok`) but then could not be written into a
/// `MAX_UDP_PAYLOAD` buffer (`poll_output` returned `None` and logged a warning per
/// packet) — or, with a larger buffer, produced an unsendable 65515-byte datagram.
#[test]
fn relayed_packet_that_cannot_take_the_origin_indication_is_dropped() {
    let mut s = server();
    let fill = |mut v: Vec<u8>, to: usize| {
        v.resize(to, 0); // zero trailers: type 0, length 0, skipped
        v
    };
    let ours_dst = bubble(ours(a()), teredo(P, 0, b()));
    let d = fill(ours_dst.clone(), MAX_UDP_PAYLOAD);
    assert_eq!(
        drop_reason(&mut s, Local::Primary, a(), &d),
        DropReason::TooLarge
    );
    let d = fill(ours_dst.clone(), MAX_UDP_PAYLOAD - 7);
    assert_eq!(
        drop_reason(&mut s, Local::Primary, a(), &d),
        DropReason::TooLarge
    );
    // The largest that fits still goes through, at exactly the maximum.
    let d = fill(ours_dst, MAX_UDP_PAYLOAD - 8);
    let (_, out) = run(&mut s, Local::Primary, a(), &d);
    assert_eq!(out.unwrap().1.len(), MAX_UDP_PAYLOAD);
    // Without an origin indication (foreign server) the full size fits.
    let d = fill(bubble(ours(a()), teredo(FOREIGN, 0, b())), MAX_UDP_PAYLOAD);
    let (_, out) = run(&mut s, Local::Primary, a(), &d);
    assert_eq!(out.unwrap().1.len(), MAX_UDP_PAYLOAD);
    // A large ICMPv6 cap does not reopen the hole; an auth header in front makes room.
    let mut s = Server::new(ServerConfig {
        max_icmpv6_payload: usize::MAX,
        ..ServerConfig::new(P)
    });
    let e = echo(ours(a()), teredo(P, 0, b()), 64, MAX_UDP_PAYLOAD - 48);
    assert_eq!(
        drop_reason(&mut s, Local::Primary, a(), &e),
        DropReason::TooLarge
    );
    let e = echo(ours(a()), teredo(P, 0, b()), 64, MAX_UDP_PAYLOAD - 48 - 13);
    let d = cat(&[&[0, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0], &e]);
    let (_, out) = run(&mut s, Local::Primary, a(), &d);
    assert_eq!(out.unwrap().1.len(), MAX_UDP_PAYLOAD - 5);
}

// ---- check 13: native forwarding ------------------------------------------------------

#[test]
fn echo_forwarded_natively_unchanged() {
    let mut s = server();
    for hop in [128, 1, 0] {
        let ipv6 = echo(ours(a()), NATIVE, hop, 18);
        let d = cat(&[&ipv6, &NONCE_TRAILER]);
        let (r, out) = run(&mut s, Local::Secondary, a(), &d);
        assert_eq!(r, Ok(Handled::ForwardedNative { bubble: false }));
        let (o, bytes) = out.unwrap();
        assert_eq!(
            o,
            Output::Ipv6 {
                len: ipv6.len(),
                kind: Kind::Icmpv6
            }
        );
        // Identical bytes: hop limit not decremented (as Miredo), trailers stripped.
        assert_eq!(bytes, ipv6);
    }
    let d = bubble(ours(a()), NATIVE);
    assert_eq!(
        run(&mut s, Local::Primary, a(), &d).0,
        Ok(Handled::ForwardedNative { bubble: true })
    );
    let mut s = Server::new(ServerConfig {
        native: false,
        ..ServerConfig::new(P)
    });
    let d = echo(ours(a()), NATIVE, 128, 18);
    assert_eq!(
        drop_reason(&mut s, Local::Primary, a(), &d),
        DropReason::NativeDisabled
    );
}

// ---- check 14: non-global IPv6 destinations -----------------------------------------

#[test]
fn non_global_ipv6_destinations_dropped() {
    let mut s = server();
    for dst in [
        "fe80::1",
        "fe80::8000:f227:39cc:9bfd",
        "febf::1",
        "ff02::1",
        "ff05::2",
        "ff0e::1",
        "::1",
        "::",
        "::ffff:198.51.100.7",
        "::198.51.100.7",
    ] {
        let dst: Ipv6Addr = dst.parse().unwrap();
        for d in [bubble(ours(a()), dst), echo(ours(a()), dst, 64, 8)] {
            assert_eq!(
                drop_reason(&mut s, Local::Primary, a(), &d),
                DropReason::NonGlobalDestination,
                "{dst}"
            );
        }
    }
}

// ---- check 15: loop guard -------------------------------------------------------------

#[test]
fn loop_guard() {
    let mut s = server();
    for ip in [P, S] {
        let from = SocketAddrV4::new(ip, TEREDO_PORT);
        for local in [Local::Primary, Local::Secondary] {
            for d in [
                rs_n(LLR),
                bubble(ours(from), teredo(P, 0, b())),
                echo(ours(from), NATIVE, 64, 8),
            ] {
                assert_eq!(drop_reason(&mut s, local, from, &d), DropReason::Loop);
            }
        }
        // A Teredo destination embedding our own address and port: nothing sent.
        let to_self = teredo(P, 0, SocketAddrV4::new(ip, TEREDO_PORT));
        for d in [bubble(ours(a()), to_self), echo(ours(a()), to_self, 64, 8)] {
            assert_eq!(
                drop_reason(&mut s, Local::Primary, a(), &d),
                DropReason::Loop
            );
        }
        // Another port on our address is an ordinary (if odd) peer.
        let other = SocketAddrV4::new(ip, TEREDO_PORT + 1);
        let d = bubble(ours(a()), teredo(P, 0, other));
        let (_, out) = run(&mut s, Local::Primary, a(), &d);
        assert!(matches!(out, Some((Output::Udp { to, .. }, _)) if to == other));
    }
    // With a configured port, the guard follows it.
    let mut s = Server::new(ServerConfig {
        port: TEREDO_PORT + 1,
        ..ServerConfig::new(P)
    });
    let own = SocketAddrV4::new(P, TEREDO_PORT + 1);
    assert_eq!(
        drop_reason(&mut s, Local::Primary, own, &rs_n(LLR)),
        DropReason::Loop
    );
    let d = bubble(ours(a()), teredo(P, 0, own));
    assert_eq!(
        drop_reason(&mut s, Local::Primary, a(), &d),
        DropReason::Loop
    );
    let (_, out) = run(
        &mut s,
        Local::Primary,
        SocketAddrV4::new(P, TEREDO_PORT),
        &rs_n(LLR),
    );
    assert!(out.is_some());
}

// ---- output protocol --------------------------------------------------------------------

#[test]
fn output_protocol() {
    let mut s = server();
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD];
    assert_eq!(s.poll_output(&mut buf), None, "nothing before any input");
    // An unpolled output is replaced by the next input's.
    s.handle_udp(now(), Local::Primary, a(), &rs_n(LLR))
        .unwrap();
    s.handle_udp(now(), Local::Primary, b(), &rs(None, LLC, false))
        .unwrap();
    let o = s.poll_output(&mut buf).unwrap();
    assert!(
        matches!(o, Output::Udp { local: Local::Secondary, to, len: 104, kind: Kind::RouterAdvertisement } if to == b())
    );
    // ... and discarded by a dropped one.
    s.handle_udp(now(), Local::Primary, a(), &rs_n(LLR))
        .unwrap();
    assert!(s.handle_udp(now(), Local::Primary, a(), &[]).is_err());
    assert_eq!(s.poll_output(&mut buf), None);
    // A buffer too small for the RA: nothing (and nothing left for later).
    s.handle_udp(now(), Local::Primary, a(), &rs_n(LLR))
        .unwrap();
    assert_eq!(s.poll_output(&mut buf[..116]), None);
    assert_eq!(s.poll_output(&mut buf), None);
    s.handle_udp(now(), Local::Primary, a(), &rs_n(LLR))
        .unwrap();
    assert!(matches!(
        s.poll_output(&mut buf[..117]),
        Some(Output::Udp { len: 117, .. })
    ));
}
