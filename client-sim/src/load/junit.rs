//! `load --junit FILE`: the run as JUnit XML for CI. Test cases: every client qualified
//! (Teredo mode), every qualified client answered in the warm-up (data phase), and the data
//! verdict: the fixed-rate trial's loss within the threshold, or for `--find-max` one case
//! per trial (a failing trial is how the search finds the edge, so it is no failure; its
//! verdict is in the case's output) and one that a rate passed.

use super::report::{DataSummary, LoadReport};
use crate::junit::{document, Case, Verdict};

/// One check of the run, a test case.
struct Check {
    name: String,
    time_s: f64,
    failure: Option<String>,
    out: String,
}

fn trial_text(d: &DataSummary) -> String {
    format!(
        "offered {:.0} pps from {} clients for {:.1} s; sent {} ({:.1} pps), received {} \
         ({:.1} pps); lost {} ({:.3} %); rtt {}",
        d.offered_pps,
        d.senders,
        d.duration_s,
        d.sent,
        d.sent_pps,
        d.received,
        d.received_pps,
        d.lost,
        d.loss_percent,
        d.rtt_ms.line()
    )
}

fn checks(r: &LoadReport) -> Vec<Check> {
    let mut v = Vec::new();
    let threshold = r.loss_threshold_percent;
    if let Some(q) = &r.qualify {
        let text = format!(
            "{}/{} qualified in {:.1} s; latency {}",
            q.qualified,
            q.clients,
            q.duration_s,
            q.latency_ms.line()
        );
        v.push(Check {
            name: "every client qualified".to_owned(),
            time_s: q.duration_s,
            failure: (q.qualified < q.clients).then(|| {
                let other: Vec<String> = q
                    .results
                    .iter()
                    .filter(|(k, n)| **k != "qualified" && **n > 0)
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                format!(
                    "{} of {} clients did not qualify ({})",
                    q.clients - q.qualified,
                    q.clients,
                    other.join(", ")
                )
            }),
            out: text,
        });
    }
    if let Some(w) = r.warmup_failed {
        v.push(Check {
            name: "every qualified client answered in the warm-up".to_owned(),
            time_s: 0.0,
            failure: (w > 0).then(|| format!("{w} qualified clients got no answer")),
            out: format!("{w} clients without an answer"),
        });
    }
    match (&r.find_max, &r.data) {
        (Some(m), _) => {
            for t in &m.trials {
                v.push(Check {
                    name: format!("find-max trial {} at {:.0} pps", t.trial, t.offered_pps),
                    time_s: t.duration_s,
                    failure: None,
                    out: format!(
                        "{}; {} (loss ≤ {threshold} % and 90 % of the rate sent)",
                        trial_text(t),
                        if t.passed { "pass" } else { "FAIL" }
                    ),
                });
            }
            v.push(Check {
                name: format!("find-max: a rate passed with loss ≤ {threshold} %"),
                time_s: m.trials.iter().map(|t| t.duration_s).sum(),
                failure: m
                    .best_rate
                    .is_none()
                    .then(|| format!("no trial passed with loss ≤ {threshold} %")),
                out: m.best_rate.map_or("no passing rate".to_owned(), |b| {
                    format!("highest passing rate {b:.0} pps")
                }),
            });
        }
        (None, Some(d)) => v.push(Check {
            name: format!(
                "data trial at {:.0} pps: loss ≤ {threshold} %",
                d.offered_pps
            ),
            time_s: d.duration_s,
            failure: (!d.passed).then(|| {
                format!(
                    "loss {:.3} % ({} of {}) above {threshold} %",
                    d.loss_percent, d.lost, d.sent
                )
            }),
            out: trial_text(d),
        }),
        (None, None) => {}
    }
    for g in &r.generators {
        v.push(Check {
            name: format!(
                "{} ({}): exit status 0",
                g.replica
                    .map_or("generator".to_owned(), |n| format!("replica {n}")),
                g.file
            ),
            time_s: (g.finished_unix_s - g.started_unix_s).max(0.0),
            failure: (g.exit_code != 0).then(|| format!("exit status {}", g.exit_code)),
            out: g.line().trim().to_owned(),
        });
    }
    v
}

/// The JUnit XML document of `report`.
pub fn junit(report: &LoadReport) -> anyhow::Result<String> {
    let class = format!("teredo-load.{}", report.mode);
    let cases: Vec<Case> = checks(report)
        .into_iter()
        .map(|c| Case {
            class: class.clone(),
            name: c.name,
            time_s: Some(c.time_s),
            verdict: c
                .failure
                .map_or(Verdict::Passed, |message| Verdict::Failed {
                    kind: "threshold",
                    text: format!("{message}\n{}", c.out),
                    message,
                }),
            out: c.out,
        })
        .collect();
    document("teredo load", &class, Some(report.elapsed_s), &cases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::fixture::example;

    fn parse(xml: &str) -> Vec<(String, Option<String>)> {
        let doc = roxmltree::Document::parse(xml).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .map(|c| {
                let failure = c
                    .children()
                    .find(|n| n.has_tag_name("failure"))
                    .and_then(|f| f.attribute("message"))
                    .map(str::to_owned);
                (c.attribute("name").unwrap().to_owned(), failure)
            })
            .collect()
    }

    #[test]
    fn find_max_trials_are_cases_and_a_failing_trial_is_no_failure() {
        let xml = junit(&example(true, true)).unwrap();
        let cases = parse(&xml);
        let names: Vec<&str> = cases.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "every client qualified",
                "every qualified client answered in the warm-up",
                "find-max trial 1 at 100 pps",
                "find-max trial 2 at 200 pps",
                "find-max trial 3 at 400 pps",
                "find-max: a rate passed with loss ≤ 0.1 %",
            ]
        );
        assert!(cases.iter().all(|c| c.1.is_none()), "{xml}");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(doc.root_element().attribute("tests"), Some("6"));
        assert_eq!(doc.root_element().attribute("failures"), Some("0"));
        assert!(xml.contains("lost 100 (12.500 %)"), "{xml}");
    }

    #[test]
    fn unqualified_clients_and_loss_fail() {
        let mut r = example(true, false);
        r.loss_threshold_percent = 0.0;
        r.data = r.find_max.take().map(|m| m.trials[2].clone());
        let xml = junit(&r).unwrap();
        let cases = parse(&xml);
        assert_eq!(cases.len(), 3, "{xml}");
        assert_eq!(
            cases[0].1.as_deref(),
            Some("2 of 10 clients did not qualify (timeout 2)")
        );
        assert_eq!(cases[1].1, None);
        assert_eq!(cases[2].0, "data trial at 400 pps: loss ≤ 0 %");
        assert_eq!(
            cases[2].1.as_deref(),
            Some("loss 12.500 % (100 of 800) above 0 %")
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(doc.root_element().attribute("failures"), Some("2"));
    }
}
