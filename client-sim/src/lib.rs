//! Teredo client simulator: client profiles behind a simulated NAT, the in-process lab, and a
//! real-socket qualification driver.
//!
//! * The RFC 4787 NAT model and the simulated IPv4 Internet ([`netsim::sim`]: one process,
//!   virtual time, no sockets), with its captures and echo packets, are the `netsim` crate
//!   (`teredo-netsim`).
//! * [`load`]: `client-sim load`, many clients from one process (qualify storm, data
//!   trials, `--find-max`, `--ceiling`), with a report and `loadgen_*` metrics.
//! * [`lab`]: every profile × NAT preset and named scenarios on [`netsim::sim`], with expected
//!   outcomes; `client-sim lab`. [`scenario`] holds what a scenario is and must show,
//!   [`labnet`] the relay and ping runs the lab and its [`faults`] share.
//! * [`html`]: `lab --html`, the report page with the matrix and a ladder diagram per
//!   scenario; [`lab_junit`]: `lab --junit`.
//! * [`qualify`]: one client over real UDP sockets, optionally behind the NAT model;
//!   `client-sim qualify`.
//! * [`ping`]: `client-sim ping` / `udp-echo`: qualify, then echo through the data path.
//! * [`respond`]: `client-sim respond`: qualify, then answer echo requests to the Teredo
//!   address for a bounded time (the receiving end of a Teredo-to-Teredo ping).
//! * [`wire_trace`]: what those real-socket runs exchanged; [`html::write_run`] draws it
//!   (`--html`), [`run_junit`] is their `--junit`,
//!   [`run_files`] writes both.
//! * [`container_report`]: the container lab's verdict (`docker/lab/runner.sh`) as a page
//!   and JUnit XML; `client-sim container-report`.
//! * [`prom_check`]: `client-sim prom-check`, the console page of the lab's Prometheus and
//!   every expression on it (and on the Grafana dashboard) checked for data after a load run.
//! * [`report`]: the `netsh interface teredo show state`-like status block.
//! * [`conform`]: `client-sim conform`, the conformance catalogue against any server or relay.
//! * [`cli`]: the command line (`src/main.rs` only parses it and calls [`cli::run`]).

pub mod cli;
pub mod conform;
pub mod connectivity;
pub mod container_report;
pub mod faults;
pub mod hold;
pub mod html;
pub mod junit;
pub mod lab;
pub mod lab_junit;
pub mod labnet;
pub mod load;
pub mod ping;
pub mod prom_check;
pub mod qualify;
pub mod report;
pub mod respond;
pub mod run_files;
pub mod run_junit;
pub mod scenario;
pub mod wire_trace;
