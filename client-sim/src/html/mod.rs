//! `client-sim lab --html DIR`: the lab as one self-contained HTML page (`DIR/report.html`)
//! that answers "why does this client go offline behind that NAT?" with a picture: the
//! matrix as a coloured grid with the expected outcome in each cell, a filter, and for every
//! scenario a ladder diagram (message sequence chart) drawn from the simulated network's
//! journal.
//!
//! Files: `page` (the document, its CSS and filter script), `matrix` (the grid and the list
//! of named scenarios), `ladder` (the sequence chart), `decode` (what a datagram means, read
//! with the core's wire module), `svg` (escaping and shapes), `run` (the page of one
//! real-socket `qualify` or `ping` run: [`write_run`]), `containers` (the container lab's
//! verdict: [`container_page`]).

mod containers;
mod decode;
mod ladder;
mod matrix;
mod page;
mod run;
pub(crate) mod svg;

pub use containers::container_page;
pub use run::{render_run, RunPage};

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::lab::LabReport;

/// The name of the page in the output directory.
pub const REPORT_FILE: &str = "report.html";

/// The page of `report` (whose results should carry their journals: `LabOptions::journal`).
pub fn render(report: &LabReport) -> String {
    page::page(report)
}

/// Writes the page into `dir` (created if needed); returns its path.
pub fn write_report(report: &LabReport, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create report directory {}", dir.display()))?;
    let path = dir.join(REPORT_FILE);
    std::fs::write(&path, render(report))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Writes the page of one real-socket run to `path`.
pub fn write_run(page: &RunPage<'_>, path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, render_run(page))
        .with_context(|| format!("cannot write {}", path.display()))
}
