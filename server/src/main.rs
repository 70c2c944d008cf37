//! `teredo-server`: parses the command line, sets up logging and runs
//! [`teredo_server::run`] until SIGINT or SIGTERM. An error is one line on stderr and exit
//! code 1 (clap's own usage errors exit with 2).

use std::process::ExitCode;

use clap::Parser as _;
use teredo_rt::Shutdown;
use teredo_server::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    teredo_rt::init_tracing(args.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the tokio runtime: {e}"))
        .and_then(|rt| {
            // The signal handlers need the runtime: install them inside it.
            rt.block_on(async {
                teredo_server::run(args.to_options(), Shutdown::on_signals()).await
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("teredo-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
