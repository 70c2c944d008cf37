//! `teredo-relay`: parses the command line, sets up logging and runs [`teredo_relay::run`]
//! until SIGINT or SIGTERM, on a multi-threaded runtime with one thread per worker. An error
//! is one line on stderr and exit code 1 (clap's own usage errors exit with 2).

use std::process::ExitCode;

use clap::Parser as _;
use teredo_relay::cli::Args;
use teredo_rt::Shutdown;

fn main() -> ExitCode {
    let args = Args::parse();
    teredo_rt::init_tracing(args.log_format);
    let options = args.to_options();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.workers.clamp(1, teredo_relay::cli::MAX_THREADS))
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the tokio runtime: {e}"))
        .and_then(|rt| {
            // The signal handlers need the runtime: install them inside it.
            rt.block_on(async { teredo_relay::run(options, Shutdown::on_signals()).await })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("teredo-relay: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
