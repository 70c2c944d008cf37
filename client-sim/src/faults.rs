//! The lab's fault scenarios ([`Variant::is_fault`]): what is done to the simulated network
//! and when, and what is measured around the fault (checked against the fault-specific
//! expectation of [`crate::scenario::FaultExpect`]).
//!
//! Each fault runs on the scenario's own network ([`crate::lab::build`]), in virtual time,
//! deterministic from the lab seed:
//! * `server-down`: the server never answers (from the start);
//! * `server-dies`: qualified, then the server stops answering at [`FAULT_AT`] for good;
//! * `server-restart`: at [`FAULT_AT`] the server is gone for [`RESTART_DOWNTIME`] and comes
//!   back as a fresh core; then pings through the relay;
//! * `nat-reboot`: at [`FAULT_AT`] the client's NAT forgets every mapping; then pings;
//! * `relay-restart[-client-first][-drop-unknown]`: qualified, pings (the relay trusts the
//!   client), the relay is replaced by a fresh core (one that drops datagrams from clients it
//!   has no entry for, with `drop-unknown`), then the native host pings the client and the
//!   client the native host, or the client first ([`RESTART_PINGS`] pings) with
//!   `client-first`; the time from the restart to the first reply is measured;
//! * `loss-10pct-reorder`: 10 % loss each way on the client's NAT link and up to 30 ms of
//!   jitter on the Internet from the start; once qualified (within [`LOSSY_TIME`](crate::scenario::LOSSY_TIME)),
//!   [`LOSSY_PINGS`] pings 10 ms apart (so that they overtake each other);
//! * `same-lan[-hairpin][-discovery-off][-hairpinning-off]`: a second client on the client's
//!   LAN (behind the same NAT); once both qualified the client pings it, and the run counts
//!   what crossed the LAN, what the NAT hairpinned (RFC 4380 §5.2.8 local discovery, RFC
//!   4787 REQ-9), and what the RFC 6081 §5.6 Hairpinning extension did;
//! * `quiet-35s-revalidate[-load-reduction-off]`: a second client behind a NAT of its own;
//!   the client pings it, both stay quiet for [`QUIET_TIME`], the client pings again, and
//!   the run counts the RFC 6081 §5.7 solicitations and the bubbles the server relayed
//!   during the second round.

use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::Duration;

use netsim::packets;
use netsim::sim::{Node, Sender, Sim, SimError};
use netsim::NatDrop;
use teredo::addr::TEREDO_PORT;
use teredo::client::{Event, State};
use teredo::relay::{Relay, TrustPolicy, UnknownPeerPolicy};

use crate::labnet::{lab_relay_with, ping_run, ping_run_every, PING_DATA};
use crate::scenario::{
    scenario_seed, FaultObserved, PathObserved, Scenario, Variant, ECHO_HOST, FAULT_AT,
    LOSSY_PINGS, LOSSY_PING_INTERVAL, PINGS, PING_INTERVAL, PING_WAIT, QUIET_TIME,
    RELAY_RESTART_AT, RESTART_DOWNTIME, RESTART_PINGS, SCENARIO_TIME, SERVER,
};

/// Identifier of the native host's echo requests to the client.
pub const NATIVE_PING_ID: u16 = 0x7e1b;

/// Runs the fault of `s` on `sim` (built by [`crate::lab::build`]) and measures around it.
pub fn run_fault(s: &Scenario, lab_seed: u64, sim: &mut Sim) -> Result<FaultObserved, SimError> {
    let mut o = FaultObserved::default();
    let mut base = counts(sim);
    match s.variant {
        Variant::ServerDown => sim.run_for(SCENARIO_TIME)?,
        Variant::ServerDies => {
            sim.run_for(FAULT_AT)?;
            o.address_before = address(sim);
            base = counts(sim);
            sim.set_server_up(false);
            sim.run_for(SCENARIO_TIME.saturating_sub(FAULT_AT))?;
        }
        Variant::ServerRestart => {
            sim.run_for(FAULT_AT)?;
            o.address_before = address(sim);
            base = counts(sim);
            sim.set_server_up(false);
            sim.run_for(RESTART_DOWNTIME)?;
            sim.restart_server();
            sim.set_server_up(true);
            sim.run_for(SCENARIO_TIME.saturating_sub(FAULT_AT + RESTART_DOWNTIME))?;
            o.outbound = ping_run(sim, ECHO_HOST, PINGS)?;
        }
        Variant::NatReboot => {
            sim.run_for(FAULT_AT)?;
            o.address_before = address(sim);
            base = counts(sim);
            if let Some(nat) = sim.client_mut(0).and_then(|n| n.nat.as_mut()) {
                nat.reboot();
            }
            sim.note(Node::Nat(0), "NAT rebooted (every mapping lost)");
            sim.run_for(SCENARIO_TIME.saturating_sub(FAULT_AT))?;
            o.outbound = ping_run(sim, ECHO_HOST, PINGS)?;
        }
        Variant::RelayRestart {
            client_first,
            drop_unknown,
        } => {
            sim.run_for(RELAY_RESTART_AT)?;
            o.before = ping_run(sim, ECHO_HOST, PINGS)?;
            o.address_before = address(sim);
            base = counts(sim);
            // The restart's own seed, so that every variant's new relay is the same.
            let seed = scenario_seed(lab_seed, "relay-restart/restarted-relay");
            let policy = if drop_unknown {
                UnknownPeerPolicy::Drop
            } else {
                UnknownPeerPolicy::Accept
            };
            let relay: Relay = lab_relay_with(TrustPolicy::Strict, policy, seed, sim.now());
            sim.replace_relay(relay);
            if let Some(n) = sim.client_mut(0) {
                n.echo_responder = true;
            }
            if client_first {
                o.outbound = ping_run(sim, ECHO_HOST, RESTART_PINGS)?;
                o.inbound = native_ping_run(sim, PINGS)?;
                o.resumed_after = o.outbound.as_ref().and_then(|p| p.first_reply);
                o.second.clone_from(&o.inbound);
            } else {
                o.inbound = native_ping_run(sim, PINGS)?;
                o.outbound = ping_run(sim, ECHO_HOST, PINGS)?;
                o.resumed_after = o.inbound.as_ref().and_then(|p| p.first_reply);
                o.second.clone_from(&o.outbound);
            }
            o.relay_bubbles_after = sim.relay().map_or(0, |r| r.counters().bubbles_sent);
        }
        Variant::LossReorder => {
            // Until qualified (a failed qualification is retried after 100 s), then ping
            // at once: over minutes of 10 % loss a refresh may fail too (0.7 % each).
            let end = sim.now() + s.variant.duration();
            while address(sim).is_none() && sim.now() < end {
                sim.run_for(Duration::from_secs(1))?;
            }
            o.outbound = ping_run_every(sim, ECHO_HOST, LOSSY_PINGS, LOSSY_PING_INTERVAL)?;
        }
        Variant::SameLan { .. } => {
            sim.run_for(SCENARIO_TIME)?;
            if let Some(peer) = sim.client(1).and_then(|n| n.client.address()) {
                o.outbound = ping_run(sim, peer, PINGS)?;
            }
            let c = sim.counters();
            (o.lan_unicast, o.lan_multicast, o.hairpinned) =
                (c.lan_unicast, c.lan_multicast, c.hairpinned);
            peer_path(sim, &mut o);
        }
        Variant::Revalidate { .. } => {
            sim.run_for(SCENARIO_TIME)?;
            if let Some(peer) = sim.client(1).and_then(|n| n.client.address()) {
                o.before = ping_run(sim, peer, PINGS)?;
                sim.run_for(QUIET_TIME)?;
                let relayed = sim.counters().server_bubbles_relayed;
                o.outbound = ping_run(sim, peer, PINGS)?;
                o.server_bubbles = sim.counters().server_bubbles_relayed - relayed;
            }
            peer_path(sim, &mut o);
        }
        _ => sim.run_for(s.variant.duration())?,
    }
    let fault_at = match s.variant {
        Variant::ServerDown | Variant::LossReorder => Duration::ZERO,
        Variant::RelayRestart { .. } => RELAY_RESTART_AT,
        _ => FAULT_AT,
    };
    o.fault_at = fault_at;
    let (ras, fails) = counts(sim);
    o.ras_after = ras.saturating_sub(base.0);
    o.failures_after = fails.saturating_sub(base.1);
    o.address_after = address(sim);
    let Some(node) = sim.client(0) else {
        return Ok(o);
    };
    o.offline_at = node
        .events
        .iter()
        .find(|(t, e)| *t >= fault_at && matches!(e, Event::Failed { .. }))
        .map(|(t, _)| *t);
    o.first_lost_rs = first_lost_rs(sim, fault_at);
    let c = node.client.counters();
    o.rs_sent = c.rs_sent;
    o.ra_accepted = c.ra_accepted;
    o.rs_retransmissions = c.rs_sent.saturating_sub(c.ra_accepted);
    o.client_probes = c.bubbles_sent + c.echo_tests_sent;
    if let Some(nat) = node.nat.as_ref() {
        o.nat_lost = nat.counters().dropped(NatDrop::Lost);
        o.nat_mapping = nat.mapping_for(node.local(), SocketAddrV4::new(SERVER, TEREDO_PORT));
    }
    o.reordered = sim.counters().reordered;
    Ok(o)
}

/// Where client 0 sends packets for client 1 and what its extensions did.
fn peer_path(sim: &Sim, o: &mut FaultObserved) {
    let Some(peer) = sim.client(1) else {
        return;
    };
    o.peer_local = Some(peer.local());
    let Some(node) = sim.client(0) else {
        return;
    };
    o.peer_mapping = peer
        .client
        .address()
        .and_then(|a| node.client.peer(&a, sim.now()))
        .and_then(|p| p.mapping);
    let c = node.client.counters();
    o.hairpin_peers_trusted = c.hairpin_peers_trusted;
    o.hairpin_bubbles_sent = c.hairpin_bubbles_sent;
    o.solicitations_sent = c.solicitations_sent;
    o.advertisements_received = c.advertisements_received;
}

/// (RAs accepted, failures) of client 0.
fn counts(sim: &Sim) -> (u64, u64) {
    sim.client(0).map_or((0, 0), |n| {
        let c = n.client.counters();
        (c.ra_accepted, c.failures)
    })
}

fn address(sim: &Sim) -> Option<Ipv6Addr> {
    sim.client(0)
        .filter(|n| n.client.state() == State::Qualified)
        .and_then(|n| n.client.address())
}

/// The first datagram client 0 sent to a server address at or after `from` that no
/// datagram from the server answered before the next one: the RS whose retransmissions
/// ended in failure.
fn first_lost_rs(sim: &Sim, from: Duration) -> Option<Duration> {
    let primary = SocketAddrV4::new(SERVER, TEREDO_PORT);
    let secondary = SocketAddrV4::new(
        std::net::Ipv4Addr::from(u32::from(SERVER).wrapping_add(1)),
        TEREDO_PORT,
    );
    let trace = sim.trace();
    let mut candidate: Option<Duration> = None;
    for e in trace.iter().filter(|e| e.at >= from) {
        match e.sender {
            Sender::Client(0) if e.to == primary || e.to == secondary => {
                candidate.get_or_insert(e.at);
            }
            // An answer: the RSs so far were not lost.
            Sender::Server if candidate.is_some() => candidate = None,
            _ => {}
        }
    }
    candidate
}

/// The native host sends `count` echo requests to client 0's Teredo address,
/// [`PING_INTERVAL`] apart, then waits [`PING_WAIT`]; replies are counted at the native
/// host. `None` when the client has no address.
fn native_ping_run(sim: &mut Sim, count: u16) -> Result<Option<PathObserved>, SimError> {
    let Some(dst) = address(sim) else {
        return Ok(None);
    };
    let replies0 = sim.echo_host().map_or(0, |h| h.echo_replies);
    let replied = |sim: &Sim| sim.echo_host().map_or(0, |h| h.echo_replies) > replies0;
    let mut o = PathObserved::default();
    let start = sim.now();
    for seq in 0..count {
        if let Some(pkt) = packets::echo_request(ECHO_HOST, dst, NATIVE_PING_ID, seq, PING_DATA) {
            o.sent += 1;
            sim.send_native(pkt);
        }
        sim.run_for(PING_INTERVAL)?;
        if o.first_reply.is_none() && replied(sim) {
            o.first_reply = Some(sim.now() - start);
        }
    }
    sim.run_for(PING_WAIT)?;
    if o.first_reply.is_none() && replied(sim) {
        o.first_reply = Some(sim.now() - start);
    }
    let replies = sim.echo_host().map_or(0, |h| h.echo_replies) - replies0;
    o.received = u16::try_from(replies).unwrap_or(u16::MAX);
    Ok(Some(o))
}
