//! `lab --junit FILE`: the lab as JUnit XML, the format every CI shows — one `<testcase>` per
//! scenario, a `<failure>` carrying the mismatch text when the outcome differs from the
//! expected one, and the protocol reasoning in `<system-out>`.

use crate::junit::{document, Case, Verdict};
use crate::lab::{expected_summary, LabReport, ScenarioResult};
use crate::scenario::Variant;

/// The JUnit XML document of `report`.
pub fn junit(report: &LabReport) -> anyhow::Result<String> {
    let cases: Vec<Case> = report.results.iter().map(case).collect();
    document(
        "teredo lab",
        &format!("teredo-lab.seed-{}", report.seed),
        None,
        &cases,
    )
}

fn case(r: &ScenarioResult) -> Case {
    let s = &r.scenario;
    let o = &r.observed;
    let class = match s.variant {
        Variant::Matrix => "matrix",
        v => v.as_str(),
    };
    let body = format!(
        "expected: {}\nobserved: {} / {} / {}\nwhy: {}\nseed: {}",
        expected_summary(s),
        o.state,
        o.nat,
        o.error.map_or("-".to_owned(), |e| e.to_string()),
        s.why,
        r.seed,
    );
    let verdict = if r.ok() {
        Verdict::Passed
    } else {
        let message = r.mismatches.join("; ");
        Verdict::Failed {
            kind: "mismatch",
            text: format!("{message}\n{body}"),
            message,
        }
    };
    Case {
        class: format!("teredo-lab.{class}"),
        name: s.name(),
        // Wall time is not a function of the seed; virtual time is.
        time_s: None,
        verdict,
        out: body,
    }
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
