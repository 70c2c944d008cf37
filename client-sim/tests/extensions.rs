//! The RFC 6081 §5.6 Hairpinning and §5.7 Server Load Reduction rows of the lab, looked at
//! closer than the table does: who sent what, where the data went, what the server relayed.

use std::net::SocketAddrV4;

use client_sim::lab::{self, Scenario, LAN_PEER_INTERNAL, PINGS, SCENARIO_TIME};
use client_sim::labnet::ping_run;
use client_sim::scenario::QUIET_TIME;
use netsim::sim::Sim;
use teredo::DropReason;

fn find(name: &str) -> Scenario {
    lab::all_scenarios()
        .into_iter()
        .find(|s| s.name() == name)
        .unwrap_or_else(|| panic!("no scenario {name}"))
}

/// The scenario's network, run until both clients qualified.
fn qualified(name: &str) -> Sim {
    let (mut sim, _) = lab::build(&find(name), 1, false).unwrap();
    sim.run_for(SCENARIO_TIME).unwrap();
    sim
}

#[test]
fn the_hairpinning_extension_sends_over_the_lan_and_trusts_by_nonce() {
    let mut sim = qualified("win7__port-restricted__same-lan-discovery-off");
    let peer = sim.client(1).unwrap().client.address().unwrap();
    let peer_lan = sim.client(1).unwrap().local();
    assert_eq!(*peer_lan.ip(), LAN_PEER_INTERNAL);
    let p = ping_run(&mut sim, peer, PINGS).unwrap().unwrap();
    assert_eq!((p.sent, p.received), (3, 2), "{p:?}");
    let own = sim.client(0).unwrap();
    let entry = own.client.peer(&peer, sim.now()).unwrap();
    assert_eq!((entry.trusted, entry.mapping), (true, Some(peer_lan)));
    // The peer's entry for the client: trusted at the client's LAN address, and it holds
    // the alternates the client advertised.
    let other = sim.client(1).unwrap();
    let back = other
        .client
        .peer(&own.client.address().unwrap(), sim.now())
        .unwrap();
    assert_eq!((back.trusted, back.mapping), (true, Some(own.local())));
    assert_eq!(
        other.client.peer_alternates(&own.client.address().unwrap()),
        &[own.local()]
    );
    let (c0, c1) = (own.client.counters(), other.client.counters());
    assert_eq!(c0.hairpin_trailers_sent, 1, "our first indirect bubble");
    assert_eq!(
        c1.hairpin_bubbles_sent, 1,
        "the peer bubbled our LAN address"
    );
    assert_eq!((c0.hairpin_peers_trusted, c1.hairpin_peers_trusted), (1, 1));
    // The first request reached the peer before it trusted us.
    assert_eq!(c1.rejected(DropReason::SpoofedSource), 1);
    let net = sim.counters();
    assert!(net.lan_unicast >= 5, "{net:?}");
    assert_eq!(net.hairpinned, 0);
}

#[test]
fn server_load_reduction_spares_the_server_the_indirect_bubble() {
    for (name, direct) in [
        ("win7__port-restricted__quiet-35s-revalidate", true),
        (
            "win7__port-restricted__quiet-35s-revalidate-load-reduction-off",
            false,
        ),
    ] {
        let mut sim = qualified(name);
        let peer = sim.client(1).unwrap().client.address().unwrap();
        // Behind an endpoint-independent NAT: its embedded mapping, before and after.
        let peer_map: SocketAddrV4 = teredo::TeredoAddr::from_ipv6(&peer).unwrap().mapped;
        let first = ping_run(&mut sim, peer, PINGS).unwrap().unwrap();
        assert_eq!(first.received, 3, "{name}");
        let relayed_before = sim.counters().server_bubbles_relayed;
        assert!(
            relayed_before >= 1,
            "{name}: the first contact used the server"
        );
        sim.run_for(QUIET_TIME).unwrap();
        let now = sim.now();
        assert!(
            !sim.client(0)
                .unwrap()
                .client
                .peer(&peer, now)
                .unwrap()
                .valid
        );
        let second = ping_run(&mut sim, peer, PINGS).unwrap().unwrap();
        assert_eq!(second.received, 3, "{name}");
        let relayed = sim.counters().server_bubbles_relayed - relayed_before;
        let (c0, c1) = (
            sim.client(0).unwrap().client.counters(),
            sim.client(1).unwrap().client.counters(),
        );
        if direct {
            assert_eq!(relayed, 0, "{name}: no indirect bubble reached the server");
            assert_eq!((c0.solicitations_sent, c0.advertisements_received), (1, 1));
            assert_eq!((c1.solicitations_received, c1.advertisements_sent), (1, 1));
        } else {
            assert_eq!(relayed, 1, "{name}: the RFC 4380 indirect bubble");
            assert_eq!((c0.solicitations_sent, c1.advertisements_sent), (0, 0));
        }
        assert_eq!(c0.solicitation_fallbacks, 0, "{name}");
        let entry = sim
            .client(0)
            .unwrap()
            .client
            .peer(&peer, sim.now())
            .unwrap();
        assert_eq!(entry.mapping, Some(peer_map), "{name}");
    }
}
