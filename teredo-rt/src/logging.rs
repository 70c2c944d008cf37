//! `tracing` initialisation shared by every binary.
//!
//! One function so that `RUST_LOG` and `--log-format json` behave the same in the server, the
//! relay and client-sim: logs go to stderr (stdout stays free for reports such as client-sim's
//! load numbers), the filter comes from `RUST_LOG` with `info` as default, and a second call
//! (the lab and tests start several components in one process) is harmless.

use std::io::IsTerminal as _;

use tracing::Subscriber;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// Output format of the log lines, selectable on the command line (`--log-format json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (ANSI colours only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global `tracing` subscriber: stderr, `format`, filter from `RUST_LOG`
/// (default `info`; invalid directives are reported on stderr and skipped). Records of the
/// `log` crate are forwarded too.
///
/// Idempotent: if a global subscriber is already installed (an earlier call, or a test
/// harness), nothing changes. Returns whether this call installed the subscriber.
pub fn init_tracing(format: LogFormat) -> bool {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let ansi = std::io::stderr().is_terminal();
    subscriber(format, filter, std::io::stderr, ansi)
        .try_init()
        .is_ok()
}

/// The subscriber [`init_tracing`] installs, with the filter and writer as parameters so tests
/// can capture its output.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(builder.json().with_ansi(false).finish()),
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use clap::ValueEnum as _;
    use tracing_subscriber::EnvFilter;

    use super::{init_tracing, subscriber, LogFormat};

    /// An `io::Write` appending to a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn capture(format: LogFormat) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let sub = subscriber(
            format,
            EnvFilter::new("info"),
            move || writer.clone(),
            false,
        );
        tracing::subscriber::with_default(sub, || {
            tracing::info!(peer = "192.0.2.1:3544", "qualified");
            tracing::debug!("filtered out");
        });
        out.text()
    }

    #[test]
    fn json_format_writes_one_object_per_line() {
        let out = capture(LogFormat::Json);
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        assert!(
            lines[0].starts_with('{') && lines[0].ends_with('}'),
            "{out}"
        );
        assert!(lines[0].contains(r#""level":"INFO""#), "{out}");
        assert!(lines[0].contains(r#""message":"qualified""#), "{out}");
        assert!(lines[0].contains(r#""peer":"192.0.2.1:3544""#), "{out}");
    }

    #[test]
    fn text_format_writes_plain_lines() {
        let out = capture(LogFormat::Text);
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("INFO"), "{out}");
        assert!(out.contains("qualified peer=\"192.0.2.1:3544\""), "{out}");
        assert!(!out.contains('\x1b'), "ANSI escapes: {out:?}");
    }

    #[test]
    fn init_when_already_set_is_a_no_op() {
        // Stand-in global subscriber whose output libtest captures (this is the only test
        // here that touches the global default).
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        assert!(!init_tracing(LogFormat::Text));
        assert!(!init_tracing(LogFormat::Json));
        tracing::info!("still logging after repeated init");
    }

    #[test]
    fn value_enum_names() {
        assert_eq!(LogFormat::from_str("text", true), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_str("JSON", true), Ok(LogFormat::Json));
        assert!(LogFormat::from_str("xml", true).is_err());
        assert_eq!(LogFormat::default(), LogFormat::Text);
    }
}
