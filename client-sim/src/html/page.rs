//! The page: one self-contained HTML document (inline CSS, inline SVG, a small inline script
//! for the filter; nothing is loaded from anywhere) with the summary, the legend, the filter,
//! the matrix grid, the named and fault scenarios, and a ladder per scenario.

use std::fmt::Write as _;

use super::ladder::{ladder, LaneNames, LEGEND};
use super::matrix::{extras, grid, hover, observed_summary, verdict};
use super::svg::esc;
use crate::lab::{expected_summary, LabReport, ScenarioResult};
use crate::scenario::{Variant, PEER_NAT, PEER_PROFILE};

pub(super) const CSS: &str = r#"
body{font:14px/1.35 system-ui,sans-serif;margin:16px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:18px 0 6px}
.summary{margin:0 0 8px} .bad{color:#b00;font-weight:bold}
.filter{margin:8px 0;padding:6px;background:#f4f4f4;border:1px solid #ddd}
.filter input{width:16em} #stats{color:#555;margin-left:1em}
table{border-collapse:collapse} th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
table.matrix td.cell{width:150px;font-size:12px}
td.cell a{display:block;color:inherit;text-decoration:none}
td.cell .obs{display:block;font-weight:bold} td.cell .err{display:block;color:#800}
td.cell .exp{display:block;color:#444;font-size:11px} .mm{display:block;color:#fff;background:#b00;font-weight:bold;padding:0 3px}
.st-qualified{background:#d7f5d3} .st-offline{background:#f9d3cf} .st-probe{background:#fcefc7} .st-dormant{background:#d5e3f7}
td.cell.mismatch,tr.extra.mismatch{outline:3px solid #b00}
td.cell.hidden{opacity:.15} tr.hidden,section.hidden{display:none}
table.extras{font-size:12px}
section.scenario{margin:10px 0;border-top:1px solid #ccc;padding-top:4px}
section.scenario summary{cursor:pointer;font-weight:bold}
section.scenario .why{color:#444;font-size:12px;max-width:1100px}
.scroll{overflow-x:auto}
svg.ladder{font:11px system-ui,sans-serif;background:#fcfcfc} svg.legend{font:12px system-ui,sans-serif}
svg .lane{stroke:#bbb;stroke-width:1} svg .lane-name{font-weight:bold;font-size:12px}
svg .time{fill:#666} svg .gap{stroke:#999;stroke-dasharray:4 4} svg .gap-text{fill:#777;font-style:italic}
svg .shaft{stroke-width:2} svg .inflight{stroke-dasharray:3 3}
svg .label{font-weight:bold} svg .addr{fill:#555;font-size:10px} svg .seen{fill:#225}
svg .drop-reason{fill:#c00;font-weight:bold;font-size:10px} svg .x{stroke:#c00;stroke-width:3}
svg .mapping{fill:#070;font-size:10px} svg .via{fill:#fff;stroke:#333}
svg .note{fill:#555;font-style:italic} svg .ev{font-weight:bold}
svg .ev-ok .ev{fill:#080} svg .ev-fail .ev{fill:#c00} svg .ev-warn .ev{fill:#a60} svg .ev-state .ev{fill:#335}
svg .peer{opacity:.45}
svg .ev-ok .dot{fill:#080} svg .ev-fail .dot{fill:#c00} svg .ev-warn .dot{fill:#a60} svg .ev-state .dot{fill:#335}
"#;

/// Colour of each datagram kind (shaft, head, label).
const KIND_CSS: &[(&str, &str)] = &[
    ("rs", "#1f5fbf"),
    ("ra", "#1a8a2a"),
    ("bubble", "#7d3fb5"),
    ("ibubble", "#a0522d"),
    ("echo", "#d9731a"),
    ("data", "#666"),
    ("malformed", "#c0158a"),
];

const SCRIPT: &str = r#"
(function () {
  var q = document.getElementById('q');
  var verdict = document.getElementById('verdict');
  var state = document.getElementById('state');
  function matches(el) {
    var text = q.value.trim().toLowerCase();
    return (!text || el.dataset.name.toLowerCase().indexOf(text) >= 0) &&
      (verdict.value === 'all' || el.dataset.verdict === verdict.value) &&
      (state.value === 'all' || el.dataset.state.indexOf(state.value) === 0);
  }
  function apply() {
    var shown = 0;
    document.querySelectorAll('[data-name]').forEach(function (el) {
      var ok = matches(el);
      el.classList.toggle('hidden', !ok);
      if (ok && el.tagName === 'SECTION') { shown++; }
    });
    document.getElementById('shown').textContent = shown + ' scenarios shown';
  }
  function openTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    var s = id ? document.getElementById(id) : null;
    var d = s ? s.querySelector('details') : null;
    if (d) { d.open = true; s.scrollIntoView(); }
  }
  [q, verdict, state].forEach(function (el) {
    el.addEventListener('input', apply);
    el.addEventListener('change', apply);
  });
  window.addEventListener('hashchange', openTarget);
  apply();
  openTarget();
  // Counted in the rendered document, for the reader and for the browser test.
  var cells = document.querySelectorAll('table.matrix td.cell').length;
  var ladders = document.querySelectorAll('section.scenario svg.ladder');
  var arrows = 0;
  ladders.forEach(function (svg) {
    var n = svg.querySelectorAll('g.arrow').length;
    svg.closest('section').dataset.renderedArrows = String(n);
    arrows += n;
  });
  var stats = document.getElementById('stats');
  stats.dataset.cells = String(cells);
  stats.dataset.ladders = String(ladders.length);
  stats.dataset.arrows = String(arrows);
  stats.textContent = cells + ' matrix cells, ' + ladders.length + ' ladders, ' + arrows + ' datagrams drawn';
  document.body.dataset.ready = '1';
  console.log('teredo-lab report ready: ' + stats.textContent);
})();
"#;

pub(super) fn legend() -> String {
    let mut out = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="legend" width="1240" height="22">"#,
    );
    for (i, (kind, name)) in LEGEND.iter().enumerate() {
        let x = 10.0 + 175.0 * i as f64;
        let _ = write!(
            out,
            r#"<g class="k-{}"><line x1="{x}" y1="11" x2="{}" y2="11" class="shaft"/><text x="{}" y="15">{}</text></g>"#,
            kind.as_str(),
            x + 24.0,
            x + 30.0,
            esc(name)
        );
    }
    out.push_str("</svg>");
    out
}

fn section(out: &mut String, r: &ScenarioResult) {
    let s = &r.scenario;
    let name = s.name();
    let open = !r.ok() || (s.variant == Variant::Matrix && r.observed.error.is_some());
    let _ = write!(
        out,
        r#"<section class="scenario" id="{}" data-name="{}" data-state="{}" data-verdict="{}"><details{}><summary title="{}">{} — {} (expected {}){}</summary>"#,
        esc(&name),
        esc(&name),
        esc(r.observed.state.as_str()),
        verdict(r),
        if open { " open" } else { "" },
        esc(&hover(r)),
        esc(&name),
        esc(&observed_summary(r)),
        esc(&expected_summary(s)),
        if r.ok() { "" } else { " MISMATCH" },
    );
    let _ = write!(out, r#"<p class="why">{}"#, esc(s.why));
    if let Some(e) = r.observed.error {
        let _ = write!(
            out,
            r#"<br><b class="bad">error: {}</b>"#,
            esc(&e.to_string())
        );
    }
    for m in &r.mismatches {
        let _ = write!(out, r#"<br><b class="bad">MISMATCH: {}</b>"#, esc(m));
    }
    out.push_str("</p>");
    match &r.journal {
        Some(j) => {
            let names = LaneNames {
                client: s.profile.to_string(),
                nat: s.nat.to_string(),
                peer: PEER_PROFILE.to_string(),
                peer_nat: PEER_NAT.to_string(),
                fixed: Vec::new(),
            };
            let (svg, _) = ladder(j, &names);
            out.push_str(r#"<div class="scroll">"#);
            out.push_str(&svg);
            out.push_str("</div>");
        }
        None => out.push_str("<p>(no journal)</p>"),
    }
    out.push_str("</details></section>\n");
}

/// The colour rules of the datagram kinds.
pub(super) fn kind_css(out: &mut String) {
    for (k, c) in KIND_CSS {
        let _ = writeln!(
            out,
            "svg .k-{k} .shaft{{stroke:{c}}} svg .k-{k} .head{{fill:{c}}} svg .k-{k} .label{{fill:{c}}}"
        );
    }
}

/// The whole page of `report`.
pub(crate) fn page(report: &LabReport) -> String {
    let mut out = String::with_capacity(1 << 20);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width\">");
    let _ = write!(
        out,
        "<title>teredo-lab report (seed {})</title>",
        report.seed
    );
    out.push_str("<style>");
    out.push_str(CSS);
    kind_css(&mut out);
    out.push_str("</style></head><body>");
    out.push_str("<h1>teredo-lab: client profiles × NAT presets</h1>");
    let total = report.results.len();
    let bad = report.mismatches();
    let _ = write!(
        out,
        r#"<p class="summary">{total} scenarios, {} ok, <span class="{}">{bad} mismatches</span> (seed {}). Every datagram of each scenario's simulated network is drawn below; hover over a cell, row or arrow for details.</p>"#,
        total - bad,
        if bad > 0 { "bad" } else { "" },
        report.seed
    );
    out.push_str(&legend());
    out.push_str(
        r#"<div class="filter"><label>scenario <input id="q" type="search" placeholder="e.g. symmetric, xp-sp2"></label>
<label>result <select id="verdict"><option value="all">all</option><option value="ok">ok</option><option value="mismatch">mismatch</option></select></label>
<label>state <select id="state"><option value="all">all</option><option value="qualified">qualified</option><option value="offline">offline</option><option value="probe">probe</option><option value="dormant">dormant</option></select></label>
<span id="shown"></span><span id="stats"></span></div>"#,
    );
    out.push_str("<h2>Matrix</h2>");
    out.push_str(&grid(&report.results));
    out.push_str("<h2>Named and fault scenarios</h2>");
    out.push_str(&extras(&report.results));
    out.push_str("<h2>Ladder diagrams</h2>\n");
    for r in &report.results {
        section(&mut out, r);
    }
    out.push_str("<script>");
    out.push_str(SCRIPT);
    out.push_str("</script></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{run_scenario_with, scenario_named};

    #[test]
    fn the_page_is_self_contained() {
        let r = run_scenario_with(
            &scenario_named("xp-sp2__symmetric").unwrap(),
            1,
            false,
            true,
        )
        .unwrap();
        let p = page(&LabReport {
            seed: 1,
            results: vec![r],
        });
        assert!(p.starts_with("<!DOCTYPE html>"));
        // Nothing from the network: no external scripts, styles, images or fonts.
        for bad in [
            "<script src",
            "<link",
            "<img",
            "@import",
            "url(",
            "http://",
            "https://",
        ] {
            let hits: Vec<&str> = p.match_indices(bad).map(|(i, _)| &p[i..i + 40]).collect();
            // The SVG namespace is an identifier, not a fetch.
            let fetches = hits
                .iter()
                .filter(|h| !h.starts_with("http://www.w3.org/2000/svg"))
                .count();
            assert_eq!(fetches, 0, "{bad}: {hits:?}");
        }
        assert_eq!(p.matches(r#"<td class="cell"#).count(), 1);
        assert_eq!(p.matches(r#"<section class="scenario""#).count(), 1);
        assert!(p.contains(r#"id="xp-sp2__symmetric""#));
        assert!(
            p.contains("<details open>"),
            "the failing cell's ladder is open"
        );
    }
}
