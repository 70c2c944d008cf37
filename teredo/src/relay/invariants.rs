//! Internal consistency checks, used by the tests and the fuzz harness.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Checks the internal consistency of the peer table: slab and free list, index,
/// exactly one expiry record per live peer, exchanges and their back links, the timer
/// heap, the counts.
pub(crate) fn check_invariants(r: &Relay) -> Result<(), String> {
    let live: Vec<u32> = (0..r.peers.len() as u32)
        .filter(|&i| r.peers[i as usize].live())
        .collect();
    if live.len() != r.live {
        return Err(format!("live {} != {}", live.len(), r.live));
    }
    let mut free = 0;
    let mut f = r.free_peer;
    while f != NONE {
        let p = r.peers.get(f as usize).ok_or("free list out of the slab")?;
        if p.live() {
            return Err(format!("live slot {f} in the free list"));
        }
        free += 1;
        f = p.xchg;
        if free > r.peers.len() {
            return Err("free list loops".into());
        }
    }
    if free + r.live != r.peers.len() {
        return Err(format!(
            "{free} free + {} live != {}",
            r.live,
            r.peers.len()
        ));
    }
    if r.index.len != r.live || r.index.len * 4 > r.index.buckets.len() * 3 {
        return Err(format!(
            "index {} of {}",
            r.index.len,
            r.index.buckets.len()
        ));
    }
    let occupied = r.index.buckets.iter().filter(|b| b.slot != NONE).count();
    if occupied != r.live {
        return Err(format!("{occupied} buckets for {} peers", r.live));
    }
    let mut records = vec![0usize; r.peers.len()];
    for &(_, s) in r.lru.iter().flatten() {
        *records
            .get_mut(s as usize)
            .ok_or(format!("record for slot {s}"))? += 1;
    }
    let (mut trusted, mut in_exchange) = (0, 0);
    for &i in &live {
        let p = &r.peers[i as usize];
        if r.find(&p.addr) != Some(i) {
            return Err(format!("{} not found at {i}", p.addr));
        }
        if records[i as usize] != 1 {
            return Err(format!("{} records for slot {i}", records[i as usize]));
        }
        trusted += usize::from(p.trusted());
        let bubbling_or_failed = p.phase != PeerPhase::Idle;
        if bubbling_or_failed != (p.xchg != NONE) {
            return Err(format!("slot {i}: {:?} with exchange {}", p.phase, p.xchg));
        }
        if let Some(x) = r.exchanges.get(p.xchg as usize) {
            in_exchange += 1;
            if x.peer != i {
                return Err(format!("exchange {} belongs to {} not {i}", p.xchg, x.peer));
            }
            // Bubbling ⟺ a timer runs.
            if (p.phase == PeerPhase::Bubbling) != (x.timer != NONE) {
                return Err(format!("slot {i}: {:?} with timer {}", p.phase, x.timer));
            }
        }
    }
    if trusted != r.trusted {
        return Err(format!("trusted {trusted} != {}", r.trusted));
    }
    if in_exchange + r.free_exchanges.len() != r.exchanges.len() {
        return Err(format!(
            "{in_exchange} exchanges + {} free != {}",
            r.free_exchanges.len(),
            r.exchanges.len()
        ));
    }
    for &s in &r.free_exchanges {
        let x = &r.exchanges[s as usize];
        if x.peer != NONE || x.timer != NONE || x.queue != NO_QUEUE {
            return Err(format!("free exchange {s}: {x:?}"));
        }
    }
    check_heap(&r.timers, &r.exchanges)?;
    if r.timers.heap.len() > in_exchange {
        return Err("more timers than exchanges".into());
    }
    Ok(())
}

pub(super) fn check_heap(t: &Timers, xs: &[Exchange]) -> Result<(), String> {
    for (pos, e) in t.heap.iter().enumerate() {
        if pos > 0 && t.heap[(pos - 1) / 2] > *e {
            return Err(format!("heap order at {pos}"));
        }
        if xs.get(e.1 as usize).map(|x| x.timer) != Some(pos as u32) {
            return Err(format!("timer of exchange {} is not at {pos}", e.1));
        }
    }
    let armed = xs.iter().filter(|x| x.timer != NONE).count();
    if armed != t.heap.len() {
        return Err(format!("{armed} armed, {} in the heap", t.heap.len()));
    }
    Ok(())
}
