//! `client-sim qualify --html --junit` and `client-sim ping --html --junit` against the
//! in-process server (`teredo-server`) in a namespace holding only `lo` (the server drops
//! non-global sources such as 127.0.0.1, so `lo` gets documentation addresses), the pages
//! opened in Debian's headless Chromium:
//! * XP SP2 behind the in-process symmetric NAT model goes offline (exit 3): its ladder shows
//!   the cone probe's RA from the secondary address filtered by the NAT, the new mappings
//!   and the offline event;
//! * Vista without NAT qualifies, then pings a native address the server cannot forward
//!   to (no native side): exit 7, the ping test case fails in the JUnit file;
//! * the arrows the browser rendered equal what the server counted on its sockets (datagrams
//!   received plus RAs and forwards sent): every datagram of the run is drawn, no more; the
//!   drops drawn equal the NAT model's drop counters of `--json`;
//! * no console errors, and a screenshot of each page kept in `<target>/<profile>/e2e-artifacts/`.

use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use teredo_server::{NativeSide, ServerOptions};
use teredo_tests::browser::{attr, chromium, console_errors, screenshot, start_tag};
use teredo_tests::inproc::InprocServer;
use teredo_tests::metrics::{sum_all, sum_by_label};
use teredo_tests::{bin_path, bins, check, function_name, requirements_met, Netns, TestDir};

const PRIMARY: &str = "198.51.100.1";
const CLIENT: &str = "198.51.100.10";
const SHOT: (u32, u32) = (1400, 1800);

#[test]
fn qualify_and_ping_pages_render_in_headless_chromium() {
    let test = function_name!();
    if !requirements_met(test, true, &["chromium", "timeout"]) {
        return;
    }
    let dir = check(TestDir::new(test));
    check(run(&dir));
}

/// What the server saw and sent so far: datagrams received + RAs + forwards to clients.
fn server_datagrams(server: &InprocServer) -> Result<u64> {
    // Every received datagram handled before it is counted.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = server.metrics_text();
        let received = sum_all(&t, "teredo_server_packets_received_total");
        let handled = sum_all(&t, "teredo_server_handling_duration_seconds_count");
        if received == handled || Instant::now() > deadline {
            let ras = sum_all(&t, "teredo_server_router_advertisements_total");
            let fwd = sum_by_label(&t, "teredo_server_packets_forwarded_total", "direction")
                .get("to_client")
                .copied()
                .unwrap_or(0);
            return Ok(received + ras + fwd);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client_sim(ns: &Netns, args: &[&str]) -> Result<Output> {
    let bin = bin_path("client-sim")?;
    let out = ns
        .command(bin.to_str().context("binary path")?)
        .args(args)
        .output()
        .context("run client-sim")?;
    Ok(out)
}

fn run(dir: &TestDir) -> Result<()> {
    let ns = Netns::with_lo_addrs("runrep", "lab", &[PRIMARY, "198.51.100.2", CLIENT], 24)?;
    let mut options = ServerOptions::new(PRIMARY.parse()?);
    options.native = NativeSide::Disabled;
    let server = InprocServer::start(&ns, options)?;
    let keep = bins::profile_dir()?.join("e2e-artifacts");
    std::fs::create_dir_all(&keep)?;

    // XP behind the symmetric NAT model: offline, exit 3.
    let before = server_datagrams(&server)?;
    let (html, junit) = (dir.join("qualify.html"), dir.join("qualify.xml"));
    let common = ["--server", PRIMARY, "--bind", CLIENT, "--timeout", "60s"];
    let out = client_sim(
        &ns,
        &[
            &[
                "qualify",
                "--json",
                "--profile",
                "xp-sp2",
                "--nat",
                "symmetric",
            ][..],
            &["--seed", "5", "--html", html.to_str().context("path")?],
            &["--junit", junit.to_str().context("path")?],
            &common,
        ]
        .concat(),
    )?;
    ensure!(
        out.status.code() == Some(3),
        "qualify: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let c = &json["counters"];
    let nat_drops: u64 = c["nat_drops"]
        .as_object()
        .context("nat_drops")?
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    // Drawn as drops: the NAT model's and the client's refusals.
    let refused = c["ra_rejected"].as_u64().context("ra_rejected")?
        + c["data_rejected"].as_u64().context("data_rejected")?;
    let sent = server_datagrams(&server)? - before;
    let cases = junit_cases(&junit)?;
    ensure!(
        cases.len() == 1 && cases[0].0.starts_with("xp-sp2 behind NAT ") && cases[0].1,
        "{cases:?}"
    );
    let dom = check_page(dir, &html, sent, nat_drops + refused)?;
    ensure!(dom.contains("offline: client behind symmetric NAT"));
    ensure!(dom.contains("dropped: filtered by the NAT"));
    ensure!(dom.contains("+ mapping 10.0.0.2:"));
    ensure!(dom.contains("RS cone=1"));
    let png = dir.join("qualify.png");
    let stderr = screenshot(dir.path(), &url(&html), &png, SHOT)?;
    ensure!(
        console_errors(&stderr, &["teredo-lab report ready"]).is_empty(),
        "{stderr}"
    );
    std::fs::copy(&png, keep.join("qualify-report.png"))?;
    std::fs::copy(&html, keep.join("qualify-report.html"))?;
    eprintln!(
        "qualify page: {sent} datagrams drawn, {nat_drops} dropped by the NAT model, screenshot {} bytes",
        std::fs::metadata(&png)?.len()
    );

    // Vista, no NAT: qualified, then two echo requests the server cannot forward.
    let before = server_datagrams(&server)?;
    let (html, junit) = (dir.join("ping.html"), dir.join("ping.xml"));
    let out = client_sim(
        &ns,
        &[
            &[
                "ping",
                "2001:db8::99",
                "--count",
                "2",
                "--interval",
                "200ms",
            ][..],
            &[
                "--wait",
                "1s",
                "--seed",
                "6",
                "--html",
                html.to_str().context("path")?,
            ],
            &["--junit", junit.to_str().context("path")?],
            &common,
        ]
        .concat(),
    )?;
    ensure!(
        out.status.code() == Some(7),
        "ping: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = server_datagrams(&server)? - before;
    let cases = junit_cases(&junit)?;
    ensure!(
        cases
            == [
                ("vista behind NAT none".to_owned(), false),
                ("icmp 2001:db8::99".to_owned(), true)
            ],
        "{cases:?}"
    );
    let dom = check_page(dir, &html, sent, 0)?;
    ensure!(dom.contains("2 packets transmitted, 0 received"));
    ensure!(
        dom.contains("echo request"),
        "the direct IPv6 connectivity test is drawn"
    );
    let png = dir.join("ping.png");
    let stderr = screenshot(dir.path(), &url(&html), &png, SHOT)?;
    ensure!(
        console_errors(&stderr, &["teredo-lab report ready"]).is_empty(),
        "{stderr}"
    );
    std::fs::copy(&png, keep.join("ping-report.png"))?;
    std::fs::copy(&html, keep.join("ping-report.html"))?;
    eprintln!(
        "ping page: {sent} datagrams drawn, screenshot {} bytes",
        std::fs::metadata(&png)?.len()
    );
    server.stop()
}

fn url(path: &std::path::Path) -> String {
    format!("file://{}", path.display())
}

/// The test cases of a JUnit file: (name, failed).
fn junit_cases(path: &std::path::Path) -> Result<Vec<(String, bool)>> {
    let xml = std::fs::read_to_string(path)?;
    let doc = roxmltree::Document::parse(&xml).context("the JUnit file is not XML")?;
    Ok(doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|c| {
            let name = c.attribute("name").unwrap_or_default().to_owned();
            (name, c.children().any(|n| n.has_tag_name("failure")))
        })
        .collect())
}

/// Opens `html` in Chromium; checks the arrows and drops it rendered and its console.
fn check_page(dir: &TestDir, html: &std::path::Path, arrows: u64, drops: u64) -> Result<String> {
    let (dom, stderr) = chromium(dir.path(), &["--dump-dom", &url(html)])?;
    ensure!(
        dom.contains(r#"data-ready="1""#),
        "the script did not run:\n{stderr}"
    );
    let stats = start_tag(&dom, r#"id="stats""#)?;
    ensure!(
        attr(stats, "data-arrows")? == arrows.to_string(),
        "{stats}, server saw {arrows}"
    );
    ensure!(
        attr(stats, "data-drops")? == drops.to_string(),
        "{stats}, {drops} drops"
    );
    let errors = console_errors(&stderr, &["teredo-lab report ready"]);
    ensure!(errors.is_empty(), "console errors: {errors:#?}");
    ensure!(
        teredo_tests::browser::console_lines(&stderr).len() == 1,
        "the page's ready line is captured:\n{stderr}"
    );
    Ok(dom)
}
