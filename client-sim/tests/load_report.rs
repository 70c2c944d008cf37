//! `client-sim load --ceiling --find-max --html FILE --junit FILE`, run in this process (no
//! root, no server: plain UDP against the in-process echo on loopback):
//! * the page has every chart, drawn from the run's one-a-second samples, and names no URL;
//! * the JUnit file parses with roxmltree: one case per find-max trial and one that a rate
//!   passed, no failure;
//! * headless Chromium (Debian's `chromium`) renders the page: the page's script counts the
//!   charts with a size and the data lines in them in the rendered DOM, the console has only
//!   its "ready" line, and the screenshot has the requested size (kept in
//!   `<target>/<profile>/e2e-artifacts/load-report.png` to look at).

use clap::Parser as _;
use client_sim::cli::{run, Cli};
use testkit::{bins, browser, function_name, requirements_met, TestDir};

/// Screenshot size: every chart of the page.
const SHOT: (u32, u32) = (1000, 2800);

/// Runs a short ceiling find-max (500 pps, then the 1000 pps ceiling) writing the page and
/// the JUnit file into `dir`.
fn run_load(dir: &TestDir) -> (String, String, String) {
    let html = dir.join("load.html");
    let junit = dir.join("load.xml");
    // The run's own /metrics, scraped by the run: a Prometheus endpoint whose counters grow.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let url = format!("http://{metrics}/metrics");
    let args = [
        "client-sim",
        "load",
        "--ceiling",
        "--clients",
        "10",
        "--rate",
        "500",
        "--max-rate",
        "1000",
        "--find-max",
        "--duration",
        "2s",
        "--drain",
        "500ms",
        "--quiet",
        "--html",
        html.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        "--metrics-addr",
        &metrics,
        "--scrape",
        &url,
    ];
    let code = run(Cli::try_parse_from(args).unwrap()).unwrap();
    assert_eq!(code, 0);
    (
        std::fs::read_to_string(html).unwrap(),
        std::fs::read_to_string(junit).unwrap(),
        url,
    )
}

/// The `<figure>` of chart `id`.
fn figure<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page
        .find(&format!("<figure class=\"chart\" id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no chart {id}"));
    let len = page[at..].find("</figure>").unwrap();
    &page[at..at + len]
}

/// Points of the longest polyline in `stroke` (a data line, not its legend swatch).
fn longest_line(svg: &str, stroke: &str) -> usize {
    svg.split("<polyline")
        .filter(|p| p.contains(&format!("stroke=\"{stroke}\" stroke-width=\"2\"")))
        .filter_map(|p| p.split("points=\"").nth(1)?.split('"').next())
        .map(|pts| pts.split_whitespace().count())
        .max()
        .unwrap_or(0)
}

#[test]
fn ceiling_run_writes_the_page_and_junit() {
    let dir = TestDir::new(function_name!()).unwrap();
    let (page, xml, url) = run_load(&dir);
    for id in [
        "rates", "loss", "rtt", "qualify", "mappings", "rtt-cdf", "find-max", "scrape-0",
    ] {
        assert!(figure(&page, id).contains("</svg>"), "{id}");
    }
    // Self-contained: the scraped endpoint is named, nothing is loaded.
    let named = page.replace(&url, "");
    for bad in ["http:", "https:", "src=", "href=", "url("] {
        assert!(!named.contains(bad), "{bad}");
    }
    // The scraped counters: the run's own packets, once a second.
    let scraped = figure(&page, "scrape-0");
    assert!(
        scraped.contains("\nloadgen_packets_sent_total\n"),
        "{scraped}"
    );
    assert!(longest_line(scraped, "#1F5FBF") >= 4, "{scraped}");
    // Two trials of 2 s plus their drain: at least 4 one-second samples in the sent line.
    let sent = longest_line(figure(&page, "rates"), "#D9731A");
    assert!(sent >= 4, "{sent} points");
    // p50 RTTs were measured.
    assert!(longest_line(figure(&page, "rtt"), "#1F5FBF") >= 2);
    let cdf = figure(&page, "rtt-cdf");
    assert!(cdf.contains("trial 1 at 500 pps (pass)") && cdf.contains("trial 2 at 1000 pps"));
    assert!(figure(&page, "find-max").contains("find-max: loss ≤ 0.1 %, best 1000 pps"));
    assert!(page.contains("highest rate with loss ≤ 0.1 %: 1000 pps"));

    let doc = roxmltree::Document::parse(&xml).unwrap();
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let names: Vec<_> = cases.iter().filter_map(|c| c.attribute("name")).collect();
    assert_eq!(
        names,
        [
            "find-max trial 1 at 500 pps",
            "find-max trial 2 at 1000 pps",
            "find-max: a rate passed with loss ≤ 0.1 %",
        ]
    );
    assert!(cases
        .iter()
        .all(|c| c.attribute("classname") == Some("teredo-load.ceiling")));
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("failure"))
            .count(),
        0
    );
    assert_eq!(doc.root_element().attribute("failures"), Some("0"));
}

#[test]
fn load_report_renders_in_headless_chromium() {
    let test = function_name!();
    if !requirements_met(test, false, &["chromium", "timeout"]) {
        return;
    }
    let dir = TestDir::new(test).unwrap();
    let (page, _, _) = run_load(&dir);
    let file = dir.join("load.html");
    let url = format!("file://{}", file.display());
    let (dom, console) = chromium(&dir, &["--dump-dom", &url]);
    let body = dom
        .split("<body")
        .nth(1)
        .and_then(|b| b.split('>').next())
        .unwrap();
    assert!(body.contains(r#"data-ready="1""#), "{body}\n{console}");
    assert!(body.contains(r#"data-charts="8""#), "{body}");
    // Data lines drawn with a width: at least offered/sent/received, loss, three RTT
    // percentiles, qualified, two CDFs, offered/received per trial.
    let lines: usize = body
        .split("data-lines=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(lines >= 12, "{lines} lines drawn");
    check_console(&console);

    let shot = dir.join("load.png");
    let size = format!("--window-size={},{}", SHOT.0, SHOT.1);
    let (_, console) = chromium(
        &dir,
        &[&format!("--screenshot={}", shot.display()), &size, &url],
    );
    check_console(&console);
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(png_size(&png), SHOT);
    let keep = bins::profile_dir().unwrap().join("e2e-artifacts");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::copy(&shot, keep.join("load-report.png")).unwrap();
    std::fs::write(keep.join("load-report.html"), page).unwrap();
    eprintln!(
        "load report: {lines} lines, screenshot {} bytes in {}",
        png.len(),
        keep.display()
    );
}

/// Runs headless Chromium (`testkit::browser`); its stdout and stderr (the console log).
fn chromium(dir: &TestDir, args: &[&str]) -> (String, String) {
    browser::chromium(dir.path(), args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Exactly the page's one "ready" console line, and no uncaught error.
fn check_console(stderr: &str) {
    let console = browser::console_lines(stderr);
    assert!(
        console.len() == 1 && console[0].contains("teredo-lab load report ready: 8 charts"),
        "{console:#?}"
    );
    assert!(
        browser::console_errors(stderr, &["teredo-lab load report ready"]).is_empty(),
        "{stderr}"
    );
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    browser::png_size(png).unwrap()
}
