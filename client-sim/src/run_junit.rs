//! `qualify --junit FILE` and `ping --junit FILE`: one real-socket run as JUnit XML, so that a
//! CI job that qualifies against a deployed server shows the result like any test. The
//! qualification is one test case (failed unless the client qualified or went dormant), the
//! data session another (failed when no answer came back, skipped when the client never
//! qualified); the status block and ping's statistics are their `<system-out>`.

use crate::junit::{document, Case, Verdict};
use crate::ping::PingReport;
use crate::qualify::QualifyReport;
use crate::report::Outcome;

fn qualify_case(r: &QualifyReport) -> Case {
    let ok = matches!(r.outcome, Outcome::Qualified | Outcome::Dormant);
    let verdict = if ok {
        Verdict::Passed
    } else {
        failed(format!(
            "{} (exit {}){}",
            r.outcome.as_str(),
            r.exit_code,
            r.status
                .error
                .as_ref()
                .map_or(String::new(), |e| format!(": {e}"))
        ))
    };
    Case {
        class: "client-sim.qualify".to_owned(),
        name: format!("{} behind NAT {}", r.profile, r.nat_simulator),
        time_s: Some(r.elapsed_ms as f64 / 1000.0),
        verdict,
        out: r.to_string(),
    }
}

/// The JUnit XML of a `qualify` run.
pub fn qualify_junit(r: &QualifyReport) -> anyhow::Result<String> {
    document(
        "client-sim qualify",
        "client-sim qualify",
        None,
        &[qualify_case(r)],
    )
}

/// The JUnit XML of a `ping` / `udp-echo` run.
pub fn ping_junit(r: &PingReport) -> anyhow::Result<String> {
    let qualified = r.qualify.outcome == Outcome::Qualified;
    let verdict = if !qualified {
        Verdict::Skipped("the client did not qualify".to_owned())
    } else if r.received == 0 {
        failed(format!(
            "no answer: {} sent, 0 received (exit {})",
            r.transmitted, r.exit_code
        ))
    } else {
        Verdict::Passed
    };
    let mut out = String::new();
    for reply in &r.replies {
        out.push_str(&reply.to_string());
        out.push('\n');
    }
    out.push_str(&r.summary());
    let session = Case {
        class: "client-sim.ping".to_owned(),
        name: format!("{} {}", r.protocol, r.destination),
        time_s: Some(r.elapsed_ms.saturating_sub(r.qualify.elapsed_ms) as f64 / 1000.0),
        verdict,
        out,
    };
    document(
        "client-sim ping",
        "client-sim ping",
        None,
        &[qualify_case(&r.qualify), session],
    )
}

/// A failure whose text is its message.
fn failed(message: String) -> Verdict {
    Verdict::Failed {
        kind: "outcome",
        text: message.clone(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use teredo_rt::Shutdown;

    use super::*;
    use crate::qualify::{qualify, QualifyOptions};

    #[tokio::test]
    async fn a_timed_out_qualification_is_one_failed_case() {
        // Nobody listens on 127.0.0.2: the run times out.
        let mut o = QualifyOptions::new(Ipv4Addr::new(127, 0, 0, 2));
        o.timeout = Duration::from_millis(200);
        o.bind = Ipv4Addr::LOCALHOST;
        o.seed = Some(1);
        let (_trigger, shutdown) = Shutdown::new();
        let r = qualify(o, shutdown).await.unwrap();
        let xml = qualify_junit(&r).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let cases: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(cases.len(), 1);
        assert_eq!(cases[0].attribute("name"), Some("vista behind NAT none"));
        let failure = cases[0]
            .children()
            .find(|n| n.has_tag_name("failure"))
            .unwrap();
        assert!(failure
            .attribute("message")
            .unwrap()
            .starts_with("timeout (exit 6)"));
        let out = cases[0]
            .children()
            .find(|n| n.has_tag_name("system-out"))
            .unwrap();
        assert!(out.text().unwrap().contains("probe"), "{xml}");
        // The trace of the run: only router solicitations, no answer.
        let t = r.trace.as_ref().unwrap();
        assert!(!t.datagrams.is_empty());
        assert_eq!(t.datagrams.len() as u64, r.counters.rs_sent);
    }
}
