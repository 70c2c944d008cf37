//! The tokio tasks around the sharded core.
//!
//! * Per worker, a **UDP task**: its own `SO_REUSEPORT` socket (the kernel spreads clients
//!   over the workers' sockets by flow hash); receives datagrams from Teredo clients and
//!   writes what the core accepts to the native side.
//! * Per worker, a **native task** reading its own TUN queue (or one task reading the
//!   in-process channel); encapsulates packets for Teredo peers and sends them from the
//!   worker's socket.
//! * One **timer task**: sleeps until the earliest `poll_timeout()` of all shards (or 1 s,
//!   to refresh the gauges), runs `handle_timeout` on the due shards and exports the cores'
//!   counters.
//!
//! Each task owns its buffers, allocated once. On the trusted path nothing is allocated:
//! Teredo→native packets are written to the TUN straight from the `recvmmsg` slots;
//! native→Teredo packets are copied once into the send batch so that one `sendmmsg` carries
//! the whole batch. Other outputs (bubbles, flushed queues, ICMPv6 errors) are written by
//! the core's `poll_output` straight into the task's [`OutBatch`] under the shard lock
//! (bubbles are emitted there directly; data is copied once from the core's arena) and sent
//! after the lock is released (one more copy into the send batch).
//!
//! Batching: after a readiness event the UDP task takes up to [`BATCH`] datagrams in one
//! `recvmmsg`, runs them all through the cores, then writes the IPv6 packets to the native
//! side and sends the other outputs in one `sendmmsg`. The TUN task drains its queue with
//! non-blocking reads (up to [`BATCH`]), then sends everything (data, bubbles, flushed
//! queues) in one `sendmmsg`, runs to one peer of equal-length datagrams as one UDP GSO
//! send when enabled. A task that took a full batch yields before the next one
//! ([`teredo_rt::yield_after_full_batch`]), so under overload the two directions, the timers and the
//! metrics endpoint take turns; the clock is read and the metrics updated once per batch.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd as _;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use teredo::relay::{shard_key_ipv6, shard_key_udp, Event, Handled, RelayCounters};
use teredo::{DropReason, Kind, Local, Output};
use teredo_rt::batch::{RecvBatch, SendBatch, Sent};
use teredo_rt::{yield_after_full_batch, Shutdown, MAX_DATAGRAM};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::Receiver;
use tokio::sync::Notify;

use crate::fast_path::Feed;
use crate::metrics::{Direction, RelayMetrics};
use crate::native::NativeSink;
use crate::shards::{Shard, ShardedRelay};
use crate::tun::TunQueue;

/// Packets handled per readiness event before yielding to the runtime.
pub const BATCH: usize = 64;
/// Arena bytes per [`SendBatch`] entry: room for a full batch of 1280-byte packets with
/// their trailers, and for larger outputs as long as the total fits.
const SEND_ARENA_PER_ENTRY: usize = 2048;

/// A send batch for [`BATCH`] datagrams (at least one of any size).
fn new_send_batch(gso: bool) -> SendBatch {
    SendBatch::new(BATCH, (BATCH * SEND_ARENA_PER_ENTRY).max(MAX_DATAGRAM), gso)
}
/// Longest sleep of the timer task (gauges are refreshed at least this often).
pub const TICK: Duration = Duration::from_secs(1);
/// Pause after an unexpected receive error, so a persistent one cannot spin a core.
const RECV_ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// Rounds of `handle_timeout` + drain per shard and tick (the core stops early when its
/// output queue is full).
const TIMEOUT_ROUNDS: usize = 64;

/// What every task shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) shards: Arc<ShardedRelay>,
    pub(crate) metrics: RelayMetrics,
    /// Wakes the timer task when an input armed a timer earlier than its sleep.
    wake: Notify,
    /// When the timer task will wake (ms since `epoch`; `u64::MAX`: not sleeping on a timer).
    next_wake: AtomicU64,
    epoch: Instant,
    /// Where the core's trust changes go when the XDP fast path runs.
    fast: Option<Feed>,
}

impl Ctx {
    pub(crate) fn new(
        shards: Arc<ShardedRelay>,
        metrics: RelayMetrics,
        epoch: Instant,
        fast: Option<Feed>,
    ) -> Self {
        Self {
            shards,
            metrics,
            wake: Notify::new(),
            next_wake: AtomicU64::new(u64::MAX),
            epoch,
            fast,
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes the core's events: a trusted peer ends a connectivity test, whose duration
    /// (timed by the core) goes to the histogram; trust changes go to the fast path's peer
    /// map (queued in order, applied by its sync task). Called under the shard lock after
    /// every input, so the core's bounded event queue never overflows, and a peer's changes
    /// are queued in the order the core made them.
    pub(crate) fn take_events(&self, shard: &mut Shard) {
        while let Some(e) = shard.core.poll_event() {
            if let Event::PeerTrusted {
                exchange: Some(d), ..
            } = e
            {
                self.metrics.connectivity.observe(d.as_secs_f64());
            }
            if let Some(f) = &self.fast {
                f.event(&e);
            }
        }
    }

    /// After an input that may have armed a timer: wakes the timer task if the shard's next
    /// deadline is earlier than its sleep.
    fn note_deadline(&self, shard: &Shard) {
        if let Some(t) = shard.core.poll_timeout() {
            let ms = self.ms(t);
            if ms < self.next_wake.fetch_min(ms, Ordering::AcqRel) {
                self.wake.notify_one();
            }
        }
    }
}

/// Outputs copied out of a core, sent after the shard lock is released. The core writes
/// each one straight into the arena (no scratch buffer in between).
pub(crate) struct OutBatch {
    /// Initialised bytes, kept at their high-water mark so that it never reallocates once
    /// warmed up; `used` of them hold this batch's outputs.
    arena: Vec<u8>,
    used: usize,
    /// Destination (`None`: the native side), kind, start in the arena, length.
    items: Vec<(Option<SocketAddrV4>, Kind, usize, usize)>,
}

impl OutBatch {
    pub(crate) fn new() -> Self {
        Self {
            arena: vec![0u8; BATCH * SEND_ARENA_PER_ENTRY],
            used: 0,
            items: Vec::with_capacity(BATCH),
        }
    }

    /// Copies every pending output of `shard`'s core.
    pub(crate) fn drain(&mut self, shard: &mut Shard) {
        while let Some(need) = shard.core.next_output_len() {
            let start = self.used;
            if self.arena.len() < start + need {
                self.arena.resize(start + need, 0);
            }
            let Some(o) = shard.core.poll_output(&mut self.arena[start..start + need]) else {
                break;
            };
            let to = match o {
                Output::Udp { to, .. } => Some(to),
                _ => None,
            };
            self.used += o.len();
            self.items.push((to, o.kind(), start, o.len()));
        }
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Moves the UDP outputs into `sb` (sending it first when full) and writes the IPv6
    /// outputs (ICMPv6 errors) to `native`.
    async fn stage(
        &mut self,
        socket: &UdpSocket,
        sb: &mut SendBatch,
        native: &NativeSink,
        ctx: &Ctx,
        stats: &mut Stats,
    ) {
        for &(to, kind, start, len) in &self.items {
            let data = &self.arena[start..start + len];
            match to {
                Some(to) => {
                    let class = if kind.is_bubble() { UNCOUNTED } else { DATA };
                    push_udp(socket, sb, data, to, class, ctx, stats).await;
                }
                None => {
                    if let Err(reason) = native.send(data).await {
                        ctx.metrics.dropped(reason);
                    }
                }
            }
        }
        self.items.clear();
        self.used = 0;
    }

    /// Sends everything: UDP outputs from `socket`, IPv6 outputs (ICMPv6 errors) to
    /// `native`. Data packets (not bubbles) count as relayed in `stats`.
    async fn send(
        &mut self,
        socket: &UdpSocket,
        native: &NativeSink,
        ctx: &Ctx,
        stats: &mut Stats,
    ) {
        for &(to, kind, start, len) in &self.items {
            let data = &self.arena[start..start + len];
            match to {
                Some(to) => {
                    if send_udp(socket, data, to).await {
                        if !kind.is_bubble() {
                            stats.add(Direction::Ipv6ToIpv4, len);
                        }
                    } else {
                        ctx.metrics.dropped(DropReason::SendFailed);
                    }
                }
                None => {
                    if let Err(reason) = native.send(data).await {
                        ctx.metrics.dropped(reason);
                    }
                }
            }
        }
        self.items.clear();
        self.used = 0;
    }
}

/// Sends what `out` holds, drained outside the packet tasks (by the fast path's sync), and
/// counts it.
pub(crate) async fn send_out(
    ctx: &Ctx,
    socket: &UdpSocket,
    native: &NativeSink,
    out: &mut OutBatch,
) {
    if out.is_empty() {
        return;
    }
    let mut stats = Stats::default();
    out.send(socket, native, ctx, &mut stats).await;
    stats.flush(&ctx.metrics);
}

/// [`SendBatch`] class of data packets (counted as relayed when sent).
const DATA: u8 = 0;
/// [`SendBatch`] class of bubbles (not counted as relayed).
const UNCOUNTED: u8 = 1;

/// Adds one datagram to `sb`, sending the batch first if it is full.
async fn push_udp(
    socket: &UdpSocket,
    sb: &mut SendBatch,
    data: &[u8],
    to: SocketAddrV4,
    class: u8,
    ctx: &Ctx,
    stats: &mut Stats,
) {
    let to = SocketAddr::V4(to);
    if !sb.push(data, to, class) {
        flush_udp(socket, sb, ctx, stats).await;
        if !sb.push(data, to, class) {
            // Larger than the whole batch: cannot happen with MAX_DATAGRAM-sized arenas.
            ctx.metrics.dropped(DropReason::Oversized);
        }
    }
}

/// Sends everything in `sb`, waiting for room in the socket buffer if needed; counts data
/// as relayed and failures as `SendFailed`.
async fn flush_udp(socket: &UdpSocket, sb: &mut SendBatch, ctx: &Ctx, stats: &mut Stats) {
    let fd = socket.as_raw_fd();
    while !sb.is_empty() {
        let r = socket.try_io(Interest::WRITABLE, || {
            sb.send(fd, |s: Sent| match s.error {
                None if s.class == DATA => {
                    stats.add_many(Direction::Ipv6ToIpv4, s.datagrams, s.bytes);
                }
                None => {}
                Some(e) => {
                    tracing::debug!(error = %e, datagrams = s.datagrams, "UDP send failed");
                    for _ in 0..s.datagrams {
                        ctx.metrics.dropped(DropReason::SendFailed);
                    }
                }
            })
        });
        match r {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = socket.writable().await {
                    tracing::warn!(error = %e, "UDP socket not writable; batch dropped");
                    sb.clear();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "UDP batch send failed; batch dropped");
                sb.clear();
            }
        }
    }
}

/// Sends one datagram, waiting for room if the socket buffer is full. False on error
/// (logged at debug).
async fn send_udp(socket: &UdpSocket, data: &[u8], to: SocketAddrV4) -> bool {
    let to = SocketAddr::V4(to);
    let r = match socket.try_send_to(data, to) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.send_to(data, to).await,
        r => r,
    };
    match r {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(%to, error = %e, len = data.len(), "UDP send failed");
            false
        }
    }
}

/// Per-batch packet and byte counts, added to the metrics once per batch.
#[derive(Debug, Default)]
struct Stats {
    received: [u64; 2],
    packets: [u64; 2],
    bytes: [u64; 2],
}

impl Stats {
    fn add(&mut self, d: Direction, len: usize) {
        self.add_many(d, 1, len);
    }

    fn add_many(&mut self, d: Direction, packets: usize, bytes: usize) {
        self.packets[d as usize] += packets as u64;
        self.bytes[d as usize] += bytes as u64;
    }

    fn receive(&mut self, d: Direction) {
        self.received[d as usize] += 1;
    }

    fn flush(&mut self, m: &RelayMetrics) {
        for d in [Direction::Ipv4ToIpv6, Direction::Ipv6ToIpv4] {
            let i = d as usize;
            m.received(d, self.received[i]);
            m.relayed(d, self.packets[i], self.bytes[i]);
        }
        *self = Self::default();
    }
}

fn recv_error(e: &io::Error, what: &str) -> bool {
    match e.kind() {
        // ICMP errors reported on the socket and interrupted calls are harmless.
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted => {
            tracing::debug!(error = %e, "{what} receive error");
            false
        }
        _ => {
            tracing::warn!(error = %e, "{what} receive error");
            true
        }
    }
}

/// One worker's UDP side: datagrams from Teredo clients.
pub(crate) async fn udp_task(
    ctx: Arc<Ctx>,
    socket: Arc<UdpSocket>,
    native: NativeSink,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // Slots of `MAX_DATAGRAM + 1` bytes: a datagram that fills one may have been truncated
    // (the pages are only touched as far as datagrams reach).
    let mut rb = RecvBatch::new(BATCH, MAX_DATAGRAM + 1);
    let mut sb = new_send_batch(false);
    let mut writes: Vec<(usize, usize, usize)> = Vec::with_capacity(BATCH);
    let mut out = OutBatch::new();
    let mut stats = Stats::default();
    let mut stop = pin!(shutdown.wait());
    let fd = socket.as_raw_fd();
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            r = socket.readable() => r?,
        }
        let n = match socket.try_io(Interest::READABLE, || rb.recv(fd, BATCH)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                if recv_error(&e, "UDP") {
                    tokio::time::sleep(RECV_ERROR_BACKOFF).await;
                }
                continue;
            }
        };
        stats.received[Direction::Ipv4ToIpv6 as usize] += n as u64;
        let now = teredo_rt::now();
        for i in 0..n {
            let d = rb.get(i);
            if let Some((off, len)) =
                handle_datagram(&ctx, d.data, d.truncated, d.from, now, &mut out)
            {
                writes.push((i, off, len));
            }
        }
        native
            .send_many(
                writes
                    .iter()
                    .map(|&(i, off, len)| &rb.get(i).data[off..off + len]),
                |r| match r {
                    Ok(len) => stats.add(Direction::Ipv4ToIpv6, len),
                    Err(reason) => ctx.metrics.dropped(reason),
                },
            )
            .await;
        writes.clear();
        if !out.is_empty() {
            out.stage(&socket, &mut sb, &native, &ctx, &mut stats).await;
            flush_udp(&socket, &mut sb, &ctx, &mut stats).await;
        }
        stats.flush(&ctx.metrics);
        if n == BATCH {
            yield_after_full_batch().await;
        }
    }
    tracing::debug!("relay UDP task stopped");
    Ok(())
}

/// Runs one datagram through its shard's core. Returns the range of `data` to write to the
/// native side, if any; other outputs are copied to `out`.
fn handle_datagram(
    ctx: &Ctx,
    data: &[u8],
    truncated: bool,
    from: Option<SocketAddr>,
    now: Instant,
    out: &mut OutBatch,
) -> Option<(usize, usize)> {
    if truncated || data.len() > MAX_DATAGRAM {
        tracing::debug!(?from, "oversized datagram");
        ctx.metrics.dropped(DropReason::Oversized);
        return None;
    }
    let Some(SocketAddr::V4(from)) = from else {
        // No IPv4 source address (cannot happen on an IPv4 socket): nothing to check.
        ctx.metrics.dropped(DropReason::NoSourceAddress);
        return None;
    };
    // Only the IPv6 source field is read here; the core parses the datagram.
    let i = shard_key_udp(data).map_or(0, |a| ctx.shards.shard_of(&a));
    let r = {
        let mut s = ctx.shards.lock(i);
        let r = s.core.handle_udp(now, Local::Primary, from, data);
        out.drain(&mut s);
        ctx.take_events(&mut s);
        if !matches!(r, Ok(Handled::Forwarded { flushed: 0, .. })) {
            ctx.note_deadline(&s);
        }
        r
    };
    // Contract of `Handled`: an in-place result is ours to send (after the drained
    // outputs: they go to the UDP side, the in-place packet to the native side).
    r.ok()
        .and_then(|h| h.in_place())
        .map(|ip| (ip.offset, ip.output.len()))
}

/// Handles one native packet: encapsulates it for a trusted peer (added to `sb`) or lets
/// the core queue it and bubble (outputs copied to `out`).
#[allow(clippy::too_many_arguments)]
async fn handle_native(
    ctx: &Ctx,
    packet: &[u8],
    now: Instant,
    socket: &UdpSocket,
    sb: &mut SendBatch,
    out: &mut OutBatch,
    native: &NativeSink,
    stats: &mut Stats,
) {
    let i = shard_key_ipv6(packet).map_or(0, |a| ctx.shards.shard_of(&a));
    let r = {
        let mut s = ctx.shards.lock(i);
        let r = s.core.handle_ipv6(now, packet);
        if !matches!(
            r,
            Ok(Handled::Encapsulated {
                in_place: Some(_),
                ..
            })
        ) {
            ctx.note_deadline(&s);
        }
        out.drain(&mut s);
        ctx.take_events(&mut s);
        r
    };
    // Contract of `Handled`: an in-place result is ours to send. The core only answers in
    // place when nothing was pending, so `out` is empty and the order to the peer is kept.
    if let Some(ip) = r.ok().and_then(|h| h.in_place()) {
        if let Output::Udp { to, .. } = ip.output {
            push_udp(socket, sb, ip.bytes(packet), to, DATA, ctx, stats).await;
        }
    }
    if !out.is_empty() {
        out.stage(socket, sb, native, ctx, stats).await;
    }
}

/// One worker's TUN queue: packets the kernel routed to 2001::/32.
pub(crate) async fn tun_task(
    ctx: Arc<Ctx>,
    queue: Arc<TunQueue>,
    socket: Arc<UdpSocket>,
    native: NativeSink,
    gso: bool,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1].into_boxed_slice();
    let mut sb = new_send_batch(gso);
    let mut out = OutBatch::new();
    let mut stats = Stats::default();
    let mut stop = pin!(shutdown.wait());
    loop {
        let mut guard = tokio::select! {
            biased;
            () = &mut stop => break,
            r = queue.readable() => r?,
        };
        let now = teredo_rt::now();
        let mut full = true;
        for _ in 0..BATCH {
            let n = match guard.try_io(|_| queue.try_read(&mut buf)) {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    if recv_error(&e, "TUN") {
                        tokio::time::sleep(RECV_ERROR_BACKOFF).await;
                    }
                    full = false;
                    break;
                }
                // Would block: readiness cleared, wait for the next event.
                Err(_) => {
                    full = false;
                    break;
                }
            };
            stats.receive(Direction::Ipv6ToIpv4);
            if n >= buf.len() {
                ctx.metrics.dropped(DropReason::Oversized);
                continue;
            }
            handle_native(
                &ctx,
                &buf[..n],
                now,
                &socket,
                &mut sb,
                &mut out,
                &native,
                &mut stats,
            )
            .await;
        }
        drop(guard);
        flush_udp(&socket, &mut sb, &ctx, &mut stats).await;
        stats.flush(&ctx.metrics);
        if full {
            yield_after_full_batch().await;
        }
    }
    tracing::debug!("relay TUN task stopped");
    Ok(())
}

/// The in-process native side: packets injected by the lab or a test.
pub(crate) async fn channel_task(
    ctx: Arc<Ctx>,
    mut rx: Receiver<Vec<u8>>,
    socket: Arc<UdpSocket>,
    native: NativeSink,
    gso: bool,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut sb = new_send_batch(gso);
    let mut out = OutBatch::new();
    let mut stats = Stats::default();
    let mut stop = pin!(shutdown.wait());
    loop {
        let first = tokio::select! {
            biased;
            () = &mut stop => break,
            p = rx.recv() => match p {
                Some(p) => p,
                // Every sender is gone: nothing more will arrive, but the UDP side goes on.
                None => { stop.as_mut().await; break }
            },
        };
        let now = teredo_rt::now();
        let mut next = Some(first);
        let mut n = 0;
        while let Some(packet) = next.take() {
            stats.receive(Direction::Ipv6ToIpv4);
            handle_native(
                &ctx, &packet, now, &socket, &mut sb, &mut out, &native, &mut stats,
            )
            .await;
            n += 1;
            if n < BATCH {
                next = rx.try_recv().ok();
            }
        }
        flush_udp(&socket, &mut sb, &ctx, &mut stats).await;
        stats.flush(&ctx.metrics);
    }
    tracing::debug!("relay native channel task stopped");
    Ok(())
}

/// Bubble retransmissions, give-ups, expiry; metrics export.
pub(crate) async fn timer_task(
    ctx: Arc<Ctx>,
    socket: Arc<UdpSocket>,
    native: NativeSink,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut out = OutBatch::new();
    let mut stats = Stats::default();
    let mut last = RelayCounters::default();
    let mut stop = pin!(shutdown.wait());
    loop {
        let now = teredo_rt::now();
        let cap = now + TICK;
        // Never in the past: a shard whose timer cannot progress must not spin this task.
        let deadline = ctx
            .shards
            .poll_timeout()
            .map_or(cap, |t| t.min(cap))
            .max(now + Duration::from_millis(1));
        ctx.next_wake.store(ctx.ms(deadline), Ordering::Release);
        let stopping = tokio::select! {
            biased;
            () = &mut stop => true,
            () = tokio::time::sleep_until(deadline.into()) => false,
            () = ctx.wake.notified() => false,
        };
        ctx.next_wake.store(u64::MAX, Ordering::Release);
        let now = teredo_rt::now();
        if !stopping {
            for i in 0..ctx.shards.len() {
                for _ in 0..TIMEOUT_ROUNDS {
                    {
                        let mut s = ctx.shards.lock(i);
                        if s.core.poll_timeout().is_none_or(|t| t > now) {
                            break;
                        }
                        s.core.handle_timeout(now);
                        out.drain(&mut s);
                        ctx.take_events(&mut s);
                    }
                    if out.is_empty() {
                        break;
                    }
                    out.send(&socket, &native, &ctx, &mut stats).await;
                }
            }
            stats.flush(&ctx.metrics);
        }
        let (counters, gauges) = ctx.shards.totals();
        ctx.metrics.export_core(&last, &counters, gauges);
        last = counters;
        if stopping {
            break;
        }
    }
    tracing::debug!("relay timer task stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_flush_into_the_metrics_once() {
        let registry = prometheus::Registry::new();
        let m = RelayMetrics::register(&registry).unwrap();
        let mut s = Stats::default();
        s.add(Direction::Ipv4ToIpv6, 100);
        s.add(Direction::Ipv4ToIpv6, 50);
        s.flush(&m);
        s.flush(&m);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(text.contains("teredo_relay_packets_total{direction=\"ipv4_to_ipv6\"} 2\n"));
        assert!(text.contains("teredo_relay_bytes_total{direction=\"ipv4_to_ipv6\"} 150\n"));
    }
}
