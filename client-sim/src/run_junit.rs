//! `qualify --junit FILE` and `ping --junit FILE`: one real-socket run as JUnit XML, so that a
//! CI job that qualifies against a deployed server shows the result like any test. The
//! qualification is one test case (failed unless the client qualified or went dormant), the
//! data session another (failed when no answer came back, skipped when the client never
//! qualified); the status block and ping's statistics are their `<system-out>`.

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use crate::ping::PingReport;
use crate::qualify::QualifyReport;
use crate::report::Outcome;

/// One test case.
struct Case {
    class: &'static str,
    name: String,
    seconds: f64,
    /// `Err(message)`: failed; `Ok(Some(message))`: skipped.
    verdict: Result<Option<String>, String>,
    out: String,
}

fn qualify_case(r: &QualifyReport) -> Case {
    let ok = matches!(r.outcome, Outcome::Qualified | Outcome::Dormant);
    let verdict = if ok {
        Ok(None)
    } else {
        Err(format!(
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
        class: "client-sim.qualify",
        name: format!("{} behind NAT {}", r.profile, r.nat_simulator),
        seconds: r.elapsed_ms as f64 / 1000.0,
        verdict,
        out: r.to_string(),
    }
}

/// The JUnit XML of a `qualify` run.
pub fn qualify_junit(r: &QualifyReport) -> anyhow::Result<String> {
    document("client-sim qualify", &[qualify_case(r)])
}

/// The JUnit XML of a `ping` / `udp-echo` run.
pub fn ping_junit(r: &PingReport) -> anyhow::Result<String> {
    let qualified = r.qualify.outcome == Outcome::Qualified;
    let verdict = if !qualified {
        Ok(Some("the client did not qualify".to_owned()))
    } else if r.received == 0 {
        Err(format!(
            "no answer: {} sent, 0 received (exit {})",
            r.transmitted, r.exit_code
        ))
    } else {
        Ok(None)
    };
    let mut out = String::new();
    for reply in &r.replies {
        out.push_str(&reply.to_string());
        out.push('\n');
    }
    out.push_str(&r.summary());
    let session = Case {
        class: "client-sim.ping",
        name: format!("{} {}", r.protocol, r.destination),
        seconds: r.elapsed_ms.saturating_sub(r.qualify.elapsed_ms) as f64 / 1000.0,
        verdict,
        out,
    };
    document("client-sim ping", &[qualify_case(&r.qualify), session])
}

fn document(suite_name: &str, cases: &[Case]) -> anyhow::Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let tests = cases.len().to_string();
    let failures = cases.iter().filter(|c| c.verdict.is_err()).count();
    let skipped = cases
        .iter()
        .filter(|c| matches!(c.verdict, Ok(Some(_))))
        .count();
    let (failures, skipped) = (failures.to_string(), skipped.to_string());
    let mut root = BytesStart::new("testsuites");
    root.push_attribute(("name", suite_name));
    root.push_attribute(("tests", tests.as_str()));
    root.push_attribute(("failures", failures.as_str()));
    w.write_event(Event::Start(root))?;
    let mut suite = BytesStart::new("testsuite");
    suite.push_attribute(("name", suite_name));
    suite.push_attribute(("tests", tests.as_str()));
    suite.push_attribute(("failures", failures.as_str()));
    suite.push_attribute(("errors", "0"));
    suite.push_attribute(("skipped", skipped.as_str()));
    w.write_event(Event::Start(suite))?;
    for c in cases {
        let mut case = BytesStart::new("testcase");
        case.push_attribute(("classname", c.class));
        case.push_attribute(("name", c.name.as_str()));
        case.push_attribute(("time", format!("{:.3}", c.seconds).as_str()));
        w.write_event(Event::Start(case))?;
        match &c.verdict {
            Err(message) => {
                let mut e = BytesStart::new("failure");
                e.push_attribute(("message", message.as_str()));
                e.push_attribute(("type", "outcome"));
                w.write_event(Event::Start(e))?;
                w.write_event(Event::Text(BytesText::new(message)))?;
                w.write_event(Event::End(BytesEnd::new("failure")))?;
            }
            Ok(Some(message)) => {
                let mut e = BytesStart::new("skipped");
                e.push_attribute(("message", message.as_str()));
                w.write_event(Event::Empty(e))?;
            }
            Ok(None) => {}
        }
        w.write_event(Event::Start(BytesStart::new("system-out")))?;
        w.write_event(Event::Text(BytesText::new(&c.out)))?;
        w.write_event(Event::End(BytesEnd::new("system-out")))?;
        w.write_event(Event::End(BytesEnd::new("testcase")))?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuite")))?;
    w.write_event(Event::End(BytesEnd::new("testsuites")))?;
    let mut xml = String::from_utf8(w.into_inner())?;
    xml.push('\n');
    Ok(xml)
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
