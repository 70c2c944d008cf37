//! Shared helpers for the end-to-end tests (the `e2e` test binary in `tests/e2e/`).
//!
//! * [`inproc`]: the server library run in-process inside a namespace; sockets, raw IPv4
//!   sends with forged sources and a packet sniffer inside a namespace.
//! * [`bad_input`]: the bad-input corpus (kinds, builders, expected drop reasons).
//! * [`inproc_relay`]: the relay library run in-process in a namespace, native side a
//!   channel.
//! * [`netns`]: network namespaces that delete themselves (and kill what runs in them) on drop,
//!   an "IPv4 Internet" bridge, veth pairs, addresses, routes, sysctls, nftables.
//! * [`process`]: child processes with log files, stopped on drop; a per-test work directory
//!   that prints those logs when the test panics.
//! * [`bins`]: the workspace binaries, built once per test process.
//! * [`tshark`]: capturing inside a namespace and checking how tshark dissects the capture.
//! * [`miredo`]: Debian's Miredo client and server inside namespaces.
//! * [`servers`]: our `teredo-server` or `miredo-server`, started the same way.
//! * [`client_sim`]: `client-sim qualify --json` inside a namespace, its report parsed.
//! * [`client_ping`]: `client-sim ping --json` inside a namespace, its report parsed.
//! * [`nat_recipes`]: kernel NAT kinds (NAT.md §9 nftables recipes) for a NAT router.
//! * [`topo`]: Internet hosts, NAT routers (nftables) and the addresses the tests use.
//! * [`relay`]: the full topology with our relay: server, relay with TUN, native IPv6 host.
//! * [`miredo_relay`]: Debian's Miredo as a Teredo relay (`RelayType cone`) in a namespace.
//! * [`wait`]: polling with a deadline.
//! * [`require_root!`] / [`require_tools!`]: skip a test loudly when the machine lacks root or a
//!   tool — or fail it when `CI` is set, since CI must never skip.
//!
//! # Parallel tests
//! Every topology brings its own "Internet": a bridge inside a namespace of its own
//! ([`netns::Internet`]). Two tests may therefore use the very same addresses (198.51.100.1 …)
//! without ever seeing each other's packets, and namespace names carry the test name, the pid and
//! a counter. No global lock is needed; the tests of the one binary run in parallel.

use std::io::Write as _;
use std::path::PathBuf;

pub mod bad_input;
pub mod bins;
pub mod client_ping;
pub mod client_sim;
pub mod inproc;
pub mod inproc_relay;
pub mod miredo;
pub mod miredo_relay;
pub mod nat_recipes;
pub mod netns;
pub mod process;
pub mod relay;
pub mod servers;
pub mod topo;
pub mod tshark;
pub mod wait;

pub use bins::bin_path;
pub use netns::{Internet, Netns};
pub use process::{Proc, TestDir};

/// True when this process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when the environment variable `CI` is set to anything but "", "0" or "false".
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE"))
}

/// Finds an executable by name in `PATH`, then in `/usr/sbin` and `/sbin` (root tools such as
/// `miredo` and `nft` live there and are missing from some users' `PATH`).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Checks what a test needs from the machine: root (`root`) and the executables in `tools`.
///
/// Returns true when all is there. Otherwise prints `SKIPPED: <test> needs …` to stderr and
/// returns false — unless `CI` is set ([`in_ci`]), where it panics: CI must never skip.
pub fn requirements_met(test: &str, root: bool, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if root && !is_root() {
        missing.push("root (network namespaces)".to_owned());
    }
    for tool in tools {
        if find_tool(tool).is_none() {
            missing.push(format!("the `{tool}` executable"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("SKIPPED: {test} needs {}", missing.join(", "));
    assert!(!in_ci(), "{msg}; CI is set, and CI must never skip");
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests, and a
    // skip must be seen.
    let _ = writeln!(std::io::stderr(), "\n*** {msg} ***");
    false
}

/// The name of the enclosing function, without the crate name (`interop::my_test`).
#[macro_export]
macro_rules! function_name {
    () => {{
        fn f() {}
        let name = ::std::any::type_name_of_val(&f);
        let name = name.strip_suffix("::f").unwrap_or(name);
        name.split_once("::").map_or(name, |(_, rest)| rest)
    }};
}

/// Returns from the enclosing test unless it runs as root and every named executable exists
/// (see [`requirements_met`]: skip loudly, or panic under `CI`).
///
/// `require_root!();` or `require_root!("miredo", "tshark");`
#[macro_export]
macro_rules! require_root {
    ($($tool:expr),* $(,)?) => {
        if !$crate::requirements_met($crate::function_name!(), true, &[$($tool),*]) {
            return;
        }
    };
}

/// Returns from the enclosing test unless every named executable exists (no root needed).
#[macro_export]
macro_rules! require_tools {
    ($($tool:expr),+ $(,)?) => {
        if !$crate::requirements_met($crate::function_name!(), false, &[$($tool),+]) {
            return;
        }
    };
}

/// Unwraps a result in a test, panicking with the whole error chain (`{:#}`).
///
/// Panicking (rather than returning the error from the test) matters: the [`TestDir`] of the
/// test is then dropped while unwinding and prints the logs of every process the test ran.
#[track_caller]
pub fn check<T>(result: anyhow::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e:#}"))
}
