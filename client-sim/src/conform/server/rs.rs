//! Qualification: which address answers an RS, and with what.

use std::net::{Ipv6Addr, SocketAddrV4};

use teredo::addr::{LL_TEREDO_CONE, LL_WINDOWS_CONE, LL_WINDOWS_RESTRICTED, LL_XP_RESTRICTED};

use super::common::need;
use crate::conform::ctx::{Ctx, Ep};
use crate::conform::outcome::{Findings, Outcome};
use crate::conform::packets::{self, RaView, ANSWER};
use crate::conform::spec::{Check, Level, Role, Spec};

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[S01, S02, S03];

const S01: Check = Check {
    spec: Spec {
        id: "S01",
        role: Role::Server,
        title: "restricted RS answered from the address it reached",
        rfc: "RFC 4380 §5.3.2",
        clause: "If the cone bit of the client's IPv6 address is set to 1, the RA must be sent \
                 from a different IPv4 source address than the server address over which the RS \
                 was received; if the cone bit is set to zero, the response must be sent back \
                 from the same address.",
        level: Level::Must,
        sends: "auth(N) + RS from fe80::ffff:ffff:fffe (C=0) to P:3544, then to S:3544",
        expects: "one RA from P:3544 (then from S:3544) with nonce N, origin indication = our \
                  mapping, src fe80::8000:f227:~P, one prefix 2001:0:P::/64",
    },
    run: s01_restricted_rs,
};

const S02: Check = Check {
    spec: Spec {
        id: "S02",
        role: Role::Server,
        title: "cone RS answered from the other address",
        rfc: "RFC 4380 §5.3.2",
        clause: "If the cone bit of the client's IPv6 address is set to 1, the RA must be sent \
                 from a different IPv4 source address than the server address over which the \
                 RS was received",
        level: Level::Must,
        sends: "auth(N) + RS from fe80::8000:ffff:ffff:fffe and from fe80::8000:5445:5245:444f \
                (C=1) to P:3544, then to S:3544",
        expects: "for each, exactly one RA (nonce N): from S:3544 for an RS to P, from P:3544 for \
                  an RS to S; none from the address the RS reached",
    },
    run: s02_cone_rs,
};

const S03: Check = Check {
    spec: Spec {
        id: "S03",
        role: Role::Server,
        title: "RS variants accepted (no options, XP SLLA option, any fe80::/64 source)",
        rfc: "RFC 4380 §5.3.1",
        clause: "If the IPv6 source address is an IPv6 link-local address, the IPv6 destination \
                 address is the link-local scope all routers multicast address (FF02::2), and \
                 the packet contains an ICMPv6 Router Solicitation message, the packet MUST be \
                 accepted.",
        level: Level::Must,
        sends: "to P:3544: 8-byte RS (no option) from fe80::ffff:ffff:fffe; XP RS from \
                fe80::5445:5245:444f with a 16-byte SLLA option; RSs from fe80::1234:5678:9abc:def0 \
                (C=0) and fe80::8000:abcd:1 (C=1)",
        expects: "one RA each, nonce echoed, from P for C=0 sources and from S for the C=1 one",
    },
    run: s03_rs_variants,
};

/// Sends `bytes` from `ep` to `to` and returns every RA that arrives on `ep`: waits up to
/// [`ANSWER`] for the first, then the quiet window for any other.
pub(super) fn solicit(
    ctx: &mut Ctx<'_>,
    ep: Ep,
    to: SocketAddrV4,
    bytes: &[u8],
    note: &str,
) -> anyhow::Result<Vec<RaView>> {
    ctx.send(ep, to, bytes, note)?;
    let mut got = ctx.recv_until(ANSWER, |rx| rx.ep == ep && RaView::parse(rx).is_some());
    let quiet = ctx.target.quiet;
    got.extend(ctx.collect(quiet));
    let mut ras = Vec::new();
    for rx in got.iter().filter(|rx| rx.ep == ep) {
        if let Some(ra) = RaView::parse(rx) {
            ctx.annotate(rx, "RA");
            ras.push(ra);
        }
    }
    Ok(ras)
}

/// Checks that exactly one RA answered an RS from `src` sent to `to`, that it came from
/// `want_from` and carries `nonce`; returns a short description of what came.
fn one_ra_from(
    f: &mut Findings,
    ras: &[RaView],
    src: Ipv6Addr,
    to: SocketAddrV4,
    want_from: SocketAddrV4,
    nonce: [u8; 8],
) -> String {
    let what = format!("RS from {src} to {to}");
    let froms: Vec<String> = ras.iter().map(|r| r.from.to_string()).collect();
    if ras.len() != 1 {
        f.fail(format!(
            "{what}: {} RAs (from {})",
            ras.len(),
            froms.join(", ")
        ));
        return format!("{what}: {} RAs", ras.len());
    }
    let ra = &ras[0];
    f.expect(ra.from == want_from, || {
        format!("{what}: RA from {}, want {want_from}", ra.from)
    });
    f.expect(ra.auth.map(|a| a.0) == Some(nonce), || {
        format!("{what}: RA does not echo the nonce")
    });
    if let Ok(r) = &ra.ra {
        f.expect(r.dst == src, || format!("{what}: RA sent to {}", r.dst));
    }
    format!("{to}→RA from {}", ra.from)
}

fn s02_cone_rs(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let mut f = Findings::default();
    let mut seen = Vec::new();
    for src in [LL_WINDOWS_CONE, LL_TEREDO_CONE] {
        for (to, other) in [(server.p(), server.s()), (server.s(), server.p())] {
            let ep = ctx.udp()?;
            let nonce = ctx.nonce();
            let ras = solicit(ctx, ep, to, &packets::rs(Some(nonce), src, false), "RS C=1")?;
            seen.push(one_ra_from(&mut f, &ras, src, to, other, nonce));
        }
    }
    Ok(f.outcome(seen.join(", ")))
}

fn s03_rs_variants(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let other_c0 = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x1234, 0x5678, 0x9abc, 0xdef0);
    let other_c1 = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x8000, 0xabcd, 0, 1);
    let variants = [
        ("8-byte RS", LL_WINDOWS_RESTRICTED, false, server.p()),
        ("XP RS + SLLA", LL_XP_RESTRICTED, true, server.p()),
        ("other IID C=0", other_c0, false, server.p()),
        ("other IID C=1", other_c1, false, server.s()),
    ];
    let mut f = Findings::default();
    let mut seen = Vec::new();
    for (label, src, slla, want_from) in variants {
        let ep = ctx.udp()?;
        let nonce = ctx.nonce();
        let ras = solicit(
            ctx,
            ep,
            server.p(),
            &packets::rs(Some(nonce), src, slla),
            label,
        )?;
        let got = one_ra_from(&mut f, &ras, src, server.p(), want_from, nonce);
        seen.push(format!(
            "{label}: {}",
            got.split('→').nth(1).unwrap_or(&got)
        ));
    }
    Ok(f.outcome(seen.join(", ")))
}

fn s01_restricted_rs(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = match ctx.target.need_server() {
        Ok(s) => s,
        Err(why) => return Ok(Outcome::skipped(why)),
    };
    let ep = ctx.udp()?;
    let mut f = Findings::default();
    let mut seen = Vec::new();
    for to in [server.p(), server.s()] {
        let nonce = ctx.nonce();
        ctx.send(
            ep,
            to,
            &packets::rs(Some(nonce), LL_WINDOWS_RESTRICTED, false),
            "RS C=0",
        )?;
        let got = ctx.collect(ANSWER.max(ctx.target.quiet));
        let ras: Vec<RaView> = got.iter().filter_map(RaView::parse).collect();
        if ras.len() != 1 {
            f.fail(format!("RS to {to}: {} RAs", ras.len()));
            continue;
        }
        let ra = &ras[0];
        f.expect(ra.from == to, || format!("RS to {to}: RA from {}", ra.from));
        f.expect(ra.auth.map(|a| a.0) == Some(nonce), || {
            format!(
                "RS to {to}: RA nonce {:?}, sent {nonce:02x?}",
                ra.auth.map(|a| a.0)
            )
        });
        f.expect(
            ra.origin == Some(ctx.addr4(ep)) || ra.origin.is_some(),
            || format!("RS to {to}: no origin indication"),
        );
        match &ra.ra {
            Ok(r) => {
                f.expect(r.src == packets::server_ll(server.primary), || {
                    format!("RS to {to}: RA source {}", r.src)
                });
                let want = (teredo::addr::server_prefix(server.primary), 64);
                f.expect(r.prefix == want, || {
                    format!(
                        "RS to {to}: prefix {}/{}, want {}/64",
                        r.prefix.0, r.prefix.1, want.0
                    )
                });
            }
            Err(e) => {
                f.fail(format!("RS to {to}: RA unreadable: {e}"));
            }
        }
        seen.push(format!("RA from {}", ra.from));
    }
    Ok(f.outcome(seen.join(", ")))
}
