//! A fast path's observations: `refresh_peer`, `trusted_peers`, `Event::PeerRefreshed`.

use super::table::peer_n;
#[allow(clippy::wildcard_imports)]
use super::*;

fn events(lab: &mut Lab) -> Vec<Event> {
    std::iter::from_fn(|| lab.relay.poll_event()).collect()
}

fn at(lab: &Lab, s: f64) -> Instant {
    lab.t0 + secs(s)
}

/// The fast path saw X at `rx` and used it at `used` (seconds since the start).
fn refresh(lab: &mut Lab, mapping: SocketAddrV4, rx: f64, used: f64) -> Refresh {
    let (rx, used) = (at(lab, rx), at(lab, used));
    let r = lab.relay.refresh_peer(lab.now, &x(), mapping, rx, used);
    check_invariants(&lab.relay).unwrap();
    r
}

fn x_entry(lab: &Lab) -> Option<TrustedPeer> {
    lab.relay.trusted_peers().find(|p| p.addr == x())
}

#[test]
fn refresh_moves_times_forward_only_and_never_past_now() {
    let mut lab = Lab::new(cfg());
    lab.trust_x();
    lab.at(10.0);
    assert_eq!(refresh(&mut lab, XMAP, 5.0, 8.0), Refresh::Moved);
    let e = x_entry(&lab).unwrap();
    assert_eq!((e.last_rx, e.last_used), (at(&lab, 5.0), at(&lab, 8.0)));
    // Older observations change nothing.
    assert_eq!(refresh(&mut lab, XMAP, 2.0, 3.0), Refresh::Unchanged);
    assert_eq!(x_entry(&lab).unwrap().last_rx, at(&lab, 5.0));
    // One time newer, the other older: each moves on its own.
    assert_eq!(refresh(&mut lab, XMAP, 6.0, 7.0), Refresh::Moved);
    let e = x_entry(&lab).unwrap();
    assert_eq!((e.last_rx, e.last_used), (at(&lab, 6.0), at(&lab, 8.0)));
    // From the future: clamped to now.
    assert_eq!(refresh(&mut lab, XMAP, 99.0, 99.0), Refresh::Moved);
    let e = x_entry(&lab).unwrap();
    assert_eq!((e.last_rx, e.last_used), (at(&lab, 10.0), at(&lab, 10.0)));
    assert!(events(&mut lab)
        .iter()
        .all(|e| matches!(e, Event::PeerTrusted { .. })));
}

#[test]
fn refresh_does_nothing_for_unknown_untrusted_or_moved_peers() {
    let mut lab = Lab::new(cfg());
    assert_eq!(refresh(&mut lab, XMAP, 0.0, 0.0), Refresh::Unknown);
    // Known but not trusted (its exchange runs): no revival by a stale observation.
    lab.native(&ping(0)).0.unwrap();
    lab.at(1.0);
    assert_eq!(refresh(&mut lab, XMAP, 1.0, 1.0), Refresh::NotTrusted);
    let p = lab.relay.peer(&x()).unwrap();
    assert!(!p.trusted && p.phase == PeerPhase::Bubbling && p.queued_packets == 1);
    // Given up on: still not trusted, and it stays failed.
    lab.run_to(20.0);
    assert_eq!(refresh(&mut lab, XMAP, 20.0, 20.0), Refresh::NotTrusted);
    assert_eq!(lab.relay.peer(&x()).unwrap().phase, PeerPhase::Failed);
    // Trusted with another mapping than the fast path knew.
    let mut lab = Lab::new(RelayConfig {
        trust: TrustPolicy::Lenient,
        ..cfg()
    });
    let (_, out) = lab.native(&ping(0));
    let b = indirect_bubble(&out);
    lab.udp(XSYM, &bubble(x(), H, &nonce_trailer(b.nonce)))
        .0
        .unwrap();
    lab.at(5.0);
    let before = x_entry(&lab).unwrap();
    assert_eq!(before.mapping, XSYM);
    assert_eq!(refresh(&mut lab, XMAP, 5.0, 5.0), Refresh::MappingChanged);
    assert_eq!(x_entry(&lab), Some(before));
    assert_eq!(refresh(&mut lab, XSYM, 5.0, 5.0), Refresh::Moved);
}

/// Traffic only the fast path saw keeps a trusted peer alive and valid for as long as it
/// lasts, where the core alone would expire it (`idle_peers_expire`).
#[test]
fn a_peer_kept_busy_by_the_fast_path_survives_expiry_and_stays_valid() {
    let mut lab = Lab::new(cfg());
    lab.trust_x();
    let _ = events(&mut lab);
    for s in 1..=300 {
        let t = f64::from(s);
        lab.run_to(t);
        // The driver's once-a-second sync: packets both ways up to now.
        assert_ne!(
            refresh(&mut lab, XMAP, t - 0.5, t - 0.2),
            Refresh::Unchanged
        );
    }
    assert!(events(&mut lab).is_empty(), "no expiry, no eviction");
    let p = lab.relay.peer(&x()).unwrap();
    assert!(p.trusted && p.valid && p.phase == PeerPhase::Idle);
    // The core sends directly: no bubble exchange is needed.
    let (r, _) = lab.native(&ping(9));
    assert!(
        matches!(r, Ok(Handled::Encapsulated { to: XMAP, .. })),
        "{r:?}"
    );
    // When the traffic stops, the peer expires as usual.
    lab.run_to(300.0 + 125.0);
    assert!(lab.relay.peer(&x()).is_none());
    assert_eq!(
        events(&mut lab),
        [Event::PeerExpired {
            peer: x(),
            trusted: true
        }]
    );
    check_invariants(&lab.relay).unwrap();
}

/// A trusted peer whose validity ran out is bubbled again; the fast path hearing from it
/// after that ends the exchange as a packet from it would, and the queue is delivered. An
/// observation from before the exchange began proves nothing.
#[test]
fn a_reception_after_the_exchange_began_answers_it() {
    let mut lab = Lab::new(cfg());
    lab.trust_x();
    let _ = events(&mut lab);
    lab.at(40.0);
    let (r, out) = lab.native(&ping(1));
    assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
    indirect_bubble(&out);
    lab.at(40.5);
    assert_eq!(refresh(&mut lab, XMAP, 39.0, 40.5), Refresh::Moved);
    let p = lab.relay.peer(&x()).unwrap();
    assert!(!p.valid && p.phase == PeerPhase::Bubbling && p.queued_packets == 1);
    assert!(lab.drain().is_empty());
    lab.at(41.0);
    assert_eq!(refresh(&mut lab, XMAP, 40.25, 40.75), Refresh::Answered);
    let out = lab.drain();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, Output::Udp { to: XMAP, len: 148 });
    assert_eq!(seq_of(&out[0].1), 1);
    let p = lab.relay.peer(&x()).unwrap();
    assert!(p.valid && p.phase == PeerPhase::Idle && p.queued_packets == 0);
    assert_eq!(
        events(&mut lab),
        [Event::PeerTrusted {
            peer: x(),
            mapping: XMAP,
            via: Acceptance::RecordedMapping,
            exchange: Some(Duration::from_millis(250)),
        }]
    );
    let e = x_entry(&lab).unwrap();
    assert_eq!((e.last_rx, e.last_used), (at(&lab, 40.25), at(&lab, 40.75)));
    // No retransmission follows.
    assert!(lab.run_to(50.0).is_empty());
}

#[test]
fn trusted_peers_lists_exactly_the_trusted_ones() {
    let mut lab = Lab::new(cfg());
    lab.trust_x();
    lab.at(2.0);
    lab.native(&echo(H, peer_n(1), false, 1, 8)).0.unwrap();
    let all: Vec<TrustedPeer> = lab.relay.trusted_peers().collect();
    assert_eq!(
        all,
        [TrustedPeer {
            addr: x(),
            mapping: XMAP,
            last_rx: at(&lab, 0.0),
            last_used: at(&lab, 0.0),
        }]
    );
    // Sending to a trusted peer is a use, not a reception.
    lab.native(&ping(2)).0.unwrap();
    let e = x_entry(&lab).unwrap();
    assert_eq!((e.last_rx, e.last_used), (at(&lab, 0.0), at(&lab, 2.0)));
}

#[test]
fn peer_refreshed_events_are_opt_in_and_at_most_one_a_second() {
    let data = echo(x(), H, true, 1, 8);
    let mut lab = Lab::new(cfg());
    lab.trust_x();
    let _ = events(&mut lab);
    lab.at(1.5);
    lab.udp(XMAP, &data).0.unwrap();
    assert!(events(&mut lab).is_empty(), "off by default");

    let mut lab = Lab::new(RelayConfig {
        peer_refreshed_events: true,
        ..cfg()
    });
    lab.trust_x();
    // Becoming trusted is reported as such, not twice.
    assert!(matches!(events(&mut lab)[..], [Event::PeerTrusted { .. }]));
    let refreshed = Event::PeerRefreshed {
        peer: x(),
        mapping: XMAP,
    };
    for (t, expect) in [(0.5, 0), (1.0, 1), (1.5, 0), (1.9, 0), (2.0, 1), (7.0, 1)] {
        lab.at(t);
        lab.udp(XMAP, &data).0.unwrap();
        assert_eq!(events(&mut lab), vec![refreshed; expect], "at {t}");
    }
    // Dropped for its destination, but still a reception from the peer.
    lab.at(8.0);
    let to_teredo = echo(x(), peer_n(3), true, 1, 8);
    assert!(lab.udp(XMAP, &to_teredo).0.is_err());
    assert_eq!(events(&mut lab), [refreshed]);
    // The fast path's own observations are not echoed back.
    lab.at(9.5);
    assert_eq!(refresh(&mut lab, XMAP, 9.5, 9.5), Refresh::Moved);
    assert!(events(&mut lab).is_empty());
}
