//! Peer table: eviction, expiry, memory, time offsets, determinism, property tests.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::relay::invariants::check_heap;

// ---- peer table -------------------------------------------------------------------

pub(super) fn peer_n(n: u16) -> Ipv6Addr {
    teredo(
        SX,
        0,
        SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 50), 1000 + n),
    )
}

fn mapping_n(n: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 50), 1000 + n)
}

/// Sends one packet to peer `n`; returns the bubble source if a bubble went out.
pub(super) fn send_to(lab: &mut Lab, n: u16) -> (Result<Handled, DropReason>, Option<Ipv6Addr>) {
    let (r, out) = lab.native(&echo(H, peer_n(n), false, n, 20));
    let src = out.iter().find_map(|(o, b)| {
        matches!(o, Output::Udp { to, .. } if *to == SX_3544)
            .then(|| TeredoPacket::parse(b).unwrap().src())
    });
    (r, src)
}

fn answer(lab: &mut Lab, n: u16) {
    let (r, _) = lab.udp(mapping_n(n), &bubble(peer_n(n), H, &[]));
    assert!(matches!(r, Ok(Handled::Bubble { .. })), "{r:?}");
}

#[test]
fn eviction_prefers_least_recently_used_untrusted_peers() {
    let mut lab = Lab::new(RelayConfig {
        max_peers: 3,
        evict_trusted: false,
        ..cfg()
    });
    for n in 0..3 {
        lab.at(f64::from(n) * 0.1);
        assert!(send_to(&mut lab, n).0.is_ok());
    }
    answer(&mut lab, 1); // peer 1 trusted
    lab.at(1.0);
    assert!(send_to(&mut lab, 3).0.is_ok()); // evicts peer 0
    assert!(lab.relay.peer(&peer_n(0)).is_none());
    assert_eq!(lab.relay.counters().dropped(DropReason::PeerEvicted), 1);
    // Peer 2 is older than peer 3, but used again: peer 3 goes first.
    lab.at(1.2);
    assert!(send_to(&mut lab, 2).0.is_ok());
    lab.at(1.4);
    assert!(send_to(&mut lab, 4).0.is_ok());
    assert!(lab.relay.peer(&peer_n(3)).is_none());
    assert!(lab.relay.peer(&peer_n(2)).is_some());
    assert!(lab.relay.peer(&peer_n(1)).is_some_and(|p| p.trusted));
    // All trusted: a new peer is refused, nothing emitted.
    answer(&mut lab, 2);
    answer(&mut lab, 4);
    let (r, out) = lab.native(&echo(H, peer_n(5), false, 5, 20));
    assert_eq!(r, Err(DropReason::PeerTableFull));
    assert!(out.is_empty());
    let g = lab.relay.gauges();
    assert_eq!((g.peers, g.peers_trusted, g.peers_untrusted), (3, 3, 0));
    assert_eq!(lab.relay.counters().evictions, 2);
    // Timer records of evicted peers are harmless; the survivors keep working.
    lab.run_to(20.0);
    let (r, _) = lab.native(&echo(H, peer_n(4), false, 4, 20));
    assert_eq!(r, Ok(Handled::Encapsulated { to: mapping_n(4) }));
}

/// A flood of datagrams from sources that each match the mapping in their (made-up) Teredo
/// address — anyone can forge such a source — fills the table with trusted peers through
/// `UnknownPeerPolicy::Accept`; the bound and the eviction rules hold, and with
/// `evict_trusted` off the newcomers are refused, not the table grown.
#[test]
fn a_flood_of_matching_unknown_sources_stays_within_the_table() {
    for evict_trusted in [true, false] {
        let mut lab = Lab::new(RelayConfig {
            max_peers: 100,
            evict_trusted,
            ..cfg()
        });
        let mut accepted = 0u64;
        for i in 0..5_000u32 {
            lab.at(f64::from(i) * 0.001);
            let map = SocketAddrV4::new(
                Ipv4Addr::from(0xcb00_7100 + (i >> 8)),
                2000 + (i as u16 & 0xff),
            );
            let (r, _) = lab.udp(map, &echo(teredo(SX, 0, map), H, false, 1, 20));
            match r {
                Ok(Handled::Forwarded { .. }) => accepted += 1,
                Err(DropReason::PeerTableFull) => assert!(!evict_trusted),
                other => panic!("{other:?}"),
            }
        }
        let g = lab.relay.gauges();
        let c = lab.relay.counters();
        assert_eq!(g.peers, 100, "evict_trusted {evict_trusted}");
        assert_eq!(c.unknown_peers_accepted, accepted);
        if evict_trusted {
            assert_eq!((accepted, c.trusted_evictions), (5_000, 4_900));
        } else {
            assert_eq!((accepted, c.evictions), (100, 0));
            assert_eq!(c.dropped(DropReason::PeerTableFull), 4_900);
        }
        assert!(
            lab.relay.peers.len() <= 100,
            "the slab never grew past the bound"
        );
        check_invariants(&lab.relay).unwrap();
    }
}

#[test]
fn with_only_trusted_peers_the_least_recently_used_one_is_evicted() {
    let mut lab = Lab::new(RelayConfig {
        max_peers: 3,
        ..cfg()
    });
    assert!(lab.relay.config().evict_trusted, "the default");
    for n in 0..3 {
        lab.at(f64::from(n) * 0.1);
        assert!(send_to(&mut lab, n).0.is_ok());
        answer(&mut lab, n);
    }
    // All trusted: the oldest (peer 0) makes room, and the newcomer bubbles.
    lab.at(1.0);
    let (r, bubbled) = send_to(&mut lab, 3);
    assert!(r.is_ok(), "{r:?}");
    assert!(bubbled.is_some(), "the new peer bubbles");
    assert!(lab.relay.peer(&peer_n(0)).is_none());
    let c = lab.relay.counters();
    assert_eq!((c.evictions, c.trusted_evictions), (1, 1));
    let g = lab.relay.gauges();
    assert_eq!((g.peers, g.peers_trusted, g.peers_untrusted), (3, 2, 1));
    // Peer 1 is now the oldest, but used again: peer 2 goes next.
    answer(&mut lab, 3);
    lab.at(2.0);
    let (r, _) = lab.native(&echo(H, peer_n(1), false, 1, 20));
    assert_eq!(r, Ok(Handled::Encapsulated { to: mapping_n(1) }));
    lab.at(2.5);
    assert!(send_to(&mut lab, 4).0.is_ok());
    assert!(lab.relay.peer(&peer_n(2)).is_none());
    for n in [1, 3, 4] {
        assert!(lab.relay.peer(&peer_n(n)).is_some(), "peer {n}");
    }
    assert_eq!(lab.relay.counters().trusted_evictions, 2);
    // An untrusted peer is still preferred: peer 5 evicts the untrusted peer 4.
    lab.at(3.0);
    assert!(send_to(&mut lab, 5).0.is_ok());
    assert!(lab.relay.peer(&peer_n(4)).is_none());
    assert_eq!(lab.relay.counters().trusted_evictions, 2);
    assert_eq!(lab.relay.counters().evictions, 3);
}

#[test]
fn bubble_rate_caps_bubbles_over_all_peers_and_exchanges_still_give_up() {
    let mut lab = Lab::new(RelayConfig {
        bubble_rate: 2,
        bubble_burst: 2,
        max_outputs: 10_000,
        ..cfg()
    });
    let mut bubbles = 0;
    for n in 0..10 {
        let (r, src) = send_to(&mut lab, n);
        assert!(matches!(r, Ok(Handled::Queued { .. })), "{r:?}");
        bubbles += usize::from(src.is_some());
    }
    assert_eq!(bubbles, 2, "the burst");
    assert_eq!(lab.relay.counters().bubbles_rate_limited, 8);
    assert_eq!(lab.relay.counters().bubbles_sent, 2);
    // Over the whole exchange (4 rounds each, 2 s apart, then give-up) no more than the
    // burst plus the rate per second of virtual time go out.
    let out = lab.run_to(30.0);
    let sent = out
        .iter()
        .filter(|(_, (o, _))| matches!(o, Output::Udp { to, .. } if *to == SX_3544))
        .count();
    let c = lab.relay.counters();
    assert_eq!(c.bubbles_sent as usize, 2 + sent);
    assert!(c.bubbles_sent <= 2 + 2 * 30, "{}", c.bubbles_sent);
    assert_eq!(
        c.bubbles_sent + c.bubbles_rate_limited,
        40,
        "4 rounds x 10 peers"
    );
    assert_eq!(c.give_ups, 10);
    assert_eq!(c.dropped(DropReason::PeerUnreachable), 10);
}

#[test]
fn evicted_then_recreated_peer_is_paced_correctly() {
    let mut lab = Lab::new(RelayConfig {
        max_peers: 1,
        ..cfg()
    });
    send_to(&mut lab, 0).0.unwrap();
    lab.at(0.5);
    send_to(&mut lab, 1).0.unwrap(); // evicts 0
    lab.at(1.0);
    send_to(&mut lab, 0).0.unwrap(); // evicts 1, new incarnation of 0 with a bubble at 1.0
    let out = lab.run_to(30.0);
    let times: Vec<f64> = out
        .iter()
        .filter(|(_, (o, _))| matches!(o, Output::Udp { .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        times,
        [3.0, 5.0, 7.0],
        "stale timers of earlier incarnations act not"
    );
}

#[test]
fn idle_peers_expire() {
    let mut lab = Lab::new(cfg());
    lab.trust_x();
    lab.run_to(59.0);
    assert!(lab.relay.peer(&x()).is_some());
    lab.run_to(121.0);
    assert!(lab.relay.peer(&x()).is_none());
    assert_eq!(lab.relay.counters().expirations, 1);
    assert_eq!(lab.relay.gauges(), RelayGauges::default());
    assert_eq!(lab.relay.poll_timeout(), None);
    // A peer in use does not expire.
    lab.trust_x();
    for i in 1..=30 {
        let t = 121.0 + f64::from(i) * 10.0;
        lab.run_to(t);
        lab.at(t);
        lab.udp(XMAP, &echo(x(), H, true, 1, 8)).0.unwrap();
    }
    assert!(lab.relay.peer(&x()).is_some());
}

#[test]
fn global_queue_cap() {
    let mut lab = Lab::new(RelayConfig {
        global_queue_bytes: 200,
        ..cfg()
    });
    // 68-byte packets: two fit, the third does not, yet its peer is still bubbled.
    assert!(send_to(&mut lab, 0).0.is_ok());
    assert!(send_to(&mut lab, 1).0.is_ok());
    let (r, src) = send_to(&mut lab, 2);
    assert_eq!(r, Err(DropReason::GlobalQueueFull));
    assert!(src.is_some());
    assert_eq!(lab.relay.gauges().queued_bytes, 136);
}

#[test]
fn peer_entry_is_small() {
    let n = size_of::<Peer>();
    println!("size_of::<Peer>() = {n}");
    assert!(n <= 40, "{n}");
    assert_eq!(PEER_ENTRY_BYTES, n);
    assert_eq!(size_of::<Bucket>(), 8);
    assert_eq!(size_of::<(u32, u32)>(), 8);
}

// ---- peer slab, index, exchanges, timers, time offsets --------------------------

#[test]
fn slab_slots_are_reused_after_expiry_and_eviction() {
    // Unknown peers dropped: an answer from an expired peer must find nothing, not a new
    // entry.
    let mut lab = Lab::new(RelayConfig {
        max_peers: 4,
        unknown_peers: UnknownPeerPolicy::Drop,
        ..cfg()
    });
    for n in 0..4 {
        send_to(&mut lab, n).0.unwrap();
        answer(&mut lab, n);
    }
    assert_eq!(lab.relay.peers.len(), 4);
    check_invariants(&lab.relay).unwrap();
    // Idle peers expire; their slots go to the free list (too few to compact).
    lab.run_to(200.0);
    assert_eq!(lab.relay.gauges(), RelayGauges::default());
    assert_eq!(lab.relay.peers.len(), 4);
    check_invariants(&lab.relay).unwrap();
    // New peers take the freed slots, with fresh state.
    for n in 10..14 {
        let (r, src) = send_to(&mut lab, n);
        assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
        assert!(src.is_some());
        let info = lab.relay.peer(&peer_n(n)).unwrap();
        assert_eq!((info.trusted, info.phase), (false, PeerPhase::Bubbling));
        assert_eq!((info.bubbles, info.queued_packets), (1, 1));
        assert_eq!(info.mapping, mapping_n(n));
    }
    assert_eq!(lab.relay.peers.len(), 4);
    for n in 0..4 {
        assert!(lab.relay.peer(&peer_n(n)).is_none());
        // No stale index entry: an answer from an expired peer finds nothing.
        assert_eq!(
            lab.udp(mapping_n(n), &bubble(peer_n(n), H, &[])).0,
            Err(DropReason::UnknownPeer)
        );
    }
    check_invariants(&lab.relay).unwrap();
    // Full: a new peer evicts the least recently used one and takes its slot.
    let slot = lab.relay.find(&peer_n(10)).unwrap();
    lab.at(200.5);
    send_to(&mut lab, 15).0.unwrap();
    assert!(lab.relay.peer(&peer_n(10)).is_none());
    assert_eq!(lab.relay.find(&peer_n(15)), Some(slot));
    assert_eq!(lab.relay.peers.len(), 4);
    assert_eq!(
        lab.udp(mapping_n(10), &bubble(peer_n(10), H, &[])).0,
        Err(DropReason::UnknownPeer)
    );
    check_invariants(&lab.relay).unwrap();
    // The evicted peer's exchange (queue, timer) went with it; the newcomer's timer runs
    // on its own schedule.
    assert_eq!(lab.relay.gauges().queued_packets, 4);
    let out = lab.run_to(206.6);
    let bubbles_to = |n: u16| {
        out.iter()
            .filter(|(_, (o, b))| {
                matches!(o, Output::Udp { to, .. } if *to == SX_3544)
                    && TeredoPacket::parse(b).unwrap().dst() == peer_n(n)
            })
            .map(|(t, _)| *t)
            .collect::<Vec<_>>()
    };
    assert!(bubbles_to(10).is_empty());
    assert_eq!(bubbles_to(15), [202.5, 204.5, 206.5]);
    assert_eq!(bubbles_to(11).len(), 3);
    check_invariants(&lab.relay).unwrap();
}

#[test]
fn memory_is_given_back_when_the_table_empties() {
    let mut lab = Lab::new(cfg());
    for n in 0..300 {
        send_to(&mut lab, n).0.unwrap();
        answer(&mut lab, n);
    }
    // Peers answered at once: one exchange slot was enough, and no timer is left.
    assert_eq!(lab.relay.exchanges.len(), 1);
    assert!(lab.relay.timers.heap.is_empty());
    assert_eq!(lab.relay.peers.len(), 300);
    assert_eq!(lab.relay.index.buckets.len(), 512);
    check_invariants(&lab.relay).unwrap();
    // Ten peers stay in use; the others expire and the slab is compacted.
    for step in 1..=30 {
        let t = f64::from(step) * 10.0;
        lab.run_to(t);
        lab.at(t);
        for n in 0..10 {
            lab.udp(mapping_n(n), &echo(peer_n(n), H, true, 1, 8))
                .0
                .unwrap();
        }
        check_invariants(&lab.relay).unwrap();
    }
    assert_eq!(lab.relay.gauges().peers, 10);
    assert_eq!(lab.relay.peers.len(), 10);
    assert_eq!(lab.relay.index.buckets.len(), 16);
    assert!(lab.relay.lru.iter().map(VecDeque::capacity).sum::<usize>() < 64);
    for n in 0..10 {
        assert_eq!(
            lab.native(&echo(H, peer_n(n), false, 1, 8)).0,
            Ok(Handled::Encapsulated { to: mapping_n(n) })
        );
    }
    for n in 10..300 {
        assert!(lab.relay.peer(&peer_n(n)).is_none());
    }

    // Exchanges: 300 peers bubble, 290 answer; the other ten keep their exact schedule
    // after the exchange slab is compacted, then give up.
    let mut lab = Lab::new(cfg());
    for n in 0..300 {
        send_to(&mut lab, n).0.unwrap();
    }
    assert_eq!(lab.relay.exchanges.len(), 300);
    assert_eq!(lab.relay.timers.heap.len(), 300);
    lab.at(1.0);
    for n in 10..300 {
        answer(&mut lab, n);
    }
    assert_eq!(lab.relay.timers.heap.len(), 10);
    lab.relay.handle_timeout(lab.now);
    assert_eq!(lab.relay.exchanges.len(), 10);
    check_invariants(&lab.relay).unwrap();
    let out = lab.run_to(20.0);
    let bubbles: Vec<f64> = out
        .iter()
        .filter(|(_, (o, _))| matches!(o, Output::Udp { .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(bubbles, [[2.0; 10], [4.0; 10], [6.0; 10]].concat());
    assert_eq!(lab.relay.counters().give_ups, 10);
    assert!(lab.relay.timers.heap.is_empty());
    check_invariants(&lab.relay).unwrap();
}

const DAY: f64 = 86_400.0;

#[test]
fn time_offsets_are_rebased_far_in_the_future() {
    let mut lab = Lab::new(RelayConfig {
        validity: Duration::from_secs(5 * 86_400),
        idle_timeout: Duration::from_secs(10 * 86_400),
        ..cfg()
    });
    lab.trust_x();
    // X is used every 4 days for 100 days: well past 2^32 ms, through several rebases.
    let mut t = 0.0;
    while t < 100.0 * DAY {
        t += 4.0 * DAY;
        lab.run_to(t);
        lab.at(t);
        assert_eq!(
            lab.native(&ping(1)).0,
            Ok(Handled::Encapsulated { to: XMAP }),
            "{t}"
        );
        lab.udp(XMAP, &echo(x(), H, true, 1, 8)).0.unwrap();
        check_invariants(&lab.relay).unwrap();
    }
    assert!(
        lab.relay.base as f64 >= 50.0 * DAY * 1000.0,
        "{}",
        lab.relay.base
    );
    // Validity still counts in milliseconds after the rebases.
    lab.at(t + 5.0 * DAY - 0.001);
    lab.relay.handle_timeout(lab.now);
    assert!(lab.relay.peer(&x()).is_some_and(|i| i.valid));
    lab.at(t + 5.0 * DAY);
    lab.relay.handle_timeout(lab.now);
    assert!(lab.relay.peer(&x()).is_some_and(|i| !i.valid));
    // An exchange across a rebase keeps its exact 2 s schedule.
    let base = lab.relay.base;
    let start = (base + REBASE_AT) as f64 / 1000.0 - 3.0;
    assert!(start > lab.elapsed());
    lab.run_to(start);
    lab.at(start);
    let (r, src) = send_to(&mut lab, 7);
    assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
    assert!(src.is_some());
    let out = lab.run_to(start + 20.0);
    assert!(lab.relay.base > base, "rebased during the exchange");
    let times: Vec<f64> = out.iter().map(|(t, _)| *t - start).collect();
    assert_eq!(times.len(), 4, "{out:?}");
    for (t, want) in times.iter().zip([2.0, 4.0, 6.0, 8.0]) {
        assert!((t - want).abs() < 1e-6, "{times:?}");
    }
    assert!(
        matches!(out[3].1 .0, Output::Ipv6 { .. }),
        "ICMPv6 at the give-up"
    );
    assert_eq!(lab.relay.counters().give_ups, 1);
    check_invariants(&lab.relay).unwrap();
}

#[test]
fn a_huge_time_jump_makes_nothing_look_fresh() {
    let mut lab = Lab::new(cfg());
    lab.trust_x();
    send_to(&mut lab, 3).0.unwrap();
    answer(&mut lab, 3);
    // 200 days later (offsets would have wrapped four times), without any timer call
    // in between: X is trusted but stale, so the packet waits for a new exchange.
    lab.at(200.0 * DAY);
    let (r, out) = lab.native(&ping(1));
    assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
    let b = indirect_bubble(&out);
    let info = lab.relay.peer(&x()).unwrap();
    assert!(info.trusted && !info.valid);
    // The other peer is long expired and goes at the next timer call.
    lab.relay.handle_timeout(lab.now);
    assert!(lab.relay.peer(&peer_n(3)).is_none());
    assert_eq!(lab.relay.counters().expirations, 1);
    // X answers: valid again, packet delivered.
    let (r, out) = lab.udp(XMAP, &bubble(x(), b.src, &[]));
    assert!(matches!(r, Ok(Handled::Bubble { flushed: 1, .. })), "{r:?}");
    assert_eq!(out.len(), 1);
    assert!(lab.relay.peer(&x()).unwrap().valid);
    check_invariants(&lab.relay).unwrap();
}

#[test]
fn durations_are_capped_at_max_timer() {
    assert_eq!(millis(Duration::ZERO), 100);
    assert_eq!(millis(Duration::from_secs(30)), 30_000);
    assert_eq!(millis(MAX_TIMER), MAX_TIMER_MS);
    assert_eq!(millis(Duration::MAX), MAX_TIMER_MS);
    // An "infinite" idle timeout still removes an idle peer, after at most twice
    // MAX_TIMER (12.4 days).
    let mut lab = Lab::new(RelayConfig {
        idle_timeout: Duration::MAX,
        validity: Duration::MAX,
        ..cfg()
    });
    lab.trust_x();
    lab.at(10.0 * DAY);
    assert_eq!(
        lab.native(&ping(1)).0,
        Ok(Handled::Encapsulated { to: XMAP })
    );
    lab.run_to(10.0 * DAY + 2.0 * MAX_TIMER.as_secs_f64() + 1.0);
    assert!(lab.relay.peer(&x()).is_none());
    assert_eq!(lab.relay.poll_timeout(), None);
}

/// A run with churn: evictions, expiry, compaction, retransmissions, give-ups.
fn churn(seed: u64) -> Vec<(f64, Out)> {
    let mut lab = Lab::with_seed(
        RelayConfig {
            max_peers: 40,
            trust: TrustPolicy::Lenient,
            ..cfg()
        },
        seed,
    );
    let mut all = Vec::new();
    for i in 0..600u16 {
        let t = f64::from(i) * 0.7;
        all.extend(lab.run_to(t));
        lab.at(t);
        let n = (i * 7) % 97;
        let (_, out) = lab.native(&echo(H, peer_n(n), false, i, 20));
        all.extend(out.iter().cloned().map(|o| (t, o)));
        if i % 3 == 0 {
            let (_, out) = lab.udp(mapping_n(n), &bubble(peer_n(n), H, &[]));
            all.extend(out.into_iter().map(|o| (t, o)));
        }
        if i % 5 == 0 {
            // A symmetric-NAT answer with the nonce of the latest bubble, if any.
            if let Some((_, b)) = out.iter().find(|(o, _)| matches!(o, Output::Udp { .. })) {
                let nonce = check_indirect(b, peer_n(n)).nonce;
                let (_, out) = lab.udp(XSYM, &bubble(peer_n(n), H, &nonce_trailer(nonce)));
                all.extend(out.into_iter().map(|o| (t, o)));
            }
        }
    }
    all.extend(lab.run_to(1000.0));
    check_invariants(&lab.relay).unwrap();
    let c = lab.relay.counters();
    assert!(
        c.evictions > 0 && c.expirations > 0 && c.give_ups > 0,
        "{c:?}"
    );
    assert!(c.lenient_accepts > 0, "{c:?}");
    all
}

#[test]
fn same_seed_same_outputs() {
    let a = churn(7);
    assert!(a.len() > 500);
    assert_eq!(a, churn(7));
    assert_ne!(a, churn(8));
}

#[derive(Clone, Debug)]
enum IndexOp {
    Insert(u32),
    Remove(usize),
}

fn arb_index_op() -> impl Strategy<Value = IndexOp> {
    prop_oneof![
        // Few home buckets, many near the end of the table: long runs that wrap around.
        3 => (any::<u32>(), prop_oneof![Just(0u32), Just(13), Just(14), Just(15), 0u32..16])
            .prop_map(|(hi, lo)| IndexOp::Insert(hi << 4 | lo)),
        1 => any::<u32>().prop_map(IndexOp::Insert),
        3 => any::<usize>().prop_map(IndexOp::Remove),
    ]
}

#[derive(Clone, Debug)]
enum TimerOp {
    Set(u32, u32),
    Remove(u32),
    Pop,
}

fn arb_timer_op() -> impl Strategy<Value = TimerOp> {
    prop_oneof![
        3 => (0u32..24, 0u32..40).prop_map(|(s, d)| TimerOp::Set(s, d)),
        1 => (0u32..24).prop_map(TimerOp::Remove),
        1 => Just(TimerOp::Pop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn index_matches_a_model(ops in vec(arb_index_op(), 1..400)) {
        let mut index = Index::default();
        let mut model: Vec<(u32, u32)> = Vec::new();
        let mut gone: Vec<(u32, u32)> = Vec::new();
        let mut next = 0u32;
        for op in ops {
            match op {
                IndexOp::Insert(hash) => {
                    index.insert(hash, next);
                    model.push((next, hash));
                    next += 1;
                }
                IndexOp::Remove(k) if !model.is_empty() => {
                    let (slot, hash) = model.swap_remove(k % model.len());
                    let b = index.find(hash, |s| s == slot);
                    prop_assert!(b.is_some());
                    index.remove_at(b.unwrap());
                    gone.push((slot, hash));
                }
                IndexOp::Remove(_) => {}
            }
            prop_assert_eq!(index.len, model.len());
            prop_assert!(index.len * 4 <= index.buckets.len() * 3);
            for &(slot, hash) in &model {
                let b = index.find(hash, |s| s == slot);
                prop_assert_eq!(b.and_then(|b| index.slot(b)), Some(slot));
            }
            for &(slot, hash) in &gone {
                prop_assert!(index.find(hash, |s| s == slot).is_none());
            }
        }
        // Rebuilt smaller with renumbered slots, everything is still found.
        index.rebuild(Index::capacity_for(model.len()), |s| s + 1000);
        for &(slot, hash) in &model {
            prop_assert!(index.find(hash, |s| s == slot + 1000).is_some());
        }
    }

    #[test]
    fn timer_heap_matches_a_model(ops in vec(arb_timer_op(), 1..300)) {
        let x = Exchange {
            peer: 0,
            timer: NONE,
            queue: NO_QUEUE,
            window_start: 0,
            started: 0,
            nonce: [0; 4],
            prev_nonce: [0; 4],
            nonces: 0,
            bubbles: 0,
        };
        let mut xs = vec![x; 24];
        let mut timers = Timers::default();
        let mut model: std::collections::BTreeMap<u32, u32> = Default::default();
        for op in ops {
            match op {
                TimerOp::Set(s, due) => {
                    timers.set(&mut xs, s, due);
                    model.insert(s, due);
                }
                TimerOp::Remove(s) => {
                    timers.remove(&mut xs, s);
                    model.remove(&s);
                }
                TimerOp::Pop => {
                    let want = model.iter().map(|(s, d)| (*d, *s)).min();
                    prop_assert_eq!(timers.peek(), want);
                    if let Some((_, s)) = want {
                        timers.remove(&mut xs, s);
                        model.remove(&s);
                    }
                }
            }
            check_heap(&timers, &xs).map_err(TestCaseError::fail)?;
            prop_assert_eq!(timers.heap.len(), model.len());
            prop_assert_eq!(timers.peek(), model.iter().map(|(s, d)| (*d, *s)).min());
        }
    }
}

// ---- outputs ----------------------------------------------------------------------

#[test]
fn zero_copy_entry_points() {
    let mut lab = Lab::new(cfg());
    lab.trust_x();
    let p = ping(7);
    let r = lab.relay.handle_ipv6(lab.now, &p).unwrap();
    let crate::relay::Handled::Encapsulated {
        to: XMAP,
        in_place: Some(ip),
    } = r
    else {
        panic!("{r:?}");
    };
    assert_eq!(ip.bytes(&p), &p[..]);
    assert_eq!(
        ip.output,
        crate::io::Output::Udp {
            local: Local::Primary,
            to: XMAP,
            len: 148,
            kind: Kind::Data
        }
    );
    assert!(lab.drain().is_empty());
    // With an output pending, the packet is queued behind it (order to a peer is kept).
    let _ = lab
        .relay
        .handle_ipv6(lab.now, &echo(H, peer_n(2), false, 1, 8))
        .unwrap();
    assert_eq!(
        lab.relay.handle_ipv6(lab.now, &p),
        Ok(crate::relay::Handled::Encapsulated {
            to: XMAP,
            in_place: None
        })
    );
    let out = lab.drain();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1], (Output::Udp { to: XMAP, len: 148 }, p.clone()));
    // Receive: the caller writes the IPv6 part of its own buffer.
    let reply = echo(x(), H, true, 7, 30);
    let mut dgram = vec![0, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0];
    dgram.extend_from_slice(&reply);
    dgram.extend_from_slice(&[0x01, 4, 1, 1, 1, 1]);
    let r = lab
        .relay
        .handle_udp(lab.now, Local::Primary, XMAP, &dgram)
        .unwrap();
    let crate::relay::Handled::Forwarded {
        via,
        flushed,
        in_place,
    } = r
    else {
        panic!("{r:?}");
    };
    assert_eq!(
        (in_place.offset, via, flushed),
        (13, Acceptance::EmbeddedMapping, 0)
    );
    assert_eq!(in_place.bytes(&dgram), &reply[..]);
    assert_eq!(in_place.output.kind(), Kind::Data);
    assert!(lab.drain().is_empty());
    let r = lab
        .relay
        .handle_udp(lab.now, Local::Primary, XMAP, &bubble(x(), H, &[]))
        .unwrap();
    assert!(matches!(r, crate::relay::Handled::Bubble { .. }));
    assert_eq!(r.in_place(), None);
    let c = lab.relay.counters();
    assert_eq!((c.encapsulated, c.forwarded), (3, 1));
}

#[test]
fn small_poll_buffer_discards_and_counts() {
    let mut lab = Lab::new(cfg());
    let _ = lab.relay.handle_ipv6(lab.now, &ping(1)).unwrap();
    // The indirect bubble: header and Nonce trailer.
    assert_eq!(lab.relay.next_output_len(), Some(INDIRECT_BUBBLE_LEN));
    let mut small = [0u8; 20];
    assert_eq!(lab.relay.poll_output(&mut small), None);
    assert_eq!(
        lab.relay
            .counters()
            .dropped(DropReason::OutputBufferTooSmall),
        1
    );
    assert!(lab.drain().is_empty());
}

#[test]
fn output_queue_is_bounded_and_timers_wait_for_room() {
    let mut lab = Lab::new(RelayConfig {
        max_outputs: 8,
        ..cfg()
    });
    // Without draining, only 8 bubbles fit; the rest are counted.
    for n in 0..10 {
        let _ = lab
            .relay
            .handle_ipv6(lab.now, &echo(H, peer_n(n), false, n, 8))
            .unwrap();
    }
    assert_eq!(lab.relay.gauges().pending_outputs, 8);
    assert_eq!(lab.relay.counters().dropped(DropReason::OutputQueueFull), 2);
    lab.drain();
    // At 2 s all ten retransmit; handle_timeout stops while the queue is full and the
    // timers stay due.
    lab.at(2.0);
    lab.relay.handle_timeout(lab.now);
    assert_eq!(lab.relay.gauges().pending_outputs, 6);
    assert!(lab.relay.poll_timeout().unwrap() <= lab.now);
    let mut n = lab.drain().len();
    lab.relay.handle_timeout(lab.now);
    n += lab.drain().len();
    assert_eq!(n, 10);
    assert_eq!(lab.relay.counters().dropped(DropReason::OutputQueueFull), 2);
}

#[test]
fn time_going_backwards_is_harmless() {
    let mut lab = Lab::new(cfg());
    lab.trust_x();
    lab.at(10.0);
    lab.native(&ping(1)).0.unwrap();
    let before = lab.t0; // earlier than the relay's latest time
    assert_eq!(
        lab.relay.handle_ipv6(before, &ping(2)).map(Handled::from),
        Ok(Handled::Encapsulated { to: XMAP })
    );
    lab.relay.handle_timeout(before);
    assert!(lab.relay.poll_timeout().is_some());
}

// ---- SipHash ----------------------------------------------------------------------

fn key() -> (u64, u64) {
    let k: Vec<u8> = (0..16).collect();
    (
        u64::from_le_bytes(k[..8].try_into().unwrap()),
        u64::from_le_bytes(k[8..].try_into().unwrap()),
    )
}

#[test]
fn siphash24_reference_vectors() {
    // Aumasson & Bernstein, SipHash paper Appendix A and the reference vectors.
    let (k0, k1) = key();
    let h = |m: &[u8]| {
        let mut s = SipHasher24::new_with_keys(k0, k1);
        s.write(m);
        s.finish()
    };
    assert_eq!(h(&[]), 0x726f_db47_dd0e_0e31);
    let m: Vec<u8> = (0..15).collect();
    assert_eq!(h(&m), 0xa129_ca61_49be_45e5);
}

// ---- property tests -----------------------------------------------------------------

fn arb_sa() -> impl Strategy<Value = SocketAddrV4> {
    prop_oneof![
        Just(XMAP),
        Just(XSYM),
        Just(mapping_n(0)),
        (any::<u32>(), any::<u16>()).prop_map(|(ip, port)| SocketAddrV4::new(ip.into(), port)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn siphash_matches_std_sip_hasher(
        k0 in any::<u64>(),
        k1 in any::<u64>(),
        parts in vec(vec(any::<u8>(), 0..20), 0..6),
    ) {
        #[allow(deprecated)]
        let mut reference = std::hash::SipHasher::new_with_keys(k0, k1);
        let mut ours = SipHasher24::new_with_keys(k0, k1);
        for p in &parts {
            reference.write(p);
            ours.write(p);
        }
        prop_assert_eq!(ours.finish(), reference.finish());
    }

    #[test]
    fn siphash_of_16_bytes_matches_the_generic_one(
        k0 in any::<u64>(),
        k1 in any::<u64>(),
        b in any::<[u8; 16]>(),
    ) {
        let mut generic = SipHasher24::new_with_keys(k0, k1);
        generic.write(&b);
        prop_assert_eq!(SipHasher24::hash_16(k0, k1, &b), generic.finish());
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        lenient in any::<bool>(),
        inputs in vec((any::<bool>(), arb_sa(), vec(any::<u8>(), 0..200), 0u64..5000), 1..40),
    ) {
        let mut lab = Lab::new(RelayConfig {
            trust: if lenient { TrustPolicy::Lenient } else { TrustPolicy::Strict },
            direct_bubbles: true,
            ..cfg()
        });
        lab.trust_x();
        for (udp, from, mut data, dt) in inputs {
            lab.now += Duration::from_millis(dt);
            if data.len() >= 40 && !udp {
                data[0] = 0x60 | (data[0] & 0x0f);
            }
            let _ = if udp {
                lab.udp(from, &data)
            } else {
                lab.native(&data)
            };
            // The same bytes through both inputs (once the zero-copy variants).
            let _ = lab.udp(from, &data);
            let _ = lab.native(&data);
            lab.relay.handle_timeout(lab.now);
            lab.drain();
        }
    }

    #[test]
    fn arbitrary_tails_after_a_valid_header_never_panic(
        tail in vec(any::<u8>(), 0..100),
        plen in 0u16..120,
        nh in any::<u8>(),
        from in arb_sa(),
    ) {
        let mut lab = Lab::new(RelayConfig { trust: TrustPolicy::Lenient, ..cfg() });
        lab.trust_x();
        let mut data = bubble(x(), H, &tail);
        data[4..6].copy_from_slice(&plen.to_be_bytes());
        data[6] = nh;
        let _ = lab.udp(from, &data);
        let _ = lab.udp(XMAP, &data);
        let mut native = bubble(H, x(), &tail);
        native[4..6].copy_from_slice(&plen.to_be_bytes());
        let _ = lab.native(&native);
    }

    #[test]
    fn every_truncation_is_refused(data_len in 0usize..64, trailer in vec(any::<u8>(), 0..12)) {
        let mut lab = Lab::new(cfg());
        lab.trust_x();
        let p = echo(H, x(), false, 1, data_len);
        for n in 0..p.len() {
            prop_assert!(lab.relay.handle_ipv6(lab.now, &p[..n]).is_err(), "native {}", n);
        }
        let reply = echo(x(), H, true, 1, data_len);
        let mut d = vec![0, 1, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9, 0];
        let mut oi = [0u8; 8];
        OriginIndication(SX_3544).emit(&mut oi).unwrap();
        d.extend_from_slice(&oi);
        d.extend_from_slice(&reply);
        let ipv6_end = d.len();
        d.extend_from_slice(&trailer);
        for n in 0..ipv6_end {
            prop_assert!(lab.relay.handle_udp(lab.now, Local::Primary, XMAP, &d[..n]).is_err(), "udp {}", n);
            prop_assert!(lab.drain().is_empty());
        }
        // Cutting inside the trailers only shortens them.
        for n in ipv6_end..=d.len() {
            let (r, out) = lab.udp(XMAP, &d[..n]);
            prop_assert!(r.is_ok() || r == Err(DropReason::MandatoryTrailer), "{:?}", r);
            if r.is_ok() {
                prop_assert_eq!(out, vec![(Output::Ipv6 { len: reply.len() }, reply.clone())]);
            }
        }
    }
}

// ---- structured fuzz: operation sequences with invariants ---------------------------

/// Peers of the structured test: X (its NAT may be symmetric), and two cone-ish peers.
fn peers() -> [(Ipv6Addr, SocketAddrV4, SocketAddrV4); 3] {
    [
        (x(), XMAP, XSYM),
        (peer_n(1), mapping_n(1), mapping_n(1)),
        (peer_n(2), mapping_n(2), "203.0.113.77:9".parse().unwrap()),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    /// Native packet of `size` data bytes to peer `i`.
    Native(usize, usize),
    /// Direct bubble from peer `i`: from its actual mapping (else embedded), echoing the
    /// latest nonce seen (else a wrong one), sent to the latest bubble source (else H).
    Bubble(usize, bool, bool, bool),
    /// Data from peer `i` to H, from its actual mapping (else embedded), with a trailer.
    Data(usize, bool, bool),
    /// Time passes (ms) and the timers run.
    Wait(u64),
    /// Arbitrary datagram.
    Junk(SocketAddrV4, Vec<u8>),
    /// A fast path saw peer `i` (with its actual mapping, else the embedded one) this many
    /// ms ago (reception, use).
    Refresh(usize, bool, u64, u64),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..3, 0usize..300).prop_map(|(i, s)| Op::Native(i, s)),
        3 => (0usize..3, any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(i, a, n, d)| Op::Bubble(i, a, n, d)),
        2 => (0usize..3, any::<bool>(), any::<bool>()).prop_map(|(i, a, t)| Op::Data(i, a, t)),
        3 => prop_oneof![0u64..3000, 0u64..70_000].prop_map(Op::Wait),
        1 => (arb_sa(), vec(any::<u8>(), 0..80)).prop_map(|(f, d)| Op::Junk(f, d)),
        2 => (0usize..3, any::<bool>(), 0u64..40_000, 0u64..3000)
            .prop_map(|(i, a, rx, used)| Op::Refresh(i, a, rx, used)),
    ]
}

fn arb_config() -> impl Strategy<Value = RelayConfig> {
    (
        any::<bool>(),
        any::<bool>(),
        1usize..4,
        100usize..1500,
        200usize..3000,
        1u32..20,
        any::<bool>(),
        prop_oneof![2 => Just(0u32), 1 => 1u32..4],
        any::<bool>(),
    )
        .prop_map(
            |(
                lenient,
                direct,
                max_peers,
                per_peer,
                global,
                burst,
                evict_trusted,
                bubbles,
                accept,
            )| {
                RelayConfig {
                    unknown_peers: if accept {
                        UnknownPeerPolicy::Accept
                    } else {
                        UnknownPeerPolicy::Drop
                    },
                    trust: if lenient {
                        TrustPolicy::Lenient
                    } else {
                        TrustPolicy::Strict
                    },
                    direct_bubbles: direct,
                    max_peers,
                    queue_bytes_per_peer: per_peer,
                    global_queue_bytes: global,
                    icmp_burst: burst,
                    max_outputs: 64,
                    evict_trusted,
                    bubble_rate: bubbles,
                    bubble_burst: bubbles,
                    ..cfg()
                }
            },
        )
}

fn at(now: Instant, out: Vec<Out>) -> Vec<(Instant, Out)> {
    out.into_iter().map(|o| (now, o)).collect()
}

/// Runs a sequence and checks, after every step: outputs go only to global unicast
/// IPv4 (port ≠ 0); UDP outputs are bubbles to a server:3544 or a peer, or data for a
/// peer that is trusted with exactly that mapping; native outputs are forwarded client
/// packets or well-formed ICMPv6 errors; bubbles to a peer are ≥ 2 s apart; caps hold;
/// gauges are consistent; `handle_timeout` makes progress.
fn run_ops(cfg: RelayConfig, ops: &[Op]) -> Result<RelayCounters, TestCaseError> {
    let mut lab = Lab::new(cfg);
    let peers = peers();
    let mut last_bubble: Map<Ipv6Addr, Instant> = Map::new();
    let mut seen: Map<Ipv6Addr, (Ipv6Addr, [u8; 4])> = Map::new();
    for op in ops {
        let now = lab.now;
        let existed: Vec<bool> = peers
            .iter()
            .map(|p| lab.relay.peer(&p.0).is_some())
            .collect();
        let out: Vec<(Instant, Out)> = match op {
            Op::Native(i, size) => at(now, lab.native(&echo(H, peers[*i].0, false, 1, *size)).1),
            Op::Bubble(i, actual, right_nonce, to_src) => {
                let (addr, embedded, actual_map) = peers[*i];
                let s = seen.get(&addr).copied();
                let nonce = match s {
                    Some((_, n)) if *right_nonce => n,
                    _ => [0xee; 4],
                };
                let dst = match s {
                    Some((src, _)) if *to_src => src,
                    _ => H,
                };
                let from = if *actual { actual_map } else { embedded };
                at(
                    now,
                    lab.udp(from, &bubble(addr, dst, &nonce_trailer(nonce))).1,
                )
            }
            Op::Data(i, actual, trailer) => {
                let (addr, embedded, actual_map) = peers[*i];
                let mut d = echo(addr, H, true, 1, 16);
                if *trailer {
                    d.extend_from_slice(&[0x05, 2, 1, 2]);
                }
                at(
                    now,
                    lab.udp(if *actual { actual_map } else { embedded }, &d).1,
                )
            }
            Op::Wait(ms) => {
                let until = lab.elapsed() + (*ms as f64) / 1000.0;
                let t0 = lab.t0;
                lab.run_to(until)
                    .into_iter()
                    .map(|(t, o)| (t0 + secs(t), o))
                    .collect()
            }
            Op::Junk(from, d) => at(now, lab.udp(*from, d).1),
            Op::Refresh(i, actual, rx, used) => {
                let (addr, embedded, actual_map) = peers[*i];
                let mapping = if *actual { actual_map } else { embedded };
                let before = lab.relay.peer(&addr);
                let ago = |ms: u64| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
                let r = lab
                    .relay
                    .refresh_peer(now, &addr, mapping, ago(*rx), ago(*used));
                let after = lab.relay.peer(&addr);
                let changed = before != after;
                match r {
                    Refresh::Unknown | Refresh::NotTrusted | Refresh::MappingChanged => {
                        prop_assert!(!changed, "{r:?}: {before:?} -> {after:?}");
                    }
                    Refresh::Unchanged | Refresh::Moved => {
                        prop_assert_eq!(
                            after.map(|p| (p.mapping, p.phase)),
                            before.map(|p| (p.mapping, p.phase))
                        );
                        prop_assert!(
                            before.is_none_or(|p| !p.valid) || after.is_some_and(|p| p.valid)
                        );
                    }
                    Refresh::Answered => {
                        prop_assert!(after.is_some_and(|p| p.valid && p.phase == PeerPhase::Idle));
                    }
                }
                at(now, lab.drain())
            }
        };
        for (when, (o, bytes)) in &out {
            match *o {
                Output::Udp { to, len } => {
                    prop_assert_eq!(len, bytes.len());
                    prop_assert!(is_ipv4_global_unicast(*to.ip()) && to.port() != 0);
                    let p = TeredoPacket::parse(bytes).unwrap();
                    prop_assert!(p.auth.is_none() && p.origin.is_none());
                    if p.is_bubble() {
                        let t = TeredoAddr::from_ipv6(&p.dst()).unwrap();
                        if to.port() == TEREDO_PORT {
                            prop_assert_eq!(to.ip(), &t.server);
                            let b = check_indirect(bytes, p.dst());
                            seen.insert(p.dst(), (b.src, b.nonce));
                            // Pacing state belongs to the entry: a peer evicted from a
                            // full table and created again starts afresh.
                            let recreated = peers
                                .iter()
                                .zip(&existed)
                                .any(|(q, e)| q.0 == p.dst() && !e);
                            if let Some(prev) = last_bubble.insert(p.dst(), *when) {
                                prop_assert!(recreated || *when - prev >= BUBBLE_INTERVAL);
                            }
                        } else {
                            prop_assert!(lab.relay.config().direct_bubbles);
                            prop_assert!(p.trailers.is_empty());
                        }
                    } else {
                        let info = lab.relay.peer(&p.dst()).unwrap();
                        prop_assert!(info.trusted);
                        prop_assert_eq!(info.mapping, to);
                    }
                }
                Output::Ipv6 { len } => {
                    prop_assert_eq!(len, bytes.len());
                    if ipv6_src(bytes) == RELAY_V6 {
                        prop_assert!(icmpv6_checksum_ok(bytes));
                        prop_assert_eq!(&bytes[40..42], &[1u8, 3][..]);
                        prop_assert_eq!(ipv6_dst(bytes), H);
                    } else {
                        let info = lab.relay.peer(&ipv6_src(bytes)).unwrap();
                        prop_assert!(info.trusted);
                        prop_assert_eq!(ipv6_dst(bytes), H);
                        prop_assert!(check_ipv6_exact_len(bytes).is_ok());
                    }
                }
            }
        }
        let cfg = *lab.relay.config();
        let g = lab.relay.gauges();
        prop_assert!(g.peers <= cfg.max_peers);
        prop_assert!(g.queued_bytes <= cfg.global_queue_bytes);
        prop_assert_eq!(g.pending_outputs, 0);
        prop_assert_eq!(g.peers_trusted + g.peers_untrusted, g.peers);
        let mut trusted = 0;
        let mut queued = (0, 0);
        for (addr, _, _) in peers {
            if let Some(info) = lab.relay.peer(&addr) {
                trusted += usize::from(info.trusted);
                queued.0 += info.queued_packets;
                queued.1 += info.queued_bytes;
                prop_assert!(info.queued_bytes <= cfg.queue_bytes_per_peer);
                prop_assert!(info.queued_packets == 0 || !info.valid);
                prop_assert!(info.bubbles <= cfg.max_bubbles_per_window);
            }
        }
        prop_assert_eq!(trusted, g.peers_trusted);
        prop_assert_eq!(queued, (g.queued_packets, g.queued_bytes));
        check_invariants(&lab.relay).map_err(TestCaseError::fail)?;
        if let Some(t) = lab.relay.poll_timeout() {
            lab.relay.handle_timeout(lab.now);
            prop_assert!(lab.drain().is_empty() || t <= lab.now);
        }
    }
    Ok(lab.relay.counters().clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn structured_fuzz(cfg in arb_config(), ops in vec(arb_op(), 1..60)) {
        run_ops(cfg, &ops)?;
    }
}

/// The structured generator reaches every interesting path (so the invariants above are
/// exercised where they matter).
#[test]
fn structured_fuzz_covers_the_relay() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = (arb_config(), vec(arb_op(), 1..60));
    let mut total = RelayCounters::default();
    for _ in 0..300 {
        let (cfg, ops) = strategy.new_tree(&mut runner).unwrap().current();
        let c = run_ops(cfg, &ops).unwrap();
        total.bubbles_sent += c.bubbles_sent;
        total.direct_bubbles_sent += c.direct_bubbles_sent;
        total.flushed += c.flushed;
        total.encapsulated += c.encapsulated;
        total.forwarded += c.forwarded;
        total.give_ups += c.give_ups;
        total.icmp_errors_sent += c.icmp_errors_sent;
        total.icmp_errors_rate_limited += c.icmp_errors_rate_limited;
        total.evictions += c.evictions;
        total.trusted_evictions += c.trusted_evictions;
        total.bubbles_rate_limited += c.bubbles_rate_limited;
        total.expirations += c.expirations;
        total.lenient_accepts += c.lenient_accepts;
        for (t, n) in total.dropped_by_reason.iter_mut().zip(c.dropped_by_reason) {
            *t += n;
        }
    }
    let c = &total;
    for (what, n) in [
        ("bubbles", c.bubbles_sent),
        ("direct bubbles", c.direct_bubbles_sent),
        ("flushed", c.flushed),
        ("encapsulated", c.encapsulated - c.flushed),
        ("forwarded", c.forwarded),
        ("give-ups", c.give_ups),
        ("icmp", c.icmp_errors_sent),
        ("icmp rate limited", c.icmp_errors_rate_limited),
        ("evictions", c.evictions),
        ("trusted evictions", c.trusted_evictions),
        ("bubbles rate limited", c.bubbles_rate_limited),
        ("expirations", c.expirations),
        ("lenient", c.lenient_accepts),
    ] {
        assert!(n > 0, "never reached: {what}");
    }
    for r in [
        DropReason::SpoofedSource,
        DropReason::UnknownPeer,
        DropReason::QueueFull,
        DropReason::GlobalQueueFull,
        DropReason::PeerTableFull,
        DropReason::PeerUnreachable,
        DropReason::PeerEvicted,
    ] {
        assert!(c.dropped(r) > 0, "never dropped: {r}");
    }
}
