//! tshark's reading of the pcap `client-sim conform --pcap` writes.
//!
//! Every datagram of the run must be a frame, and tshark must dissect the synthesised IPv4
//! (or IPv6) and UDP headers of each. Some checks send hostile input on purpose (truncated
//! auth headers, a 39-byte IPv6 header, a type-0 routing header…), which tshark rightly calls
//! malformed: a flagged frame is tolerated only when its UDP payload is byte for byte one the
//! tool *sent* (found in the report's trace); anything the target sent, or a frame whose
//! headers tshark cannot read, fails.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Result};

use crate::conform_run::ConformReport;
use crate::process::run;
use crate::tshark::{tshark_check, DISSECT_ARGS};

/// What tshark made of the pcap.
#[derive(Debug, Default)]
pub struct PcapVerdict {
    /// Frames read.
    pub frames: usize,
    /// Flagged frames that are hostile inputs the tool sent, per check id.
    pub hostile_inputs: BTreeMap<String, usize>,
}

/// Checks `pcap` against `report` (see the module documentation).
pub fn check_pcap(pcap: &Path, report: &ConformReport) -> Result<PcapVerdict> {
    // (hex, check id) of every datagram the tool sent.
    let mut sent: Vec<(String, &str)> = Vec::new();
    let mut traced = 0;
    for c in &report.checks {
        for t in &c.trace {
            traced += 1;
            if t["dir"] == "sent" {
                let hex = t["hex"].as_str().unwrap_or_default().to_owned();
                sent.push((hex, c.id.as_str()));
            }
        }
    }
    let dissected = tshark_check(pcap)?;
    ensure!(
        dissected.frames.len() == traced,
        "{} frames for {traced} traced datagrams",
        dissected.frames.len()
    );
    let payloads = udp_payloads(pcap)?;
    let mut verdict = PcapVerdict {
        frames: dissected.frames.len(),
        ..PcapVerdict::default()
    };
    let mut bad = Vec::new();
    for f in &dissected.frames {
        if !f.protocols.contains(":udp") {
            bad.push(format!("{f}: no UDP layer"));
            continue;
        }
        let problems = f.problems();
        if problems.is_empty() {
            continue;
        }
        let payload = payloads.get(&f.number).map_or("", String::as_str);
        match sent.iter().find(|(hex, _)| hex == payload) {
            Some((_, id)) => *verdict.hostile_inputs.entry((*id).to_owned()).or_default() += 1,
            None => bad.push(format!("{f}: {problems:?}; UDP payload {payload:?}")),
        }
    }
    ensure!(
        bad.is_empty(),
        "tshark flags frames the tool did not send as hostile input:\n{}",
        bad.join("\n")
    );
    Ok(verdict)
}

/// Frame number → UDP payload (hex), as tshark reads it.
fn udp_payloads(pcap: &Path) -> Result<BTreeMap<u32, String>> {
    let out = run(Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(DISSECT_ARGS)
        // The outer UDP's payload only (a UDP-in-IPv6 input has an inner one too).
        .args(["-T", "fields", "-E", "occurrence=f"])
        .args(["-e", "frame.number", "-e", "udp.payload"]))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (n, hex) = l.split_once('\t').unwrap_or((l, ""));
            Some((n.trim().parse().ok()?, hex.trim().replace(':', "")))
        })
        .collect())
}
