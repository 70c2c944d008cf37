//! `client-sim container-report VERDICT --html FILE --junit FILE`: the container lab's
//! verdict (`docker/lab/runner.sh` writes it as `/results/verdict.json`: one row per container
//! scenario with its expected and observed outcome and the problems found) as the same kind
//! of page as `lab --html` (a profile × NAT grid of coloured cells, then one table row per
//! scenario with every detail) and as JUnit XML (one test case per scenario). The runner
//! judges; this only renders, so the shell script builds no markup.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;

use crate::junit::{document, Case, Verdict as CaseVerdict};

/// `client-sim container-report` flags.
#[derive(Debug, Args)]
pub struct ContainerReportArgs {
    /// The runner's verdict (`/results/verdict.json`).
    pub verdict: PathBuf,

    /// Write the report page here (e.g. `/results/report.html`).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Write JUnit XML here, one test case per scenario (e.g. `/results/junit.xml`).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// A note on why a row's expectation differs from `client-sim lab`'s (another implementation).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Note {
    /// Short name.
    #[serde(default)]
    pub tag: String,
    /// The reason.
    #[serde(default)]
    pub why: String,
}

/// One container scenario, as the runner judged it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Row {
    /// The row's id (matrix.tsv).
    pub id: String,
    /// The compose service that ran it.
    pub container: String,
    /// Client profile.
    pub profile: String,
    /// NAT kind.
    pub nat: String,
    /// Who did the NAT (an nft recipe or the model).
    pub router: String,
    /// Expected outcome, in words.
    pub expected: String,
    /// Observed state (`missing` without a result file).
    pub state: String,
    /// Observed NAT type.
    pub nat_type: String,
    /// Teredo address.
    pub address: String,
    /// The client's error line.
    pub error: String,
    /// Expected ping6 result.
    pub ping6_expected: String,
    /// ping6 result.
    pub ping6: String,
    /// ping6 details.
    pub ping6_detail: String,
    /// Why the expectation is what it is.
    pub why: String,
    /// Why it differs from `client-sim lab`'s.
    pub notes: Vec<Note>,
    /// What did not match.
    pub problems: Vec<String>,
    /// `ok` or `MISMATCH`.
    pub result: String,
}

impl Row {
    fn ok(&self) -> bool {
        self.result == "ok" && self.problems.is_empty()
    }
}

/// The runner's verdict.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Verdict {
    /// Server implementation.
    pub server: Option<String>,
    /// Relay implementation.
    pub relay: Option<String>,
    /// Relay trust policy.
    pub relay_trust: Option<String>,
    /// The rows.
    pub rows: Vec<Row>,
    /// Wall time of the run, seconds.
    pub elapsed_s: f64,
}

impl Verdict {
    /// Reads a `verdict.json`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a verdict", path.display()))
    }

    /// Rows that did not match.
    pub fn mismatches(&self) -> usize {
        self.rows.iter().filter(|r| !r.ok()).count()
    }

    /// `server X, relay Y (trust Z)`.
    pub fn devices(&self) -> String {
        format!(
            "server {}, relay {} (trust {})",
            self.server.as_deref().unwrap_or("?"),
            self.relay.as_deref().unwrap_or("?"),
            self.relay_trust.as_deref().unwrap_or("?")
        )
    }
}

/// The JUnit XML of `v`: one test case per row, a failure carrying its problems.
pub fn junit(v: &Verdict) -> anyhow::Result<String> {
    let name = format!("teredo container lab ({})", v.devices());
    let cases: Vec<Case> = v.rows.iter().map(case).collect();
    document(&name, &name, Some(v.elapsed_s), &cases)
}

fn case(r: &Row) -> Case {
    let body = format!(
        "{} behind {} ({})\nexpected: {}\nobserved: {} / {} / {}\nTeredo address: {}\n\
         ping6: {} (expected {}) {}\nwhy: {}{}",
        r.profile,
        r.nat,
        r.router,
        r.expected,
        r.state,
        r.nat_type,
        r.error,
        r.address,
        r.ping6,
        r.ping6_expected,
        r.ping6_detail,
        r.why,
        r.notes
            .iter()
            .map(|n| format!("\nwhy differs ({}): {}", n.tag, n.why))
            .collect::<String>()
    );
    let verdict = if r.ok() {
        CaseVerdict::Passed
    } else {
        let message = if r.problems.is_empty() {
            r.result.clone()
        } else {
            r.problems.join("; ")
        };
        CaseVerdict::Failed {
            kind: "mismatch",
            text: format!("{message}\n{body}"),
            message,
        }
    };
    Case {
        class: format!("container-lab.{}", r.container),
        name: r.id.clone(),
        time_s: None,
        verdict,
        out: body,
    }
}

/// Runs the command: exit status 0 (the runner's own status is the lab's verdict).
pub fn run(args: &ContainerReportArgs) -> anyhow::Result<u8> {
    let v = Verdict::read(&args.verdict)?;
    if let Some(path) = &args.html {
        std::fs::write(path, crate::html::container_page(&v))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, junit(&v)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A verdict in the runner's shape: one row ok, one mismatch, one missing.
    pub(crate) const SAMPLE: &str = r#"{"server":"ours","relay":"ours","relay_trust":"strict",
      "rows":[
        {"id":"symmetric-xp-sp2","container":"client-symmetric","profile":"xp-sp2","nat":"symmetric",
         "router":"nft R3","expected":"offline/symmetric","state":"offline","nat_type":"symmetric",
         "address":"-","error":"client behind symmetric NAT","ping6_expected":"-","ping6":"-",
         "ping6_detail":"","why":"XP has no RFC 6081 <support>","notes":[],"problems":[],"result":"ok"},
        {"id":"fullcone-vista","container":"client-fullcone","profile":"vista","nat":"full-cone",
         "router":"nft R4","expected":"qualified/cone C=1","state":"qualified","nat_type":"restricted",
         "address":"2001:0:c633:640a:0:f227:39cc:9be0","error":"-","ping6_expected":"3/3","ping6":"3/3",
         "ping6_detail":"3 received","why":"a cone NAT","notes":[{"tag":"t","why":"w"}],
         "problems":["NAT restricted != cone"],"result":"MISMATCH"},
        {"id":"miredo-debian","container":"miredo","profile":"miredo","nat":"port-restricted",
         "router":"nft R1+fw","expected":"?","state":"missing","nat_type":"-","address":"-","error":"-",
         "ping6_expected":"?","ping6":"-","ping6_detail":"","why":"","notes":[],
         "problems":["no result file before the deadline"],"result":"MISMATCH"}],
      "total":3,"ok":1,"mismatches":2,"elapsed_s":42,"exit_code":1}"#;

    #[test]
    fn one_case_per_row_failures_carry_the_problems() {
        let v: Verdict = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!((v.rows.len(), v.mismatches()), (3, 2));
        let xml = junit(&v).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let cases: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(cases.len(), 3);
        assert_eq!(
            cases[0].attribute("classname"),
            Some("container-lab.client-symmetric")
        );
        let failures: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("failure"))
            .filter_map(|n| n.attribute("message"))
            .collect();
        assert_eq!(
            failures,
            [
                "NAT restricted != cone",
                "no result file before the deadline"
            ]
        );
        assert!(xml.contains("RFC 6081 &lt;support&gt;"));
    }
}
