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
                // The generator's veth end takes the frames sent back by XDP only when it
                // runs an XDP program itself.
                let pass = bins.dir.join("xdp_pass.bpf.o");
                fs::write(&pass, teredo_fastpath::pass_object()?)
                    .with_context(|| format!("write {}", pass.display()))?;
                let pass = pass.to_str().context("non-UTF-8 run directory")?;
                topo.gen.ip(&[
                    "link", "set", "dev", INET_IF, "xdpdrv", "obj", pass, "sec", "xdp",
                ])?;
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
        Device::OursPlain | Device::MiredoGw | Device::Bare => {
            bail!("{} is not a server", device.name())
        }
    }
    let mut dev = RunningDevice::spawn(device, cmd, &label, &bins.dir)?;
    dev.wait_ready(
        topo,
        &[
            SocketAddrV4::new(SERVER_PRIMARY, TEREDO_PORT),
            SocketAddrV4::new(SERVER_SECONDARY, TEREDO_PORT),
        ],
        false,
    )?;
    if device == Device::OursXdp {
        pin_xdp_napi(topo)?;
    }
    Ok(dev)
}
/// The XDP program runs in the NAPI poll of the server's veth, by default in the softirq of
/// the CPU that sent the frame: the generator's. Threaded NAPI gives that poll a kernel
/// thread of its own, pinned here to [`RELAY_CPU`] like the other servers, so that the fast
/// path gets the same one core (its CPU time is not in the server's process figures).
fn pin_xdp_napi(topo: &Topology) -> Result<()> {
    let prefix = format!("napi/{INET_IF}-");
    let threads = || -> Vec<u32> {
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.starts_with(&prefix))
            })
            .collect()
    };
    let before = threads();
    topo.relay
        .sh(&format!("echo 1 > /sys/class/net/{INET_IF}/threaded"))?;
    let new: Vec<u32> = threads()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if new.is_empty() {
        bail!("no NAPI thread appeared for {INET_IF} in the server's namespace");
    }
    for pid in new {
        let out = std::process::Command::new("taskset")
            .args(["-pc", &RELAY_CPU.to_string(), &pid.to_string()])
            .output()
            .context("taskset")?;
        if !out.status.success() {
            bail!(
                "cannot pin NAPI thread {pid}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}
