//! `client-sim ping` and `client-sim udp-echo`: qualify one client over real UDP sockets
//! (optionally behind the NAT model, as [`crate::qualify`]), then send ICMPv6 echo requests,
//! or UDP datagrams to an echo service, through the Teredo data path and report the answers
//! the way ping(8) does.
//!
//! The first packet to a native destination is queued while the client runs the direct IPv6
//! connectivity test (an echo request through the server) and answers the relay's bubble;
//! a Teredo destination is reached with bubbles. Either can take a few seconds (up to 8 s
//! before the client gives up), hence [`PingOptions::wait`] after the last request.
//!
//! Exit status (see [`PingReport::exit_code`]): 0 when at least one answer came back
//! (packet loss below 100 %), 7 when none did; when the client never qualified, the
//! `qualify` statuses 3–6; errors (bad address, sockets) are 1, as for every command.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

use netsim::packets::{self, Parsed};
use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use teredo::client::Event;
use teredo::DropReason;
use teredo_rt::Shutdown;

use crate::qualify::{qualify_driver, QualifyCounters, QualifyOptions, QualifyReport, Step};
use crate::report::Outcome;

/// Exit status when no answer came back.
pub const EXIT_NO_REPLY: u8 = 7;

/// Largest `--size`: what fits in the 1280-byte Teredo MTU after the IPv6 header and the
/// 8-byte ICMPv6 or UDP header.
pub const MAX_SIZE: usize = 1280 - 40 - 8;

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// ICMPv6 echo requests to this address.
    Icmp(Ipv6Addr),
    /// UDP datagrams to this address and port, expecting them back (an echo service).
    Udp(SocketAddrV6),
}

impl Probe {
    fn addr(self) -> Ipv6Addr {
        match self {
            Self::Icmp(a) => a,
            Self::Udp(s) => *s.ip(),
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Icmp(a) => a.fmt(f),
            Self::Udp(s) => s.fmt(f),
        }
    }
}

/// The data session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingOptions {
    /// Destination.
    pub probe: Probe,
    /// Requests to send (at least 1).
    pub count: u16,
    /// ICMPv6 data bytes, or UDP payload bytes (at least 2 for UDP: the sequence number).
    pub size: usize,
    /// Spacing of the requests.
    pub interval: Duration,
    /// How long to wait for answers after the last request.
    pub wait: Duration,
}

impl PingOptions {
    /// 3 requests of 56 bytes, 1 s apart, 10 s of wait.
    pub fn new(probe: Probe) -> Self {
        Self {
            probe,
            count: 3,
            size: 56,
            interval: Duration::from_secs(1),
            wait: Duration::from_secs(10),
        }
    }
}

/// One answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PingReply {
    /// Sequence number (from 1).
    pub seq: u16,
    /// Bytes of the ICMPv6 message or UDP payload.
    pub bytes: usize,
    /// Who answered.
    pub from: String,
    /// IPv6 hop limit of the answer.
    pub hop_limit: u8,
    /// Round-trip time, milliseconds.
    pub rtt_ms: f64,
}

impl fmt::Display for PingReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes from {}: seq={} hlim={} time={:.1} ms",
            self.bytes, self.from, self.seq, self.hop_limit, self.rtt_ms
        )
    }
}

/// The outcome of `ping` / `udp-echo`.
#[derive(Clone, Debug, Serialize)]
pub struct PingReport {
    /// How qualification went (status block, counters).
    pub qualify: QualifyReport,
    /// The destination.
    pub destination: String,
    /// `icmp` or `udp`.
    pub protocol: &'static str,
    /// Our Teredo address, when qualified.
    pub source: Option<String>,
    /// Where the client ended up sending packets for the destination: the relay that
    /// answered the echo test (native destination) or the peer's mapping (Teredo).
    pub via: Option<String>,
    /// Requests handed to the client.
    pub transmitted: u16,
    /// Of those, refused at once by the client (reason in `client_drops`).
    pub refused: u16,
    /// Distinct answers.
    pub received: u16,
    /// 100 × (transmitted − received) / transmitted.
    pub packet_loss_percent: f64,
    /// Fastest answer, milliseconds.
    pub rtt_min_ms: Option<f64>,
    /// Mean, milliseconds.
    pub rtt_avg_ms: Option<f64>,
    /// Slowest, milliseconds.
    pub rtt_max_ms: Option<f64>,
    /// Every answer, in arrival order.
    pub replies: Vec<PingReply>,
    /// The client's refusals and drops, per reason (non-zero only).
    pub client_drops: BTreeMap<&'static str, u64>,
    /// What the client went through during the session (after qualifying): refreshes
    /// answered, address changes, failures, and its state at the end. Long sessions
    /// (`--count` × `--interval` beyond the 30 s refresh interval) show the maintenance.
    pub session: SessionLog,
    /// Wall time of the whole run, milliseconds.
    pub elapsed_ms: u128,
    /// The process exit status for this outcome.
    pub exit_code: u8,
}

impl PingReport {
    /// The ping(8)-like header line.
    pub fn header(&self, size: usize) -> String {
        format!(
            "{} {} from {} (Teredo): {size} data bytes",
            if self.protocol == "icmp" {
                "PING"
            } else {
                "UDP-ECHO"
            },
            self.destination,
            self.source.as_deref().unwrap_or("-"),
        )
    }

    /// The statistics block (after the reply lines).
    pub fn summary(&self) -> String {
        let mut s = format!("\n--- {} statistics ---\n", self.destination);
        let _ = write!(
            s,
            "{} packets transmitted, {} received, {}% packet loss",
            self.transmitted,
            self.received,
            fmt_percent(self.packet_loss_percent)
        );
        if let (Some(a), Some(b), Some(c)) = (self.rtt_min_ms, self.rtt_avg_ms, self.rtt_max_ms) {
            let _ = write!(s, ", rtt min/avg/max = {a:.1}/{b:.1}/{c:.1} ms");
        }
        s.push('\n');
        if let Some(v) = &self.via {
            let _ = writeln!(s, "via {v}");
        }
        let changes = self
            .session
            .events
            .iter()
            .filter(|e| e.kind != "qualified")
            .count();
        if !self.session.ra_accepted_at_ms.is_empty() || changes > 0 {
            let _ = writeln!(
                s,
                "session: {} router advertisements accepted, {} address change(s) or failure(s); \
                 state at the end {}{}",
                self.session.ra_accepted_at_ms.len(),
                changes,
                self.session.final_state,
                self.session
                    .final_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" ({e})"))
            );
        }
        if !self.client_drops.is_empty() {
            let d: Vec<String> = self
                .client_drops
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "client drops: {}", d.join(", "));
        }
        s
    }
}

/// Most entries kept per list of a [`SessionLog`] (later ones are counted only).
pub const MAX_SESSION_LOG: usize = 1024;

/// One change of the client during a ping session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionEvent {
    /// Milliseconds since the command started.
    pub at_ms: u128,
    /// `qualified`, `address_changed` or `offline`.
    pub kind: &'static str,
    /// The address after the change (qualified, address_changed).
    pub address: Option<String>,
    /// The address before it (address_changed).
    pub old: Option<String>,
    /// Why the client went offline (the Windows-style `Error` line).
    pub error: Option<String>,
}

/// The client's maintenance during a ping session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SessionLog {
    /// When a router advertisement was accepted after the qualification (refreshes
    /// answered, re-qualifications), milliseconds since the command started.
    pub ra_accepted_at_ms: Vec<u128>,
    /// Qualifications, address changes and failures, in order.
    pub events: Vec<SessionEvent>,
    /// Entries not kept (beyond [`MAX_SESSION_LOG`] per list).
    pub unlogged: u64,
    /// The client's state at the end (`qualified`, `offline`, …).
    pub final_state: String,
    /// Its Teredo address at the end.
    pub final_address: Option<String>,
    /// Its NAT mapping at the end (or the last one learned).
    pub final_mapping: Option<String>,
    /// Its `Error` line at the end.
    pub final_error: Option<String>,
}

impl SessionLog {
    fn push_event(&mut self, e: SessionEvent) {
        if self.events.len() < MAX_SESSION_LOG {
            self.events.push(e);
        } else {
            self.unlogged += 1;
        }
    }

    pub(crate) fn note(&mut self, at_ms: u128, e: &Event) {
        let ev = |kind| SessionEvent {
            at_ms,
            kind,
            address: None,
            old: None,
            error: None,
        };
        match e {
            Event::Qualified { address, .. } => self.push_event(SessionEvent {
                address: Some(address.to_string()),
                ..ev("qualified")
            }),
            Event::AddressChanged { old, new } => self.push_event(SessionEvent {
                address: Some(new.to_string()),
                old: Some(old.to_string()),
                ..ev("address_changed")
            }),
            Event::Failed { error } => self.push_event(SessionEvent {
                error: Some(error.to_string()),
                ..ev("offline")
            }),
            _ => {}
        }
    }

    pub(crate) fn ra_accepted(&mut self, at_ms: u128) {
        if self.ra_accepted_at_ms.len() < MAX_SESSION_LOG {
            self.ra_accepted_at_ms.push(at_ms);
        } else {
            self.unlogged += 1;
        }
    }

    pub(crate) fn finish(&mut self, c: &teredo::client::Client) {
        self.final_state = c.state().to_string();
        self.final_address = c.address().map(|a| a.to_string());
        self.final_mapping = c.mapping().map(|m| m.to_string());
        self.final_error = c.error().map(|e| e.to_string());
    }
}

fn fmt_percent(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}

/// Qualifies (see [`crate::qualify::qualify`]), then runs the data session; `on_line` gets
/// each answer line as it arrives (ping's output). Ctrl-C (or `shutdown`) during the
/// session ends it early with the statistics so far, as ping does; during qualification it
/// is an error.
pub async fn ping(
    qopts: QualifyOptions,
    popts: PingOptions,
    shutdown: Shutdown,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<PingReport> {
    let started = Instant::now();
    anyhow::ensure!(popts.count > 0, "--count must be at least 1");
    anyhow::ensure!(
        popts.size <= MAX_SIZE,
        "--size {} does not fit in the 1280-byte Teredo MTU (at most {MAX_SIZE})",
        popts.size
    );
    if matches!(popts.probe, Probe::Udp(_)) {
        anyhow::ensure!(popts.size >= 2, "--size must be at least 2 for UDP");
    }
    let (qualify, mut driver) = qualify_driver(&qopts, &shutdown).await?;
    let protocol = match popts.probe {
        Probe::Icmp(_) => "icmp",
        Probe::Udp(_) => "udp",
    };
    let mut report = PingReport {
        source: driver.client.address().map(|a| a.to_string()),
        exit_code: qualify.exit_code,
        qualify,
        destination: popts.probe.to_string(),
        protocol,
        via: None,
        transmitted: 0,
        refused: 0,
        received: 0,
        packet_loss_percent: 100.0,
        rtt_min_ms: None,
        rtt_avg_ms: None,
        rtt_max_ms: None,
        replies: Vec::new(),
        client_drops: BTreeMap::new(),
        session: SessionLog::default(),
        elapsed_ms: 0,
    };
    if report.qualify.outcome != Outcome::Qualified {
        // Not qualified (a dormant client cannot be: it just qualified): nothing sent.
        if report.exit_code == 0 {
            report.exit_code = EXIT_NO_REPLY;
        }
        report.qualify.trace = Some(driver.trace);
        report.elapsed_ms = started.elapsed().as_millis();
        return Ok(report);
    }
    let Some(mut src) = driver.client.address() else {
        anyhow::bail!("qualified without a Teredo address");
    };
    on_line(&report.header(popts.size));
    let drops_before = drops(&driver.client);
    // Identifier / source port of this session: from the seed when given.
    let mut rng = ChaCha8Rng::seed_from_u64(qopts.seed.unwrap_or_else(|| rand::rng().random()));
    let id: u16 = rng.random();
    let sport: u16 = 49_152 + rng.random_range(0..16_384);
    let mut sent_at: BTreeMap<u16, Instant> = BTreeMap::new();
    let mut answered: BTreeMap<u16, f64> = BTreeMap::new();
    let mut next_send = tokio::time::Instant::now();
    let mut last_sent: Option<tokio::time::Instant> = None;
    let mut ras = driver.client.counters().ra_accepted;
    loop {
        let at_ms = started.elapsed().as_millis();
        for e in driver.take_events() {
            match e {
                Event::PeerTrusted { peer, mapping } if peer == popts.probe.addr() => {
                    report.via = Some(mapping.to_string());
                }
                // A new mapping, a new address (RFC 4380 §5.2.5): later requests leave
                // from it and answers come back to it.
                Event::AddressChanged { new, .. } => src = new,
                _ => {}
            }
            report.session.note(at_ms, &e);
        }
        let now_ras = driver.client.counters().ra_accepted;
        for _ in ras..now_ras {
            report.session.ra_accepted(at_ms);
        }
        ras = now_ras;
        for (at, packet) in driver.take_delivered() {
            let Some((seq, bytes)) = match_answer(&packet, popts.probe, src, id, sport) else {
                continue;
            };
            let Some(sent) = sent_at.get(&seq) else {
                continue;
            };
            if answered.contains_key(&seq) {
                continue;
            }
            let rtt = at.saturating_duration_since(*sent).as_secs_f64() * 1000.0;
            answered.insert(seq, rtt);
            let reply = PingReply {
                seq,
                bytes,
                from: popts.probe.to_string(),
                hop_limit: packet.get(7).copied().unwrap_or(0),
                rtt_ms: rtt,
            };
            on_line(&reply.to_string());
            report.replies.push(reply);
        }
        let all_sent = report.transmitted >= popts.count;
        if all_sent && answered.len() == usize::from(report.transmitted) {
            break;
        }
        let deadline = if all_sent {
            last_sent.map(|t| t + popts.wait)
        } else {
            Some(next_send)
        };
        match driver.step(deadline, &shutdown).await? {
            Step::Progress => {}
            Step::Shutdown => break,
            Step::Deadline if all_sent => break,
            Step::Deadline => {
                let seq = report.transmitted + 1;
                let packet = build(popts, src, id, sport, seq)?;
                sent_at.insert(seq, Instant::now());
                report.transmitted += 1;
                if driver
                    .client
                    .handle_ipv6(teredo_rt::now(), &packet)
                    .is_err()
                {
                    report.refused += 1;
                }
                driver.pump().await?;
                let now = tokio::time::Instant::now();
                last_sent = Some(now);
                next_send = now + popts.interval;
            }
        }
    }
    report.received = u16::try_from(answered.len()).unwrap_or(u16::MAX);
    if report.transmitted > 0 {
        report.packet_loss_percent = 100.0
            * f64::from(report.transmitted - report.received.min(report.transmitted))
            / f64::from(report.transmitted);
    }
    let rtts: Vec<f64> = answered.values().copied().collect();
    if !rtts.is_empty() {
        report.rtt_min_ms = rtts.iter().copied().reduce(f64::min);
        report.rtt_max_ms = rtts.iter().copied().reduce(f64::max);
        report.rtt_avg_ms = Some(rtts.iter().sum::<f64>() / rtts.len() as f64);
    }
    let after = drops(&driver.client);
    report.client_drops = after
        .iter()
        .map(|(k, v)| {
            (
                *k,
                v.saturating_sub(drops_before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect();
    report.session.finish(&driver.client);
    report.qualify.trace = Some(driver.trace.clone());
    report.qualify.counters = merge(report.qualify.counters.clone(), driver.counters());
    report.exit_code = if report.received > 0 {
        0
    } else {
        EXIT_NO_REPLY
    };
    report.elapsed_ms = started.elapsed().as_millis();
    Ok(report)
}

/// The counters of the whole run: qualification attempts from `q`, the rest from the
/// driver (which kept counting during the session).
fn merge(q: QualifyCounters, d: QualifyCounters) -> QualifyCounters {
    QualifyCounters {
        attempts: q.attempts,
        bind_failures: q.bind_failures,
        ..d
    }
}

/// Every refusal and drop counter of the client, per reason.
pub(crate) fn drops(c: &teredo::client::Client) -> BTreeMap<&'static str, u64> {
    let k = c.counters();
    DropReason::ALL
        .iter()
        .map(|r| (r.as_str(), k.rejected(*r) + k.dropped(*r)))
        .collect()
}

/// Request `seq`: ICMPv6 data, or UDP payload, starting with the sequence number.
fn build(p: PingOptions, src: Ipv6Addr, id: u16, sport: u16, seq: u16) -> anyhow::Result<Vec<u8>> {
    let mut data: Vec<u8> = (0..p.size).map(|i| (i % 251) as u8).collect();
    if let Some(d) = data.get_mut(..2) {
        d.copy_from_slice(&seq.to_be_bytes());
    }
    let packet = match p.probe {
        Probe::Icmp(dst) => packets::echo_request(src, dst, id, seq, &data),
        Probe::Udp(dst) => packets::udp_datagram(SocketAddrV6::new(src, sport, 0, 0), dst, &data),
    };
    packet.ok_or_else(|| anyhow::anyhow!("cannot build a {}-byte request", p.size))
}

/// `(seq, bytes)` when `packet` answers request `seq` of this session.
fn match_answer(
    packet: &[u8],
    probe: Probe,
    src: Ipv6Addr,
    id: u16,
    sport: u16,
) -> Option<(u16, usize)> {
    match (packets::parse(packet)?, probe) {
        (
            Parsed::Echo {
                src: from,
                dst,
                reply: true,
                id: got,
                seq,
                data,
            },
            Probe::Icmp(target),
        ) if from == target && dst == src && got == id => Some((seq, 8 + data.len())),
        (
            Parsed::Udp {
                src: from,
                dst,
                payload,
            },
            Probe::Udp(target),
        ) if from == target && *dst.ip() == src && dst.port() == sport => {
            let seq = u16::from_be_bytes(payload.get(..2)?.try_into().ok()?);
            Some((seq, payload.len()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv6Addr = Ipv6Addr::new(0x2001, 0, 0xc633, 0x6401, 0, 0xdfff, 0x3fff, 0xfdf5);
    const H: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);

    #[test]
    fn requests_and_answers_match_by_session() {
        let icmp = PingOptions::new(Probe::Icmp(H));
        let req = build(icmp, A, 77, 0, 5).unwrap();
        assert_eq!(req.len(), 40 + 8 + 56);
        let rep = packets::answer(&req, true).unwrap();
        assert_eq!(match_answer(&rep, icmp.probe, A, 77, 0), Some((5, 64)));
        assert_eq!(match_answer(&rep, icmp.probe, A, 78, 0), None, "other id");
        assert_eq!(match_answer(&req, icmp.probe, A, 77, 0), None, "a request");

        let dst = SocketAddrV6::new(H, 7, 0, 0);
        let udp = PingOptions {
            size: 2,
            ..PingOptions::new(Probe::Udp(dst))
        };
        let req = build(udp, A, 0, 50_000, 9).unwrap();
        let rep = packets::answer(&req, true).unwrap();
        assert_eq!(match_answer(&rep, udp.probe, A, 0, 50_000), Some((9, 2)));
        assert_eq!(match_answer(&rep, udp.probe, A, 0, 50_001), None);
    }

    #[test]
    fn statistics_like_ping() {
        let r = PingReport {
            qualify: qualified_report(),
            destination: "2001:db8::99".into(),
            protocol: "icmp",
            source: Some(A.to_string()),
            via: Some("198.51.100.20:3545".into()),
            transmitted: 3,
            received: 2,
            refused: 0,
            packet_loss_percent: 100.0 / 3.0,
            rtt_min_ms: Some(1.0),
            rtt_avg_ms: Some(1.5),
            rtt_max_ms: Some(2.0),
            replies: Vec::new(),
            client_drops: BTreeMap::from([("peer_unreachable", 1)]),
            session: SessionLog::default(),
            elapsed_ms: 0,
            exit_code: 0,
        };
        assert_eq!(
            r.summary(),
            "\n--- 2001:db8::99 statistics ---\n3 packets transmitted, 2 received, 33.3% \
             packet loss, rtt min/avg/max = 1.0/1.5/2.0 ms\nvia 198.51.100.20:3545\nclient \
             drops: peer_unreachable=1\n"
        );
        assert_eq!(
            r.header(56),
            format!("PING 2001:db8::99 from {A} (Teredo): 56 data bytes")
        );
        // A session with a change says so.
        let mut r = r;
        r.session.note(
            5,
            &Event::Failed {
                error: teredo::client::ClientError::PrimaryUnreachable,
            },
        );
        r.session.ra_accepted(3);
        r.session.final_state = "offline".into();
        r.session.final_error = Some("cannot reach primary Teredo server over UDP".into());
        assert!(
            r.summary().contains(
                "session: 1 router advertisements accepted, 1 address change(s) or \
                 failure(s); state at the end offline (cannot reach primary Teredo server \
                 over UDP)\n"
            ),
            "{}",
            r.summary()
        );
        assert_eq!(r.session.events[0].kind, "offline");
        assert_eq!(fmt_percent(0.0), "0");
        assert_eq!(fmt_percent(100.0), "100");
        let line = PingReply {
            seq: 1,
            bytes: 64,
            from: "2001:db8::99".into(),
            hop_limit: 64,
            rtt_ms: 12.34,
        };
        assert_eq!(
            line.to_string(),
            "64 bytes from 2001:db8::99: seq=1 hlim=64 time=12.3 ms"
        );
    }

    fn qualified_report() -> QualifyReport {
        QualifyReport {
            outcome: Outcome::Qualified,
            exit_code: 0,
            profile: "vista".into(),
            nat_simulator: "none".into(),
            status: crate::report::StatusReport {
                client_type: "client".into(),
                server_name: "198.51.100.1".into(),
                client_refresh_interval: 30,
                client_port: 1,
                state: "qualified".into(),
                network: "unmanaged".into(),
                nat: "none".into(),
                nat_special_behaviour: crate::report::NatSpecialBehaviour {
                    upnp: false,
                    port_preserving: None,
                },
                local_mapping: "198.51.100.10:1".into(),
                external_nat_mapping: None,
                error: None,
                teredo_address: None,
            },
            elapsed_ms: 0,
            counters: QualifyCounters::default(),
            trace: None,
        }
    }
}
