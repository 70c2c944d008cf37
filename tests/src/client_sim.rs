//! `client-sim qualify --json` run inside a namespace, and its report parsed.
//!
//! The report's fields are those of `netsh interface teredo show state` (client-sim/README.md):
//! `state`, `nat`, `local_mapping`, `external_nat_mapping`, `error`, `teredo_address`, … plus
//! `outcome` and `exit_code` (0 qualified, 3 offline behind a symmetric NAT, 4 server
//! unreachable, 6 timeout). The JSON is printed for every protocol outcome, whatever the exit
//! status.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::bins::bin_path;
use crate::netns::Netns;
use crate::process::{tail, TestDir};
use crate::wait::wait_for;

/// `client-sim qualify --json`, the fields the tests look at.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct QualifyReport {
    /// `qualified`, `symmetric_nat`, `server_unreachable`, `timeout`, …
    pub outcome: String,
    /// The exit status the process should have returned.
    pub exit_code: i32,
    /// The client profile.
    pub profile: String,
    /// `qualified`, `offline`, `probe (…)`, …
    pub state: String,
    /// `none`, `cone`, `restricted`, `symmetric (port)`, `symmetric (address)`, `unknown`.
    pub nat: String,
    /// `NAT Special Behaviour`.
    pub nat_special_behaviour: NatSpecialBehaviour,
    /// The client's socket.
    pub local_mapping: SocketAddrV4,
    /// The mapping the server saw (the origin indication of the primary's RA).
    pub external_nat_mapping: Option<SocketAddrV4>,
    /// `client behind symmetric NAT`, …
    pub error: Option<String>,
    /// The Teredo address, while qualified.
    pub teredo_address: Option<Ipv6Addr>,
    /// Wall time of the run.
    pub elapsed_ms: u64,
    /// The counters (RSs sent, RAs accepted, …).
    #[serde(default)]
    pub counters: Option<Counters>,
}

/// The counters of a `qualify` report that the tests look at.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Router solicitations sent.
    pub rs_sent: u64,
    /// Router advertisements accepted.
    #[serde(default)]
    pub ra_accepted: u64,
    /// Datagrams the NAT model held for its latency (delay, jitter).
    #[serde(default)]
    pub held: u64,
    /// Held datagrams released after a later one of their direction (the model's jitter).
    #[serde(default)]
    pub reordered: u64,
}

/// `NAT Special Behaviour`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub struct NatSpecialBehaviour {
    /// Always false (no UPnP).
    pub upnp: bool,
    /// Mapped port == local port; `None` before a mapping was learned.
    pub port_preserving: Option<bool>,
}

/// One finished `client-sim qualify` run.
#[derive(Clone, Debug)]
pub struct QualifyRun {
    /// The process's exit status (`None`: killed by a signal).
    pub exit_code: Option<i32>,
    /// Its JSON report.
    pub report: QualifyReport,
}

/// Runs `client-sim qualify --server <server> --profile <profile> --nat none --json <extra…>`
/// inside `ns` to completion (at most `--timeout` 30 s plus slack); stdout and stderr go to
/// `<label>.stdout.log` / `<label>.stderr.log` in `dir` (printed if the test fails).
pub fn qualify(
    ns: &Netns,
    dir: &TestDir,
    label: &str,
    server: Ipv4Addr,
    profile: &str,
    extra: &[&str],
) -> Result<QualifyRun> {
    let bin = bin_path("client-sim")?;
    let server = server.to_string();
    let mut args = vec![
        "qualify",
        "--server",
        &server,
        "--profile",
        profile,
        "--nat",
        "none",
        "--timeout",
        "30s",
        "--json",
    ];
    args.extend_from_slice(extra);
    let mut proc = ns.spawn(
        label,
        dir.path(),
        bin.to_str().context("non-UTF-8 binary path")?,
        &args,
    )?;
    let (status, _) = wait_for(
        &format!("{label} to finish"),
        Duration::from_secs(40),
        || proc.try_status(),
    )
    .with_context(|| format!("{label} stderr:\n{}", tail(&proc.stderr(), 30)))?;
    let stdout = proc.stdout();
    let report: QualifyReport = match serde_json::from_str(&stdout) {
        Ok(r) => r,
        Err(e) => bail!(
            "{label} ({status}) printed no JSON report ({e}): stdout {stdout:?}, stderr:\n{}",
            tail(&proc.stderr(), 30)
        ),
    };
    Ok(QualifyRun {
        exit_code: status.code(),
        report,
    })
}

/// The fields of a Teredo address (RFC 4380 §4), decoded here independently of `teredo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TeredoFields {
    /// The server's IPv4 (bits 32–63).
    pub server: Ipv4Addr,
    /// The flags (bits 64–79): 0x8000 = cone, 0x3cff = RFC 5991 random bits.
    pub flags: u16,
    /// The mapping (obfuscated port and IPv4, bits 80–127).
    pub mapped: SocketAddrV4,
}

impl TeredoFields {
    /// `2001:0:<server>:<flags>:<~port>:<~ipv4>`; `None` outside 2001:0::/32.
    pub fn decode(addr: Ipv6Addr) -> Option<Self> {
        let o = addr.octets();
        if o[..4] != [0x20, 0x01, 0, 0] {
            return None;
        }
        let server = Ipv4Addr::new(o[4], o[5], o[6], o[7]);
        let flags = u16::from_be_bytes([o[8], o[9]]);
        let port = !u16::from_be_bytes([o[10], o[11]]);
        let ip = Ipv4Addr::from(!u32::from_be_bytes([o[12], o[13], o[14], o[15]]));
        Some(Self {
            server,
            flags,
            mapped: SocketAddrV4::new(ip, port),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_report() {
        // As printed by `client-sim qualify --json` (XP SP2 behind bare masquerade).
        let json = r#"{"outcome":"symmetric_nat","exit_code":3,"profile":"xp-sp2",
            "nat_simulator":"none","type":"client","server_name":"198.51.100.1",
            "client_refresh_interval":30,"client_port":46662,"state":"offline",
            "network":"unmanaged","nat":"symmetric (port)",
            "nat_special_behaviour":{"upnp":false,"port_preserving":true},
            "local_mapping":"10.0.0.2:46662","external_nat_mapping":"198.51.100.20:46662",
            "error":"client behind symmetric NAT","teredo_address":null,"elapsed_ms":12003,
            "counters":{"attempts":1,"rs_sent":5}}"#;
        let r: QualifyReport = serde_json::from_str(json).unwrap();
        assert_eq!(r.exit_code, 3);
        assert_eq!(r.nat, "symmetric (port)");
        assert_eq!(r.local_mapping, "10.0.0.2:46662".parse().unwrap());
        assert_eq!(
            r.external_nat_mapping,
            Some("198.51.100.20:46662".parse().unwrap())
        );
        assert_eq!(r.nat_special_behaviour.port_preserving, Some(true));
        assert_eq!(r.teredo_address, None);
    }

    #[test]
    fn decodes_teredo_addresses() {
        let t =
            TeredoFields::decode("2001:0:c633:6401:8000:26ff:39cc:9beb".parse().unwrap()).unwrap();
        assert_eq!(t.server, Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(t.flags, 0x8000);
        assert_eq!(
            t.mapped,
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 20), 55_552)
        );
        assert_eq!(TeredoFields::decode("2001:db8::1".parse().unwrap()), None);
    }
}
