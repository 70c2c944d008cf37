//! What `prom-check` checks, read from the files docker/ ships: the PromQL expressions of the
//! console page's template (`docker/lab/consoles/teredo-load.html`) and of the Grafana
//! dashboard (`docker/grafana/teredo-lab.json`), the scripts and stylesheets the served page
//! loads, and the allow-list of expressions that may legitimately return nothing.
//!
//! The template is read as text, not rendered: each graph's `expr:` (one line, a JSON
//! string or list of strings), each `prom_query_drilldown (args "...")` and each
//! `query "..."` of a table loop (Go's string literals read as JSON ones).

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

/// One expression and where it is used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Expr {
    /// The PromQL.
    pub expr: String,
    /// Where: `console graph #ra`, `console table "RA/s"`, `grafana panel "..."`.
    pub sources: Vec<String>,
}

/// Adds `expr` used at `source` to `list`, one entry per distinct expression.
fn add(list: &mut Vec<Expr>, expr: String, source: String) {
    match list.iter_mut().find(|e| e.expr == expr) {
        Some(e) if !e.sources.contains(&source) => e.sources.push(source),
        Some(_) => {}
        None => list.push(Expr {
            expr,
            sources: vec![source],
        }),
    }
}

/// The JSON (Go) string literal at the start of `s`.
fn string_at(s: &str) -> anyhow::Result<String> {
    let mut de = serde_json::Deserializer::from_str(s).into_iter::<String>();
    match de.next() {
        Some(Ok(v)) => Ok(v),
        _ => bail!(
            "not a string literal: {}",
            s.chars().take(60).collect::<String>()
        ),
    }
}

/// The text of the last `<td>…</td>` before `at` on `line` (a table row's label).
fn row_label(line: &str, at: usize) -> Option<&str> {
    let before = &line[..at];
    let start = before.find("<td>")? + 4;
    let len = before[start..].find("</td>")?;
    Some(&before[start..start + len])
}

/// The console template's expressions, in page order, with `#id` of each graph.
pub fn console_exprs(template: &str) -> anyhow::Result<Vec<Expr>> {
    let mut list = Vec::new();
    let mut graph = String::from("?");
    for (n, line) in template.lines().enumerate() {
        let at = || format!("line {}", n + 1);
        if let Some(i) = line.find("querySelector(\"#") {
            let id = &line[i + 16..];
            graph = id[..id.find('"').unwrap_or(id.len())].to_owned();
        }
        if let Some(value) = line.trim().strip_prefix("expr:") {
            let value = value.trim().trim_end_matches(',');
            let parsed: serde_json::Value =
                serde_json::from_str(value).with_context(|| format!("{}: expr", at()))?;
            let exprs = match parsed {
                serde_json::Value::String(e) => vec![e],
                serde_json::Value::Array(items) => items
                    .into_iter()
                    .map(|e| e.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .with_context(|| format!("{}: expr list of strings", at()))?,
                other => bail!("{}: expr {other}", at()),
            };
            for e in exprs {
                add(&mut list, e, format!("console graph #{graph}"));
            }
        }
        for (marker, kind) in [("(args \"", "table"), ("query \"", "table loop")] {
            for (i, _) in line.match_indices(marker) {
                let e = string_at(&line[i + marker.len() - 1..])
                    .with_context(|| format!("{}: {kind}", at()))?;
                let source = match row_label(line, i) {
                    Some(label) => format!("console {kind} \"{label}\""),
                    None => format!("console {kind}"),
                };
                add(&mut list, e, source);
            }
        }
    }
    Ok(list)
}

/// Every `expr` of every panel target of a Grafana dashboard, with the panel's title.
pub fn grafana_exprs(dashboard: &str) -> anyhow::Result<Vec<Expr>> {
    let json: serde_json::Value = serde_json::from_str(dashboard).context("dashboard JSON")?;
    let mut list = Vec::new();
    for panel in json["panels"].as_array().context("no panels")? {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(e) = target["expr"].as_str() {
                add(
                    &mut list,
                    e.to_owned(),
                    format!("grafana panel \"{title}\""),
                );
            }
        }
    }
    Ok(list)
}

/// `b`'s expressions merged into `a` (sources joined).
pub fn merge(mut a: Vec<Expr>, b: Vec<Expr>) -> Vec<Expr> {
    for e in b {
        for s in e.sources {
            add(&mut a, e.expr.clone(), s);
        }
    }
    a
}

/// What a page element loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetKind {
    /// `<script src>`.
    Script,
    /// `<link rel="stylesheet" href>`.
    Stylesheet,
}

/// The value of attribute `name` in a start tag (double or single quotes).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let before_ok = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        let rest = tag[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let rest = rest[1..].trim_start();
        let quote = rest.chars().next()?;
        if quote != '"' && quote != '\'' {
            return rest.split(|c: char| c.is_whitespace() || c == '>').next();
        }
        let end = rest[1..].find(quote)?;
        return Some(&rest[1..=end]);
    }
    None
}

/// The scripts and stylesheets a (rendered) page loads, in page order, as written.
pub fn assets(html: &str) -> Vec<(AssetKind, String)> {
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    for (open, kind) in [
        ("<script", AssetKind::Script),
        ("<link", AssetKind::Stylesheet),
    ] {
        for (i, _) in lower.match_indices(open) {
            let Some(len) = html[i..].find('>') else {
                continue;
            };
            let tag = &html[i..i + len];
            let url = match kind {
                AssetKind::Script => attr(tag, "src"),
                AssetKind::Stylesheet => attr(tag, "rel")
                    .filter(|r| r.eq_ignore_ascii_case("stylesheet"))
                    .and_then(|_| attr(tag, "href")),
            };
            if let Some(url) = url {
                out.push((i, kind, url.to_owned()));
            }
        }
    }
    out.sort_by_key(|(i, _, _)| *i);
    out.into_iter().map(|(_, k, u)| (k, u)).collect()
}

/// The request path of `url` as referenced from the page at `page` (same origin only):
/// `None` for another origin (`http://…`, `//…`).
pub fn same_origin_path(page: &str, url: &str) -> Option<String> {
    if url.contains("://") || url.starts_with("//") {
        return None;
    }
    if url.starts_with('/') {
        return Some(url.to_owned());
    }
    let dir = &page[..=page.rfind('/').unwrap_or(0)];
    Some(format!("{dir}{url}"))
}

/// An expression that may return no series in a lab load run, and why.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Allowed {
    /// The expression, exactly as in the page or dashboard.
    pub expr: String,
    /// Why it can be empty in an honest run.
    pub reason: String,
}

/// The allow-list file: a JSON array of `{"expr": …, "reason": …}`, every reason given.
pub fn allow_list(text: &str) -> anyhow::Result<Vec<Allowed>> {
    let list: Vec<Allowed> = serde_json::from_str(text).context("allow-list JSON")?;
    if let Some(a) = list.iter().find(|a| a.reason.trim().is_empty()) {
        bail!("allow-list: no reason for {}", a.expr);
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r##"{{ template "head" . }}
  <tr><td>RA/s</td><td>{{ template "prom_query_drilldown" (args "sum(a:b{d=\"x\"})" "/s") }}</td></tr>
{{ range query "job:rss:max" | sortByLabel "job" }}
  <div id="ra"></div>
  new PromConsole.Graph({
    node: document.querySelector("#ra"),
    expr: "a:b",
  <div id="pps"></div>
    node: document.querySelector("#pps"),
    expr: ["a:b", "c:d > 0"],
"##;

    #[test]
    fn reads_graphs_drilldowns_and_table_loops() {
        let list = console_exprs(TEMPLATE).unwrap();
        let got: Vec<(&str, Vec<&str>)> = list
            .iter()
            .map(|e| {
                (
                    e.expr.as_str(),
                    e.sources.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (r#"sum(a:b{d="x"})"#, vec![r#"console table "RA/s""#]),
                ("job:rss:max", vec!["console table loop"]),
                ("a:b", vec!["console graph #ra", "console graph #pps"]),
                ("c:d > 0", vec!["console graph #pps"]),
            ]
        );
        assert!(console_exprs("    expr: 42,").is_err());
    }

    #[test]
    fn reads_the_dashboard_and_merges() {
        let dash = r#"{"panels":[{"title":"T","targets":[{"expr":"a:b"},{"expr":"up"}]},
                                 {"title":"Row"}]}"#;
        let g = grafana_exprs(dash).unwrap();
        assert_eq!(g.len(), 2);
        let all = merge(console_exprs(TEMPLATE).unwrap(), g);
        assert_eq!(all.len(), 5);
        let ab = all.iter().find(|e| e.expr == "a:b").unwrap();
        assert_eq!(ab.sources.last().unwrap(), r#"grafana panel "T""#);
        assert!(grafana_exprs("{}").is_err());
    }

    #[test]
    fn finds_scripts_and_stylesheets() {
        let html = r#"<link type="text/css" rel="stylesheet" href="/classic/static/a.css">
<link rel="icon" href="/favicon.ico"><script src='/classic/static/d3.js'></script>
<script>var PATH_PREFIX = "";</script><SCRIPT SRC=rel.js></SCRIPT>"#;
        assert_eq!(
            assets(html),
            [
                (AssetKind::Stylesheet, "/classic/static/a.css".to_owned()),
                (AssetKind::Script, "/classic/static/d3.js".to_owned()),
                (AssetKind::Script, "rel.js".to_owned()),
            ]
        );
        let page = "/consoles/teredo-load.html";
        assert_eq!(
            same_origin_path(page, "rel.js").unwrap(),
            "/consoles/rel.js"
        );
        assert_eq!(same_origin_path(page, "/x.js").unwrap(), "/x.js");
        assert_eq!(same_origin_path(page, "https://cdn.example/x.js"), None);
        assert_eq!(same_origin_path(page, "//cdn.example/x.js"), None);
    }

    #[test]
    fn an_allowance_needs_a_reason() {
        let ok = allow_list(r#"[{"expr":"a > 0","reason":"never dropped"}]"#).unwrap();
        assert_eq!(ok[0].expr, "a > 0");
        assert!(allow_list(r#"[{"expr":"a > 0","reason":" "}]"#).is_err());
        assert!(allow_list(r#"[{"expr":"a > 0"}]"#).is_err());
    }
}
