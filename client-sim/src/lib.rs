//! Teredo client simulator: client profiles behind a simulated NAT, the in-process lab, and a
//! real-socket qualification driver.
//!
//! * The RFC 4787 NAT model (a pure state machine) is the `netsim` crate (`teredo-netsim`).
//! * [`sim`]: a simulated IPv4 Internet in one process (virtual time, no sockets).
//! * [`load`]: `client-sim load`, many clients from one process (qualify storm, data
//!   trials, `--find-max`, `--ceiling`), with a report and `loadgen_*` metrics.
//! * [`lab`]: every profile × NAT preset and named scenarios on [`sim`], with expected
//!   outcomes; `client-sim lab`. [`scenario`] holds what a scenario is and must show,
//!   [`labnet`] the relay and ping runs the lab and its [`faults`] share.
//! * [`qualify`]: one client over real UDP sockets, optionally behind the NAT model;
//!   `client-sim qualify`.
//! * [`ping`]: `client-sim ping` / `udp-echo`: qualify, then echo through the data path.
//! * [`report`]: the `netsh interface teredo show state`-like status block.
//! * [`pcap`]: captures of the simulated Internet.
//! * [`packets`]: the ICMPv6 echo and UDP packets of the data path.
//! * [`cli`]: the command line (`src/main.rs` only parses it and calls [`cli::run`]).

pub mod cli;
pub mod faults;
pub mod lab;
pub mod labnet;
pub mod load;
pub mod packets;
pub mod pcap;
pub mod ping;
pub mod qualify;
pub mod report;
pub mod scenario;
pub mod sim;

/// The NAT model, which moved to the `netsim` crate. Kept so that code still naming
/// `crate::nat::…` / `client_sim::nat::…` builds; new code imports `netsim` directly.
#[doc(hidden)]
pub use netsim as nat;
