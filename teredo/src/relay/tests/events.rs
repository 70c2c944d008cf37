//! Events: the peer state changes a driver polls (trusted with the exchange time, gave up,
//! expired, evicted) and the bounded event queue.

use super::table::{peer_n, send_to};
#[allow(clippy::wildcard_imports)]
use super::*;

fn events(lab: &mut Lab) -> Vec<Event> {
    std::iter::from_fn(|| lab.relay.poll_event()).collect()
}

#[test]
fn trust_reports_the_exchange_time() {
    let mut lab = Lab::new(cfg());
    let (_, out) = lab.native(&ping(0));
    let b = indirect_bubble(&out);
    assert!(events(&mut lab).is_empty());
    lab.at(0.25);
    let (r, _) = lab.udp(XMAP, &bubble(x(), b.src, &[]));
    assert!(matches!(r, Ok(Handled::Bubble { flushed: 1, .. })), "{r:?}");
    assert_eq!(
        events(&mut lab),
        [Event::PeerTrusted {
            peer: x(),
            mapping: XMAP,
            via: Acceptance::EmbeddedMapping,
            exchange: Some(Duration::from_millis(250)),
        }]
    );
    // Traffic from a peer already trusted changes nothing.
    lab.udp(XMAP, &echo(x(), H, true, 1, 8)).0.unwrap();
    assert!(events(&mut lab).is_empty());
}

#[test]
fn give_up_expiry_and_eviction_are_reported() {
    let mut lab = Lab::new(cfg());
    lab.native(&ping(1)).0.unwrap();
    lab.run_to(9.0);
    assert_eq!(
        events(&mut lab),
        [Event::PeerUnreachable {
            peer: x(),
            dropped: 1
        }]
    );
    lab.run_to(400.0);
    assert_eq!(
        events(&mut lab),
        [Event::PeerExpired {
            peer: x(),
            trusted: false
        }]
    );
    // A table of one: a trusted peer is evicted by the next new one.
    let mut lab = Lab::new(RelayConfig {
        max_peers: 1,
        ..cfg()
    });
    lab.trust_x();
    let _ = events(&mut lab);
    let _ = send_to(&mut lab, 1);
    assert_eq!(
        events(&mut lab),
        [Event::PeerEvicted {
            peer: x(),
            trusted: true
        }]
    );
}

#[test]
fn the_event_queue_is_bounded_and_counts_what_it_lost() {
    let n = MAX_EVENTS + 10;
    let mut lab = Lab::new(RelayConfig {
        max_peers: 1,
        ..cfg()
    });
    for k in 0..=n as u16 {
        let _ = send_to(&mut lab, k);
    }
    // One eviction per new peer after the first.
    assert_eq!(lab.relay.events_lost(), (n - MAX_EVENTS) as u64);
    let ev = events(&mut lab);
    assert_eq!(ev.len(), MAX_EVENTS);
    // The oldest were dropped: the last event is about the last evicted peer.
    assert_eq!(
        ev.last(),
        Some(&Event::PeerEvicted {
            peer: peer_n(n as u16 - 1),
            trusted: false
        })
    );
}
