//! XDP around a device under test.
//!
//! * A veth takes the frames its peer's XDP program sends to it (`XDP_TX` back, or
//!   `XDP_REDIRECT` from the other link) only when it runs an XDP program itself, so the
//!   generator's ends of the links run `xdp_pass` while an XDP device is under test.
//! * The device's XDP program runs in its veth's NAPI poll, by default in the softirq of the
//!   CPU that sent the frame: the generator's. Threaded NAPI gives each poll a kernel thread,
//!   pinned here to [`RELAY_CPU`], so that the fast path gets the same one core as the
//!   user-space devices (its CPU time is then not in the device's process figures).
//! * `bare-xdp` (bench/src/bin/bare-xdp.rs) attaches the protocol-free program of
//!   [`teredo_fastpath::BareXdp`]: the same links' bare `XDP_TX` / `XDP_REDIRECT` rate, the
//!   ceiling any fast path here can reach.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::frames::{GEN_INET_MAC, GEN_NATIVE_MAC, RELAY_INET_MAC, RELAY_NATIVE_MAC};
use crate::topo::{RunningDevice, Topology, INET_IF, NATIVE_IF, RELAY_CPU};

/// What `bare-xdp` prints once every program is attached.
pub const BARE_READY: &str = "bare-xdp: attached";

/// Attaches `xdp_pass` to the generator's end of each link in `links` and pins the device
/// side's NAPI threads to [`RELAY_CPU`]. Call once the device has attached its programs.
pub fn prepare(topo: &Topology, dir: &Path, links: &[&str]) -> Result<()> {
    let pass = dir.join("xdp_pass.bpf.o");
    fs::write(&pass, teredo_fastpath::pass_object()?)
        .with_context(|| format!("write {}", pass.display()))?;
    let pass = pass.to_str().context("non-UTF-8 run directory")?;
    for link in links {
        topo.gen.ip(&[
            "link", "set", "dev", link, "xdpdrv", "obj", pass, "sec", "xdp",
        ])?;
        pin_napi(topo, link)?;
    }
    Ok(())
}

/// Undoes [`prepare`]: no program on the generator's ends, softirq NAPI again (best effort:
/// the veth may have dropped NAPI with the device's program).
pub fn undo(topo: &Topology, links: &[&str]) {
    for link in links {
        let _ = topo.gen.ip(&["link", "set", "dev", link, "xdpdrv", "off"]);
        let _ = topo
            .relay
            .sh(&format!("echo 0 > /sys/class/net/{link}/threaded"));
    }
}

/// Threaded NAPI for `link` in the device's namespace, its new thread pinned to
/// [`RELAY_CPU`].
fn pin_napi(topo: &Topology, link: &str) -> Result<()> {
    let prefix = format!("napi/{link}-");
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
    // Off first: a veth keeps its `threaded` setting when its NAPI goes away with one
    // program and comes back with the next, whose thread then exists before `before`.
    let _ = topo
        .relay
        .sh(&format!("echo 0 > /sys/class/net/{link}/threaded"));
    let before = threads();
    // Right after a program is attached or removed the write can fail with EIO while the
    // veth's NAPI is being set up or torn down: a few more tries.
    let on = format!("echo 1 > /sys/class/net/{link}/threaded");
    let mut tries = 0;
    while let Err(e) = topo.relay.sh(&on) {
        tries += 1;
        if tries == 5 {
            return Err(e.context(format!("threaded NAPI for {link}, {tries} tries")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let new: Vec<u32> = threads()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if new.is_empty() {
        bail!("no NAPI thread appeared for {link} in the device's namespace");
    }
    for pid in new {
        let out = Command::new("taskset")
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

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `bare-xdp` arguments for a relay: each link's frames out of the other link, to the
/// generator's MAC there.
pub fn bare_relay_args() -> Vec<String> {
    vec![
        "--redirect".into(),
        format!(
            "{INET_IF}={NATIVE_IF},{},{}",
            mac(GEN_NATIVE_MAC),
            mac(RELAY_NATIVE_MAC)
        ),
        "--redirect".into(),
        format!(
            "{NATIVE_IF}={INET_IF},{},{}",
            mac(GEN_INET_MAC),
            mac(RELAY_INET_MAC)
        ),
    ]
}

/// `bare-xdp` arguments for a server: every frame straight back.
pub fn bare_server_args() -> Vec<String> {
    vec!["--tx".into(), INET_IF.into()]
}

/// Waits (≤ 10 s) until `bare-xdp` says it attached its programs.
pub fn wait_bare(dev: &mut RunningDevice) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        dev.ensure_running()?;
        if dev.log_tail(20).contains(BARE_READY) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("bare-xdp not attached after 10 s:\n{}", dev.log_tail(20));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
