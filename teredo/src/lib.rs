//! Sans-IO Teredo protocol core (RFC 4380 with the RFC 5991 updates and RFC 6081 trailers).
//!
//! Nothing here touches a socket, a clock or a global RNG: state machines are fed bytes,
//! addresses and an `Instant`, and return what to send. The binaries (`teredo-server`, …)
//! are thin tokio drivers around this crate, and the in-process lab drives the very same
//! state machines over a simulated network.

pub mod addr;
pub mod client;
pub mod drop_reason;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod peer;
pub mod rate_limit;
pub mod relay;
pub mod server;
pub mod wire;

pub use addr::TeredoAddr;
pub use drop_reason::DropReason;
pub use io::{InPlace, Kind, Local, Output};
