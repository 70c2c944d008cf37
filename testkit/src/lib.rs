//! The dev-only test kit shared by every test suite and by `bench/`: one place for what the
//! namespace tests, the end-to-end suite and the benches need around the code under test.
//!
//! * [`netns`]: network namespaces that delete themselves (and stop what runs in them) on
//!   drop; exec/spawn inside, threads inside (`setns`), veth pairs, addresses, routes,
//!   sysctls, an "IPv4 Internet" bridge.
//! * [`nft`]: kernel NAT kinds as nftables rulesets (NAT.md §9 recipes).
//! * [`packet`]: receiving from an `AF_PACKET` socket.
//! * [`process`]: child processes with log files, stopped on drop; waiting for their UDP
//!   ports; a per-test work directory that prints those logs when the test panics.
//! * [`wait`]: polling with a deadline; the next datagram on a socket.
//! * [`metrics`]: scraping a `/metrics` endpoint (or an in-process registry) and reading a
//!   series.
//! * [`miredo`]: Debian's Miredo client, server and relay: configs, starting, waiting.
//! * [`bins`]: paths of the workspace's built binaries.
//! * [`browser`]: Debian's headless Chromium on our HTML pages (DOM, console, screenshots).
//! * [`require`]: skip a test loudly when the machine lacks root or a tool — or fail it when
//!   `CI` is set, since CI must never skip ([`require_root!`], [`require_tools!`]).

pub mod bins;
pub mod browser;
pub mod metrics;
pub mod miredo;
pub mod netns;
pub mod nft;
pub mod packet;
pub mod process;
pub mod require;
pub mod wait;

pub use bins::bin_path;
pub use netns::{Internet, Netns};
pub use process::{Proc, TestDir};
pub use require::{find_tool, in_ci, is_root, requirements_met, root_or_skip};

/// Unwraps a result in a test, panicking with the whole error chain (`{:#}`).
///
/// Panicking (rather than returning the error from the test) matters: the [`TestDir`] of the
/// test is then dropped while unwinding and prints the logs of every process the test ran.
#[track_caller]
pub fn check<T>(result: anyhow::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e:#}"))
}
