//! The wire parsers: packet, auth, origin indication, trailers, ICMPv6 echo, RS, RA.

use crate::addr::{is_link_local, ALL_ROUTERS};
use crate::wire::ipv6::Echo;
use crate::wire::ndp::{RouterAdvertisement, RouterSolicitation};
use crate::wire::origin::ORIGIN_LEN;
use crate::wire::trailer::TrailerKind;
use crate::wire::{Auth, OriginIndication, TeredoPacket, Trailers};

use super::assert_complete_ipv6;

/// Runs every wire parser over `data` (as a whole datagram, and the IPv6 parsers over the
/// IPv6 part of a datagram that parsed). Whatever parses must re-emit to the same bytes
/// (auth, origin indication) or to a packet that parses to the same value (echo), and lengths
/// must add up.
pub fn wire(data: &[u8]) {
    auth(data);
    origin(data);
    trailers(data);
    ipv6_parsers(data);
    if let Ok(p) = TeredoPacket::parse(data) {
        assert_complete_ipv6(p.ipv6, "TeredoPacket::ipv6");
        assert_eq!(
            p.ipv6_offset + p.ipv6.len() + p.trailers.len(),
            data.len(),
            "parts do not cover the datagram"
        );
        assert_eq!(&data[p.ipv6_offset..p.ipv6_offset + p.ipv6.len()], p.ipv6);
        assert_eq!(
            p.ipv6_and_trailers(data).len(),
            p.ipv6.len() + p.trailers.len()
        );
        let mut pos = 0;
        if let Some(a) = p.auth {
            let (again, len) = Auth::parse(data).expect("auth parsed within the packet");
            assert_eq!(again, a);
            pos += len;
        }
        if let Some(o) = p.origin {
            assert_eq!(OriginIndication::parse(&data[pos..]), Ok(o));
            pos += ORIGIN_LEN;
        }
        assert_eq!(pos, p.ipv6_offset, "auth and origin lengths");
        for t in Trailers::new(p.trailers) {
            assert_ne!(t.kind(), TrailerKind::Discard, "validated trailers");
        }
        let _ = (
            p.src(),
            p.dst(),
            p.hop_limit(),
            p.is_bubble(),
            p.ipv6_payload(),
        );
        ipv6_parsers(p.ipv6);
    }
}

fn auth(data: &[u8]) {
    if let Ok((a, len)) = Auth::parse(data) {
        assert!(len <= data.len());
        assert_eq!(a.buffer_len(), len);
        let mut out = vec![0u8; len];
        assert_eq!(a.emit(&mut out), Ok(len));
        assert_eq!(&out[..], &data[..len], "auth re-emits to the same bytes");
    }
}

fn origin(data: &[u8]) {
    if let Ok(o) = OriginIndication::parse(data) {
        let mut out = [0u8; ORIGIN_LEN];
        assert_eq!(o.emit(&mut out), Ok(ORIGIN_LEN));
        assert_eq!(
            &out[..],
            &data[..ORIGIN_LEN],
            "origin re-emits to the same bytes"
        );
    }
}

fn trailers(data: &[u8]) {
    let mut used = 0;
    for t in Trailers::new(data) {
        used += 2 + t.value.len();
        if let Some(n) = t.nonce() {
            assert_eq!(&n[..], t.value);
        }
    }
    assert!(used <= data.len(), "trailers beyond the bytes");
    if Trailers::validate(data).is_ok() {
        assert!(Trailers::new(data).all(|t| t.kind() != TrailerKind::Discard));
    }
}

fn ipv6_parsers(ipv6: &[u8]) {
    if let Ok(e) = Echo::parse(ipv6) {
        assert_complete_ipv6(ipv6, "echo");
        let (src, dst) = (ipv6_addr(ipv6, 8), ipv6_addr(ipv6, 24));
        let mut out = vec![0u8; ipv6.len()];
        let n = e
            .emit(&mut out, src, dst, ipv6[7])
            .expect("an echo fits in the bytes it came from");
        assert_eq!(n, ipv6.len());
        assert_eq!(Echo::parse(&out), Ok(e), "echo re-emits to the same value");
    }
    if let Ok(rs) = RouterSolicitation::parse(ipv6) {
        assert_complete_ipv6(ipv6, "RS");
        assert!(is_link_local(&rs.src));
        assert_eq!(ipv6_addr(ipv6, 24), ALL_ROUTERS);
    }
    if let Ok(ra) = RouterAdvertisement::parse(ipv6) {
        assert_complete_ipv6(ipv6, "RA");
        assert_eq!(ra.src, ipv6_addr(ipv6, 8));
        assert_eq!(ra.dst, ipv6_addr(ipv6, 24));
    }
}

fn ipv6_addr(ipv6: &[u8], at: usize) -> std::net::Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&ipv6[at..at + 16]);
    o.into()
}
