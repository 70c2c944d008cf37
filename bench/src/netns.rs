//! Network namespaces with cleanup, through iproute2 (`ip netns add`, `ip -n NS …`,
//! `ip netns exec NS …`), and `setns(2)` to run generator code inside one.
//!
//! Names are `rb-<pid>-<role>`; namespaces of a `relay-bench` process that no longer exists
//! are removed when a new one starts. Dropping a [`Netns`] stops every process still inside
//! it (SIGTERM, then SIGKILL, by pid: only processes this bench started live there) and
//! deletes it.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// Prefix of the namespaces this bench creates.
pub const PREFIX: &str = "rb-";

/// Runs `cmd` to completion; its stdout, or an error quoting its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sends `sig` to `pid` (errors ignored: the process may be gone).
pub fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// One network namespace.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `rb-<pid>-<role>` with `lo` up and duplicate address detection off.
    pub fn create(role: &str) -> Result<Self> {
        let name = format!("{PREFIX}{}-{role}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        Ok(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME args…`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// `ip netns exec NAME program`, ready for arguments.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program args…` inside the namespace; its stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        run(self.command(program).args(args))
    }

    /// Runs a shell snippet inside the namespace (with the namespace's own /sys).
    pub fn sh(&self, script: &str) -> Result<String> {
        self.exec("sh", &["-c", script])
    }

    /// Sets a per-namespace sysctl.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Moves the calling thread into the namespace.
    pub fn enter(&self) -> Result<()> {
        let path = format!("/var/run/netns/{}", self.name);
        let f = File::open(&path).with_context(|| format!("open {path}"))?;
        // SAFETY: a valid descriptor of a network namespace file.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({}): {}", self.name, std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                self.enter()?;
                f()
            });
            match t.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// The pids of the processes inside.
    pub fn pids(&self) -> Vec<u32> {
        run(Command::new("ip").args(["netns", "pids", &self.name]))
            .map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The pids of the processes inside, except this one (whose thread may have entered the
    /// namespace).
    fn other_pids(&self) -> Vec<u32> {
        let me = std::process::id();
        self.pids().into_iter().filter(|p| *p != me).collect()
    }

    /// Stops every process inside (but this one): SIGTERM, up to `grace`, then SIGKILL
    /// (bounded waits).
    pub fn stop_all(&self, grace: Duration) {
        for (sig, wait) in [
            (libc::SIGTERM, grace),
            (libc::SIGKILL, Duration::from_secs(2)),
        ] {
            let pids = self.other_pids();
            if pids.is_empty() {
                return;
            }
            for p in pids {
                signal(p, sig);
            }
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline && !self.other_pids().is_empty() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(3));
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("relay-bench: warning: {e:#}");
        }
    }
}

/// The calling thread's network namespace, to return to: [`Netns::enter`] this thread
/// somewhere, and dropping the guard brings it back.
#[derive(Debug)]
pub struct ReturnHere(File);

impl ReturnHere {
    /// Remembers the calling thread's current network namespace.
    pub fn remember() -> Result<Self> {
        Ok(Self(
            File::open("/proc/thread-self/ns/net").context("open /proc/thread-self/ns/net")?,
        ))
    }
}

impl Drop for ReturnHere {
    fn drop(&mut self) {
        // SAFETY: a valid descriptor of a network namespace file.
        if unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "relay-bench: warning: cannot return to the original network namespace: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Removes `rb-<pid>-…` namespaces whose bench process no longer exists.
pub fn remove_stale() {
    let Ok(list) = run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("relay-bench: removing stale namespace {name}");
            drop(Netns {
                name: name.to_owned(),
            });
        }
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

/// True when running as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}
