//! The Teredo server's kernel fast path: an XDP program that answers valid router
//! solicitations with their router advertisements in place (`XDP_TX`), and passes everything
//! else to the user-space server ([`teredo::server::Server`]), which stays the reference.
//!
//! The program (`src/bpf/teredo_server.bpf.c`) is C built by `build.rs` with clang and the
//! libbpf headers when they are there at build time; without them the crate still builds and
//! [`XdpServer::load`] returns [`Error::NotBuilt`] with the one-line reason. It is a second
//! implementation of the core's RS → RA rewrite, so `tests/differential.rs` runs the same
//! frames through it (`BPF_PROG_TEST_RUN`, [`XdpServer::test_run`]) and through the core and
//! compares the output bytes and the counters.
//!
//! What the program answers, exactly: Ethernet, IPv4 without options or fragmentation and
//! with a valid header checksum, UDP to one of the server's two addresses and its port with a
//! valid (or zero) checksum and exact lengths, from a global unicast source that is not the
//! server itself; then an optional nonce-only auth header and an IPv6 router solicitation
//! (ff02::2 from a link-local source, hop limit 255, code 0, 8 to 64 bytes, valid checksum)
//! and nothing after it. The RA goes back out of the same interface, MAC addresses swapped,
//! from the other server address when the RS carries the cone flag.
//!
//! Counters are per-CPU ([`Counters`]): RSs answered by local address and cone flag, and
//! packets passed by [`PassReason`].
//!
//! The relay's fast path ([`XdpRelay`], `src/bpf/teredo_relay.bpf.c`) forwards the packets
//! of trusted peers in both directions and passes the rest to the user-space relay; see
//! the crate's README.

mod abi;
mod bare;
mod error;
mod interfaces;
mod mode;
mod program;
mod relay;
mod test_run;

pub use abi::{Counters, FastPathConfig, PassReason};
pub use bare::{BareMode, BareXdp};
pub use error::Error;
pub use interfaces::interface_of;
pub use mode::FastPathMode;
pub use program::{AttachMode, XdpServer};
pub use relay::{
    monotonic_ns, PeerEntry, RelayCounters, RelayFastPathConfig, RelayPassReason, XdpRelay,
    MAX_TUN_MTU,
};
pub use test_run::XdpAction;

/// An ELF object with one XDP program, `xdp_pass` (section `xdp`), that passes every frame:
/// for the far end of a veth pair, which takes the frames the fast path sends back (`XDP_TX`)
/// only when it runs an XDP program itself. Write it to a file and attach it with
/// `ip link set dev PEER xdpdrv obj FILE sec xdp`.
pub fn pass_object() -> Result<&'static [u8], Error> {
    program::pass_object()
}

/// Whether this build carries the XDP program; `Err` holds the one-line reason it does not
/// (e.g. "built without the XDP program: clang not found at build time").
pub fn built() -> Result<(), Error> {
    program::object().map(|_| ())
}
