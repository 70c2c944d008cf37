//! The container lab's page (`client-sim container-report --html`): the runner's verdict as a
//! profile × NAT grid in the style of `lab --html` (a coloured block per container scenario:
//! observed state and NAT type, the expected outcome, the router that did the NAT, ping6),
//! then one table row per scenario with every detail and the problems found. No ladders:
//! the containers' datagrams are not journalled (their captures are the conformance run's).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::page::CSS;
use super::svg::esc;
use crate::container_report::{Row, Verdict};

const EXTRA_CSS: &str = "
td.cell .run{display:block;padding:2px 3px;margin:2px 0;border-radius:3px}
td.cell .run.mismatch{outline:3px solid #b00}
.st-missing{background:#ddd} table.rows td{font-size:12px}
";

const SCRIPT: &str = r#"
(function () {
  var cells = document.querySelectorAll('table.matrix td.cell').length;
  var runs = document.querySelectorAll('table.matrix .run').length;
  var rows = document.querySelectorAll('table.rows tr.row').length;
  var bad = document.querySelectorAll('table.rows tr.row.mismatch').length;
  var stats = document.getElementById('stats');
  stats.dataset.cells = String(cells);
  stats.dataset.runs = String(runs);
  stats.dataset.rows = String(rows);
  stats.dataset.mismatches = String(bad);
  stats.textContent = cells + ' matrix cells, ' + rows + ' container scenarios, ' + bad + ' mismatches';
  document.body.dataset.ready = '1';
  console.log('teredo-lab report ready: ' + stats.textContent);
})();
"#;

fn state_class(r: &Row) -> &str {
    let s = r.state.split([' ', '_', '(']).next().unwrap_or("x");
    if s.is_empty() {
        "x"
    } else {
        s
    }
}

fn verdict_class(r: &Row) -> &'static str {
    if r.result == "ok" && r.problems.is_empty() {
        "ok"
    } else {
        "mismatch"
    }
}

fn hover(r: &Row) -> String {
    let mut s = format!(
        "{} ({})\nexpected: {}\nobserved: {} / {}\nerror: {}\nping6: {} (expected {})",
        r.id, r.router, r.expected, r.state, r.nat_type, r.error, r.ping6, r.ping6_expected
    );
    if !r.why.is_empty() {
        let _ = write!(s, "\nwhy: {}", r.why);
    }
    for p in &r.problems {
        let _ = write!(s, "\nMISMATCH: {p}");
    }
    s
}

/// The page of `v`.
pub fn container_page(v: &Verdict) -> String {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width\">");
    out.push_str("<title>teredo container lab</title><style>");
    out.push_str(CSS);
    out.push_str(EXTRA_CSS);
    out.push_str("</style></head><body>");
    out.push_str("<h1>teredo container lab: client profiles × NAT kinds in containers</h1>");
    let bad = v.mismatches();
    let _ = write!(
        out,
        r#"<p class="summary">{} container scenarios, {} ok, <span class="{}">{bad} mismatches</span> ({}; {:.0} s). Expectations: <code>client-sim lab</code> for the same profile × NAT kind, adjusted per implementation. Hover over a cell for details.</p>"#,
        v.rows.len(),
        v.rows.len() - bad,
        if bad > 0 { "bad" } else { "" },
        esc(&v.devices()),
        v.elapsed_s
    );
    out.push_str(r#"<p><span id="stats"></span></p>"#);
    // The grid: profiles in order of appearance, NAT kinds too.
    let mut profiles: Vec<&str> = Vec::new();
    let mut nats: Vec<&str> = Vec::new();
    for r in &v.rows {
        if !profiles.contains(&r.profile.as_str()) {
            profiles.push(&r.profile);
        }
        if !nats.contains(&r.nat.as_str()) {
            nats.push(&r.nat);
        }
    }
    let used: BTreeSet<(&str, &str)> = v
        .rows
        .iter()
        .map(|r| (r.profile.as_str(), r.nat.as_str()))
        .collect();
    out.push_str("<h2>Matrix</h2><table class=\"matrix\"><tr><th>profile \\ NAT</th>");
    for n in &nats {
        let _ = write!(out, "<th>{}</th>", esc(n));
    }
    out.push_str("</tr>");
    for p in &profiles {
        let _ = write!(out, "<tr><th>{}</th>", esc(p));
        for n in &nats {
            if !used.contains(&(*p, *n)) {
                out.push_str("<td></td>");
                continue;
            }
            out.push_str(r#"<td class="cell">"#);
            for r in v.rows.iter().filter(|r| r.profile == *p && r.nat == *n) {
                let _ = write!(
                    out,
                    r##"<a href="#{}" class="run st-{} {}" title="{}"><span class="obs">{} / {}</span><span class="exp">expected {}</span><span class="exp">{} · ping6 {}</span>{}</a>"##,
                    esc(&r.id),
                    esc(state_class(r)),
                    verdict_class(r),
                    esc(&hover(r)),
                    esc(&r.state),
                    esc(&r.nat_type),
                    esc(&r.expected),
                    esc(&r.router),
                    esc(&r.ping6),
                    if verdict_class(r) == "ok" {
                        String::new()
                    } else {
                        r#"<span class="mm">MISMATCH</span>"#.to_owned()
                    }
                );
            }
            out.push_str("</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out.push_str(
        "<h2>Scenarios</h2><table class=\"rows\"><tr><th>id</th><th>container</th><th>router</th>\
         <th>expected</th><th>state</th><th>NAT type</th><th>Teredo address</th><th>error</th>\
         <th>ping6 (expected)</th><th>result</th><th>why / problems</th></tr>",
    );
    for r in &v.rows {
        let mut why = esc(&r.why);
        for n in &r.notes {
            let _ = write!(why, "<br><i>differs ({}): {}</i>", esc(&n.tag), esc(&n.why));
        }
        for p in &r.problems {
            let _ = write!(why, r#"<br><b class="bad">{}</b>"#, esc(p));
        }
        let _ = write!(
            out,
            r#"<tr class="row {}" id="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="st-{}">{}</td><td>{}</td><td>{}</td><td>{}</td><td title="{}">{} ({})</td><td>{}</td><td>{}</td></tr>"#,
            verdict_class(r),
            esc(&r.id),
            esc(&r.id),
            esc(&r.container),
            esc(&r.router),
            esc(&r.expected),
            esc(state_class(r)),
            esc(&r.state),
            esc(&r.nat_type),
            esc(&r.address),
            esc(&r.error),
            esc(&r.ping6_detail),
            esc(&r.ping6),
            esc(&r.ping6_expected),
            esc(&r.result),
            why
        );
    }
    out.push_str("</table><script>");
    out.push_str(SCRIPT);
    out.push_str("</script></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container_report::tests::SAMPLE;

    #[test]
    fn a_cell_per_profile_and_nat_a_row_per_scenario() {
        let v: Verdict = serde_json::from_str(SAMPLE).unwrap();
        let p = container_page(&v);
        assert!(p.starts_with("<!DOCTYPE html>"));
        assert_eq!(p.matches(r#"<td class="cell">"#).count(), 3);
        assert_eq!(p.matches(r#"<tr class="row "#).count(), 3);
        assert_eq!(p.matches(r#"<tr class="row mismatch""#).count(), 2);
        assert!(p.contains("st-offline") && p.contains("st-missing"));
        assert!(p.contains("RFC 6081 &lt;support&gt;"));
        assert!(p.contains("no result file before the deadline"));
        assert!(!p.contains("<script src") && !p.contains("<link"));
    }
}
