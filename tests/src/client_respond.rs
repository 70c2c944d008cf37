//! `client-sim respond --json` run inside a namespace: a real-socket Teredo client that
//! qualifies, then answers the echo requests sent to its Teredo address for a bounded time
//! (the receiving end of a Teredo-to-Teredo `client-sim ping`).
//!
//! Its first stdout line is the `qualify --json` report, printed as soon as qualification
//! ends (the test reads the address from it while the client keeps running); the second,
//! printed when `--for` elapses or on SIGTERM, is the session report.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::bins::bin_path;
use crate::client_sim::QualifyReport;
use crate::netns::Netns;
use crate::process::{tail, Proc, TestDir};
use crate::wait::wait_for;

/// The session report (client-sim `RespondReport`), the fields the tests look at.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RespondReport {
    /// The Teredo address at the end.
    pub address: Option<Ipv6Addr>,
    /// Echo requests delivered to the client.
    pub requests: u64,
    /// Echo replies the client accepted to send.
    pub answered: u64,
    /// Echo replies it refused at once.
    pub refused: u64,
    /// The requesters.
    pub peers: Vec<Ipv6Addr>,
    /// The client's refusals and drops during the session, per reason (non-zero only).
    pub client_drops: BTreeMap<String, u64>,
    /// The exit status the process should have returned.
    pub exit_code: i32,
}

/// A running `client-sim respond` whose qualification has ended.
#[derive(Debug)]
pub struct Responder {
    proc: Proc,
    label: String,
    /// Its qualification (the first line).
    pub qualify: QualifyReport,
}

/// Starts `client-sim respond --server <server> --profile <profile> --nat none --for <secs>
/// --json` inside `ns` and waits (at most `--timeout` 30 s plus slack) for its qualification
/// report. Logs: `<label>.stdout.log` / `<label>.stderr.log` in `dir`.
pub fn spawn_respond(
    ns: &Netns,
    dir: &TestDir,
    label: &str,
    server: Ipv4Addr,
    profile: &str,
    answer_for: Duration,
) -> Result<Responder> {
    let bin = bin_path("client-sim")?;
    let server = server.to_string();
    let secs = format!("{}s", answer_for.as_secs().max(1));
    let mut proc = ns.spawn(
        label,
        dir.path(),
        bin.to_str().context("non-UTF-8 binary path")?,
        &[
            "respond",
            "--server",
            &server,
            "--profile",
            profile,
            "--nat",
            "none",
            "--timeout",
            "30s",
            "--for",
            &secs,
            "--json",
        ],
    )?;
    let (line, _) = wait_for(
        &format!("{label}'s qualification report"),
        Duration::from_secs(45),
        || {
            let out = proc.stdout();
            if let Some(line) = out.lines().next().filter(|_| out.contains('\n')) {
                return Ok(Some(line.to_owned()));
            }
            if let Some(status) = proc.try_status()? {
                bail!("{label} exited ({status}) without a report");
            }
            Ok(None)
        },
    )
    .with_context(|| format!("{label} stderr:\n{}", tail(&proc.stderr(), 30)))?;
    let qualify: QualifyReport = serde_json::from_str(&line)
        .with_context(|| format!("{label}'s first line is no qualify report: {line:?}"))?;
    Ok(Responder {
        proc,
        label: label.to_owned(),
        qualify,
    })
}

impl Responder {
    /// Ends the session (SIGTERM; the client prints its report) and parses the report.
    pub fn finish(mut self) -> Result<RespondReport> {
        let status = self.proc.stop()?;
        let out = self.proc.stdout();
        let Some(line) = out.lines().nth(1) else {
            bail!(
                "{} ({status}) printed no session report: stdout {out:?}, stderr:\n{}",
                self.label,
                tail(&self.proc.stderr(), 30)
            );
        };
        serde_json::from_str(line)
            .with_context(|| format!("{}'s session report: {line:?}", self.label))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_session_report() {
        // As printed by `client-sim respond --json` (second line, trimmed).
        let json = r#"{"qualify":{"outcome":"qualified"},"address":"2001:0:c633:6401:8000:26ff:39cc:9beb",
            "requests":3,"answered":3,"refused":0,"peers":["2001:0:c633:6401:0:d6ff:39cc:9beb"],
            "client_drops":{"spoofed_source":2},"session":{},"answered_for_ms":5000,
            "elapsed_ms":17000,"exit_code":0}"#;
        let r: RespondReport = serde_json::from_str(json).unwrap();
        assert_eq!((r.requests, r.answered, r.refused), (3, 3, 0));
        assert_eq!(r.peers.len(), 1);
        assert_eq!(r.client_drops.get("spoofed_source"), Some(&2));
        assert!(r.address.is_some());
    }
}
