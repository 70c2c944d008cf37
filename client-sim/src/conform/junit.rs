//! JUnit XML (one `<testsuite>` per device, one `<testcase>` per check), the format every CI
//! shows: a failure or tool error is `<failure>`/`<error>` with the clause and the
//! datagrams, a skipped or not-applicable check is `<skipped>` with its reason.

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use super::outcome::Verdict;
use super::report::{trace_text, CheckResult, Report};
use super::spec::Role;

/// The JUnit XML document of `report`.
pub fn junit(report: &Report) -> anyhow::Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let total_ms: u64 = report.checks.iter().map(|c| c.duration_ms).sum();
    let mut root = BytesStart::new("testsuites");
    root.push_attribute(("name", "teredo conformance"));
    root.push_attribute(("tests", report.checks.len().to_string().as_str()));
    root.push_attribute(("time", secs(total_ms).as_str()));
    w.write_event(Event::Start(root))?;
    for role in [Role::Server, Role::Relay] {
        let cases: Vec<&CheckResult> = report
            .checks
            .iter()
            .filter(|c| c.spec.role == role)
            .collect();
        if cases.is_empty() {
            continue;
        }
        let count = |v: Verdict| cases.iter().filter(|c| c.verdict == v).count();
        let mut suite = BytesStart::new("testsuite");
        suite.push_attribute((
            "name",
            format!("teredo-conformance.{}", role.as_str()).as_str(),
        ));
        suite.push_attribute(("tests", cases.len().to_string().as_str()));
        suite.push_attribute(("failures", count(Verdict::Fail).to_string().as_str()));
        suite.push_attribute(("errors", count(Verdict::Error).to_string().as_str()));
        let skipped = count(Verdict::Skipped) + count(Verdict::NotApplicable);
        suite.push_attribute(("skipped", skipped.to_string().as_str()));
        let ms: u64 = cases.iter().map(|c| c.duration_ms).sum();
        suite.push_attribute(("time", secs(ms).as_str()));
        w.write_event(Event::Start(suite))?;
        for c in cases {
            write_case(&mut w, c)?;
        }
        w.write_event(Event::End(BytesEnd::new("testsuite")))?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuites")))?;
    let mut xml = String::from_utf8(w.into_inner())?;
    xml.push('\n');
    Ok(xml)
}

fn write_case(w: &mut Writer<Vec<u8>>, c: &CheckResult) -> anyhow::Result<()> {
    let mut case = BytesStart::new("testcase");
    case.push_attribute((
        "classname",
        format!("teredo-conformance.{}", c.spec.role.as_str()).as_str(),
    ));
    case.push_attribute(("name", format!("{} {}", c.spec.id, c.spec.title).as_str()));
    case.push_attribute(("time", secs(c.duration_ms).as_str()));
    w.write_event(Event::Start(case))?;
    let body = format!(
        "[{} {}] {}\nsends: {}\nexpects: {}\nobserved: {}\n{}",
        c.spec.level.as_str(),
        c.spec.rfc,
        c.spec.clause,
        c.spec.sends,
        c.spec.expects,
        c.detail,
        trace_text(&c.trace, "")
    );
    let element = match c.verdict {
        Verdict::Pass => None,
        Verdict::Fail => Some(("failure", c.detail.clone())),
        Verdict::Error => Some(("error", c.detail.clone())),
        Verdict::Skipped => Some(("skipped", c.detail.clone())),
        Verdict::NotApplicable => Some(("skipped", format!("not applicable: {}", c.detail))),
    };
    if let Some((name, message)) = element {
        let mut e = BytesStart::new(name);
        e.push_attribute(("message", message.as_str()));
        if name == "failure" {
            e.push_attribute(("type", c.spec.level.as_str()));
        }
        if name == "skipped" {
            w.write_event(Event::Empty(e))?;
        } else {
            w.write_event(Event::Start(e))?;
            w.write_event(Event::Text(BytesText::new(&body)))?;
            w.write_event(Event::End(BytesEnd::new(name)))?;
        }
    }
    w.write_event(Event::Start(BytesStart::new("system-out")))?;
    w.write_event(Event::Text(BytesText::new(&body)))?;
    w.write_event(Event::End(BytesEnd::new("system-out")))?;
    w.write_event(Event::End(BytesEnd::new("testcase")))?;
    Ok(())
}

fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use quick_xml::events::Event;
    use quick_xml::Reader;

    use super::super::outcome::Verdict;
    use super::super::report::fixture::{result, target};
    use super::super::report::Report;
    use super::super::spec::Level;
    use super::junit;

    /// (element name, attributes) of every start or empty element, read back by a parser.
    fn elements(xml: &str) -> Vec<(String, Vec<(String, String)>)> {
        let mut r = Reader::from_str(xml);
        let mut out = Vec::new();
        loop {
            match r.read_event().expect("well-formed XML") {
                Event::Start(e) | Event::Empty(e) => {
                    let attrs = e
                        .attributes()
                        .map(|a| {
                            let a = a.expect("attribute");
                            let v = a.unescape_value().expect("value").into_owned();
                            (
                                String::from_utf8(a.key.as_ref().to_vec()).expect("utf-8"),
                                v,
                            )
                        })
                        .collect();
                    out.push((
                        String::from_utf8(e.name().as_ref().to_vec()).expect("utf-8"),
                        attrs,
                    ));
                }
                Event::Eof => return out,
                _ => {}
            }
        }
    }

    #[test]
    fn one_testcase_per_check_with_failures_and_skips() {
        let report = Report::new(
            target(),
            false,
            vec![
                result("S01", Level::Must, Verdict::Pass),
                result("S02", Level::Must, Verdict::Fail),
                result("S03", Level::Should, Verdict::Skipped),
                result("R16", Level::Must, Verdict::NotApplicable),
                result("R17", Level::Must, Verdict::Error),
            ],
        );
        let xml = junit(&report).expect("junit");
        let els = elements(&xml);
        let names: Vec<&str> = els.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names.iter().filter(|n| **n == "testcase").count(),
            5,
            "{xml}"
        );
        assert_eq!(
            names.iter().filter(|n| **n == "testsuite").count(),
            2,
            "{xml}"
        );
        assert_eq!(
            names.iter().filter(|n| **n == "failure").count(),
            1,
            "{xml}"
        );
        assert_eq!(
            names.iter().filter(|n| **n == "skipped").count(),
            2,
            "{xml}"
        );
        assert_eq!(names.iter().filter(|n| **n == "error").count(), 1, "{xml}");
        let case = els
            .iter()
            .find(|(n, a)| {
                n == "testcase" && a.iter().any(|(k, v)| k == "name" && v.starts_with("S02"))
            })
            .expect("S02's testcase");
        assert!(case
            .1
            .iter()
            .any(|(k, v)| k == "name" && v == "S02 a check & its <title>"));
        let failure = els.iter().find(|(n, _)| n == "failure").expect("failure");
        assert!(failure
            .1
            .iter()
            .any(|(k, v)| k == "message" && v == "fail because <reasons> & more"));
    }
}
