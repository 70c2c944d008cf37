//! RFC 6081 §5.3 in the client: the request before the first RS, the answer, the secondary
//! comparison a UPnP client makes even after a cone probe got through, the single-NAT test
//! and the status line.

use super::net::*;
use crate::addr::TeredoAddr;
use crate::client::*;
use crate::io::{Kind, Local, Output, UpnpRequest};
use crate::wire::auth::Auth;
use crate::wire::ndp::RaParams;
use crate::wire::TeredoPacket;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::net::{Ipv6Addr, SocketAddrV4};

fn client(p: Profile) -> Client {
    Client::new(
        ClientConfig::profile(p, P),
        ChaCha8Rng::seed_from_u64(5),
        PRIVATE,
        t0(),
    )
}

/// Windows 7 with the cone probe switched on (the profile skips it, RFC 5991 §3.2): how
/// the probe and a UPnP lease combine.
fn cone_probing_win7() -> Client {
    let mut cfg = ClientConfig::profile(Profile::Win7, P);
    cfg.cone_probe = true;
    Client::new(cfg, ChaCha8Rng::seed_from_u64(5), PRIVATE, t0())
}

/// The next RS: (destination, nonce, link-local source).
fn next_rs(c: &mut Client) -> (SocketAddrV4, [u8; 8], Ipv6Addr) {
    let mut buf = [0u8; MAX_RS_LEN];
    let t = next_udp(c, &mut buf).expect("an RS");
    assert_eq!(t.kind, Kind::RouterSolicitation);
    let pkt = TeredoPacket::parse(&buf[..t.len]).unwrap();
    (t.to, pkt.auth.unwrap().nonce, pkt.src())
}

fn ra_with_origin(nonce: [u8; 8], dst: Ipv6Addr, origin: SocketAddrV4) -> Vec<u8> {
    let p = RaParams {
        auth: Some(Auth::nonce_only(nonce)),
        origin,
        src: crate::addr::server_link_local(P),
        dst,
        primary: P,
        mtu: None,
    };
    let mut buf = vec![0u8; 256];
    let n = p.emit(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn only_win7_asks_and_asks_first() {
    for &p in Profile::ALL {
        let mut c = client(p);
        let first = c.poll_output(&mut [0u8; 256]);
        if p == Profile::Win7 {
            assert_eq!(
                first,
                Some(Output::Upnp(UpnpRequest::AddPortMapping {
                    internal: PRIVATE,
                    lease: UPNP_LEASE,
                }))
            );
            assert_eq!(first.unwrap().kind(), Kind::UpnpRequest);
            assert!(first.unwrap().is_empty());
        } else {
            assert!(matches!(first, Some(Output::Udp { .. })), "{p}: {first:?}");
        }
    }
    // Without symmetric NAT support (its dependency) the knob does nothing.
    let mut cfg = ClientConfig::profile(Profile::Rfc5991, P);
    cfg.upnp = true;
    let mut c = Client::new(cfg, ChaCha8Rng::seed_from_u64(1), PRIVATE, t0());
    assert!(matches!(
        c.poll_output(&mut [0u8; 256]),
        Some(Output::Udp { .. })
    ));
}

#[test]
fn upnp_symmetric_nat_cone_probe_then_secondary_comparison() {
    let now = t0();
    let mut c = cone_probing_win7();
    let leased = EXT;
    c.handle_upnp(now, UpnpAnswer::Mapped(leased));
    assert_eq!(c.upnp_mapping(), Some(leased));
    // The cone RS: the lease lets the answer from the secondary address in.
    let (to, nonce, ll) = next_rs(&mut c);
    assert_eq!(to, SocketAddrV4::new(P, 3544));
    let v = ra_with_origin(nonce, ll, leased);
    assert_eq!(
        c.handle_udp(now, Local::Primary, SocketAddrV4::new(S, 3544), &v),
        Ok(Handled::RouterAdvertisement)
    );
    // Not qualified as cone: the secondary comparison follows.
    assert_eq!(c.state(), State::Probe(ProbePhase::Secondary));
    let (to, nonce, ll) = next_rs(&mut c);
    assert_eq!(to, SocketAddrV4::new(S, 3544));
    let m2 = SocketAddrV4::new(*leased.ip(), 50123);
    let v = ra_with_origin(nonce, ll, m2);
    assert!(c
        .handle_udp(now, Local::Primary, SocketAddrV4::new(S, 3544), &v)
        .is_ok());
    assert_eq!(c.state(), State::Qualified);
    assert_eq!(c.nat_type(), NatType::SymmetricPort);
    // The address embeds the leased mapping: reachable from anyone.
    let a = TeredoAddr::from_ipv6(&c.address().unwrap()).unwrap();
    assert_eq!(a.mapped, leased);
    let st = c.status();
    assert!(st.upnp);
    assert!(st
        .to_string()
        .contains("NAT Special Behaviour   : UPNP: Yes"));
    assert!(c.upnp_rule());
    assert_eq!(c.counters().upnp_mappings, 1);
}

#[test]
fn cone_nat_with_upnp_is_still_cone_and_nested_nat_is_not_single() {
    let now = t0();
    let mut c = cone_probing_win7();
    // The IGD's mapping differs from what the server will see: a NAT beyond the IGD.
    c.handle_upnp(now, UpnpAnswer::Mapped(EXT_Y));
    let (_, nonce, ll) = next_rs(&mut c);
    let v = ra_with_origin(nonce, ll, EXT);
    c.handle_udp(now, Local::Primary, SocketAddrV4::new(S, 3544), &v)
        .unwrap();
    let (_, nonce, ll) = next_rs(&mut c);
    let v = ra_with_origin(nonce, ll, EXT);
    c.handle_udp(now, Local::Primary, SocketAddrV4::new(S, 3544), &v)
        .unwrap();
    assert_eq!(c.nat_type(), NatType::Cone);
    assert!(c.status().upnp);
    assert!(!c.upnp_rule(), "not symmetric, and not a single NAT");
}

#[test]
fn a_refusal_leaves_the_extension_off() {
    let now = t0();
    let mut c = cone_probing_win7();
    c.handle_upnp(now, UpnpAnswer::Failed);
    assert_eq!(c.upnp_mapping(), None);
    assert!(!c.status().upnp);
    assert_eq!(c.counters().upnp_failures, 1);
    // A cone RA now qualifies as cone at once (RFC 4380 phase 1).
    let (_, nonce, ll) = next_rs(&mut c);
    let v = ra_with_origin(nonce, ll, EXT);
    c.handle_udp(now, Local::Primary, SocketAddrV4::new(S, 3544), &v)
        .unwrap();
    assert_eq!(c.state(), State::Qualified);
    assert_eq!(c.nat_type(), NatType::Cone);
}

#[test]
fn release_deletes_the_granted_mapping() {
    let now = t0();
    let mut c = client(Profile::Win7);
    let _ = c.poll_output(&mut [0u8; 256]);
    c.release_upnp();
    assert!(
        matches!(c.poll_output(&mut [0u8; 256]), Some(Output::Udp { .. })),
        "nothing to delete before a mapping was granted"
    );
    c.handle_upnp(now, UpnpAnswer::Mapped(EXT));
    c.release_upnp();
    assert_eq!(
        c.poll_output(&mut [0u8; 256]),
        Some(Output::Upnp(UpnpRequest::DeletePortMapping {
            external_port: EXT.port(),
            internal: PRIVATE,
        }))
    );
    assert!(!c.status().upnp);
}
