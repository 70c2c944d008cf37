//! Input the server must ignore: RSs from non-global sources, malformed datagrams, invalid
//! RSs and other hostile encapsulations. Each input goes from its own endpoint, so an answer
//! names the input it answers; a valid RS afterwards shows the server survived.

use std::net::{Ipv4Addr, SocketAddrV4};

use teredo::addr::{ALL_ROUTERS, LL_WINDOWS_RESTRICTED};

use super::common::{describe, need, quiet_phrase};
use super::rs::solicit;
use crate::conform::ctx::{Ctx, Ep};
use crate::conform::outcome::{Findings, Outcome};
use crate::conform::packets;
use crate::conform::spec::{Check, Level, Role, Spec};
use crate::conform::target::ServerTarget;

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[S05, S06];

/// The extra checks of this file (S2x).
pub(super) const EXTRA: &[Check] = &[S24, S25];

const S05: Check = Check {
    spec: Spec {
        id: "S05",
        role: Role::Server,
        title: "RS from a non-global IPv4 source ignored",
        rfc: "RFC 4380 §5.3.1, §5.3.2",
        clause: "If the IPv4 source address is not in the format of a global unicast address, \
                 the packet MUST be silently discarded",
        level: Level::Must,
        sends: "auth(N) + RS to P:3544 from 127.0.0.1 and from every --non-global-source; with \
                raw sockets also forged from 10.9.9.9, 224.0.0.1 and 255.255.255.255; then a \
                valid RS",
        expects: "no RA to the bound sources within the quiet window (the forged ones' answers \
                  could not reach the tool: silence there proves nothing and is not claimed); \
                  the valid RS is answered",
    },
    run: s05_non_global_rs,
};

const S06: Check = Check {
    spec: Spec {
        id: "S06",
        role: Role::Server,
        title: "malformed datagrams dropped, server still answers",
        rfc: "RFC 4380 §5.3.1",
        clause: "1) If the UDP content is not a well-formed Teredo IPv6 packet, as defined in \
                 Section 5.1.1, the packet MUST be silently discarded.",
        level: Level::Must,
        sends: "to P:3544, each from its own endpoint: empty datagram, 39-byte IPv6 header, auth \
                indicator only, auth cut inside the nonce, auth ID-len overrunning the datagram, \
                origin indication cut short, IPv4 and version-0 inner packets, payload length 1 \
                beyond the datagram and 65535; then a valid RS",
        expects: "nothing back to any of them within the quiet window; the valid RS answered",
    },
    run: s06_malformed,
};

const S24: Check = Check {
    spec: Spec {
        id: "S24",
        role: Role::Server,
        title: "invalid router solicitations ignored",
        rfc: "RFC 4861 §6.1.1 (via RFC 4380 §5.3.2)",
        clause: "Hosts and routers MUST silently discard received Router Solicitation messages \
                 that do not satisfy all of the following validity checks: - The IP Hop Limit \
                 field has a value of 255 [...] - ICMP Checksum is valid. - ICMP Code is 0.",
        level: Level::Must,
        sends:
            "auth(N) + RS to P:3544 with hop limit 64; with code 1; with a wrong checksum; then \
                a valid RS",
        expects: "no RA to any of them within the quiet window; the valid RS answered",
    },
    run: s24_invalid_rs,
};

const S25: Check = Check {
    spec: Spec {
        id: "S25",
        role: Role::Server,
        title: "other hostile encapsulations dropped",
        rfc: "RFC 4380 §5.1.1, §5.3.1; RFC 6081 §4",
        clause: "In this case, the authentication encapsulation MUST be the first element in \
                 the UDP payload (RFC 4380 §5.1.1) / 01 - discard the packet. (RFC 6081 §4, an \
                 unrecognised trailer type whose two high bits are 01) / Teredo servers are \
                 expected to relay Teredo bubbles, ICMPv6 Echo requests, and ICMPv6 Echo \
                 replies, but they are not expected to relay other types of IPv6 packets. (RFC \
                 4380 §5.3)",
        level: Level::Should,
        sends: "to P:3544: auth header after an origin indication; an RS followed by an RFC 6081 \
                trailer of class 01 (type 0x41); an RA; a type-0 routing header \
                (CVE-2006-6263) from the sender's Teredo address to another endpoint's; then a \
                valid RS",
        expects: "nothing back to any of them and nothing relayed to the other endpoint within \
                  the quiet window; the valid RS answered",
    },
    run: s25_hostile,
};

/// Sends every `(label, bytes)` to P from its own fresh endpoint; see [`drop_all_from`].
fn drop_all(
    ctx: &mut Ctx<'_>,
    server: ServerTarget,
    inputs: Vec<(&str, Vec<u8>)>,
) -> anyhow::Result<Outcome> {
    let mut with_eps = Vec::with_capacity(inputs.len());
    for (label, bytes) in inputs {
        with_eps.push((ctx.udp()?, label, bytes));
    }
    drop_all_from(ctx, server, with_eps)
}

/// Sends every `(endpoint, label, bytes)` to P, waits the quiet window and then checks that
/// a valid RS is still answered. Fails naming each input that got an answer, and anything
/// that reached another endpoint of the check (a relayed packet).
fn drop_all_from(
    ctx: &mut Ctx<'_>,
    server: ServerTarget,
    inputs: Vec<(Ep, &str, Vec<u8>)>,
) -> anyhow::Result<Outcome> {
    for (ep, label, bytes) in &inputs {
        ctx.send(*ep, server.p(), bytes, label)?;
    }
    let quiet = ctx.target.quiet;
    let got = ctx.collect(quiet);
    let mut f = Findings::default();
    for (ep, label, _) in &inputs {
        let answers: Vec<_> = got.iter().filter(|rx| rx.ep == *ep).cloned().collect();
        f.expect(answers.is_empty(), || {
            format!("{label}: answered with {}", describe(ctx, &answers))
        });
    }
    let elsewhere: Vec<_> = got
        .iter()
        .filter(|rx| !inputs.iter().any(|(ep, _, _)| *ep == rx.ep))
        .cloned()
        .collect();
    f.expect(elsewhere.is_empty(), || {
        format!("relayed to another endpoint: {}", describe(ctx, &elsewhere))
    });
    still_answers(ctx, server, &mut f)?;
    Ok(f.outcome(format!(
        "{} inputs: {}; the next RS was answered",
        inputs.len(),
        quiet_phrase(ctx)
    )))
}

/// A valid RS from a fresh endpoint must get its RA.
fn still_answers(ctx: &mut Ctx<'_>, server: ServerTarget, f: &mut Findings) -> anyhow::Result<()> {
    let ep = ctx.udp()?;
    let nonce = ctx.nonce();
    let rs = packets::rs(Some(nonce), LL_WINDOWS_RESTRICTED, false);
    let ras = solicit(ctx, ep, server.p(), &rs, "valid RS afterwards")?;
    f.expect(!ras.is_empty(), || {
        "the valid RS sent afterwards got no RA: the server stopped answering".to_owned()
    });
    Ok(())
}

fn s05_non_global_rs(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let mut bound: Vec<Ipv4Addr> = vec![Ipv4Addr::LOCALHOST];
    bound.extend(ctx.target.non_global_sources.iter().copied());
    let mut f = Findings::default();
    let mut tried = Vec::new();
    let mut unusable = Vec::new();
    let mut eps = Vec::new();
    for src in bound {
        let ep = match ctx.udp_at(SocketAddrV4::new(src, 0).into()) {
            Ok(ep) => ep,
            Err(e) => {
                unusable.push(format!("{src} ({e:#})"));
                continue;
            }
        };
        let nonce = ctx.nonce();
        let rs = packets::rs(Some(nonce), LL_WINDOWS_RESTRICTED, false);
        match ctx.send(ep, server.p(), &rs, "RS from a non-global source") {
            Ok(()) => {
                tried.push(src.to_string());
                eps.push((ep, src));
            }
            Err(e) => unusable.push(format!("{src} ({e:#})")),
        }
    }
    let mut forged = Vec::new();
    if ctx.target.raw {
        for (i, src) in [
            Ipv4Addr::new(10, 9, 9, 9),
            Ipv4Addr::new(224, 0, 0, 1),
            Ipv4Addr::BROADCAST,
        ]
        .into_iter()
        .enumerate()
        {
            let nonce = ctx.nonce();
            let rs = packets::rs(Some(nonce), LL_WINDOWS_RESTRICTED, false);
            let from = SocketAddrV4::new(src, 40_100 + i as u16);
            ctx.send_forged(from, server.p(), &rs, "forged RS from a non-global source")?;
            forged.push(src.to_string());
        }
    }
    if eps.is_empty() {
        return Ok(Outcome::skipped(format!(
            "no non-global source could reach the server ({}); give --non-global-source",
            unusable.join(", ")
        )));
    }
    let quiet = ctx.target.quiet;
    let got = ctx.collect(quiet);
    for (ep, src) in &eps {
        let answers: Vec<_> = got.iter().filter(|rx| rx.ep == *ep).cloned().collect();
        f.expect(answers.is_empty(), || {
            format!("RS from {src}: answered with {}", describe(ctx, &answers))
        });
    }
    still_answers(ctx, server, &mut f)?;
    let forged = if forged.is_empty() {
        "no raw sockets: nothing forged".to_owned()
    } else {
        format!(
            "also forged from {} (their answers could not be observed)",
            forged.join(", ")
        )
    };
    Ok(f.outcome(format!(
        "RS from {}: {}; {forged}; the next RS from a global source was answered",
        tried.join(", "),
        quiet_phrase(ctx)
    )))
}

fn s06_malformed(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let nonce = ctx.nonce();
    let rs_ip = packets::rs(None, LL_WINDOWS_RESTRICTED, false);
    let auth = &packets::rs(Some(nonce), LL_WINDOWS_RESTRICTED, false)[..13];
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = rs_ip.clone();
        f(&mut b);
        b
    };
    let probe = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 99), 40_000);
    let inputs = vec![
        ("empty datagram", vec![]),
        ("39-byte IPv6 header", rs_ip[..39].to_vec()),
        ("auth indicator only", vec![0, 1]),
        ("auth cut inside the nonce", auth[..9].to_vec()),
        (
            "auth ID-len overruns the datagram",
            packets::concat(&[&[0, 1, 200, 0], &[0u8; 9], &rs_ip]),
        ),
        (
            "origin indication cut short",
            packets::origin(probe)[..5].to_vec(),
        ),
        ("IPv4 inner packet", with(&|b| b[0] = 0x45)),
        ("IP version 0", with(&|b| b[0] &= 0x0f)),
        ("payload length 1 beyond the datagram", with(&|b| b[5] += 1)),
        (
            "payload length 65535",
            with(&|b| {
                b[4] = 0xff;
                b[5] = 0xff;
            }),
        ),
    ];
    drop_all(ctx, server, inputs)
}

fn s24_invalid_rs(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let ll = LL_WINDOWS_RESTRICTED;
    let auth = packets::rs(Some(ctx.nonce()), ll, false)[..13].to_vec();
    let mut bad_sum = packets::rs(None, ll, false);
    bad_sum[42] ^= 0xff;
    let inputs = vec![
        (
            "RS with hop limit 64",
            packets::concat(&[
                &auth,
                &packets::icmpv6(ll, ALL_ROUTERS, 64, 133, 0, &[0; 4]),
            ]),
        ),
        (
            "RS with code 1",
            packets::concat(&[
                &auth,
                &packets::icmpv6(ll, ALL_ROUTERS, 255, 133, 1, &[0; 4]),
            ]),
        ),
        (
            "RS with a wrong checksum",
            packets::concat(&[&auth, &bad_sum]),
        ),
    ];
    drop_all(ctx, server, inputs)
}

fn s25_hostile(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let ll = LL_WINDOWS_RESTRICTED;
    let nonce = ctx.nonce();
    let rs_auth = packets::rs(Some(nonce), ll, false);
    let auth = rs_auth[..13].to_vec();
    let rs_ip = packets::rs(None, ll, false);
    // A sender whose Teredo source matches its own address (case 5, no NAT between the
    // tool and the server), so the routing header is judged for what it is, not as a
    // spoof; B listens where a relayed packet would go. (An RS from a Teredo source is left
    // out: case 5 accepts it and §5.3.1 lets the server process what is sent to FF02::2.)
    let rh_from = ctx.udp()?;
    let b_ep = ctx.udp()?;
    let teredo_of = |ctx: &Ctx<'_>, ep| packets::teredo_addr(server.primary, ctx.addr4(ep), 0);
    let (rh_src, b) = (teredo_of(ctx, rh_from), teredo_of(ctx, b_ep));
    let mut rh = vec![58, 2, 0, 1, 0, 0, 0, 0];
    rh.extend_from_slice(&"2001:db8::99".parse::<std::net::Ipv6Addr>()?.octets());
    rh.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
    let me = SocketAddrV4::new(ctx.target.local, 40_000);
    let inputs = vec![
        (
            ctx.udp()?,
            "auth header after an origin indication",
            packets::concat(&[&packets::origin(me), &auth, &rs_ip]),
        ),
        (
            ctx.udp()?,
            "RS + RFC 6081 trailer of class 01 (discard)",
            packets::concat(&[&rs_auth, &[0x41, 2, 1, 2]]),
        ),
        (
            ctx.udp()?,
            "RA sent to the server",
            packets::icmpv6(
                ll,
                ALL_ROUTERS,
                255,
                134,
                0,
                &[64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
        ),
        (
            rh_from,
            "type-0 routing header (CVE-2006-6263) to B",
            packets::ipv6_packet(rh_src, b, 43, 64, &rh),
        ),
    ];
    drop_all_from(ctx, server, inputs)
}
