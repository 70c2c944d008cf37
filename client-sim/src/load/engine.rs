//! `--engine`: which code moves the steady-state data packets.
//!
//! * `tokio`: one task per client, one `sendto`/`recvfrom` per packet, RTTs from the time
//!   the task reads the answer (includes our own queueing and scheduling).
//! * `mmsg`: one dedicated thread (pinned with `--cpu`) for every client: prebuilt payloads
//!   stamped in place, `sendmmsg` per client run (merged into one `UDP_SEGMENT` send where
//!   the kernel takes it), `recvmmsg` over an epoll set, RTTs from the kernel's receive
//!   timestamps (`SO_TIMESTAMPNS`). It drives `--ceiling` and the Teredo trials of
//!   `--target` and `--udp-echo`: there the clients qualify and warm up in their tokio
//!   tasks, then lend the thread their socket and the datagram their state machine emitted
//!   for a probe (`load/handoff.rs`). Not `--pairs`: there every client must also answer its
//!   peer's echo requests, which takes its state machine.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A data-path engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// A tokio task per client.
    Tokio,
    /// One batched thread (`sendmmsg`/`recvmmsg`, kernel timestamps).
    Mmsg,
}

impl Engine {
    /// Every engine, fastest first.
    pub const ALL: [Self; 2] = [Self::Mmsg, Self::Tokio];

    /// Its `--engine` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tokio => "tokio",
            Self::Mmsg => "mmsg",
        }
    }

    /// Why this engine cannot run `ceiling` mode (or a Teredo run, with `pairs` for
    /// `--pairs`) here; `None` when it can.
    pub fn unavailable(self, ceiling: bool, pairs: bool) -> Option<&'static str> {
        match self {
            Self::Tokio => None,
            Self::Mmsg if !cfg!(target_os = "linux") => {
                Some("needs Linux (sendmmsg, recvmmsg, SO_TIMESTAMPNS)")
            }
            Self::Mmsg if pairs && !ceiling => Some(
                "--pairs needs every client's state machine to answer its peer's echo requests \
                 during the trial; use --engine tokio",
            ),
            Self::Mmsg => None,
        }
    }

    /// The engine to use: `asked`, or the fastest available; a one-line error when the
    /// engine asked for cannot run.
    pub fn choose(asked: Option<Self>, ceiling: bool, pairs: bool) -> anyhow::Result<Self> {
        match asked {
            Some(e) => match e.unavailable(ceiling, pairs) {
                None => Ok(e),
                Some(why) => anyhow::bail!("--engine {e} is not available: {why}"),
            },
            None => Ok(Self::ALL
                .into_iter()
                .find(|e| e.unavailable(ceiling, pairs).is_none())
                .unwrap_or(Self::Tokio)),
        }
    }

    /// Where the RTTs' receive times come from.
    pub fn timestamps(self) -> &'static str {
        match self {
            Self::Tokio => "user space (monotonic clock when the task reads the answer)",
            Self::Mmsg => "kernel (SO_TIMESTAMPNS, CLOCK_REALTIME on arrival at the socket)",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        cpu < libc::CPU_SETSIZE as usize,
        "--cpu {cpu}: above the highest CPU number"
    );
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it (cpu < CPU_SETSIZE), and
    // sched_setaffinity reads the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) != 0 {
            anyhow::bail!(
                "cannot pin the generator to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_fastest_available_and_errors_are_one_line() {
        assert_eq!(Engine::choose(None, true, false).unwrap(), Engine::Mmsg);
        assert_eq!(Engine::choose(None, false, false).unwrap(), Engine::Mmsg);
        assert_eq!(Engine::choose(None, false, true).unwrap(), Engine::Tokio);
        assert_eq!(
            Engine::choose(Some(Engine::Tokio), true, false).unwrap(),
            Engine::Tokio
        );
        assert_eq!(
            Engine::choose(Some(Engine::Mmsg), false, false).unwrap(),
            Engine::Mmsg
        );
        let e = Engine::choose(Some(Engine::Mmsg), false, true)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--engine mmsg is not available: "), "{e}");
        assert!(e.contains("--pairs"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert_eq!(
            serde_json::to_value(Engine::Mmsg).unwrap(),
            serde_json::json!("mmsg")
        );
    }

    #[test]
    fn pinning() {
        assert!(pin_current_thread(usize::MAX).is_err());
        // The first CPU this process may run on (the test thread ends afterwards).
        // SAFETY: cpu_set_t is plain data; sched_getaffinity writes into the set we own.
        let first = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set),
                0
            );
            (0..libc::CPU_SETSIZE as usize).find(|c| libc::CPU_ISSET(*c, &set))
        };
        let first = first.expect("some CPU");
        std::thread::spawn(move || pin_current_thread(first).unwrap())
            .join()
            .unwrap();
    }
}
