//! The two Teredo servers the tests run: ours (`teredo-server`) and Debian's `miredo-server`
//! (the reference), started the same way inside a namespace.

use std::fmt;

use anyhow::{Context as _, Result};

use crate::bins::bin_path;
use crate::miredo::{self, TEREDO_PORT};
use crate::netns::Netns;
use crate::process::{Proc, TestDir};
use crate::topo::{SERVER_PRIMARY, SERVER_SECONDARY};

/// A Teredo server implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerImpl {
    /// Our `teredo-server` binary (`--native none`).
    Ours,
    /// Debian's `miredo-server` 1.2.6.
    Miredo,
}

impl ServerImpl {
    /// Both.
    pub const ALL: [Self; 2] = [Self::Ours, Self::Miredo];

    /// `teredo-server` or `miredo-server`: the label of its process and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ours => "teredo-server",
            Self::Miredo => "miredo-server",
        }
    }

    /// Starts the server on [`SERVER_PRIMARY`] / [`SERVER_SECONDARY`] (both already addresses
    /// of `ns`) and waits until it listens on both. Logs: `<label>.*.log` in `dir`.
    pub fn start(self, ns: &Netns, dir: &TestDir) -> Result<Proc> {
        let label = self.as_str();
        match self {
            Self::Miredo => miredo::spawn_server(ns, dir, label, SERVER_PRIMARY, SERVER_SECONDARY),
            Self::Ours => start_ours(ns, dir, "none"),
        }
    }
}

/// Starts our `teredo-server --native <native>` on [`SERVER_PRIMARY`] / [`SERVER_SECONDARY`]
/// (both already addresses of `ns`) and waits until it listens on both. Logs:
/// `teredo-server.*.log` in `dir`.
pub fn start_ours(ns: &Netns, dir: &TestDir, native: &str) -> Result<Proc> {
    let bin = bin_path("teredo-server")?;
    let mut server = ns.spawn(
        ServerImpl::Ours.as_str(),
        dir.path(),
        bin.to_str().context("non-UTF-8 binary path")?,
        &[
            "--primary",
            &SERVER_PRIMARY.to_string(),
            "--secondary",
            &SERVER_SECONDARY.to_string(),
            "--native",
            native,
        ],
    )?;
    miredo::wait_udp_bound(
        ns,
        &mut server,
        &[SERVER_PRIMARY, SERVER_SECONDARY],
        TEREDO_PORT,
    )?;
    Ok(server)
}

impl fmt::Display for ServerImpl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
