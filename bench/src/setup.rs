//! What the benches do before measuring: find and snapshot the binaries, a private run
//! directory, signal handlers that stop every loop, CPU pinning, and waiting for a quiet
//! machine.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
pub use testkit::bins::{sibling, snapshot};

use crate::procfs::loadavg;
use crate::runner::{sleep, STOP};

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

/// Pins the calling thread (and what it spawns later) to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    // SAFETY: `cpu_set_t` is plain data; CPU_ZERO/CPU_SET only write inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) != 0 {
            bail!(
                "sched_setaffinity(CPU{cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
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
