//! Runs the selected checks one after the other, each in its own [`Ctx`], and prints a
//! progress line per check on stderr.

use std::time::Instant;

use super::ctx::Ctx;
use super::outcome::Verdict;
use super::report::CheckResult;
use super::spec::Check;
use super::target::Target;

/// Runs `checks` against `target`; `seed` makes nonces repeatable.
pub fn run_checks(
    target: &Target,
    checks: &[Check],
    seed: u64,
    progress: bool,
) -> Vec<CheckResult> {
    let run_start = Instant::now();
    let mut results = Vec::with_capacity(checks.len());
    for (i, check) in checks.iter().enumerate() {
        let started = Instant::now();
        let mut ctx = Ctx::new(target, run_start, seed.wrapping_add(i as u64));
        let (verdict, detail) = match (check.run)(&mut ctx) {
            Ok(o) => (o.verdict, o.detail),
            Err(e) => (Verdict::Error, format!("{e:#}")),
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if progress {
            eprintln!(
                "[{:>2}/{}] {} {:<14} {} ({} ms)",
                i + 1,
                checks.len(),
                check.spec.id,
                verdict.as_str(),
                check.spec.title,
                duration_ms
            );
        }
        results.push(CheckResult {
            spec: check.spec,
            verdict,
            detail,
            duration_ms,
            trace: ctx.into_trace(),
        });
    }
    results
}
