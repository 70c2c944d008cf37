//! `client-sim conform` (the binary) against every implementation the expectations file
//! names, each in its own namespaces (`teredo_tests::conform_lab`): ours (strict and lenient
//! relay), Debian's `miredo-server` and Miredo relay, and a deliberately misbehaving server
//! per fault (`teredo_tests::misbehaving`). For each run:
//! * every verdict is the one `conformance/expectations.json` gives (the tool's own `--expect`
//!   comparison, read from its JSON, and its exit status); every check of the devices under
//!   test ran, none ended in a tool error; ours fails nothing;
//! * a misbehaving server fails exactly the checks its fault breaks that the catalogue has
//!   (`Fault::breaks`), no others, and the expectations file says the same;
//! * the JUnit file parses as XML (roxmltree): root `testsuites`, one `testcase` per check,
//!   `failure` exactly where the JSON says fail;
//! * tshark reads the pcap, one frame per traced datagram; the only frames it flags are
//!   hostile inputs the tool sent on purpose (`teredo_tests::conform_pcap`).
//!
//! The check ids are never listed here: a new check is a new line in the expectations file.
//! Outside CI the runs use `--quick` (the relay checks that wait tens of seconds are skipped;
//! the tool leaves such a skip out of the comparison) unless `TEREDO_CONFORM_FULL=1`; with
//! `CI` set they run the whole catalogue.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use teredo_tests::conform_lab::{ConformLab, Implementation};
use teredo_tests::conform_pcap;
use teredo_tests::conform_run::{self, ConformReport, ConformRun};
use teredo_tests::misbehaving::Fault;
use teredo_tests::{check, function_name, requirements_met, TestDir};

/// Longest a run may take (a full run includes the relay's give-up and staleness waits).
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// `--quick` outside CI unless `TEREDO_CONFORM_FULL=1`: CI runs the whole catalogue.
fn quick() -> bool {
    !testkit::require::in_ci() && std::env::var("TEREDO_CONFORM_FULL").map_or(true, |v| v != "1")
}

/// Runs the tool against `imp` and asserts everything the module documentation lists.
fn conform(test: &str, imp: Implementation) {
    let mut tools = vec!["tshark"];
    tools.extend_from_slice(imp.tools());
    if !requirements_met(test, true, &tools) {
        return;
    }
    let devices = check(devices_checks(imp));
    if devices.is_empty() {
        // Not a missing tool: the catalogue has no check for these devices yet.
        loud(&format!(
            "{test}: the catalogue has no check for {}'s devices yet",
            imp.name()
        ));
        return;
    }
    let started = Instant::now();
    let dir = check(TestDir::new(test));
    let lab = check(ConformLab::new(test));
    let mut running = check(imp.start(&lab, &dir));
    let run = check(conform_run::run_conform(
        &lab,
        &dir,
        imp,
        quick(),
        RUN_TIMEOUT,
    ));
    let alive = running.ensure_running();
    eprintln!(
        "{test}: client-sim conform against {}: exit {:?} in {:.1} s{}\n{}",
        imp.name(),
        run.exit_code,
        run.elapsed.as_secs_f64(),
        if quick() { " (--quick)" } else { "" },
        run.table()
    );
    let mut failures = Vec::new();
    let mut note = |what: &str, r: Result<()>| {
        if let Err(e) = r {
            failures.push(format!("{what}: {e:#}"));
        }
    };
    note("implementation", alive);
    note("verdicts", verdicts(imp, &run));
    if let Implementation::Misbehaving(fault) = imp {
        note("fault", fault_checks(fault, &run));
    }
    note("JUnit", check_junit(&run.junit, &run.report));
    match conform_pcap::check_pcap(&run.pcap, &run.report) {
        Ok(v) => eprintln!(
            "{test}: tshark read {} frames; flagged only hostile inputs the tool sent: {:?}",
            v.frames, v.hostile_inputs
        ),
        Err(e) => failures.push(format!("pcap: {e:#}")),
    }
    eprintln!("{test}: {:.1} s in all", started.elapsed().as_secs_f64());
    assert!(
        failures.is_empty(),
        "{}:\n{}\nstderr of the run:\n{}",
        imp.name(),
        failures.join("\n"),
        run.stderr
    );
}

/// Every check of the devices under test ran, none is a tool error, the comparison with the
/// expectations file has no mismatch (but `--quick` skips) and the exit status agrees.
fn verdicts(imp: Implementation, run: &ConformRun) -> Result<()> {
    let want = devices_checks(imp)?;
    let got: BTreeSet<String> = run.verdicts().into_keys().map(str::to_owned).collect();
    ensure!(got == want, "checks run {got:?}, catalogue has {want:?}");
    let errors = run.with_verdict("error");
    ensure!(errors.is_empty(), "tool errors in {errors:?}");
    let cmp = run
        .report
        .expectations
        .as_ref()
        .context("no expectations comparison in the report")?;
    ensure!(
        cmp.implementation == imp.name()
            && cmp.compared + cmp.left_out.len() == run.report.checks.len(),
        "compared {} checks with {:?} ({} left out by --quick)",
        cmp.compared,
        cmp.implementation,
        cmp.left_out.len()
    );
    ensure!(
        quick() || cmp.left_out.is_empty(),
        "checks left out without --quick: {:?}",
        cmp.left_out
    );
    let real: Vec<String> = cmp
        .mismatches
        .iter()
        .map(|m| {
            format!(
                "{}: expected {}, got {} ({})",
                m.id, m.expected, m.actual, m.detail
            )
        })
        .collect();
    ensure!(real.is_empty(), "mismatches:\n  {}", real.join("\n  "));
    let want_exit = i32::from(!cmp.mismatches.is_empty());
    ensure!(
        run.exit_code == Some(want_exit),
        "exit status {:?}, want {want_exit}",
        run.exit_code
    );
    let (_, listed) = conform_run::expected(imp.name())?;
    for id in listed.keys().filter(|id| got.contains(*id)) {
        ensure!(
            cmp.left_out.contains(id) || cmp.known_deviations.contains_key(id),
            "{id}: listed deviation not reported as known"
        );
    }
    if matches!(imp, Implementation::Ours | Implementation::OursLenient) {
        let failed = run.with_verdict("fail");
        ensure!(failed.is_empty(), "ours fails {failed:?}");
    }
    Ok(())
}

/// A note that must be seen even when the test passes (libtest captures `eprintln!`).
fn loud(msg: &str) {
    let _ = writeln!(std::io::stderr(), "\n*** NOTE: {msg} ***");
}

/// The catalogue's checks of the devices `imp` has.
fn devices_checks(imp: Implementation) -> Result<BTreeSet<String>> {
    Ok(conform_run::catalogue()?
        .into_iter()
        .filter(|(_, role)| match role.as_str() {
            "server" => imp.has_server(),
            "relay" => imp.has_relay(),
            _ => false,
        })
        .map(|(id, _)| id)
        .collect())
}

/// A misbehaving server fails exactly the checks its fault breaks (those the catalogue
/// has), and the expectations file lists exactly those as failing.
fn fault_checks(fault: Fault, run: &ConformRun) -> Result<()> {
    let catalogue = conform_run::catalogue()?;
    let broken: BTreeSet<String> = fault
        .breaks()
        .iter()
        .filter(|id| catalogue.contains_key(**id))
        .map(|id| (*id).to_owned())
        .collect();
    if broken.is_empty() {
        loud(&format!(
            "the catalogue has none of {:?} yet: {fault:?} cannot show",
            fault.breaks()
        ));
    }
    let failed = run.with_verdict("fail");
    ensure!(
        failed == broken,
        "{fault:?} must fail exactly {broken:?}, failed {failed:?}"
    );
    let (default, listed) = conform_run::expected(fault.implementation())?;
    ensure!(
        default == "pass",
        "default {default:?} for a misbehaving target"
    );
    let listed_fail: BTreeSet<String> = listed
        .into_iter()
        .filter(|(_, v)| v == "fail")
        .map(|(id, _)| id)
        .collect();
    ensure!(
        listed_fail == broken,
        "{} lists {listed_fail:?} as failing, the fault breaks {broken:?}",
        conform_run::EXPECTATIONS
    );
    Ok(())
}
/// Parses the JUnit file with an XML parser and checks it against the report: root
/// `testsuites`, one `testcase` per check (name starting with its id), a `failure` exactly
/// where the verdict is fail, an `error` where it is error, `skipped` where skipped or not
/// applicable.
fn check_junit(path: &Path, report: &ConformReport) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc = roxmltree::Document::parse(&text)
        .with_context(|| format!("{} is not XML", path.display()))?;
    let root = doc.root_element();
    ensure!(
        root.has_tag_name("testsuites"),
        "root element <{}>, want <testsuites>",
        root.tag_name().name()
    );
    let cases: Vec<roxmltree::Node<'_, '_>> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .flat_map(|s| s.children().filter(|n| n.has_tag_name("testcase")))
        .collect();
    ensure!(
        cases.len() == report.checks.len(),
        "{} testcases for {} checks",
        cases.len(),
        report.checks.len()
    );
    for check in &report.checks {
        let prefix = format!("{} ", check.id);
        let matching: Vec<_> = cases
            .iter()
            .filter(|c| c.attribute("name").is_some_and(|n| n.starts_with(&prefix)))
            .collect();
        ensure!(
            matching.len() == 1,
            "{} testcases named {prefix:?}",
            matching.len()
        );
        let case = matching[0];
        let has = |tag: &str| case.children().any(|n| n.has_tag_name(tag));
        let want = match check.verdict.as_str() {
            "pass" => None,
            "fail" => Some("failure"),
            "error" => Some("error"),
            "skipped" | "not-applicable" => Some("skipped"),
            other => bail!("{}: unknown verdict {other:?}", check.id),
        };
        for tag in ["failure", "error", "skipped"] {
            ensure!(
                has(tag) == (want == Some(tag)),
                "{}: verdict {} but <{tag}> {}",
                check.id,
                check.verdict,
                if has(tag) { "present" } else { "missing" }
            );
        }
    }
    Ok(())
}

#[test]
fn conform_ours() {
    conform(function_name!(), Implementation::Ours);
}

#[test]
fn conform_ours_lenient() {
    conform(function_name!(), Implementation::OursLenient);
}

#[test]
fn conform_miredo_server() {
    conform(function_name!(), Implementation::MiredoServer);
}

#[test]
fn conform_miredo_relay() {
    conform(function_name!(), Implementation::MiredoRelay);
}

#[test]
fn conform_misbehaving_cone() {
    conform(
        function_name!(),
        Implementation::Misbehaving(Fault::ConeFromSameAddress),
    );
}

#[test]
fn conform_misbehaving_spoof() {
    conform(
        function_name!(),
        Implementation::Misbehaving(Fault::ForwardSpoofedBubble),
    );
}
