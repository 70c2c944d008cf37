//! `client-sim`: parses the command line, sets up logging and runs [`client_sim::cli::run`].
//! An error is one line on stderr and exit status 1 (clap's usage errors exit with 2);
//! `qualify` has its own statuses for the protocol outcomes (see its `--help`).

use std::process::ExitCode;

use clap::Parser as _;
use client_sim::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    teredo_rt::init_tracing(cli.log_format);
    match client_sim::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("client-sim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
