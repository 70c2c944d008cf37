//! What docker/ ships for Prometheus and Grafana reads only what we export: the recording
//! rules (`docker/lab/teredo.rules.yml`), the console page (`docker/lab/consoles/`) and the
//! Grafana dashboard (`docker/grafana/teredo-lab.json`).
//!
//! * `recording_rules_pass_promtool`: `promtool check rules` on the rules file, and the rules
//!   cover what a load test reads (RAs, relayed packets, drops, peers, queue, CPU, RSS, the
//!   load generator).
//! * `every_expression_parses_and_names_exported_metrics`: every PromQL expression of the
//!   three files, wrapped in a temporary rules file, passes `promtool check rules` (its
//!   parser), and names only metrics that `teredo-server`, `teredo-relay` and
//!   `client-sim load` expose on `/metrics` (started as in `promtool.rs`, scraped) or series
//!   the rules record.
//! * `metric_names_of_an_expression`: the small PromQL scanner that finds those names.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use teredo_tests::bins::workspace_root;
use teredo_tests::inproc::metric_value;
use teredo_tests::process::{run, tail};
use teredo_tests::wait::wait_for;
use teredo_tests::{bin_path, check, require_tools, Proc, TestDir};

use super::promtool::{free_tcp_port, free_udp_port, scrape, scrape_until, LIMIT};

fn docker_dir() -> PathBuf {
    workspace_root().join("docker")
}

/// The rules file's (record, expr) pairs: one line each (the file says so).
fn recording_rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(docker_dir().join("lab/teredo.rules.yml"))
        .expect("read teredo.rules.yml");
    let mut rules = Vec::new();
    let mut record = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- record:") {
            record = Some(name.trim().to_string());
        } else if let Some(expr) = line.strip_prefix("expr:") {
            let name = record.take().expect("an expr after its record");
            let expr = expr.trim();
            assert!(!expr.starts_with(['>', '|']), "{name}: expr on one line");
            rules.push((name, expr.to_string()));
        }
    }
    rules
}

/// The console page's expressions (`client-sim prom-check` reads them the same way): `expr:`
/// of each graph, `args "..."` of each drill-down and `query "..."` of each table loop.
fn console_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(docker_dir().join("lab/consoles/teredo-load.html"))
        .expect("read the console page");
    let list = check(client_sim::prom_check::exprs::console_exprs(&text));
    list.into_iter().map(|e| e.expr).collect()
}

/// Every `expr` of every panel target in the Grafana dashboard.
fn grafana_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(docker_dir().join("grafana/teredo-lab.json"))
        .expect("read the dashboard");
    let list = check(client_sim::prom_check::exprs::grafana_exprs(&text));
    list.into_iter().map(|e| e.expr).collect()
}

/// `promtool check rules` on `exprs`, each recorded as `check:expr_N` in a temporary file.
fn assert_parse(dir: &TestDir, what: &str, exprs: &[String]) {
    let mut yaml = String::from("groups:\n  - name: check\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        // A JSON string is a YAML double-quoted scalar.
        let quoted = serde_json::to_string(e).expect("quote");
        yaml += &format!("      - record: check:expr_{i}\n        expr: {quoted}\n");
    }
    let file = dir.path().join(format!("{what}.rules.yml"));
    std::fs::write(&file, yaml).expect("write the rules file");
    let out = check(run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)));
    println!(
        "promtool check rules ({what}, {} expressions): {out}",
        exprs.len()
    );
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{what}: {out}"
    );
}

/// Words that are not metric names where the scanner meets them.
const KEYWORDS: [&str; 21] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "start",
    "end",
];

/// Clauses whose parenthesised list holds label names.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names an expression selects: identifiers outside strings, label matchers
/// (`{...}`), ranges (`[...]`) and label lists, that are not functions (followed by `(`),
/// aggregations or keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // The index after the string literal opening at `i`.
    let skip_string = |mut i: usize| {
        let quote = b[i];
        i += 1;
        while i < b.len() && b[i] != quote {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        i + 1
    };
    // The index after the bracket opening at `i` (strings inside skipped).
    let skip_to = |mut i: usize, close: u8| {
        while i < b.len() && b[i] != close {
            i = if matches!(b[i], b'"' | b'\'' | b'`') {
                skip_string(i)
            } else {
                i + 1
            };
        }
        i + 1
    };
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'"' | b'\'' | b'`') {
            i = skip_string(i);
        } else if c == b'{' {
            i = skip_to(i, b'}');
        } else if c == b'[' {
            i = skip_to(i, b']');
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (word(b[i]) || b[i] == b'.') {
                i += 1;
            }
        } else if word(c) {
            let start = i;
            while i < b.len() && word(b[i]) {
                i += 1;
            }
            let ident = &expr[start..i];
            let mut next = i;
            while next < b.len() && b[next].is_ascii_whitespace() {
                next += 1;
            }
            let call = b.get(next) == Some(&b'(');
            if LABEL_LISTS.contains(&ident) && call {
                i = skip_to(next, b')');
            } else if !call && !KEYWORDS.contains(&ident.to_ascii_lowercase().as_str()) {
                names.insert(ident.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The metric names of an exposition (every sample line, histogram suffixes included).
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

/// The names exposed by `teredo-server`, `teredo-relay` and `client-sim load` (after its run).
fn exported_names(dir: &TestDir) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let (port, metrics) = (free_udp_port(), free_tcp_port());
    let server_metrics: SocketAddr = ([127, 0, 0, 1], metrics).into();
    let mut cmd = Command::new(check(bin_path("teredo-server")));
    cmd.args(["--primary", "127.0.0.1", "--secondary", "127.0.0.2"])
        .args(["--native", "none", "--port", &port.to_string()])
        .args(["--metrics-addr", &server_metrics.to_string()]);
    let mut server = check(Proc::spawn(cmd, "teredo-server", dir.path()));
    let received = "teredo_server_packets_received_total{address=\"primary\"}";
    names.extend(exposed(&check(scrape_until(
        &mut server,
        server_metrics,
        received,
        0.0,
    ))));

    let relay_metrics: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
    let bind = format!("127.0.0.1:{}", free_udp_port());
    let mut cmd = Command::new(check(bin_path("teredo-relay")));
    cmd.args(["--bind", &bind, "--native", "none", "--workers", "1"])
        .args(["--metrics-addr", &relay_metrics.to_string()]);
    let mut relay = check(Proc::spawn(cmd, "teredo-relay", dir.path()));
    let received = "teredo_relay_packets_received_total{direction=\"ipv4_to_ipv6\"}";
    names.extend(exposed(&check(scrape_until(
        &mut relay,
        relay_metrics,
        received,
        0.0,
    ))));

    let load_metrics: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
    let mut cmd = Command::new(check(bin_path("client-sim")));
    cmd.args(["load", "--ceiling", "--clients", "10", "--rate", "200"])
        .args(["--duration", "1s", "--quiet", "--metrics-linger", "60s"])
        .args(["--metrics-addr", &load_metrics.to_string()]);
    let mut loadgen = check(Proc::spawn(cmd, "client-sim-load", dir.path()));
    let (text, _) = check(wait_for("the load run's qualifications", LIMIT, || {
        loadgen.ensure_running()?;
        Ok(scrape(load_metrics).ok().filter(|t| {
            metric_value(t, "loadgen_qualifications_total{result=\"qualified\"}") == Some(10.0)
        }))
    }));
    names.extend(exposed(&text));
    if names.is_empty() {
        panic!("nothing scraped:\n{}", tail(&loadgen.stderr(), 30));
    }
    for mut p in [loadgen, relay, server] {
        check(p.stop().map(drop));
    }
    names
}

#[test]
fn recording_rules_pass_promtool() {
    require_tools!("promtool");
    let file = docker_dir().join("lab/teredo.rules.yml");
    let out = check(run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)));
    println!("promtool check rules {}: {out}", file.display());
    let rules = recording_rules();
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{out}"
    );
    // What a load test reads, each from at least one rule.
    let used: BTreeSet<String> = rules.iter().flat_map(|(_, e)| metric_names(e)).collect();
    for family in [
        "teredo_server_router_advertisements_total",
        "teredo_server_packets_forwarded_total",
        "teredo_relay_packets_total",
        "teredo_server_packets_dropped_total",
        "teredo_relay_packets_dropped_total",
        "teredo_relay_peers",
        "teredo_relay_queue_bytes",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "loadgen_packets_sent_total",
        "loadgen_packets_received_total",
        "loadgen_packets_lost_total",
        "loadgen_qualifications_total",
        "loadgen_rtt_seconds_bucket",
    ] {
        assert!(used.contains(family), "no rule reads {family}: {used:?}");
    }
}

#[test]
fn every_expression_parses_and_names_exported_metrics() {
    require_tools!("promtool");
    let dir = check(TestDir::new("prom_assets"));
    let rules = recording_rules();
    let sources = [
        (
            "rules",
            rules.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        ),
        ("console", console_exprs()),
        ("grafana", grafana_exprs()),
    ];
    let mut known = exported_names(&dir);
    println!("exported metric names: {}", known.len());
    known.extend(rules.iter().map(|(r, _)| r.clone()));
    // Prometheus' own per-target series.
    known.insert("up".to_string());
    for (what, exprs) in &sources {
        assert!(
            exprs.len() >= 10,
            "{what}: only {} expressions",
            exprs.len()
        );
        assert_parse(&dir, what, exprs);
        for e in exprs {
            let names = metric_names(e);
            assert!(!names.is_empty(), "{what}: no metric in {e}");
            let unknown: Vec<_> = names.difference(&known).collect();
            assert!(
                unknown.is_empty(),
                "{what}: {e} names {unknown:?}, not exported"
            );
        }
    }
    // Every recorded series is drawn by the console page or the dashboard.
    let drawn: BTreeSet<String> = sources[1..]
        .iter()
        .flat_map(|(_, exprs)| exprs.iter().flat_map(|e| metric_names(e)))
        .collect();
    let undrawn: Vec<_> = rules.iter().filter(|(r, _)| !drawn.contains(r)).collect();
    assert!(
        undrawn.is_empty(),
        "recorded but drawn nowhere: {undrawn:?}"
    );
}

#[test]
fn metric_names_of_an_expression() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            "histogram_quantile(0.99, sum by (job, le) \
             (rate(loadgen_rtt_seconds_bucket{job=~\"a|b\", x='}'}[5s] offset 1m)))"
        ),
        ["loadgen_rtt_seconds_bucket"]
    );
    assert_eq!(
        names("a:b:c / on (job) group_left (x) (b_total + 1e3 > bool 0) unless Inf"),
        ["a:b:c", "b_total"]
    );
    assert_eq!(names("sum(up{job='x'})"), ["up"]);
    assert_eq!(names("topk(3, x) or vector(1)"), ["x"]);
}

/// The allow-list of `client-sim prom-check` (docker/lab/console-check-allow.json) names only
/// expressions of the page or the dashboard, each filtered (`> 0`) so that an honest run can
/// leave it empty, each with its reason.
#[test]
fn console_check_allow_list_names_filtered_expressions() {
    let text = std::fs::read_to_string(docker_dir().join("lab/console-check-allow.json"))
        .expect("read the allow-list");
    let allowed = check(client_sim::prom_check::exprs::allow_list(&text));
    assert!(!allowed.is_empty());
    let checked: BTreeSet<String> = console_exprs().into_iter().chain(grafana_exprs()).collect();
    for a in &allowed {
        assert!(checked.contains(&a.expr), "{:?} is on no page", a.expr);
        assert!(a.expr.ends_with("> 0"), "{:?}: not a filter", a.expr);
    }
}
