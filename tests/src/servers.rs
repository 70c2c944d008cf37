//! The two Teredo servers the tests run: ours (`teredo-server`) and Debian's `miredo-server`
//! (the reference), started the same way inside a namespace.

use std::fmt;

use anyhow::{Context as _, Result};

use crate::bins::bin_path;
use crate::miredo::{self, TEREDO_PORT};
use crate::netns::Netns;
use crate::process::{Proc, TestDir};
use crate::topo::{SERVER_PRIMARY, SERVER_SECONDARY};

/// The metrics endpoint of [`ServerImpl::OursXdp`], inside its namespace.
pub const XDP_SERVER_METRICS: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9544),
);

/// Checks from the metrics of [`ServerImpl::OursXdp`] in `ns` that the XDP program answered
/// router solicitations and the user-space server answered none; returns how many, and the
/// exposition.
pub fn assert_answered_in_xdp(ns: &Netns) -> Result<(u64, String)> {
    use crate::metrics::{fetch_in, sum_all};
    let text = fetch_in(ns, XDP_SERVER_METRICS)?;
    let fast = sum_all(&text, "teredo_server_fast_path_router_solicitations_total");
    let slow = sum_all(&text, "teredo_server_router_solicitations_total");
    anyhow::ensure!(
        fast > 0 && slow == 0,
        "router solicitations answered: {fast} in XDP, {slow} in user space"
    );
    Ok((fast, text))
}

/// Attaches the `xdp_pass` program (teredo-fastpath) to every port of `internet`'s bridge, in
/// native mode: a veth takes the frames its peer's XDP program sends back (`XDP_TX`, the fast
/// path's router advertisements) only when it runs an XDP program itself.
pub fn xdp_pass_on_hub(internet: &crate::Internet, dir: &TestDir) -> Result<()> {
    let object = dir.path().join("xdp_pass.bpf.o");
    std::fs::write(&object, teredo_fastpath::pass_object()?)
        .with_context(|| format!("cannot write {}", object.display()))?;
    let object = object.to_str().context("non-UTF-8 test directory")?;
    let hub = internet.hub();
    let links = hub.ip(&["-o", "link", "show", "master", "br0"])?;
    for line in links.lines() {
        let Some(port) = line.split(':').nth(1).map(|n| n.trim().split('@').next()) else {
            continue;
        };
        let port = port.unwrap_or_default();
        hub.ip(&[
            "link", "set", "dev", port, "xdpdrv", "obj", object, "sec", "xdp",
        ])?;
    }
    Ok(())
}

/// A Teredo server implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerImpl {
    /// Our `teredo-server` binary (`--native none`).
    Ours,
    /// Debian's `miredo-server` 1.2.6.
    Miredo,
    /// Our `teredo-server --native none --fast-path xdp`: router solicitations answered by
    /// the XDP program on the server's interface, the rest by the user-space server. Not in
    /// [`Self::ALL`]; the interop tests run it beside the other two.
    OursXdp,
}

impl ServerImpl {
    /// Both.
    pub const ALL: [Self; 2] = [Self::Ours, Self::Miredo];

    /// `teredo-server` or `miredo-server`: the label of its process and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ours => "teredo-server",
            Self::Miredo => "miredo-server",
            Self::OursXdp => "teredo-server-xdp",
        }
    }

    /// Starts the server on [`SERVER_PRIMARY`] / [`SERVER_SECONDARY`] (both already addresses
    /// of `ns`) and waits until it listens on both. Logs: `<label>.*.log` in `dir`.
    pub fn start(self, ns: &Netns, dir: &TestDir) -> Result<Proc> {
        let label = self.as_str();
        match self {
            Self::Miredo => miredo::spawn_server(ns, dir, label, SERVER_PRIMARY, SERVER_SECONDARY),
            Self::Ours => start_ours(ns, dir, "none"),
            Self::OursXdp => {
                let metrics = XDP_SERVER_METRICS.to_string();
                let args = [
                    "--native",
                    "none",
                    "--fast-path",
                    "xdp",
                    "--metrics-addr",
                    &metrics,
                ];
                start_ours_with(ns, dir, label, &args)
            }
        }
    }
}

/// Starts our `teredo-server --native <native>` on [`SERVER_PRIMARY`] / [`SERVER_SECONDARY`]
/// (both already addresses of `ns`) and waits until it listens on both. Logs:
/// `teredo-server.*.log` in `dir`.
pub fn start_ours(ns: &Netns, dir: &TestDir, native: &str) -> Result<Proc> {
    start_ours_with(ns, dir, ServerImpl::Ours.as_str(), &["--native", native])
}

/// Starts our `teredo-server` with `args` after the two addresses, as [`start_ours`] does;
/// `label` names its process and logs.
pub fn start_ours_with(ns: &Netns, dir: &TestDir, label: &str, args: &[&str]) -> Result<Proc> {
    let bin = bin_path("teredo-server")?;
    let (primary, secondary) = (SERVER_PRIMARY.to_string(), SERVER_SECONDARY.to_string());
    let mut all = vec!["--primary", &primary, "--secondary", &secondary];
    all.extend_from_slice(args);
    let mut server = ns.spawn(
        label,
        dir.path(),
        bin.to_str().context("non-UTF-8 binary path")?,
        &all,
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
