//! Network namespaces with RAII cleanup, and a bridge that plays "the IPv4 Internet".
//!
//! Everything goes through iproute2 (`ip netns add`, `ip -n NS …`, `ip netns exec NS …`), so a
//! failing step is reproducible by hand. Names are `tt-<pid>-<n>-<test>-<role>`; namespaces left
//! behind by a test process that died (SIGKILL, power loss) are removed the next time a test
//! process creates its first namespace.
//!
//! Interface names are limited to 15 bytes, but they only have to be unique inside their
//! namespace: veth pairs are created directly in their two target namespaces (`ip link add A
//! netns X type veth peer name B netns Y`), never in the root namespace, so parallel tests
//! can all call their interfaces `eth0`.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::process::{run, sanitize, signal, Proc};

/// Prefix of every namespace the harness creates.
pub const PREFIX: &str = "tt-";

/// A network namespace, deleted on drop after every process inside it has been stopped
/// (SIGTERM, then SIGKILL after 3 s). Its loopback interface is up.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `tt-<pid>-<n>-<test>-<role>` and brings `lo` up.
    pub fn new(test: &str, role: &str) -> Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        static CLEAN: Once = Once::new();
        CLEAN.call_once(remove_stale);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut test = sanitize(test);
        test.truncate(48);
        let name = format!(
            "{PREFIX}{}-{n}-{test}-{}",
            std::process::id(),
            sanitize(role)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns list` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec <name> <program>`, ready for more arguments.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `program args…` inside the namespace to completion and returns its stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        run(self.command(program).args(args))
    }

    /// Like [`Netns::exec`], with `stdin` fed to the program.
    pub fn exec_with_stdin(&self, program: &str, args: &[&str], stdin: &str) -> Result<String> {
        let mut cmd = self.command(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).context("write stdin")?;
        }
        let out = child.wait_with_output().context("waitpid")?;
        if !out.status.success() {
            bail!(
                "{cmd:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `program args…` inside the namespace; logs go to `<label>.*.log` in `log_dir`.
    pub fn spawn(&self, label: &str, log_dir: &Path, program: &str, args: &[&str]) -> Result<Proc> {
        let mut cmd = self.command(program);
        cmd.args(args);
        Proc::spawn(cmd, label, log_dir)
    }

    /// `ip -n <name> args…`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Brings an interface up.
    pub fn link_up(&self, dev: &str) -> Result<()> {
        self.ip(&["link", "set", dev, "up"]).map(drop)
    }

    /// Adds an address in CIDR notation (`198.51.100.1/24`) to `dev`.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "add", cidr, "dev", dev]).map(drop)
    }

    /// Adds a route: `dest` (`default`, `10.0.0.0/8` …) via the gateway `via`.
    pub fn add_route(&self, dest: &str, via: &str) -> Result<()> {
        self.ip(&["route", "add", dest, "via", via]).map(drop)
    }

    /// Sets a (per-namespace) sysctl, e.g. `net.ipv4.ip_forward` = `1`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Loads an nftables ruleset (`nft -f -`) inside the namespace.
    pub fn nft(&self, ruleset: &str) -> Result<()> {
        self.exec_with_stdin("nft", &["-f", "-"], ruleset)
            .with_context(|| format!("nft ruleset:\n{ruleset}"))
            .map(drop)
    }

    /// Creates a veth pair: `ifname` here, `peer_ifname` in `peer`; both ends up.
    pub fn veth(&self, ifname: &str, peer: &Self, peer_ifname: &str) -> Result<()> {
        run(Command::new("ip").args([
            "link",
            "add",
            ifname,
            "netns",
            &self.name,
            "type",
            "veth",
            "peer",
            "name",
            peer_ifname,
            "netns",
            &peer.name,
        ]))?;
        self.link_up(ifname)?;
        peer.link_up(peer_ifname)
    }

    /// The pids of the processes inside the namespace (`ip netns pids`).
    pub fn pids(&self) -> Result<Vec<u32>> {
        let out = run(Command::new("ip").args(["netns", "pids", &self.name]))?;
        Ok(out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// The UDP sockets open inside the namespace (`ss -H -u -a -n -p`).
    pub fn udp_sockets(&self) -> Result<Vec<UdpSocketInfo>> {
        let out = self.exec("ss", &["-H", "-u", "-a", "-n", "-p"])?;
        Ok(out.lines().filter_map(UdpSocketInfo::parse_ss).collect())
    }

    /// The IPv4 addresses of `dev`.
    pub fn ipv4_addrs(&self, dev: &str) -> Result<Vec<Ipv4Addr>> {
        let out = self.ip(&["-4", "-o", "addr", "show", "dev", dev])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "inet")?;
                words.next()?.split('/').next()?.parse().ok()
            })
            .collect())
    }

    fn stop_all(&self) {
        for (sig, grace) in [(libc::SIGTERM, 3), (libc::SIGKILL, 2)] {
            let Ok(pids) = self.pids() else { return };
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                signal(pid, sig);
            }
            let deadline = Instant::now() + Duration::from_secs(grace);
            while Instant::now() < deadline && self.pids().is_ok_and(|p| !p.is_empty()) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.stop_all();
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Removes `tt-<pid>-…` namespaces whose test process no longer exists.
fn remove_stale() {
    let Ok(list) = run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing stale namespace {name}");
            // Re-adopt it: dropping a `Netns` stops what runs inside and deletes it.
            drop(Netns {
                name: name.to_owned(),
            });
        }
    }
}

/// One line of `ss -u -a -n -p`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpSocketInfo {
    /// Local address and port (`0.0.0.0` for a wildcard bind).
    pub local: SocketAddr,
    /// Name of the first process holding the socket, if `ss` could tell.
    pub process: Option<String>,
    /// Its pid.
    pub pid: Option<u32>,
}

impl UdpSocketInfo {
    /// Parses `UNCONN 0 0 198.51.100.2:3544 0.0.0.0:* users:(("miredo-server",pid=5199,fd=5))`.
    pub fn parse_ss(line: &str) -> Option<Self> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (host, port) = words.get(3)?.rsplit_once(':')?;
        let host = host
            .split('%')
            .next()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let ip: IpAddr = if host == "*" {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            host.parse().ok()?
        };
        let users = words.get(5).copied().unwrap_or("");
        let process = users
            .split_once("((\"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(p, _)| p.to_owned());
        let pid = users
            .split_once("pid=")
            .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok());
        Some(Self {
            local: SocketAddr::new(ip, port.parse().ok()?),
            process,
            pid,
        })
    }
}

/// A namespace holding one bridge, `br0`: the shared "IPv4 Internet" segment of a topology.
/// Nodes join it with [`Internet::attach`]. Being a namespace of its own, each topology's
/// Internet is invisible to every other test.
#[derive(Debug)]
pub struct Internet {
    hub: Netns,
    ports: AtomicU32,
}

impl Internet {
    /// Creates the hub namespace and its bridge.
    pub fn new(test: &str) -> Result<Self> {
        let hub = Netns::new(test, "inet")?;
        hub.ip(&["link", "add", "br0", "type", "bridge"])?;
        hub.link_up("br0")?;
        Ok(Self {
            hub,
            ports: AtomicU32::new(0),
        })
    }

    /// The hub namespace (to capture on `br0`, say).
    pub fn hub(&self) -> &Netns {
        &self.hub
    }

    /// Plugs `node` into the bridge through a veth pair whose node end is `ifname` (up,
    /// without addresses: add them with [`Netns::add_addr`]).
    pub fn attach(&self, node: &Netns, ifname: &str) -> Result<()> {
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        self.hub.veth(&port, node, ifname)?;
        self.hub
            .ip(&["link", "set", &port, "master", "br0"])
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ss_lines() {
        let s = UdpSocketInfo::parse_ss(
            r#"UNCONN 0      0       198.51.100.2:3544      0.0.0.0:*    users:(("miredo-server",pid=5199,fd=5))"#,
        )
        .unwrap();
        assert_eq!(s.local, "198.51.100.2:3544".parse().unwrap());
        assert_eq!(s.process.as_deref(), Some("miredo-server"));
        assert_eq!(s.pid, Some(5199));
        let s = UdpSocketInfo::parse_ss("UNCONN 0 0 [::]:3545 [::]:*").unwrap();
        assert_eq!(s.local, "[::]:3545".parse().unwrap());
        assert_eq!(s.process, None);
        let s = UdpSocketInfo::parse_ss("UNCONN 0 0 0.0.0.0%eth0:68 0.0.0.0:*").unwrap();
        assert_eq!(s.local, "0.0.0.0:68".parse().unwrap());
        let s = UdpSocketInfo::parse_ss("UNCONN 0 0 *:5353 *:*").unwrap();
        assert_eq!(s.local.port(), 5353);
    }
}
