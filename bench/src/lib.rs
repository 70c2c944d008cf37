//! `relay-bench`: our Teredo relay against Debian's Miredo relay, Teredo→native and
//! native→Teredo; `server-bench`: our server against `miredo-server`, RS→RA. In network
//! namespaces, with one AF_PACKET generator, alternating in one run (see README.md "Benchmarks" and /work/shared/PERF.md for the method).
//! `versus`: both side by side with `client-sim load` as the generator (RS storm; ICMPv6
//! echo through the relay from qualified Teredo clients).
//!
//! * [`frames`]: addresses and frames (etherparse, correct checksums).
//! * [`afpacket`]: the generator (AF_PACKET, PACKET_QDISC_BYPASS, sendmmsg × 64, token
//!   bucket).
//! * [`search`]: the ≤ 1 % loss throughput search and summaries.
//! * [`topo`]: namespaces (the workspace test kit's `testkit::Netns`), links, devices under
//!   test.
//! * [`runner`]: trust set-up, steps, cells.
//! * [`procfs`]: the counters read from /proc.
//! * [`memory`]: `relay-bench --memory`, a peer table filled through the real path.
//! * [`cli`]: what every binary does around its measurement (exit code, pre-flight checks,
//!   binaries, JSON report, a failed device's log).
//! * [`setup`]: binaries, run directory, signals, CPU pinning, waiting for a quiet machine.
//! * [`tun`]: the bare forwarder's TUN.
//! * [`afxdp`]: `--generator afxdp`, the AF_XDP generator (same frames, same token
//!   bucket).
//! * [`rs`], [`latency`]: `server-bench`'s router solicitations, and the RS→RA latency
//!   run matched by nonce.
//! * [`soak`]: the soak's server load, samples and table.
//! * [`servers`]: starting the servers under test (ours, `miredo-server`).
//! * [`clientsim`]: `client-sim load` as a generator: one run, its report's figures.
//! * [`serverns`]: `versus`' Teredo server for the relay's clients, in its own namespace.
//! * [`versus`]: `versus`' steps and its side-by-side table.

pub mod afpacket;
pub mod afxdp;
pub mod cli;
pub mod clientsim;
pub mod frames;
pub mod latency;
pub mod memory;
pub mod procfs;
pub mod report;
pub mod rs;
pub mod runner;
pub mod search;
pub mod serverns;
pub mod servers;
pub mod setup;
pub mod soak;
pub mod topo;
pub mod tun;
pub mod versus;
pub mod xdp;
