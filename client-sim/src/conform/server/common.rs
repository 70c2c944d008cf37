//! What the server checks share: the target-or-skip step, qualified clients of the tool, and
//! the wording of "nothing arrived".

use std::net::{Ipv6Addr, SocketAddrV4};

use crate::conform::ctx::{Ctx, Ep, Rx};
use crate::conform::outcome::Outcome;
use crate::conform::packets;
use crate::conform::target::ServerTarget;

/// Returns the skip outcome from the check when `$e` (a `Result<T, String>`) is an `Err`.
macro_rules! need {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(why) => return Ok($crate::conform::outcome::Outcome::skipped(why)),
        }
    };
}
pub(super) use need;

/// A qualified endpoint of the tool: its socket, the mapping the server saw and the Teredo
/// address that mapping gives (flags 0).
#[derive(Clone, Copy, Debug)]
pub(super) struct Client {
    pub ep: Ep,
    pub mapped: SocketAddrV4,
    pub addr: Ipv6Addr,
}

/// A fresh endpoint, qualified against `server`'s primary address; `Err(outcome)` is the
/// failure to report when the server does not qualify it (the check cannot go on).
pub(super) fn client(
    ctx: &mut Ctx<'_>,
    server: ServerTarget,
    who: &str,
) -> anyhow::Result<Result<Client, Outcome>> {
    let ep = ctx.udp()?;
    Ok(match packets::qualify(ctx, ep, server.p())? {
        Ok(mapped) => Ok(Client {
            ep,
            mapped,
            addr: packets::teredo_addr(server.primary, mapped, 0),
        }),
        Err(why) => Err(Outcome::fail(format!("client {who} not qualified: {why}"))),
    })
}

/// Qualifies a client or returns the failure from the check.
macro_rules! client_or_fail {
    ($ctx:expr, $server:expr, $who:expr) => {
        match super::common::client($ctx, $server, $who)? {
            Ok(c) => c,
            Err(o) => return Ok(o),
        }
    };
}
pub(super) use client_or_fail;

/// One line naming what arrived (for details): "2 datagrams (from 198.51.100.1:3544 to
/// 198.51.100.10:40000, 61 B; …)", or "nothing".
pub(super) fn describe(ctx: &Ctx<'_>, got: &[Rx]) -> String {
    if got.is_empty() {
        return "nothing".to_owned();
    }
    let each: Vec<String> = got
        .iter()
        .map(|rx| {
            format!(
                "from {} to {}, {} B",
                rx.from,
                ctx.addr(rx.ep),
                rx.bytes.len()
            )
        })
        .collect();
    format!("{} datagram(s) ({})", got.len(), each.join("; "))
}

/// The phrase for a quiet window, saying from where it was observed.
pub(super) fn quiet_phrase(ctx: &Ctx<'_>) -> String {
    format!(
        "nothing arrived at any of the tool's endpoints within {:?} (observed from the tool's side only)",
        ctx.target.quiet
    )
}
