//! `client-sim conform`: points the harness at any Teredo server or relay and reports, check
//! by check, which RFC clause it keeps or breaks, with the datagrams as evidence.
//!
//! * [`spec`]: what a check is (id, RFC clause, level); [`outcome`]: what it found.
//! * [`server`] and [`relay`]: the catalogue, one file per group of checks.
//! * [`ctx`]: the sockets a check sends and receives on, and the trace they record;
//!   [`packets`]: the datagrams checks build and the views they read answers through.
//! * [`target`] and [`cli`]: what is tested, with what; [`run`]: runs the checks.
//! * [`report`] (table, JSON), [`junit`], [`pcap`], [`expect`] (baselines per
//!   implementation): what comes out.

pub mod cli;
pub mod ctx;
pub mod expect;
pub mod junit;
pub mod outcome;
pub mod packets;
pub mod pcap;
pub mod relay;
pub mod report;
pub mod run;
pub mod server;
pub mod spec;
pub mod target;

use std::fmt::Write as _;

use anyhow::Context as _;

pub use cli::ConformArgs;
pub use outcome::{Outcome, Verdict};
pub use report::Report;
pub use spec::{Check, Level, Role, Spec};

/// Every check, server checks first, in id order.
pub fn catalogue() -> Vec<Check> {
    let mut all: Vec<Check> = server::checks();
    all.extend(relay::checks());
    all
}

/// The catalogue as text (`--list`).
pub fn list_text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let s = &c.spec;
        let _ = writeln!(
            out,
            "{} {:<6} {:<15} {} — {}\n     {}: \"{}\"\n     sends: {}\n     expects: {}",
            s.id,
            s.role.as_str(),
            s.level.as_str(),
            s.title,
            s.rfc,
            s.rfc,
            s.clause,
            s.sends,
            s.expects
        );
    }
    out
}

/// The checks `args` selects for the devices it names.
pub fn select(args: &ConformArgs, all: &[Check]) -> anyhow::Result<Vec<Check>> {
    let ids: Vec<&str> = all.iter().map(|c| c.spec.id).collect();
    for id in args.only.iter().chain(&args.skip) {
        anyhow::ensure!(
            ids.contains(&id.as_str()),
            "no check {id:?} (see client-sim conform --list)"
        );
    }
    Ok(all
        .iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|id| id == c.spec.id))
        .filter(|c| !args.skip.iter().any(|id| id == c.spec.id))
        .filter(|c| match c.spec.role {
            Role::Server => args.server.is_some(),
            Role::Relay => args.relay.is_some(),
        })
        .copied()
        .collect())
}

/// Runs `client-sim conform`; returns the exit status.
pub fn run_conform(args: &ConformArgs) -> anyhow::Result<u8> {
    let all = catalogue();
    if args.list {
        print!("{}", list_text(&all));
        return Ok(0);
    }
    let target = args.target()?;
    let ids: Vec<&str> = all.iter().map(|c| c.spec.id).collect();
    let expectations = args
        .expect
        .as_deref()
        .map(|p| expect::Expectations::load(p, &ids))
        .transpose()?;
    let checks = select(args, &all)?;
    anyhow::ensure!(!checks.is_empty(), "no check selected");
    eprintln!(
        "conform: {} checks against{}{} from {}{}",
        checks.len(),
        target
            .server
            .map(|s| format!(" server {} / {} port {}", s.primary, s.secondary, s.port))
            .unwrap_or_default(),
        target
            .relay
            .map(|r| format!(" relay {}", r.addr))
            .unwrap_or_default(),
        target.local,
        if target.raw {
            " (raw sockets available)"
        } else {
            " (no raw sockets)"
        },
    );
    let results = run::run_checks(&target, &checks, args.seed, true);
    let mut report = Report::new(target, args.strict, results);
    if let (Some(e), Some(name)) = (&expectations, &args.implementation) {
        report.expectations = Some(e.compare(name, &report.checks)?);
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, junit::junit(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.pcap {
        let (bytes, left_out) = pcap::pcap(&report);
        std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        if left_out > 0 {
            eprintln!("conform: {left_out} datagrams could not be written to the pcap");
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(report.exit_status())
}
