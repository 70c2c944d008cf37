//! What the `mmsg` engine's generator threads ([`super::mmsg`] for `--ceiling`,
//! [`super::mmsg_teredo`] for the Teredo data trials, [`super::rs_storm`] for the RS storm)
//! share around their own sending and receiving:
//!
//! * `Pace`: the coordinator's [`Control`] turned into a token bucket for the total rate
//!   and sending passes [`tick`] apart; each engine gives its own bucket burst;
//! * the realtime epoch of the send stamps (`rt_epoch`, `realtime_ns`);
//! * the send counters of a pass (`count_sent`, `count_send_errors`);
//! * the epoll set (`epoll`, `watch` for a socket, `epoll_wait`) and the batch buffers
//!   (`batches`).

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use teredo_rt::batch::{enable_rx_timestamps, enable_udp_gro, RecvBatch, SendBatch, MAX_SEGMENTS};
use teredo_rt::MAX_DATAGRAM;
use tokio::sync::watch;

use super::pacing::TokenBucket;
use super::worker::{Control, Shared};

/// Datagrams per `recvmmsg`.
pub(super) const RECV_BATCH: usize = 64;

/// Most packets one pass of the loop sends (then it reads answers again).
pub(super) const MAX_PER_PASS: u32 = 16_384;

/// Ready sockets one `epoll_wait` returns.
pub(super) const EVENTS: usize = 256;

/// Longest wait in `epoll_wait`, milliseconds (the loop looks at the control channel and
/// the shutdown at least this often).
const MAX_WAIT_MS: i32 = 10;

/// Packets a client should have owed when its turn comes, where [`MAX_TICK`] allows: runs
/// are what `UDP_SEGMENT` and the reflector's `UDP_GRO` turn into one send and one receive.
pub const MIN_RUN: f64 = 8.0;

/// Sending passes are at least this far apart…
pub const MIN_TICK: Duration = Duration::from_millis(1);

/// …and at most this far (the burst a pass sends stays a few milliseconds' worth).
pub const MAX_TICK: Duration = Duration::from_millis(5);

/// Time between sending passes at `total` pps over `clients`: long enough for runs of
/// [`MIN_RUN`], within [`MIN_TICK`]..[`MAX_TICK`].
pub fn tick(total: f64, clients: u32) -> Duration {
    let secs = MIN_RUN * f64::from(clients.max(1)) / total.max(1.0);
    Duration::from_secs_f64(secs.clamp(MIN_TICK.as_secs_f64(), MAX_TICK.as_secs_f64()))
}

/// CLOCK_REALTIME now, nanoseconds (the clock of the kernel's receive timestamps).
pub(super) fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The send stamps' origin on CLOCK_REALTIME: the run's epoch (`shared.epoch`).
pub(super) fn rt_epoch(shared: &Shared) -> u64 {
    realtime_ns()
        .saturating_sub(u64::try_from(shared.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// A new epoll set.
pub(super) fn epoll() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 has no memory-safety preconditions.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Readies generator socket `fd` and adds it to `ep` as entry `index`: kernel receive
/// timestamps on (needed), `UDP_GRO` when `gro` (optional).
pub(super) fn watch(ep: &OwnedFd, fd: RawFd, index: usize, gro: bool) -> io::Result<()> {
    enable_rx_timestamps(fd)?;
    if gro {
        let _ = enable_udp_gro(fd);
    }
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: index as u64,
    };
    // SAFETY: valid descriptors and an event we own.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &raw mut ev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A buffer for [`EVENTS`] ready sockets.
pub(super) fn events() -> Vec<libc::epoll_event> {
    vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS]
}

/// Waits up to `timeout_ms` for ready sockets of `ep`; returns the ones ready (none on
/// timeout or error).
pub(super) fn epoll_wait<'e>(
    ep: &OwnedFd,
    events: &'e mut [libc::epoll_event],
    timeout_ms: i32,
) -> &'e [libc::epoll_event] {
    let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `events` is a buffer of at least `max` entries we own.
    let ready = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
    let n = usize::try_from(ready).unwrap_or(0).min(events.len());
    &events[..n]
}

/// The send and receive batches for datagrams of about `packet` bytes.
pub(super) fn batches(packet: usize) -> (SendBatch, RecvBatch) {
    let bytes = (MAX_SEGMENTS * packet).min(64 * 1024);
    let send = SendBatch::new(MAX_SEGMENTS, bytes * 4, true);
    let recv = RecvBatch::new(RECV_BATCH, MAX_DATAGRAM + 1).with_control();
    (send, recv)
}

/// `owed` packets a pass sends, counted for the trial and in the metrics when `counted`.
pub(super) fn count_sent(shared: &Shared, counted: bool, owed: u32) {
    if counted {
        shared
            .trial
            .sent
            .fetch_add(u64::from(owed), Ordering::Relaxed);
        shared.metrics.sent.inc_by(u64::from(owed));
    }
}

/// `failed` of a pass's sends, counted for the trial when `counted` and in the metrics.
pub(super) fn count_send_errors(shared: &Shared, counted: bool, failed: u32) {
    if counted {
        shared
            .trial
            .send_errors
            .fetch_add(u64::from(failed), Ordering::Relaxed);
    }
    shared.metrics.send_errors.inc_by(u64::from(failed));
}

/// What a control change asks of the loop.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Go on.
    Go,
    /// A trial ended (drain, qualify, warm-up after one): the loop records its jitter.
    Ended,
    /// End the loop.
    Stop,
}

/// The coordinator's control, as token bucket and sending passes.
pub(super) struct Pace {
    control: watch::Receiver<Control>,
    /// The bucket's burst for a total rate.
    burst: fn(f64) -> f64,
    bucket: Option<TokenBucket>,
    every: Duration,
    next_pass: Instant,
    trial: u32,
}

impl Pace {
    /// Follows `shared.control`; a trial's bucket gets `burst(total rate)` tokens of burst.
    pub(super) fn new(shared: &Shared, burst: fn(f64) -> f64) -> Self {
        Self {
            control: shared.control.clone(),
            burst,
            bucket: None,
            every: MIN_TICK,
            next_pass: Instant::now(),
            trial: 0,
        }
    }

    /// Reads a control change, if any, for `count` clients.
    pub(super) fn on_control(&mut self, count: u32) -> Step {
        if !self.control.has_changed().unwrap_or(true) {
            return Step::Go;
        }
        let ctl = *self.control.borrow_and_update();
        match ctl {
            Control::Stop => Step::Stop,
            Control::Run {
                trial,
                rate,
                senders,
                start,
            } => {
                let total = rate * f64::from(senders.max(1));
                self.trial = trial;
                self.every = tick(total, count);
                self.next_pass = Instant::now();
                self.bucket = Some(TokenBucket::new(
                    total,
                    (self.burst)(total),
                    0.0,
                    start.min(Instant::now()),
                ));
                Step::Go
            }
            Control::Drain | Control::Qualify | Control::Warmup { .. } => {
                if self.bucket.take().is_some() {
                    Step::Ended
                } else {
                    Step::Go
                }
            }
        }
    }

    /// Packets to send in a pass at `now` (0 between passes and outside trials); the next
    /// pass is then one tick later.
    pub(super) fn owed(&mut self, now: Instant) -> u32 {
        match self.bucket.as_mut().filter(|_| now >= self.next_pass) {
            Some(b) => {
                self.next_pass = now + self.every;
                b.take(now, MAX_PER_PASS)
            }
            None => 0,
        }
    }

    /// The trial being run (0 before the first).
    pub(super) fn trial(&self) -> u32 {
        self.trial
    }

    /// Whether what is sent now counts for the coordinator's current trial.
    pub(super) fn counted(&self, shared: &Shared) -> bool {
        self.trial != 0 && self.trial == shared.trial_no.load(Ordering::Relaxed)
    }

    /// Whether a trial is running (its jitter not yet recorded).
    pub(super) fn running(&self) -> bool {
        self.bucket.is_some()
    }

    /// How long `epoll_wait` may wait, milliseconds: until the next pass or token, at most
    /// [`MAX_WAIT_MS`].
    pub(super) fn wait_ms(&self) -> i32 {
        match &self.bucket {
            Some(b) => {
                let wait = b
                    .next_at()
                    .max(self.next_pass)
                    .saturating_duration_since(Instant::now());
                i32::try_from(wait.as_micros().div_ceil(1000))
                    .unwrap_or(MAX_WAIT_MS)
                    .min(MAX_WAIT_MS)
            }
            None => MAX_WAIT_MS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_are_spaced_for_runs() {
        // 100 clients at 800 k pps: 1 ms already gives runs of 8.
        assert_eq!(tick(800_000.0, 100), MIN_TICK);
        // 1000 clients at 400 k pps: 20 ms would, 5 ms is the cap.
        assert_eq!(tick(400_000.0, 1000), MAX_TICK);
        let t = tick(400_000.0, 150);
        assert!((t.as_secs_f64() - 0.003).abs() < 1e-9, "{t:?}");
        assert_eq!(tick(0.0, 0), MAX_TICK);
    }

    #[test]
    fn an_empty_epoll_set_times_out_with_nothing_ready() {
        let ep = epoll().unwrap();
        let mut ev = events();
        assert!(epoll_wait(&ep, &mut ev, 0).is_empty());
    }
}
