//! The bad-input corpus (issue 7, part 2): hostile and malformed inputs for the server and
//! the relay, as data.
//!
//! Each [`Kind`] says which component it targets ([`Target`]), how its bytes reach it
//! ([`Via`]: a plain UDP socket, a raw `IP_HDRINCL` socket for sources no socket can bind,
//! or the relay's native side) and what must happen ([`Expect`]): dropped with one
//! [`DropReason`] label, or accepted (the RFC 6081 trailer classes a receiver skips). The
//! e2e test `bad_input` walks the table over real sockets; the addresses below are the ones
//! it gives the namespace.
//!
//! The bytes are built with the core's own wire emitters (`teredo::wire`), then broken on
//! purpose: a header cut short, a length that lies, an indicator in the wrong place.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use teredo::addr::{LL_WINDOWS_CONE, LL_WINDOWS_RESTRICTED};
use teredo::wire::ipv6::{emit_bubble, emit_ipv6_header, finish_icmpv6, Echo};
use teredo::wire::ndp::emit_rs;
use teredo::wire::trailer::Trailers;
use teredo::wire::{Auth, OriginIndication};
use teredo::{DropReason, TeredoAddr};

/// The server's primary address (embedded in the prefix).
pub const P: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The server's secondary address.
pub const S: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The server's primary socket.
pub const P_UDP: SocketAddrV4 = SocketAddrV4::new(P, 3544);
/// The relay's socket.
pub const RELAY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 30), 3545);
/// Client A: sends to the server (an RS from it must always get its RA).
pub const A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 10), 40000);
/// Client B: another client of the server (destination of relayed bubbles).
pub const B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 11), 40001);
/// Client T: the relay's trusted peer (the test runs its bubble exchange first).
pub const T: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 40), 40040);
/// Client U: a Teredo client the relay has never heard of.
pub const U: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 41), 40041);
/// Client M: a host that claims to be T from another mapping.
pub const M: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 42), 40042);
/// The native IPv6 host behind the relay (and the server's native side).
pub const NATIVE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
/// Flags of the clients' Teredo addresses (RFC 5991 random bits, cone bit clear).
pub const FLAGS: u16 = 0x1027;

/// Every sender address the namespace needs on `lo` (the server's and the relay's too).
pub const LOCAL_ADDRS: [Ipv4Addr; 8] = [
    P,
    S,
    *RELAY.ip(),
    *A.ip(),
    *B.ip(),
    *T.ip(),
    *U.ip(),
    *M.ip(),
];

/// The Teredo address of a client of server `server` at mapping `mapped`.
pub fn teredo(server: Ipv4Addr, mapped: SocketAddrV4) -> Ipv6Addr {
    TeredoAddr {
        server,
        flags: FLAGS,
        mapped,
    }
    .to_ipv6()
}

/// Teredo address of client A (server P).
pub fn ta() -> Ipv6Addr {
    teredo(P, A)
}

/// Teredo address of client B (server P).
pub fn tb() -> Ipv6Addr {
    teredo(P, B)
}

/// Teredo address of the relay's trusted peer T (server P).
pub fn tt() -> Ipv6Addr {
    teredo(P, T)
}

/// Which component a kind is sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The Teredo server's primary UDP socket.
    Server,
    /// The relay's UDP socket.
    RelayUdp,
    /// The relay's native IPv6 side.
    RelayNative,
}

/// How the bytes are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// From a UDP socket bound to this address.
    Udp(SocketAddrV4),
    /// From this source, forged with a raw `IP_HDRINCL` socket (no socket can bind it).
    Forged(SocketAddrV4),
    /// Into the relay's native side as a complete IPv6 packet.
    Native,
}

/// What the component must do with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Dropped, counted under this reason, nothing sent anywhere.
    Drop(DropReason),
    /// Accepted and handled as the valid packet it wraps (server: answered with an RA;
    /// relay: forwarded to native IPv6).
    Accepted,
}

/// One entry of the corpus.
#[derive(Clone, Debug)]
pub struct Kind {
    /// Unique name, `<component>/<what>`.
    pub name: String,
    /// Component it is sent to.
    pub target: Target,
    /// How it is sent.
    pub via: Via,
    /// The UDP payload (or, for [`Via::Native`], the IPv6 packet).
    pub bytes: Vec<u8>,
    /// The verdict.
    pub expect: Expect,
}

// ---- builders ---------------------------------------------------------------------------

/// An IPv6 packet with `payload` after the fixed header.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 40 + payload.len()];
    emit_ipv6_header(&mut b, src, dst, next_header, hop, payload.len()).expect("IPv6 header fits");
    b[40..].copy_from_slice(payload);
    b
}

/// A bubble (no payload, next header 59).
pub fn bubble(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut b = vec![0u8; 40];
    emit_bubble(&mut b, src, dst, 255).expect("bubble fits");
    b
}

/// An ICMPv6 echo request (or reply) with `data_len` bytes of data.
pub fn echo(src: Ipv6Addr, dst: Ipv6Addr, reply: bool, seq: u16, data_len: usize) -> Vec<u8> {
    let data = vec![0x5a; data_len];
    let e = Echo {
        reply,
        id: 0x7e7e,
        seq,
        data: &data,
    };
    let mut b = vec![0u8; 48 + data_len];
    let n = e.emit(&mut b, src, dst, 64).expect("echo fits");
    b.truncate(n);
    b
}

/// Any ICMPv6 message: `ty`, `code`, then `body`, with a valid checksum.
pub fn icmpv6(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, ty: u8, code: u8, body: &[u8]) -> Vec<u8> {
    let mut icmp = vec![ty, code, 0, 0];
    icmp.extend_from_slice(body);
    let mut b = ipv6(src, dst, 58, hop, &icmp);
    finish_icmpv6(&mut b);
    b
}

/// A router solicitation datagram from `src` (a link-local address), optionally with a
/// nonce-only authentication header.
pub fn rs(src: Ipv6Addr, nonce: Option<[u8; 8]>) -> Vec<u8> {
    let auth = nonce.map(Auth::nonce_only);
    let mut b = vec![0u8; 128];
    let n = emit_rs(&mut b, auth.as_ref(), src, false).expect("RS fits");
    b.truncate(n);
    b
}

/// A nonce-only authentication header.
pub fn auth_header(nonce: [u8; 8]) -> Vec<u8> {
    let a = Auth::nonce_only(nonce);
    let mut b = vec![0u8; a.buffer_len()];
    a.emit(&mut b).expect("auth fits");
    b
}

/// An origin indication for `mapping`.
pub fn origin(mapping: SocketAddrV4) -> Vec<u8> {
    let mut b = vec![0u8; 8];
    OriginIndication(mapping).emit(&mut b).expect("OI fits");
    b
}

/// An RFC 6081 trailer.
pub fn trailer(ty: u8, value: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 2 + value.len()];
    Trailers::emit(ty, value, &mut b).expect("trailer fits");
    b
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The RS every server kind is followed by: client A, restricted, with a nonce.
pub fn valid_rs() -> Vec<u8> {
    rs(LL_WINDOWS_RESTRICTED, Some(NONCE))
}

/// The nonce of [`valid_rs`].
pub const NONCE: [u8; 8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];

/// IPv6 packets with a routing header (type 0, CVE-2006-6263): next header 43, then the
/// extension (ICMPv6 inside, one intermediate address).
pub fn with_routing_header(src: Ipv6Addr, dst: Ipv6Addr, via: Ipv6Addr) -> Vec<u8> {
    // Next header 58, Hdr Ext Len 2 (16 bytes of address), Routing Type 0, Segments Left 1,
    // reserved 4 bytes, then the address.
    let mut ext = vec![58, 2, 0, 1, 0, 0, 0, 0];
    ext.extend_from_slice(&via.octets());
    ext.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
    ipv6(src, dst, 43, 64, &ext)
}

/// One representative address of every IPv4 range the global-unicast check excludes
/// (TEREDO.md §10 (a)), with its label.
pub const NON_GLOBAL_V4: [(&str, Ipv4Addr); 9] = [
    ("0/8", Ipv4Addr::new(0, 1, 2, 3)),
    ("10/8", Ipv4Addr::new(10, 1, 2, 3)),
    ("127/8", Ipv4Addr::new(127, 0, 0, 1)),
    ("169.254/16", Ipv4Addr::new(169, 254, 1, 1)),
    ("172.16/12", Ipv4Addr::new(172, 16, 0, 1)),
    ("192.168/16", Ipv4Addr::new(192, 168, 1, 1)),
    ("192.88.99/24", Ipv4Addr::new(192, 88, 99, 1)),
    ("224/4", Ipv4Addr::new(224, 0, 0, 1)),
    ("255.255.255.255", Ipv4Addr::BROADCAST),
];

/// Non-global outer sources sent to the server: bound where a socket can (on `lo`), forged
/// where none can.
pub const NON_GLOBAL_SOURCES: [(&str, SocketAddrV4, bool); 3] = [
    (
        "10/8",
        SocketAddrV4::new(Ipv4Addr::new(10, 9, 9, 9), 40100),
        false,
    ),
    (
        "224/4",
        SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 1), 40101),
        true,
    ),
    (
        "255.255.255.255",
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 40102),
        true,
    ),
];

// ---- the corpus -------------------------------------------------------------------------

fn kind(name: impl Into<String>, target: Target, via: Via, bytes: Vec<u8>, expect: Expect) -> Kind {
    Kind {
        name: name.into(),
        target,
        via,
        bytes,
        expect,
    }
}

/// The server's part of the corpus.
pub fn server_kinds() -> Vec<Kind> {
    use DropReason as R;
    let srv = |name: &str, bytes: Vec<u8>, r: R| {
        kind(
            format!("server/{name}"),
            Target::Server,
            Via::Udp(A),
            bytes,
            Expect::Drop(r),
        )
    };
    let rs_ok = valid_rs();
    let rs_ip = rs(LL_WINDOWS_RESTRICTED, None);
    let ll = LL_WINDOWS_RESTRICTED;
    let mut v = vec![
        srv("empty datagram", vec![], R::Truncated),
        srv("39-byte IPv6 header", rs_ip[..39].to_vec(), R::Truncated),
        srv("auth indicator only", vec![0, 1], R::Truncated),
        srv(
            "auth header cut inside the nonce",
            auth_header(NONCE)[..9].to_vec(),
            R::Truncated,
        ),
        srv(
            "auth ID-len overruns the datagram",
            cat(&[&[0, 1, 200, 0], &[0u8; 9], &rs_ip]),
            R::Truncated,
        ),
        srv(
            "origin indication cut short",
            origin(B)[..5].to_vec(),
            R::Truncated,
        ),
        srv(
            "IPv4 inner packet",
            {
                let mut b = rs_ip.clone();
                b[0] = 0x45;
                b
            },
            R::BadIpVersion,
        ),
        srv(
            "IP version 0",
            {
                let mut b = rs_ip.clone();
                b[0] &= 0x0f;
                b
            },
            R::BadIpVersion,
        ),
        srv(
            "payload length beyond the datagram",
            {
                let mut b = rs_ip.clone();
                b[5] += 1;
                b
            },
            R::BadLength,
        ),
        srv(
            "payload length 65535 in a small datagram",
            {
                let mut b = rs_ip.clone();
                b[4] = 0xff;
                b[5] = 0xff;
                b
            },
            R::BadLength,
        ),
        srv(
            "auth header after an origin indication",
            cat(&[&origin(A), &auth_header(NONCE), &rs_ip]),
            R::BadEncapsulation,
        ),
        srv(
            "origin indication sent to the server",
            cat(&[&origin(A), &rs_ip]),
            R::UnexpectedOrigin,
        ),
        srv(
            "trailer class 01 (discard) after an RS",
            cat(&[&rs_ok, &trailer(0x41, &[1, 2])]),
            R::MandatoryTrailer,
        ),
        srv(
            "RS with a bad checksum",
            {
                let mut b = rs_ip.clone();
                b[42] ^= 0xff;
                b
            },
            R::BadChecksum,
        ),
        srv(
            "RS with hop limit 64",
            icmpv6(ll, teredo::addr::ALL_ROUTERS, 64, 133, 0, &[0; 4]),
            R::Malformed,
        ),
        srv(
            "RS with code 1",
            icmpv6(ll, teredo::addr::ALL_ROUTERS, 255, 133, 1, &[0; 4]),
            R::Malformed,
        ),
        srv(
            "RS from a non-link-local source",
            icmpv6(ta(), teredo::addr::ALL_ROUTERS, 255, 133, 0, &[0; 4]),
            R::NotForUs,
        ),
        srv(
            "RA sent to the server",
            icmpv6(
                ll,
                teredo::addr::ALL_ROUTERS,
                255,
                134,
                0,
                &[64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            R::NotForUs,
        ),
        srv(
            "echo to the server's own link-local address",
            echo(ll, teredo::addr::server_link_local(P), false, 1, 8),
            R::NotForUs,
        ),
        srv(
            "UDP inside (neither bubble nor ICMPv6)",
            ipv6(ta(), tb(), 17, 64, &[0x9c, 0x40, 0x00, 0x35, 0, 8, 0, 0]),
            R::NotBubbleOrIcmpv6,
        ),
        srv(
            "routing header type 0 (CVE-2006-6263)",
            with_routing_header(ta(), tb(), NATIVE),
            R::NotBubbleOrIcmpv6,
        ),
        srv(
            "ICMPv6 over the 1240-byte cap",
            echo(ta(), tb(), false, 1, 1300),
            R::TooLarge,
        ),
        srv(
            "largest UDP datagram (65507 bytes) of ICMPv6",
            echo(ta(), tb(), false, 1, 65_507 - 48),
            R::TooLarge,
        ),
        srv(
            "spoofed Teredo source (mapping is not the sender)",
            bubble(tb(), ta()),
            R::SpoofedSource,
        ),
        srv(
            "non-Teredo source to a foreign server's client",
            bubble(NATIVE, teredo(Ipv4Addr::new(192, 0, 2, 77), B)),
            R::NotAllowed,
        ),
        srv(
            "multicast destination ff0e::1",
            echo(ta(), "ff0e::1".parse().unwrap(), false, 1, 8),
            R::NonGlobalDestination,
        ),
        srv(
            "loopback destination ::1",
            echo(ta(), Ipv6Addr::LOCALHOST, false, 1, 8),
            R::NonGlobalDestination,
        ),
        srv(
            "link-local destination fe80::1",
            echo(ta(), "fe80::1".parse().unwrap(), false, 1, 8),
            R::NonGlobalDestination,
        ),
        srv(
            "IPv4-mapped destination ::ffff:198.51.100.11",
            echo(ta(), "::ffff:198.51.100.11".parse().unwrap(), false, 1, 8),
            R::NonGlobalDestination,
        ),
        srv(
            "Teredo destination embedding the server's own address (loop)",
            bubble(ta(), teredo(P, P_UDP)),
            R::Loop,
        ),
    ];
    for (label, ip) in NON_GLOBAL_V4 {
        v.push(srv(
            &format!("Teredo destination embedding {label}"),
            bubble(ta(), teredo(P, SocketAddrV4::new(ip, 40000))),
            R::NonGlobalMappedAddress,
        ));
    }
    for (label, from, forged) in NON_GLOBAL_SOURCES {
        let via = if forged {
            Via::Forged(from)
        } else {
            Via::Udp(from)
        };
        v.push(kind(
            format!("server/outer source {label}"),
            Target::Server,
            via,
            rs(LL_WINDOWS_CONE, Some(NONCE)),
            Expect::Drop(R::NonGlobalSource),
        ));
    }
    v.push(kind(
        "server/datagram from the server's own address and port (loop)",
        Target::Server,
        Via::Forged(SocketAddrV4::new(S, 3544)),
        rs(LL_WINDOWS_RESTRICTED, Some(NONCE)),
        Expect::Drop(R::Loop),
    ));
    // Trailer classes a receiver skips: the RS is answered as if they were not there.
    for (class, ty) in [("00", 0x02), ("10", 0x82), ("11", 0xc2)] {
        v.push(kind(
            format!("server/unknown trailer class {class} (skipped)"),
            Target::Server,
            Via::Udp(A),
            cat(&[&rs_ok, &trailer(ty, &[9, 9, 9])]),
            Expect::Accepted,
        ));
    }
    v
}

/// The relay's part of the corpus (its UDP side and its native side). The trusted peer T
/// must have completed its bubble exchange first.
pub fn relay_kinds() -> Vec<Kind> {
    use DropReason as R;
    let from_t = |name: &str, bytes: Vec<u8>, r: R| {
        kind(
            format!("relay-udp/{name}"),
            Target::RelayUdp,
            Via::Udp(T),
            bytes,
            Expect::Drop(r),
        )
    };
    let native = |name: &str, bytes: Vec<u8>, r: R| {
        kind(
            format!("relay-native/{name}"),
            Target::RelayNative,
            Via::Native,
            bytes,
            Expect::Drop(r),
        )
    };
    let up = echo(tt(), NATIVE, true, 1, 16);
    let down = |dst: Ipv6Addr| echo(NATIVE, dst, false, 1, 16);
    let mut v = vec![
        from_t("20-byte datagram", up[..20].to_vec(), R::Truncated),
        from_t(
            "auth ID-len overruns the datagram",
            cat(&[&[0, 1, 255, 255], &up]),
            R::Truncated,
        ),
        from_t(
            "IPv4 inner packet",
            {
                let mut b = up.clone();
                b[0] = 0x45;
                b
            },
            R::BadIpVersion,
        ),
        from_t(
            "payload length beyond the datagram",
            {
                let mut b = up.clone();
                b[5] += 8;
                b
            },
            R::BadLength,
        ),
        from_t(
            "auth header after an origin indication",
            cat(&[&origin(T), &auth_header(NONCE), &up]),
            R::BadEncapsulation,
        ),
        from_t(
            "trailer class 01 (discard)",
            cat(&[&up, &trailer(0x7f, &[])]),
            R::MandatoryTrailer,
        ),
        from_t(
            "non-Teredo source",
            echo("2001:db8::5".parse().unwrap(), NATIVE, true, 1, 16),
            R::NotTeredoSource,
        ),
        // Its source matches its address: a new trusted peer by default (--unknown-peers
        // accept; `drop` is Miredo's behaviour, tested in teredo's relay tests).
        kind(
            "relay-udp/Teredo client it never heard of, mapping matches",
            Target::RelayUdp,
            Via::Udp(U),
            echo(teredo(P, U), NATIVE, true, 1, 16),
            Expect::Accepted,
        ),
        kind(
            "relay-udp/spoofed source (the trusted peer's address from another mapping)",
            Target::RelayUdp,
            Via::Udp(M),
            echo(tt(), NATIVE, true, 1, 16),
            Expect::Drop(R::SpoofedSource),
        ),
        from_t(
            "client packet to a Teredo destination",
            echo(tt(), tb(), false, 1, 16),
            R::TeredoDestination,
        ),
        from_t(
            "multicast destination ff0e::1",
            echo(tt(), "ff0e::1".parse().unwrap(), false, 1, 16),
            R::NonGlobalDestination,
        ),
        from_t(
            "link-local destination fe80::1",
            echo(tt(), "fe80::1".parse().unwrap(), false, 1, 16),
            R::NonGlobalDestination,
        ),
        from_t(
            "loopback destination ::1",
            echo(tt(), Ipv6Addr::LOCALHOST, false, 1, 16),
            R::NonGlobalDestination,
        ),
        native("20-byte packet", down(tt())[..20].to_vec(), R::Truncated),
        native(
            "IPv4 packet",
            {
                let mut b = down(tt());
                b[0] = 0x45;
                b
            },
            R::BadIpVersion,
        ),
        native(
            "payload length beyond the packet",
            {
                let mut b = down(tt());
                b[5] += 8;
                b
            },
            R::BadLength,
        ),
        native(
            "larger than one UDP datagram (65575 bytes)",
            echo(NATIVE, tt(), false, 1, 65_535 - 8),
            R::TooLarge,
        ),
        native(
            "multicast destination ff0e::1",
            down("ff0e::1".parse().unwrap()),
            R::NonGlobalDestination,
        ),
        native(
            "non-Teredo destination",
            down("2001:db8::5".parse().unwrap()),
            R::NotTeredoDestination,
        ),
        native(
            "Teredo destination with port 0",
            down(teredo(P, SocketAddrV4::new(*T.ip(), 0))),
            R::NonGlobalMappedAddress,
        ),
        native(
            "Teredo destination whose server is 192.168.1.1",
            down(teredo(Ipv4Addr::new(192, 168, 1, 1), T)),
            R::NonGlobalServer,
        ),
        native(
            "link-local source",
            echo("fe80::99".parse().unwrap(), tt(), false, 1, 16),
            R::NonGlobalNativeSource,
        ),
    ];
    for (label, ip) in NON_GLOBAL_V4 {
        v.push(native(
            &format!("Teredo destination embedding {label}"),
            down(teredo(P, SocketAddrV4::new(ip, 40000))),
            R::NonGlobalMappedAddress,
        ));
    }
    for (class, ty) in [("00", 0x02), ("10", 0x82), ("11", 0xc2)] {
        v.push(kind(
            format!("relay-udp/unknown trailer class {class} (skipped)"),
            Target::RelayUdp,
            Via::Udp(T),
            cat(&[&up, &trailer(ty, &[9, 9, 9])]),
            Expect::Accepted,
        ));
    }
    v
}

/// The whole corpus.
pub fn corpus() -> Vec<Kind> {
    let mut v = server_kinds();
    v.extend(relay_kinds());
    v
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Instant;

    use teredo::io::Local;
    use teredo::server::{Server, ServerConfig};

    use super::*;

    #[test]
    fn names_are_unique_and_there_are_enough_drop_kinds() {
        let c = corpus();
        let names: HashSet<_> = c.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names.len(), c.len(), "duplicate kind names");
        let drops = c
            .iter()
            .filter(|k| matches!(k.expect, Expect::Drop(_)))
            .count();
        assert!(drops >= 30, "{drops} drop kinds");
        let reasons: HashSet<_> = c
            .iter()
            .filter_map(|k| match k.expect {
                Expect::Drop(r) => Some(r),
                Expect::Accepted => None,
            })
            .collect();
        assert!(reasons.len() >= 20, "{} distinct reasons", reasons.len());
    }

    /// The server's kinds give the same verdict in the sans-IO core as the e2e test expects
    /// from the running server (the socket path adds nothing but the transport).
    #[test]
    fn server_kinds_against_the_core() {
        let mut s = Server::new(ServerConfig::new(P));
        let now = Instant::now();
        for k in server_kinds() {
            let from = match k.via {
                Via::Udp(a) | Via::Forged(a) => a,
                Via::Native => unreachable!(),
            };
            let r = s.handle_udp(now, Local::Primary, from, &k.bytes);
            match k.expect {
                Expect::Drop(want) => assert_eq!(r.err(), Some(want), "{}", k.name),
                Expect::Accepted => assert!(r.is_ok(), "{}: {r:?}", k.name),
            }
        }
    }
}
