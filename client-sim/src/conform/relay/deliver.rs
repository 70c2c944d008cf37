//! First contact from the native side (R16): the relay bubbles through X's server before it
//! sends X anything, delivers the queue once X answers, and forwards X's reply natively.

use crate::conform::ctx::Ctx;
use crate::conform::outcome::{Findings, Outcome};
use crate::conform::packets::ANSWER;
use crate::conform::spec::{Check, Level, Role, Spec};

use super::lab::{ms, payload, Lab, Seen};

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[Check {
    spec: Spec {
        id: "R16",
        role: Role::Relay,
        title: "native packet to an untrusted client: indirect bubble first, then delivery",
        rfc: "RFC 4380 §5.4.1",
        clause: "If there is no trusted entry in the list of peers, and if the destination is \
                 a Teredo IPv6 address in which the cone bit is set to 0, the Teredo relay \
                 creates a bubble whose source address is set to a local IPv6 address, and \
                 whose destination address is set to the Teredo IPv6 address of the packet's \
                 destination.  The bubble is sent to the server address corresponding to the \
                 Teredo destination.  The entry becomes trusted when a bubble or another \
                 packet is received from this IPv6 address",
        level: Level::Must,
        sends: "native UDP to X (2001:0:<local>:<flags, C=0>:~port:~local); then X's direct \
                bubble (src X, dst = the relay's bubble source) from X's mapping; then X's \
                UDP reply to the native host; then a second native packet",
        expects: "within 1 s an indirect bubble (plen 0, nh 59, dst X) at SX = <local>:3544 \
                  and no data to X's mapping; after X's bubble the queued packet at exactly X's \
                  mapping; X's reply delivered natively; the second packet sent at once, \
                  without a bubble",
    },
    run: r16_bubble_then_deliver,
}];

fn r16_bubble_then_deliver(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let lab = match Lab::open(ctx)? {
        Ok(l) => l,
        Err(why) => return Ok(Outcome::skipped(why)),
    };
    let x = lab.x;
    let mut f = Findings::default();
    let first = payload("R16", 1, 32);
    lab.native_to(ctx, x.addr, &first, "native packet 1 (X untrusted)")?;
    let seen = lab.watch(ctx, x, ANSWER);
    let indirect: Vec<_> = seen
        .iter()
        .filter_map(|(rx, s)| match s {
            Seen::Indirect(b) if b.dst == x.addr => Some((rx.at, b.clone())),
            _ => None,
        })
        .collect();
    let direct = seen
        .iter()
        .filter(|(rx, s)| rx.ep == x.ep && matches!(s, Seen::Direct(_)))
        .count();
    let early_data = seen
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Data(_)))
        .count();
    f.expect(early_data == 0, || {
        format!("{early_data} data packets to X before it answered a bubble")
    });
    let Some((at, b)) = indirect.first().cloned() else {
        f.fail(format!("no indirect bubble for X at SX within {ANSWER:?}"));
        return Ok(f.outcome(""));
    };
    f.expect(b.from == lab.relay.into(), || {
        format!(
            "indirect bubble from {}, not the relay's {}",
            b.from, lab.relay
        )
    });
    let mut notes = vec![format!(
        "indirect bubble after {} ms: src {}, hop limit {}, trailers [{}]; {} direct bubble(s)",
        ms(at),
        b.src,
        b.hop_limit,
        b.trailers,
        direct
    )];

    let answered = ctx.elapsed();
    lab.client_bubble(ctx, x, b.src, "X's direct bubble")?;
    let seen = lab.watch(ctx, x, ANSWER);
    let data: Vec<_> = seen
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Data(_)))
        .collect();
    match data.as_slice() {
        [(rx, Seen::Data(p))] => {
            f.expect(rx.ep == x.ep && rx.from == lab.relay.into(), || {
                format!("queued packet from {} on the wrong socket", rx.from)
            });
            f.expect(*p == first, || "queued packet altered".to_owned());
            notes.push(format!(
                "queued packet delivered {} ms after X's bubble",
                ms(rx.at.saturating_sub(answered))
            ));
        }
        [] => {
            f.fail("the queued packet was not delivered after X's direct bubble");
        }
        more => {
            f.fail(format!(
                "{} data packets after X's bubble, sent 1",
                more.len()
            ));
        }
    }

    let reply = payload("R16", 2, 32);
    lab.client_data(ctx, x, x.addr, &reply, &[], "X's reply")?;
    let seen = lab.watch(ctx, x, ANSWER);
    let native: Vec<_> = seen
        .iter()
        .filter_map(|(rx, s)| match s {
            Seen::Native(p) => Some((rx.from, p.clone())),
            _ => None,
        })
        .collect();
    let want_from = std::net::SocketAddr::from(std::net::SocketAddrV6::new(
        x.addr,
        super::lab::X_APP_PORT,
        0,
        0,
    ));
    f.expect(
        native
            .iter()
            .any(|(from, p)| *p == reply && *from == want_from),
        || format!("X's reply not delivered natively (native side got {native:?})"),
    );

    let second = payload("R16", 3, 32);
    lab.native_to(ctx, x.addr, &second, "native packet 2 (X trusted)")?;
    let seen = lab.watch(ctx, x, ANSWER);
    let bubbles = seen
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Indirect(_) | Seen::Direct(_)))
        .count();
    f.expect(
        seen.iter().any(|(_, s)| *s == Seen::Data(second.clone())),
        || "packet 2 not delivered to the trusted X".to_owned(),
    );
    f.expect(bubbles == 0, || {
        format!("{bubbles} bubble(s) for the trusted X")
    });
    notes.push("reply delivered natively; packet 2 sent directly".to_owned());
    Ok(f.outcome(notes.join("; ")))
}
