//! `relay-bench`: our Teredo relay against Debian's Miredo relay, Teredo→native and
//! native→Teredo, in network namespaces, with one AF_PACKET generator, alternating in one
//! run (see README.md "Benchmarks" and /work/shared/PERF.md for the method).
//!
//! * [`frames`]: addresses and frames (etherparse, correct checksums).
//! * [`afpacket`]: the generator (AF_PACKET, PACKET_QDISC_BYPASS, sendmmsg × 64, token
//!   bucket).
//! * [`search`]: the ≤ 1 % loss throughput search and summaries.
//! * [`netns`], [`topo`]: namespaces, links, devices under test.
//! * [`runner`]: trust set-up, steps, cells.
//! * [`procfs`]: the counters read from /proc.
//! * [`tun`]: the bare forwarder's TUN.
//! * [`soak`]: the soak's server load, samples and table.

pub mod afpacket;
pub mod frames;
pub mod netns;
pub mod procfs;
pub mod report;
pub mod runner;
pub mod search;
pub mod soak;
pub mod topo;
pub mod tun;
