//! `--phase rs`: an RS storm on the `mmsg` engine. One dedicated thread (pinned with
//! `--cpu`) sends every client's router solicitation to the server's primary address, port
//! 3544, and reads the router advertisements:
//!
//! * each client has its own source port: one socket per client up to
//!   [`SOCKETS`], beyond that neighbouring clients share one (the
//!   nonce says whose RS an answer is), bound to `--bind`;
//! * the total rate is one token bucket whose tokens are dealt round-robin to the clients in
//!   passes 1–5 ms apart ([`deal`](super::mmsg::deal), [`tick`](super::mmsg_pace::tick), as
//!   the `mmsg` engine's data trials); a client's RSs are its template stamped in place with
//!   a fresh nonce ([`super::rs_wire`]) and the runs of one socket's clients go out with one
//!   `sendmmsg` (`UDP_SEGMENT` where the kernel takes it);
//! * answers are read with `recvmmsg` from the sockets epoll reports ready, with the kernel's
//!   receive time (`SO_TIMESTAMPNS`), validated with the core's parsers, matched by nonce to
//!   the client, sequence number and pass (send time and trial); RTT = kernel arrival − the
//!   pass's send time, into the same histograms as the data trials. An answer whose nonce we
//!   did not send counts as `unexpected`, one that is not a valid answer as `malformed`;
//!   neither is an answer.
//!
//! With `--ceiling` the destination is the in-process reflector, which echoes the RS: the
//! echoed RS (a valid RS with our nonce) is the answer, so the run measures the generator's
//! own RS/s.
//!
//! The coordinator drives it through the same [`Control`](super::worker::Control) channel and reads the same
//! [`Shared`] counters as the data trials, so that `--find-max` and the reports work alike.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::Rng as _;
use teredo::client::{ClientConfig, Profile};
use teredo_rt::batch::{RecvBatch, SendBatch};
use teredo_rt::{bind_udp_std, Shutdown, UdpOptions};

use super::engine::{pin_current_thread, Engine};
use super::mmsg::{add_jitters, flush_batch, send_dealt, Tally, SOCKETS};
use super::mmsg_pace::{
    batches, count_send_errors, count_sent, epoll, epoll_wait, events, realtime_ns, rt_epoch,
    watch, Pace, Step, RECV_BATCH,
};
use super::report::RsSummary;
use super::rs_wire::{answer_nonce, match_nonce, Expect, NonceKey, Passes, RsTemplate};
use super::seq::{SeqTracker, Verdict};
use super::worker::{Dest, Shared};

pub use super::rs_wire::MAX_CLIENTS;

/// RSs owed that a pass woken late still sends (up to [`MAX_PER_PASS`](super::mmsg_pace::MAX_PER_PASS) a pass): this long
/// at the trial's rate. On a busy machine the thread is sometimes woken tens of
/// milliseconds late; with the data trials' 20 ms the owed RSs beyond were never sent and
/// trials failed for sending under 90 % of a rate of a few thousand RS/s.
const CATCH_UP: Duration = Duration::from_millis(100);

/// How the nonce is built (for the report).
pub const NONCE_SCHEME: &str = "client index (24 bits) | sequence number (low 26 bits) | \
     sending pass (low 14 bits), XOR a random per-run key; the send time is the pass's, kept \
     in a ring of 16384 passes";

/// The engine of `--phase rs`: `mmsg` (the default); a one-line error for `tokio`.
pub fn engine(asked: Option<Engine>) -> anyhow::Result<Engine> {
    if asked == Some(Engine::Tokio) {
        anyhow::bail!(
            "--engine tokio cannot run --phase rs: the RS storm is built on the mmsg engine \
             (batched sockets, kernel receive timestamps) only; use --engine mmsg or leave \
             --engine out"
        );
    }
    if let Some(why) = Engine::Mmsg.unavailable(true, false) {
        anyhow::bail!("--phase rs needs the mmsg engine, which is not available: {why}");
    }
    Ok(Engine::Mmsg)
}

/// The report's name of the destination.
pub fn target(dest: Dest, server: Option<Ipv4Addr>) -> String {
    match (dest, server) {
        (Dest::Ceiling(a), _) => format!(
            "in-process UDP echo {a} (echoes each router solicitation, taken as its answer)"
        ),
        (_, Some(s)) => format!(
            "Teredo server {s}:{} (router solicitations, answered by router advertisements)",
            teredo::addr::TEREDO_PORT
        ),
        (_, None) => "none".to_owned(),
    }
}

/// Bytes of the RS datagram (UDP payload) of `profile`.
pub fn rs_len(profile: Profile) -> anyhow::Result<usize> {
    let cfg = ClientConfig::profile(profile, Ipv4Addr::UNSPECIFIED);
    let t = RsTemplate::new(cfg.ll_restricted, cfg.xp_slla)
        .map_err(|e| anyhow::anyhow!("cannot build the router solicitation: {e}"))?;
    Ok(t.bytes().len())
}

/// What the storm needs.
#[derive(Clone, Copy, Debug)]
pub struct StormSetup {
    /// Where the RSs go: the server's primary address, port 3544 (or the reflector).
    pub to: SocketAddrV4,
    /// Local address of the sockets.
    pub bind: Ipv4Addr,
    /// Simulated clients.
    pub clients: u32,
    /// Client profile: the RS's link-local source and options.
    pub profile: Profile,
    /// The answer is the reflector's echo of the RS, not an RA.
    pub ceiling: bool,
    /// Pin the thread to this CPU.
    pub cpu: Option<usize>,
    /// `UDP_GRO` on the sockets.
    pub gro: bool,
}

/// Datagrams that came back but are no answer (for the whole run).
#[derive(Debug, Default)]
pub struct NotAnswers {
    /// Valid answers whose nonce we did not send.
    pub unexpected: AtomicU64,
    /// Not a valid answer (not Teredo, no auth header, not an RA, truncated...).
    pub malformed: AtomicU64,
}

/// The running storm.
pub struct Storm {
    thread: Option<std::thread::JoinHandle<()>>,
    not_answers: Arc<NotAnswers>,
    /// Bytes of one RS datagram (UDP payload).
    pub rs_len: usize,
    /// Sockets opened.
    pub sockets: usize,
}

/// One simulated client: RSs sent, answers seen.
struct Client {
    sent: u32,
    tracker: SeqTracker,
}

/// Everything the thread owns.
struct Thread {
    ep: OwnedFd,
    sockets: Vec<UdpSocket>,
    clients: Vec<Client>,
    template: RsTemplate,
    key: NonceKey,
    passes: Passes,
    to: SocketAddr,
    expect: Expect,
    not_answers: Arc<NotAnswers>,
}

impl Storm {
    /// Builds the RS, opens the sockets (a one-line error when none opens) and starts the
    /// thread, which then follows the coordinator's orders until [`Control::Stop`](super::worker::Control::Stop) or
    /// `shutdown`.
    pub fn start(
        shared: Arc<Shared>,
        shutdown: Shutdown,
        setup: StormSetup,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..=MAX_CLIENTS).contains(&setup.clients),
            "--phase rs takes 1 to {MAX_CLIENTS} clients (the nonce has 24 bits for the client)"
        );
        let cfg = ClientConfig::profile(setup.profile, *setup.to.ip());
        let template = RsTemplate::new(cfg.ll_restricted, cfg.xp_slla)
            .map_err(|e| anyhow::anyhow!("cannot build the router solicitation: {e}"))?;
        let ep = epoll().context("cannot create the generator's epoll set")?;
        let buffer = shared
            .setup
            .socket_buffer
            .max((64 << 20) / setup.clients.clamp(1, SOCKETS) as usize);
        let sockets = open_sockets(&setup, buffer, &ep)?;
        let n = setup.clients;
        let m = &shared.metrics.clients;
        m.with_label_values(&["pending"]).sub(i64::from(n));
        m.with_label_values(&["probe"]).add(i64::from(n));
        let not_answers = Arc::new(NotAnswers::default());
        let (rs_len, open) = (template.bytes().len(), sockets.len());
        let expect = if setup.ceiling {
            Expect::EchoedSolicitation
        } else {
            Expect::Advertisement { to: template.src() }
        };
        let state = Thread {
            ep,
            sockets,
            clients: (0..n)
                .map(|_| Client {
                    sent: 0,
                    tracker: SeqTracker::default(),
                })
                .collect(),
            template,
            key: NonceKey(rand::rng().random()),
            passes: Passes::default(),
            to: SocketAddr::V4(setup.to),
            expect,
            not_answers: Arc::clone(&not_answers),
        };
        let cpu = setup.cpu;
        let thread = std::thread::Builder::new()
            .name("load-rs".into())
            .spawn(move || {
                if let Some(c) = cpu {
                    if let Err(e) = pin_current_thread(c) {
                        tracing::warn!(error = %e, "RS storm not pinned");
                    }
                }
                run(&shared, &shutdown, state);
            })
            .context("cannot start the RS storm thread")?;
        Ok(Self {
            thread: Some(thread),
            not_answers,
            rs_len,
            sockets: open,
        })
    }

    /// Valid answers whose nonce we did not send, so far.
    pub fn unexpected(&self) -> u64 {
        self.not_answers.unexpected.load(Ordering::Relaxed)
    }

    /// Datagrams that were no valid answer, so far.
    pub fn malformed(&self) -> u64 {
        self.not_answers.malformed.load(Ordering::Relaxed)
    }

    /// Waits for the thread (stopped by [`Control::Stop`](super::worker::Control::Stop) or the shutdown); the report's
    /// section.
    pub fn finish(mut self, ceiling: bool) -> RsSummary {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        RsSummary {
            answer: if ceiling {
                "the reflector's echo of the router solicitation (--ceiling: no server; the \
                 generator's own RS/s)"
            } else {
                "router advertisement"
            }
            .to_owned(),
            rs_bytes: self.rs_len,
            nonce: NONCE_SCHEME.to_owned(),
            unexpected: self.unexpected(),
            malformed: self.malformed(),
        }
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens `min(clients, SOCKETS)` sockets on `--bind` (kernel-chosen ports) with kernel
/// receive timestamps, each in the epoll set; an error when not even one opens.
fn open_sockets(setup: &StormSetup, buffer: usize, ep: &OwnedFd) -> anyhow::Result<Vec<UdpSocket>> {
    let opts = UdpOptions {
        recv_buffer_size: Some(buffer),
        send_buffer_size: Some(buffer),
        ..UdpOptions::default()
    };
    let mut sockets = Vec::new();
    let mut first_error = None;
    for _ in 0..setup.clients.min(SOCKETS) {
        let opened = bind_udp_std(SocketAddrV4::new(setup.bind, 0), &opts).and_then(|s| {
            watch(ep, s.as_raw_fd(), sockets.len(), setup.gro)?;
            Ok(s)
        });
        match opened {
            Ok(s) => sockets.push(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a generator socket");
                first_error.get_or_insert(e);
            }
        }
    }
    if sockets.is_empty() {
        anyhow::bail!(
            "cannot open a client socket on {}: {}",
            setup.bind,
            first_error.map_or("no socket".to_owned(), |e| e.to_string())
        );
    }
    Ok(sockets)
}

/// The thread's loop.
fn run(shared: &Shared, shutdown: &Shutdown, mut st: Thread) {
    let count = u32::try_from(st.clients.len()).unwrap_or(u32::MAX);
    // The send times' origin on CLOCK_REALTIME (the clock of the kernel's timestamps).
    let rt_epoch = rt_epoch(shared);
    let mut pace = Pace::new(shared, |total| total * CATCH_UP.as_secs_f64());
    let mut cursor = 0u32;
    let (mut send, mut recv) = batches(st.template.bytes().len());
    let mut events = events();
    let mut tally = Tally::new();
    loop {
        if shutdown.is_triggered() {
            break;
        }
        match pace.on_control(count) {
            Step::Stop => break,
            Step::Ended => add_jitter(shared, &st.clients),
            Step::Go => {}
        }
        let owed = pace.owed(Instant::now());
        if owed > 0 {
            let counted = pace.counted(shared);
            let pass = st
                .passes
                .begin(realtime_ns().saturating_sub(rt_epoch), pace.trial());
            let failed = send_owed(&mut st, owed, &mut cursor, pass, &mut send);
            count_sent(shared, counted, owed);
            count_send_errors(shared, counted, failed);
        }
        let ready = epoll_wait(&st.ep, &mut events, pace.wait_ms());
        let trial_now = shared.trial_no.load(Ordering::Relaxed);
        for ev in ready {
            let Some(i) = usize::try_from(ev.u64)
                .ok()
                .filter(|i| *i < st.sockets.len())
            else {
                continue;
            };
            receive(&mut st, i, &mut recv, (rt_epoch, trial_now), &mut tally);
            tally.publish(shared);
        }
    }
    if pace.running() {
        add_jitter(shared, &st.clients);
    }
    let m = &shared.metrics.clients;
    m.with_label_values(&["probe"]).sub(i64::from(count));
    m.with_label_values(&["offline"]).add(i64::from(count));
}

/// Sends `owed` RSs of pass `pass`, dealt over the clients; returns how many failed.
/// Neighbouring clients share a socket: their RSs go out in one batch (one GSO send).
fn send_owed(st: &mut Thread, owed: u32, cursor: &mut u32, pass: u64, send: &mut SendBatch) -> u32 {
    let Thread {
        sockets,
        clients,
        template,
        key,
        to,
        ..
    } = st;
    send_dealt(
        (sockets, clients),
        (owed, cursor),
        send,
        |i, c, k, fd, send, pending| {
            let mut failed = 0u32;
            for _ in 0..k {
                let rs = template.stamp(key.encode(i, c.sent, pass));
                if !send.push(rs, *to, 0) {
                    failed += flush_batch(fd, send, pending);
                    if !send.push(template.bytes(), *to, 0) {
                        failed += 1;
                        continue;
                    }
                }
                c.sent = c.sent.wrapping_add(1);
                *pending += 1;
            }
            failed
        },
    )
}

/// Reads what socket `i` holds (up to a few batches), each answer to the RS its nonce
/// names.
fn receive(
    st: &mut Thread,
    i: usize,
    recv: &mut RecvBatch,
    (rt_epoch, trial_now): (u64, u32),
    tally: &mut Tally,
) {
    let Some(fd) = st.sockets.get(i).map(|s| s.as_raw_fd()) else {
        return;
    };
    let (mut unexpected, mut malformed) = (0u64, 0u64);
    for _ in 0..4 {
        let Ok(n) = recv.recv(fd, RECV_BATCH) else {
            break;
        };
        let fallback = realtime_ns();
        for j in 0..n {
            let d = recv.get(j);
            if d.truncated {
                malformed += 1;
                continue;
            }
            let arrived = d.kernel_time_ns.unwrap_or(fallback);
            let seg = d.segment_size.unwrap_or(d.data.len()).max(1);
            for one in d.data.chunks(seg) {
                match answer(st, one, arrived.saturating_sub(rt_epoch), trial_now, tally) {
                    Ok(()) => {}
                    Err(NotAnswer::Unexpected) => unexpected += 1,
                    Err(NotAnswer::Malformed) => malformed += 1,
                }
            }
        }
        if n < RECV_BATCH {
            break;
        }
    }
    st.not_answers
        .unexpected
        .fetch_add(unexpected, Ordering::Relaxed);
    st.not_answers
        .malformed
        .fetch_add(malformed, Ordering::Relaxed);
}

/// Why a datagram is not an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NotAnswer {
    Unexpected,
    Malformed,
}

/// One datagram's accounting; `arrived_ns` on the send times' clock.
fn answer(
    st: &mut Thread,
    data: &[u8],
    arrived_ns: u64,
    trial_now: u32,
    tally: &mut Tally,
) -> Result<(), NotAnswer> {
    let nonce = answer_nonce(data, st.expect).map_err(|_| NotAnswer::Malformed)?;
    let clients = &mut st.clients;
    let hit = match_nonce(st.key, nonce, &st.passes, |c| {
        clients.get(c as usize).map(|c| c.sent)
    })
    .ok_or(NotAnswer::Unexpected)?;
    let c = clients
        .get_mut(hit.client as usize)
        .ok_or(NotAnswer::Unexpected)?;
    let verdict = c.tracker.record(hit.seq);
    let current = hit.trial == trial_now && hit.trial != 0;
    if verdict == Verdict::Duplicate {
        if current {
            tally.duplicates += 1;
        }
        return Ok(());
    }
    let rtt = arrived_ns.saturating_sub(hit.sent_ns);
    c.tracker.transit(rtt);
    if !current {
        tally.late += 1;
        return Ok(());
    }
    tally.received += 1;
    if matches!(verdict, Verdict::OutOfOrder | Verdict::TooOld) {
        tally.out_of_order += 1;
    }
    tally.rtt_ns.push(rtt);
    Ok(())
}

/// Adds every client's jitter estimate to the trial's (when a trial drains).
fn add_jitter(shared: &Shared, clients: &[Client]) {
    add_jitters(shared, clients.iter().map(|c| &c.tracker));
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;
    use teredo_rt::batch::{enable_rx_timestamps, MAX_SEGMENTS};
    use teredo_rt::MAX_DATAGRAM;

    use teredo::addr::{server_link_local, LL_WINDOWS_RESTRICTED};
    use teredo::wire::auth::Auth;
    use teredo::wire::ndp::RaParams;

    use super::*;

    const KEY: NonceKey = NonceKey(0x5eed_0f20_2026);

    /// A thread state with `open` sockets on 127.0.0.1 for `clients`, sending to `to`.
    fn thread(open: usize, clients: u32, to: SocketAddr, expect: Expect) -> Thread {
        let sockets: Vec<UdpSocket> = (0..open)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_nonblocking(true).unwrap();
                enable_rx_timestamps(s.as_raw_fd()).unwrap();
                s
            })
            .collect();
        Thread {
            ep: epoll().unwrap(),
            sockets,
            clients: (0..clients)
                .map(|_| Client {
                    sent: 0,
                    tracker: SeqTracker::default(),
                })
                .collect(),
            template: RsTemplate::new(LL_WINDOWS_RESTRICTED, false).unwrap(),
            key: KEY,
            passes: Passes::default(),
            to,
            expect,
            not_answers: Arc::new(NotAnswers::default()),
        }
    }

    fn ra(nonce: Option<[u8; 8]>) -> Vec<u8> {
        let p = RaParams {
            auth: nonce.map(Auth::nonce_only),
            origin: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 10), 40_000),
            src: server_link_local(Ipv4Addr::new(198, 51, 100, 1)),
            dst: LL_WINDOWS_RESTRICTED,
            primary: Ipv4Addr::new(198, 51, 100, 1),
            mtu: Some(1280),
        };
        let mut b = vec![0u8; p.buffer_len()];
        p.emit(&mut b).unwrap();
        b
    }

    #[test]
    fn every_client_sends_its_own_stamped_rs_from_its_socket() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let expect = Expect::Advertisement {
            to: LL_WINDOWS_RESTRICTED,
        };
        // Three clients on two sockets: clients 0 and 1 share the first.
        let mut st = thread(2, 3, server.local_addr().unwrap(), expect);
        let ports: Vec<SocketAddr> = st.sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        let pass = st.passes.begin(123, 1);
        let mut send = SendBatch::new(MAX_SEGMENTS, 64 * 1024, true);
        let mut cursor = 0;
        assert_eq!(send_owed(&mut st, 6, &mut cursor, pass, &mut send), 0);
        let mut got = Vec::new();
        let mut buf = [0u8; 200];
        for _ in 0..6 {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let pkt = teredo::wire::TeredoPacket::parse(&buf[..n]).unwrap();
            teredo::wire::ndp::RouterSolicitation::parse(pkt.ipv6).unwrap();
            let m = match_nonce(KEY, pkt.auth.unwrap().nonce, &st.passes, |c| {
                st.clients.get(c as usize).map(|c| c.sent)
            })
            .expect("a nonce we sent");
            assert_eq!((m.sent_ns, m.trial), (123, 1));
            let socket = if m.client < 2 { ports[0] } else { ports[1] };
            assert_eq!(from, socket, "client {} from its socket", m.client);
            got.push((m.client, m.seq));
        }
        got.sort_unstable();
        assert_eq!(got, [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]);
        assert!(st.clients.iter().all(|c| c.sent == 2));
    }

    #[test]
    fn answers_are_matched_and_bad_ones_counted() {
        let expect = Expect::Advertisement {
            to: LL_WINDOWS_RESTRICTED,
        };
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut st = thread(1, 2, server.local_addr().unwrap(), expect);
        let client = st.sockets[0].local_addr().unwrap();
        let sent_at = realtime_ns();
        let old = st.passes.begin(sent_at, 1);
        let pass = st.passes.begin(sent_at, 2);
        st.clients[0].sent = 3;
        st.clients[1].sent = 1;
        let ok = ra(Some(KEY.encode(0, 2, pass)));
        for d in [
            ok.clone(),
            ok.clone(),                                                 // duplicate
            ra(Some(KEY.encode(1, 0, old))),                            // an earlier trial's: late
            ra(Some(KEY.encode(0, 7, pass))),                           // never sent: unexpected
            ra(Some(KEY.encode(5, 0, pass))), // no such client: unexpected
            ra(None),                         // no nonce: malformed
            b"not teredo".to_vec(),           // malformed
            st.template.clone().stamp(KEY.encode(0, 1, pass)).to_vec(), // an RS: malformed
        ] {
            server.send_to(&d, client).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut recv = RecvBatch::new(RECV_BATCH, MAX_DATAGRAM + 1).with_control();
        let mut tally = Tally::default();
        receive(&mut st, 0, &mut recv, (0, 2), &mut tally);
        assert_eq!(
            (tally.received, tally.duplicates, tally.late),
            (1, 1, 1),
            "one answer, one duplicate, one late"
        );
        assert_eq!(st.not_answers.unexpected.load(Ordering::Relaxed), 2);
        assert_eq!(st.not_answers.malformed.load(Ordering::Relaxed), 3);
        assert_eq!(tally.rtt_ns.len(), 1);
        let rtt = tally.rtt_ns[0];
        assert!(
            rtt > 0 && rtt < 10_000_000_000,
            "kernel arrival - send time: {rtt}"
        );
        // With --ceiling the echoed RS is the answer, and an RA is not.
        let mut echo = thread(
            1,
            1,
            server.local_addr().unwrap(),
            Expect::EchoedSolicitation,
        );
        let to = echo.sockets[0].local_addr().unwrap();
        let p = echo.passes.begin(realtime_ns(), 1);
        echo.clients[0].sent = 1;
        let rs = echo.template.clone().stamp(KEY.encode(0, 0, p)).to_vec();
        server.send_to(&rs, to).unwrap();
        server.send_to(&ra(Some(KEY.encode(0, 0, p))), to).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut tally = Tally::default();
        receive(&mut echo, 0, &mut recv, (0, 1), &mut tally);
        assert_eq!(tally.received, 1);
        assert_eq!(echo.not_answers.malformed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn tokio_cannot_storm_and_the_error_says_why() {
        let e = engine(Some(Engine::Tokio)).unwrap_err().to_string();
        assert!(
            e.starts_with("--engine tokio cannot run --phase rs: "),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        assert_eq!(engine(None).unwrap(), Engine::Mmsg);
        assert_eq!(engine(Some(Engine::Mmsg)).unwrap(), Engine::Mmsg);
        assert_eq!(rs_len(Profile::Vista).unwrap(), 13 + 40 + 8);
        assert_eq!(rs_len(Profile::XpSp2).unwrap(), 13 + 40 + 24);
    }
}
