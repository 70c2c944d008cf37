//! What one check found: its verdict, why, and the datagrams that show it.

use serde::Serialize;

/// The verdict of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The target did what the clause says.
    Pass,
    /// It did not; the detail says what it did instead.
    Fail,
    /// Not run: the tool lacks something (root, a local address, a native side); the detail
    /// names it.
    Skipped,
    /// The clause does not apply to this target as configured.
    NotApplicable,
    /// The tool itself failed (a socket it could not open): no verdict on the target.
    Error,
}

impl Verdict {
    /// The label in the table and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Skipped => "skipped",
            Self::NotApplicable => "not-applicable",
            Self::Error => "error",
        }
    }

    /// Parses [`as_str`](Self::as_str) (the expectations file).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pass,
            Self::Fail,
            Self::Skipped,
            Self::NotApplicable,
            Self::Error,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// What a check function returns: the verdict with a one-line reason (for a pass, what was
/// observed, e.g. "RA from 198.51.100.2:3544 after 0.4 ms").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// Why, in one line.
    pub detail: String,
}

impl Outcome {
    /// A pass, with what was observed.
    pub fn pass(detail: impl Into<String>) -> Self {
        Self::new(Verdict::Pass, detail)
    }
    /// A failure, with what the target did instead.
    pub fn fail(detail: impl Into<String>) -> Self {
        Self::new(Verdict::Fail, detail)
    }
    /// Not run, with what is missing.
    pub fn skipped(detail: impl Into<String>) -> Self {
        Self::new(Verdict::Skipped, detail)
    }
    /// Does not apply, with why.
    pub fn not_applicable(detail: impl Into<String>) -> Self {
        Self::new(Verdict::NotApplicable, detail)
    }
    fn new(verdict: Verdict, detail: impl Into<String>) -> Self {
        Self {
            verdict,
            detail: detail.into(),
        }
    }
}

/// Collects the failed expectations of a check, so one run reports every deviation at once
/// instead of the first: `f.expect(cond, || "…")`, then `f.outcome("what passed")`.
#[derive(Debug, Default)]
pub struct Findings {
    failures: Vec<String>,
}

impl Findings {
    /// Records `why()` unless `ok`.
    pub fn expect(&mut self, ok: bool, why: impl FnOnce() -> String) -> &mut Self {
        if !ok {
            self.failures.push(why());
        }
        self
    }

    /// Records a failure.
    pub fn fail(&mut self, why: impl Into<String>) -> &mut Self {
        self.failures.push(why.into());
        self
    }

    /// True when nothing failed so far.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// A pass with `passed` when nothing failed, else a failure listing every finding.
    pub fn outcome(&self, passed: impl Into<String>) -> Outcome {
        if self.failures.is_empty() {
            Outcome::pass(passed)
        } else {
            Outcome::fail(self.failures.join("; "))
        }
    }
}
