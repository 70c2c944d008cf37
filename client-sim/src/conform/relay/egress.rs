//! Egress filters (R18): packets for Teredo addresses that embed a non-global IPv4 address
//! (the client's mapping or its server) must not make the relay send anything.

use std::net::{Ipv4Addr, SocketAddrV4};

use teredo::wire::TeredoPacket;

use crate::conform::ctx::Ctx;
use crate::conform::outcome::{Findings, Outcome};
use crate::conform::packets::ANSWER;
use crate::conform::spec::{Check, Level, Role, Spec};

use super::lab::{payload, teredo_for, Lab, TEREDO_PORT};

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[Check {
    spec: Spec {
        id: "R18",
        role: Role::Relay,
        title: "no bubble or data for Teredo addresses embedding non-global IPv4",
        rfc: "RFC 4380 §5.4.1",
        clause: "Before processing these packets, the Teredo Relay MUST check that the IPv4 \
                 destination address embedded in the Teredo IPv6 address is in the format of a \
                 global unicast address; if this is not the case, the packet MUST be silently \
                 discarded",
        level: Level::Must,
        sends: "native packets to 2001:0:<local>::…(client ~192.168.1.5 or the first \
                --non-global-source, then ~10.1.2.3) and to a Teredo address whose server is \
                non-global (the first --non-global-source, else 10.0.0.1) with X's mapping",
        expects: "nothing at SX (<local>:3544), at X, at the non-global socket (client or \
                  server side), nor natively",
    },
    run: r18_egress,
}];

fn r18_egress(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let lab = match Lab::open(ctx)? {
        Ok(l) => l,
        Err(why) => return Ok(Outcome::skipped(why)),
    };
    let local = ctx.target.local;
    let ng = ctx.target.non_global_sources.first().copied();
    let mut f = Findings::default();
    let mut watched = vec![
        format!("SX {local}:{TEREDO_PORT}"),
        format!("X {}", lab.x.map),
    ];

    // A socket on the non-global address stands for the client and a second one for its
    // server, so a relay that does send to them is seen doing it.
    let ng_client = match ng {
        Some(a) => {
            let ep = ctx.udp_at(SocketAddrV4::new(a, 0).into())?;
            watched.push(format!("client {}", ctx.addr(ep)));
            ctx.addr4(ep)
        }
        None => SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 5), lab.x.map.port()),
    };
    let ng_server = match ng {
        Some(a) => {
            let ep = ctx.udp_at(SocketAddrV4::new(a, TEREDO_PORT).into())?;
            watched.push(format!("server {}", ctx.addr(ep)));
            a
        }
        None => Ipv4Addr::new(10, 0, 0, 1),
    };
    let cases = [
        ("client", local, ng_client),
        (
            "client",
            local,
            SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), lab.x.map.port()),
        ),
        ("server", ng_server, lab.x.map),
    ];
    let mut sent = Vec::new();
    for (i, (what, server, mapped)) in cases.into_iter().enumerate() {
        let to = teredo_for(ctx, server, mapped);
        sent.push((
            to,
            format!("non-global {what} (server {server}, mapping {mapped})"),
        ));
        let seq = u8::try_from(i).unwrap_or(u8::MAX);
        lab.native_to(
            ctx,
            to,
            &payload("R18", seq, 32),
            &format!("native packet, non-global {what} (server {server}, mapping {mapped})"),
        )?;
    }
    let got = ctx.collect(ANSWER.max(ctx.target.quiet));
    for rx in &got {
        ctx.annotate(rx, "sent despite the non-global address");
        let about = TeredoPacket::parse(&rx.bytes)
            .ok()
            .and_then(|p| sent.iter().find(|(to, _)| *to == p.dst()))
            .map_or("", |(_, what)| what.as_str());
        f.fail(format!(
            "{} B from {} on {} (for the {about})",
            rx.bytes.len(),
            rx.from,
            ctx.addr(rx.ep)
        ));
    }
    let unseen = if ng.is_none() {
        "; without --non-global-source a bubble to 10.0.0.1:3544 cannot be seen"
    } else {
        ""
    };
    Ok(f.outcome(format!(
        "3 packets, nothing at {}{unseen}",
        watched.join(", ")
    )))
}
