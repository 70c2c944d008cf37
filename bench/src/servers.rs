//! The Teredo servers under test: our `teredo-server` or Debian's `miredo-server` on the
//! device's namespace's two addresses ([`SERVER_PRIMARY`], [`SERVER_SECONDARY`]), pinned to
//! [`RELAY_CPU`] (`server-bench`, and `versus`' server part).

use std::fs;
use std::net::SocketAddrV4;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use testkit::miredo;

use crate::frames::TEREDO_PORT;
use crate::rs::{SERVER_PRIMARY, SERVER_SECONDARY};
use crate::topo::{Device, RunningDevice, Topology, INET_IF, RELAY_CPU};

/// What starting a server takes.
#[derive(Clone, Debug)]
pub struct ServerBins {
    /// `teredo-server`.
    pub ours: PathBuf,
    /// `miredo-server`.
    pub miredo: PathBuf,
    /// `bare-xdp` (empty when not needed).
    pub bare_xdp: PathBuf,
    /// Run directory (configuration files, logs).
    pub dir: PathBuf,
}

/// Starts our server or miredo-server in `topo.relay` on the two addresses, pinned to
/// [`RELAY_CPU`], and waits until both sockets are bound.
pub fn start_server(device: Device, topo: &Topology, bins: &ServerBins) -> Result<RunningDevice> {
    let label = format!("{}-server", device.name());
    let mut cmd = topo.relay.command("taskset");
    cmd.args(["-c", &RELAY_CPU.to_string()]);
    match device {
        Device::Ours | Device::OursXdp => {
            cmd.arg(&bins.ours).args([
                "--primary",
                &SERVER_PRIMARY.to_string(),
                "--secondary",
                &SERVER_SECONDARY.to_string(),
                "--native",
                "none",
            ]);
            if device == Device::OursXdp {
                cmd.args(["--fast-path", "xdp"]);
            }
            cmd.env("RUST_LOG", "warn");
        }
        Device::Miredo => {
            let conf = bins.dir.join("miredo-server.conf");
            fs::write(
                &conf,
                miredo::server_config(SERVER_PRIMARY, SERVER_SECONDARY),
            )
            .with_context(|| format!("write {}", conf.display()))?;
            cmd.arg(&bins.miredo)
                .args(["-f", "-c"])
                .arg(&conf)
                .arg("-p")
                .arg(bins.dir.join("miredo-server.pid"));
        }
        Device::BareXdp => {
            cmd.arg(&bins.bare_xdp).args(crate::xdp::bare_server_args());
        }
        Device::OursPlain | Device::MiredoGw | Device::Bare => {
            bail!("{} is not a server", device.name())
        }
    }
    let mut dev = RunningDevice::spawn(device, cmd, &label, &bins.dir)?;
    if device == Device::BareXdp {
        crate::xdp::wait_bare(&mut dev)?;
    } else {
        dev.wait_ready(
            topo,
            &[
                SocketAddrV4::new(SERVER_PRIMARY, TEREDO_PORT),
                SocketAddrV4::new(SERVER_SECONDARY, TEREDO_PORT),
            ],
            false,
        )?;
    }
    if device.uses_xdp() {
        dev.prepare_xdp(topo, &bins.dir, &[INET_IF])?;
    }
    Ok(dev)
}
