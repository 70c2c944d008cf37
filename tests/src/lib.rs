//! Shared helpers for the end-to-end tests (the `e2e` test binary in `tests/e2e/`).
//!
//! * [`inproc`]: the server library run in-process inside a namespace; sockets, raw IPv4
//!   sends with forged sources and a packet sniffer inside a namespace.
//! * [`bad_input`]: the bad-input corpus (kinds, builders, expected drop reasons).
//! * [`inproc_relay`]: the relay library run in-process in a namespace, native side a
//!   channel. Both start, read and stop the library the same way (`inproc_component`).
//! * [`tshark`]: capturing inside a namespace and checking how tshark dissects the capture.
//! * [`servers`]: our `teredo-server` or `miredo-server`, started the same way.
//! * [`client_sim`]: `client-sim qualify --json` inside a namespace, its report parsed.
//! * [`client_ping`]: `client-sim ping --json` inside a namespace, its report parsed.
//! * [`client_respond`]: `client-sim respond --json` inside a namespace: a client that answers
//!   echo requests to its Teredo address, its two reports parsed.
//! * [`topo`]: Internet hosts, NAT routers (nftables) and the addresses the tests use.
//! * [`relay`]: the full topology with our relay: server, relay with TUN, native IPv6 host.
//! * [`conform_lab`]: that topology with the tester as native host, and the implementations
//!   `client-sim conform` is pointed at; [`conform_run`]: the run and its outputs read back;
//!   [`conform_pcap`]: tshark's reading of its pcap.
//! * [`misbehaving`]: a server on the sans-IO core with switchable faults (the target whose
//!   checks must fail).
//!
//! The generic parts (namespaces, processes, waiting, metrics, Miredo, nftables NAT recipes,
//! binaries, the loud skip) are the workspace's test kit, `teredo-testkit`, re-exported here
//! under their old paths: [`netns`], [`process`], [`wait`], [`metrics`], [`miredo`], [`nft`],
//! [`bins`], [`require_root!`] / [`require_tools!`].
//!
//! # Parallel tests
//! Every topology brings its own "Internet": a bridge inside a namespace of its own
//! ([`Internet`]). Two tests may therefore use the very same addresses (198.51.100.1 …)
//! without ever seeing each other's packets, and namespace names carry the test name, the pid and
//! a counter. No global lock is needed; the tests of the one binary run in parallel.

pub mod bad_input;
pub mod client_ping;
pub mod client_respond;
pub mod client_sim;
pub mod conform_lab;
pub mod conform_pcap;
pub mod conform_run;
pub mod inproc;
mod inproc_component;
pub mod inproc_relay;
pub mod misbehaving;
pub mod relay;
pub mod servers;
pub mod topo;
pub mod tshark;

pub use testkit::{
    bin_path, check, find_tool, function_name, in_ci, is_root, require_root, require_tools,
    requirements_met, Internet, Netns, Proc, TestDir,
};
pub use testkit::{bins, browser, metrics, miredo, netns, nft, process, wait};
