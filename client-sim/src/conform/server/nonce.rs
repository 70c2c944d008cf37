//! Nonce hygiene: the RA's authentication header belongs to the RS it answers, never to
//! another client's (the nonce is a client's only protection against spoofed RAs).

use teredo::addr::LL_WINDOWS_RESTRICTED;

use super::common::need;
use super::rs::solicit;
use crate::conform::ctx::Ctx;
use crate::conform::outcome::{Findings, Outcome};
use crate::conform::packets;
use crate::conform::spec::{Check, Level, Role, Spec};

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[Check {
    spec: Spec {
        id: "S04",
        role: Role::Server,
        title: "RA nonce is the RS's own (echoed; never another client's)",
        rfc: "RFC 4380 §5.3.2",
        clause: "The client identifier and the nonce value used in the authentication \
                 parameter MUST be the same identifier and nonce as received in the router \
                 solicitation. The confirmation byte MUST be set to zero if the client \
                 identifier is still valid",
        level: Level::Must,
        sends: "client A: auth(N) + RS to P:3544; right after, client C (another endpoint): RS \
                without auth header to P:3544",
        expects: "A's RA: nonce N, confirmation 0, ID-len and AU-len 0 as in the RS; C's RA: no \
                  auth header, or one whose nonce is not N (Miredo 1.2.6 sends N: TEREDO.md §14 \
                  T4')",
    },
    run: s04_nonce,
}];

fn s04_nonce(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let ll = LL_WINDOWS_RESTRICTED;
    let mut f = Findings::default();
    let a = ctx.udp()?;
    let n = ctx.nonce();
    let ras = solicit(
        ctx,
        a,
        server.p(),
        &packets::rs(Some(n), ll, false),
        "RS A, auth(N)",
    )?;
    match ras.as_slice() {
        [ra] => match ra.auth {
            Some((nonce, conf, id_len, au_len)) => {
                f.expect(nonce == n, || {
                    format!("A's RA nonce {nonce:02x?}, sent {n:02x?}")
                });
                f.expect(conf == 0, || format!("A's RA confirmation byte {conf}"));
                f.expect(id_len == 0 && au_len == 0, || {
                    format!("A's RA ID-len {id_len} AU-len {au_len}, RS had 0/0")
                });
            }
            None => {
                f.fail("A's RA has no auth header");
            }
        },
        _ => {
            f.fail(format!("RS with auth: {} RAs", ras.len()));
        }
    }
    let c = ctx.udp()?;
    let ras = solicit(
        ctx,
        c,
        server.p(),
        &packets::rs(None, ll, false),
        "RS C, no auth",
    )?;
    let c_auth = match ras.as_slice() {
        [ra] => ra.auth.map(|a| a.0),
        _ => {
            f.fail(format!("RS without auth: {} RAs", ras.len()));
            None
        }
    };
    f.expect(c_auth != Some(n), || {
        format!(
            "C's RA (its RS had no auth) carries A's nonce {n:02x?}: another client's nonce leaks"
        )
    });
    let c_said = match c_auth {
        None => "no auth header".to_owned(),
        Some(x) if x == [0; 8] => "a zero nonce".to_owned(),
        Some(_) => "a nonce of its own".to_owned(),
    };
    Ok(f.outcome(format!(
        "A's RA echoes N with confirmation 0; C's RA (no auth in its RS) has {c_said}"
    )))
}
