//! `client-sim respond`: qualify one client over real UDP sockets (as [`crate::qualify`]),
//! then stay qualified for a bounded time answering the ICMPv6 echo requests addressed to its
//! Teredo address, as a host's IPv6 stack would: the receiving end of a Teredo-to-Teredo
//! `client-sim ping` (what the in-process lab's `echo_responder` node does on the simulated
//! network). The answers go back through the core, so the peer rules (trust, bubbles,
//! symmetric NAT support) decide whether and where they leave.
//!
//! Output: the qualification status as soon as it is known (with `--json`, one line of
//! JSON: the `qualify --json` report), then, when `--for` has elapsed or on SIGINT / SIGTERM,
//! the session report (with `--json`, a second line). A test reads the address from the
//! first line while the client keeps running.
//!
//! Exit status: 0 when the client qualified (whatever it received), otherwise the `qualify`
//! statuses 3–6.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use netsim::packets::{self, Parsed};
use serde::Serialize;
use teredo::client::Event;
use teredo_rt::Shutdown;

use crate::ping::{drops, SessionLog};
use crate::qualify::{qualify_driver, QualifyOptions, QualifyReport, Step};
use crate::report::Outcome;

/// Most distinct requesters listed in a report (later ones are counted only).
pub const MAX_PEERS: usize = 64;

/// The session report of `respond`.
#[derive(Clone, Debug, Serialize)]
pub struct RespondReport {
    /// How qualification went.
    pub qualify: QualifyReport,
    /// The Teredo address answered on (the one at the end, after any change).
    pub address: Option<String>,
    /// Echo requests delivered to the client.
    pub requests: u64,
    /// Echo replies the client accepted to send.
    pub answered: u64,
    /// Echo replies the client refused at once (reason in `client_drops`).
    pub refused: u64,
    /// The requesters' addresses, in order of first request (at most [`MAX_PEERS`]).
    pub peers: Vec<String>,
    /// The client's refusals and drops during the session, per reason (non-zero only).
    pub client_drops: BTreeMap<&'static str, u64>,
    /// What the client went through while answering.
    pub session: SessionLog,
    /// How long it answered, milliseconds (less than `--for` when stopped by a signal).
    pub answered_for_ms: u128,
    /// Wall time of the whole run, milliseconds.
    pub elapsed_ms: u128,
    /// The process exit status for this outcome.
    pub exit_code: u8,
}

impl fmt::Display for RespondReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = format!(
            "\n--- {} ---\n{} echo requests from {} peer(s), {} answered, {} refused, in {:.1} s\n",
            self.address.as_deref().unwrap_or("-"),
            self.requests,
            self.peers.len(),
            self.answered,
            self.refused,
            self.answered_for_ms as f64 / 1000.0
        );
        if !self.client_drops.is_empty() {
            let d: Vec<String> = self
                .client_drops
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "client drops: {}", d.join(", "));
        }
        let _ = write!(s, "state at the end {}", self.session.final_state);
        if let Some(e) = &self.session.final_error {
            let _ = write!(s, " ({e})");
        }
        writeln!(f, "{s}")
    }
}

/// Qualifies, calls `on_qualified` with the qualification report, then answers echo requests
/// for `duration` (or until `shutdown`); `on_line` gets a line per request. A client that
/// does not qualify answers nothing: the report says why.
pub async fn respond(
    qopts: QualifyOptions,
    duration: Duration,
    shutdown: Shutdown,
    on_qualified: &mut (dyn FnMut(&QualifyReport) + Send),
    on_line: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<RespondReport> {
    let started = Instant::now();
    let (qualify, mut driver) = qualify_driver(&qopts, &shutdown).await?;
    on_qualified(&qualify);
    let mut report = RespondReport {
        address: driver.client.address().map(|a| a.to_string()),
        exit_code: qualify.exit_code,
        qualify,
        requests: 0,
        answered: 0,
        refused: 0,
        peers: Vec::new(),
        client_drops: BTreeMap::new(),
        session: SessionLog::default(),
        answered_for_ms: 0,
        elapsed_ms: 0,
    };
    if report.qualify.outcome != Outcome::Qualified {
        report.elapsed_ms = started.elapsed().as_millis();
        return Ok(report);
    }
    let drops_before = drops(&driver.client);
    let answering = Instant::now();
    let end = tokio::time::Instant::now() + duration;
    let mut seen = BTreeSet::new();
    let mut ras = driver.client.counters().ra_accepted;
    loop {
        let at_ms = started.elapsed().as_millis();
        for e in driver.take_events() {
            report.session.note(at_ms, &e);
            if let Event::AddressChanged { new, .. } = e {
                on_line(&format!("address changed to {new}"));
            }
        }
        let now_ras = driver.client.counters().ra_accepted;
        for _ in ras..now_ras {
            report.session.ra_accepted(at_ms);
        }
        ras = now_ras;
        for (_, packet) in driver.take_delivered() {
            let Some(Parsed::Echo {
                src,
                reply: false,
                seq,
                ..
            }) = packets::parse(&packet)
            else {
                continue;
            };
            report.requests += 1;
            if seen.insert(src) && report.peers.len() < MAX_PEERS {
                report.peers.push(src.to_string());
            }
            let Some(answer) = packets::answer(&packet, false) else {
                continue;
            };
            let verdict = match driver.client.handle_ipv6(teredo_rt::now(), &answer) {
                Ok(_) => {
                    report.answered += 1;
                    "answered".to_owned()
                }
                Err(e) => {
                    report.refused += 1;
                    format!("refused ({})", e.as_str())
                }
            };
            on_line(&format!("echo request from {src}: seq={seq} {verdict}"));
            driver.pump().await?;
        }
        match driver.step(Some(end), &shutdown).await? {
            Step::Progress => {}
            Step::Deadline | Step::Shutdown => break,
        }
    }
    let after = drops(&driver.client);
    report.client_drops = after
        .iter()
        .map(|(k, v)| {
            let before = drops_before.get(k).copied().unwrap_or(0);
            (*k, v.saturating_sub(before))
        })
        .filter(|(_, v)| *v > 0)
        .collect();
    report.session.finish(&driver.client);
    report.address = driver.client.address().map(|a| a.to_string());
    report.answered_for_ms = answering.elapsed().as_millis();
    report.elapsed_ms = started.elapsed().as_millis();
    Ok(report)
}
