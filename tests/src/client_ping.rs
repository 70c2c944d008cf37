//! `client-sim ping --json` run inside a namespace, and its report parsed: one client
//! qualifies with a real Teredo server, then pings an IPv6 address through the Teredo data
//! path (the direct IPv6 connectivity test through the server, the relay's bubbles).
//!
//! The report (client-sim `PingReport`) is printed for every protocol outcome; the exit
//! status is 0 when at least one answer came back, 7 when none did, and the `qualify`
//! statuses 3–6 when the client never qualified.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::bins::bin_path;
use crate::client_sim::QualifyReport;
use crate::netns::Netns;
use crate::process::{tail, Proc, TestDir};
use crate::wait::wait_for;

/// `client-sim ping --json`, the fields the tests look at.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PingReport {
    /// How qualification went (the `qualify --json` report).
    pub qualify: QualifyReport,
    /// The destination.
    pub destination: String,
    /// Our Teredo address, when qualified.
    pub source: Option<Ipv6Addr>,
    /// Where the client ended up sending packets for the destination: the relay that
    /// answered the direct IPv6 connectivity test (`IPv4:port`), for a native destination.
    pub via: Option<String>,
    /// Requests handed to the client.
    pub transmitted: u16,
    /// Distinct answers.
    pub received: u16,
    /// 100 × (transmitted − received) / transmitted.
    pub packet_loss_percent: f64,
    /// Every answer, in arrival order.
    pub replies: Vec<PingReply>,
    /// The client's refusals and drops, per reason (non-zero only).
    pub client_drops: std::collections::BTreeMap<String, u64>,
    /// The client's maintenance during the session.
    #[serde(default)]
    pub session: Session,
    /// Wall time of the whole run (qualification included), milliseconds.
    pub elapsed_ms: u64,
    /// The exit status the process should have returned.
    pub exit_code: i32,
}

/// What the client went through during a ping session (client-sim `SessionLog`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Session {
    /// When router advertisements were accepted after the qualification, milliseconds
    /// since the command started.
    pub ra_accepted_at_ms: Vec<u64>,
    /// Qualifications, address changes and failures.
    pub events: Vec<SessionEvent>,
    /// The state at the end.
    pub final_state: String,
    /// The Teredo address at the end.
    pub final_address: Option<Ipv6Addr>,
    /// The NAT mapping at the end.
    pub final_mapping: Option<std::net::SocketAddrV4>,
    /// The `Error` line at the end.
    pub final_error: Option<String>,
}

/// One change of the client during a session.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SessionEvent {
    /// Milliseconds since the command started.
    pub at_ms: u64,
    /// `qualified`, `address_changed` or `offline`.
    pub kind: String,
    /// The address after the change.
    pub address: Option<Ipv6Addr>,
    /// The address before it.
    pub old: Option<Ipv6Addr>,
    /// The `Error` line, when offline.
    pub error: Option<String>,
}

/// One answer.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PingReply {
    /// Sequence number (from 1).
    pub seq: u16,
    /// Who answered.
    pub from: String,
    /// IPv6 hop limit of the answer.
    pub hop_limit: u8,
    /// Round-trip time, milliseconds.
    pub rtt_ms: f64,
}

/// One finished `client-sim ping` run.
#[derive(Clone, Debug)]
pub struct PingRun {
    /// The process's exit status (`None`: killed by a signal).
    pub exit_code: Option<i32>,
    /// Its JSON report.
    pub report: PingReport,
}

impl PingRun {
    /// The sequence numbers answered, sorted.
    pub fn answered(&self) -> Vec<u16> {
        let mut seqs: Vec<u16> = self.report.replies.iter().map(|r| r.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs
    }
}

/// What to ping, and how.
#[derive(Clone, Copy, Debug)]
pub struct PingSpec<'a> {
    /// The Teredo server's primary address (`--server`).
    pub server: Ipv4Addr,
    /// The destination.
    pub destination: Ipv6Addr,
    /// Requests to send (`-c`), 1 s apart.
    pub count: u16,
    /// The client profile (`--profile`).
    pub profile: &'a str,
}

/// Runs `client-sim ping --server <server> <destination> -c <count> --profile <profile>
/// --nat none --json <extra…>` (without `--nat none` when `extra` has a `--nat-spec`) inside `ns` to completion (at most `--timeout` 30 s of
/// qualification, `count` requests 1 s apart and 10 s of wait, plus slack); stdout and
/// stderr go to `<label>.stdout.log` / `<label>.stderr.log` in `dir`.
pub fn ping(
    ns: &Netns,
    dir: &TestDir,
    label: &str,
    spec: PingSpec<'_>,
    extra: &[&str],
) -> Result<PingRun> {
    let proc = spawn_ping(ns, dir, label, spec, extra)?;
    let limit = Duration::from_secs(50) + Duration::from_secs(u64::from(spec.count));
    finish_ping(proc, label, limit)
}

/// Starts the `client-sim ping` of [`ping`] in the background (for a test that does
/// something to the network meanwhile); [`finish_ping`] collects it.
pub fn spawn_ping(
    ns: &Netns,
    dir: &TestDir,
    label: &str,
    spec: PingSpec<'_>,
    extra: &[&str],
) -> Result<Proc> {
    let bin = bin_path("client-sim")?;
    let server = spec.server.to_string();
    let destination = spec.destination.to_string();
    let count = spec.count.to_string();
    let mut args = vec![
        "ping",
        "--server",
        &server,
        &destination,
        "-c",
        &count,
        "--profile",
        spec.profile,
        "--timeout",
        "30s",
        "--json",
    ];
    if !extra.contains(&"--nat-spec") {
        args.extend_from_slice(&["--nat", "none"]);
    }
    args.extend_from_slice(extra);
    ns.spawn(
        label,
        dir.path(),
        bin.to_str().context("non-UTF-8 binary path")?,
        &args,
    )
}

/// Waits (at most `limit`) for a `client-sim ping` started by [`spawn_ping`] and parses its
/// report.
pub fn finish_ping(mut proc: Proc, label: &str, limit: Duration) -> Result<PingRun> {
    let (status, _) = wait_for(&format!("{label} to finish"), limit, || proc.try_status())
        .with_context(|| format!("{label} stderr:\n{}", tail(&proc.stderr(), 30)))?;
    let stdout = proc.stdout();
    let report: PingReport = match serde_json::from_str(&stdout) {
        Ok(r) => r,
        Err(e) => bail!(
            "{label} ({status}) printed no JSON report ({e}): stdout {stdout:?}, stderr:\n{}",
            tail(&proc.stderr(), 30)
        ),
    };
    Ok(PingRun {
        exit_code: status.code(),
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_report() {
        // As printed by `client-sim ping --json` (trimmed: two replies, no counters).
        let json = r#"{
          "qualify": {"outcome":"qualified","exit_code":0,"profile":"miredo",
            "nat_simulator":"none","type":"client","server_name":"198.51.100.1",
            "client_refresh_interval":30,"client_port":44151,"state":"qualified",
            "network":"unmanaged","nat":"none",
            "nat_special_behaviour":{"upnp":false,"port_preserving":true},
            "local_mapping":"198.51.100.10:44151","external_nat_mapping":"198.51.100.10:44151",
            "error":null,"teredo_address":"2001:0:c633:6401:8d5:5388:39cc:9bf5",
            "elapsed_ms":1,"counters":{"attempts":1,"rs_sent":1}},
          "destination":"2001:db8::99","protocol":"icmp",
          "source":"2001:0:c633:6401:8d5:5388:39cc:9bf5","via":"198.51.100.30:3545",
          "transmitted":2,"refused":0,"received":2,"packet_loss_percent":0.0,
          "rtt_min_ms":0.48,"rtt_avg_ms":0.8,"rtt_max_ms":1.19,
          "replies":[
            {"seq":2,"bytes":64,"from":"2001:db8::99","hop_limit":63,"rtt_ms":0.48},
            {"seq":1,"bytes":64,"from":"2001:db8::99","hop_limit":63,"rtt_ms":1.19}],
          "client_drops":{},"elapsed_ms":5017,"exit_code":0}"#;
        let report: PingReport = serde_json::from_str(json).unwrap();
        assert_eq!(report.via.as_deref(), Some("198.51.100.30:3545"));
        assert_eq!((report.transmitted, report.received), (2, 2));
        assert_eq!(report.qualify.nat, "none");
        assert_eq!(
            report.source,
            Some("2001:0:c633:6401:8d5:5388:39cc:9bf5".parse().unwrap())
        );
        let run = PingRun {
            exit_code: Some(0),
            report,
        };
        assert_eq!(run.answered(), [1, 2]);
    }
}
