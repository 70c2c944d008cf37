//! Tests of the simulated network itself (the lab's scenarios test it end to end).

use std::collections::BinaryHeap;
use std::net::Ipv4Addr;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use teredo::client::{ClientConfig, Profile, State};

use super::queue::{Delivery, Queued};
use super::*;
use crate::NatPreset;

const P: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn sim() -> Sim {
    Sim::new(Instant::now(), ServerConfig::new(P), DEFAULT_LATENCY)
}

#[test]
fn queue_orders_by_time_then_sequence() {
    let t = Instant::now();
    let mut heap = BinaryHeap::new();
    let d = || {
        Delivery::Arrive(
            Datagram {
                from: SocketAddrV4::new(P, 1),
                to: SocketAddrV4::new(P, 2),
                payload: vec![],
            },
            0,
            None,
        )
    };
    for (at, seq) in [(3, 1), (1, 2), (1, 3), (2, 4)] {
        heap.push(Queued {
            at: t + Duration::from_secs(at),
            seq,
            what: d(),
        });
    }
    let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|q| q.seq)).collect();
    assert_eq!(order, [2, 3, 4, 1]);
}

#[test]
fn client_behind_nat_qualifies_and_trace_is_complete() {
    let mut s = sim();
    let t0 = s.now();
    let nat = NatPreset::PortRestricted
        .config(vec![Ipv4Addr::new(203, 0, 113, 1)], 1)
        .unwrap()
        .unwrap();
    let local = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 50000);
    let c = Client::new(
        ClientConfig::profile(Profile::Rfc5991, P),
        ChaCha8Rng::seed_from_u64(1),
        local,
        t0,
    );
    s.enable_pcap();
    let i = s.add_client(c, Some(Nat::new(nat)));
    s.run_for(Duration::from_secs(1)).unwrap();
    let node = s.client(i).unwrap();
    assert_eq!(node.client.state(), State::Qualified);
    assert_eq!(
        node.client.mapping(),
        Some(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 50000))
    );
    // RS → primary, RA, RS → secondary, RA: 4 datagrams, 10 ms apart.
    let t: Vec<_> = s.trace().iter().map(|e| (e.at, e.sender)).collect();
    assert_eq!(
        t,
        [
            (Duration::ZERO, Sender::Client(0)),
            (Duration::from_millis(10), Sender::Server),
            (Duration::from_millis(20), Sender::Client(0)),
            (Duration::from_millis(30), Sender::Server),
        ]
    );
    assert!(s.take_pcap().unwrap().len() > 24 + 4 * 16);
    assert_eq!(s.elapsed(), Duration::from_secs(1));
}

#[test]
fn step_limit_is_an_error() {
    let mut s = sim();
    let t0 = s.now();
    let c = Client::new(
        ClientConfig::profile(Profile::Miredo, P),
        ChaCha8Rng::seed_from_u64(1),
        SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 4000),
        t0,
    );
    s.add_client(c, None);
    s.set_step_limit(3);
    let e = s.run_for(Duration::from_secs(3600)).unwrap_err();
    assert!(matches!(e, SimError::StepLimit { steps: 3, .. }), "{e}");
}

#[test]
fn unroutable_and_server_down_are_counted() {
    let mut s = sim();
    let now = s.now();
    s.inject(
        now,
        Datagram {
            from: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1),
            to: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 2),
            payload: vec![1, 2, 3],
        },
    );
    s.set_server_up(false);
    s.inject(
        now,
        Datagram {
            from: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1),
            to: SocketAddrV4::new(P, 3544),
            payload: vec![1, 2, 3],
        },
    );
    s.inject(
        now,
        Datagram {
            from: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1),
            to: SocketAddrV4::new(P, 3544),
            payload: vec![0; MAX_UDP_PAYLOAD + 1],
        },
    );
    s.run_for(Duration::from_secs(1)).unwrap();
    let c = s.counters();
    assert_eq!((c.datagrams, c.no_route, c.server_unreachable), (2, 1, 1));
    assert_eq!(c.injections_refused, 1);
    // Garbage to a running server is counted per reason.
    s.set_server_up(true);
    let now = s.now();
    s.inject(
        now,
        Datagram {
            from: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1),
            to: SocketAddrV4::new(P, 3544),
            payload: vec![1, 2, 3],
        },
    );
    s.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(s.counters().server_dropped.values().sum::<u64>(), 1);
}

#[test]
fn jitter_reorders_and_is_reproducible() {
    let run = |jitter: Duration| {
        let mut s = sim();
        s.set_jitter(jitter, 7);
        let t0 = s.now();
        for k in 0..100u64 {
            s.inject(
                t0 + Duration::from_millis(k),
                Datagram {
                    from: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1),
                    to: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 2),
                    payload: vec![1],
                },
            );
        }
        s.run_for(Duration::from_secs(1)).unwrap();
        assert_eq!(s.counters().no_route, 100, "every datagram arrives once");
        s.counters().reordered
    };
    assert_eq!(run(Duration::ZERO), 0);
    let r = run(Duration::from_millis(30));
    assert!(
        r > 10,
        "30 ms of jitter on datagrams 1 ms apart: {r} reordered"
    );
    assert_eq!(run(Duration::from_millis(30)), r, "same seed, same order");
}

#[test]
fn restarts_keep_the_address_and_count() {
    let mut s = sim();
    s.restart_server();
    assert_eq!(s.counters().server_restarts, 1);
    assert_eq!(s.server().config().primary, P);
    // Without a native segment there is no relay to replace.
    let relay = Relay::new(
        teredo::relay::RelayConfig::default(),
        ChaCha8Rng::seed_from_u64(1),
        s.now(),
    );
    s.replace_relay(relay);
    assert_eq!(s.counters().relay_restarts, 0);
}

#[test]
fn journal_follows_each_datagram_through_the_nat() {
    let mut s = sim();
    let t0 = s.now();
    let ext = Ipv4Addr::new(203, 0, 113, 1);
    let nat = NatPreset::PortRestricted
        .config(vec![ext], 1)
        .unwrap()
        .unwrap();
    let local = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 50000);
    let c = Client::new(
        ClientConfig::profile(Profile::XpSp2, P),
        ChaCha8Rng::seed_from_u64(1),
        local,
        t0,
    );
    s.enable_journal();
    s.add_client(c, Some(Nat::new(nat)));
    s.run_for(Duration::from_secs(1)).unwrap();
    let hops: Vec<&Hop> = s
        .journal()
        .iter()
        .filter_map(|e| match e {
            JournalEntry::Hop(h) => Some(h),
            JournalEntry::Note { .. } => None,
        })
        .collect();
    assert_eq!(hops.len(), s.trace().len(), "one hop per datagram");
    // XP's cone RS leaves through a new mapping and reaches the primary...
    let rs = hops[0];
    assert_eq!(rs.from_node, Node::Client(0));
    assert_eq!(rs.inner_from, Some(local));
    assert_eq!(rs.from, Some(SocketAddrV4::new(ext, 50000)));
    assert!(rs.new_mapping);
    assert!(matches!(
        rs.fate,
        Fate::Delivered {
            node: Node::ServerPrimary,
            ..
        }
    ));
    // ...and its RA, sent from the secondary address, is filtered by the NAT.
    let ra = hops[1];
    assert_eq!(ra.from_node, Node::ServerSecondary);
    assert_eq!(
        ra.fate,
        Fate::Dropped {
            at: Duration::from_millis(20),
            node: Node::Nat(0),
            reason: "filtered by the NAT".to_owned(),
        }
    );
    s.set_server_up(false);
    assert!(matches!(
        s.journal().last(),
        Some(JournalEntry::Note { node: Node::ServerPrimary, text, .. }) if text == "server down"
    ));
}

#[test]
fn clients_on_one_lan_share_the_nat_and_discovery_never_leaves_the_lan() {
    let mut s = sim();
    let t0 = s.now();
    let ext = Ipv4Addr::new(203, 0, 113, 1);
    let nat = NatPreset::PortRestricted
        .config(vec![ext], 1)
        .unwrap()
        .unwrap();
    let win7 = || ClientConfig::profile(Profile::Win7, P);
    let a_local = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 50000);
    let b_local = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 50001);
    let a = Client::new(win7(), ChaCha8Rng::seed_from_u64(1), a_local, t0);
    let b = Client::new(win7(), ChaCha8Rng::seed_from_u64(2), b_local, t0);
    let a = s.add_client(a, Some(Nat::new(nat)));
    let b = s.add_client_behind(b, a);
    // A client directly on the Internet: its discovery bubbles have no link to go to.
    let c_local = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 77), 50002);
    let c = Client::new(win7(), ChaCha8Rng::seed_from_u64(3), c_local, t0);
    let c = s.add_client(c, None);
    s.run_for(Duration::from_secs(30)).unwrap();
    for i in [a, b, c] {
        assert_eq!(s.client(i).unwrap().client.state(), State::Qualified, "{i}");
    }
    // Both behind the one NAT: the same external address, their own ports.
    let ma = s.client(a).unwrap().client.mapping().unwrap();
    let mb = s.client(b).unwrap().client.mapping().unwrap();
    assert_eq!((*ma.ip(), *mb.ip()), (ext, ext));
    assert_ne!(ma.port(), mb.port());
    assert_eq!(s.client(b).unwrap().lan_of, Some(a));
    // Each LAN client's discovery bubble reached the other one, and no discovery
    // datagram ever appeared on the Internet.
    let counters = s.counters();
    assert!(counters.lan_multicast >= 2, "{counters:?}");
    assert!(counters.multicast_dropped >= 1, "{counters:?}");
    assert!(s
        .trace()
        .iter()
        .all(|e| *e.to.ip() != teredo::client::DISCOVERY_GROUP));
    for i in [a, b] {
        assert!(
            s.client(i).unwrap().client.counters().discovery_received >= 1,
            "{i}"
        );
    }
    assert_eq!(s.client(c).unwrap().client.counters().discovery_received, 0);
}

/// A datagram for a client's IPv4 address on a port it has no socket on (no random port of
/// RFC 6081 open there) is dropped and counted as `no_listener`, with or without a NAT.
#[test]
fn datagram_to_a_port_without_a_socket_is_counted() {
    let mut s = sim();
    let t0 = s.now();
    let global = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 50), 50_000);
    let c = Client::new(
        ClientConfig::profile(Profile::Win7, P),
        ChaCha8Rng::seed_from_u64(1),
        global,
        t0,
    );
    let i = s.add_client(c, None);
    s.run_for(Duration::from_secs(30)).unwrap();
    assert_eq!(
        s.client(i).unwrap().socket(50_000),
        Some(teredo::io::Local::Primary)
    );
    assert_eq!(s.client(i).unwrap().socket(50_001), None);
    let from = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 77), 9);
    let to = SocketAddrV4::new(*global.ip(), 50_001);
    s.inject(
        s.now(),
        Datagram {
            from,
            to,
            payload: vec![0; 8],
        },
    );
    s.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(s.counters().no_listener, 1);
    assert_eq!(s.counters().no_route, 0);
}
