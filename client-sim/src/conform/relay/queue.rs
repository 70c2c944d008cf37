//! The queue for an untrusted client (R21): what the relay keeps while it waits for the
//! client's bubble, and in which order it delivers it.

use crate::conform::ctx::Ctx;
use crate::conform::outcome::{Findings, Outcome};
use crate::conform::packets::ANSWER;
use crate::conform::spec::{Check, Level, Role, Spec};

use super::lab::{new_client, payload, payload_seq, Client, Lab, Seen};

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[Check {
    spec: Spec {
        id: "R21",
        role: Role::Relay,
        title: "queue for an untrusted client is bounded; delivery order reported",
        rfc: "RFC 4380 §5.4.1",
        clause: "The relay MAY queue packets bound to untrusted entries; the queued packets \
                 SHOULD be de-queued and forwarded when the entry becomes trusted; they SHOULD \
                 be deleted if the entry is deleted.  To avoid denial of service attacks, the \
                 relays SHOULD limit the number of packets in such queues.",
        level: Level::Should,
        sends: "10 native packets of 148 bytes to untrusted X, then X's direct bubble; then \
                100 packets of 148 bytes (14800 B) to another untrusted client X2, then its \
                bubble",
        expects: "for X: each delivered packet one of the 10, none twice (count, bytes and order \
                  FIFO/LIFO reported); for X2: fewer than 100 delivered (a bound exists)",
    },
    run: r21_queue,
}];

/// IPv6 (40) + UDP (8) + this = 148 bytes, as in TEREDO.md §14 R-b.
const PAYLOAD_LEN: usize = 100;

fn r21_queue(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let lab = match Lab::open(ctx)? {
        Ok(l) => l,
        Err(why) => return Ok(Outcome::skipped(why)),
    };
    let mut f = Findings::default();
    let small = match flood(ctx, &lab, lab.x, "R21", 10)? {
        Ok(d) => d,
        Err(why) => return Ok(Outcome::fail(why)),
    };
    let mut sorted = small.clone();
    sorted.sort_unstable();
    sorted.dedup();
    f.expect(sorted.len() == small.len(), || {
        format!("duplicates among {small:?}")
    });
    f.expect(small.iter().all(|n| (1..=10).contains(n)), || {
        format!("delivered packets not sent: {small:?}")
    });
    let x2 = new_client(ctx)?;
    let big = match flood(ctx, &lab, x2, "R21b", 100)? {
        Ok(d) => d,
        Err(why) => return Ok(Outcome::fail(why)),
    };
    f.expect(big.len() < 100, || {
        "all 100 queued packets (14800 B) delivered: no bound".to_owned()
    });
    Ok(f.outcome(format!(
        "10 queued: {} delivered ({} B), order {} {:?}; 100 queued: {} delivered ({} B), order {}",
        small.len(),
        small.len() * 148,
        order(&small),
        small,
        big.len(),
        big.len() * 148,
        order(&big),
    )))
}

/// Sends `n` packets to untrusted `c`, answers the relay's bubble, and returns the
/// sequence numbers delivered to `c`, in arrival order.
fn flood(
    ctx: &mut Ctx<'_>,
    lab: &Lab,
    c: Client,
    tag: &str,
    n: u8,
) -> anyhow::Result<Result<Vec<u8>, String>> {
    for seq in 1..=n {
        lab.native_to(
            ctx,
            c.addr,
            &payload(tag, seq, PAYLOAD_LEN),
            "queued packet",
        )?;
    }
    let seen = lab.watch(ctx, c, ANSWER);
    let early = seen
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Data(_)))
        .count();
    if early > 0 {
        return Ok(Err(format!("{early} packets sent to untrusted {}", c.map)));
    }
    let Some(src) = seen.iter().find_map(|(_, s)| match s {
        Seen::Indirect(b) if b.dst == c.addr => Some(b.src),
        _ => None,
    }) else {
        return Ok(Err(format!("no indirect bubble for {}", c.addr)));
    };
    lab.client_bubble(ctx, c, src, "direct bubble (answer)")?;
    let seen = lab.watch(ctx, c, ANSWER);
    Ok(Ok(seen
        .iter()
        .filter(|(rx, _)| rx.ep == c.ep)
        .filter_map(|(_, s)| match s {
            Seen::Data(p) => payload_seq(tag, p),
            _ => None,
        })
        .collect()))
}

/// FIFO, LIFO, or other, for sequence numbers in arrival order.
fn order(seqs: &[u8]) -> &'static str {
    if seqs.len() < 2 {
        "-"
    } else if seqs.windows(2).all(|w| w[0] < w[1]) {
        "FIFO"
    } else if seqs.windows(2).all(|w| w[0] > w[1]) {
        "LIFO"
    } else {
        "mixed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders() {
        assert_eq!(order(&[1, 2, 3]), "FIFO");
        assert_eq!(order(&[8, 7, 1]), "LIFO");
        assert_eq!(order(&[2, 1, 3]), "mixed");
        assert_eq!(order(&[4]), "-");
    }
}
