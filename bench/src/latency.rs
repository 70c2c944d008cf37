//! RS→RA latency at a fixed paced rate: every RS carries a sequence number as its nonce
//! (the UDP checksum fixed per frame), the send time of each is kept, and a receiver thread
//! on the generator's CPU reads the RAs from an `AF_PACKET` socket with kernel receive
//! timestamps (taken when the server's RA enters the generator's interface, so the
//! generator's own scheduling does not count) and matches them by the echoed nonce.
//!
//! The generator sends small bursts (about `burst_us` worth of frames, 50 µs by default):
//! a burst of 64 frames at 107 k/s would queue 600 µs of work in front of its last frame
//! and measure the generator, not the server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use hdrhistogram::Histogram;

use crate::afpacket::PacketSocket;
use crate::rs::{parse_ra_frame, set_nonce, SERVER_SECONDARY};

/// What one latency run measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LatencyRun {
    /// Rate asked for (RS/s).
    pub rate: f64,
    /// RS sent.
    pub sent: u64,
    /// Seconds the generator ran.
    pub secs: f64,
    /// RS/s actually offered.
    pub offered_pps: f64,
    /// Distinct RS answered by an RA echoing their nonce.
    pub answered: u64,
    /// RAs whose nonce matched no RS sent, or answered one already (should be 0).
    pub unmatched: u64,
    /// 1 − answered / sent.
    pub loss: f64,
    /// RAs from the secondary address (the cone solicitations' answers).
    pub from_secondary: u64,
    /// True when every RA had a kernel receive timestamp (else user-space receive time).
    pub kernel_timestamps: bool,
    /// Frames per burst.
    pub burst: usize,
    /// Latency percentiles and extremes, µs.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// CPU of the server's processes during the run (100 = one core).
    pub device_cpu: f64,
    /// CPU other processes on the machine used meanwhile (100 = one core): how quiet it was.
    pub other_cpu: f64,
}

/// An RA seen: (nonce, receive time in ns, from the secondary address).
type Seen = (u64, u64, bool);

/// CLOCK_REALTIME in ns (the clock of the kernel's receive timestamps).
fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sends RS frames built from `templates` (cycled; see [`crate::rs::rs_frames`]) on `tx` at
/// `rate` for `duration`, receives the RAs on `rx_if` and returns the latency
/// distribution. Call inside the generator's namespace, pinned to its CPU (the receiver
/// thread inherits both).
pub fn measure(
    tx: &PacketSocket,
    rx_if: &str,
    templates: &[Vec<u8>],
    rate: f64,
    duration: Duration,
    burst_us: f64,
    stop: &AtomicBool,
) -> Result<LatencyRun> {
    anyhow::ensure!(!templates.is_empty() && rate > 0.0, "nothing to send");
    let rx = PacketSocket::timestamped_receiver(rx_if, 64 << 20)?;
    let burst = ((rate * burst_us / 1e6).round() as usize).clamp(1, crate::afpacket::BATCH);
    let interval = Duration::from_secs_f64(burst as f64 / rate);
    // Bounded memory: at most the planned count (plus a burst) is sent and recorded.
    let planned = (rate * duration.as_secs_f64()) as usize + burst;
    let mut send_ns: Vec<u64> = Vec::with_capacity(planned);
    let sender_done = AtomicBool::new(false);

    // SAFETY: prctl(PR_SET_TIMERSLACK) on the calling thread; 1 µs slack for the pacing
    // sleeps.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000u64, 0u64, 0u64, 0u64) };

    let (received, stamped, secs) = std::thread::scope(|s| -> Result<_> {
        let receiver = s.spawn(|| -> Result<(Vec<Seen>, bool)> {
            let mut seen: Vec<Seen> = Vec::with_capacity(planned + 1024);
            let mut buf = vec![0u8; 2048];
            let mut all_stamped = true;
            let mut quiet_since: Option<Instant> = None;
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let done = sender_done.load(Ordering::Acquire);
                if done && quiet_since.is_some_and(|q| q.elapsed() > Duration::from_millis(300)) {
                    break;
                }
                match rx.recv_timestamped(&mut buf, Duration::from_millis(20))? {
                    Some((n, pkttype, stamp)) => {
                        quiet_since = None;
                        if pkttype == libc::PACKET_OUTGOING {
                            continue;
                        }
                        let Some(ra) = parse_ra_frame(&buf[..n]) else {
                            continue;
                        };
                        let t = stamp.unwrap_or_else(|| {
                            all_stamped = false;
                            realtime_ns()
                        });
                        if seen.len() < seen.capacity() {
                            seen.push((ra.nonce, t, *ra.from.ip() == SERVER_SECONDARY));
                        }
                    }
                    None => {
                        if done && quiet_since.is_none() {
                            quiet_since = Some(Instant::now());
                        }
                    }
                }
            }
            Ok((seen, all_stamped))
        });

        // The sender (this thread).
        let mut slots: Vec<Vec<u8>> = (0..burst)
            .map(|i| templates[i % templates.len()].clone())
            .collect();
        let start = Instant::now();
        let mut next = start;
        let mut seq: u64 = 0;
        while !stop.load(Ordering::Relaxed) && send_ns.len() + burst <= planned {
            let now = Instant::now();
            if now >= start + duration {
                break;
            }
            if now < next {
                let wait = next - now;
                if wait > Duration::from_micros(20) {
                    std::thread::sleep(wait - Duration::from_micros(10));
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            // Fell behind by more than a few bursts: do not catch up in one go.
            if now > next + 4 * interval {
                next = now;
            }
            next += interval;
            for slot in &mut slots {
                let t = &templates[(seq as usize) % templates.len()];
                slot.copy_from_slice(t);
                set_nonce(slot, seq);
                seq += 1;
            }
            let refs: Vec<&[u8]> = slots.iter().map(Vec::as_slice).collect();
            let t = realtime_ns();
            let sent = tx.send_frames(&refs);
            // Frames the kernel refused are never answered: record them as sent (lost).
            send_ns.extend(std::iter::repeat_n(t, slots.len()));
            let _ = sent;
        }
        let secs = start.elapsed().as_secs_f64();
        sender_done.store(true, Ordering::Release);
        let (received, stamped) = match receiver.join() {
            Ok(r) => r?,
            Err(p) => std::panic::resume_unwind(p),
        };
        Ok((received, stamped, secs))
    })?;

    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).context("latency histogram")?;
    let mut answered = vec![false; send_ns.len()];
    let mut run = LatencyRun {
        rate,
        sent: send_ns.len() as u64,
        secs,
        offered_pps: send_ns.len() as f64 / secs.max(1e-9),
        kernel_timestamps: stamped,
        burst,
        ..LatencyRun::default()
    };
    for (nonce, t, secondary) in received {
        let Some(sent_at) = usize::try_from(nonce)
            .ok()
            .and_then(|i| send_ns.get(i).map(|s| (i, *s)))
        else {
            run.unmatched += 1;
            continue;
        };
        let (i, sent_at) = sent_at;
        if answered[i] {
            run.unmatched += 1;
            continue;
        }
        answered[i] = true;
        run.answered += 1;
        run.from_secondary += u64::from(secondary);
        hist.saturating_record(t.saturating_sub(sent_at).max(1));
    }
    run.loss = if run.sent == 0 {
        1.0
    } else {
        1.0 - run.answered as f64 / run.sent as f64
    };
    let us = |ns: u64| ns as f64 / 1e3;
    if run.answered > 0 {
        run.p50_us = us(hist.value_at_quantile(0.5));
        run.p90_us = us(hist.value_at_quantile(0.9));
        run.p99_us = us(hist.value_at_quantile(0.99));
        run.p999_us = us(hist.value_at_quantile(0.999));
        run.max_us = us(hist.max());
        run.mean_us = hist.mean() / 1e3;
    }
    Ok(run)
}
