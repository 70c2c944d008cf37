//! What both benches do before measuring: find and snapshot the binaries, a private run
//! directory, signal handlers that stop every loop, and waiting for a quiet machine.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::procfs::loadavg;
use crate::runner::{sleep, STOP};

/// `name` next to the running binary (where cargo puts the other binaries).
pub fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.with_file_name(name))
}

/// Copies `bin` into the run directory, so that a rebuild during the run changes nothing.
pub fn snapshot(bin: &Path, dir: &Path, hint: &str) -> Result<PathBuf> {
    if !bin.is_file() {
        bail!("{} not found: {hint}", bin.display());
    }
    let to = dir.join(bin.file_name().context("binary path without a name")?);
    fs::copy(bin, &to).with_context(|| format!("copy {}", bin.display()))?;
    Ok(to)
}

/// A private run directory (configuration files, logs, binaries), removed on drop.
#[derive(Debug)]
pub struct RunDir(PathBuf);

impl RunDir {
    /// Creates `$TMPDIR/<bench>-<pid>`.
    pub fn create(bench: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("{bench}-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM set [`STOP`]: every loop ends, and the namespaces are cleaned up.
pub fn stop_on_signals() {
    // SAFETY: installing an async-signal-safe handler (one atomic store).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Waits (≤ `max_wait` s) until the 1-minute load average is at most `max_load`; returns the
/// load average at the start and the seconds waited.
pub fn wait_quiet(bench: &str, max_load: f64, max_wait: u64) -> Result<(f64, f64)> {
    let start = Instant::now();
    let first = loadavg()[0];
    let mut warned = false;
    loop {
        let l = loadavg()[0];
        if l <= max_load {
            return Ok((first, start.elapsed().as_secs_f64()));
        }
        if start.elapsed() >= Duration::from_secs(max_wait) {
            eprintln!(
                "{bench}: warning: load average still {l:.2} after {max_wait} s; starting anyway \
                 (results will be noisier)"
            );
            return Ok((first, start.elapsed().as_secs_f64()));
        }
        if !warned {
            eprintln!(
                "{bench}: load average {l:.2} > {max_load}: waiting for a quiet machine (up to {max_wait} s)"
            );
            warned = true;
        }
        sleep(Duration::from_secs(5))?;
    }
}
