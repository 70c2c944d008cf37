//! Property tests for the wire formats: `parse(emit(x)) == x`, every truncation of a valid
//! packet is an error, and arbitrary bytes never panic.
//!
//! Truncation: a datagram is `[auth] [OI] IPv6 [trailers]`. Cutting it anywhere before the end
//! of the IPv6 packet is an error (the IPv6 payload length no longer fits). Cutting it inside
//! the trailers is *not* an error: a malformed trailer only ends trailer processing
//! (RFC 6081 §4), so such a prefix parses with fewer trailers. The tests check exactly that.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use proptest::collection::vec;
use proptest::prelude::*;

use super::auth::Auth;
use super::ipv6::{emit_bubble, Echo};
use super::ndp::{emit_rs, RaParams, RouterAdvertisement, RouterSolicitation};
use super::origin::OriginIndication;
use super::packet::{TeredoPacket, IPV6_HEADER_LEN};
use super::trailer::{Trailer, TrailerKind, Trailers};
use super::WireError;
use crate::addr::{link_local_is_cone, server_prefix};

/// Owned form of [`Auth`], so strategies can produce it.
#[derive(Clone, Debug)]
struct OwnedAuth {
    id: Vec<u8>,
    au: Vec<u8>,
    nonce: [u8; 8],
    conf: u8,
}

impl OwnedAuth {
    fn view(&self) -> Auth<'_> {
        Auth {
            client_id: &self.id,
            auth_value: &self.au,
            nonce: self.nonce,
            confirmation: self.conf,
        }
    }
}

/// Lengths 0..=255, biased towards the short and the extreme ones.
fn auth_field() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        3 => vec(any::<u8>(), 0..32),
        1 => vec(any::<u8>(), 0..=255),
        1 => vec(any::<u8>(), 255..=255),
    ]
}

fn arb_auth() -> impl Strategy<Value = OwnedAuth> {
    (auth_field(), auth_field(), any::<[u8; 8]>(), any::<u8>()).prop_map(|(id, au, nonce, conf)| {
        OwnedAuth {
            id,
            au,
            nonce,
            conf,
        }
    })
}

fn arb_sa() -> impl Strategy<Value = SocketAddrV4> {
    (any::<u32>(), any::<u16>()).prop_map(|(ip, port)| SocketAddrV4::new(ip.into(), port))
}

fn arb_ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u8; 16]>().prop_map(Ipv6Addr::from)
}

/// Any fe80::/10 address (what `RouterSolicitation::parse` accepts as a source).
fn arb_link_local() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u8; 16]>().prop_map(|mut o| {
        o[0] = 0xfe;
        o[1] = 0x80 | (o[1] & 0x3f);
        Ipv6Addr::from(o)
    })
}

/// Trailers as (type, value) pairs; values up to 255 bytes.
fn arb_trailers() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    vec(
        (
            any::<u8>(),
            prop_oneof![3 => vec(any::<u8>(), 0..8), 1 => vec(any::<u8>(), 0..=255)],
        ),
        0..6,
    )
}

fn emit_trailers(ts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0u8; ts.iter().map(|(_, v)| 2 + v.len()).sum()];
    let mut pos = 0;
    for (ty, v) in ts {
        pos += Trailers::emit(*ty, v, &mut out[pos..]).unwrap();
    }
    assert_eq!(pos, out.len());
    out
}

/// A bubble datagram with an auth header, an origin indication and the given trailers.
fn bubble_datagram(
    a: &OwnedAuth,
    oi: SocketAddrV4,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    trailers: &[u8],
) -> Vec<u8> {
    let auth = a.view();
    let mut v = vec![0u8; auth.buffer_len() + 8 + IPV6_HEADER_LEN];
    let mut pos = auth.emit(&mut v).unwrap();
    pos += OriginIndication(oi).emit(&mut v[pos..]).unwrap();
    pos += emit_bubble(&mut v[pos..], src, dst, 0).unwrap();
    assert_eq!(pos, v.len());
    v.extend_from_slice(trailers);
    v
}

/// Asserts that every strict prefix of `datagram` up to `ipv6_end` fails to parse, and that
/// prefixes cut inside the trailers parse with the same IPv6 packet.
fn check_truncations(datagram: &[u8], ipv6_end: usize) -> Result<(), TestCaseError> {
    for n in 0..datagram.len() {
        let r = TeredoPacket::parse(&datagram[..n]);
        if n < ipv6_end {
            prop_assert!(r.is_err(), "prefix of {} bytes parsed: {:?}", n, r);
        } else {
            // Inside the trailers (which hold no "discard" type): the same IPv6 packet, the
            // cut trailer bytes kept as they are; iterating them yields a prefix of the
            // complete list and stops at the cut one.
            let p = r.map_err(|e| TestCaseError::fail(format!("prefix {n}: {e}")))?;
            prop_assert_eq!(p.ipv6, &datagram[ipv6_end - p.ipv6.len()..ipv6_end]);
            prop_assert_eq!(p.trailers, &datagram[ipv6_end..n]);
            let full: Vec<_> = Trailers::new(&datagram[ipv6_end..]).collect();
            let cut: Vec<_> = Trailers::new(p.trailers).collect();
            prop_assert!(cut.len() <= full.len());
            prop_assert_eq!(&cut[..], &full[..cut.len()]);
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn auth_round_trip(a in arb_auth()) {
        let auth = a.view();
        let mut buf = vec![0u8; auth.buffer_len() + 16];
        let n = auth.emit(&mut buf).unwrap();
        prop_assert_eq!(n, 13 + a.id.len() + a.au.len());
        prop_assert_eq!(Auth::parse(&buf[..n]), Ok((auth, n)));
        // Extra bytes after the header are not part of it.
        prop_assert_eq!(Auth::parse(&buf), Ok((auth, n)));
        for k in 0..n {
            prop_assert!(Auth::parse(&buf[..k]).is_err());
        }
        prop_assert_eq!(
            auth.emit(&mut buf[..n - 1]),
            Err(WireError::BufferTooSmall { need: n })
        );
    }

    #[test]
    fn origin_round_trip(sa in arb_sa()) {
        let mut buf = [0u8; 8];
        prop_assert_eq!(OriginIndication(sa).emit(&mut buf), Ok(8));
        prop_assert_eq!(OriginIndication::parse(&buf), Ok(OriginIndication(sa)));
        for k in 0..8 {
            prop_assert!(OriginIndication::parse(&buf[..k]).is_err());
            prop_assert!(OriginIndication(sa).emit(&mut buf[..k]).is_err());
        }
    }

    #[test]
    fn trailers_round_trip(ts in arb_trailers()) {
        let bytes = emit_trailers(&ts);
        let got: Vec<Trailer<'_>> = Trailers::new(&bytes).collect();
        prop_assert_eq!(got.len(), ts.len());
        for (t, (ty, v)) in got.iter().zip(&ts) {
            prop_assert_eq!(t.ty, *ty);
            prop_assert_eq!(t.value, &v[..]);
            prop_assert_eq!(t.nonce().is_some(), *ty == 0x01 && v.len() == 4);
        }
        let discard = ts.iter().find(|(ty, v)| Trailer { ty: *ty, value: v }.kind() == TrailerKind::Discard);
        match discard {
            Some((ty, _)) => prop_assert_eq!(Trailers::validate(&bytes), Err(WireError::MandatoryTrailer(*ty))),
            None => prop_assert_eq!(Trailers::validate(&bytes), Ok(())),
        }
    }

    #[test]
    fn echo_round_trip(
        reply in any::<bool>(),
        id in any::<u16>(),
        seq in any::<u16>(),
        data in vec(any::<u8>(), 0..1300),
        src in arb_ipv6(),
        dst in arb_ipv6(),
        hop in any::<u8>(),
    ) {
        let e = Echo { reply, id, seq, data: &data };
        let mut buf = vec![0u8; 48 + data.len()];
        let n = e.emit(&mut buf, src, dst, hop).unwrap();
        prop_assert_eq!(n, buf.len());
        prop_assert_eq!(Echo::parse(&buf), Ok(e));
        let etherparse_view = etherparse::Icmpv6Slice::from_slice(&buf[40..]).unwrap();
        prop_assert!(etherparse_view.is_checksum_valid(src.octets(), dst.octets()));
        // As a Teredo datagram.
        let p = TeredoPacket::parse(&buf).unwrap();
        prop_assert_eq!((p.src(), p.dst(), p.hop_limit(), p.ipv6), (src, dst, hop, &buf[..]));
        check_truncations(&buf, n)?;
        // The echo parser itself rejects every truncation as well.
        for k in 0..n {
            prop_assert!(Echo::parse(&buf[..k]).is_err(), "echo prefix {} parsed", k);
        }
        prop_assert!(e.emit(&mut buf[..n - 1], src, dst, hop).is_err());
    }

    #[test]
    fn rs_round_trip(
        a in proptest::option::of(arb_auth()),
        src in arb_link_local(),
        xp_slla in any::<bool>(),
    ) {
        let auth = a.as_ref().map(OwnedAuth::view);
        let mut buf = vec![0u8; 1024];
        let n = emit_rs(&mut buf, auth.as_ref(), src, xp_slla).unwrap();
        let auth_len = auth.as_ref().map_or(0, Auth::buffer_len);
        prop_assert_eq!(n, auth_len + 40 + if xp_slla { 24 } else { 8 });
        let buf = &buf[..n];
        let p = TeredoPacket::parse(buf).unwrap();
        prop_assert_eq!(p.auth, auth);
        prop_assert_eq!(p.origin, None);
        prop_assert!(p.trailers.is_empty());
        prop_assert_eq!(
            RouterSolicitation::parse(p.ipv6),
            Ok(RouterSolicitation { src, cone: link_local_is_cone(&src) })
        );
        check_truncations(buf, n)?;
        for k in 0..p.ipv6.len() {
            prop_assert!(RouterSolicitation::parse(&p.ipv6[..k]).is_err());
        }
        prop_assert!(emit_rs(&mut vec![0u8; n - 1], auth.as_ref(), src, xp_slla).is_err());
    }

    #[test]
    fn ra_round_trip(
        a in proptest::option::of(arb_auth()),
        origin in arb_sa(),
        src in arb_ipv6(),
        dst in arb_ipv6(),
        primary in any::<u32>().prop_map(Ipv4Addr::from),
        mtu in proptest::option::of(any::<u32>()),
    ) {
        let auth = a.as_ref().map(OwnedAuth::view);
        let params = RaParams { auth, origin, src, dst, primary, mtu };
        let mut buf = vec![0u8; params.buffer_len()];
        let n = params.emit(&mut buf).unwrap();
        prop_assert_eq!(n, buf.len());
        let p = TeredoPacket::parse(&buf).unwrap();
        prop_assert_eq!(p.auth.map(|a| a.nonce), auth.map(|a| a.nonce));
        prop_assert_eq!(p.auth, auth);
        prop_assert_eq!(p.origin, Some(OriginIndication(origin)));
        prop_assert_eq!(p.hop_limit(), 255);
        let ra = RouterAdvertisement::parse(p.ipv6).unwrap();
        prop_assert_eq!(ra, RouterAdvertisement { src, dst, prefix: (server_prefix(primary), 64), mtu });
        prop_assert_eq!(&ra.prefix.0.octets()[..8], &[0x20, 0x01, 0, 0, primary.octets()[0], primary.octets()[1], primary.octets()[2], primary.octets()[3]][..]);
        check_truncations(&buf, n)?;
        for k in 0..p.ipv6.len() {
            prop_assert!(RouterAdvertisement::parse(&p.ipv6[..k]).is_err(), "RA prefix {} parsed", k);
        }
        prop_assert!(params.emit(&mut buf[..n - 1]).is_err());
    }

    #[test]
    fn bubble_with_auth_and_oi_truncations(
        a in arb_auth(),
        oi in arb_sa(),
        src in arb_ipv6(),
        dst in arb_ipv6(),
        ts in arb_trailers(),
    ) {
        // Keep only trailers the receiver does not discard, so the full datagram is valid.
        let ts: Vec<_> = ts
            .into_iter()
            .filter(|(ty, v)| Trailer { ty: *ty, value: v }.kind() != TrailerKind::Discard)
            .collect();
        let trailers = emit_trailers(&ts);
        let d = bubble_datagram(&a, oi, src, dst, &trailers);
        let p = TeredoPacket::parse(&d).unwrap();
        prop_assert_eq!(p.auth, Some(a.view()));
        prop_assert_eq!(p.origin, Some(OriginIndication(oi)));
        prop_assert!(p.is_bubble());
        prop_assert_eq!((p.src(), p.dst()), (src, dst));
        prop_assert_eq!(p.trailers, &trailers[..]);
        prop_assert_eq!(p.ipv6_and_trailers(&d).len(), 40 + trailers.len());
        check_truncations(&d, d.len() - trailers.len())?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..200)) {
        if let Ok(p) = TeredoPacket::parse(&bytes) {
            // Accessors are infallible once parsed.
            let _ = (p.src(), p.dst(), p.next_header(), p.hop_limit(), p.is_bubble());
            prop_assert!(p.ipv6.len() >= 40);
            prop_assert_eq!(p.ipv6_offset + p.ipv6.len() + p.trailers.len(), bytes.len());
            let _ = p.ipv6_and_trailers(&bytes);
        }
        let _ = RouterSolicitation::parse(&bytes);
        let _ = RouterAdvertisement::parse(&bytes);
        let _ = Echo::parse(&bytes);
        let _ = Auth::parse(&bytes);
        let _ = OriginIndication::parse(&bytes);
        let mut total = 0;
        for t in Trailers::new(&bytes) {
            total += 2 + t.value.len();
            let _ = (t.kind(), t.nonce());
        }
        prop_assert!(total <= bytes.len());
        let _ = Trailers::validate(&bytes);
    }

    /// Arbitrary bytes behind a valid-looking prefix reach the deeper checks.
    #[test]
    fn structured_bytes_never_panic(
        a in proptest::option::of(arb_auth()),
        oi in proptest::option::of(arb_sa()),
        mut header in any::<[u8; 40]>(),
        nh in prop_oneof![Just(58u8), Just(59), any::<u8>()],
        icmp_type in prop_oneof![Just(128u8), Just(129), Just(133), Just(134), any::<u8>()],
        payload in vec(any::<u8>(), 0..120),
        extra in vec(any::<u8>(), 0..16),
        fix_len in any::<bool>(),
        fix_checksum in any::<bool>(),
    ) {
        let mut ipv6 = Vec::with_capacity(40 + payload.len());
        header[0] = 0x60 | (header[0] & 0x0f);
        header[6] = nh;
        if fix_len {
            header[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        ipv6.extend_from_slice(&header);
        ipv6.extend_from_slice(&payload);
        if let Some(b) = ipv6.get_mut(40) {
            *b = icmp_type;
        }
        if fix_checksum && ipv6.len() >= 44 {
            super::ipv6::finish_icmpv6(&mut ipv6);
        }
        let mut d = Vec::new();
        if let Some(a) = &a {
            let v = a.view();
            d.resize(v.buffer_len(), 0);
            v.emit(&mut d).unwrap();
        }
        if let Some(oi) = oi {
            let at = d.len();
            d.resize(at + 8, 0);
            OriginIndication(oi).emit(&mut d[at..]).unwrap();
        }
        d.extend_from_slice(&ipv6);
        d.extend_from_slice(&extra);
        if let Ok(p) = TeredoPacket::parse(&d) {
            let _ = RouterSolicitation::parse(p.ipv6);
            let _ = RouterAdvertisement::parse(p.ipv6);
            let _ = Echo::parse(p.ipv6);
            let _ = Trailers::new(p.trailers).count();
        }
        let _ = RouterSolicitation::parse(&ipv6);
        let _ = RouterAdvertisement::parse(&ipv6);
        let _ = Echo::parse(&ipv6);
    }
}

/// Regression: `Echo::parse` (like the RS and RA parsers) took the slice length as the packet
/// length without comparing it with the IPv6 payload length, so a truncated packet whose
/// missing bytes happen to cancel out in the one's-complement checksum was accepted.
#[test]
fn truncated_echo_with_colliding_checksum_is_rejected() {
    // Dropping the last two bytes lowers the pseudo-header length by 2 and removes the word
    // 0xfffd: -(0xfffd + 2) = -0xffff = 0 in one's complement, so the checksum still matches.
    let data = [1, 2, 3, 4, 0xff, 0xfd];
    let e = Echo {
        reply: false,
        id: 1,
        seq: 2,
        data: &data,
    };
    let mut buf = [0u8; 54];
    let src = "2001:0:c633:6401::1".parse().unwrap();
    let dst = "2001:db8::99".parse().unwrap();
    let n = e.emit(&mut buf, src, dst, 64).unwrap();
    assert_eq!(n, 54);
    assert!(super::ipv6::icmpv6_checksum_ok(&buf[..52]), "the collision");
    assert!(Echo::parse(&buf[..52]).is_err());
    assert!(Echo::parse(&buf).is_ok());
}

/// The same for a router advertisement cut just before its MTU option.
#[test]
fn ra_cut_before_mtu_option_with_colliding_checksum_is_rejected() {
    // The MTU option is 05 01 00 00 M M M M: pick the MTU so the removed words plus the
    // length change (8) sum to 0xffff.
    let mtu = u32::from(0xffffu16 - 0x0501 - 8) | (0xffff << 16); // hi word cancels itself
    let params = RaParams {
        auth: None,
        origin: "198.51.100.10:40000".parse().unwrap(),
        src: "fe80::8000:f227:39cc:9bfe".parse().unwrap(),
        dst: "fe80::ffff:ffff:fffe".parse().unwrap(),
        primary: Ipv4Addr::new(198, 51, 100, 1),
        mtu: Some(mtu),
    };
    let mut buf = [0u8; 256];
    let n = params.emit(&mut buf).unwrap();
    let ipv6 = &buf[8..n];
    let cut = &ipv6[..ipv6.len() - 8];
    assert!(super::ipv6::icmpv6_checksum_ok(cut), "the collision");
    assert!(RouterAdvertisement::parse(cut).is_err());
    assert_eq!(RouterAdvertisement::parse(ipv6).unwrap().mtu, Some(mtu));
}
