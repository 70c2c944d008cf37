//! Malformed datagrams on the relay's Teredo port (R22): silently dropped, and the relay
//! keeps forwarding both ways afterwards.

use std::net::SocketAddrV6;

use crate::conform::ctx::Ctx;
use crate::conform::outcome::{Findings, Outcome};
use crate::conform::packets::{self, ANSWER};
use crate::conform::spec::{Check, Level, Role, Spec};

use super::lab::{payload, payload_seq, Lab, Seen, X_APP_PORT};

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[Check {
    spec: Spec {
        id: "R22",
        role: Role::Relay,
        title: "malformed datagrams dropped; the relay forwards afterwards",
        rfc: "RFC 4380 §5.4.2",
        clause: "When a UDP packet is received over the Teredo service port, the Teredo relay \
                 checks that it contains a valid IPv6 packet as specified in [RFC2460].  If \
                 this is not the case, the packet is silently discarded.",
        level: Level::Must,
        sends: "from trusted X: an empty datagram, 10 zero bytes, a 40-byte header of IP \
                version 4, an IPv6 packet whose payload length overruns the datagram, an \
                auth header whose lengths overrun, a truncated origin indication; then a \
                valid packet each way",
        expects: "nothing sent back and nothing delivered natively for the malformed ones; \
                  then X's packet delivered natively and the native packet delivered to X",
    },
    run: r22_malformed,
}];

/// The malformed datagrams, with a label each; `ok` is a valid packet to bend.
fn malformed(ok: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut v4 = ok.to_vec();
    v4[0] = 0x45;
    let mut overrun = ok.to_vec();
    let plen = u16::try_from(ok.len()).unwrap_or(u16::MAX);
    overrun[4..6].copy_from_slice(&plen.to_be_bytes());
    let mut auth = vec![0x00, 0x01, 0xff, 0xff];
    auth.extend_from_slice(&ok[..16]);
    vec![
        ("empty datagram", Vec::new()),
        ("10 zero bytes", vec![0; 10]),
        ("IP version 4", v4),
        ("payload length overruns the datagram", overrun),
        ("auth header lengths overrun", auth),
        ("truncated origin indication", vec![0x00, 0x00, 0x12, 0x34]),
    ]
}

fn r22_malformed(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let lab = match Lab::open(ctx)? {
        Ok(l) => l,
        Err(why) => return Ok(Outcome::skipped(why)),
    };
    let x = lab.x;
    if let Err(why) = lab.trust(ctx, x, &payload("R22", 0, 32))? {
        return Ok(Outcome::fail(format!("first contact failed: {why}")));
    }
    let ok = packets::udp6(
        SocketAddrV6::new(x.addr, X_APP_PORT, 0, 0),
        lab.native_addr,
        &payload("R22", 1, 32),
    );
    let cases = malformed(&ok);
    for (what, bytes) in &cases {
        ctx.send(x.ep, lab.relay, bytes, what)?;
    }
    let mut f = Findings::default();
    for (rx, s) in lab.watch(ctx, x, ANSWER.max(ctx.target.quiet)) {
        f.fail(format!(
            "after the malformed datagrams: {} from {}",
            s.label(),
            rx.from
        ));
    }
    let up = payload("R22", 2, 32);
    lab.client_data(ctx, x, x.addr, &up, &[], "valid packet from X")?;
    let down = payload("R22", 3, 32);
    lab.native_to(ctx, x.addr, &down, "valid native packet to X")?;
    let seen = lab.watch(ctx, x, ANSWER);
    f.expect(
        seen.iter()
            .any(|(_, s)| matches!(s, Seen::Native(p) if payload_seq("R22", p) == Some(2))),
        || "X's valid packet not delivered natively afterwards".to_owned(),
    );
    f.expect(
        seen.iter().any(|(_, s)| *s == Seen::Data(down.clone())),
        || "the native packet not delivered to X afterwards".to_owned(),
    );
    Ok(f.outcome(format!(
        "{} malformed datagrams dropped silently; forwarding both ways afterwards",
        cases.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use teredo::wire::TeredoPacket;

    #[test]
    fn every_case_is_unreadable_to_the_core() {
        let ok = packets::udp6(
            "[2001:0:c633:640a::1]:1".parse().unwrap(),
            "[2001:db8::99]:2".parse().unwrap(),
            b"hello",
        );
        assert!(TeredoPacket::parse(&ok).is_ok());
        for (what, bytes) in malformed(&ok) {
            assert!(TeredoPacket::parse(&bytes).is_err(), "{what} parses");
        }
    }
}
