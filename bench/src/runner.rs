//! Measurement: trust set-up, steps (one paced or unpaced generator run and what came
//! out), cells (flood, throughput search, saturation) — all on the calling thread, which
//! must be inside the `gen` namespace and pinned to [`crate::topo::GEN_CPU`].

use std::collections::HashSet;
use std::net::{Ipv6Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::afpacket::{blast, FrameRing, Offered, PacketSocket};
use crate::afxdp::{AfXdpSender, GeneratorKind};
use crate::frames::{
    direct_bubble_frame, ipv6_addrs, n2t_frame, parse_udp4_frame, t2n_frame, Peer, Udp4,
    NATIVE_HOST, PEER_V4, RELAY_PORT, RELAY_V4, SERVER_V4, TEREDO_PORT,
};
use crate::procfs::{self, DevCounters};
use crate::search::{passes, RateSearch};
use crate::topo::{ns_usage, Topology, GEN_CPU, INET_IF, NATIVE_IF, RELAY_CPU, TUN_IF};

/// Receives at most `max` frames on `rx`, waiting for the first until `until` and not at
/// all for the others, and hands each Teredo datagram to `f` with the inner IPv6 source and
/// destination: the bubble exchanges of [`establish_trust`] and of the `--memory` fill.
pub(crate) fn drain_teredo(
    rx: &PacketSocket,
    buf: &mut [u8],
    until: Instant,
    max: usize,
    mut f: impl FnMut(&Udp4<'_>, Ipv6Addr, Ipv6Addr),
) -> Result<()> {
    for i in 0..max {
        let wait = if i == 0 {
            until.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        let Some((n, _)) = rx.recv(buf, wait)? else {
            break;
        };
        let Some(u) = parse_udp4_frame(&buf[..n]) else {
            continue;
        };
        let Some((src6, dst6)) = ipv6_addrs(u.payload) else {
            continue;
        };
        f(&u, src6, dst6);
    }
    Ok(())
}

/// Set by SIGINT/SIGTERM: every loop checks it.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Fails with "interrupted" once [`STOP`] is set.
pub fn check_stop() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, in slices, returning early (with an error) on [`STOP`].
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_stop()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

/// Traffic direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Teredo peers → native host.
    T2n,
    /// Native host → Teredo peers.
    N2t,
    /// Router solicitations → router advertisements (`server-bench`: the "peers" are the
    /// clients).
    RsRa,
}

impl Direction {
    /// `t2n` / `n2t`.
    pub fn name(self) -> &'static str {
        match self {
            Self::T2n => "t2n",
            Self::N2t => "n2t",
            Self::RsRa => "rs-ra",
        }
    }

    /// The generator interface that receives the relay's output in this direction.
    pub fn sink_if(self) -> &'static str {
        match self {
            Self::T2n => NATIVE_IF,
            Self::N2t | Self::RsRa => INET_IF,
        }
    }
}

/// Timing knobs of one cell.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct CellPlan {
    /// Unpaced flood before the search (when there is no earlier estimate), seconds; 0 to
    /// skip.
    pub flood_secs: f64,
    /// First rate of the search when there is no earlier estimate (pps).
    pub start_rate: f64,
    /// Length of each search step, seconds.
    pub step_secs: f64,
    /// Search steps at most.
    pub steps: u32,
    /// Bracketing factor up (a step passed, nothing failed yet).
    pub up: f64,
    /// Bracketing factor down (a step failed, nothing passed yet).
    pub down: f64,
    /// Relative width at which the search stops.
    pub resolution: f64,
    /// Loss allowed at the throughput rate (fraction).
    pub max_loss: f64,
    /// Saturation run, seconds.
    pub saturation_secs: f64,
    /// Saturation load (pps), the same for every device of a cell so that their results
    /// compare; `None`: `saturation_factor` × the device's own throughput.
    pub saturation_rate: Option<f64>,
    /// Saturation load as a multiple of the device's throughput (when no fixed rate).
    pub saturation_factor: f64,
}

/// One generator run and what came out of the device.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Step {
    /// Paced rate asked for (`None`: unpaced).
    pub rate: Option<f64>,
    /// What the generator sent.
    pub offered: Offered,
    /// Frames that came out on the sink interface (rx_packets + rx_dropped there).
    pub received: u64,
    /// 1 − received / sent.
    pub loss: f64,
    /// received / duration of the generator run.
    pub received_pps: f64,
    /// CPU of the device's processes (100 = one core).
    pub device_cpu: f64,
    /// Busy share of the device's CPU (process + kernel + softirq), percent.
    pub relay_cpu_busy: f64,
    /// Busy share of the generator's CPU, percent.
    pub gen_cpu_busy: f64,
    /// CPU used by other user-space processes on the machine meanwhile (100 = one core;
    /// processes that exited during the step are missed): how quiet it was.
    pub other_cpu: f64,
    /// Passed the loss criterion (search steps only).
    pub pass: Option<bool>,
    /// Where packets were lost (saturation runs only).
    pub drops: Option<Drops>,
}

/// Kernel counters that tell where packets were lost.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Drops {
    /// Relay namespace: UDP receive-buffer overflows (Teredo→native input).
    pub udp_rcvbuf_errors: u64,
    /// Relay namespace: TUN transmit drops (native→Teredo, queue full).
    pub tun_tx_dropped: u64,
    /// Relay namespace: receive drops on its Internet veth (backlog full on its CPU).
    pub relay_inet_rx_dropped: u64,
    /// Relay namespace: receive drops on its native veth.
    pub relay_native_rx_dropped: u64,
    /// Generator namespace: receive drops on the sink interface (counted as received).
    pub sink_rx_dropped: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct RelayNsCounters {
    rcvbuf: u64,
    tun: DevCounters,
    inet: DevCounters,
    native: DevCounters,
}

fn relay_ns_counters(topo: &Topology) -> RelayNsCounters {
    topo.relay
        .run_in(|| {
            Ok(RelayNsCounters {
                rcvbuf: procfs::udp_rcvbuf_errors(),
                tun: procfs::dev_counters(TUN_IF),
                inet: procfs::dev_counters(INET_IF),
                native: procfs::dev_counters(NATIVE_IF),
            })
        })
        .unwrap_or_default()
}

/// Result of the trust set-up.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TrustReport {
    /// Peers made trusted.
    pub peers: u32,
    /// Indirect bubbles the relay sent to the (simulated) server.
    pub indirect_bubbles: u64,
    /// Rounds of native packets it took.
    pub rounds: u32,
    /// Peers still unconfirmed after each round.
    pub pending_after_round: Vec<usize>,
    /// Seconds it took.
    pub secs: f64,
}

/// The generator's sockets (opened once, in the `gen` namespace), and the AF_XDP generator
/// when it sends the measured traffic (the `AF_PACKET` sockets still send the set-up
/// traffic).
#[derive(Debug)]
pub struct Generator {
    /// Transmit socket on the Internet link.
    pub inet: PacketSocket,
    /// Transmit socket on the native link.
    pub native: PacketSocket,
    /// `--generator afxdp`.
    pub afxdp: Option<AfXdpSender>,
}

impl Generator {
    /// Opens both transmit sockets, and the AF_XDP ones for [`GeneratorKind::Afxdp`] (call
    /// inside `gen`).
    pub fn open(kind: GeneratorKind) -> Result<Self> {
        Ok(Self {
            inet: PacketSocket::transmitter(INET_IF)?,
            native: PacketSocket::transmitter(NATIVE_IF)?,
            afxdp: match kind {
                GeneratorKind::Afpacket => None,
                GeneratorKind::Afxdp => Some(AfXdpSender::open()?),
            },
        })
    }

    /// Which generator sends the measured traffic.
    pub fn kind(&self) -> GeneratorKind {
        if self.afxdp.is_some() {
            GeneratorKind::Afxdp
        } else {
            GeneratorKind::Afpacket
        }
    }

    /// Sends `d`'s frames from `ring` for `duration`, unpaced or at `rate`, with the
    /// selected generator.
    pub fn blast(
        &self,
        d: Direction,
        ring: &mut FrameRing,
        rate: Option<f64>,
        duration: Duration,
        stop: &AtomicBool,
    ) -> Result<Offered> {
        let sock = self.socket(d);
        match &self.afxdp {
            Some(x) => x.blast(sock.ifname(), ring, rate, duration, stop),
            None => Ok(blast(sock, ring, rate, duration, stop)),
        }
    }

    /// The socket that sends `d`'s traffic.
    pub fn socket(&self, d: Direction) -> &PacketSocket {
        match d {
            Direction::T2n | Direction::RsRa => &self.inet,
            Direction::N2t => &self.native,
        }
    }
}

/// The relay address the peers send to.
pub const RELAY: SocketAddrV4 = SocketAddrV4::new(RELAY_V4, RELAY_PORT);

/// Makes `peers` trusted the real way: the native host sends one packet to each peer's
/// Teredo address; the relay queues it and sends an indirect bubble to the peer's server
/// (198.51.100.1:3544, played here); the peer answers from its mapping with a direct bubble
/// to the bubble's origin, addressed to the bubble's IPv6 source; the relay trusts the peer
/// and releases the queued packet, whose arrival confirms the peer.
///
/// Native packets and answers are paced (about 8 k and 16 k per second): relays give up
/// on a peer after four unanswered bubbles (for 300 s), so a burst that overflows a queue
/// would lose peers for good. Peers not confirmed 3 s after the last native packet of a
/// round get another one (up to 4 rounds).
pub fn establish_trust(gen: &Generator, peers: &[Peer]) -> Result<TrustReport> {
    const SLICE: Duration = Duration::from_millis(2);
    const TRIGGERS_PER_SLICE: usize = 16;
    const REPLIES_PER_SLICE: usize = 32;
    let start = Instant::now();
    let rx = PacketSocket::receiver(INET_IF, 64 << 20)?;
    let mut pending: HashSet<u32> = peers.iter().map(|p| p.index).collect();
    let wanted = pending.clone();
    let mut report = TrustReport::default();
    let mut buf = vec![0u8; 2048];
    let server = SocketAddrV4::new(SERVER_V4, TEREDO_PORT);
    for round in 0..4 {
        if pending.is_empty() {
            break;
        }
        report.rounds = round + 1;
        let triggers: Vec<Vec<u8>> = peers
            .iter()
            .filter(|p| pending.contains(&p.index))
            .map(n2t_frame)
            .collect();
        let mut sent_triggers = 0;
        let mut replies: std::collections::VecDeque<Vec<u8>> = Default::default();
        let mut next_slice = Instant::now();
        let mut window_end: Option<Instant> = None;
        loop {
            check_stop()?;
            let now = Instant::now();
            if now >= next_slice {
                next_slice = now + SLICE;
                let end = (sent_triggers + TRIGGERS_PER_SLICE).min(triggers.len());
                let refs: Vec<&[u8]> = triggers[sent_triggers..end]
                    .iter()
                    .map(Vec::as_slice)
                    .collect();
                gen.native.send_frames(&refs);
                sent_triggers = end;
                let k = replies.len().min(REPLIES_PER_SLICE);
                let batch: Vec<Vec<u8>> = replies.drain(..k).collect();
                let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                gen.inet.send_frames(&refs);
            }
            if sent_triggers == triggers.len() && window_end.is_none() {
                window_end = Some(now + Duration::from_secs(3));
            }
            let done = pending.is_empty() || window_end.is_some_and(|w| now >= w);
            if done && replies.is_empty() {
                break;
            }
            // Drain what arrived (bounded per pass), waiting at most until the next slice.
            drain_teredo(&rx, &mut buf, next_slice, 256, |u, src6, dst6| {
                if u.dst == server {
                    // An indirect bubble: answer for its destination.
                    if let Some(p) = Peer::from_addr(&dst6).filter(|p| wanted.contains(&p.index)) {
                        report.indirect_bubbles += 1;
                        replies.push_back(direct_bubble_frame(&p, u.src, src6));
                    }
                } else if *u.dst.ip() == PEER_V4 && src6 == NATIVE_HOST {
                    // Data for a peer: the queued packet, released.
                    if let Some(p) = Peer::from_addr(&dst6).filter(|p| u.dst == p.mapped) {
                        pending.remove(&p.index);
                    }
                }
            })?;
        }
        report.pending_after_round.push(pending.len());
    }
    if !pending.is_empty() {
        bail!(
            "{} of {} peers still not trusted after {} rounds ({} indirect bubbles seen; \
             unconfirmed after each round: {:?})",
            pending.len(),
            peers.len(),
            report.rounds,
            report.indirect_bubbles,
            report.pending_after_round
        );
    }
    report.peers = peers.len() as u32;
    report.secs = start.elapsed().as_secs_f64();
    Ok(report)
}

/// The frames of one direction, one per peer.
pub fn frames(dir: Direction, peers: &[Peer]) -> Vec<Vec<u8>> {
    match dir {
        Direction::T2n => peers.iter().map(|p| t2n_frame(p, RELAY)).collect(),
        Direction::N2t => peers.iter().map(n2t_frame).collect(),
        Direction::RsRa => crate::rs::rs_frames(
            (peers.len() as u32).min(crate::rs::MAX_SOURCES),
            crate::rs::RsKind::Mix,
        ),
    }
}

/// A direct bubble from every peer (refreshes the relay's "last received" so that
/// native→Teredo traffic keeps flowing past the 30 s validity).
pub fn refresh_frames(peers: &[Peer]) -> Vec<Vec<u8>> {
    let ll: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xffff, 0xffff, 0xffff);
    peers
        .iter()
        .map(|p| direct_bubble_frame(p, RELAY, ll))
        .collect()
}

/// Everything one cell needs.
#[derive(Debug)]
pub struct CellCtx<'a> {
    /// Namespaces.
    pub topo: &'a Topology,
    /// Sockets.
    pub gen: &'a Generator,
    /// Direction.
    pub dir: Direction,
    /// Frames to cycle through.
    pub ring: FrameRing,
    /// Direct bubbles sent before each native→Teredo step.
    pub refresh: Vec<Vec<u8>>,
}

impl CellCtx<'_> {
    /// One generator run at `rate` (unpaced if `None`) for `secs`; waits for the device to
    /// drain (the sink counter stops moving, ≤ 0.5 s) before counting what came out.
    pub fn step(&mut self, rate: Option<f64>, secs: f64, with_drops: bool) -> Result<Step> {
        check_stop()?;
        if self.dir == Direction::N2t {
            let refs: Vec<&[u8]> = self.refresh.iter().map(Vec::as_slice).collect();
            self.gen.inet.send_frames(&refs);
            sleep(Duration::from_millis(40))?;
        }
        let sink = self.dir.sink_if();
        let relay_before = with_drops.then(|| relay_ns_counters(self.topo));
        let before = procfs::dev_counters(sink);
        let mut exclude = self.topo.relay.pids().unwrap_or_default();
        exclude.push(std::process::id());
        let others0 = procfs::user_process_ticks(&exclude);
        let (ticks0, _, _) = ns_usage(&self.topo.relay);
        let cpu1_0 = procfs::cpu_times(RELAY_CPU);
        let cpu0_0 = procfs::cpu_times(GEN_CPU);
        let offered = self.gen.blast(
            self.dir,
            &mut self.ring,
            rate,
            Duration::from_secs_f64(secs),
            &STOP,
        )?;
        let (ticks1, _, _) = ns_usage(&self.topo.relay);
        let cpu1_1 = procfs::cpu_times(RELAY_CPU);
        let cpu0_1 = procfs::cpu_times(GEN_CPU);
        let others1 = procfs::user_process_ticks(&exclude);
        check_stop()?;
        // Drain: wait until the sink counter stops moving.
        let mut last = procfs::dev_counters(sink);
        let drain_end = Instant::now() + Duration::from_millis(500);
        std::thread::sleep(Duration::from_millis(30));
        while Instant::now() < drain_end {
            std::thread::sleep(Duration::from_millis(20));
            let now = procfs::dev_counters(sink);
            if now == last {
                break;
            }
            last = now;
        }
        let after = procfs::dev_counters(sink).since(&before);
        let received = after.rx_packets + after.rx_dropped;
        let drops = relay_before.map(|b| {
            let a = relay_ns_counters(self.topo);
            Drops {
                udp_rcvbuf_errors: a.rcvbuf.saturating_sub(b.rcvbuf),
                tun_tx_dropped: a.tun.since(&b.tun).tx_dropped,
                relay_inet_rx_dropped: a.inet.since(&b.inet).rx_dropped,
                relay_native_rx_dropped: a.native.since(&b.native).rx_dropped,
                sink_rx_dropped: after.rx_dropped,
            }
        });
        let secs_run = offered.secs.max(1e-9);
        let per_core = |ticks: u64| 100.0 * ticks as f64 / procfs::ticks_per_second() / secs_run;
        let device_ticks = ticks1.saturating_sub(ticks0);
        let other = procfs::ticks_between(&others0, &others1);
        let busy = |a: (u64, u64), b: (u64, u64)| {
            let total = b.1.saturating_sub(a.1);
            if total == 0 {
                0.0
            } else {
                100.0 * b.0.saturating_sub(a.0) as f64 / total as f64
            }
        };
        Ok(Step {
            rate,
            offered,
            received,
            loss: if offered.sent == 0 {
                1.0
            } else {
                1.0 - received as f64 / offered.sent as f64
            },
            received_pps: received as f64 / secs_run,
            device_cpu: per_core(device_ticks),
            relay_cpu_busy: busy(cpu1_0, cpu1_1),
            gen_cpu_busy: busy(cpu0_0, cpu0_1),
            other_cpu: per_core(other),
            pass: None,
            drops,
        })
    }
}

/// The outcome of one cell (device × peers × direction, one round).
#[derive(Clone, Debug, serde::Serialize)]
pub struct CellRun {
    /// Unpaced flood (first round only): the generator's ceiling, and what gets through a
    /// several-fold overload (receive livelock). Not the search's estimate: a flood can
    /// starve the device to a small fraction of what it forwards at a paced rate.
    pub flood: Option<Step>,
    /// Where the search started.
    pub search_start: f64,
    /// Search steps, in order.
    pub steps: Vec<Step>,
    /// Highest rate (offered, as achieved) that passed.
    pub throughput: Option<f64>,
    /// Device CPU at the throughput step.
    pub throughput_cpu: Option<f64>,
    /// True when the generator's ceiling passed (the device was not saturated).
    pub generator_limited: bool,
    /// True when some step offered less than 95 % of the rate asked (the generator lost
    /// its CPU for a while: the machine was not quiet).
    pub generator_shortfall: bool,
    /// The saturation run.
    pub saturation: Step,
    /// 1-minute load average when the cell started.
    pub load1: f64,
    /// CPU used by other processes during the cell's steps (time-weighted mean; 100 = one
    /// core).
    pub other_cpu: f64,
}

/// Runs one cell: flood (if `estimate` is `None`), throughput search (from `estimate`, or
/// the plan's start rate), saturation (at the plan's fixed rate, or its factor × the
/// throughput).
/// `gen_max` is the generator's ceiling for this direction (pps).
pub fn run_cell(
    ctx: &mut CellCtx<'_>,
    plan: &CellPlan,
    estimate: Option<f64>,
    gen_max: f64,
) -> Result<CellRun> {
    let load1 = procfs::loadavg()[0];
    let flood = if estimate.is_none() && plan.flood_secs > 0.0 {
        Some(ctx.step(None, plan.flood_secs, true)?)
    } else {
        None
    };
    let start = estimate.unwrap_or(plan.start_rate);
    let mut search = RateSearch::new(
        start,
        plan.steps,
        plan.up,
        plan.down,
        gen_max,
        plan.resolution,
    );
    let mut steps = Vec::new();
    let mut best: Option<(f64, f64)> = None;
    let mut shortfall = false;
    while let Some(rate) = search.next_rate() {
        let mut s = ctx.step(Some(rate), plan.step_secs, false)?;
        // Judged on the rate actually offered: when the generator falls short (another
        // process took its CPU), the step still tells whether the device kept up with that.
        let achieved = s.offered.pps();
        shortfall |= achieved < 0.95 * rate;
        let ok = passes(s.offered.sent, s.received, plan.max_loss);
        s.pass = Some(ok);
        if ok && best.is_none_or(|(r, _)| achieved > r) {
            best = Some((achieved, s.device_cpu));
        }
        search.record(achieved, ok);
        steps.push(s);
    }
    let throughput = best.map(|(r, _)| r);
    // "About twice what the device takes".
    let base = throughput.or(search.lowest_failure()).unwrap_or(start);
    let sat_rate = plan
        .saturation_rate
        .unwrap_or(plan.saturation_factor * base);
    let saturation = ctx.step(Some(sat_rate), plan.saturation_secs, true)?;
    let all: Vec<&Step> = flood
        .iter()
        .chain(&steps)
        .chain(std::iter::once(&saturation))
        .collect();
    let secs: f64 = all.iter().map(|s| s.offered.secs).sum();
    let other_cpu = all
        .iter()
        .map(|s| s.other_cpu * s.offered.secs)
        .sum::<f64>()
        / secs.max(1e-9);
    Ok(CellRun {
        other_cpu,
        flood,
        search_start: start,
        steps,
        throughput,
        throughput_cpu: best.map(|(_, c)| c),
        generator_limited: search.generator_limited(),
        generator_shortfall: shortfall,
        saturation,
        load1,
    })
}
