//! Child processes with log files, waiting for their UDP ports, and the per-test work
//! directory that holds those logs.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// How long [`Proc::stop`] waits after SIGTERM before it sends SIGKILL. Miredo needs about 1.7 s
/// to take its tunnel down (it runs the client hook once more).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs a command to completion and returns its stdout; a non-zero exit is an error that
/// quotes the command and its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    stdout_of(cmd, &out)
}

/// The stdout of `cmd`, which ended with `out`; a non-zero exit is an error that quotes the
/// command and its stderr.
pub fn stdout_of(cmd: &Command, out: &Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a positive pid only signals that one process; no memory is involved.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// A running child process whose stdout and stderr go to `<label>.stdout.log` /
/// `<label>.stderr.log` in a directory (or both to `<label>.log`, [`Proc::spawn_one_log`]).
/// Dropping it stops it ([`Proc::stop`]).
#[derive(Debug)]
pub struct Proc {
    label: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and its output sent to log files in `log_dir`.
    pub fn spawn(mut cmd: Command, label: &str, log_dir: &Path) -> Result<Self> {
        let stdout = log_dir.join(format!("{label}.stdout.log"));
        let stderr = log_dir.join(format!("{label}.stderr.log"));
        let out = File::create(&stdout).with_context(|| format!("create {}", stdout.display()))?;
        let err = File::create(&stderr).with_context(|| format!("create {}", stderr.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot spawn {label}: {cmd:?}"))?;
        Ok(Self {
            label: label.to_owned(),
            child,
            stdout,
            stderr,
            status: None,
        })
    }

    /// Spawns `cmd` with stdin closed and both its stdout and stderr sent to one file,
    /// `<label>.log` in `log_dir` (the benches' device logs: one file in time order).
    pub fn spawn_one_log(mut cmd: Command, label: &str, log_dir: &Path) -> Result<Self> {
        let log = log_dir.join(format!("{label}.log"));
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().context("dup log file")?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot spawn {label}: {cmd:?}"))?;
        Ok(Self {
            label: label.to_owned(),
            child,
            stdout: log.clone(),
            stderr: log,
            status: None,
        })
    }

    /// The label given at spawn time.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The process id (with `ip netns exec`, the program's own pid: ip execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file its stderr goes to (with [`Proc::spawn_one_log`], its one log).
    pub fn log_path(&self) -> &Path {
        &self.stderr
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read(&self.stdout)
            .map_or_else(|_| String::new(), |b| String::from_utf8_lossy(&b).into())
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read(&self.stderr)
            .map_or_else(|_| String::new(), |b| String::from_utf8_lossy(&b).into())
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().context("waitpid")?;
        }
        Ok(self.status)
    }

    /// An error quoting the process's stderr if it has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.try_status()? {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited early ({status}); stderr:\n{}",
                self.label,
                tail(&self.stderr(), 40)
            ),
        }
    }

    /// Sends SIGTERM (or `sig`) and waits up to `grace` for the exit, then SIGKILLs.
    pub fn stop_with(&mut self, sig: libc::c_int, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_status()? {
            return Ok(status);
        }
        signal(self.pid(), sig);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let status = self.child.wait().context("waitpid")?;
        self.status = Some(status);
        Ok(status)
    }

    /// SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.stop_with(libc::SIGTERM, STOP_GRACE)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` lines of the file at `path` ("" if it cannot be read).
pub fn tail_file(path: &Path, n: usize) -> String {
    tail(&fs::read_to_string(path).unwrap_or_default(), n)
}

/// A scratch directory for one test: configs, pid files, logs, captures.
///
/// Removed on drop — except when the test is panicking: then it is kept, and the tail of every
/// `*.log` file in it is printed to stderr (libtest shows it with the failure).
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `$TMPDIR/teredo-tests-<uid>/<test>-<pid>-<n>`.
    pub fn new(test: &str) -> Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{n}", sanitize(test), std::process::id());
        // SAFETY: getuid(2) has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        // Per user: a root run must not leave a directory that a later unprivileged run
        // cannot write into.
        let path = std::env::temp_dir()
            .join(format!("teredo-tests-{uid}"))
            .join(name);
        if path.exists() {
            fs::remove_dir_all(&path).with_context(|| format!("remove {}", path.display()))?;
        }
        fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a file inside the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let path = self.join(name);
        fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    fn dump_logs(&self) {
        eprintln!(
            "--- test failed; its files are kept in {}",
            self.path.display()
        );
        let Ok(entries) = fs::read_dir(&self.path) else {
            return;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = fs::read(&log).map(|b| String::from_utf8_lossy(&b).into_owned());
            let text = text.unwrap_or_default();
            if !text.trim().is_empty() {
                eprintln!("--- {} (last 40 lines)\n{}", log.display(), tail(&text, 40));
            }
        }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Keeps `[A-Za-z0-9_-]`, maps everything else (`::` of test paths) to `_`.
pub(crate) fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::wait_for;

    #[test]
    fn procs_log_and_stop() {
        let dir = TestDir::new("testkit_procs_log_and_stop").unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exec sleep 30"]);
        let mut p = Proc::spawn(cmd, "sh", dir.path()).unwrap();
        wait_for("the output", Duration::from_secs(5), || {
            Ok((p.stdout() == "out\n" && p.stderr() == "err\n").then_some(()))
        })
        .unwrap();
        p.ensure_running().unwrap();
        assert!(!p
            .stop_with(libc::SIGTERM, Duration::from_secs(5))
            .unwrap()
            .success());
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2"]);
        let mut p = Proc::spawn_one_log(cmd, "one", dir.path()).unwrap();
        assert!(p.stop_with(0, Duration::from_secs(5)).unwrap().success());
        assert_eq!(p.stdout(), "out\nerr\n");
        assert_eq!(tail_file(&dir.join("one.log"), 1), "err");
        assert!(p.ensure_running().is_err());
    }

    #[test]
    fn run_quotes_stderr() {
        assert_eq!(run(Command::new("echo").arg("hi")).unwrap(), "hi\n");
        let e = run(Command::new("sh").args(["-c", "echo nope >&2; exit 3"])).unwrap_err();
        assert!(format!("{e:#}").contains("nope"), "{e:#}");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(sanitize("a::b c"), "a__b_c");
    }
}
