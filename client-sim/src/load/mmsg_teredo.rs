//! The `mmsg` engine's generator for Teredo trials (`--target`, `--udp-echo`): one
//! dedicated thread (pinned with `--cpu`) moves every client's data packets, the clients'
//! tasks keep their state machines and NAT models running beside it ([`super::handoff`]).
//!
//! * Each client lends a duplicate of its mapping socket and the datagram its Teredo state
//!   machine emitted for its warm-up probe ([`Template`]); the thread registers them as
//!   they arrive.
//! * Sending is the `--ceiling` generator's: one token bucket for the total rate, its
//!   tokens dealt round-robin over the clients in passes 1–5 ms apart ([`mmsg::deal`],
//!   [`mmsg_pace::tick`](super::mmsg_pace::tick)); a client's run is its template stamped in place (load header and
//!   checksum, RFC 1624) and sent with one `sendmmsg`, merged into `UDP_SEGMENT` sends.
//! * Receiving: `recvmmsg` on the sockets epoll reports ready, kernel receive timestamps
//!   (`SO_TIMESTAMPNS`). An answer — IPv6 in UDP from the address the client sent to, with
//!   the run tag and the client's number at the known offset — is counted here; it passes
//!   the client's NAT model by construction (it comes from where the client sent), so it
//!   does not go through it. Anything else goes to the client's task, through a bounded
//!   channel (dropped and counted when full), to meet the NAT model and the state machine.
//!
//! After the last trial ([`Generator::finish`]) the thread turns the receive options back
//! off, closes its duplicates and the channels: the tasks read their sockets again.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use teredo_rt::batch::{RecvBatch, SendBatch};
use teredo_rt::Shutdown;
use tokio::sync::mpsc::error::TrySendError;

use super::engine::pin_current_thread;
use super::handoff::{Handoff, Inbound};
use super::mmsg::{self, account, add_jitters, flush_batch, Tally};
use super::mmsg_pace::{
    batches, count_send_errors, count_sent, epoll, epoll_wait, events, realtime_ns, rt_epoch,
    watch, Pace, Step, RECV_BATCH,
};
use super::pacing::TokenBucket;
use super::payload::Stamp;
use super::seq::SeqTracker;
use super::template::Template;
use super::worker::Shared;

/// What the thread did besides the answers it counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Clients that lent their socket.
    pub clients: u64,
    /// Datagrams that were not answers, passed to the clients' tasks.
    pub to_tasks: u64,
    /// Such datagrams dropped because the task's channel was full.
    pub to_tasks_dropped: u64,
}

/// A client lent to the thread.
struct Lent {
    client: u32,
    fd: OwnedFd,
    template: Template,
    seq: u32,
    tracker: SeqTracker,
    inbox: tokio::sync::mpsc::Sender<Inbound>,
}

/// The running thread.
pub struct Generator {
    thread: Option<std::thread::JoinHandle<Counts>>,
    stop: Arc<AtomicBool>,
    lent: Arc<AtomicUsize>,
}

impl Generator {
    /// Starts the thread; it takes the clients `handoffs` brings and follows the
    /// coordinator's orders until [`Generator::finish`], [`Control::Stop`](super::worker::Control::Stop) or `shutdown`.
    pub fn start(
        shared: Arc<Shared>,
        shutdown: Shutdown,
        handoffs: Receiver<Handoff>,
        cpu: Option<usize>,
        gro: bool,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let lent = Arc::new(AtomicUsize::new(0));
        let (stop2, lent2) = (Arc::clone(&stop), Arc::clone(&lent));
        let thread = std::thread::Builder::new()
            .name("load-mmsg".into())
            .spawn(move || {
                if let Some(c) = cpu {
                    if let Err(e) = pin_current_thread(c) {
                        tracing::warn!(error = %e, "generator not pinned");
                    }
                }
                let mut counts = Counts::default();
                let flags = Flags {
                    stop: &stop2,
                    lent: &lent2,
                    shutdown: &shutdown,
                    gro,
                };
                if let Err(e) = run(&shared, &flags, &handoffs, &mut counts) {
                    tracing::warn!(error = %e, "mmsg generator stopped");
                }
                counts
            })?;
        Ok(Self {
            thread: Some(thread),
            stop,
            lent,
        })
    }

    /// Clients registered so far.
    pub fn lent(&self) -> usize {
        self.lent.load(Ordering::Relaxed)
    }

    /// Stops the thread, which gives the sockets back; its counts.
    pub fn finish(mut self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Flags<'a> {
    stop: &'a AtomicBool,
    lent: &'a AtomicUsize,
    shutdown: &'a Shutdown,
    gro: bool,
}

/// Sets the integer socket option `level`/`name` of `fd` to `value`.
fn set_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a c_int option of the advertised size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes a client's socket: receive timestamps (and GRO) on, into the epoll set as entry
/// `index`.
fn register(ep: &OwnedFd, h: &Handoff, index: usize, gro: bool) -> io::Result<()> {
    watch(ep, h.fd.as_raw_fd(), index, gro)
}

/// Gives a socket back as the task had it: GRO and timestamps off (the task reads one
/// datagram at a time, without control messages).
fn give_back(l: &Lent) {
    let fd = l.fd.as_raw_fd();
    let _ = set_opt(fd, libc::SOL_UDP, libc::UDP_GRO, 0);
    let _ = set_opt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 0);
}

/// The thread's loop.
fn run(
    shared: &Shared,
    flags: &Flags<'_>,
    handoffs: &Receiver<Handoff>,
    counts: &mut Counts,
) -> io::Result<()> {
    let ep = epoll()?;
    let mut lent: Vec<Lent> = Vec::new();
    let s = &shared.setup;
    let rt_epoch = rt_epoch(shared);
    let mut pace = Pace::new(shared, TokenBucket::default_burst);
    let mut cursor = 0u32;
    let (mut send, mut recv) = batches(s.size + 100);
    let mut events = events();
    let mut tally = Tally::new();
    while !flags.stop.load(Ordering::Relaxed) && !flags.shutdown.is_triggered() {
        while let Ok(h) = handoffs.try_recv() {
            match register(&ep, &h, lent.len(), flags.gro) {
                Ok(()) => {
                    lent.push(Lent {
                        client: h.client,
                        fd: h.fd,
                        template: h.template,
                        seq: h.seq,
                        tracker: SeqTracker::default(),
                        inbox: h.inbox,
                    });
                    counts.clients += 1;
                    flags.lent.fetch_add(1, Ordering::Relaxed);
                }
                // The task keeps its socket (the channel closes with `h`): it reads it
                // again, and sends nothing in the trials.
                Err(e) => {
                    tracing::warn!(client = h.client, error = %e, "cannot take a client's socket")
                }
            }
        }
        let count = u32::try_from(lent.len()).unwrap_or(u32::MAX);
        match pace.on_control(count) {
            Step::Stop => break,
            Step::Ended => add_jitters(shared, lent.iter().map(|l| &l.tracker)),
            Step::Go => {}
        }
        let owed = pace.owed(Instant::now());
        if owed > 0 {
            let counted = pace.counted(shared);
            let stamp = Stamp {
                run: s.run_tag,
                client: 0,
                trial: pace.trial(),
                seq: 0,
                sent_ns: realtime_ns().saturating_sub(rt_epoch),
            };
            // Counted before they leave, so that no answer is seen before its request.
            count_sent(shared, counted, owed);
            let failed = send_owed(&mut lent, (owed, &mut cursor), stamp, &mut send);
            count_send_errors(shared, counted, failed);
        }
        let ready = epoll_wait(&ep, &mut events, pace.wait_ms());
        let trial_now = shared.trial_no.load(Ordering::Relaxed);
        for ev in ready {
            let Some(l) = usize::try_from(ev.u64).ok().and_then(|i| lent.get_mut(i)) else {
                continue;
            };
            receive(
                l,
                &mut recv,
                (s.run_tag, rt_epoch, trial_now),
                &mut tally,
                counts,
            );
            tally.publish(shared);
        }
    }
    if pace.running() {
        add_jitters(shared, lent.iter().map(|l| &l.tracker));
    }
    for l in &lent {
        give_back(l);
    }
    Ok(())
}

/// Sends `owed` packets dealt over the lent clients; returns how many failed.
fn send_owed(
    lent: &mut [Lent],
    (owed, cursor): (u32, &mut u32),
    stamp: Stamp,
    send: &mut SendBatch,
) -> u32 {
    let count = u32::try_from(lent.len()).unwrap_or(u32::MAX);
    let mut failed = 0u32;
    mmsg::deal(owed, count, cursor, |i, k| {
        let Some(l) = lent.get_mut(i as usize) else {
            failed += k;
            return;
        };
        let queued = stamp_run(
            l,
            Stamp {
                client: l.client,
                ..stamp
            },
            k,
            send,
            &mut failed,
        );
        failed += k - queued;
    });
    failed
}

/// Stamps `count` packets of client `l` (sequence numbers from its own) into `send`, sent
/// on its socket (flushing whenever the batch fills, and at the end); adds failed sends to
/// `*failed`. Returns how many were queued.
fn stamp_run(
    l: &mut Lent,
    stamp: Stamp,
    count: u32,
    send: &mut SendBatch,
    failed: &mut u32,
) -> u32 {
    let fd = l.fd.as_raw_fd();
    let to = SocketAddr::V4(l.template.to);
    let mut pending = 0u32;
    let mut queued = 0u32;
    for _ in 0..count {
        l.template.stamp(Stamp {
            seq: l.seq,
            ..stamp
        });
        if !send.push(&l.template.datagram, to, 0) {
            *failed += flush_batch(fd, send, &mut pending);
            if !send.push(&l.template.datagram, to, 0) {
                break;
            }
        }
        l.seq = l.seq.wrapping_add(1);
        pending += 1;
        queued += 1;
    }
    *failed += flush_batch(fd, send, &mut pending);
    queued
}

/// Reads what client `l`'s socket holds (up to a few batches): answers into `tally`,
/// anything else to the client's task.
fn receive(
    l: &mut Lent,
    recv: &mut RecvBatch,
    (run_tag, rt_epoch, trial_now): (u32, u64, u32),
    tally: &mut Tally,
    counts: &mut Counts,
) {
    for _ in 0..4 {
        let Ok(n) = recv.recv(l.fd.as_raw_fd(), RECV_BATCH) else {
            return;
        };
        let fallback = realtime_ns();
        for i in 0..n {
            let d = recv.get(i);
            let Some(SocketAddr::V4(from)) = d.from else {
                continue;
            };
            if d.truncated {
                // Oversized: truncated by the kernel, as the task would drop it.
                continue;
            }
            let arrived = d.kernel_time_ns.unwrap_or(fallback);
            let seg = d.segment_size.unwrap_or(d.data.len()).max(1);
            for one in d.data.chunks(seg) {
                match l.template.answer_stamp(from, one, run_tag, l.client) {
                    Some(stamp) if stamp.trial != 0 => {
                        account(&mut l.tracker, stamp, arrived, (rt_epoch, trial_now), tally);
                    }
                    // A late warm-up answer: the task has had its answer already.
                    Some(_) => {}
                    None => to_task(l, from, one, counts),
                }
            }
        }
        if n < RECV_BATCH {
            return;
        }
    }
}

/// Passes a datagram that is not an answer to the client's task.
fn to_task(l: &Lent, from: std::net::SocketAddrV4, data: &[u8], counts: &mut Counts) {
    let msg = Inbound {
        at: l.template.from,
        from,
        data: data.to_vec(),
    };
    match l.inbox.try_send(msg) {
        Ok(()) => counts.to_tasks += 1,
        Err(TrySendError::Full(_)) => counts.to_tasks_dropped += 1,
        // The task has ended.
        Err(TrySendError::Closed(_)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netsim::packets;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, UdpSocket};
    use std::os::fd::AsFd as _;
    use std::time::Duration;
    use teredo_rt::batch::enable_rx_timestamps;
    use teredo_rt::MAX_DATAGRAM;

    use crate::load::handoff::INBOX;
    use crate::load::payload::filler;

    /// A client socket and a "relay" socket on loopback, the client's template aimed at it.
    fn lent_pair() -> (
        Lent,
        UdpSocket,
        UdpSocket,
        tokio::sync::mpsc::Receiver<Inbound>,
    ) {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        relay
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let (SocketAddr::V4(from), SocketAddr::V4(to)) =
            (client.local_addr().unwrap(), relay.local_addr().unwrap())
        else {
            unreachable!()
        };
        let mut payload = filler(64);
        let probe = Stamp {
            run: 5,
            client: 3,
            trial: 0,
            seq: 0,
            sent_ns: 0,
        };
        probe.write(&mut payload);
        let src = Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 1);
        let dst = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
        let inner = packets::echo_request(src, dst, 3, 0, &payload).unwrap();
        let template = Template::capture(&inner, &inner, from, to).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(INBOX);
        let fd = client.as_fd().try_clone_to_owned().unwrap();
        enable_rx_timestamps(fd.as_raw_fd()).unwrap();
        let l = Lent {
            client: 3,
            fd,
            template,
            seq: 10,
            tracker: SeqTracker::default(),
            inbox: tx,
        };
        (l, client, relay, rx)
    }

    #[test]
    fn runs_go_out_stamped_and_answers_are_told_from_the_rest() {
        let (mut l, client, relay, mut rx) = lent_pair();
        let mut send = SendBatch::new(8, 4096, true);
        let stamp = Stamp {
            run: 5,
            client: 0,
            trial: 1,
            seq: 0,
            sent_ns: 42,
        };
        let mut cursor = 0;
        let failed = send_owed(
            std::slice::from_mut(&mut l),
            (5, &mut cursor),
            stamp,
            &mut send,
        );
        assert_eq!((failed, l.seq), (0, 15));
        let mut buf = [0u8; 2048];
        let mut requests = Vec::new();
        for want in 10..15 {
            let (n, from) = relay.recv_from(&mut buf).unwrap();
            assert_eq!(from, client.local_addr().unwrap());
            let got = match packets::parse(&buf[..n]) {
                Some(packets::Parsed::Echo {
                    data, reply: false, ..
                }) => Stamp::read(data),
                other => panic!("{other:?}"),
            };
            assert_eq!(
                got,
                Some(Stamp {
                    client: 3,
                    seq: want,
                    ..stamp
                })
            );
            requests.push(buf[..n].to_vec());
        }
        // The kernel turns receive timestamping on from a work queue after the first
        // socket asks (until then it stamps at read time): give it a moment.
        std::thread::sleep(Duration::from_millis(200));
        // The relay answers three, sends a bubble and a stray answer from another port.
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = client.local_addr().unwrap();
        for r in &requests[..3] {
            relay
                .send_to(&packets::answer(r, false).unwrap(), me)
                .unwrap();
        }
        let mut bubble = vec![0x60u8, 0, 0, 0, 0, 0, 59, 64];
        bubble.resize(40, 0);
        relay.send_to(&bubble, me).unwrap();
        other
            .send_to(&packets::answer(&requests[3], false).unwrap(), me)
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut recv = RecvBatch::new(RECV_BATCH, MAX_DATAGRAM + 1).with_control();
        let mut tally = Tally::default();
        let mut counts = Counts::default();
        let before = realtime_ns();
        receive(&mut l, &mut recv, (5, 0, 1), &mut tally, &mut counts);
        assert_eq!((tally.received, tally.late, tally.duplicates), (3, 0, 0));
        assert_eq!(tally.rtt_ns.len(), 3);
        // Kernel receive times, against a send stamp of 42 ns after the epoch.
        assert!(
            tally.rtt_ns.iter().all(|r| *r + 42 <= before),
            "{:?}",
            tally.rtt_ns
        );
        assert_eq!(
            counts,
            Counts {
                clients: 0,
                to_tasks: 2,
                to_tasks_dropped: 0
            }
        );
        let first = rx.try_recv().unwrap();
        assert_eq!((first.data, first.at), (bubble, l.template.from));
        let second = rx.try_recv().unwrap();
        assert_eq!(SocketAddr::V4(second.from), other.local_addr().unwrap());
        // A full inbox drops and counts.
        for _ in 0..INBOX + 2 {
            to_task(
                &l,
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1),
                &[1],
                &mut counts,
            );
        }
        assert_eq!(
            (counts.to_tasks, counts.to_tasks_dropped),
            (2 + INBOX as u64, 2)
        );
        give_back(&l);
    }
}
