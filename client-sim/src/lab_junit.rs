//! `lab --junit FILE`: the lab as JUnit XML, the format every CI shows — one `<testcase>` per
//! scenario, a `<failure>` carrying the mismatch text when the outcome differs from the
//! expected one, and the protocol reasoning in `<system-out>`.

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use crate::lab::{expected_summary, LabReport, ScenarioResult};
use crate::scenario::Variant;

/// The JUnit XML document of `report`.
pub fn junit(report: &LabReport) -> anyhow::Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let tests = report.results.len().to_string();
    let failures = report.mismatches().to_string();
    let mut root = BytesStart::new("testsuites");
    root.push_attribute(("name", "teredo lab"));
    root.push_attribute(("tests", tests.as_str()));
    root.push_attribute(("failures", failures.as_str()));
    w.write_event(Event::Start(root))?;
    let mut suite = BytesStart::new("testsuite");
    suite.push_attribute(("name", format!("teredo-lab.seed-{}", report.seed).as_str()));
    suite.push_attribute(("tests", tests.as_str()));
    suite.push_attribute(("failures", failures.as_str()));
    suite.push_attribute(("errors", "0"));
    suite.push_attribute(("skipped", "0"));
    w.write_event(Event::Start(suite))?;
    for r in &report.results {
        write_case(&mut w, r)?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuite")))?;
    w.write_event(Event::End(BytesEnd::new("testsuites")))?;
    let mut xml = String::from_utf8(w.into_inner())?;
    xml.push('\n');
    Ok(xml)
}

fn write_case(w: &mut Writer<Vec<u8>>, r: &ScenarioResult) -> anyhow::Result<()> {
    let s = &r.scenario;
    let o = &r.observed;
    let mut case = BytesStart::new("testcase");
    let class = match s.variant {
        Variant::Matrix => "matrix",
        v => v.as_str(),
    };
    case.push_attribute(("classname", format!("teredo-lab.{class}").as_str()));
    case.push_attribute(("name", s.name().as_str()));
    // Wall time is not a function of the seed; virtual time is.
    case.push_attribute(("time", "0"));
    w.write_event(Event::Start(case))?;
    let body = format!(
        "expected: {}\nobserved: {} / {} / {}\nwhy: {}\nseed: {}",
        expected_summary(s),
        o.state,
        o.nat,
        o.error.map_or("-".to_owned(), |e| e.to_string()),
        s.why,
        r.seed,
    );
    if !r.ok() {
        let message = r.mismatches.join("; ");
        let mut e = BytesStart::new("failure");
        e.push_attribute(("message", message.as_str()));
        e.push_attribute(("type", "mismatch"));
        w.write_event(Event::Start(e))?;
        w.write_event(Event::Text(BytesText::new(&format!("{message}\n{body}"))))?;
        w.write_event(Event::End(BytesEnd::new("failure")))?;
    }
    w.write_event(Event::Start(BytesStart::new("system-out")))?;
    w.write_event(Event::Text(BytesText::new(&body)))?;
    w.write_event(Event::End(BytesEnd::new("system-out")))?;
    w.write_event(Event::End(BytesEnd::new("testcase")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{run_scenario, scenario_named, Expect};
    use teredo::client::NatType;

    #[test]
    fn one_case_per_scenario_and_the_mismatch_as_failure() {
        let good = run_scenario(&scenario_named("xp-sp2__symmetric").unwrap(), 1, false).unwrap();
        // Claim XP qualifies behind a symmetric NAT: a mismatch.
        let wrong = crate::lab::Scenario {
            expect: Expect::qualified(NatType::SymmetricPort),
            ..scenario_named("xp-sp2__symmetric").unwrap()
        };
        let bad = run_scenario(&wrong, 1, false).unwrap();
        let report = LabReport {
            seed: 1,
            results: vec![good, bad],
        };
        let xml = junit(&report).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "testsuites");
        assert_eq!(root.attribute("tests"), Some("2"));
        assert_eq!(root.attribute("failures"), Some("1"));
        let cases: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].attribute("classname"), Some("teredo-lab.matrix"));
        assert!(cases
            .iter()
            .all(|c| c.attribute("name") == Some("xp-sp2__symmetric")));
        let failures: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("failure"))
            .collect();
        assert_eq!(failures.len(), 1);
        let msg = failures[0].attribute("message").unwrap();
        assert!(
            msg.starts_with("state offline (expected qualified)"),
            "{msg}"
        );
        let out = cases[0]
            .children()
            .find(|n| n.has_tag_name("system-out"))
            .and_then(|n| n.text())
            .unwrap();
        assert!(out.contains("client behind symmetric NAT"), "{out}");
    }
}
