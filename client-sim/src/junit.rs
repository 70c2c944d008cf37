//! The one JUnit XML writer behind every `--junit` (the lab, `qualify`/`ping`, the load run,
//! the container lab): a `<testsuites>` root holding one `<testsuite>` with its counts, each
//! `<testcase>` with its `<failure>` or `<skipped>` and its text in `<system-out>`. Callers
//! only say what their cases are.

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

/// How a test case ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Passed.
    Passed,
    /// Failed: the `type` attribute, the one-line message, and the failure's text.
    Failed {
        /// `type` of the `<failure>` (e.g. `mismatch`, `threshold`, `outcome`).
        kind: &'static str,
        /// Its `message` attribute.
        message: String,
        /// Its text.
        text: String,
    },
    /// Skipped, and why.
    Skipped(String),
}

/// One test case.
#[derive(Clone, Debug)]
pub struct Case {
    /// `classname`.
    pub class: String,
    /// `name`.
    pub name: String,
    /// Seconds it took; `None` where wall time means nothing (written as 0).
    pub time_s: Option<f64>,
    /// How it ended.
    pub verdict: Verdict,
    /// Its `<system-out>`.
    pub out: String,
}

/// The document: the root named `root`, one suite named `suite` (with `time_s` on both when
/// given), `cases` in order.
pub fn document(
    root: &str,
    suite: &str,
    time_s: Option<f64>,
    cases: &[Case],
) -> anyhow::Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let count = |f: fn(&Verdict) -> bool| cases.iter().filter(|c| f(&c.verdict)).count();
    let tests = cases.len().to_string();
    let failures = count(|v| matches!(v, Verdict::Failed { .. })).to_string();
    let skipped = count(|v| matches!(v, Verdict::Skipped(_))).to_string();
    let time = time_s.map(|t| format!("{t:.3}"));
    let mut e = BytesStart::new("testsuites");
    e.push_attribute(("name", root));
    e.push_attribute(("tests", tests.as_str()));
    e.push_attribute(("failures", failures.as_str()));
    if let Some(t) = &time {
        e.push_attribute(("time", t.as_str()));
    }
    w.write_event(Event::Start(e))?;
    let mut e = BytesStart::new("testsuite");
    e.push_attribute(("name", suite));
    e.push_attribute(("tests", tests.as_str()));
    e.push_attribute(("failures", failures.as_str()));
    e.push_attribute(("errors", "0"));
    e.push_attribute(("skipped", skipped.as_str()));
    if let Some(t) = &time {
        e.push_attribute(("time", t.as_str()));
    }
    w.write_event(Event::Start(e))?;
    for c in cases {
        write_case(&mut w, c)?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuite")))?;
    w.write_event(Event::End(BytesEnd::new("testsuites")))?;
    let mut xml = String::from_utf8(w.into_inner())?;
    xml.push('\n');
    Ok(xml)
}

fn write_case(w: &mut Writer<Vec<u8>>, c: &Case) -> anyhow::Result<()> {
    let mut e = BytesStart::new("testcase");
    e.push_attribute(("classname", c.class.as_str()));
    e.push_attribute(("name", c.name.as_str()));
    let time = c.time_s.map_or("0".to_owned(), |t| format!("{t:.3}"));
    e.push_attribute(("time", time.as_str()));
    w.write_event(Event::Start(e))?;
    match &c.verdict {
        Verdict::Passed => {}
        Verdict::Failed {
            kind,
            message,
            text,
        } => {
            let mut e = BytesStart::new("failure");
            e.push_attribute(("message", message.as_str()));
            e.push_attribute(("type", *kind));
            w.write_event(Event::Start(e))?;
            w.write_event(Event::Text(BytesText::new(text)))?;
            w.write_event(Event::End(BytesEnd::new("failure")))?;
        }
        Verdict::Skipped(message) => {
            let mut e = BytesStart::new("skipped");
            e.push_attribute(("message", message.as_str()));
            w.write_event(Event::Empty(e))?;
        }
    }
    w.write_event(Event::Start(BytesStart::new("system-out")))?;
    w.write_event(Event::Text(BytesText::new(&c.out)))?;
    w.write_event(Event::End(BytesEnd::new("system-out")))?;
    w.write_event(Event::End(BytesEnd::new("testcase")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_verdicts_and_escapes_text() {
        let case = |name: &str, verdict| Case {
            class: "c".to_owned(),
            name: name.to_owned(),
            time_s: Some(1.5),
            verdict,
            out: "a < b & c".to_owned(),
        };
        let xml = document(
            "root",
            "suite",
            None,
            &[
                case("ok", Verdict::Passed),
                case(
                    "bad",
                    Verdict::Failed {
                        kind: "mismatch",
                        message: "m".to_owned(),
                        text: "m\nbody".to_owned(),
                    },
                ),
                case("skip", Verdict::Skipped("why".to_owned())),
            ],
        )
        .unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let suite = doc
            .descendants()
            .find(|n| n.has_tag_name("testsuite"))
            .unwrap();
        assert_eq!(suite.attribute("tests"), Some("3"));
        assert_eq!(suite.attribute("failures"), Some("1"));
        assert_eq!(suite.attribute("skipped"), Some("1"));
        assert_eq!(suite.attribute("time"), None);
        let failure = doc
            .descendants()
            .find(|n| n.has_tag_name("failure"))
            .unwrap();
        assert_eq!(failure.attribute("type"), Some("mismatch"));
        assert_eq!(failure.text(), Some("m\nbody"));
        let out = doc
            .descendants()
            .find(|n| n.has_tag_name("system-out"))
            .unwrap();
        assert_eq!(out.text(), Some("a < b & c"));
        let times: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .map(|n| n.attribute("time").unwrap())
            .collect();
        assert_eq!(times, ["1.500"; 3]);
    }
}
