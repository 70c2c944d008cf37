//! Expectations files: the verdicts a known implementation is expected to give, with the
//! reason for every deviation, so a run can be compared with a baseline (Miredo's known
//! deviations, a misbehaving test target) instead of with "everything passes".
//!
//! ```json
//! { "implementations": {
//!     "miredo-server": {
//!       "describe": "Debian's miredo-server 1.2.6",
//!       "default": "pass",
//!       "checks": { "S04": { "verdict": "fail", "why": "leaks the previous RS's nonce" } } } } }
//! ```
//! Checks of the run that the file does not name get `default`; checks the file names but
//! the run did not include are ignored (a run may test only the server).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::outcome::Verdict;
use super::report::CheckResult;
use super::target::LEFT_OUT_BY_QUICK;

/// A whole expectations file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Per implementation name.
    pub implementations: BTreeMap<String, Implementation>,
}

/// What one implementation is expected to do.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Implementation {
    /// What it is (version, configuration).
    #[serde(default)]
    pub describe: String,
    /// The verdict of a check not listed.
    pub default: String,
    /// The exceptions.
    #[serde(default)]
    pub checks: BTreeMap<String, Expected>,
}

/// One exception.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// The verdict.
    pub verdict: String,
    /// Why this implementation differs.
    pub why: String,
}

/// A check whose verdict is not the expected one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The check.
    pub id: String,
    /// Expected verdict.
    pub expected: Verdict,
    /// Actual verdict.
    pub actual: Verdict,
    /// The check's detail.
    pub detail: String,
}

/// The comparison of a run with one implementation's expectations.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The implementation compared with.
    pub implementation: String,
    /// Checks compared.
    pub compared: usize,
    /// Expected deviations that did occur: id → why.
    pub known_deviations: BTreeMap<String, String>,
    /// Checks left out by `--quick` (not compared).
    pub left_out: Vec<String>,
    /// Every check whose verdict differs.
    pub mismatches: Vec<Mismatch>,
}

impl Comparison {
    /// A few lines for the table.
    pub fn text(&self) -> String {
        let mut out = format!(
            "expectations for {}: {} checks compared, {} known deviations, {} mismatches\n",
            self.implementation,
            self.compared,
            self.known_deviations.len(),
            self.mismatches.len()
        );
        if !self.left_out.is_empty() {
            let _ = writeln!(out, "  left out by --quick: {}", self.left_out.join(", "));
        }
        for (id, why) in &self.known_deviations {
            let _ = writeln!(out, "  known: {id}: {why}");
        }
        for m in &self.mismatches {
            let _ = writeln!(
                out,
                "  MISMATCH {}: expected {}, got {} ({})",
                m.id,
                m.expected.as_str(),
                m.actual.as_str(),
                m.detail
            );
        }
        out
    }
}

impl Expectations {
    /// Reads and validates a file: every verdict must be one of the five, every id one of
    /// `known_ids`.
    pub fn load(path: &Path, known_ids: &[&str]) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let e: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an expectations file", path.display()))?;
        for (name, imp) in &e.implementations {
            parse_verdict(&imp.default)
                .with_context(|| format!("{}: {name}: default", path.display()))?;
            for (id, x) in &imp.checks {
                anyhow::ensure!(
                    known_ids.contains(&id.as_str()),
                    "{}: {name}: no check {id}",
                    path.display()
                );
                parse_verdict(&x.verdict)
                    .with_context(|| format!("{}: {name}: {id}", path.display()))?;
            }
        }
        Ok(e)
    }

    /// Compares `results` with `implementation`'s expectations.
    pub fn compare(
        &self,
        implementation: &str,
        results: &[CheckResult],
    ) -> anyhow::Result<Comparison> {
        let imp = self.implementations.get(implementation).with_context(|| {
            format!(
                "no implementation {implementation:?} in the expectations (it has: {})",
                self.implementations
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let default = parse_verdict(&imp.default)?;
        let mut cmp = Comparison {
            implementation: implementation.to_owned(),
            compared: 0,
            known_deviations: BTreeMap::new(),
            left_out: Vec::new(),
            mismatches: Vec::new(),
        };
        for r in results {
            if r.verdict == Verdict::Skipped && r.detail.ends_with(LEFT_OUT_BY_QUICK) {
                cmp.left_out.push(r.spec.id.to_owned());
                continue;
            }
            cmp.compared += 1;
            let listed = imp.checks.get(r.spec.id);
            let expected = match listed {
                Some(x) => parse_verdict(&x.verdict)?,
                None => default,
            };
            if expected != r.verdict {
                cmp.mismatches.push(Mismatch {
                    id: r.spec.id.to_owned(),
                    expected,
                    actual: r.verdict,
                    detail: r.detail.clone(),
                });
            } else if let Some(x) = listed {
                cmp.known_deviations
                    .insert(r.spec.id.to_owned(), x.why.clone());
            }
        }
        Ok(cmp)
    }
}

fn parse_verdict(s: &str) -> anyhow::Result<Verdict> {
    Verdict::parse(s).with_context(|| {
        format!("unknown verdict {s:?} (pass, fail, skipped, not-applicable, error)")
    })
}

#[cfg(test)]
mod tests {
    use super::super::report::fixture::result;
    use super::super::spec::Level;
    use super::*;

    const FILE: &str = r#"{ "implementations": {
        "x": { "describe": "test", "default": "pass",
               "checks": { "S04": { "verdict": "fail", "why": "leaks nonces" } } } } }"#;

    fn load(text: &str, ids: &[&str]) -> anyhow::Result<Expectations> {
        let dir = std::env::temp_dir().join(format!("conform-expect-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // Tests run in parallel: every file its own name.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{n}.json"));
        std::fs::write(&path, text)?;
        Expectations::load(&path, ids)
    }

    #[test]
    fn known_deviations_match_and_anything_else_is_a_mismatch() {
        let e = load(FILE, &["S01", "S04"]).expect("valid file");
        let ok = e
            .compare(
                "x",
                &[
                    result("S01", Level::Must, Verdict::Pass),
                    result("S04", Level::Must, Verdict::Fail),
                ],
            )
            .expect("compare");
        assert!(ok.mismatches.is_empty(), "{ok:?}");
        assert_eq!(
            ok.known_deviations.get("S04").map(String::as_str),
            Some("leaks nonces")
        );
        let bad = e
            .compare(
                "x",
                &[
                    result("S01", Level::Must, Verdict::Fail),
                    result("S04", Level::Must, Verdict::Pass),
                ],
            )
            .expect("compare");
        let ids: Vec<&str> = bad.mismatches.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["S01", "S04"]);
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        let unknown_id = load(FILE, &["S01"]).expect_err("S04 is not a check");
        assert!(
            format!("{unknown_id:#}").contains("no check S04"),
            "{unknown_id:#}"
        );
        let bad_verdict =
            load(&FILE.replace("\"fail\"", "\"failed\""), &["S04"]).expect_err("verdict");
        assert!(
            format!("{bad_verdict:#}").contains("unknown verdict \"failed\""),
            "{bad_verdict:#}"
        );
        let e = load(FILE, &["S04"]).expect("valid");
        let missing = e.compare("y", &[]).expect_err("no implementation y");
        assert!(format!("{missing:#}").contains("it has: x"), "{missing:#}");
    }
}
