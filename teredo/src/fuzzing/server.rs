//! The server's only input: a UDP datagram ([`Server::handle_udp`] + [`Server::poll_output`]).

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::addr::{is_ipv4_global_unicast, TeredoAddr, TEREDO_PORT};
use crate::io::{Kind, Local, Output};
use crate::server::{Handled, Server, ServerConfig};
use crate::wire::ndp::RouterAdvertisement;
use crate::wire::packet::MAX_UDP_PAYLOAD;
use crate::wire::TeredoPacket;

use super::{assert_complete_ipv6, Input, MAX_OPS};

/// The server's primary address in the harness (the lab's server, so lab captures replay).
pub const PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// Input: one config byte (bit 0: no MTU option, bit 1: native forwarding off, bit 2: Miredo's
/// 88-byte ICMPv6 cap, bit 3: RS rate limit of 1/s in a 4-bucket table), then records `[local: u8][from: 6 bytes][len: u16][datagram]`.
/// Every datagram either yields exactly one output that re-parses as what was accepted, or
/// an error and no output.
pub fn server_datagram(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let mut cfg = ServerConfig::new(PRIMARY);
    if flags & 1 != 0 {
        cfg.mtu = None;
    }
    cfg.native = flags & 2 == 0;
    if flags & 4 != 0 {
        cfg.max_icmpv6_payload = 88;
    }
    if flags & 8 != 0 {
        cfg.rs_rate_limit = 1;
        cfg.rs_rate_buckets = 4;
    }
    let mut server = Server::new(cfg);
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD];
    let now = super::epoch();
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let local = if input.u8() & 1 == 0 {
            Local::Primary
        } else {
            Local::Secondary
        };
        let from = input.addr();
        let datagram = input.chunk();
        let r = server.handle_udp(now, local, from, datagram);
        let out = server.poll_output(&mut buf);
        match (r, out) {
            (Err(_), None) => {}
            (Err(reason), Some(o)) => panic!("dropped ({reason:?}) but output {o:?}"),
            (Ok(h), None) => panic!("accepted ({h:?}) but no output"),
            (Ok(h), Some(o)) => check_output(&cfg, local, from, datagram, h, o, &buf),
        }
        assert_eq!(
            server.poll_output(&mut buf),
            None,
            "one output per datagram"
        );
    }
}

fn check_output(
    cfg: &ServerConfig,
    local: Local,
    from: SocketAddrV4,
    datagram: &[u8],
    h: Handled,
    o: Output,
    buf: &[u8],
) {
    let ours = |a: SocketAddrV4| {
        a.port() == TEREDO_PORT && (*a.ip() == cfg.primary || *a.ip() == cfg.secondary)
    };
    assert!(!ours(from), "a datagram from ourselves was accepted");
    match (h, o) {
        (
            Handled::RouterSolicitation { cone, reply_from },
            Output::Udp {
                local: from_local,
                to,
                len,
                kind,
            },
        ) => {
            assert_eq!(from_local, reply_from);
            assert_eq!(kind, Kind::RouterAdvertisement);
            // RFC 4380 §5.3.2: a cone RS is answered from the other address.
            assert_eq!(reply_from, if cone { local.other() } else { local });
            assert_eq!(to, from, "RA goes back to the RS's source");
            let p = TeredoPacket::parse(&buf[..len]).expect("RA re-parses");
            assert_eq!(p.origin.map(|o| o.0), Some(from), "RA origin = RS source");
            let rs = TeredoPacket::parse(datagram).expect("accepted RS parses");
            assert_eq!(p.auth.map(|a| a.nonce), rs.auth.map(|a| a.nonce));
            let ra = RouterAdvertisement::parse(p.ipv6).expect("RA parses as an RA");
            assert_eq!(ra.dst, rs.src());
        }
        (
            Handled::ForwardedToClient {
                bubble,
                with_origin,
            },
            Output::Udp {
                local: from_local,
                to,
                len,
                kind,
            },
        ) => {
            assert_eq!(from_local, Local::Primary);
            assert_eq!(kind, relayed_kind(bubble));
            assert!(is_ipv4_global_unicast(*to.ip()), "relayed to {to}");
            assert!(!ours(to), "relayed to ourselves");
            let p = TeredoPacket::parse_keeping_trailers(&buf[..len])
                .expect("relayed packet re-parses");
            assert_eq!(p.origin.is_some(), with_origin);
            if with_origin {
                assert_eq!(p.origin.map(|o| o.0), Some(from));
            }
            assert!(p.auth.is_none(), "relayed packets carry no auth header");
            let d = TeredoAddr::from_ipv6(&p.dst()).expect("relayed to a Teredo address");
            assert_eq!(d.mapped, to, "relayed to the embedded mapping");
            let orig =
                TeredoPacket::parse_keeping_trailers(datagram).expect("accepted datagram parses");
            assert_eq!(
                p.ipv6_and_trailers(&buf[..len]),
                orig.ipv6_and_trailers(datagram),
                "relayed unchanged"
            );
        }
        (Handled::ForwardedNative { bubble }, Output::Ipv6 { len, kind }) => {
            assert!(cfg.native);
            assert_eq!(kind, relayed_kind(bubble));
            assert_complete_ipv6(&buf[..len], "native packet");
            let orig = TeredoPacket::parse(datagram).expect("accepted datagram parses");
            assert_eq!(
                &buf[..len],
                orig.ipv6,
                "forwarded unchanged, trailers stripped"
            );
        }
        (h, o) => panic!("{h:?} produced {o:?}"),
    }
}

/// The kind of a relayed packet: the server relays only bubbles and ICMPv6.
fn relayed_kind(bubble: bool) -> Kind {
    if bubble {
        Kind::Bubble
    } else {
        Kind::Icmpv6
    }
}
