//! The charts of `load --html`, drawn by `plotters` into SVG strings: lines over the run's
//! time, the RTT distribution of each trial (a CDF on a log axis), and the `--find-max`
//! search steps.

use std::ops::Range;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::FindMaxSummary;
use super::timeline::TrialRtt;

/// Size of every chart, pixels.
pub const SIZE: (u32, u32) = (900, 300);

/// Colours of the lines, in order.
pub const PALETTE: &[RGBColor] = &[
    RGBColor(31, 95, 191),
    RGBColor(217, 115, 26),
    RGBColor(26, 138, 42),
    RGBColor(192, 21, 138),
    RGBColor(125, 63, 181),
    RGBColor(102, 102, 102),
];

const PASS: RGBColor = RGBColor(26, 138, 42);
const FAIL: RGBColor = RGBColor(204, 0, 0);

/// A named line; `None` points break it (no data in that interval).
#[derive(Clone, Debug)]
pub struct Line {
    /// Legend text.
    pub name: String,
    /// (x, y) points, `None` for a gap.
    pub points: Vec<Option<(f64, f64)>>,
}

impl Line {
    /// A line from its name and points.
    pub fn new(name: &str, points: Vec<Option<(f64, f64)>>) -> Self {
        Self {
            name: name.to_owned(),
            points,
        }
    }
}

/// The unbroken runs of a line.
pub fn segments(points: &[Option<(f64, f64)>]) -> Vec<Vec<(f64, f64)>> {
    points
        .split(Option::is_none)
        .filter(|s| !s.is_empty())
        .map(|s| s.iter().flatten().copied().collect())
        .collect()
}

/// The upper end of an axis showing `values` (at least `floor`), with some headroom.
fn top(values: impl Iterator<Item = f64>, floor: f64) -> f64 {
    values.filter(|v| v.is_finite()).fold(floor, f64::max) * 1.1
}

/// Draws into an SVG string; plotters' `xmlns` is dropped (inline SVG in HTML needs none,
/// and the page names no URL).
fn svg(
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(out.replace(r#" xmlns="http://www.w3.org/2000/svg""#, ""))
}

/// Lines over `x` (seconds of the run, or anything linear).
pub fn lines(title: &str, x_desc: &str, y_desc: &str, lines: &[Line]) -> anyhow::Result<String> {
    let all = || lines.iter().flat_map(|l| l.points.iter().flatten());
    let x: Range<f64> = 0.0..top(all().map(|p| p.0), 1.0) / 1.1;
    let y: Range<f64> = 0.0..top(all().map(|p| p.1), 1.0);
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x, y)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .light_line_style(RGBColor(238, 238, 238))
            .draw()?;
        for (i, l) in lines.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    std::iter::empty::<(f64, f64)>(),
                    color.stroke_width(2),
                ))?
                .label(l.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            for seg in segments(&l.points) {
                if let [only] = seg.as_slice() {
                    chart.draw_series(std::iter::once(Circle::new(*only, 2, color.filled())))?;
                } else {
                    chart.draw_series(LineSeries::new(seg, color.stroke_width(2)))?;
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// Each trial's RTT distribution: percentile against RTT on a log axis.
pub fn rtt_cdf(trials: &[TrialRtt]) -> anyhow::Result<String> {
    let all = || trials.iter().flat_map(|t| t.cdf.iter().map(|p| p.0));
    let lo = all().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let lo = if lo.is_finite() { lo / 1.5 } else { 0.001 };
    let hi = top(all(), lo * 10.0);
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption("RTT distribution per trial (CDF)", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..100.0)?;
        chart
            .configure_mesh()
            .x_desc("RTT, ms (log)")
            .y_desc("percentile")
            .light_line_style(RGBColor(238, 238, 238))
            .draw()?;
        for (i, t) in trials.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    t.cdf.iter().map(|(ms, p)| (ms.max(lo), *p)),
                    color.stroke_width(2),
                ))?
                .label(format!(
                    "trial {} at {:.0} pps ({})",
                    t.trial,
                    t.offered_pps,
                    if t.passed { "pass" } else { "FAIL" }
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// The `--find-max` steps: offered and received rate per trial, a green (pass) or red
/// (fail) dot per trial, the best rate as a dashed line.
pub fn find_max(m: &FindMaxSummary) -> anyhow::Result<String> {
    let n = m.trials.len().max(1) as f64;
    let y = 0.0..top(
        m.trials
            .iter()
            .flat_map(|t| [t.offered_pps, t.received_pps]),
        1.0,
    );
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "find-max: loss ≤ {} %, best {}",
                    m.loss_threshold_percent,
                    m.best_rate
                        .map_or("none".to_owned(), |r| format!("{r:.0} pps"))
                ),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.5..n + 0.5, y)?;
        chart
            .configure_mesh()
            .x_desc("trial")
            .y_desc("packets/s")
            .x_labels(m.trials.len().clamp(2, 25))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()?;
        let offered = PALETTE[0];
        let received = PALETTE[1];
        chart
            .draw_series(LineSeries::new(
                m.trials.iter().map(|t| (f64::from(t.trial), t.offered_pps)),
                offered.stroke_width(2),
            ))?
            .label("offered")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], offered.stroke_width(2))
            });
        chart
            .draw_series(LineSeries::new(
                m.trials
                    .iter()
                    .map(|t| (f64::from(t.trial), t.received_pps)),
                received.stroke_width(2),
            ))?
            .label("received")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], received.stroke_width(2))
            });
        chart
            .draw_series(m.trials.iter().map(|t| {
                let c = if t.passed { PASS } else { FAIL };
                Circle::new((f64::from(t.trial), t.offered_pps), 5, c.filled())
            }))?
            .label("pass / FAIL")
            .legend(|(x, y)| Circle::new((x + 9, y), 4, PASS.filled()));
        if let Some(best) = m.best_rate {
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.5, best), (n + 0.5, best)],
                    6,
                    4,
                    PASS.stroke_width(1),
                ))?
                .label("best")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], PASS));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_split_lines() {
        let p = vec![
            Some((0.0, 1.0)),
            Some((1.0, 2.0)),
            None,
            None,
            Some((4.0, 1.0)),
        ];
        assert_eq!(
            segments(&p),
            vec![vec![(0.0, 1.0), (1.0, 2.0)], vec![(4.0, 1.0)]]
        );
        assert!(segments(&[None]).is_empty());
    }

    #[test]
    fn a_line_chart_is_svg_with_its_lines_and_legend() {
        let s = lines(
            "packets per second",
            "seconds",
            "pps",
            &[
                Line::new("offered", vec![Some((1.0, 10.0)), Some((2.0, 10.0))]),
                Line::new("received", vec![Some((1.0, 9.0)), None, Some((3.0, 9.5))]),
            ],
        )
        .unwrap();
        assert!(s.starts_with("<svg"), "{s}");
        assert!(!s.contains("http"), "{s}");
        assert!(s.contains("packets per second"));
        assert!(
            s.contains("\noffered\n") && s.contains("\nreceived\n"),
            "{s}"
        );
        // The offered line and its legend swatch, in the first colour; the received line's
        // lone points as dots in the second.
        let blue = r##"<polyline fill="none" opacity="1" stroke="#1F5FBF" stroke-width="2""##;
        assert_eq!(s.matches(blue).count(), 2, "{s}");
        assert!(s.contains(r##"<circle cx="349" cy="72" r="2" opacity="1" fill="#D9731A""##));
    }
}
