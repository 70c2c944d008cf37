//! Ingress anti-spoofing (R19, R23): what the relay forwards natively, and whom it trusts,
//! depends on the outer source matching the mapping in the Teredo source.

use std::net::Ipv6Addr;

use crate::conform::ctx::Ctx;
use crate::conform::outcome::{Findings, Outcome};
use crate::conform::packets::ANSWER;
use crate::conform::spec::{Check, Level, Role, Spec};

use super::lab::{new_client, payload, payload_seq, Client, Lab, Seen};

const RECEIVE_CLAUSE: &str = "Then, the Teredo relay examines whether the IPv6 source address \
     is a valid Teredo address, and if the mapped IPv4 address and mapped port match the IPv4 \
     source address and port number from which the packet is received.  If this is not the \
     case, the packet is silently discarded.";

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[
    Check {
        spec: Spec {
            id: "R19",
            role: Role::Relay,
            title: "ingress: spoofed and non-Teredo sources dropped, trusted peer delivered",
            rfc: "RFC 4380 §5.4.2",
            clause: RECEIVE_CLAUSE,
            level: Level::Must,
            sends: "after trusting X and Y: from X's socket, UDP with Y's Teredo source (another \
                    port) and with source 2001:db8::5; from a never-contacted client Z, UDP \
                    with its own matching source; from X, UDP with an RFC 6081 nonce trailer",
            expects: "the spoofed and non-Teredo packets not delivered natively; Z's delivered \
                      or dropped (policy reported: §5.4.2 \"may be silently discarded\"); X's \
                      delivered with the payload intact",
        },
        run: r19_ingress,
    },
    Check {
        spec: Spec {
            id: "R23",
            role: Role::Relay,
            title: "a mismatched bubble or packet does not make the relay trust a mapping",
            rfc: "RFC 4380 §5.4.2",
            clause: RECEIVE_CLAUSE,
            level: Level::Must,
            sends: "native packet to X (untrusted, queued); from another socket X' a bubble \
                    with X's Teredo source to fe80::dead:beef (not the relay's bubble source, no \
                    nonce trailer) and UDP with X's Teredo source; then X's own direct bubble",
            expects: "nothing sent to X' and nothing delivered natively from X'; the queued \
                      packet still waiting, and delivered to X's mapping (only) after X's \
                      bubble",
        },
        run: r23_mismatch_no_trust,
    },
];

fn r19_ingress(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let lab = match Lab::open(ctx)? {
        Ok(l) => l,
        Err(why) => return Ok(Outcome::skipped(why)),
    };
    let x = lab.x;
    let y = new_client(ctx)?;
    for (c, seq) in [(x, 0), (y, 1)] {
        if let Err(why) = lab.trust(ctx, c, &payload("R19-trust", seq, 32))? {
            return Ok(Outcome::fail(format!(
                "could not make the relay trust {}: {why}",
                c.addr
            )));
        }
    }
    let z = new_client(ctx)?;
    let spoofed = payload("R19", 1, 32);
    let non_teredo = payload("R19", 2, 32);
    let unknown = payload("R19", 3, 32);
    let trailer = payload("R19", 4, 32);
    lab.client_data(
        ctx,
        x,
        y.addr,
        &spoofed,
        &[],
        "X sends with Y's Teredo source",
    )?;
    let doc: Ipv6Addr = "2001:db8::5".parse().expect("literal");
    lab.client_data(
        ctx,
        x,
        doc,
        &non_teredo,
        &[],
        "X sends with a non-Teredo source",
    )?;
    lab.client_data(
        ctx,
        z,
        z.addr,
        &unknown,
        &[],
        "unknown peer Z (mapping matches)",
    )?;
    let nonce = ctx.nonce();
    let mut tr = vec![0x01, 0x04];
    tr.extend_from_slice(&nonce[..4]);
    lab.client_data(
        ctx,
        x,
        x.addr,
        &trailer,
        &tr,
        "trusted X, with a nonce trailer",
    )?;
    let seen = lab.watch(ctx, x, ANSWER.max(ctx.target.quiet));
    let delivered: Vec<(u8, Vec<u8>)> = seen
        .iter()
        .filter_map(|(_, s)| match s {
            Seen::Native(p) => payload_seq("R19", p).map(|n| (n, p.clone())),
            _ => None,
        })
        .collect();
    let got = |n: u8| delivered.iter().any(|(s, _)| *s == n);
    let mut f = Findings::default();
    f.expect(!got(1), || {
        "delivered a packet whose Teredo source (Y) does not match X's mapping".to_owned()
    });
    f.expect(!got(2), || {
        "delivered a packet with a non-Teredo source".to_owned()
    });
    f.expect(
        delivered.iter().any(|(n, p)| *n == 4 && *p == trailer),
        || "the trusted X's packet with a trailer was not delivered intact".to_owned(),
    );
    let policy = if got(3) {
        "accepts unknown peers whose mapping matches"
    } else {
        "drops unknown peers"
    };
    Ok(f.outcome(format!(
        "spoofed and non-Teredo sources dropped; {policy}; trusted X with trailer delivered \
         (whether the trailer was stripped is not visible natively: the receiving IPv6 stack \
         trims to the payload length)"
    )))
}

fn r23_mismatch_no_trust(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let lab = match Lab::open(ctx)? {
        Ok(l) => l,
        Err(why) => return Ok(Outcome::skipped(why)),
    };
    let x = lab.x;
    let other = new_client(ctx)?;
    let xp = Client {
        addr: x.addr,
        ..other
    };
    let queued = payload("R23", 0, 32);
    lab.native_to(ctx, x.addr, &queued, "native packet (X untrusted)")?;
    let got = ctx.recv_until(ANSWER, |rx| rx.ep == lab.sx);
    let seen = lab.label(ctx, x, got);
    let Some(relay_src) = seen.iter().find_map(|(_, s)| match s {
        Seen::Indirect(b) if b.dst == x.addr => Some(b.src),
        _ => None,
    }) else {
        return Ok(Outcome::fail("no indirect bubble for X at SX (see R16)"));
    };
    let elsewhere: Ipv6Addr = "fe80::dead:beef".parse().expect("literal");
    lab.client_bubble(ctx, xp, elsewhere, "bubble from X' with X's Teredo source")?;
    let spoof = payload("R23", 1, 32);
    lab.client_data(
        ctx,
        xp,
        x.addr,
        &spoof,
        &[],
        "UDP from X' with X's Teredo source",
    )?;
    let seen = lab.watch(ctx, x, ANSWER.max(ctx.target.quiet));
    let mut f = Findings::default();
    for (rx, s) in &seen {
        if rx.ep == xp.ep && !matches!(s, Seen::Direct(_)) {
            f.fail(format!("sent X' (mismatched mapping) {}", s.label()));
        }
        if rx.ep == x.ep && matches!(s, Seen::Data(_)) {
            f.fail("delivered X's queue although X never answered");
        }
        if let Seen::Native(p) = s {
            if payload_seq("R23", p) == Some(1) {
                f.fail("delivered natively a packet from X' with X's Teredo source");
            }
        }
    }
    lab.client_bubble(ctx, x, relay_src, "X's own direct bubble")?;
    let seen = lab.watch(ctx, x, ANSWER);
    let to_x = seen
        .iter()
        .filter(|(rx, s)| rx.ep == x.ep && *s == Seen::Data(queued.clone()))
        .count();
    let to_xp = seen
        .iter()
        .filter(|(rx, s)| rx.ep == xp.ep && matches!(s, Seen::Data(_)))
        .count();
    f.expect(to_x == 1, || {
        format!("the queued packet reached X's mapping {to_x} times after X's bubble")
    });
    f.expect(to_xp == 0, || {
        format!("{to_xp} data packets to X' after X's bubble")
    });
    let proven = proven_mismatch(ctx, &lab)?;
    Ok(f.outcome(format!(
        "X' (X's Teredo source, other port) neither trusted nor forwarded; queue delivered to \
         X after its own bubble; {proven}"
    )))
}

/// Not a verdict: whether the relay trusts a mismatched mapping whose bubble answers its
/// own (sent to the relay's bubble source: Miredo's extension, RFC 6081-style symmetric NAT
/// support), and so sends the queue there.
fn proven_mismatch(ctx: &mut Ctx<'_>, lab: &Lab) -> anyhow::Result<String> {
    let c = new_client(ctx)?;
    let other = new_client(ctx)?;
    let cp = Client {
        addr: c.addr,
        ..other
    };
    lab.native_to(
        ctx,
        c.addr,
        &payload("R23p", 0, 32),
        "native packet (X2 untrusted)",
    )?;
    let got = ctx.recv_until(ANSWER, |rx| rx.ep == lab.sx);
    let seen = lab.label(ctx, c, got);
    let Some(src) = seen.iter().find_map(|(_, s)| match s {
        Seen::Indirect(b) if b.dst == c.addr => Some(b.src),
        _ => None,
    }) else {
        return Ok("no bubble for X2 (proven-mismatch probe not run)".to_owned());
    };
    lab.client_bubble(ctx, cp, src, "bubble from X2' answering the relay's bubble")?;
    let seen = lab.watch(ctx, c, ANSWER);
    let to_cp = seen
        .iter()
        .any(|(rx, s)| rx.ep == cp.ep && matches!(s, Seen::Data(_)));
    Ok(if to_cp {
        "a mismatched bubble sent to the relay's bubble source is trusted (symmetric-NAT \
         support)"
            .to_owned()
    } else {
        "a mismatched bubble sent to the relay's bubble source is not trusted".to_owned()
    })
}
