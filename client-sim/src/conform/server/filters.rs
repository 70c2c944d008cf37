//! What a server relays at all: only bubbles and ICMPv6 (with the size policy measured), no
//! non-global IPv6 destinations, and no datagrams from its own addresses (loop guard).

use std::net::{Ipv6Addr, SocketAddrV6};

use teredo::wire::ipv6::Echo;
use teredo::wire::TeredoPacket;

use super::common::{client_or_fail, describe, need, quiet_phrase, Client};
use super::rs::solicit;
use crate::conform::ctx::Ctx;
use crate::conform::outcome::{Findings, Outcome};
use crate::conform::packets;
use crate::conform::spec::{Check, Level, Role, Spec};

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[S12, S14, S15];

/// ICMPv6 message lengths (8-byte echo header + data) tried by S12: both sides of Miredo's
/// 88-byte cap, of a 1240-byte cap (1280 minus the IPv6 header), and beyond.
pub(super) const ICMP_SIZES: [usize; 9] = [16, 88, 89, 256, 1024, 1232, 1240, 1241, 1400];

const S12: Check = Check {
    spec: Spec {
        id: "S12",
        role: Role::Server,
        title: "only bubbles and ICMPv6 relayed (ICMPv6 size policy measured)",
        rfc: "RFC 4380 §5.3.1",
        clause: "2) If the UDP packet is not a Teredo bubble or an ICMPv6 message, it SHOULD be \
                 discarded.",
        level: Level::Should,
        sends: "qualified A sends to P:3544: UDP-in-IPv6 TA → TB; ICMPv6 echo requests TA → TB \
                with ICMPv6 lengths 8, 88, 89, 256, 1024, 1232, 1240, 1241, 1400",
        expects: "the UDP packet does not reach B; the smallest echo does; the detail states the \
                  largest echo relayed and the smallest dropped (the RFC sets no cap; Miredo \
                  relays at most 88 bytes)",
    },
    run: s12_only_bubbles_and_icmpv6,
};

const S14: Check = Check {
    spec: Spec {
        id: "S14",
        role: Role::Server,
        title: "non-global IPv6 destinations not forwarded; echo to server link-local noted",
        rfc: "RFC 4380 §5.3.1",
        clause: "If the destination IPv6 address is not a global scope IPv6 address, the packet \
                 MUST NOT be forwarded.",
        level: Level::Must,
        sends: "qualified A sends to P:3544 echo requests TA → fe80::1, ff02::1, ::1, :: and a \
                bubble TA → ff02::1; then an echo TA → the server link-local",
        expects: "nothing arrives at the tool's endpoints for the first five; for the echo to the \
                  server link-local, an echo reply or nothing (reported)",
    },
    run: s14_non_global_ipv6,
};

const S15: Check = Check {
    spec: Spec {
        id: "S15",
        role: Role::Server,
        title: "loop guard: datagrams from the server's own addresses dropped",
        rfc: "RFC 4380 §5.3.1",
        clause: "3) If the IPv4 source address is not in the format of a global unicast \
                 address [...] 7) In all other cases, the packet MUST be silently discarded. \
                 (A datagram from the server's own P:3544 or S:3544 can only be a loop: Miredo's \
                 fix for MTFL-SA 0603, TEREDO.md §8.2.)",
        level: Level::Should,
        sends: "forged from P:3544 and from S:3544 to P:3544: bubbles whose Teredo source embeds \
                that address (so the mapping matches) to TB; then from qualified A a bubble to \
                the Teredo address embedding P:3544; then a valid RS",
        expects: "nothing reaches B or A within the quiet window; the RS is still answered",
    },
    run: s15_loop_guard,
};

fn s12_only_bubbles_and_icmpv6(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let a = client_or_fail!(ctx, server, "A");
    let b = client_or_fail!(ctx, server, "B");
    let mut f = Findings::default();
    let udp = packets::udp6(
        SocketAddrV6::new(a.addr, 40_000, 0, 0),
        SocketAddrV6::new(b.addr, 40_000, 0, 0),
        b"conform",
    );
    ctx.send(a.ep, server.p(), &udp, "UDP-in-IPv6 A→B")?;
    let quiet = ctx.target.quiet;
    let got = ctx.collect(quiet);
    f.expect(got.is_empty(), || {
        format!("UDP-in-IPv6 was relayed: {}", describe(ctx, &got))
    });
    let id = (ctx.random_u32() & 0xffff) as u16;
    for (seq, len) in ICMP_SIZES.iter().enumerate() {
        let data = vec![0x5a; len - 8];
        let echo = packets::echo_request(a.addr, b.addr, id, seq as u16, &data);
        ctx.send(
            a.ep,
            server.p(),
            &echo,
            &format!("echo A→B, ICMPv6 {len} B"),
        )?;
    }
    let got = ctx.collect(quiet.max(packets::ANSWER));
    let mut relayed = [false; ICMP_SIZES.len()];
    for rx in got.iter().filter(|rx| rx.ep == b.ep) {
        let seq = TeredoPacket::parse(&rx.bytes)
            .ok()
            .and_then(|p| Echo::parse(p.ipv6).ok())
            .filter(|e| e.id == id && !e.reply)
            .map(|e| usize::from(e.seq));
        if let Some(s) = seq.filter(|s| *s < relayed.len()) {
            relayed[s] = true;
        }
    }
    f.expect(relayed[0], || {
        "an 8-byte echo request from a qualified client was not relayed (case 5)".to_owned()
    });
    let mut policy = size_policy(&relayed);
    if let Some((lo, hi)) = gap(&relayed) {
        let (lo, hi) = bisect(ctx, a, b, server.p(), id, lo, hi)?;
        policy.push_str(&format!(
            "; bisected: largest relayed {lo} B, smallest dropped {hi} B"
        ));
    }
    Ok(f.outcome(format!(
        "UDP-in-IPv6 dropped ({}); {policy}",
        quiet_phrase(ctx)
    )))
}

/// The sizes between which the cap lies when the sweep left a gap: `(largest relayed,
/// smallest dropped)` of a plain cap whose bounds are more than one byte apart.
pub(super) fn gap(relayed: &[bool; ICMP_SIZES.len()]) -> Option<(usize, usize)> {
    let n = relayed.iter().take_while(|r| **r).count();
    let plain = relayed[n..].iter().all(|r| !*r);
    (plain && n > 0 && n < ICMP_SIZES.len() && ICMP_SIZES[n] - ICMP_SIZES[n - 1] > 1)
        .then(|| (ICMP_SIZES[n - 1], ICMP_SIZES[n]))
}

/// Most echoes the bisection sends (enough for any gap of [`ICMP_SIZES`]).
const BISECT_STEPS: u16 = 12;

/// Narrows a cap known to lie in `(lo, hi]` by sending one echo at a time from A to B and
/// waiting for it (up to the quiet window): returns the final `(largest relayed, smallest
/// dropped)`.
fn bisect(
    ctx: &mut Ctx<'_>,
    a: Client,
    b: Client,
    to: std::net::SocketAddrV4,
    id: u16,
    mut lo: usize,
    mut hi: usize,
) -> anyhow::Result<(usize, usize)> {
    let quiet = ctx.target.quiet;
    let mut seq = 0x100;
    while hi - lo > 1 && seq < 0x100 + BISECT_STEPS {
        let mid = lo + (hi - lo) / 2;
        let echo = packets::echo_request(a.addr, b.addr, id, seq, &vec![0x5a; mid - 8]);
        ctx.send(
            a.ep,
            to,
            &echo,
            &format!("echo A→B, ICMPv6 {mid} B (bisecting)"),
        )?;
        let arrived = |rx: &crate::conform::ctx::Rx| {
            rx.ep == b.ep
                && TeredoPacket::parse(&rx.bytes)
                    .ok()
                    .and_then(|p| Echo::parse(p.ipv6).ok())
                    .is_some_and(|e| e.id == id && e.seq == seq)
        };
        let got = ctx.recv_until(quiet, arrived);
        if got.iter().any(arrived) {
            lo = mid;
        } else {
            hi = mid;
        }
        seq += 1;
    }
    Ok((lo, hi))
}

/// Words for which ICMPv6 lengths of [`ICMP_SIZES`] were relayed.
pub(super) fn size_policy(relayed: &[bool; ICMP_SIZES.len()]) -> String {
    let largest = ICMP_SIZES
        .iter()
        .zip(relayed)
        .filter(|(_, r)| **r)
        .map(|(s, _)| *s)
        .max();
    let smallest_dropped = ICMP_SIZES
        .iter()
        .zip(relayed)
        .filter(|(_, r)| !**r)
        .map(|(s, _)| *s)
        .min();
    let monotonic = match (largest, smallest_dropped) {
        (Some(l), Some(d)) => l < d,
        _ => true,
    };
    let mut s = match (largest, smallest_dropped) {
        (Some(l), Some(d)) => format!(
            "ICMPv6 cap: largest echo relayed {l} B, smallest dropped {d} B (of {ICMP_SIZES:?})"
        ),
        (Some(l), None) => format!("ICMPv6: every size relayed, up to {l} B (no cap seen)"),
        (None, _) => "ICMPv6: no echo relayed at all".to_owned(),
    };
    if !monotonic {
        s.push_str(" (not a plain cap: some larger sizes passed)");
    }
    s
}

fn s14_non_global_ipv6(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let a = client_or_fail!(ctx, server, "A");
    let mut f = Findings::default();
    let dests: [Ipv6Addr; 4] = [
        "fe80::1".parse()?,
        "ff02::1".parse()?,
        Ipv6Addr::LOCALHOST,
        Ipv6Addr::UNSPECIFIED,
    ];
    for (i, d) in dests.iter().enumerate() {
        let echo = packets::echo_request(a.addr, *d, 0x5151, i as u16, &[0; 8]);
        ctx.send(a.ep, server.p(), &echo, &format!("echo to {d}"))?;
    }
    let bubble = packets::bubble(a.addr, dests[1], 0);
    ctx.send(a.ep, server.p(), &bubble, "bubble to ff02::1")?;
    let quiet = ctx.target.quiet;
    let got = ctx.collect(quiet);
    f.expect(got.is_empty(), || {
        format!("something came back: {}", describe(ctx, &got))
    });
    let ll = packets::server_ll(server.primary);
    let echo = packets::echo_request(a.addr, ll, 0x5152, 1, &[0; 8]);
    ctx.send(a.ep, server.p(), &echo, "echo to the server link-local")?;
    let got = ctx.collect(quiet.max(packets::ANSWER));
    let reply = got.iter().find(|rx| {
        TeredoPacket::parse(&rx.bytes)
            .ok()
            .and_then(|p| Echo::parse(p.ipv6).ok())
            .is_some_and(|e| e.reply && e.id == 0x5152)
    });
    let ll_note = match reply {
        Some(rx) => format!("echo to {ll}: echo reply from {}", rx.from),
        None if got.is_empty() => format!("echo to {ll}: no reply"),
        None => format!("echo to {ll}: {}", describe(ctx, &got)),
    };
    Ok(f.outcome(format!(
        "to fe80::1, ff02::1, ::1, ::: {}; {ll_note}",
        quiet_phrase(ctx)
    )))
}

fn s15_loop_guard(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    need!(ctx
        .target
        .need_raw()
        .map_err(|why| format!("the datagrams from P:3544 and S:3544 must be forged: {why}")));
    let a = client_or_fail!(ctx, server, "A");
    let b = client_or_fail!(ctx, server, "B");
    let mut f = Findings::default();
    for own in [server.p(), server.s()] {
        let src = packets::teredo_addr(server.primary, own, 0);
        let bubble = packets::bubble(src, b.addr, 0);
        ctx.send_forged(
            own,
            server.p(),
            &bubble,
            &format!("forged from {own}: bubble →TB"),
        )?;
    }
    let self_addr = packets::teredo_addr(server.primary, server.p(), 0);
    ctx.send(
        a.ep,
        server.p(),
        &packets::bubble(a.addr, self_addr, 0),
        "bubble to the Teredo address embedding P:3544",
    )?;
    let quiet = ctx.target.quiet;
    let got = ctx.collect(quiet);
    f.expect(got.is_empty(), || {
        format!("something reached the tool: {}", describe(ctx, &got))
    });
    let ep = ctx.udp()?;
    let nonce = ctx.nonce();
    let rs = packets::rs(Some(nonce), teredo::addr::LL_WINDOWS_RESTRICTED, false);
    let ras = solicit(ctx, ep, server.p(), &rs, "valid RS afterwards")?;
    f.expect(!ras.is_empty(), || {
        "the valid RS afterwards got no RA: the server stopped answering".to_owned()
    });
    Ok(f.outcome(format!(
        "forged from P:3544 and S:3544, and the self-addressed bubble: {}; the server still \
         answers",
        quiet_phrase(ctx)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miredo_cap_is_reported_as_88() {
        let mut r = [false; ICMP_SIZES.len()];
        r[0] = true;
        r[1] = true;
        assert_eq!(
            size_policy(&r),
            format!(
                "ICMPv6 cap: largest echo relayed 88 B, smallest dropped 89 B (of {ICMP_SIZES:?})"
            )
        );
    }

    #[test]
    fn a_gap_is_bisected_only_for_a_plain_cap() {
        let mut r = [false; ICMP_SIZES.len()];
        r[..3].fill(true);
        assert_eq!(gap(&r), Some((89, 256)));
        r[..2].fill(true);
        r[2] = false;
        assert_eq!(gap(&r), None, "88/89 are one byte apart");
        r[5] = true;
        assert_eq!(gap(&r), None, "not a plain cap");
        assert_eq!(gap(&[true; ICMP_SIZES.len()]), None);
        assert_eq!(gap(&[false; ICMP_SIZES.len()]), None);
    }

    #[test]
    fn no_cap_and_odd_policies() {
        assert!(size_policy(&[true; ICMP_SIZES.len()]).contains("no cap seen"));
        assert!(size_policy(&[false; ICMP_SIZES.len()]).contains("no echo relayed"));
        let mut r = [true; ICMP_SIZES.len()];
        r[2] = false;
        assert!(size_policy(&r).contains("not a plain cap"));
    }
}
