//! Native forwarding (RFC 4380 §5.3.1): an echo request from a client to a native IPv6
//! address leaves the server's native side. Seen on a raw ICMPv6 socket of the tool, at the
//! `--native-local` address the server routes to.

use std::net::Ipv6Addr;

use teredo::wire::ipv6::Echo;

use super::common::{client_or_fail, need};
use crate::conform::ctx::Ctx;
use crate::conform::outcome::Outcome;
use crate::conform::packets;
use crate::conform::spec::{Check, Level, Role, Spec};

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[Check {
    spec: Spec {
        id: "S13",
        role: Role::Server,
        title: "echo request to a native address forwarded natively",
        rfc: "RFC 4380 §5.3.1",
        clause: "If the destination address is not a Teredo IPv6 address, the packet should be \
                 relayed to the IPv6 Internet using regular IPv6 routing.",
        level: Level::Should,
        sends: "qualified A sends to P:3544 an echo request TA → --native-local (32 bytes of data)",
        expects: "the echo request arrives natively at --native-local with source TA and the \
                  ICMPv6 message unchanged; the detail says whether the hop limit was decremented \
                  (Miredo: not, TEREDO.md §14 T16)",
    },
    run: s13_native,
}];

fn s13_native(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let native = need!(ctx.target.need_native());
    need!(ctx
        .target
        .need_raw()
        .map_err(|why| format!("receiving the forwarded echo natively {why}")));
    let raw = ctx.icmp6_echo_raw()?;
    let a = client_or_fail!(ctx, server, "A");
    let id = (ctx.random_u32() & 0xffff) as u16;
    let data: Vec<u8> = (0..32u8).collect();
    let echo = packets::echo_request(a.addr, native, id, 1, &data);
    ctx.send(a.ep, server.p(), &echo, "echo A → native")?;
    let is_ours = |bytes: &[u8]| Echo::parse(bytes).is_ok_and(|e| !e.reply && e.id == id);
    let got = ctx.recv_until(packets::ANSWER, |rx| rx.ep == raw && is_ours(&rx.bytes));
    let Some(rx) = got
        .into_iter()
        .rfind(|rx| rx.ep == raw && is_ours(&rx.bytes))
    else {
        return Ok(Outcome::fail(format!(
            "no echo request reached {native} natively within {:?}",
            packets::ANSWER
        )));
    };
    ctx.annotate(&rx, "echo request, native side");
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&rx.bytes[8..24])?);
    if src != a.addr {
        return Ok(Outcome::fail(format!(
            "the echo arrived from {src}, want A's Teredo address {}",
            a.addr
        )));
    }
    if rx.bytes[40..] != echo[40..] {
        return Ok(Outcome::fail(format!(
            "the echo arrived changed: ICMPv6 {} B, sent {} B",
            rx.bytes.len() - 40,
            echo.len() - 40
        )));
    }
    let (sent, seen) = (echo[7], rx.bytes[7]);
    let hops = match sent.checked_sub(seen) {
        Some(0) => "not decremented".to_owned(),
        Some(d) => format!("decremented by {d}"),
        None => "raised".to_owned(),
    };
    Ok(Outcome::pass(format!(
        "echo from {src} arrived at {native} with the ICMPv6 message unchanged; hop limit sent \
         {sent}, seen {seen} ({hops})"
    )))
}
