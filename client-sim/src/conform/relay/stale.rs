//! Staleness (R20): a trusted client that has been silent for more than 30 s is no longer
//! valid, so the relay bubbles again before it sends to the recorded mapping.

use std::time::Duration;

use crate::conform::ctx::Ctx;
use crate::conform::outcome::{Findings, Outcome};
use crate::conform::packets::ANSWER;
use crate::conform::spec::{Check, Level, Role, Spec};

use super::lab::{payload, Lab, Seen};

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[Check {
    spec: Spec {
        id: "R20",
        role: Role::Relay,
        title: "a client silent for over 30 s is bubbled again before delivery",
        rfc: "RFC 4380 §5.4.1, §5.2.4",
        clause: "The relay then checks if there is an entry for this IPv6 address in the list \
                 of recent Teredo peers, and if the entry is still valid. (§5.2.4: the entry \
                 is valid if \"the date and time of last reception is less that 30 seconds \
                 from the current time\")",
        level: Level::Should,
        sends: "first contact with X (native packet, X's direct bubble); 31 s of silence from \
                X; a native packet; X's direct bubble",
        expects: "after the silence an indirect bubble for X at SX within 1 s and no data to X \
                  until X answers; then the packet at X's mapping",
    },
    run: r20_staleness,
}];

/// How long X stays silent after trust.
const SILENCE: Duration = Duration::from_secs(31);

fn r20_staleness(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    if let Err(why) = ctx.target.need_slow("31 s") {
        return Ok(Outcome::skipped(why));
    }
    let lab = match Lab::open(ctx)? {
        Ok(l) => l,
        Err(why) => return Ok(Outcome::skipped(why)),
    };
    let x = lab.x;
    if let Err(why) = lab.trust(ctx, x, &payload("R20", 0, 32))? {
        return Ok(Outcome::fail(format!("first contact failed: {why}")));
    }
    let mut f = Findings::default();
    let quiet = lab.watch(ctx, x, SILENCE);
    let idle_bubbles = quiet
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Indirect(_) | Seen::Direct(_)))
        .count();
    let late = payload("R20", 1, 32);
    lab.native_to(
        ctx,
        x.addr,
        &late,
        "native packet after 31 s of silence from X",
    )?;
    let seen = lab.watch(ctx, x, ANSWER);
    let bubble = seen.iter().find_map(|(rx, s)| match s {
        Seen::Indirect(b) if b.dst == x.addr => Some((rx.at, b.src)),
        _ => None,
    });
    let early = seen
        .iter()
        .filter(|(rx, s)| rx.ep == x.ep && matches!(s, Seen::Data(_)))
        .count();
    f.expect(early == 0, || {
        format!("sent {early} data packet(s) to the stale mapping without a new bubble exchange")
    });
    let Some((_, src)) = bubble else {
        f.fail("no new indirect bubble for the stale X");
        return Ok(f.outcome(""));
    };
    lab.client_bubble(ctx, x, src, "X's direct bubble (answer)")?;
    let seen = lab.watch(ctx, x, ANSWER);
    f.expect(
        seen.iter()
            .any(|(rx, s)| rx.ep == x.ep && *s == Seen::Data(late.clone())),
        || "the packet was not delivered after X's new bubble".to_owned(),
    );
    Ok(f.outcome(format!(
        "{idle_bubbles} bubble(s) while X was idle; new indirect bubble after the silence, \
         packet delivered after X answered"
    )))
}
