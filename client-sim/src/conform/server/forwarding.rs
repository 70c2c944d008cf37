//! Relaying between clients (RFC 4380 §5.3.1): indirect bubbles, anti-spoofing, the origin
//! indication rule and the embedded-destination filter. Clients A and B are endpoints of the
//! tool qualified against the server, so B's Teredo address embeds a mapping the tool holds
//! and whatever the server relays to B is seen.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use teredo::wire::TeredoPacket;

use super::common::{client_or_fail, describe, need, quiet_phrase};
use crate::conform::ctx::{Ctx, Ep, Rx};
use crate::conform::outcome::{Findings, Outcome};
use crate::conform::packets;
use crate::conform::spec::{Check, Level, Role, Spec};

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[S07, S08, S09, S10, S11];

const S07: Check = Check {
    spec: Spec {
        id: "S07",
        role: Role::Server,
        title: "indirect bubble relayed from P with origin indication, trailer intact",
        rfc: "RFC 4380 §5.3.1; RFC 6081 §4",
        clause: "5) If the IPv6 source address is a Teredo IPv6 address, and if the IPv4 \
                 address and UDP port embedded in that address match the IPv4 source address \
                 and UDP source port, the packet SHOULD be accepted. [...] If the destination \
                 IPv6 address is a Teredo client whose address is serviced by this specific \
                 server, the server should insert an origin indication",
        level: Level::Should,
        sends: "qualified A sends bubble(TA→TB, hop limit 0) + nonce trailer (01 04 xxxxxxxx) to \
                P:3544, then another (new trailer) to S:3544; B is another qualified endpoint",
        expects: "each time B receives, from P:3544, exactly OI(A's mapping) + the same 40 IPv6 \
                  bytes + the same trailer",
    },
    run: s07_indirect_bubble,
};

const S08: Check = Check {
    spec: Spec {
        id: "S08",
        role: Role::Server,
        title: "bubble with a Teredo source not matching its sender dropped",
        rfc: "RFC 4380 §5.3.1",
        clause: "7) In all other cases, the packet MUST be silently discarded.",
        level: Level::Must,
        sends:
            "qualified A sends to P:3544 bubbles for TB whose Teredo source embeds A's port + 1, \
                and A's port with another IPv4 (198.51.100.99)",
        expects: "nothing arrives at B (or A) within the quiet window",
    },
    run: s08_anti_spoofing,
};

const S09: Check = Check {
    spec: Spec {
        id: "S09",
        role: Role::Server,
        title: "relay bubbles (non-Teredo source) to this server's client relayed with OI",
        rfc: "RFC 4380 §5.3.1",
        clause: "6) If the IPv6 source address is not a Teredo IPv6 address, and if the IPv6 \
                 destination address is a Teredo address allocated through this server, the \
                 packet SHOULD be accepted. 7) In all other cases, the packet MUST be silently \
                 discarded.",
        level: Level::Should,
        sends: "endpoint R (not qualified) sends to P:3544 bubbles from fe80::1234 and from \
                2001:db8::1 to TB; then from fe80::1234 to B's mapping under server 192.0.2.77",
        expects: "the first two reach B from P:3544 with an origin indication of R's address; \
                  the third reaches nobody",
    },
    run: s09_relay_bubbles,
};

const S10: Check = Check {
    spec: Spec {
        id: "S10",
        role: Role::Server,
        title: "bubble to another server's client: no origin indication",
        rfc: "RFC 4380 §5.3.1",
        clause: "If the destination IPv6 address is a Teredo client whose address is serviced \
                 by this specific server, the server should insert an origin indication [...] \
                 (To verify that the client is served by this server, the server compares bits \
                 32-63 of the client's Teredo IPv6 address to the server's IPv4 address.)",
        level: Level::Should,
        sends: "qualified A sends to P:3544 a bubble TA → 2001:0:<192.0.2.77>:…<B's mapping>",
        expects: "B receives it without an origin indication, or nothing (both reported); never \
                  with an origin indication",
    },
    run: s10_foreign_server,
};

const S11: Check = Check {
    spec: Spec {
        id: "S11",
        role: Role::Server,
        title: "bubble to a non-global embedded IPv4 not sent",
        rfc: "RFC 4380 §5.3.1",
        clause: "If the IPv6 destination address is a valid Teredo IPv6 address as defined in \
                 Section 2.13, the Teredo Server MUST check that the IPv4 address derived from \
                 this IPv6 address is in the format of a global unicast address; if this is not \
                 the case, the packet MUST be silently discarded.",
        level: Level::Must,
        sends: "qualified A sends to P:3544 bubbles to Teredo addresses of P embedding \
                127.0.0.1:<a port the tool listens on>, 10.0.0.1, 224.0.0.1 and 255.255.255.255",
        expects: "nothing arrives at the tool's 127.0.0.1 endpoint (the one destination it can \
                  observe) nor at A within the quiet window",
    },
    run: s11_non_global_destination,
};

/// The datagrams of `got` that arrived on `ep`.
fn on(got: &[Rx], ep: Ep) -> Vec<Rx> {
    got.iter().filter(|rx| rx.ep == ep).cloned().collect()
}

fn s07_indirect_bubble(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let a = client_or_fail!(ctx, server, "A");
    let b = client_or_fail!(ctx, server, "B");
    let mut f = Findings::default();
    let mut seen = Vec::new();
    for to in [server.p(), server.s()] {
        let n = ctx.nonce();
        let trailer = packets::nonce_trailer([n[0], n[1], n[2], n[3]]);
        let bubble = packets::bubble(a.addr, b.addr, 0);
        let sent = packets::concat(&[&bubble, &trailer]);
        ctx.send(a.ep, to, &sent, "indirect bubble A→B + nonce trailer")?;
        let got = ctx.recv_until(packets::ANSWER, |rx| rx.ep == b.ep);
        let at_b = on(&got, b.ep);
        let Some(rx) = at_b.first() else {
            f.fail(format!("bubble sent to {to}: nothing reached B"));
            continue;
        };
        ctx.annotate(rx, "relayed bubble");
        let want = packets::concat(&[&packets::origin(a.mapped), &sent]);
        f.expect(packets::from4(rx) == Some(server.p()), || {
            format!(
                "bubble sent to {to}: relayed from {}, want {}",
                rx.from,
                server.p()
            )
        });
        if rx.bytes != want {
            let pkt = TeredoPacket::parse(&rx.bytes).ok();
            f.fail(format!(
                "bubble sent to {to}: B got {} B ({}), want OI(A) + bubble + trailer ({} B)",
                rx.bytes.len(),
                match pkt {
                    Some(p) => format!(
                        "OI {:?}, {} IPv6 bytes{}, trailer {} B",
                        p.origin.map(|o| o.0),
                        p.ipv6.len(),
                        if p.ipv6 == bubble.as_slice() {
                            " as sent"
                        } else {
                            " changed"
                        },
                        p.trailers.len()
                    ),
                    None => "unreadable".to_owned(),
                },
                want.len()
            ));
        }
        seen.push(format!(
            "via {to}: B got {} B from {}",
            rx.bytes.len(),
            rx.from
        ));
    }
    Ok(f.outcome(format!(
        "{} (OI(A) + bubble + trailer, byte for byte)",
        seen.join("; ")
    )))
}

fn s08_anti_spoofing(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let a = client_or_fail!(ctx, server, "A");
    let b = client_or_fail!(ctx, server, "B");
    let other_port = SocketAddrV4::new(*a.mapped.ip(), a.mapped.port().wrapping_add(1));
    let other_ip = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 99), a.mapped.port());
    for m in [other_port, other_ip] {
        let src = packets::teredo_addr(server.primary, m, 0);
        ctx.send(
            a.ep,
            server.p(),
            &packets::bubble(src, b.addr, 0),
            &format!("bubble from a Teredo source embedding {m}"),
        )?;
    }
    let quiet = ctx.target.quiet;
    let got = ctx.collect(quiet);
    if got.is_empty() {
        Ok(Outcome::pass(format!(
            "sources embedding {other_port} and {other_ip} (sender {}): {}",
            a.mapped,
            quiet_phrase(ctx)
        )))
    } else {
        Ok(Outcome::fail(format!(
            "spoofed bubbles were relayed: {}",
            describe(ctx, &got)
        )))
    }
}

fn s09_relay_bubbles(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let b = client_or_fail!(ctx, server, "B");
    let r = ctx.udp()?;
    let mut f = Findings::default();
    let mut seen = Vec::new();
    let fe80: Ipv6Addr = "fe80::1234".parse()?;
    let native: Ipv6Addr = "2001:db8::1".parse()?;
    for src in [fe80, native] {
        ctx.send(
            r,
            server.p(),
            &packets::bubble(src, b.addr, 0),
            "relay bubble",
        )?;
        let got = ctx.recv_until(packets::ANSWER, |rx| rx.ep == b.ep);
        let at_b = on(&got, b.ep);
        let Some(rx) = at_b.first() else {
            f.fail(format!("bubble from {src}: nothing reached B"));
            continue;
        };
        ctx.annotate(rx, "relayed bubble");
        let origin = TeredoPacket::parse(&rx.bytes).ok().and_then(|p| p.origin);
        f.expect(origin.is_some(), || {
            format!("bubble from {src}: relayed without an origin indication")
        });
        f.expect(packets::from4(rx) == Some(server.p()), || {
            format!("bubble from {src}: relayed from {}", rx.from)
        });
        seen.push(format!(
            "from {src}: B got it from {} with OI {}",
            rx.from,
            origin.map_or("none".to_owned(), |o| o.0.to_string())
        ));
    }
    let foreign = packets::teredo_addr(Ipv4Addr::new(192, 0, 2, 77), b.mapped, 0);
    ctx.send(
        r,
        server.p(),
        &packets::bubble(fe80, foreign, 0),
        "relay bubble to another server's client",
    )?;
    let quiet = ctx.target.quiet;
    let got = ctx.collect(quiet);
    f.expect(got.is_empty(), || {
        format!(
            "bubble from {fe80} to a client of 192.0.2.77 was relayed: {}",
            describe(ctx, &got)
        )
    });
    Ok(f.outcome(format!(
        "{}; to a client of 192.0.2.77: {}",
        seen.join("; "),
        quiet_phrase(ctx)
    )))
}

fn s10_foreign_server(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let a = client_or_fail!(ctx, server, "A");
    let b = client_or_fail!(ctx, server, "B");
    let foreign = packets::teredo_addr(Ipv4Addr::new(192, 0, 2, 77), b.mapped, 0);
    let bubble = packets::bubble(a.addr, foreign, 0);
    ctx.send(
        a.ep,
        server.p(),
        &bubble,
        "bubble to a client of 192.0.2.77",
    )?;
    let quiet = ctx.target.quiet;
    let got = ctx.collect(quiet.max(packets::ANSWER));
    let at_b = on(&got, b.ep);
    Ok(match at_b.first() {
        None => Outcome::pass(format!("dropped: {}", quiet_phrase(ctx))),
        Some(rx) => {
            let pkt = TeredoPacket::parse(&rx.bytes).ok();
            match pkt.map(|p| p.origin) {
                Some(None) => Outcome::pass(format!(
                    "forwarded without origin indication ({} B from {})",
                    rx.bytes.len(),
                    rx.from
                )),
                Some(Some(o)) => Outcome::fail(format!(
                    "forwarded with an origin indication ({}) to a client of another server",
                    o.0
                )),
                None => Outcome::fail(format!(
                    "B got an unreadable datagram ({} B from {})",
                    rx.bytes.len(),
                    rx.from
                )),
            }
        }
    })
}

fn s11_non_global_destination(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let a = client_or_fail!(ctx, server, "A");
    let lo = match ctx.udp_at(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into()) {
        Ok(ep) => Some(ctx.addr4(ep)),
        Err(_) => None,
    };
    let mut dests: Vec<SocketAddrV4> = lo.into_iter().collect();
    for ip in [
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::BROADCAST,
    ] {
        dests.push(SocketAddrV4::new(ip, 40_000));
    }
    for d in &dests {
        let dst = packets::teredo_addr(server.primary, *d, 0);
        ctx.send(
            a.ep,
            server.p(),
            &packets::bubble(a.addr, dst, 0),
            &format!("bubble to a Teredo address embedding {d}"),
        )?;
    }
    let quiet = ctx.target.quiet;
    let got = ctx.collect(quiet);
    let listed: Vec<String> = dests.iter().map(ToString::to_string).collect();
    if got.is_empty() {
        Ok(Outcome::pass(format!(
            "bubbles to {}: {}{}",
            listed.join(", "),
            quiet_phrase(ctx),
            if lo.is_none() {
                " (no 127.0.0.1 endpoint could be bound)"
            } else {
                ""
            }
        )))
    } else {
        Ok(Outcome::fail(format!(
            "relayed to a non-global destination: {}",
            describe(ctx, &got)
        )))
    }
}
