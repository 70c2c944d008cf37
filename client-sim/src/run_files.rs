//! `--html FILE` and `--junit FILE` of the real-socket commands (`qualify`, `ping`,
//! `udp-echo`): the run's page (status, the command's text, a ladder of its datagrams) and
//! its JUnit XML, written after the run from its report.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::html::{write_run, RunPage};
use crate::ping::PingReport;
use crate::qualify::{QualifyOptions, QualifyReport};
use crate::report::Outcome;
use crate::wire_trace::{Role, WireTrace};

/// The report files of one run.
#[derive(Clone, Debug, Default, Args)]
pub struct RunFiles {
    /// Write one self-contained HTML page (inline CSS and SVG, nothing loaded from the
    /// network): the status block and a ladder diagram of every datagram the run's sockets
    /// sent and received (client, the NAT model if any, server primary and secondary, relay
    /// or peer).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Write the run as JUnit XML: qualification (and the data session) as test cases.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

fn secondary(o: &QualifyOptions) -> Ipv4Addr {
    o.secondary
        .unwrap_or_else(|| Ipv4Addr::from(u32::from(o.server).wrapping_add(1)))
}

fn summary(r: &QualifyReport) -> String {
    format!(
        "{} (exit {}), profile {}, NAT model {}, {} ms",
        r.outcome.as_str(),
        r.exit_code,
        r.profile,
        r.nat_simulator,
        r.elapsed_ms
    )
}

fn empty_trace() -> WireTrace {
    WireTrace::new(std::time::Instant::now(), false)
}

fn note(path: &std::path::Path) {
    let _ = writeln!(std::io::stderr(), "wrote {}", path.display());
}

impl RunFiles {
    /// Writes the files of a `qualify` run.
    pub fn write_qualify(&self, o: &QualifyOptions, r: &QualifyReport) -> anyhow::Result<()> {
        if let Some(path) = &self.html {
            let none = empty_trace();
            let page = RunPage {
                title: format!("client-sim qualify against {}", o.server),
                summary: summary(r),
                ok: matches!(r.outcome, Outcome::Qualified | Outcome::Dormant),
                blocks: vec![("Status".to_owned(), r.to_string())],
                trace: r.trace.as_ref().unwrap_or(&none),
                profile: r.profile.clone(),
                server: o.server,
                secondary: secondary(o),
                roles: Vec::new(),
            };
            write_run(&page, path)?;
            note(path);
        }
        if let Some(path) = &self.junit {
            let xml = crate::run_junit::qualify_junit(r)?;
            std::fs::write(path, xml)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Writes the files of a `ping` / `udp-echo` run.
    pub fn write_ping(&self, o: &QualifyOptions, r: &PingReport) -> anyhow::Result<()> {
        if let Some(path) = &self.html {
            let none = empty_trace();
            let q = &r.qualify;
            // Where the data went: the relay for a native destination, the peer's mapping
            // for a Teredo one (2001::/32).
            let teredo_dst = r
                .destination
                .trim_start_matches('[')
                .split(']')
                .next()
                .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
                .is_some_and(|a| a.segments()[..2] == [0x2001, 0]);
            let role = if teredo_dst { Role::Peer } else { Role::Relay };
            let roles = r
                .via
                .as_deref()
                .and_then(|v| v.parse::<SocketAddrV4>().ok())
                .map(|a| vec![(a, role)])
                .unwrap_or_default();
            let mut session: String = r.replies.iter().map(|x| format!("{x}\n")).collect();
            session.push_str(&r.summary());
            let page = RunPage {
                title: format!(
                    "client-sim {} {} via {}",
                    if r.protocol == "icmp" {
                        "ping"
                    } else {
                        "udp-echo"
                    },
                    r.destination,
                    o.server
                ),
                summary: format!(
                    "{} received of {} sent (exit {}); qualification: {}",
                    r.received,
                    r.transmitted,
                    r.exit_code,
                    summary(q)
                ),
                ok: r.exit_code == 0,
                blocks: vec![
                    ("Status after qualifying".to_owned(), q.to_string()),
                    ("Session".to_owned(), session),
                ],
                trace: q.trace.as_ref().unwrap_or(&none),
                profile: q.profile.clone(),
                server: o.server,
                secondary: secondary(o),
                roles,
            };
            write_run(&page, path)?;
            note(path);
        }
        if let Some(path) = &self.junit {
            let xml = crate::run_junit::ping_junit(r)?;
            std::fs::write(path, xml)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}
