//! Qualification: which address answers an RS, and with what.

use teredo::addr::LL_WINDOWS_RESTRICTED;

use crate::conform::ctx::Ctx;
use crate::conform::outcome::{Findings, Outcome};
use crate::conform::packets::{self, RaView, ANSWER};
use crate::conform::spec::{Check, Level, Role, Spec};

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[Check {
    spec: Spec {
        id: "S01",
        role: Role::Server,
        title: "restricted RS answered from the address it reached",
        rfc: "RFC 4380 §5.3.2",
        clause: "If the cone bit is not set, the router advertisement MUST be sent from the \
                 same IPv4 address on which the router solicitation was received.",
        level: Level::Must,
        sends: "auth(N) + RS from fe80::ffff:ffff:fffe (C=0) to P:3544, then to S:3544",
        expects: "one RA from P:3544 (then from S:3544) with nonce N, origin indication = our \
                  mapping, src fe80::8000:f227:~P, one prefix 2001:0:P::/64",
    },
    run: s01_restricted_rs,
}];

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
