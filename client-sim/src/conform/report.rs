//! The run's result: one [`CheckResult`] per check, the summary, the exit status, and the
//! readable table. JSON is the serde form of [`Report`]; JUnit and pcap have their own files.

use std::fmt::Write as _;

use serde::Serialize;

use super::ctx::Traced;
use super::outcome::Verdict;
use super::spec::{Level, Spec};
use super::target::Target;

/// The result of one check.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    /// What was checked.
    #[serde(flatten)]
    pub spec: Spec,
    /// The verdict.
    pub verdict: Verdict,
    /// Why, in one line.
    pub detail: String,
    /// How long the check took, milliseconds.
    pub duration_ms: u64,
    /// Every datagram sent and received, with timing.
    pub trace: Vec<Traced>,
}

impl CheckResult {
    /// True when this result fails the run.
    pub fn counts_as_failure(&self, strict: bool) -> bool {
        match self.verdict {
            Verdict::Fail => self.spec.level.counts(strict),
            Verdict::Error => true,
            Verdict::Pass | Verdict::Skipped | Verdict::NotApplicable => false,
        }
    }
}

/// Counts per verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Passed.
    pub pass: usize,
    /// Failed (any level).
    pub fail: usize,
    /// Failed at a level that counts (MUST; every level with `--strict`).
    pub fail_counted: usize,
    /// Skipped.
    pub skipped: usize,
    /// Not applicable.
    pub not_applicable: usize,
    /// Tool errors.
    pub error: usize,
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What was tested with what.
    pub target: Target,
    /// Whether SHOULD and interop levels count.
    pub strict: bool,
    /// Counts.
    pub summary: Summary,
    /// One result per check, in catalogue order.
    pub checks: Vec<CheckResult>,
    /// The comparison with an expectations file, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expectations: Option<super::expect::Comparison>,
}

impl Report {
    /// Builds the summary over `checks`.
    pub fn new(target: Target, strict: bool, checks: Vec<CheckResult>) -> Self {
        let mut s = Summary::default();
        for c in &checks {
            match c.verdict {
                Verdict::Pass => s.pass += 1,
                Verdict::Fail => s.fail += 1,
                Verdict::Skipped => s.skipped += 1,
                Verdict::NotApplicable => s.not_applicable += 1,
                Verdict::Error => s.error += 1,
            }
            if c.verdict == Verdict::Fail && c.counts_as_failure(strict) {
                s.fail_counted += 1;
            }
        }
        Self {
            target,
            strict,
            summary: s,
            checks,
            expectations: None,
        }
    }

    /// 0 when nothing that counts failed (or, with expectations, when every verdict is the
    /// expected one), 1 otherwise.
    pub fn exit_status(&self) -> u8 {
        let ok = match &self.expectations {
            Some(cmp) => cmp.mismatches.is_empty(),
            None => self.summary.fail_counted == 0 && self.summary.error == 0,
        };
        u8::from(!ok)
    }

    /// The readable table: one row per check, then the summary, then the evidence of every
    /// failure (the datagrams, hex, with timing).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let w_title = self
            .checks
            .iter()
            .map(|c| c.spec.title.len())
            .max()
            .unwrap_or(5)
            .min(60);
        let _ = writeln!(
            out,
            "{:<4} {:<6} {:<15} {:<14} {:<w$}  detail",
            "id",
            "device",
            "level",
            "result",
            "check",
            w = w_title
        );
        for c in &self.checks {
            let title: String = c.spec.title.chars().take(w_title).collect();
            let _ = writeln!(
                out,
                "{:<4} {:<6} {:<15} {:<14} {:<w$}  {}",
                c.spec.id,
                c.spec.role.as_str(),
                c.spec.level.as_str(),
                c.verdict.as_str(),
                title,
                c.detail,
                w = w_title
            );
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "\n{} checks: {} pass, {} fail ({} counted{}), {} skipped, {} not applicable, {} errors",
            self.checks.len(),
            s.pass,
            s.fail,
            s.fail_counted,
            if self.strict { ", --strict" } else { ": MUST only" },
            s.skipped,
            s.not_applicable,
            s.error
        );
        for c in self
            .checks
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Fail | Verdict::Error))
        {
            let _ = writeln!(
                out,
                "\n{} {} [{} {}] {}\n  clause: {}\n  expected: {}\n  observed: {}",
                c.spec.id,
                c.verdict.as_str().to_uppercase(),
                c.spec.level.as_str(),
                c.spec.rfc,
                c.spec.title,
                c.spec.clause,
                c.spec.expects,
                c.detail
            );
            out.push_str(&trace_text(&c.trace, "  "));
        }
        if let Some(cmp) = &self.expectations {
            out.push('\n');
            out.push_str(&cmp.text());
        }
        out
    }
}

/// The datagrams of a trace, one per line: time, direction, endpoints, note, hex.
pub fn trace_text(trace: &[Traced], indent: &str) -> String {
    let mut out = String::new();
    for t in trace {
        let arrow = match t.dir {
            super::ctx::Dir::Sent => format!("{} -> {}", t.local, t.remote),
            super::ctx::Dir::Received => format!("{} <- {}", t.local, t.remote),
        };
        let _ = writeln!(
            out,
            "{indent}{:>10.3} ms  {arrow}  {} B{}{}\n{indent}              {}",
            t.at_us as f64 / 1000.0,
            t.hex.len() / 2,
            if t.note.is_empty() { "" } else { "  " },
            t.note,
            t.hex
        );
    }
    out
}

/// Levels in the order the help text lists them.
pub const LEVELS: [Level; 4] = [
    Level::Must,
    Level::Should,
    Level::InteropWindows,
    Level::InteropMiredo,
];

/// Results built by hand, for the tests of the report, JUnit and expectations code.
#[cfg(test)]
pub(crate) mod fixture {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::time::Duration;

    use super::super::ctx::{Dir, Traced};
    use super::super::outcome::Verdict;
    use super::super::spec::{Level, Role, Spec};
    use super::super::target::{ServerTarget, Target};
    use super::CheckResult;

    /// A spec with this id and level.
    pub(crate) fn spec(id: &'static str, level: Level) -> Spec {
        Spec {
            id,
            role: if id.starts_with('R') {
                Role::Relay
            } else {
                Role::Server
            },
            title: "a check & its <title>",
            rfc: "RFC 4380 §5.3.2",
            clause: "MUST \"quote\"",
            level,
            sends: "an RS",
            expects: "an RA",
        }
    }

    /// A result with one datagram each way.
    pub(crate) fn result(id: &'static str, level: Level, verdict: Verdict) -> CheckResult {
        let local = SocketAddr::from(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 10), 40000));
        let remote = SocketAddr::from(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 3544));
        let t = |dir, at_us: u64, bytes: &[u8]| Traced {
            at_us,
            dir,
            local,
            remote,
            hex: super::super::ctx::hex(bytes),
            note: String::new(),
            run_us: at_us,
            bytes: bytes.to_vec(),
        };
        CheckResult {
            spec: spec(id, level),
            verdict,
            detail: format!("{} because <reasons> & more", verdict.as_str()),
            duration_ms: 12,
            trace: vec![
                t(Dir::Sent, 10, &[0, 1, 2]),
                t(Dir::Received, 500, &[0xff, 0xee]),
            ],
        }
    }

    /// A target with a server only.
    pub(crate) fn target() -> Target {
        Target {
            server: Some(ServerTarget {
                primary: Ipv4Addr::new(198, 51, 100, 1),
                secondary: Ipv4Addr::new(198, 51, 100, 2),
                port: 3544,
            }),
            relay: None,
            local: Ipv4Addr::new(198, 51, 100, 10),
            native_local: None,
            non_global_sources: Vec::new(),
            raw: false,
            quiet: Duration::from_millis(500),
            quick: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{result, target};
    use super::*;

    #[test]
    fn only_must_failures_and_errors_count_unless_strict() {
        let checks = vec![
            result("S01", Level::Must, Verdict::Pass),
            result("S02", Level::Should, Verdict::Fail),
            result("S03", Level::InteropWindows, Verdict::Fail),
            result("S04", Level::Must, Verdict::Skipped),
        ];
        let lenient = Report::new(target(), false, checks.clone());
        assert_eq!(lenient.summary.fail, 2);
        assert_eq!(lenient.summary.fail_counted, 0);
        assert_eq!(lenient.exit_status(), 0);
        let strict = Report::new(target(), true, checks.clone());
        assert_eq!(strict.summary.fail_counted, 2);
        assert_eq!(strict.exit_status(), 1);
        let mut must = checks;
        must.push(result("S05", Level::Must, Verdict::Fail));
        assert_eq!(Report::new(target(), false, must).exit_status(), 1);
        let error = vec![result("S06", Level::Should, Verdict::Error)];
        assert_eq!(Report::new(target(), false, error).exit_status(), 1);
    }

    #[test]
    fn the_table_shows_the_evidence_of_failures_only() {
        let r = Report::new(
            target(),
            false,
            vec![
                result("S01", Level::Must, Verdict::Pass),
                result("S02", Level::Must, Verdict::Fail),
            ],
        );
        let t = r.table();
        assert!(t.contains("S02 FAIL [MUST RFC 4380 §5.3.2]"), "{t}");
        assert!(
            t.contains("198.51.100.10:40000 <- 198.51.100.1:3544  2 B"),
            "{t}"
        );
        assert!(t.contains("ffee"), "{t}");
        assert_eq!(t.matches("000102").count(), 1, "only S02's trace: {t}");
        assert!(
            t.contains("2 checks: 1 pass, 1 fail (1 counted: MUST only)"),
            "{t}"
        );
    }
}
