//! The console page of the monitoring profile (`docker/lab/consoles/teredo-load.html`) served
//! by Debian's Prometheus with our console libraries (`docker/lab/console_libraries/`, the
//! ones the compose Prometheus uses) and recording rules (`docker/lab/teredo.rules.yml`),
//! opened in Debian's headless Chromium:
//! * no console errors (Debian's example `prom.lib` gives two: a `d3.layout.min.js` Debian does
//!   not ship, served as `text/plain` and refused, and `popper.js`, a directory);
//! * every graph's container rendered (Rickshaw's table), and the graphs of recorded series
//!   that have data drew an SVG: a real `teredo-server` on loopback is scraped under its job
//!   name, so the RA/s, CPU and RSS graphs have series (RA/s at zero: the server drops
//!   loopback sources);
//! * the right-hand table shows the server's RSS, and a screenshot is kept in
//!   `<target>/<profile>/e2e-artifacts/`.
//!
//! Everything on 127.0.0.1 with free ports and a bounded run (both processes stopped on drop);
//! no root needed.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use teredo_tests::bins::workspace_root;
use teredo_tests::browser::{chromium, console_errors, screenshot};
use teredo_tests::wait::wait_for;
use teredo_tests::{bin_path, bins, check, function_name, requirements_met, Proc, TestDir};

/// Graphs whose series the scraped server provides.
const WITH_DATA: [&str; 3] = ["ra", "cpu", "rss"];

const SHOT: (u32, u32) = (1400, 2000);

#[test]
fn console_page_renders_in_headless_chromium() {
    let test = function_name!();
    if !requirements_met(test, false, &["prometheus", "chromium", "timeout"]) {
        return;
    }
    let dir = check(TestDir::new(test));
    check(run(&dir));
}

fn free_tcp_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET path` on `addr` (HTTP/1.0): the body of a 200 answer.
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    s.take(8 << 20).read_to_string(&mut text)?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no HTTP header from {addr}{path}");
    };
    ensure!(
        head.split_whitespace().nth(1) == Some("200"),
        "{path}: {head}"
    );
    Ok(body.to_owned())
}

fn run(dir: &TestDir) -> Result<()> {
    let docker = workspace_root().join("docker/lab");
    // The server: loopback, a free UDP port (its secondary is 127.0.0.2 on the same port).
    let udp = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()?).parse()?;
    let mut server_cmd = Command::new(bin_path("teredo-server")?);
    server_cmd.args(["--primary", "127.0.0.1", "--native", "none"]);
    server_cmd.args(["--port", &udp.to_string()]);
    server_cmd.args(["--metrics-addr", &metrics.to_string()]);
    let mut server = Proc::spawn(server_cmd, "teredo-server", dir.path())?;
    wait_for("the server's /metrics", Duration::from_secs(20), || {
        server.ensure_running()?;
        Ok(http_get(metrics, "/metrics").ok())
    })?;

    // Prometheus: our rules and consoles, scraping the server as the compose lab does (job
    // teredo-server), every second.
    let prom: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()?).parse()?;
    let config = dir.write(
        "prometheus.yml",
        &format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: teredo-server\n    static_configs: [{{targets: [\"{metrics}\"]}}]\n",
            docker.join("teredo.rules.yml").display()
        ),
    )?;
    let mut prom_cmd = Command::new("prometheus");
    prom_cmd
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prom}"))
        .arg(format!(
            "--web.console.templates={}",
            docker.join("consoles").display()
        ))
        .arg(format!(
            "--web.console.libraries={}",
            docker.join("console_libraries").display()
        ));
    let mut prometheus = Proc::spawn(prom_cmd, "prometheus", dir.path())?;
    // Until the recorded rates have two samples: the graphs then have data.
    wait_for("recorded series with data", Duration::from_secs(60), || {
        prometheus.ensure_running()?;
        let q = "/api/v1/query?query=job:teredo_server_router_advertisements:rate5s";
        Ok(http_get(prom, q)
            .ok()
            .filter(|b| b.contains(r#""job":"teredo-server""#)))
    })?;
    std::thread::sleep(Duration::from_secs(2));

    let url = format!("http://{prom}/consoles/teredo-load.html");
    // Time for the graphs' queries (XHR) to come back before the DOM is dumped.
    let (dom, stderr) = chromium(
        dir.path(),
        &["--virtual-time-budget=10000", "--dump-dom", &url],
    )?;
    let errors = console_errors(&stderr, &[]);
    ensure!(errors.is_empty(), "console errors: {errors:#?}");
    // Every graph of the page (a `<div id>` each in the template).
    let template = std::fs::read_to_string(docker.join("consoles/teredo-load.html"))?;
    let graphs: Vec<&str> = template
        .split(r#"<div id=""#)
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    ensure!(graphs.len() >= 10, "{graphs:?}");
    for &id in &graphs {
        let graph = element(&dom, id)?;
        ensure!(
            graph.contains("rickshaw_graph"),
            "graph {id} not rendered: {graph}"
        );
        if WITH_DATA.contains(&id) {
            ensure!(graph.contains("<svg"), "graph {id} drew nothing: {graph}");
        }
    }
    ensure!(dom.contains("teredo-server RSS"), "no RSS row in the table");
    let png = dir.join("console.png");
    let stderr = screenshot(dir.path(), &url, &png, SHOT)?;
    let errors = console_errors(&stderr, &[]);
    ensure!(errors.is_empty(), "console errors: {errors:#?}");
    let keep = bins::profile_dir()?.join("e2e-artifacts");
    std::fs::create_dir_all(&keep)?;
    std::fs::copy(&png, keep.join("prometheus-console.png"))?;
    eprintln!(
        "console page: {} graphs rendered, screenshot {} bytes",
        graphs.len(),
        std::fs::metadata(&png)?.len()
    );
    prometheus.stop()?;
    server.stop()?;
    Ok(())
}

/// The `<div id="…">` element's text up to the next graph heading.
fn element<'a>(dom: &'a str, id: &str) -> Result<&'a str> {
    let marker = format!(r#"<div id="{id}">"#);
    let start = dom
        .find(&marker)
        .with_context(|| format!("no graph {id} in the DOM"))?;
    let len = dom[start..].find("<h3>").unwrap_or(dom.len() - start);
    Ok(&dom[start..start + len])
}
