//! The matrix as a grid (profile rows × NAT preset columns, one coloured cell per outcome
//! with the expected outcome beside it), and the named and fault scenarios as a list. Every
//! cell and row links to its scenario's ladder and carries the attributes the filter reads.

use std::fmt::Write as _;

use netsim::NatPreset;
use teredo::client::Profile;

use super::svg::esc;
use crate::lab::{expected_summary, ScenarioResult};
use crate::scenario::Variant;

/// The observed outcome in a few words: `qualified / restricted C=0`, `offline / symmetric
/// (port)`.
pub(crate) fn observed_summary(r: &ScenarioResult) -> String {
    let o = &r.observed;
    let mut s = format!("{} / {}", o.state, o.nat);
    if let Some(c) = o.cone_bit() {
        let _ = write!(s, " C={}", u8::from(c));
    }
    s
}

/// The filter's words for a result: its verdict and its state.
pub(crate) fn verdict(r: &ScenarioResult) -> &'static str {
    if r.ok() {
        "ok"
    } else {
        "mismatch"
    }
}

/// The `title` (hover) text of a result: expected, observed, error, why, mismatches.
pub(crate) fn hover(r: &ScenarioResult) -> String {
    let mut s = format!(
        "{}\nexpected: {}\nobserved: {}",
        r.scenario.name(),
        expected_summary(&r.scenario),
        observed_summary(r)
    );
    if let Some(e) = r.observed.error {
        let _ = write!(s, "\nerror: {e}");
    }
    let _ = write!(s, "\nwhy: {}", r.scenario.why);
    for m in &r.mismatches {
        let _ = write!(s, "\nMISMATCH: {m}");
    }
    s
}

fn cell(out: &mut String, r: &ScenarioResult) {
    let o = &r.observed;
    let name = r.scenario.name();
    let _ = write!(
        out,
        r##"<td class="cell st-{} {}" data-name="{}" data-state="{}" data-verdict="{}" title="{}"><a href="#{}"><span class="obs">{}</span>"##,
        o.state.as_str().split('_').next().unwrap_or("x"),
        verdict(r),
        esc(&name),
        esc(o.state.as_str()),
        verdict(r),
        esc(&hover(r)),
        esc(&name),
        esc(&observed_summary(r)),
    );
    if let Some(e) = o.error {
        let _ = write!(out, r#"<span class="err">{}</span>"#, esc(&e.to_string()));
    }
    let _ = write!(
        out,
        r#"<span class="exp">expected {}</span>"#,
        esc(&expected_summary(&r.scenario))
    );
    if !r.ok() {
        out.push_str(r#"<span class="mm">MISMATCH</span>"#);
    }
    out.push_str("</a></td>");
}

/// The grid of the matrix cells among `results` (rows and columns only for the profiles and
/// presets that ran).
pub(crate) fn grid(results: &[ScenarioResult]) -> String {
    let matrix: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| r.scenario.variant == Variant::Matrix)
        .collect();
    let profiles: Vec<Profile> = Profile::ALL
        .iter()
        .copied()
        .filter(|p| matrix.iter().any(|r| r.scenario.profile == *p))
        .collect();
    let nats: Vec<NatPreset> = NatPreset::ALL
        .iter()
        .copied()
        .filter(|n| matrix.iter().any(|r| r.scenario.nat == *n))
        .collect();
    let mut out = String::from(r#"<table class="matrix"><thead><tr><th>profile \ NAT</th>"#);
    for n in &nats {
        let _ = write!(out, "<th>{}</th>", esc(n.as_str()));
    }
    out.push_str("</tr></thead><tbody>");
    for p in &profiles {
        let _ = write!(out, "<tr><th>{}</th>", esc(p.as_str()));
        for n in &nats {
            match matrix
                .iter()
                .find(|r| r.scenario.profile == *p && r.scenario.nat == *n)
            {
                Some(r) => cell(&mut out, r),
                None => out.push_str("<td></td>"),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// The named and fault scenarios among `results`, one row each.
pub(crate) fn extras(results: &[ScenarioResult]) -> String {
    let mut out = String::from(
        r#"<table class="extras"><thead><tr><th>scenario</th><th>expected</th><th>observed</th><th>error</th><th>result</th></tr></thead><tbody>"#,
    );
    for r in results
        .iter()
        .filter(|r| r.scenario.variant != Variant::Matrix)
    {
        let name = r.scenario.name();
        let _ = write!(
            out,
            r##"<tr class="extra st-{} {}" data-name="{}" data-state="{}" data-verdict="{}" title="{}"><td><a href="#{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"##,
            r.observed.state.as_str().split('_').next().unwrap_or("x"),
            verdict(r),
            esc(&name),
            esc(r.observed.state.as_str()),
            verdict(r),
            esc(&hover(r)),
            esc(&name),
            esc(&name),
            esc(&expected_summary(&r.scenario)),
            esc(&observed_summary(r)),
            esc(&r.observed.error.map_or("-".to_owned(), |e| e.to_string())),
            if r.ok() { "ok" } else { "MISMATCH" },
        );
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{run_scenario, scenario_named, Expect, Scenario};
    use teredo::client::NatType;

    #[test]
    fn a_cell_shows_observed_expected_and_mismatch() {
        let ok = run_scenario(&scenario_named("xp-sp2__symmetric").unwrap(), 1, false).unwrap();
        let wrong = Scenario {
            expect: Expect::qualified(NatType::SymmetricPort),
            ..scenario_named("rfc5991__symmetric").unwrap()
        };
        let bad = run_scenario(&wrong, 1, false).unwrap();
        let g = grid(&[ok, bad]);
        assert_eq!(g.matches(r#"<td class="cell"#).count(), 2);
        assert!(g.contains("<th>xp-sp2</th>") && g.contains("<th>rfc5991</th>"));
        assert!(g.contains("<th>symmetric</th>"));
        assert!(g.contains("client behind symmetric NAT"));
        assert!(g.contains(r#"class="cell st-offline ok""#), "{g}");
        assert!(g.contains(r#"class="cell st-offline mismatch""#), "{g}");
        assert!(g.contains("expected offline/symmetric (port)/symmetric_nat"));
        assert_eq!(g.matches("MISMATCH</span>").count(), 1);
        assert!(extras(&[]).ends_with("<tbody></tbody></table>"));
    }
}
