//! The sync task: keeps the program's peer map and the cores in step.
//!
//! * Queued map changes ([`Op`]) are applied as they come, in order, a batch per wake-up:
//!   the map's syscalls stay off the packet path. An added peer gets `last_rx = last_used =
//!   now` (the core just heard from it).
//! * Once a [`TICK`]: if the cores lost events or a change could not be queued, the map is
//!   rebuilt from the cores' trusted peers; then the map is read and every entry whose times
//!   the program moved is handed to the core's `refresh_peer` (which ignores stale ones:
//!   an entry whose peer meanwhile lost its trust or moved changes nothing). What that
//!   releases (a bubble exchange the fast path's traffic answered) is sent from here.
//!
//! The map's times are `CLOCK_MONOTONIC` nanoseconds, the cores' `Instant`s; each sync
//! pairs the two clocks once ([`Clock`]), so the conversion is exact to the microsecond.

use std::collections::{HashMap, HashSet};
use std::net::Ipv6Addr;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use teredo::relay::Refresh;
use teredo_fastpath::{monotonic_ns, PeerEntry};
use teredo_rt::Shutdown;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::{Op, Shared, SyncError};
use crate::native::NativeSink;
use crate::worker::{send_out, Ctx, OutBatch, BATCH, TICK};

/// One reading of both clocks.
#[derive(Clone, Copy, Debug)]
struct Clock {
    now: Instant,
    ns: u64,
}

impl Clock {
    fn now() -> Self {
        Self {
            now: teredo_rt::now(),
            ns: monotonic_ns(),
        }
    }

    /// The instant of a map time (`None` if too old to represent; never after now).
    fn instant(&self, ns: u64) -> Option<Instant> {
        self.now
            .checked_sub(Duration::from_nanos(self.ns.saturating_sub(ns)))
    }

    /// The map time of an instant (never after now).
    fn ns(&self, t: Instant) -> u64 {
        let ago =
            u64::try_from(self.now.saturating_duration_since(t).as_nanos()).unwrap_or(u64::MAX);
        self.ns.saturating_sub(ago)
    }
}

/// The sync task's own state.
struct Sync {
    shared: Arc<Shared>,
    /// The map times last handed to (or set from) the core, per peer: only moved ones are
    /// handed over again.
    seen: HashMap<Ipv6Addr, (u64, u64)>,
    /// The cores' lost events at the last check.
    lost: u64,
    out: OutBatch,
}

/// Applies queued changes and syncs once a [`TICK`] until `shutdown`; sends what a sync
/// releases from `socket` (and ICMPv6 errors to `native`).
pub(crate) async fn sync_task(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Op>,
    ctx: Arc<Ctx>,
    socket: Arc<UdpSocket>,
    native: NativeSink,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut sync = Sync {
        shared,
        seen: HashMap::new(),
        lost: 0,
        out: OutBatch::new(),
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stop = pin!(shutdown.wait());
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    // Every feed is gone (cannot happen while the workers run).
                    stop.as_mut().await;
                    break;
                }
                sync.apply(&batch);
                batch.clear();
            }
            _ = tick.tick() => {
                sync.tick(&ctx, &mut rx);
                send_out(&ctx, &socket, &native, &mut sync.out).await;
            }
        }
    }
    tracing::debug!("relay fast path sync task stopped");
    Ok(())
}

impl Sync {
    /// Applies changes in order.
    fn apply(&mut self, ops: &[Op]) {
        let mut s = self.shared.state();
        let Some(p) = s.program.as_mut() else {
            return;
        };
        let now = monotonic_ns();
        for op in ops {
            match *op {
                Op::Upsert(peer, mapping) => {
                    let entry = PeerEntry {
                        mapping,
                        last_rx_ns: now,
                        last_used_ns: now,
                    };
                    match p.upsert_peer(peer, entry) {
                        Ok(()) => {
                            self.seen.insert(peer, (now, now));
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "fast path: peer stays on the slow path");
                            self.shared.metrics.error(SyncError::Upsert);
                        }
                    }
                }
                Op::Remove(peer) => {
                    self.seen.remove(&peer);
                    if let Err(e) = p.remove_peer(&peer) {
                        tracing::debug!(%peer, error = %e, "fast path: cannot remove peer");
                        self.shared.metrics.error(SyncError::Remove);
                    }
                }
            }
        }
    }

    fn tick(&mut self, ctx: &Ctx, rx: &mut mpsc::Receiver<Op>) {
        let lost: u64 = (0..ctx.shards.len())
            .map(|i| ctx.shards.lock(i).core.events_lost())
            .sum();
        let mut resync = self.shared.resync.swap(false, Ordering::AcqRel);
        if lost > self.lost {
            self.shared
                .metrics
                .errors_n(SyncError::EventsLost, lost - self.lost);
            self.lost = lost;
            resync = true;
        }
        if resync {
            self.resync(ctx, rx);
        }
        self.refresh(ctx);
    }

    /// Rebuilds the map from the cores' trusted peers. Queued changes are older than the
    /// cores' state read after them, so they are dropped first; changes made after that are
    /// queued behind and applied on top.
    fn resync(&mut self, ctx: &Ctx, rx: &mut mpsc::Receiver<Op>) {
        while rx.try_recv().is_ok() {}
        let clock = Clock::now();
        let mut peers = Vec::new();
        for i in 0..ctx.shards.len() {
            peers.extend(ctx.shards.lock(i).core.trusted_peers());
        }
        let mut s = self.shared.state();
        let Some(p) = s.program.as_mut() else {
            return;
        };
        if let Err(e) = p.clear_peers() {
            tracing::debug!(error = %e, "fast path: cannot clear the peer map");
            self.shared.metrics.error(SyncError::Remove);
        }
        self.seen.clear();
        for t in &peers {
            let entry = PeerEntry {
                mapping: t.mapping,
                last_rx_ns: clock.ns(t.last_rx),
                last_used_ns: clock.ns(t.last_used),
            };
            match p.upsert_peer(t.addr, entry) {
                Ok(()) => {
                    self.seen
                        .insert(t.addr, (entry.last_rx_ns, entry.last_used_ns));
                }
                Err(_) => self.shared.metrics.error(SyncError::Upsert),
            }
        }
        tracing::info!(peers = peers.len(), "relay fast path peer map rebuilt");
    }

    /// Hands the times the program moved to the cores.
    fn refresh(&mut self, ctx: &Ctx) {
        let snapshot = {
            let s = self.shared.state();
            match &s.program {
                Some(p) => p.peers(),
                None => return,
            }
        };
        self.shared
            .metrics
            .peers
            .set(i64::try_from(snapshot.len()).unwrap_or(i64::MAX));
        let present: HashSet<Ipv6Addr> = snapshot.iter().map(|(a, _)| *a).collect();
        self.seen.retain(|a, _| present.contains(a));
        let clock = Clock::now();
        for (addr, e) in snapshot {
            let stamps = (e.last_rx_ns, e.last_used_ns);
            if self.seen.insert(addr, stamps) == Some(stamps) {
                continue;
            }
            let (Some(rx), Some(used)) =
                (clock.instant(e.last_rx_ns), clock.instant(e.last_used_ns))
            else {
                continue;
            };
            let mut s = ctx.shards.lock(ctx.shards.shard_of(&addr));
            let r = s.core.refresh_peer(clock.now, &addr, e.mapping, rx, used);
            if r == Refresh::Answered {
                self.out.drain(&mut s);
            }
            ctx.take_events(&mut s);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use teredo::addr::TeredoAddr;
    use teredo::relay::RelayConfig;
    use teredo::wire::ipv6::Echo;
    use teredo::Local;
    use teredo_fastpath::{RelayFastPathConfig, XdpRelay};

    use super::*;
    use crate::fast_path::FastPath;
    use crate::metrics::RelayMetrics;
    use crate::shards::ShardedRelay;

    const MAPPING: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 10), 40000);

    fn client() -> Ipv6Addr {
        TeredoAddr {
            server: Ipv4Addr::new(198, 51, 100, 1),
            flags: 0,
            mapped: MAPPING,
        }
        .to_ipv6()
    }

    /// An echo request from the client to a native host: a datagram the core accepts from
    /// the client's mapping (creating the peer, trusted).
    fn datagram() -> Vec<u8> {
        let mut v = vec![0u8; 56];
        Echo {
            reply: false,
            id: 1,
            seq: 1,
            data: &[0; 8],
        }
        .emit(&mut v, client(), "2001:db8::99".parse().unwrap(), 64)
        .unwrap();
        v
    }

    /// The sync against a real (loaded, unattached) program: core events fill the map, the
    /// program's times reach the core, a resync rebuilds the map, expiry empties it.
    #[test]
    fn map_and_cores_stay_in_step() {
        if !testkit::root_or_skip("fast_path::sync::map_and_cores_stay_in_step") {
            return;
        }
        if let Err(e) = teredo_fastpath::built() {
            assert!(!testkit::in_ci(), "needs the XDP program: {e}");
            eprintln!("\n*** SKIPPED: needs the XDP program ({e}) ***");
            return;
        }
        let cfg = RelayConfig::default();
        let program = XdpRelay::load(&RelayFastPathConfig {
            relay: "198.51.100.30:3545".parse().unwrap(),
            tun_mtu: 1280,
            validity: cfg.validity,
            max_peers: 64,
        })
        .unwrap();
        let mut fast = FastPath::with_program(program).unwrap();
        let mut rx = fast.take_receiver().unwrap();
        let t0 = teredo_rt::now();
        let shards = Arc::new(ShardedRelay::new(
            RelayConfig {
                peer_refreshed_events: true,
                ..cfg
            },
            2,
            Some(1),
            t0,
        ));
        let metrics = RelayMetrics::register(&prometheus::Registry::new()).unwrap();
        let ctx = Ctx::new(Arc::clone(&shards), metrics, t0, Some(fast.feed()));
        let mut sync = Sync {
            shared: fast.shared(),
            seen: HashMap::new(),
            lost: 0,
            out: OutBatch::new(),
        };
        let peer = client();
        let i = shards.shard_of(&peer);
        let map = |fast: &FastPath| {
            let s = fast.shared.state();
            s.program.as_ref().unwrap().peers()
        };
        let drain = |rx: &mut mpsc::Receiver<Op>| {
            std::iter::from_fn(|| rx.try_recv().ok()).collect::<Vec<_>>()
        };

        // Trusted in the core: queued, then in the map with fresh times.
        {
            let mut s = shards.lock(i);
            let r = s.core.handle_udp(t0, Local::Primary, MAPPING, &datagram());
            assert!(r.is_ok(), "{r:?}");
            ctx.take_events(&mut s);
        }
        let ops = drain(&mut rx);
        assert_eq!(ops, [Op::Upsert(peer, MAPPING)]);
        let before = monotonic_ns();
        sync.apply(&ops);
        let m = map(&fast);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].0, m[0].1.mapping), (peer, MAPPING));
        assert!(m[0].1.last_rx_ns >= before && m[0].1.last_rx_ns == m[0].1.last_used_ns);

        // The program forwarded for the peer (times moved): the sync hands them over.
        let later = monotonic_ns() + 5_000_000_000;
        let seen_by_xdp = PeerEntry {
            mapping: MAPPING,
            last_rx_ns: later,
            last_used_ns: later,
        };
        fast.shared
            .state()
            .program
            .as_mut()
            .unwrap()
            .upsert_peer(peer, seen_by_xdp)
            .unwrap();
        // The core keeps milliseconds.
        std::thread::sleep(Duration::from_millis(20));
        sync.tick(&ctx, &mut rx);
        let core_rx = shards.lock(i).core.trusted_peers().next().unwrap().last_rx;
        // In the future of the sync's clock: clamped to the core's now, which moved.
        assert!(
            core_rx >= t0 + Duration::from_millis(20),
            "{core_rx:?} {t0:?}"
        );
        assert_eq!(fast.shared.metrics.peers.get(), 1);
        // Unchanged times are not handed over again (nothing to observe but no panic).
        sync.tick(&ctx, &mut rx);

        // A lost change: the map is rebuilt from the cores.
        fast.shared
            .state()
            .program
            .as_mut()
            .unwrap()
            .clear_peers()
            .unwrap();
        fast.shared.resync.store(true, Ordering::Release);
        sync.tick(&ctx, &mut rx);
        let m = map(&fast);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].1.mapping, MAPPING);

        // Expired in the core: removed from the map.
        {
            let mut s = shards.lock(i);
            s.core.handle_timeout(t0 + Duration::from_secs(600));
            ctx.take_events(&mut s);
        }
        let ops = drain(&mut rx);
        assert_eq!(ops, [Op::Remove(peer)]);
        sync.apply(&ops);
        assert!(map(&fast).is_empty());
        sync.tick(&ctx, &mut rx);
        assert_eq!(fast.shared.metrics.peers.get(), 0);
        fast.detach();
    }

    #[test]
    fn clock_conversions_round_trip_and_never_pass_now() {
        let c = Clock::now();
        let t = c.now - Duration::from_millis(1500);
        let ns = c.ns(t);
        assert_eq!(c.ns - ns, 1_500_000_000);
        assert_eq!(c.instant(ns), Some(t));
        // Later than the reading (a stamp the program wrote meanwhile): now.
        assert_eq!(c.instant(c.ns + 5), Some(c.now));
        assert_eq!(c.ns(c.now + Duration::from_secs(1)), c.ns);
    }
}
