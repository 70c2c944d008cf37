//! `client-sim prom-check`: does a Prometheus serve our console page, and does every
//! expression on it (and on the Grafana dashboard) have data? Run by the container lab's load
//! generator (`docker/lab/loadgen.sh`) against the Prometheus of the `load` profile right
//! after the load run, while it still holds the run's series:
//!
//! 1. the page (`--page`, rendered by Prometheus) answers 200, and so does every script and
//!    stylesheet it loads, with a content type a browser accepts for it;
//! 2. every expression of the template (`--console`) and the dashboard (`--grafana`) returns at
//!    least one series with a finite sample over `--start`..`--end` (`/api/v1/query_range`),
//!    unless the allow-list (`--allow`) names it with the reason it can be empty in an honest
//!    run.
//!
//! Prints a table, writes the report as JSON (`--json`); fails with one line naming the first
//! page, file or expression that did not pass.

pub mod exprs;
pub mod http;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Args;
use serde::Serialize;

use exprs::{AssetKind, Expr};
use http::RangeSummary;

/// `client-sim prom-check` flags.
#[derive(Debug, Args)]
pub struct PromCheckArgs {
    /// The Prometheus, `HOST:PORT`.
    #[arg(long, value_name = "HOST:PORT")]
    pub prometheus: String,

    /// The console page's path on it.
    #[arg(long, default_value = "/consoles/teredo-load.html")]
    pub page: String,

    /// The page's template: its graphs' and tables' expressions are checked.
    #[arg(long, value_name = "FILE")]
    pub console: PathBuf,

    /// A Grafana dashboard whose panels' expressions are checked too.
    #[arg(long, value_name = "FILE")]
    pub grafana: Option<PathBuf>,

    /// Expressions that may return no series, each with its reason (JSON:
    /// `[{"expr": …, "reason": …}]`); an entry that names no checked expression is an error.
    #[arg(long, value_name = "FILE")]
    pub allow: Option<PathBuf>,

    /// Start of the window (Unix seconds), e.g. when the load run started.
    #[arg(long, value_name = "EPOCH")]
    pub start: u64,

    /// End of the window (Unix seconds; default: now).
    #[arg(long, value_name = "EPOCH")]
    pub end: Option<u64>,

    /// Query resolution in seconds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub step: u64,

    /// Write the report here as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// The page, or one file it loads.
#[derive(Clone, Debug, Serialize)]
pub struct Fetched {
    /// Request path.
    pub path: String,
    /// `page`, `script` or `stylesheet`.
    pub kind: String,
    /// HTTP status (0: no answer).
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: String,
    /// Body length.
    pub bytes: usize,
    /// What is wrong, if anything.
    pub problem: Option<String>,
}

/// One expression's result.
#[derive(Clone, Debug, Serialize)]
pub struct Checked {
    /// The expression and where it is used.
    #[serde(flatten)]
    pub expr: Expr,
    /// What the range query returned (absent when it failed).
    pub result: Option<RangeSummary>,
    /// The allow-list's reason, when it may be empty.
    pub allowed_empty: Option<String>,
    /// What is wrong, if anything.
    pub problem: Option<String>,
}

/// The whole report (`--json`).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Everything passed.
    pub ok: bool,
    /// The first failure, as one line.
    pub failure: Option<String>,
    /// Failures in all.
    pub failures: usize,
    /// The Prometheus asked.
    pub prometheus: String,
    /// The window `[start, end]` (Unix seconds) and step of the range queries.
    pub window: (u64, u64, u64),
    /// The page, then every script and stylesheet it loads.
    pub files: Vec<Fetched>,
    /// Every distinct expression.
    pub expressions: Vec<Checked>,
}

/// Fetches `path`; the problem, if any, with a browser's view of `kind`'s content type.
fn fetch(authority: &str, path: &str, kind: &str) -> Fetched {
    let mut f = Fetched {
        path: path.to_owned(),
        kind: kind.to_owned(),
        status: 0,
        content_type: String::new(),
        bytes: 0,
        problem: None,
    };
    match http::get(authority, path) {
        Err(e) => f.problem = Some(format!("{e:#}")),
        Ok(a) => {
            f.status = a.status;
            f.bytes = a.body.len();
            f.content_type = a.content_type;
            let wanted = match kind {
                "script" => "javascript",
                "stylesheet" => "text/css",
                _ => "text/html",
            };
            f.problem = if a.status != 200 {
                Some(format!("HTTP {}", a.status))
            } else if !f.content_type.contains(wanted) {
                Some(format!("served as {:?}, not {wanted}", f.content_type))
            } else if a.body.is_empty() {
                Some("empty".to_owned())
            } else {
                None
            };
        }
    }
    f
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// HH:MM:SS (UTC) of a Unix time.
fn clock(t: u64) -> String {
    format!("{:02}:{:02}:{:02}", t / 3600 % 24, t / 60 % 60, t % 60)
}

/// The checks, without printing: the report.
pub fn check(args: &PromCheckArgs) -> anyhow::Result<Report> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let mut list = exprs::console_exprs(&read(&args.console)?)?;
    if let Some(g) = &args.grafana {
        list = exprs::merge(list, exprs::grafana_exprs(&read(g)?)?);
    }
    if list.is_empty() {
        bail!("no expression in {}", args.console.display());
    }
    let allowed = match &args.allow {
        Some(p) => exprs::allow_list(&read(p)?)?,
        None => Vec::new(),
    };
    if let Some(stale) = allowed
        .iter()
        .find(|a| !list.iter().any(|e| e.expr == a.expr))
    {
        bail!("allow-list: {:?} is on no checked page", stale.expr);
    }
    let end = args.end.unwrap_or_else(now);
    if end <= args.start {
        bail!("the window {}..{end} is empty", args.start);
    }

    let authority = args.prometheus.as_str();
    let page = fetch(authority, &args.page, "page");
    let mut files = Vec::new();
    if page.problem.is_none() {
        let html = http::get(authority, &args.page)?.body;
        for (kind, url) in exprs::assets(&html) {
            let kind = match kind {
                AssetKind::Script => "script",
                AssetKind::Stylesheet => "stylesheet",
            };
            files.push(match exprs::same_origin_path(&args.page, &url) {
                Some(path) => fetch(authority, &path, kind),
                None => Fetched {
                    path: url,
                    kind: kind.to_owned(),
                    status: 0,
                    content_type: String::new(),
                    bytes: 0,
                    problem: Some("another origin: the lab has no way out".to_owned()),
                },
            });
        }
        if files.is_empty() {
            files.push(Fetched {
                problem: Some("loads no script or stylesheet".to_owned()),
                ..page.clone()
            });
        }
    }
    files.insert(0, page);

    let expressions: Vec<Checked> = list
        .into_iter()
        .map(|expr| {
            let allowed_empty = allowed
                .iter()
                .find(|a| a.expr == expr.expr)
                .map(|a| a.reason.clone());
            let (result, problem) =
                match http::query_range(authority, &expr.expr, (args.start, end), args.step) {
                    Err(e) => (None, Some(format!("query failed: {e:#}"))),
                    Ok(r) if r.with_data == 0 && allowed_empty.is_none() => {
                        let what = if r.series == 0 {
                            "no series"
                        } else {
                            "no finite sample"
                        };
                        (Some(r), Some(what.to_owned()))
                    }
                    Ok(r) => (Some(r), None),
                };
            Checked {
                expr,
                result,
                allowed_empty,
                problem,
            }
        })
        .collect();

    let window = format!("{}..{} UTC", clock(args.start), clock(end));
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let p = f.problem.as_ref()?;
            Some(format!("{} {}: {p}", f.kind, f.path))
        })
        .chain(expressions.iter().filter_map(|c| {
            let p = c.problem.as_ref()?;
            Some(format!(
                "expression `{}` ({}): {p} over {window}",
                c.expr.expr, c.expr.sources[0]
            ))
        }))
        .collect();
    Ok(Report {
        ok: failures.is_empty(),
        failure: failures.first().map(|f| match failures.len() {
            1 => f.clone(),
            n => format!("{f} (and {} more)", n - 1),
        }),
        failures: failures.len(),
        prometheus: args.prometheus.clone(),
        window: (args.start, end, args.step),
        files,
        expressions,
    })
}

/// A peak value short enough for the table's column.
fn short(p: f64) -> String {
    if p.abs() >= 1000.0 {
        format!("{p:.0}")
    } else {
        format!("{p:.4}")
    }
}

/// The report as the readable table the log shows.
pub fn table(r: &Report) -> String {
    let (start, end, step) = r.window;
    let mut out = format!(
        "== console check: Prometheus {}, {}..{} UTC ({} s, range queries every {step} s)\n",
        r.prometheus,
        clock(start),
        clock(end),
        end - start
    );
    out += "status  bytes    kind        path (content type)\n";
    for f in &r.files {
        out += &format!(
            "{:<6}  {:<7}  {:<10}  {} ({}){}\n",
            f.status,
            f.bytes,
            f.kind,
            f.path,
            f.content_type,
            f.problem
                .as_ref()
                .map_or(String::new(), |p| format!("  FAILED: {p}"))
        );
    }
    out += "series  data  nonzero  samples  peak        expression  [used by]\n";
    for c in &r.expressions {
        let (series, data, nonzero, samples, peak) = c.result.as_ref().map_or(
            ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
            |s| {
                (
                    s.series.to_string(),
                    s.with_data.to_string(),
                    s.nonzero.to_string(),
                    s.samples.to_string(),
                    s.peak.map_or("-".into(), short),
                )
            },
        );
        let note = match (&c.problem, &c.allowed_empty) {
            (Some(p), _) => format!("  FAILED: {p}"),
            (None, Some(why)) if c.result.as_ref().is_some_and(|s| s.with_data == 0) => {
                format!("  (allowed empty: {why})")
            }
            _ => String::new(),
        };
        out += &format!(
            "{series:>6}  {data:>4}  {nonzero:>7}  {samples:>7}  {peak:<10}  {}  [{}]{note}\n",
            c.expr.expr,
            c.expr.sources.join("; ")
        );
    }
    let n_files = r.files.len();
    out += &format!(
        "{} files, {} expressions: {}\n",
        n_files,
        r.expressions.len(),
        if r.ok {
            "ok".to_owned()
        } else {
            format!("{} FAILED", r.failures)
        }
    );
    out
}

/// Runs the command: exit status 0 when everything passed; an error (one line naming the
/// first failure, exit status 1) otherwise.
pub fn run(args: &PromCheckArgs) -> anyhow::Result<u8> {
    let report = check(args)?;
    print!("{}", table(&report));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    match &report.failure {
        Some(f) => bail!("console check: {f}"),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::net::TcpListener;

    use super::*;

    /// A Prometheus stand-in on loopback: the page, its files and range queries.
    fn fake_prometheus() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or_default();
                let series = r#"{"metric":{"job":"a"},"values":[[1,"0"],[2,"7"]]}"#;
                let (status, ctype, body) = match path {
                    "/consoles/p.html" => (
                        200,
                        "text/html; charset=utf-8",
                        r#"<link rel="stylesheet" href="/classic/static/b.css">
                           <script src="/classic/static/a.js"></script><script src="x.js"></script>"#
                            .to_owned(),
                    ),
                    "/classic/static/a.js" => (200, "text/javascript", "var a;".to_owned()),
                    "/classic/static/b.css" => (200, "text/plain", "p {}".to_owned()),
                    p if p.contains(&format!("query={}&", http::encode("has:data"))) => (
                        200,
                        "application/json",
                        format!(r#"{{"status":"success","data":{{"result":[{series}]}}}}"#),
                    ),
                    p if p.starts_with("/api/v1/query_range") => (
                        200,
                        "application/json",
                        r#"{"status":"success","data":{"result":[]}}"#.to_owned(),
                    ),
                    _ => (404, "text/plain", "404 page not found".to_owned()),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.0 {status} X\r\nContent-Type: {ctype}\r\n\r\n{body}"
                );
            }
        });
        addr
    }

    fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn names_every_missing_file_and_empty_expression() {
        let dir = std::env::temp_dir().join(format!("prom-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let console = write(
            &dir,
            "p.html",
            "node: document.querySelector(\"#g\"),\n expr: [\"has:data\", \"gone\"],\n\
             <td>Drops</td><td>{{ template \"prom_query_drilldown\" (args \"drops > 0\") }}</td>\n",
        );
        let allow = write(
            &dir,
            "allow.json",
            r#"[{"expr": "drops > 0", "reason": "nothing is dropped"}]"#,
        );
        let mut args = PromCheckArgs {
            prometheus: fake_prometheus(),
            page: "/consoles/p.html".to_owned(),
            console,
            grafana: None,
            allow: Some(allow),
            start: 1,
            end: Some(100),
            step: 1,
            json: None,
        };
        let r = check(&args).unwrap();
        let problems: Vec<(&str, Option<&str>)> = r
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.problem.as_deref()))
            .collect();
        assert_eq!(
            problems,
            [
                ("/consoles/p.html", None),
                (
                    "/classic/static/b.css",
                    Some("served as \"text/plain\", not text/css")
                ),
                ("/classic/static/a.js", None),
                ("/consoles/x.js", Some("HTTP 404")),
            ]
        );
        let exprs: Vec<(&str, usize, Option<&str>)> = r
            .expressions
            .iter()
            .map(|c| {
                (
                    c.expr.expr.as_str(),
                    c.result.as_ref().map_or(99, |s| s.with_data),
                    c.problem.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            exprs,
            [
                ("has:data", 1, None),
                ("gone", 0, Some("no series")),
                ("drops > 0", 0, None),
            ]
        );
        assert!(!r.ok);
        assert_eq!(r.failures, 3);
        assert_eq!(
            r.failure.as_deref(),
            Some(
                "stylesheet /classic/static/b.css: served as \"text/plain\", not text/css \
                 (and 2 more)"
            )
        );
        let t = table(&r);
        assert!(t.contains("(allowed empty: nothing is dropped)"), "{t}");
        assert!(t.contains("FAILED: no series"), "{t}");

        // An allowance for an expression on no page is stale.
        args.allow = Some(write(
            &dir,
            "stale.json",
            r#"[{"expr": "old", "reason": "was once"}]"#,
        ));
        let e = check(&args).unwrap_err().to_string();
        assert!(e.contains("\"old\" is on no checked page"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
