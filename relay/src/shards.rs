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

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::Ipv6Addr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng as _;
use teredo::relay::{Handled, InPlace, Relay, RelayConfig, RelayCounters, RelayGauges};
use teredo::wire::TeredoPacket;

use crate::metrics::{add_counters, add_gauges};

/// Pending connectivity tests remembered per shard (for the duration histogram); beyond
/// this, new ones are not timed.
pub const MAX_TIMED_PER_SHARD: usize = 4096;
/// A connectivity test still untimed after this long is forgotten (the core gives up after
/// four bubbles 2 s apart).
pub const TIMED_TEST_EXPIRY: Duration = Duration::from_secs(30);

/// A cache-line-aligned cell, so two shards' locks never share a line.
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

/// One shard: a core and the driver's per-peer bookkeeping that must follow it.
#[derive(Debug)]
pub struct Shard {
    /// The sans-IO relay.
    pub core: Relay,
    /// When each peer's current bubble exchange started (first queued packet), to time it.
    started: HashMap<Ipv6Addr, Instant>,
}

impl Shard {
    /// Notes the result of a native packet: the start of a connectivity test.
    pub fn note_transmit(&mut self, now: Instant, dst: Ipv6Addr, r: &InPlace) {
        if matches!(r, InPlace::Done(Handled::Queued { .. }))
            && self.started.len() < MAX_TIMED_PER_SHARD
        {
            self.started.entry(dst).or_insert(now);
        }
    }

    /// Notes the result of a datagram from `src`: a peer that became trusted ends its test.
    /// Returns the test's duration.
    pub fn note_receive(&mut self, now: Instant, src: Ipv6Addr, r: &InPlace) -> Option<Duration> {
        if self.started.is_empty() {
            return None;
        }
        let trusted = matches!(
            r,
            InPlace::Ipv6 { .. }
                | InPlace::Done(Handled::Bubble { .. } | Handled::Forwarded { .. })
        );
        if !trusted {
            return None;
        }
        let started = self.started.remove(&src)?;
        Some(now.saturating_duration_since(started))
    }

    /// Forgets tests that never ended.
    fn expire_tests(&mut self, now: Instant) {
        if !self.started.is_empty() {
            self.started
                .retain(|_, t| now.saturating_duration_since(*t) < TIMED_TEST_EXPIRY);
        }
    }
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
                    started: HashMap::new(),
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
        ipv6_dst(packet).map_or(0, |a| self.shard_of(&a))
    }

    /// The shard of a datagram from a client (by IPv6 source; shard 0 if malformed).
    pub fn shard_of_udp(&self, datagram: &[u8]) -> usize {
        udp_ipv6_src(datagram).map_or(0, |a| self.shard_of(&a))
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

    /// Counters and gauges summed over the shards; also forgets stale connectivity tests.
    pub fn totals(&self, now: Instant) -> (RelayCounters, RelayGauges) {
        let mut c = RelayCounters::default();
        let mut g = RelayGauges::default();
        for i in 0..self.len() {
            let mut s = self.lock(i);
            s.expire_tests(now);
            add_counters(&mut c, s.core.counters());
            add_gauges(&mut g, &s.core.gauges());
        }
        (c, g)
    }
}

/// The destination of an IPv6 packet.
pub fn ipv6_dst(packet: &[u8]) -> Option<Ipv6Addr> {
    let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

/// The IPv6 source inside a Teredo datagram (after any authentication header and origin
/// indication).
pub fn udp_ipv6_src(datagram: &[u8]) -> Option<Ipv6Addr> {
    // Common case: the datagram starts with the IPv6 header.
    if datagram.first().is_some_and(|b| b >> 4 == 6) {
        let b: [u8; 16] = datagram.get(8..24)?.try_into().ok()?;
        return Some(Ipv6Addr::from(b));
    }
    TeredoPacket::parse(datagram).ok().map(|p| p.src())
}

#[cfg(test)]
mod tests {
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
        let mut to_peer = [0u8; 40];
        to_peer[0] = 0x60;
        to_peer[8..24].copy_from_slice(&native.octets());
        to_peer[24..40].copy_from_slice(&peer.octets());
        let mut from_peer = [0u8; 40];
        from_peer[0] = 0x60;
        from_peer[8..24].copy_from_slice(&peer.octets());
        from_peer[24..40].copy_from_slice(&native.octets());
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
