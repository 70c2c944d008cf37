//! The `mmsg` engine's generator for `--ceiling`: every client in one dedicated thread
//! (pinned with `--cpu`), one socket per client up to [`SOCKETS`] (then shared), and
//!
//! * one token bucket for the total rate, its tokens dealt round-robin to the clients
//!   ([`deal`]), so that at high rates each client sends a run at a time;
//! * a client's run is its payload template stamped in place ([`stamp_run`]) and sent with
//!   one `sendmmsg` — one `UDP_SEGMENT` send where the kernel takes it;
//! * answers read with `recvmmsg` from the sockets epoll reports ready, each with the
//!   kernel's receive time (`SO_TIMESTAMPNS`): the RTT is kernel arrival − stamped send
//!   time, both CLOCK_REALTIME, so our own queueing before the read does not count;
//! * counters and histograms updated once per batch, not per packet.
//!
//! The coordinator drives it through the same [`Control`](super::worker::Control) channel and reads the same
//! [`Shared`] counters as the tokio tasks. Per client it keeps a sequence
//! number and a [`SeqTracker`] (64 bytes with alignment).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use teredo_rt::batch::{RecvBatch, SendBatch};
use teredo_rt::{bind_udp_std, Shutdown, UdpOptions};

use super::engine::pin_current_thread;
use super::mmsg_pace::{
    batches, count_send_errors, count_sent, epoll, epoll_wait, events, realtime_ns, rt_epoch,
    watch, Pace, Step, RECV_BATCH,
};
use super::pacing::TokenBucket;
use super::payload::{filler, Stamp};
use super::seq::{SeqTracker, Verdict};
use super::worker::Shared;

/// Deals `owed` packets round-robin over `n` clients from `*cursor`: each client gets
/// `owed / n` and the next `owed % n` one more; calls `f(client, count)` for every client
/// with a count, and moves the cursor past the ones that got the extra packet.
pub fn deal(owed: u32, n: u32, cursor: &mut u32, mut f: impl FnMut(u32, u32)) {
    if n == 0 || owed == 0 {
        return;
    }
    let (base, extra) = (owed / n, owed % n);
    let touched = if base > 0 { n } else { extra };
    for j in 0..touched {
        let k = base + u32::from(j < extra);
        f((*cursor + j) % n, k);
    }
    *cursor = (*cursor + extra) % n;
}

/// Stamps `count` packets of client `client` into `send` from the `template` payload
/// (sequence numbers from `*seq`, all with send time `sent_ns`), counting them in
/// `*pending`; `flush` is called whenever the batch is full. Returns how many were queued.
#[allow(clippy::too_many_arguments)]
pub fn stamp_run(
    template: &mut [u8],
    stamp: Stamp,
    count: u32,
    seq: &mut u32,
    to: SocketAddr,
    send: &mut SendBatch,
    pending: &mut u32,
    mut flush: impl FnMut(&mut SendBatch, &mut u32),
) -> u32 {
    let mut queued = 0;
    for _ in 0..count {
        let s = Stamp { seq: *seq, ..stamp };
        if !s.write(template) {
            break;
        }
        if !send.push(template, to, 0) {
            flush(send, pending);
            if !send.push(template, to, 0) {
                break;
            }
        }
        *seq = seq.wrapping_add(1);
        *pending += 1;
        queued += 1;
    }
    queued
}

/// Most sockets the engine opens: clients beyond share them (in consecutive blocks), since the reflector does not tell clients apart by port and a process
/// may not hold 100 000 descriptors; the stamp in each answer says whose it is.
pub const SOCKETS: u32 = 1024;

/// One simulated client of the engine (its socket: [`clients_socket`]).
struct Client {
    seq: u32,
    tracker: SeqTracker,
}

/// The running generator thread.
pub struct Generator {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Generator {
    /// Starts the thread: it opens the `clients` sockets (each counted as qualified, or as
    /// `error`), then follows the coordinator's orders until [`Control::Stop`](super::worker::Control::Stop) or
    /// `shutdown`.
    pub fn start(
        shared: Arc<Shared>,
        shutdown: Shutdown,
        clients: u32,
        echo: SocketAddrV4,
        cpu: Option<usize>,
        gro: bool,
    ) -> anyhow::Result<Self> {
        let thread = std::thread::Builder::new()
            .name("load-mmsg".into())
            .spawn(move || {
                if let Some(c) = cpu {
                    if let Err(e) = pin_current_thread(c) {
                        tracing::warn!(error = %e, "generator not pinned");
                    }
                }
                if let Err(e) = run(&shared, &shutdown, (clients, gro), echo) {
                    tracing::warn!(error = %e, "mmsg generator stopped");
                }
            })?;
        Ok(Self {
            thread: Some(thread),
        })
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens the sockets (at most [`SOCKETS`]) and sets up the clients, recording each
/// client's outcome (`error` for all when no socket opens).
fn open_clients(shared: &Shared, n: u32, gro: bool, ep: &OwnedFd) -> (Vec<UdpSocket>, Vec<Client>) {
    // 64 MiB of buffers over the sockets, as the tokio engine spreads it over its clients.
    let buffer = shared
        .setup
        .socket_buffer
        .max((64 << 20) / n.clamp(1, SOCKETS) as usize);
    let opts = UdpOptions {
        recv_buffer_size: Some(buffer),
        send_buffer_size: Some(buffer),
        ..UdpOptions::default()
    };
    let mut sockets = Vec::new();
    for _ in 0..n.min(SOCKETS) {
        let opened = bind_udp_std(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), &opts).and_then(|s| {
            // Answers to a run may come back as one buffer (GRO, optional).
            watch(ep, s.as_raw_fd(), sockets.len(), gro)?;
            Ok(s)
        });
        match opened {
            Ok(s) => sockets.push(s),
            Err(e) => tracing::warn!(error = %e, "cannot open a generator socket"),
        }
    }
    let open = u32::try_from(sockets.len()).unwrap_or(u32::MAX);
    let result = if open == 0 { "error" } else { "qualified" };
    let state = if open == 0 { "offline" } else { "qualified" };
    let mut clients = Vec::with_capacity(if open == 0 { 0 } else { n as usize });
    for _ in 0..n {
        if open > 0 {
            clients.push(Client {
                seq: 0,
                tracker: SeqTracker::default(),
            });
            shared.warm_ok.fetch_add(1, Ordering::Relaxed);
        }
        shared.metrics.move_client("pending", state);
        shared.record_outcome(result);
    }
    (sockets, clients)
}

/// Answer counts of one batch, added to the shared counters at once.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) received: u64,
    pub(super) late: u64,
    pub(super) duplicates: u64,
    pub(super) out_of_order: u64,
    pub(super) rtt_ns: Vec<u64>,
}

impl Tally {
    /// Empty, with room for a receive batch's RTTs.
    pub(super) fn new() -> Self {
        Self {
            rtt_ns: Vec::with_capacity(RECV_BATCH),
            ..Self::default()
        }
    }

    pub(super) fn publish(&mut self, shared: &Shared) {
        let (m, t) = (&shared.metrics, &shared.trial);
        m.received.inc_by(self.received + self.late);
        m.duplicated.inc_by(self.duplicates);
        t.received.fetch_add(self.received, Ordering::Relaxed);
        t.late.fetch_add(self.late, Ordering::Relaxed);
        t.duplicates.fetch_add(self.duplicates, Ordering::Relaxed);
        t.out_of_order
            .fetch_add(self.out_of_order, Ordering::Relaxed);
        m.out_of_order.inc_by(self.out_of_order);
        if !self.rtt_ns.is_empty() {
            if let Ok(mut h) = shared.rtt.lock() {
                for ns in &self.rtt_ns {
                    let us = (ns / 1000).max(1);
                    let _ = h.trial.record(us);
                    let _ = h.second.record(us);
                }
            }
            for ns in &self.rtt_ns {
                m.rtt.observe(*ns as f64 / 1e9);
            }
        }
        self.received = 0;
        self.late = 0;
        self.duplicates = 0;
        self.out_of_order = 0;
        self.rtt_ns.clear();
    }
}

/// The generator's loop.
fn run(
    shared: &Shared,
    shutdown: &Shutdown,
    (n, gro): (u32, bool),
    echo: SocketAddrV4,
) -> io::Result<()> {
    let ep = epoll()?;
    let (sockets, mut clients) = open_clients(shared, n, gro, &ep);
    let count = u32::try_from(clients.len()).unwrap_or(u32::MAX);
    let s = &shared.setup;
    let rt_epoch = rt_epoch(shared);
    let mut pace = Pace::new(shared, TokenBucket::default_burst);
    let mut cursor = 0u32;
    let mut template = filler(s.size);
    let to = SocketAddr::V4(echo);
    let (mut send, mut recv) = batches(template.len());
    let mut events = events();
    let mut tally = Tally::new();
    loop {
        if shutdown.is_triggered() {
            break;
        }
        match pace.on_control(count) {
            Step::Stop => break,
            Step::Ended => add_jitter(shared, &clients),
            Step::Go => {}
        }
        let owed = pace.owed(Instant::now());
        if owed > 0 {
            let counted = pace.counted(shared);
            let failed = send_owed(
                (&sockets, &mut clients),
                (owed, &mut cursor),
                Stamp {
                    run: s.run_tag,
                    client: 0,
                    trial: pace.trial(),
                    seq: 0,
                    sent_ns: realtime_ns().saturating_sub(rt_epoch),
                },
                (&mut template, to, &mut send),
            );
            count_sent(shared, counted, owed);
            count_send_errors(shared, counted, failed);
        }
        let ready = epoll_wait(&ep, &mut events, pace.wait_ms());
        let trial_now = shared.trial_no.load(Ordering::Relaxed);
        for ev in ready {
            let Some(socket) = usize::try_from(ev.u64).ok().and_then(|i| sockets.get(i)) else {
                continue;
            };
            receive(
                socket,
                &mut clients,
                &mut recv,
                (s.run_tag, rt_epoch, trial_now),
                &mut tally,
            );
            tally.publish(shared);
        }
    }
    if pace.running() {
        add_jitter(shared, &clients);
    }
    let m = &shared.metrics.clients;
    m.with_label_values(&["qualified"]).sub(i64::from(count));
    m.with_label_values(&["offline"]).add(i64::from(count));
    Ok(())
}

/// Sends `owed` packets dealt over the clients; returns how many failed.
fn send_owed(
    (sockets, clients): (&[UdpSocket], &mut [Client]),
    (owed, cursor): (u32, &mut u32),
    stamp: Stamp,
    (template, to, send): (&mut [u8], SocketAddr, &mut SendBatch),
) -> u32 {
    // All to the one reflector and of one length: a socket's batch is one GSO send.
    send_dealt(
        (sockets, clients),
        (owed, cursor),
        send,
        |i, c, k, fd, send, pending| {
            let mut failed = 0u32;
            let st = Stamp { client: i, ..stamp };
            let queued = stamp_run(template, st, k, &mut c.seq, to, send, pending, |b, p| {
                failed += flush_batch(fd, b, p)
            });
            failed + k - queued
        },
    )
}

/// Deals `owed` packets over `clients` as [`deal`] does and sends them by socket:
/// neighbouring clients share one ([`clients_socket`]), their runs go out in one batch.
/// `queue(index, client, k, fd, send, pending)` queues a client's run of `k` on `send`
/// (flushing it on `fd` when full, `pending` counting what it holds) and returns how many
/// of the `k` failed. Returns how many failed in all.
pub(super) fn send_dealt<C>(
    (sockets, clients): (&[UdpSocket], &mut [C]),
    (owed, cursor): (u32, &mut u32),
    send: &mut SendBatch,
    mut queue: impl FnMut(u32, &mut C, u32, RawFd, &mut SendBatch, &mut u32) -> u32,
) -> u32 {
    let count = u32::try_from(clients.len()).unwrap_or(u32::MAX);
    let mut failed = 0u32;
    let mut pending = 0u32;
    let mut current: Option<RawFd> = None;
    deal(owed, count, cursor, |i, k| {
        let (Some(c), Some(socket)) = (
            clients.get_mut(i as usize),
            clients_socket(sockets, i, count),
        ) else {
            failed += k;
            return;
        };
        let fd = socket.as_raw_fd();
        if let Some(prev) = current.filter(|p| *p != fd) {
            failed += flush_batch(prev, send, &mut pending);
        }
        current = Some(fd);
        failed += queue(i, c, k, fd, send, &mut pending);
    });
    if let Some(fd) = current {
        failed += flush_batch(fd, send, &mut pending);
    }
    failed
}

/// Sends the `*pending` datagrams `send` holds on `fd`; how many failed (a full socket
/// buffer drops the rest). Resets `*pending`.
pub(super) fn flush_batch(fd: RawFd, send: &mut SendBatch, pending: &mut u32) -> u32 {
    let mut ok = 0usize;
    if !send.is_empty()
        && send
            .send(fd, |s| {
                if s.error.is_none() {
                    ok += s.datagrams;
                }
            })
            .is_err()
    {
        // WouldBlock (or worse): what is still queued is dropped, and counted below.
        send.clear();
    }
    let failed = pending.saturating_sub(u32::try_from(ok).unwrap_or(u32::MAX));
    *pending = 0;
    failed
}

/// Client `i`'s socket (of `clients`): the sockets take consecutive blocks of clients.
pub(super) fn clients_socket(sockets: &[UdpSocket], i: u32, clients: u32) -> Option<&UdpSocket> {
    let open = u64::try_from(sockets.len()).ok()?;
    let at = u64::from(i) * open / u64::from(clients.max(1));
    sockets.get(usize::try_from(at).ok()?)
}

/// Reads what `socket` holds (up to a few batches) into `tally`, each answer to the client
/// its stamp names.
fn receive(
    socket: &UdpSocket,
    clients: &mut [Client],
    recv: &mut RecvBatch,
    (run_tag, rt_epoch, trial_now): (u32, u64, u32),
    tally: &mut Tally,
) {
    for _ in 0..4 {
        let Ok(n) = recv.recv(socket.as_raw_fd(), RECV_BATCH) else {
            return;
        };
        let fallback = realtime_ns();
        for i in 0..n {
            let d = recv.get(i);
            if d.truncated {
                continue;
            }
            let arrived = d.kernel_time_ns.unwrap_or(fallback);
            let seg = d.segment_size.unwrap_or(d.data.len()).max(1);
            for one in d.data.chunks(seg) {
                answer(clients, one, arrived, (run_tag, rt_epoch, trial_now), tally);
            }
        }
        if n < RECV_BATCH {
            return;
        }
    }
}

/// One answer's accounting.
fn answer(
    clients: &mut [Client],
    data: &[u8],
    arrived: u64,
    (run_tag, rt_epoch, trial_now): (u32, u64, u32),
    tally: &mut Tally,
) {
    let Some(stamp) = Stamp::read(data) else {
        return;
    };
    if stamp.run != run_tag || stamp.trial == 0 {
        return;
    }
    let Some(c) = clients.get_mut(stamp.client as usize) else {
        return;
    };
    account(&mut c.tracker, stamp, arrived, (rt_epoch, trial_now), tally);
}

/// Counts the answer `stamp` (of a trial, of the run) that arrived at `arrived`
/// (CLOCK_REALTIME ns) for the client whose tracker is `tracker`.
pub(super) fn account(
    tracker: &mut SeqTracker,
    stamp: Stamp,
    arrived: u64,
    (rt_epoch, trial_now): (u64, u32),
    tally: &mut Tally,
) {
    let verdict = tracker.record(stamp.seq);
    let current = stamp.trial == trial_now;
    if verdict == Verdict::Duplicate {
        if current {
            tally.duplicates += 1;
        }
        return;
    }
    let rtt = arrived
        .saturating_sub(rt_epoch)
        .saturating_sub(stamp.sent_ns);
    tracker.transit(rtt);
    if !current {
        tally.late += 1;
        return;
    }
    tally.received += 1;
    if matches!(verdict, Verdict::OutOfOrder | Verdict::TooOld) {
        tally.out_of_order += 1;
    }
    tally.rtt_ns.push(rtt);
}

/// Adds every client's jitter estimate to the trial's (when a trial drains).
fn add_jitter(shared: &Shared, clients: &[Client]) {
    add_jitters(shared, clients.iter().map(|c| &c.tracker));
}

/// Adds the jitter estimates of `trackers` to the trial's.
pub(super) fn add_jitters<'a>(shared: &Shared, trackers: impl Iterator<Item = &'a SeqTracker>) {
    let (sum, k) = trackers
        .filter_map(SeqTracker::jitter_ns)
        .fold((0.0, 0u64), |(s, k), j| (s + j, k + 1));
    if let Ok(mut g) = shared.jitter.lock() {
        g.0 += sum;
        g.1 += k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clients_share_sockets_beyond_the_pool() {
        let pool: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let port = |i| clients_socket(&pool, i, 6).unwrap().local_addr().unwrap();
        assert_eq!(port(0), port(1));
        assert_eq!(port(4), port(5));
        assert_ne!(port(1), port(2));
        assert_ne!(port(3), port(4));
        assert!(clients_socket(&pool, 6, 6).is_none());
        assert!(clients_socket(&[], 0, 6).is_none());
        assert_eq!(size_of::<Client>(), 64, "per-client state");
    }

    #[test]
    fn dealing_spreads_evenly_and_rotates() {
        let mut got = vec![0u32; 4];
        let mut cursor = 0;
        // Fewer packets than clients: one each, the cursor moves on.
        deal(3, 4, &mut cursor, |i, k| got[i as usize] += k);
        assert_eq!((got.clone(), cursor), (vec![1, 1, 1, 0], 3));
        deal(2, 4, &mut cursor, |i, k| got[i as usize] += k);
        assert_eq!((got.clone(), cursor), (vec![2, 1, 1, 1], 1));
        // More: runs, the remainder to the next ones.
        deal(10, 4, &mut cursor, |i, k| got[i as usize] += k);
        assert_eq!((got.clone(), cursor), (vec![4, 4, 4, 3], 3));
        // Over many passes nobody is ahead by more than one.
        for owed in [1, 7, 13, 4, 0, 99] {
            deal(owed, 4, &mut cursor, |i, k| got[i as usize] += k);
        }
        let (lo, hi) = (got.iter().min().unwrap(), got.iter().max().unwrap());
        assert!(hi - lo <= 1, "{got:?}");
        assert_eq!(got.iter().sum::<u32>(), 15 + 124);
        deal(5, 0, &mut cursor, |_, _| panic!("no clients"));
    }

    #[test]
    fn runs_are_stamped_in_sequence_and_merged_per_destination() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut template = filler(100);
        // Room for 3 packets: a run of 5 flushes once on the way.
        let mut send = SendBatch::new(4, 300, true);
        let mut seq = 10;
        let stamp = Stamp {
            run: 7,
            client: 3,
            trial: 2,
            seq: 0,
            sent_ns: 99,
        };
        let mut flushes = 0;
        let mut pending = 0;
        let q = stamp_run(
            &mut template,
            stamp,
            5,
            &mut seq,
            to,
            &mut send,
            &mut pending,
            |b, p| {
                flushes += 1;
                assert_eq!(*p, 3, "the batch held 3");
                assert_eq!(flush_batch(tx.as_raw_fd(), b, p), 0);
            },
        );
        assert_eq!((q, seq, flushes, pending), (5, 15, 1, 2));
        assert_eq!(flush_batch(tx.as_raw_fd(), &mut send, &mut pending), 0);
        assert_eq!(pending, 0);
        let mut buf = [0u8; 200];
        for want in 10..15 {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(n, 100, "one datagram per packet, GSO or not");
            let got = Stamp::read(&buf[..n]).unwrap();
            assert_eq!(got, Stamp { seq: want, ..stamp });
            assert_eq!(&buf[24..n], &filler(100)[24..], "template kept");
        }
        // A template shorter than the stamp queues nothing.
        let mut short = [0u8; 8];
        assert_eq!(
            stamp_run(
                &mut short,
                stamp,
                3,
                &mut seq,
                to,
                &mut send,
                &mut pending,
                |_, _| {}
            ),
            0
        );
        assert_eq!(seq, 15);
    }
}
