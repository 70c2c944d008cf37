//! Whether each client family qualifies against the server (interop levels): the core's own
//! client ([`teredo::client::Client`]) with the family's profile runs its qualification, the
//! tool carrying its RSs to the server and the answers back, so the RA is judged by exactly
//! the checks the client applies (nonce, origin indication, destination, prefix, MTU, which
//! server address answered). The RA size is reported beside (Microsoft servers send 109
//! bytes without an MTU option, Miredo 117 with it).

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use rand::SeedableRng as _;
use teredo::client::{Client, ClientConfig, Profile, State};
use teredo::{DropReason, Kind, Local, Output};

use super::common::need;
use crate::conform::ctx::Ctx;
use crate::conform::outcome::Outcome;
use crate::conform::packets::ANSWER;
use crate::conform::spec::{Check, Level, Role, Spec};

/// The checks of this file.
pub(super) const CHECKS: &[Check] = &[
    check(
        "S21",
        "Windows XP clients qualify",
        Level::InteropWindows,
        "Windows XP SP2 client (the core's xp-sp2 profile, TEREDO.md §4.1, §12): cone probe \
         from fe80::8000:5445:5245:444f, restricted RS with the 16-byte SLLA option, secondary \
         check; accepts an RA only with its nonce, confirmation 0, an origin indication, dst = \
         its link-local, one PIO 2001:0:<server>::/64, an MTU option (if any) in 1280..65535, \
         from the address the cone rule predicts",
        xp,
    ),
    check(
        "S22",
        "Windows Vista/7 clients qualify",
        Level::InteropWindows,
        "Windows Vista SP1 / 7 client (the core's vista and win7 profiles, RFC 5991 App. A, \
         TEREDO.md §12): cone probe from fe80::8000:ffff:ffff:fffe for reporting, restricted RS \
         from fe80::ffff:ffff:fffe, secondary check; same RA acceptance as XP",
        vista_win7,
    ),
    check(
        "S23",
        "Miredo clients qualify",
        Level::InteropMiredo,
        "Miredo 1.2 client (the core's miredo profile, TEREDO.md §4.5, §5.3): restricted RS to \
         the primary only; rejects an RA without auth or with another nonce ('Authentication \
         with server failed'), a non-zero confirmation, a second PIO, an MTU outside \
         1280..65535, or a source port other than 3544",
        miredo,
    ),
];

const fn check(
    id: &'static str,
    title: &'static str,
    level: Level,
    clause: &'static str,
    run: fn(&mut Ctx<'_>) -> anyhow::Result<Outcome>,
) -> Check {
    Check {
        spec: Spec {
            id,
            role: Role::Server,
            title,
            rfc: "RFC 4380 §5.2.1, §5.3.2",
            clause,
            level,
            sends: "the RSs the profile's client sends while qualifying (cone probe, restricted, \
                    secondary check as the profile does), from one fresh endpoint",
            expects: "the client ends qualified; the detail names the RA the client rejected \
                      and why otherwise, and the RA sizes seen",
        },
        run,
    }
}

fn xp(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    run_profiles(ctx, &[Profile::XpSp2], "Windows XP")
}

fn vista_win7(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    run_profiles(ctx, &[Profile::Vista, Profile::Win7], "Windows Vista/7")
}

fn miredo(ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    run_profiles(ctx, &[Profile::Miredo], "Miredo")
}

fn run_profiles(ctx: &mut Ctx<'_>, profiles: &[Profile], family: &str) -> anyhow::Result<Outcome> {
    let server = need!(ctx.target.need_server());
    let mut runs = Vec::new();
    let mut delays = Vec::new();
    for &profile in profiles {
        let ep = ctx.udp()?;
        let local = ctx.addr4(ep);
        let seed = u64::from(ctx.random_u32());
        let run = drive(profile, server.primary, local, seed, |to, bytes| {
            let sent_at = ctx.elapsed();
            ctx.send(ep, to, bytes, &format!("RS of the {profile} client"))?;
            let got = ctx.recv_until(ANSWER, |rx| rx.ep == ep);
            if let Some(first) = got.iter().find(|rx| rx.ep == ep) {
                delays.push(first.at.saturating_sub(sent_at));
            }
            Ok(got
                .iter()
                .filter(|rx| rx.ep == ep)
                .filter_map(|rx| crate::conform::packets::from4(rx).map(|f| (f, rx.bytes.clone())))
                .collect())
        })?;
        runs.push((profile, run));
    }
    let mut o = verdict(family, &runs);
    if let Some(max) = delays.iter().max() {
        o.detail.push_str(&format!(
            "; slowest answer to an RS {:.1} ms",
            max.as_secs_f64() * 1e3
        ));
    }
    Ok(o)
}

/// The datagrams that came back to one RS: sender and bytes.
pub(super) type Answers = Vec<(SocketAddrV4, Vec<u8>)>;

/// What one profile's qualification came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ProfileRun {
    /// The client ended qualified.
    pub qualified: bool,
    /// Its final state and NAT type, as `show state` would say.
    pub state: String,
    /// Every datagram the client refused, with the reason and who sent it.
    pub rejected: Vec<(SocketAddrV4, usize, DropReason)>,
    /// Every datagram it accepted as an RA: sender and size.
    pub accepted: Vec<(SocketAddrV4, usize)>,
    /// RSs sent.
    pub rs_sent: usize,
}

/// Most RSs a qualification may send before the run stops (every profile needs far fewer).
const MAX_RS: usize = 24;

/// Runs the `profile` client's qualification against a server with primary `primary`:
/// `exchange(to, rs)` delivers an RS and returns the datagrams that came back. Time is
/// virtual: when nothing is left to send, the clock jumps to the client's next timer, so
/// retransmissions and phase timeouts cost no waiting.
pub(super) fn drive(
    profile: Profile,
    primary: std::net::Ipv4Addr,
    local: SocketAddrV4,
    seed: u64,
    mut exchange: impl FnMut(SocketAddrV4, &[u8]) -> anyhow::Result<Answers>,
) -> anyhow::Result<ProfileRun> {
    let cfg = ClientConfig::profile(profile, primary);
    let mut now = Instant::now();
    let rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut client = Client::new(cfg, rng, local, now);
    let mut run = ProfileRun {
        qualified: false,
        state: String::new(),
        rejected: Vec::new(),
        accepted: Vec::new(),
        rs_sent: 0,
    };
    let mut buf = vec![0u8; 65_536];
    while run.rs_sent < MAX_RS {
        let mut sent_any = false;
        while let Some(out) = client.poll_output(&mut buf) {
            let Output::Udp { to, len, kind, .. } = out else {
                continue;
            };
            // Only RSs go to the server under test; a local discovery bubble (sent on
            // qualifying) stays on the link.
            if kind != Kind::RouterSolicitation {
                continue;
            }
            sent_any = true;
            run.rs_sent += 1;
            let answers = exchange(to, &buf[..len])?;
            for (from, bytes) in answers {
                match client.handle_udp(now, Local::Primary, from, &bytes) {
                    Ok(_) => run.accepted.push((from, bytes.len())),
                    Err(reason) => run.rejected.push((from, bytes.len(), reason)),
                }
            }
        }
        if matches!(client.state(), State::Qualified | State::Offline) {
            break;
        }
        match client.poll_timeout() {
            Some(t) => {
                now = now.max(t);
                client.handle_timeout(now);
            }
            None if !sent_any => break,
            None => {}
        }
        now += Duration::from_millis(1);
    }
    run.qualified = client.state() == State::Qualified;
    run.state = format!(
        "{}{}{}",
        client.state(),
        if run.qualified {
            format!(", NAT {}", client.nat_type())
        } else {
            String::new()
        },
        client
            .error()
            .map(|e| format!(", error \"{e}\""))
            .unwrap_or_default()
    );
    Ok(run)
}

/// The outcome for a family from its profiles' runs: a pass when every profile qualified,
/// else "<family> clients will not qualify against this server, because …".
pub(super) fn verdict(family: &str, runs: &[(Profile, ProfileRun)]) -> Outcome {
    let sizes: Vec<usize> = runs
        .iter()
        .flat_map(|(_, r)| r.accepted.iter().map(|a| a.1))
        .chain(
            runs.iter()
                .flat_map(|(_, r)| r.rejected.iter().map(|x| x.1)),
        )
        .collect();
    let size_note = size_note(&sizes);
    let failed: Vec<String> = runs
        .iter()
        .filter(|(_, r)| !r.qualified)
        .map(|(p, r)| {
            let because = if r.rejected.is_empty() {
                if r.accepted.is_empty() {
                    format!("no RA came back to its {} RS(s)", r.rs_sent)
                } else {
                    "its qualification did not complete".to_owned()
                }
            } else {
                format!("it rejected {}", rejections(&r.rejected))
            };
            format!("{p}: {because} (ended {})", r.state)
        })
        .collect();
    if failed.is_empty() {
        let each: Vec<String> = runs
            .iter()
            .map(|(p, r)| {
                let on_the_way = if r.rejected.is_empty() {
                    String::new()
                } else {
                    format!(", after rejecting {}", rejections(&r.rejected))
                };
                format!("{p}: {}, {} RS{on_the_way}", r.state, r.rs_sent)
            })
            .collect();
        Outcome::pass(format!("{}; {size_note}", each.join("; ")))
    } else {
        Outcome::fail(format!(
            "{family} clients will not qualify against this server, because {}; {size_note}",
            failed.join("; ")
        ))
    }
}

/// "the 117-byte datagram from …: bad_nonce, …".
fn rejections(rejected: &[(SocketAddrV4, usize, DropReason)]) -> String {
    let each: Vec<String> = rejected
        .iter()
        .map(|(from, len, why)| format!("the {len}-byte datagram from {from}: {}", why.as_str()))
        .collect();
    each.join(", ")
}

/// The RA sizes seen, with what they mean.
fn size_note(sizes: &[usize]) -> String {
    let mut s: Vec<usize> = sizes.to_vec();
    s.sort_unstable();
    s.dedup();
    let what = |n: usize| match n {
        109 => "109 B: no MTU option, as Microsoft servers".to_owned(),
        117 => "117 B: with MTU option, as Miredo".to_owned(),
        n => format!("{n} B"),
    };
    if s.is_empty() {
        "no RA seen".to_owned()
    } else {
        format!(
            "RA {}",
            s.into_iter().map(what).collect::<Vec<_>>().join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use teredo::addr::server_link_local;
    use teredo::wire::ndp::RaParams;
    use teredo::wire::{Auth, TeredoPacket};

    use super::*;
    use crate::conform::outcome::Verdict;

    const P: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const S: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    const LOCAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 10), 40_000);

    /// How a canned server misbehaves.
    #[derive(Clone, Copy, PartialEq)]
    enum Canned {
        /// Answers as RFC 4380 says, with an MTU option (or without).
        Good { mtu: Option<u32> },
        /// Leaves the auth header out.
        NoAuth,
        /// Puts another nonce in.
        OtherNonce,
        /// Answers a cone RS from the address it reached.
        ConeFromSame,
    }

    /// A server that answers every RS with an RA built by the core's emitter.
    fn canned(how: Canned) -> impl FnMut(SocketAddrV4, &[u8]) -> anyhow::Result<Answers> {
        move |to, rs| {
            let pkt = TeredoPacket::parse(rs).unwrap();
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&pkt.ipv6[8..24]).unwrap());
            let cone = src.segments()[4] & 0x8000 != 0;
            let mut nonce = pkt.auth.unwrap().nonce;
            if how == Canned::OtherNonce {
                nonce[0] ^= 0xff;
            }
            let other = if *to.ip() == P { S } else { P };
            let from_ip = if cone && how != Canned::ConeFromSame {
                other
            } else {
                *to.ip()
            };
            let params = RaParams {
                auth: (how != Canned::NoAuth).then(|| Auth::nonce_only(nonce)),
                origin: LOCAL,
                src: server_link_local(P),
                dst: src,
                primary: P,
                mtu: match how {
                    Canned::Good { mtu } => mtu,
                    _ => Some(1280),
                },
            };
            let mut buf = vec![0u8; params.buffer_len()];
            params.emit(&mut buf).unwrap();
            Ok(vec![(SocketAddrV4::new(from_ip, 3544), buf)])
        }
    }

    fn outcome(profile: Profile, how: Canned) -> Outcome {
        let run = drive(profile, P, LOCAL, 7, canned(how)).unwrap();
        verdict(profile.as_str(), &[(profile, run)])
    }

    #[test]
    fn every_profile_qualifies_on_a_good_ra_with_or_without_mtu() {
        for p in [
            Profile::XpSp2,
            Profile::Vista,
            Profile::Win7,
            Profile::Miredo,
        ] {
            let o = outcome(p, Canned::Good { mtu: Some(1280) });
            assert_eq!(o.verdict, Verdict::Pass, "{p}: {}", o.detail);
            assert!(o.detail.contains("117 B: with MTU option"), "{}", o.detail);
            let o = outcome(p, Canned::Good { mtu: None });
            assert_eq!(o.verdict, Verdict::Pass, "{p}: {}", o.detail);
            assert!(o.detail.contains("109 B: no MTU option"), "{}", o.detail);
        }
    }

    #[test]
    fn ra_without_auth_or_with_another_nonce_is_refused() {
        for how in [Canned::NoAuth, Canned::OtherNonce] {
            let o = outcome(Profile::Miredo, how);
            assert_eq!(o.verdict, Verdict::Fail, "{}", o.detail);
            assert!(
                o.detail.starts_with("miredo clients will not qualify"),
                "{}",
                o.detail
            );
            assert!(o.detail.contains("bad_nonce"), "{}", o.detail);
        }
    }

    #[test]
    fn a_bad_mtu_is_refused() {
        let o = outcome(Profile::Vista, Canned::Good { mtu: Some(1000) });
        assert_eq!(o.verdict, Verdict::Fail, "{}", o.detail);
        assert!(o.detail.contains("bad_mtu"), "{}", o.detail);
    }

    #[test]
    fn cone_ra_from_the_same_address_is_rejected_but_xp_still_qualifies() {
        // XP's cone probe refuses the RA (wrong server address), times out, and the
        // restricted phase qualifies: the server costs cone detection, not qualification.
        let o = outcome(Profile::XpSp2, Canned::ConeFromSame);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.detail);
        assert!(o.detail.contains("after rejecting"), "{}", o.detail);
        assert!(
            o.detail.contains("unexpected_server_address"),
            "{}",
            o.detail
        );
        // Miredo never sends a cone RS: nothing to reject.
        let o = outcome(Profile::Miredo, Canned::ConeFromSame);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.detail);
        assert!(!o.detail.contains("after rejecting"), "{}", o.detail);
    }
}
