//! The fast path's errors: each one line, naming what failed.

/// Why the fast path cannot be set up or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This build has no XDP program (clang or the libbpf headers were missing).
    #[error("{0}")]
    NotBuilt(&'static str),
    /// The server configuration asks for something the program does not do.
    #[error("--fast-path xdp cannot {0}")]
    Unsupported(&'static str),
    /// The kernel refused the program or a map (no BPF, no CAP_BPF, verifier).
    #[error("cannot load the XDP program: {0}")]
    Load(String),
    /// The program could not be attached to an interface.
    #[error("cannot attach the XDP program to {interface}: {reason}")]
    Attach {
        /// The interface.
        interface: String,
        /// What the kernel said.
        reason: String,
    },
    /// Reading or writing a map failed.
    #[error("XDP map {map}: {reason}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// What failed.
        reason: String,
    },
    /// No interface holds one of the server's addresses.
    #[error("no interface to attach the XDP program for {addr}: {reason}")]
    NoInterface {
        /// The server address.
        addr: std::net::Ipv4Addr,
        /// What failed.
        reason: String,
    },
    /// `BPF_PROG_TEST_RUN` failed.
    #[error("BPF_PROG_TEST_RUN: {0}")]
    TestRun(std::io::Error),
}
