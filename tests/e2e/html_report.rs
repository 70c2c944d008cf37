//! `client-sim lab --html DIR --junit FILE` in a real browser: Debian's headless Chromium opens
//! the page, and the assertions are on the document it RENDERED (`--dump-dom`: the DOM after
//! the page's script ran), not on the generated source:
//! * the page's script ran and counted in the live DOM: one matrix cell per JUnit test case of
//!   class `teredo-lab.matrix`, one ladder per test case;
//! * the XP × symmetric ladder has one arrow per datagram of that scenario's capture (the
//!   `--pcap` file of the same run, counted independently), and shows the error text;
//! * no console errors: Chromium logs the page's console to stderr (`--enable-logging=stderr
//!   --v=0`); the page logs one "ready" line, so the capture is shown to work, and no other
//!   console line nor any "Uncaught" error may appear;
//! * a screenshot PNG of the requested size, kept with the page in
//!   `<target>/<profile>/e2e-artifacts/` for people and CI to look at.
//!
//! The JUnit file is parsed with roxmltree: one test case per scenario, no failure.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context as _, Result};
use teredo_tests::browser::{attr, png_size, start_tag};
use teredo_tests::{bin_path, bins, browser, check, function_name, requirements_met, TestDir};

/// The screenshot's size: wide enough for a ladder, tall enough for the matrix and the first
/// open ladder (XP × symmetric).
const SHOT: (u32, u32) = (1600, 2400);

#[test]
fn lab_report_renders_in_headless_chromium() {
    let test = function_name!();
    if !requirements_met(test, false, &["chromium", "timeout"]) {
        return;
    }
    let dir = check(TestDir::new(test));
    check(run(&dir));
}

fn run(dir: &TestDir) -> Result<()> {
    let bin = bin_path("client-sim")?;
    let html_dir = dir.join("html");
    let junit = dir.join("lab.xml");
    let pcaps = dir.join("pcap");
    let started = Instant::now();
    let out = Command::new(&bin)
        .arg("lab")
        .arg("--html")
        .arg(&html_dir)
        .arg("--junit")
        .arg(&junit)
        .arg("--pcap")
        .arg(&pcaps)
        .output()
        .context("run client-sim lab")?;
    let took = started.elapsed();
    ensure!(
        out.status.success(),
        "client-sim lab failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("client-sim lab --html --junit --pcap: {took:.2?} (debug build, with pcaps)");

    // JUnit: one test case per scenario, none failed.
    let xml = std::fs::read_to_string(&junit)?;
    let doc = roxmltree::Document::parse(&xml).context("the JUnit file is not XML")?;
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let failures = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .count();
    let matrix_cases = cases
        .iter()
        .filter(|c| c.attribute("classname") == Some("teredo-lab.matrix"))
        .count();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let total = format!(
        "{} scenarios, {} ok, 0 mismatches",
        cases.len(),
        cases.len()
    );
    ensure!(stdout.contains(&total), "'{total}' not in:\n{stdout}");
    ensure!(failures == 0, "{failures} failures in {xml}");
    // The matrix is every profile behind every NAT preset: a full grid.
    let cell = |c: &roxmltree::Node<'_, '_>| {
        c.attribute("name")
            .and_then(|n| n.split_once("__"))
            .map(|(p, n)| (p.to_owned(), n.to_owned()))
    };
    let grid: Vec<(String, String)> = cases
        .iter()
        .filter(|c| c.attribute("classname") == Some("teredo-lab.matrix"))
        .filter_map(cell)
        .collect();
    let profiles: std::collections::BTreeSet<&str> = grid.iter().map(|(p, _)| p.as_str()).collect();
    let nats: std::collections::BTreeSet<&str> = grid.iter().map(|(_, n)| n.as_str()).collect();
    ensure!(
        profiles.len() == teredo::client::Profile::ALL.len()
            && nats.len() >= 6
            && matrix_cases == profiles.len() * nats.len(),
        "{matrix_cases} matrix test cases for profiles {profiles:?} x NATs {nats:?}"
    );
    ensure!(cases
        .iter()
        .any(|c| c.attribute("name") == Some("xp-sp2__symmetric")));

    // The rendered DOM and the page's console.
    let page = html_dir.join("report.html");
    let url = format!("file://{}", page.display());
    let (dom, console) = chromium(&["--dump-dom", &url], dir)?;
    ensure!(
        dom.contains(r#"data-ready="1""#),
        "the page's script did not finish; console:\n{console}"
    );
    let stats = start_tag(&dom, r#"id="stats""#)?;
    ensure!(
        attr(stats, "data-cells")? == matrix_cases.to_string(),
        "{stats}"
    );
    ensure!(
        attr(stats, "data-ladders")? == cases.len().to_string(),
        "{stats}"
    );
    let xp = section(&dom, "xp-sp2__symmetric")?;
    let arrows = xp.matches(r#"<g class="arrow"#).count();
    let frames = pcap_frames(&pcaps.join("xp-sp2__symmetric.pcap"))?;
    ensure!(
        arrows == frames,
        "{arrows} arrows drawn, {frames} datagrams captured"
    );
    ensure!(attr(start_tag(xp, "id=")?, "data-rendered-arrows")? == arrows.to_string());
    ensure!(xp.contains("offline: client behind symmetric NAT"));
    ensure!(xp.contains("dropped: filtered by the NAT"));
    check_console(&console)?;

    // The screenshot, kept for people and CI.
    let shot = dir.join("report.png");
    let size = format!("--window-size={},{}", SHOT.0, SHOT.1);
    let arg = format!("--screenshot={}", shot.display());
    let (_, console) = chromium(&[&arg, &size, &url], dir)?;
    check_console(&console)?;
    let png = std::fs::read(&shot).context("no screenshot")?;
    ensure!(
        png_size(&png)? == SHOT,
        "screenshot size {:?}",
        png_size(&png)?
    );
    let keep = bins::profile_dir()?.join("e2e-artifacts");
    std::fs::create_dir_all(&keep)?;
    std::fs::copy(&shot, keep.join("lab-report.png"))?;
    std::fs::copy(&page, keep.join("lab-report.html"))?;
    eprintln!(
        "lab report: {arrows} arrows in xp-sp2 x symmetric, screenshot {} bytes in {}",
        png.len(),
        keep.display()
    );
    Ok(())
}

/// Runs headless Chromium with `args` (`teredo_tests::browser`); returns its stdout and its
/// stderr (the console log).
fn chromium(args: &[&str], dir: &TestDir) -> Result<(String, String)> {
    browser::chromium(dir.path(), args)
}

/// The page logs exactly one console line (its "ready" line); anything else on the console,
/// or an uncaught exception, is an error.
fn check_console(stderr: &str) -> Result<()> {
    let console = browser::console_lines(stderr);
    ensure!(
        console.len() == 1 && console[0].contains("teredo-lab report ready"),
        "console lines: {console:#?}"
    );
    let errors = browser::console_errors(stderr, &["teredo-lab report ready"]);
    ensure!(errors.is_empty(), "{errors:#?}");
    Ok(())
}

/// A scenario's `<section>` in the rendered DOM.
fn section<'a>(dom: &'a str, name: &str) -> Result<&'a str> {
    let marker = format!(r#"<section class="scenario" id="{name}""#);
    let start = dom
        .find(&marker)
        .with_context(|| format!("no section {name}"))?;
    let len = dom[start..]
        .find("</section>")
        .context("unterminated section")?;
    Ok(&dom[start..start + len])
}

/// Records in a classic pcap file.
fn pcap_frames(path: &Path) -> Result<usize> {
    let b = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let mut at = 24;
    let mut n = 0;
    while at + 16 <= b.len() {
        let incl = u32::from_le_bytes(b[at + 8..at + 12].try_into()?) as usize;
        at += 16 + incl;
        n += 1;
    }
    ensure!(at == b.len(), "truncated pcap");
    Ok(n)
}
