//! Bubble pacing and give-up (R17): X never answers while the native host keeps sending.

use std::time::Duration;

use crate::conform::ctx::Ctx;
use crate::conform::outcome::{Findings, Outcome};
use crate::conform::spec::{Check, Level, Role, Spec};

use super::icmp::IcmpWatch;
use super::lab::{ms, payload, Lab, Seen};

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[Check {
    spec: Spec {
        id: "R17",
        role: Role::Relay,
        title: "bubbles to a silent client ≥ 2 s apart, at most 4, then none",
        rfc: "RFC 4380 §5.2.6, §5.4.1",
        clause: "The client MUST NOT send a bubble if the last transmission date and time is \
                 less than 2 seconds before the current date and time; The client MUST NOT \
                 send a bubble if it has already sent 4 bubbles to the peer in the last 300 \
                 seconds without receiving a direct response. (§5.4.1: relays maintain the \
                 same list of peers; \"the Teredo relay may repeat the bubble, up to three \
                 times\")",
        level: Level::Must,
        sends: "one native packet to X every second for 22 s (X never answers), then a burst \
                of 20",
        expects: "bubbles for X (per kind: indirect at SX, direct at X) at least 2 s apart \
                  (150 ms slack) and at most 4, none after the 4th, no data to X; ICMPv6 \
                  destination unreachable toward the native host allowed (counted when a raw \
                  ICMPv6 socket is available)",
    },
    run: r17_pacing,
}];

/// Arrival jitter tolerated on the 2 s spacing.
const SLACK: Duration = Duration::from_millis(150);
/// How long the native host keeps sending, one packet a second.
const DRIP_SECONDS: u8 = 22;
/// The burst sent at the end (rate limit of ICMPv6 errors).
const BURST: u8 = 20;

fn r17_pacing(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    if let Err(why) = ctx.target.need_slow("22 s") {
        return Ok(Outcome::skipped(why));
    }
    let lab = match Lab::open(ctx)? {
        Ok(l) => l,
        Err(why) => return Ok(Outcome::skipped(why)),
    };
    let x = lab.x;
    let mut icmp = IcmpWatch::open(*lab.native_addr.ip());
    let mut seen = Vec::new();
    for i in 0..DRIP_SECONDS {
        lab.native_to(
            ctx,
            x.addr,
            &payload("R17", i, 32),
            "native packet (X silent)",
        )?;
        seen.extend(lab.watch(ctx, x, Duration::from_secs(1)));
    }
    let drip_errors = icmp.as_mut().ok().map(|w| w.drain(x.addr));
    for i in 0..BURST {
        lab.native_to(ctx, x.addr, &payload("R17b", i, 32), "burst packet")?;
    }
    let burst_seen = lab.watch(ctx, x, Duration::from_secs(1));
    let burst_errors = icmp.as_mut().ok().map(|w| w.drain(x.addr));
    let after_drip = seen.len();
    seen.extend(burst_seen);

    let mut f = Findings::default();
    let indirect: Vec<Duration> = seen
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Indirect(b) if b.dst == x.addr))
        .map(|(rx, _)| rx.at)
        .collect();
    let direct: Vec<Duration> = seen
        .iter()
        .filter(|(rx, s)| rx.ep == x.ep && matches!(s, Seen::Direct(_)))
        .map(|(rx, _)| rx.at)
        .collect();
    let data = seen
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Data(_)))
        .count();
    f.expect(!indirect.is_empty(), || {
        "no indirect bubble at all".to_owned()
    });
    f.expect(data == 0, || format!("{data} data packets to the silent X"));
    for (kind, times) in [("indirect", &indirect), ("direct", &direct)] {
        if let Some(why) = pacing_fault(times) {
            f.fail(format!("{kind} bubbles: {why}"));
        }
    }
    let in_burst = seen[after_drip..]
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Indirect(_) | Seen::Direct(_)))
        .count();
    let icmp_note = match (&icmp, drip_errors, burst_errors) {
        (Ok(_), Some(d), Some(b)) => format!(
            "ICMPv6 unreachable toward the sender: {} during the drip (codes {:?}), {} for a \
             burst of {BURST}",
            d.len(),
            codes(&d),
            b.len()
        ),
        (Err(why), _, _) => format!("ICMPv6 errors not observed: {why}"),
        _ => String::new(),
    };
    Ok(f.outcome(format!(
        "indirect bubbles at {} ms, direct at {} ms; {in_burst} bubble(s) during the burst; {icmp_note}",
        list_ms(&indirect),
        list_ms(&direct),
    )))
}

/// Why bubbles sent at `times` break the pacing rules, if they do: closer than 2 s (less
/// [`SLACK`]) or more than 4.
fn pacing_fault(times: &[Duration]) -> Option<String> {
    if times.len() > 4 {
        return Some(format!("{} sent, at most 4 allowed", times.len()));
    }
    times.windows(2).find_map(|w| {
        let gap = w[1] - w[0];
        (gap + SLACK < Duration::from_secs(2)).then(|| format!("only {} ms apart", ms(gap)))
    })
}

/// The distinct ICMPv6 codes among `errors`.
fn codes(errors: &[super::icmp::Unreachable]) -> Vec<u8> {
    let mut c: Vec<u8> = errors.iter().map(|u| u.code).collect();
    c.sort_unstable();
    c.dedup();
    c
}

fn list_ms(times: &[Duration]) -> String {
    if times.is_empty() {
        return "-".to_owned();
    }
    times
        .iter()
        .map(|t| ms(*t).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: &[u64]) -> Vec<Duration> {
        ms.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn pacing_rules() {
        assert_eq!(pacing_fault(&at(&[0, 2000, 4000, 6000])), None);
        assert_eq!(pacing_fault(&at(&[0, 1900, 3900])), None, "within slack");
        assert_eq!(pacing_fault(&at(&[])), None);
        assert!(pacing_fault(&at(&[0, 1000])).unwrap().contains("1000 ms"));
        assert!(pacing_fault(&at(&[0, 3000, 6000, 9000, 12000]))
            .unwrap()
            .contains("5 sent"));
    }
}
