//! Differential tests of the relay's XDP fast path against the sans-IO core.
//!
//! Every frame goes (a) through the path the program replaces: a model of the kernel's
//! receive step (IPv4/UDP checks up to the relay's socket, or IPv6 forwarding into the TUN:
//! hop limit − 1, time exceeded, packet too big), the core alone (`teredo::relay::Relay`),
//! then the kernel's forwarding step of what the core writes to the TUN (hop limit − 1 out
//! of the native interface) or its socket send; and (b) through the program
//! (`BPF_PROG_TEST_RUN` with a real ingress interface, so `bpf_fib_lookup` sees real routes
//! and neighbours in a namespace of the test's own), its passed frames, which must be
//! untouched, then through the same kernel model and a second core. The program's peer map
//! is filled the way the relay does it, from the second core's trust events. The output
//! bytes must be the same (the IPv6 packet; outer addresses, ports and valid checksums for
//! what goes to a client: the IPv4 ID, TTL and DF are the program's own), and so must the
//! counters: the program's forwards plus the second core's counters equal the lone core's.
//!
//! The frames, the kernel's model, the namespace, the cores and the cases are in
//! `relay_lab/`.
//!
//! Needs root (BPF, namespaces) and a build with the program (clang, libbpf-dev); outside
//! CI it skips loudly without them, in CI it fails.

mod relay_lab;

use std::time::{Duration, Instant};

use teredo::relay::Handled;
use teredo_fastpath::{
    monotonic_ns, PeerEntry, RelayCounters, RelayPassReason, XdpAction, XdpRelay,
};

use relay_lab::cases::{cases, mutants, Case, Expect};
use relay_lab::frames::{
    csum, ipv6, native, pseudo, teredo, udp, Iface, ETH, GW4_MAC, GW6_MAC, H, INET_MAC, NAT_MAC,
    PAYLOAD_AT, RELAY, SMAP, UDP_AT, WMAP, XMAP, YMAP, ZMAP,
};
use relay_lab::kernel::{slow, Sent, Slow};
use relay_lab::lab::{apply, cores, fast_config, ifindex, load, topology};

/// What a run found.
#[derive(Debug, Default)]
struct Outcome {
    to_native: u64,
    to_teredo: u64,
}

/// Runs `cases` both ways in a fresh relay namespace and compares (see the module
/// documentation). `None` when skipped.
fn differential(cases: &[Case]) -> Option<Outcome> {
    let cfg = fast_config();
    let mut xdp = load(&cfg)?;
    let ns = topology();
    let out = ns
        .run_in(move || Ok(run_cases(&mut xdp, cases)))
        .unwrap_or_else(|e| panic!("{e:#}"));
    Some(out)
}

fn run_cases(xdp: &mut XdpRelay, cases: &[Case]) -> Outcome {
    let (inet, nat) = (ifindex("inet0"), ifindex("nat0"));
    #[allow(clippy::disallowed_methods)] // the cores' epoch: any instant will do
    let t0 = Instant::now();
    let now = t0 + Duration::from_secs(40);
    let (mut alone, mut behind, events) = cores(t0, now);
    let mono = monotonic_ns();
    for (at, e) in &events {
        let age = u64::try_from(now.duration_since(*at).as_nanos()).unwrap();
        apply(xdp, e, mono - age);
    }
    assert_eq!(xdp.peers().len(), 3, "X, W and S in the map");
    let before = xdp.counters().unwrap();
    for c in cases {
        let name = &c.name;
        let ingress = if c.ingress == Iface::Inet { inet } else { nat };
        let want = slow(&mut alone, now, &c.frame);
        let c0 = c.expect.map(|_| xdp.counters().unwrap());
        let (action, out) = xdp
            .test_run(&c.frame, ingress)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        match action {
            XdpAction::Pass => {
                assert_eq!(out, c.frame, "{name}: a passed frame must be untouched");
                let got = slow(&mut behind, now, &c.frame);
                assert_eq!(
                    got, want,
                    "{name}: the core behind the fast path did otherwise"
                );
                let stamp = monotonic_ns();
                for e in &got.events {
                    apply(xdp, e, stamp);
                }
            }
            XdpAction::Tx | XdpAction::REDIRECT => {
                check_forwarded(name, c, ingress, action, &out, &want, (inet, nat))
            }
            other => panic!("{name}: verdict {other:?}"),
        }
        if let (Some(e), Some(c0)) = (c.expect, c0) {
            let d = xdp.counters().unwrap().since(&c0);
            let got = if d.to_native + d.to_teredo == 1 {
                Expect::Forward
            } else {
                let r = RelayPassReason::ALL
                    .into_iter()
                    .find(|r| d.passed_for(*r) == 1)
                    .unwrap_or_else(|| panic!("{name}: not counted: {d:?}"));
                Expect::Pass(r)
            };
            assert_eq!(got, e, "{name}");
            assert_eq!(d.total(), 1, "{name}: counted once");
        }
    }
    let c = xdp.counters().unwrap().since(&before);
    assert_eq!(c.total(), cases.len() as u64, "every frame counted once");
    let mut fast = behind.counters().clone();
    fast.forwarded += c.to_native;
    fast.encapsulated += c.to_teredo;
    assert_eq!(
        &fast,
        alone.counters(),
        "counters: fast path + core vs core alone"
    );
    Outcome {
        to_native: c.to_native,
        to_teredo: c.to_teredo,
    }
}

/// A frame the program forwarded: the lone core must have forwarded it in place, with
/// nothing else to send and nothing to report, and the kernel must have sent it on; the
/// program's frame must carry the same bytes.
fn check_forwarded(
    name: &str,
    c: &Case,
    ingress: u32,
    action: XdpAction,
    out: &[u8],
    want: &Slow,
    (inet, nat): (u32, u32),
) {
    let _ = c;
    assert!(
        want.outputs.is_empty(),
        "{name}: the core also sent {:?}",
        want.outputs
    );
    assert!(
        want.events.is_empty(),
        "{name}: the core also reported {:?}",
        want.events
    );
    let sent = match &want.sent {
        Some(Ok(s)) => s,
        other => panic!(
            "{name}: forwarded by XDP, but the slow path did {:?} / {other:?} (kernel: {:?})",
            want.result, want.kernel_drop
        ),
    };
    match sent {
        Sent::Native(p) => {
            assert!(
                matches!(want.result, Some(Ok(Handled::Forwarded { .. }))),
                "{name}"
            );
            let expect = if ingress == nat {
                XdpAction::Tx
            } else {
                XdpAction::REDIRECT
            };
            assert_eq!(action, expect, "{name}: verdict");
            assert_eq!(&out[..6], &GW6_MAC, "{name}: destination MAC");
            assert_eq!(&out[6..12], &NAT_MAC, "{name}: source MAC");
            assert_eq!(&out[12..14], &[0x86, 0xdd], "{name}: ethertype");
            assert_eq!(
                &out[ETH..],
                &p[..],
                "{name}: IPv6 packet differs from the slow path's"
            );
        }
        Sent::Udp(to, payload) => {
            assert!(
                matches!(want.result, Some(Ok(Handled::Encapsulated { .. }))),
                "{name}"
            );
            let expect = if ingress == inet {
                XdpAction::Tx
            } else {
                XdpAction::REDIRECT
            };
            assert_eq!(action, expect, "{name}: verdict");
            assert_eq!(&out[..6], &GW4_MAC, "{name}: destination MAC");
            assert_eq!(&out[6..12], &INET_MAC, "{name}: source MAC");
            assert_eq!(&out[12..14], &[8, 0], "{name}: ethertype");
            assert_eq!(
                out.len(),
                PAYLOAD_AT + payload.len(),
                "{name}: frame length"
            );
            let ip = &out[ETH..UDP_AT];
            assert_eq!(ip[0], 0x45, "{name}: version, header length");
            assert_eq!(
                usize::from(u16::from_be_bytes([ip[2], ip[3]])),
                28 + payload.len(),
                "{name}: total length"
            );
            assert_eq!(
                u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff,
                0,
                "{name}: not a fragment"
            );
            assert_ne!(ip[8], 0, "{name}: TTL");
            assert_eq!(ip[9], 17, "{name}: protocol");
            assert_eq!(csum(ip, 0), 0xffff, "{name}: IPv4 header checksum");
            assert_eq!(&ip[12..16], &RELAY.ip().octets(), "{name}: source address");
            assert_eq!(
                &ip[16..20],
                &to.ip().octets(),
                "{name}: destination address"
            );
            let u = &out[UDP_AT..];
            assert_eq!(
                u16::from_be_bytes([u[0], u[1]]),
                RELAY.port(),
                "{name}: source port"
            );
            assert_eq!(
                u16::from_be_bytes([u[2], u[3]]),
                to.port(),
                "{name}: destination port"
            );
            assert_eq!(
                usize::from(u16::from_be_bytes([u[4], u[5]])),
                8 + payload.len(),
                "{name}: UDP length"
            );
            assert_ne!(&u[6..8], &[0, 0], "{name}: a UDP checksum");
            assert_eq!(
                csum(u, pseudo(&out[ETH..], u.len())),
                0xffff,
                "{name}: UDP checksum"
            );
            assert_eq!(
                &u[8..],
                &payload[..],
                "{name}: payload differs from the slow path's"
            );
        }
    }
}

#[test]
fn hand_written_cases_match_the_core() {
    let cases = cases();
    let Some(o) = differential(&cases) else {
        return;
    };
    let want = cases
        .iter()
        .filter(|c| c.expect == Some(Expect::Forward))
        .count() as u64;
    assert_eq!(o.to_native + o.to_teredo, want);
}

/// Seeded random frames of both directions (valid ones of trusted, expired, untrusted and
/// unknown peers, bubbles), mutated: bits flipped, bytes replaced (checksums repaired or
/// not), cut, padded, hop limits and sources changed, the other ingress interface. The
/// program may forward or pass each; whatever it forwards must be what the slow path
/// sends, and the counters must agree.
#[test]
fn mutated_frames_match_the_core() {
    let cases = mutants(3000, 4380);
    let Some(o) = differential(&cases) else {
        return;
    };
    let forwarded = o.to_native + o.to_teredo;
    eprintln!("mutations: {o:?}");
    assert!(
        (300..2700).contains(&forwarded) && o.to_native > 100 && o.to_teredo > 100,
        "{o:?} of 3000 forwarded: a poor mix"
    );
}

/// The map's API as the relay uses it, attaching to both sides, and the stamps the program
/// moves.
#[test]
fn peer_map_and_stamps() {
    let mut cfg = fast_config();
    cfg.max_peers = 4;
    let Some(mut xdp) = load(&cfg) else {
        return;
    };
    let entry = |m| PeerEntry {
        mapping: m,
        last_rx_ns: monotonic_ns(),
        last_used_ns: monotonic_ns(),
    };
    for m in [XMAP, WMAP, SMAP, YMAP] {
        xdp.upsert_peer(teredo(m), entry(m)).unwrap();
    }
    assert!(
        xdp.upsert_peer(teredo(ZMAP), entry(ZMAP)).is_err(),
        "map full"
    );
    xdp.upsert_peer(teredo(XMAP), entry(XMAP)).unwrap();
    xdp.remove_peer(&teredo(YMAP)).unwrap();
    xdp.remove_peer(&teredo(YMAP)).unwrap();
    let mut got: Vec<_> = xdp
        .peers()
        .into_iter()
        .map(|(a, e)| (a, e.mapping))
        .collect();
    got.sort();
    let mut want: Vec<_> = [XMAP, WMAP, SMAP]
        .into_iter()
        .map(|m| (teredo(m), m))
        .collect();
    want.sort();
    assert_eq!(got, want);
    xdp.clear_peers().unwrap();
    assert!(xdp.peers().is_empty());

    let ns = topology();
    ns.run_in(move || {
        // One program on both sides, as the relay attaches it.
        for dev in ["inet0", "nat0"] {
            let mode = xdp.attach(dev).unwrap_or_else(|e| panic!("{e}"));
            eprintln!("relay program attached to {dev}: {}", mode.as_str());
        }
        let (inet, nat) = (ifindex("inet0"), ifindex("nat0"));
        let x = teredo(XMAP);
        let old = monotonic_ns() - 1_000_000_000;
        let stale = PeerEntry {
            mapping: XMAP,
            last_rx_ns: old,
            last_used_ns: old,
        };
        xdp.upsert_peer(x, stale).unwrap();
        let stamps = |xdp: &XdpRelay| xdp.peers()[0].1;
        let (a, _) = xdp.test_run(&native(&ipv6(H, x, 64, 17, 8)), nat).unwrap();
        assert_eq!(a, XdpAction::REDIRECT);
        let e = stamps(&xdp);
        assert_eq!(e.last_rx_ns, old, "to the peer: last_rx unchanged");
        assert!(e.last_used_ns > old, "to the peer: last_used moved");
        let (a, _) = xdp
            .test_run(&udp(XMAP, &ipv6(x, H, 64, 17, 8)), inet)
            .unwrap();
        assert_eq!(a, XdpAction::REDIRECT);
        let e2 = stamps(&xdp);
        assert!(
            e2.last_rx_ns > old && e2.last_used_ns >= e.last_used_ns,
            "from the peer"
        );
        // Expired: passed, stamps untouched.
        let expired = PeerEntry {
            last_rx_ns: monotonic_ns() - 31_000_000_000,
            ..stale
        };
        xdp.upsert_peer(x, expired).unwrap();
        let before = xdp.counters().unwrap();
        let (a, _) = xdp.test_run(&native(&ipv6(H, x, 64, 17, 8)), nat).unwrap();
        assert_eq!(a, XdpAction::Pass);
        assert_eq!(stamps(&xdp), expired);
        let d = xdp.counters().unwrap().since(&before);
        assert_eq!(d.passed_for(RelayPassReason::Expired), 1);
        // Switched off: everything passes, counted as disabled.
        xdp.set_enabled(false).unwrap();
        xdp.upsert_peer(x, entry(XMAP)).unwrap();
        let before = xdp.counters().unwrap();
        let (a, _) = xdp.test_run(&native(&ipv6(H, x, 64, 17, 8)), nat).unwrap();
        assert_eq!(a, XdpAction::Pass);
        let d: RelayCounters = xdp.counters().unwrap().since(&before);
        assert_eq!(d.passed_for(RelayPassReason::Disabled), 1);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}
