//! One peer table shared by every worker: the sans-IO [`Relay`] core, lock-striped.
//!
//! The core owns its peer table together with the state that must stay consistent with it
//! (bubble timers, expiry records, queues, the output queue), so the table cannot simply be
//! a concurrent map the workers poke at. Instead the relay runs `N` independent cores, each
//! behind its own `std::sync::Mutex`, and a peer always lives in the core its Teredo address
//! hashes to: the IPv6 **destination** of a native packet, the IPv6 **source** of a datagram
//! from a client. Both directions of a peer therefore meet in the same core, and workers
//! contend only when they touch the same shard at the same moment. (This is what a
//! `dashmap` does internally — shards of `RwLock<HashMap>` — applied to whole state
//! machines; the lab drives the very same core deterministically.)
//!
//! A lock is held only while the core handles one input and its outputs are copied out:
//! never across an `.await`, never while sending. The shard index uses a keyed hash
//! (`RandomState`, random keys per process) so that nobody can aim every peer at one shard.
//! Each shard gets `max_peers / shards` entries (rounded up) and its share of the global
//! queue cap.

use std::hash::{BuildHasher, RandomState};
use std::net::Ipv6Addr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng as _;
use teredo::relay::{
    shard_key_ipv6, shard_key_udp, Relay, RelayConfig, RelayCounters, RelayGauges,
};

use crate::metrics::{add_counters, add_gauges};

/// A cache-line-aligned cell, so two shards' locks never share a line.
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

/// One shard: a core. All per-peer state (the connectivity-test timing included, through
/// the core's events) lives in the core.
#[derive(Debug)]
pub struct Shard {
    /// The sans-IO relay.
    pub core: Relay,
}

/// The sharded relay. See the module documentation.
#[derive(Debug)]
pub struct ShardedRelay {
    shards: Box<[Padded<Mutex<Shard>>]>,
    hasher: RandomState,
}

impl ShardedRelay {
    /// `shards` cores, each with `config` (already split: see
    /// [`RelayOptions::shard_config`](crate::RelayOptions::shard_config)). With a `seed` the
    /// cores' RNGs are seeded from it (shard `i` from `seed + i`), otherwise from the OS.
    pub fn new(config: RelayConfig, shards: usize, seed: Option<u64>, now: Instant) -> Self {
        let shards = (0..shards.max(1))
            .map(|i| {
                let rng = match seed {
                    Some(s) => StdRng::seed_from_u64(s.wrapping_add(i as u64)),
                    None => StdRng::from_os_rng(),
                };
                Padded(Mutex::new(Shard {
                    core: Relay::new(config, rng, now),
                }))
            })
            .collect();
        Self {
            shards,
            hasher: RandomState::new(),
        }
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: there is at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The shard of the peer with Teredo address `peer`.
    pub fn shard_of(&self, peer: &Ipv6Addr) -> usize {
        let h = self.hasher.hash_one(peer.octets());
        // Multiply-shift: uniform for any shard count, no modulo.
        ((u128::from(h) * self.shards.len() as u128) >> 64) as usize
    }

    /// The shard of a native IPv6 packet (by destination; shard 0 if it has no header).
    pub fn shard_of_ipv6(&self, packet: &[u8]) -> usize {
        shard_key_ipv6(packet).map_or(0, |a| self.shard_of(&a))
    }

    /// The shard of a datagram from a client (by IPv6 source; shard 0 if malformed).
    pub fn shard_of_udp(&self, datagram: &[u8]) -> usize {
        shard_key_udp(datagram).map_or(0, |a| self.shard_of(&a))
    }

    /// Locks shard `i`. A poisoned lock (a panic while handling a packet) is taken over: the
    /// core keeps its invariants between calls.
    pub fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        let m = &self.shards[i.min(self.shards.len() - 1)].0;
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The earliest `poll_timeout` of all shards.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (0..self.len())
            .filter_map(|i| self.lock(i).core.poll_timeout())
            .min()
    }

    /// Counters and gauges summed over the shards.
    pub fn totals(&self) -> (RelayCounters, RelayGauges) {
        let mut c = RelayCounters::default();
        let mut g = RelayGauges::default();
        for i in 0..self.len() {
            let s = self.lock(i);
            add_counters(&mut c, s.core.counters());
            add_gauges(&mut g, &s.core.gauges());
        }
        (c, g)
    }
}

#[cfg(test)]
mod tests {
    use teredo::wire::ipv6::emit_bubble;

    use super::*;

    #[test]
    fn shard_index_is_stable_and_spread() {
        let r = ShardedRelay::new(RelayConfig::default(), 8, Some(1), Instant::now());
        assert_eq!(r.len(), 8);
        let mut seen = [0usize; 8];
        for i in 0..8000u32 {
            let a = Ipv6Addr::from(u128::from(i) << 16 | 0x2001_0000 << 96);
            let s = r.shard_of(&a);
            assert_eq!(s, r.shard_of(&a));
            seen[s] += 1;
        }
        assert!(seen.iter().all(|n| (700..1300).contains(n)), "{seen:?}");
    }

    #[test]
    fn both_directions_of_a_peer_meet_in_one_shard() {
        let r = ShardedRelay::new(RelayConfig::default(), 16, Some(1), Instant::now());
        let peer: Ipv6Addr = "2001:0:c633:6401:0:63bf:39cc:9bf5".parse().unwrap();
        let native: Ipv6Addr = "2001:db8::99".parse().unwrap();
        // Bubbles: IPv6 headers with nothing after them, all the key reads.
        let mut to_peer = [0u8; 40];
        emit_bubble(&mut to_peer, native, peer, 64).unwrap();
        let mut from_peer = [0u8; 40];
        emit_bubble(&mut from_peer, peer, native, 64).unwrap();
        assert_eq!(r.shard_of_ipv6(&to_peer), r.shard_of(&peer));
        assert_eq!(r.shard_of_udp(&from_peer), r.shard_of(&peer));
        // With an origin indication in front.
        let mut oi = vec![0, 0, 0x63, 0xbf, 0x39, 0xcc, 0x9b, 0xf5];
        oi.extend_from_slice(&from_peer);
        assert_eq!(r.shard_of_udp(&oi), r.shard_of(&peer));
        // Garbage goes to shard 0.
        assert_eq!(r.shard_of_udp(&[0, 0, 1]), 0);
        assert_eq!(r.shard_of_ipv6(&[0x60; 10]), 0);
    }
}
