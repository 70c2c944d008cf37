//! The bench topology and the devices under test.
//!
//! ```text
//!  namespace gen (CPU0)                               namespace relay (CPU1)
//!  inet0 198.51.100.2/24  ---- veth (IPv4 Internet) ---- inet0 198.51.100.20/24
//!    plays the server .1:3544 and the peers .10:20000+i    device under test :3545
//!  nat0 2001:db8::2/64    ---- veth (native IPv6)   ---- nat0 2001:db8::1/64, forwarding
//!    plays the native host 2001:db8::99                   teredo0 (TUN): 2001::/32
//!    2001::/32 via 2001:db8::1
//! ```
//!
//! The relay reaches the server, the peers and the native host through permanent
//! neighbour entries (the generator's MACs); RPS sends each namespace's receive processing
//! to its own side's CPU (`rps_cpus`: gen 1, relay 2). Devices: our `teredo-relay`
//! (route 2001::/32 via fe80::1), Debian's `miredo` in relay (`cone`) mode (route on-link, as
//! it installs it), the same with the route replaced by `via fe80::1`, and the
//! `bare-forwarder` ceiling; each runs pinned to CPU1 (`taskset -c 1`).

use std::fs;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use testkit::process::{run, tail_file, Proc};
use testkit::{miredo, Netns};

use crate::frames::{
    GEN_INET_MAC, GEN_NATIVE_MAC, GEN_V4, GEN_V6, NATIVE_HOST, PEER_V4, RELAY_INET_MAC,
    RELAY_NATIVE_MAC, RELAY_PORT, RELAY_V4, RELAY_V6, SERVER_V4, WIDE_NET,
};
use crate::procfs;
use crate::rs::{SERVER_PRIMARY, SERVER_SECONDARY};

/// The IPv4 Internet link's interface (same name on both sides).
pub const INET_IF: &str = "inet0";
/// The native IPv6 link's interface (same name on both sides).
pub const NATIVE_IF: &str = "nat0";
/// The devices' TUN.
pub const TUN_IF: &str = "teredo0";
/// CPU of the generator and sink.
pub const GEN_CPU: usize = 0;
/// CPU of the device under test.
pub const RELAY_CPU: usize = 1;

/// The two namespaces and their links.
#[derive(Debug)]
pub struct Topology {
    /// Generator and sink.
    pub gen: Netns,
    /// Device under test (the relay, or the server in [`Topology::build_server`]).
    pub relay: Netns,
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A namespace of the bench (`tt-<pid>-<n>-bench-<role>`) with duplicate address detection
/// off.
fn bench_netns(role: &str) -> Result<Netns> {
    let ns = Netns::new("bench", role)?;
    ns.disable_dad()?;
    Ok(ns)
}

/// Creates the two veth links between `gen` and `dut` (fixed MACs, IPv6 off on the
/// Internet link, both up).
fn create_links(gen: &Netns, dut: &Netns) -> Result<()> {
    for (ifname, gmac, rmac) in [
        (INET_IF, GEN_INET_MAC, RELAY_INET_MAC),
        (NATIVE_IF, GEN_NATIVE_MAC, RELAY_NATIVE_MAC),
    ] {
        run(Command::new("ip").args([
            "link",
            "add",
            ifname,
            "netns",
            gen.name(),
            "address",
            &mac(gmac),
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            dut.name(),
            "address",
            &mac(rmac),
        ]))?;
    }
    // The device's side segments GSO packets (TUN GSO, UDP GSO) in software before they
    // cross the veth, so the generator counts real datagrams, not super-packets.
    for ifname in [INET_IF, NATIVE_IF] {
        dut.exec("ethtool", &["-K", ifname, "tx-udp-segmentation", "off"])
            .context("ethtool -K tx-udp-segmentation off (apt-get install ethtool)")?;
    }
    for ns in [gen, dut] {
        // No IPv6 chatter (MLD, router solicitations) on the IPv4 link.
        ns.sysctl(&format!("net.ipv6.conf.{INET_IF}.disable_ipv6"), "1")?;
        for ifname in [INET_IF, NATIVE_IF] {
            ns.ip(&["link", "set", ifname, "up"])?;
        }
    }
    Ok(())
}

/// Steers each namespace's receive processing to its own side's CPU.
fn set_rps(gen: &Netns, dut: &Netns) -> Result<()> {
    for (ns, cpu) in [(gen, GEN_CPU), (dut, RELAY_CPU)] {
        let mask = format!("{:x}", 1u64 << cpu);
        ns.sh(&format!(
            "echo {mask} > /sys/class/net/{INET_IF}/queues/rx-0/rps_cpus && \
             echo {mask} > /sys/class/net/{NATIVE_IF}/queues/rx-0/rps_cpus"
        ))
        .context("setting RPS masks")?;
    }
    Ok(())
}

impl Topology {
    /// Makes the generator's own kernel the native host: [`NATIVE_HOST`] on its native link,
    /// so that it answers the echo requests the relay forwards there.
    pub fn gen_is_native_host(&self) -> Result<()> {
        self.gen.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{NATIVE_HOST}/64"),
            "dev",
            NATIVE_IF,
            "nodad",
        ])?;
        Ok(())
    }

    /// Creates the namespaces, links, addresses, neighbours, routes and RPS masks.
    pub fn build() -> Result<Self> {
        let gen = bench_netns("gen")?;
        let relay = bench_netns("relay")?;
        create_links(&gen, &relay)?;
        gen.add_addr(INET_IF, &format!("{GEN_V4}/24"))?;
        gen.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{GEN_V6}/64"),
            "dev",
            NATIVE_IF,
            "nodad",
        ])?;
        gen.add_route("2001::/32", &RELAY_V6.to_string())?;
        relay.add_addr(INET_IF, &format!("{RELAY_V4}/24"))?;
        relay.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{RELAY_V6}/64"),
            "dev",
            NATIVE_IF,
            "nodad",
        ])?;
        relay.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        for v4 in [SERVER_V4, PEER_V4] {
            relay.neigh_permanent(INET_IF, &v4.to_string(), &mac(GEN_INET_MAC))?;
        }
        // The memory step's peers (203.0.113.0/24, see `Peer::wide`) are reached via the
        // generator's address: one neighbour entry for all of them.
        relay.neigh_permanent(INET_IF, &GEN_V4.to_string(), &mac(GEN_INET_MAC))?;
        relay.add_route(&format!("{WIDE_NET}/24"), &GEN_V4.to_string())?;
        relay.neigh_permanent(NATIVE_IF, &NATIVE_HOST.to_string(), &mac(GEN_NATIVE_MAC))?;
        set_rps(&gen, &relay)?;
        Ok(Self { gen, relay })
    }

    /// The `server-bench` topology: the same namespaces and links (the device's namespace is
    /// `srv`), the server's two addresses ([`SERVER_PRIMARY`], [`SERVER_SECONDARY`]) on its
    /// Internet link, and a default route via the generator (a permanent neighbour entry),
    /// so that RAs to any client reach the generator's interface. The native link stays
    /// unused.
    pub fn build_server() -> Result<Self> {
        let gen = bench_netns("gen")?;
        let srv = bench_netns("srv")?;
        create_links(&gen, &srv)?;
        gen.add_addr(INET_IF, &format!("{GEN_V4}/24"))?;
        for a in [SERVER_PRIMARY, SERVER_SECONDARY] {
            srv.add_addr(INET_IF, &format!("{a}/24"))?;
        }
        srv.neigh_permanent(INET_IF, &GEN_V4.to_string(), &mac(GEN_INET_MAC))?;
        srv.add_route("default", &GEN_V4.to_string())?;
        set_rps(&gen, &srv)?;
        Ok(Self { gen, relay: srv })
    }
}

/// A device under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Device {
    /// Our `teredo-relay` (route via fe80::1), kernel offloads on (its default).
    Ours,
    /// Our relay with `--offload none`: batched system calls, one packet per TUN write and
    /// per UDP datagram (what the offloads add is the difference to `ours`).
    OursPlain,
    /// Debian's Miredo relay, route on-link as it installs it.
    Miredo,
    /// Miredo with the route replaced by `2001::/32 via fe80::1`.
    MiredoGw,
    /// The bare per-packet forwarder (ceiling).
    Bare,
    /// Ours with `--fast-path xdp`: `teredo-server` (RAs sent by the XDP program) or
    /// `teredo-relay --native-interface nat0` (trusted peers forwarded by XDP). The
    /// generator's ends of the links run `xdp_pass` to take the frames (see `xdp.rs`).
    OursXdp,
    /// No device: the protocol-free XDP program of `bare-xdp` (frames straight back for a
    /// server, out of the other link for a relay), the links' own XDP ceiling.
    BareXdp,
}

impl Device {
    /// Its name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::OursPlain => "ours-plain",
            Self::Miredo => "miredo",
            Self::MiredoGw => "miredo-gw",
            Self::Bare => "bare",
            Self::OursXdp => "ours-xdp",
            Self::BareXdp => "bare-xdp",
        }
    }

    /// Parses [`Device::name`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Ours,
            Self::OursPlain,
            Self::Miredo,
            Self::MiredoGw,
            Self::Bare,
            Self::OursXdp,
            Self::BareXdp,
        ]
        .into_iter()
        .find(|d| d.name() == s)
    }

    /// True when peers must be made trusted through the bubble exchange.
    pub fn needs_trust(self) -> bool {
        !matches!(self, Self::Bare | Self::BareXdp)
    }

    /// True for the devices that run XDP on the device's links (see `xdp.rs`).
    pub fn uses_xdp(self) -> bool {
        matches!(self, Self::OursXdp | Self::BareXdp)
    }
}

/// Where the device binaries are.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `teredo-relay`.
    pub relay: PathBuf,
    /// `bare-forwarder`.
    pub bare: PathBuf,
    /// `bare-xdp` (empty when not needed).
    pub bare_xdp: PathBuf,
    /// `miredo`.
    pub miredo: PathBuf,
    /// Run directory (configuration files, logs).
    pub dir: PathBuf,
    /// Workers of our relay.
    pub workers: usize,
    /// Our relay's `--max-peers` (its default when `None`).
    pub max_peers: Option<u32>,
}

/// A running device; its stdout and stderr go to one log file.
#[derive(Debug)]
pub struct RunningDevice {
    /// Which.
    pub device: Device,
    proc: Proc,
    started: Instant,
    /// Links prepared for XDP ([`crate::xdp::prepare`]), undone by [`RunningDevice::stop`].
    xdp_links: Vec<&'static str>,
}

impl RunningDevice {
    /// Starts `device` in `topo.relay`, pinned to [`RELAY_CPU`], and waits (≤ 10 s) until it
    /// listens on the relay address and 2001::/32 is routed into its TUN (for
    /// [`Device::MiredoGw`], then replaces the route). `peers` sizes the bare forwarder's
    /// table.
    pub fn start(device: Device, topo: &Topology, bins: &Binaries, peers: u32) -> Result<Self> {
        let bind = SocketAddrV4::new(RELAY_V4, RELAY_PORT);
        let label = format!("{}-{peers}", device.name());
        let mut cmd = topo.relay.command("taskset");
        cmd.args(["-c", &RELAY_CPU.to_string()]);
        match device {
            Device::Ours | Device::OursPlain | Device::OursXdp => {
                let offload = if device == Device::OursPlain {
                    "none"
                } else {
                    "all"
                };
                cmd.arg(&bins.relay).args([
                    "--offload",
                    offload,
                    "--bind",
                    &bind.to_string(),
                    "--native",
                    &format!("tun:{TUN_IF}"),
                    "--trust",
                    "strict",
                    "--workers",
                    &bins.workers.to_string(),
                    "--metrics-addr",
                    "127.0.0.1:9100",
                ]);
                if let Some(n) = bins.max_peers {
                    cmd.args(["--max-peers", &n.to_string()]);
                }
                if device == Device::OursXdp {
                    cmd.args(["--fast-path", "xdp", "--native-interface", NATIVE_IF]);
                    // The program's IPv4 route lookup for native→Teredo needs forwarding on
                    // the interface the native packets arrive on (a new namespace may or may
                    // not inherit it from the host).
                    topo.relay
                        .sysctl(&format!("net.ipv4.conf.{NATIVE_IF}.forwarding"), "1")?;
                }
                cmd.env("RUST_LOG", "warn");
            }
            Device::Miredo | Device::MiredoGw => {
                let conf = bins.dir.join("miredo-relay.conf");
                fs::write(&conf, miredo::relay_config(bind, TUN_IF))?;
                cmd.arg(&bins.miredo)
                    .args(["-f", "-c"])
                    .arg(&conf)
                    .arg("-p")
                    .arg(bins.dir.join("miredo.pid"));
            }
            Device::BareXdp => {
                cmd.arg(&bins.bare_xdp).args(crate::xdp::bare_relay_args());
            }
            Device::Bare => {
                cmd.arg(&bins.bare).args([
                    "--bind",
                    &bind.to_string(),
                    "--tun",
                    TUN_IF,
                    "--peers",
                    &peers.to_string(),
                ]);
            }
        }
        let mut d = Self::spawn(device, cmd, &label, &bins.dir)?;
        if device == Device::BareXdp {
            crate::xdp::wait_bare(&mut d)?;
        } else {
            d.wait_ready(topo, &[bind], true)?;
        }
        if device.uses_xdp() {
            d.prepare_xdp(topo, &bins.dir, &[INET_IF, NATIVE_IF])?;
        }
        if device == Device::MiredoGw {
            topo.relay.ip(&crate::tun::gateway_route(TUN_IF))?;
            let routes = topo.relay.ip(&["-6", "route", "show", "2001::/32"])?;
            if routes.lines().count() != 1 || !routes.contains("via fe80::1") {
                bail!("could not replace Miredo's route: {routes}");
            }
        }
        Ok(d)
    }

    /// Spawns `cmd` (a command in the device's namespace) as `device`, its stdout and
    /// stderr going to `<label>.log` in `dir`.
    pub fn spawn(device: Device, cmd: Command, label: &str, dir: &Path) -> Result<Self> {
        let proc = Proc::spawn_one_log(cmd, label, dir)
            .with_context(|| format!("cannot start {}", device.name()))?;
        Ok(Self {
            device,
            proc,
            started: Instant::now(),
            xdp_links: Vec::new(),
        })
    }

    /// Waits (≤ 10 s) until the device listens on every address of `binds` (UDP, in
    /// `topo.relay`) and, with `route`, 2001::/32 is routed into its TUN.
    pub fn wait_ready(
        &mut self,
        topo: &Topology,
        binds: &[SocketAddrV4],
        route: bool,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.proc.try_status()? {
                bail!(
                    "{} exited ({st}) while starting:\n{}",
                    self.device.name(),
                    self.log_tail(20)
                );
            }
            let routed = if route {
                topo.relay
                    .ip(&["-6", "route", "show", "2001::/32", "dev", TUN_IF])
                    .unwrap_or_default()
            } else {
                "not needed".to_owned()
            };
            let bound = topo.relay.udp_bound(binds)?;
            if !routed.trim().is_empty() && bound {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after 10 s (route {routed:?}, UDP bound {bound}):\n{}",
                    self.device.name(),
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Prepares `links` for the device's XDP programs ([`crate::xdp::prepare`]); its stop
    /// undoes it.
    pub fn prepare_xdp(
        &mut self,
        topo: &Topology,
        dir: &Path,
        links: &[&'static str],
    ) -> Result<()> {
        self.xdp_links.extend_from_slice(links);
        crate::xdp::prepare(topo, dir, links)
    }

    /// Fails if the device has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(st) = self.proc.try_status()? {
            bail!(
                "{} exited ({st}) after {:.1} s:\n{}",
                self.device.name(),
                self.started.elapsed().as_secs_f64(),
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// Stops it (SIGTERM, ≤ 3 s, then SIGKILL; then whatever it left in the namespace) and
    /// waits (≤ 3 s) until its TUN is gone, so that the next device can create it.
    pub fn stop(mut self, topo: &Topology) -> Result<()> {
        self.proc.stop_with(libc::SIGTERM, Duration::from_secs(3))?;
        topo.relay.stop_all(Duration::from_secs(2));
        crate::xdp::undo(topo, &self.xdp_links);
        let deadline = Instant::now() + Duration::from_secs(3);
        while topo.relay.ip(&["link", "show", TUN_IF]).is_ok() {
            if Instant::now() > deadline {
                bail!("{TUN_IF} still exists after {} stopped", self.device.name());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The log's last lines.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(self.proc.log_path(), lines)
    }

    /// Its pid (with `taskset`, the device's own: taskset execs it).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

impl Drop for RunningDevice {
    /// Kills a device still running at once (a bench that fails mid-run), where
    /// [`RunningDevice::stop`] asks it to stop first.
    fn drop(&mut self) {
        let _ = self.proc.stop_with(libc::SIGKILL, Duration::from_secs(2));
    }
}

/// Total CPU ticks and RSS (KiB, and the largest process's) of every process in `ns`.
pub fn ns_usage(ns: &Netns) -> (u64, u64, u64) {
    let mut ticks = 0;
    let mut rss = 0;
    let mut largest = 0;
    for pid in ns.pids().unwrap_or_default() {
        ticks += procfs::process_cpu_ticks(pid).unwrap_or(0);
        let r = procfs::vm_rss_kib(pid).unwrap_or(0);
        rss += r;
        largest = largest.max(r);
    }
    (ticks, rss, largest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both topologies build and go away again (namespaces, links, addresses, neighbours,
    /// routes, RPS masks; no traffic).
    #[test]
    fn topologies_build() {
        if !testkit::requirements_met(testkit::function_name!(), true, &["ethtool"]) {
            return;
        }
        for topo in [Topology::build(), Topology::build_server()] {
            let topo = topo.unwrap();
            let names = [topo.gen.name().to_owned(), topo.relay.name().to_owned()];
            assert_eq!(topo.gen.ipv4_addrs(INET_IF).unwrap(), [GEN_V4]);
            drop(topo);
            let list = run(Command::new("ip").args(["netns", "list"])).unwrap();
            for name in names {
                assert!(!list.contains(&name), "{name} left behind");
            }
        }
    }

    #[test]
    fn names_and_keys() {
        for d in [
            Device::Ours,
            Device::Miredo,
            Device::MiredoGw,
            Device::Bare,
            Device::OursXdp,
            Device::BareXdp,
        ] {
            assert_eq!(Device::parse(d.name()), Some(d));
        }
        assert_eq!(Device::parse("x"), None);
        assert_eq!(mac(GEN_INET_MAC), "02:00:00:00:01:01");
    }
}
