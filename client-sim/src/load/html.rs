//! `load --html FILE`: the run as one self-contained HTML page (inline CSS and SVG, a few
//! lines of script that count what the browser drew; nothing is loaded from anywhere): the
//! summary, then the run over time — packets per second, loss, RTT percentiles,
//! qualifications per second, open NAT mappings — each trial's RTT distribution and the
//! `--find-max` steps.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::charts::{self, Line};
use super::report::LoadReport;
use super::timeline::Sample;
use crate::html::svg::esc;

const CSS: &str = r#"
body{font:14px/1.35 system-ui,sans-serif;margin:16px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 6px} .bad{color:#b00;font-weight:bold} .ok{color:#080;font-weight:bold}
table{border-collapse:collapse;margin:6px 0} th,td{border:1px solid #ccc;padding:3px 6px;text-align:left}
pre{background:#f6f6f6;border:1px solid #ddd;padding:6px;font-size:12px;overflow-x:auto}
table.summary td{max-width:760px;overflow-wrap:anywhere} .note{color:#555}
figure.chart{margin:12px 0} figure.chart figcaption{color:#555;font-size:12px;max-width:900px}
"#;

/// Marks the body with what was really drawn: charts with a size, and data lines in them.
const SCRIPT: &str = r#"
(function () {
  var charts = 0, lines = 0;
  document.querySelectorAll('figure.chart svg').forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    if (box.width > 0 && box.height > 0) { charts++; }
    svg.querySelectorAll('polyline[stroke-width="2"]').forEach(function (l) {
      if (l.getAttribute('stroke') !== '#000000' && l.getBBox().width > 0) { lines++; }
    });
  });
  document.body.dataset.charts = charts;
  document.body.dataset.lines = lines;
  document.body.dataset.ready = '1';
  console.log('teredo-lab load report ready: ' + charts + ' charts');
})();
"#;

fn points(s: &[Sample], y: impl Fn(&Sample) -> Option<f64>) -> Vec<Option<(f64, f64)>> {
    s.iter().map(|s| y(s).map(|v| (s.t_s, v))).collect()
}

/// One `<figure>` with its chart, or the error in its place.
fn figure(out: &mut String, id: &str, chart: anyhow::Result<String>, caption: &str) {
    let body = chart
        .unwrap_or_else(|e| format!("<p class=\"bad\">cannot draw: {}</p>", esc(&e.to_string())));
    let _ = writeln!(
        out,
        "<figure class=\"chart\" id=\"{id}\">{body}<figcaption>{}</figcaption></figure>",
        esc(caption)
    );
}

/// The data phase's charts: packets per second, loss, RTT percentiles.
fn data_charts(out: &mut String, report: &LoadReport, s: &[Sample], per: &str) {
    let pps = charts::lines(
        "packets per second",
        "seconds",
        "packets/s",
        &[
            Line::new("offered", points(s, |s| Some(s.offered_pps))),
            Line::new("sent", points(s, |s| Some(s.sent_pps()))),
            Line::new("received", points(s, |s| Some(s.received_pps()))),
        ],
    );
    figure(
        out,
        "rates",
        pps,
        &format!("Offered rate of the running trial, packets sent and answers received; {per}."),
    );
    let threshold = report.loss_threshold_percent;
    let loss = charts::lines(
        "loss, %",
        "seconds",
        "%",
        &[
            Line::new("loss", points(s, Sample::loss_percent)),
            Line::new(
                "threshold",
                points(s, |s| s.loss_percent().map(|_| threshold)),
            ),
        ],
    );
    figure(
        out,
        "loss",
        loss,
        "Packets of the interval not matched by its answers (none drawn where nothing was \
         sent); the run's verdict counts after the drain time.",
    );
    let rtt = charts::lines(
        "round-trip time",
        "seconds",
        "ms",
        &[
            Line::new("p50", points(s, |s| s.rtt_p50_ms)),
            Line::new("p99", points(s, |s| s.rtt_p99_ms)),
            Line::new("p99.9", points(s, |s| s.rtt_p99_9_ms)),
        ],
    );
    figure(
        out,
        "rtt",
        rtt,
        "Percentiles of the answers that arrived in each interval.",
    );
}

/// A merged report's generators, one row each (their charts are on their own pages).
fn generator_table(out: &mut String, report: &LoadReport) {
    out.push_str(
        "<p class=\"note\">Merged from the generators below: no timeline (each generator's \
         own <code>--html</code> has its charts).</p>\n<table id=\"generators\"><tr><th>replica</th>\
         <th>clients</th><th>seed</th><th>qualified</th><th>sent</th><th>received</th>\
         <th>lost</th><th>RTT p50 / p99 ms</th><th>exit</th><th>report</th></tr>\n",
    );
    let n = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
    for g in &report.generators {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}..{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{} / {}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            g.replica.map_or("-".to_owned(), |r| r.to_string()),
            g.client_offset,
            (g.client_offset + g.clients).saturating_sub(1),
            g.seed,
            n(g.qualified),
            n(g.sent),
            n(g.received),
            n(g.lost),
            ms(g.rtt_p50_ms),
            ms(g.rtt_p99_ms),
            if g.exit_code == 0 { "ok" } else { "bad" },
            g.exit_code,
            esc(&g.file)
        );
    }
    out.push_str("</table>\n");
}

/// The page of `report`.
pub fn page(report: &LoadReport) -> String {
    let tl = &report.timeline;
    let s = tl.samples();
    let step = tl.step_s();
    let per = if step > 1.0 {
        format!("one sample per {step:.0} s")
    } else {
        "one sample per second".to_owned()
    };
    let verdict = match report.exit_code {
        0 => "<span class=\"ok\">passed</span>".to_owned(),
        c => format!(
            "<span class=\"bad\">FAILED (exit status {c}: {})</span>",
            match c {
                super::EXIT_NOT_ALL_CLIENTS => "not every client qualified or got an answer",
                super::EXIT_LOSS => "loss above the threshold",
                _ => "error",
            }
        ),
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>teredo-lab load report</title><style>{CSS}</style></head><body>\n\
         <h1>teredo-lab load report: {verdict}</h1>\n<table class=\"summary\">"
    );
    let rows = [
        ("mode", report.mode.to_owned()),
        ("target", report.target.clone()),
        ("clients", report.clients.to_string()),
        (
            "profile",
            report.profile.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        ("NAT", report.nat.clone()),
        (
            "loss threshold",
            format!("{} %", report.loss_threshold_percent),
        ),
        ("seed", report.seed.to_string()),
    ];
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{k}</th><td>{}</td></tr>", esc(&v));
    }
    let _ = writeln!(out, "</table>\n<pre>{}</pre>", esc(&report.to_string()));
    if s.iter().any(|x| x.sent > 0 || x.received > 0) {
        data_charts(&mut out, report, &s, &per);
    } else if !report.generators.is_empty() {
        generator_table(&mut out, report);
    } else {
        out.push_str(
            "<p class=\"note\">No load packet was sent in this run (qualification only): no \
             rate, loss or RTT chart.</p>\n",
        );
    }
    let q = charts::lines(
        "qualifications per second",
        "seconds",
        "clients/s",
        &[Line::new(
            "qualified",
            points(&s, |s| Some(s.qualified_per_s())),
        )],
    );
    figure(
        &mut out,
        "qualify",
        q,
        "Clients that qualified in each interval.",
    );
    let nat = charts::lines(
        "open NAT mappings",
        "seconds",
        "mappings",
        &[Line::new(
            "mappings",
            points(&s, |s| Some(s.nat_mappings as f64)),
        )],
    );
    figure(
        &mut out,
        "mappings",
        nat,
        "Live mappings summed over every simulated NAT (none without --nat).",
    );
    if !tl.trials().is_empty() {
        figure(
            &mut out,
            "rtt-cdf",
            charts::rtt_cdf(tl.trials()),
            "Each trial's RTT distribution after its drain time.",
        );
    }
    if let Some(m) = &report.find_max {
        figure(
            &mut out,
            "find-max",
            charts::find_max(m),
            "The search's trials in order: offered and received rate, pass or FAIL.",
        );
    }
    for (i, sc) in report.scraped.iter().enumerate() {
        let top = sc.top_rates(6);
        let lines: Vec<Line> = top
            .iter()
            .map(|(name, pts)| Line::new(name, pts.iter().copied().map(Some).collect()))
            .collect();
        let failed = match (&sc.last_error, sc.failures) {
            (Some(e), n) => format!("; {n} scrapes failed, the last: {e}"),
            (None, _) => String::new(),
        };
        figure(
            &mut out,
            &format!("scrape-{i}"),
            charts::lines(
                &format!("{}: counters per second", sc.url),
                "seconds",
                "per second",
                &lines,
            ),
            &format!(
                "The {} of {} counter families of {} that grew most, summed over their labels; {} \
                 samples, one per {} s{failed}.",
                top.len(),
                sc.families.len(),
                sc.url,
                sc.samples.len(),
                sc.every_s
            ),
        );
    }
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body></html>\n");
    out
}

/// Writes the page of `report` to `path`.
pub fn write(report: &LoadReport, path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, page(report)).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::fixture::example;

    #[test]
    fn the_page_has_every_chart_and_names_no_url() {
        let p = page(&example(true, true));
        assert!(p.starts_with("<!DOCTYPE html>"));
        for id in [
            "rates", "loss", "rtt", "qualify", "mappings", "rtt-cdf", "find-max",
        ] {
            let at = p
                .find(&format!("<figure class=\"chart\" id=\"{id}\"><svg"))
                .unwrap_or_else(|| panic!("no chart {id}"));
            let end = at + p[at..].find("</figure>").unwrap();
            assert!(p[at..end].contains("</svg>"), "{id}");
        }
        for title in [
            "packets per second",
            "loss, %",
            "round-trip time",
            "qualifications per second",
            "open NAT mappings",
            "RTT distribution per trial (CDF)",
            "find-max: loss ≤ 0.1 %, best 200 pps",
            "trial 3 at 400 pps (FAIL)",
        ] {
            assert!(p.contains(title), "{title}");
        }
        // Self-contained: no address of anything to load.
        for bad in ["http:", "https:", "src=", "href=", "url(", "@import"] {
            assert!(!p.contains(bad), "{bad}");
        }
        assert!(p.contains("passed</span>"));
        assert!(p.contains("highest rate with loss ≤ 0.1 %: 200 pps"));
        // The find-max steps: a red dot for the failing trial, green for the others.
        let fm = &p[p.find("id=\"find-max\"").unwrap()..];
        assert_eq!(
            fm.matches(r##"r="5" opacity="1" fill="#CC0000""##).count(),
            1
        );
        assert_eq!(
            fm.matches(r##"r="5" opacity="1" fill="#1A8A2A""##).count(),
            2
        );
    }

    #[test]
    fn scraped_counters_are_charted() {
        let mut r = example(true, true);
        let mut sc = crate::load::scrape::Series {
            url: "http://198.51.100.1:9101/metrics".to_owned(),
            every_s: 1,
            ..Default::default()
        };
        for t in 0..5u32 {
            let mut v = std::collections::BTreeMap::new();
            v.insert("teredo_server_ra_sent_total".to_owned(), f64::from(t * 50));
            sc.push(f64::from(t), &v);
        }
        r.scraped = vec![sc];
        let p = page(&r);
        let at = p
            .find("<figure class=\"chart\" id=\"scrape-0\"><svg")
            .unwrap();
        let fig = &p[at..at + p[at..].find("</figure>").unwrap()];
        assert!(fig.contains("http://198.51.100.1:9101/metrics: counters per second"));
        assert!(fig.contains("\nteredo_server_ra_sent_total\n"), "{fig}");
        assert!(fig.contains("The 1 of 1 counter families"), "{fig}");
        // The endpoint is named, never loaded.
        for bad in ["src=", "href=", "url("] {
            assert!(!p.contains(bad), "{bad}");
        }
    }

    #[test]
    fn without_find_max_or_answers_the_other_charts_remain() {
        let mut r = example(false, false);
        r.timeline = Default::default();
        let p = page(&r);
        assert!(!p.contains("id=\"find-max\"") && !p.contains("id=\"rtt-cdf\""));
        // Nothing sent: only the qualification and NAT charts.
        assert_eq!(p.matches("<figure class=\"chart\"").count(), 2);
        assert!(p.contains("No load packet was sent"));
        assert!(p.contains("FAILED (exit status 3"));
        assert!(!p.contains("cannot draw"));
    }
}
