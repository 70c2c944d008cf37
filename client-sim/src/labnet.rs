//! The parts of a lab network that the lab and its faults both use: the relay core and the
//! ping runs that measure a data path (with the drop counters that explain it).

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use netsim::packets;
use netsim::sim::{Sim, SimError};
use netsim::{Nat, NatDrop};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use teredo::relay::{Relay, RelayConfig, TrustPolicy, UnknownPeerPolicy};
use teredo::DropReason;

use crate::scenario::{PathObserved, PING_ID, PING_INTERVAL, PING_WAIT, RELAY_NATIVE};

/// The lab's relay core: `trust`, ICMPv6 errors from [`RELAY_NATIVE`], its RNG seeded with
/// `seed`.
pub fn lab_relay(trust: TrustPolicy, seed: u64, now: Instant) -> Relay {
    lab_relay_with(trust, UnknownPeerPolicy::default(), seed, now)
}

/// [`lab_relay`] with a policy for datagrams from clients it has no entry for.
pub fn lab_relay_with(
    trust: TrustPolicy,
    unknown_peers: UnknownPeerPolicy,
    seed: u64,
    now: Instant,
) -> Relay {
    let cfg = RelayConfig {
        trust,
        unknown_peers,
        icmp_source: Some(RELAY_NATIVE),
        ..RelayConfig::default()
    };
    Relay::new(cfg, ChaCha8Rng::seed_from_u64(seed), now)
}

/// The data of the lab's echo requests (32 bytes).
pub const PING_DATA: &[u8; 32] = b"teredo-lab echo request payload!";

/// Every drop counter of the network that explains a data-path run.
fn drop_counters(sim: &Sim) -> [BTreeMap<&'static str, u64>; 3] {
    let relay = sim.relay().map(|r| {
        DropReason::ALL
            .iter()
            .map(|x| (x.as_str(), r.counters().dropped(*x)))
            .collect()
    });
    let mut nat = BTreeMap::new();
    for n in sim.clients() {
        if let Some(c) = n.nat.as_ref().map(Nat::counters) {
            for x in NatDrop::ALL {
                *nat.entry(x.as_str()).or_default() += c.dropped(*x);
            }
        }
    }
    let client = sim.client(0).map(|n| {
        let c = n.client.counters();
        DropReason::ALL
            .iter()
            .map(|x| (x.as_str(), c.rejected(*x) + c.dropped(*x)))
            .collect()
    });
    [relay.unwrap_or_default(), nat, client.unwrap_or_default()]
}

fn delta(
    before: &BTreeMap<&'static str, u64>,
    after: &BTreeMap<&'static str, u64>,
) -> BTreeMap<&'static str, u64> {
    after
        .iter()
        .map(|(k, v)| (*k, v.saturating_sub(before.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Client 0 sends `count` echo requests to `dst`, [`PING_INTERVAL`] apart, then waits
/// [`PING_WAIT`]; `None` when it has no address.
pub fn ping_run(
    sim: &mut Sim,
    dst: Ipv6Addr,
    count: u16,
) -> Result<Option<PathObserved>, SimError> {
    ping_run_every(sim, dst, count, PING_INTERVAL)
}

/// [`ping_run`] with echo requests `interval` apart.
pub fn ping_run_every(
    sim: &mut Sim,
    dst: Ipv6Addr,
    count: u16,
    interval: Duration,
) -> Result<Option<PathObserved>, SimError> {
    let Some((src, mark)) = sim
        .client(0)
        .and_then(|n| Some((n.client.address()?, n.delivered.len())))
    else {
        return Ok(None);
    };
    let before = drop_counters(sim);
    let mut o = PathObserved::default();
    let start = sim.now();
    for seq in 0..count {
        let Some(pkt) = packets::echo_request(src, dst, PING_ID, seq, PING_DATA) else {
            continue;
        };
        o.sent += 1;
        if sim.send_ipv6(0, &pkt).is_err() {
            o.refused += 1;
        }
        sim.run_for(interval)?;
        if o.first_reply.is_none() && !replies(sim, mark, dst).is_empty() {
            o.first_reply = Some(sim.now() - start);
        }
    }
    sim.run_for(PING_WAIT)?;
    let mut seqs = replies(sim, mark, dst);
    if o.first_reply.is_none() && !seqs.is_empty() {
        o.first_reply = Some(sim.now() - start);
    }
    seqs.sort_unstable();
    seqs.dedup();
    o.received = u16::try_from(seqs.len()).unwrap_or(u16::MAX);
    let after = drop_counters(sim);
    o.relay_drops = delta(&before[0], &after[0]);
    o.nat_drops = delta(&before[1], &after[1]);
    o.client_drops = delta(&before[2], &after[2]);
    Ok(Some(o))
}

/// The sequence numbers of the echo replies from `dst` delivered to client 0 since its
/// `mark`-th delivery.
fn replies(sim: &Sim, mark: usize, dst: Ipv6Addr) -> Vec<u16> {
    sim.client(0)
        .map(|n| n.delivered.get(mark..).unwrap_or_default())
        .unwrap_or_default()
        .iter()
        .filter_map(|(_, p)| match packets::parse(p) {
            Some(packets::Parsed::Echo {
                src,
                reply: true,
                id: PING_ID,
                seq,
                ..
            }) if src == dst => Some(seq),
            _ => None,
        })
        .collect()
}
