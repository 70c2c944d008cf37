//! Network namespaces with RAII cleanup, and a bridge that plays "the IPv4 Internet".
//!
//! Everything goes through iproute2 (`ip netns add`, `ip -n NS …`, `ip netns exec NS …`), so a
//! failing step is reproducible by hand; in-process code enters a namespace with `setns(2)` on
//! a thread of its own ([`Netns::run_in`], [`Netns::thread`], [`Netns::block_on`]). Names are
//! `tt-<pid>-<n>-<test>-<role>`; namespaces left behind by a process that died (SIGKILL, power
//! loss) are removed the next time a process creates its first namespace.
//!
//! Interface names are limited to 15 bytes, but they only have to be unique inside their
//! namespace: veth pairs are created directly in their two target namespaces (`ip link add A
//! netns X type veth peer name B netns Y`), never in the root namespace, so parallel tests
//! can all call their interfaces `eth0`.

use std::fs::File;
use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::process::{run, sanitize, signal, stdout_of, tail, Proc};
use crate::wait::wait_for;

/// Prefix of every namespace the kit creates.
pub const PREFIX: &str = "tt-";

/// How long [`Netns`]'s drop waits after SIGTERM before it SIGKILLs what is left inside.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// A network namespace, deleted on drop after every process inside it (but this one) has
/// been stopped (SIGTERM, then SIGKILL after [`STOP_GRACE`]). Its loopback interface is up.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// [`Netns::new`] with the addresses `addrs` (each `/prefix_len`) on `lo`: one namespace
    /// that holds a whole small lab (server, relay and clients bound to their own
    /// documentation addresses).
    pub fn with_lo_addrs(
        test: &str,
        role: &str,
        addrs: &[impl std::fmt::Display],
        prefix_len: u8,
    ) -> Result<Self> {
        let ns = Self::new(test, role)?;
        for a in addrs {
            ns.add_addr("lo", &format!("{a}/{prefix_len}"))?;
        }
        Ok(ns)
    }

    /// Creates `tt-<pid>-<n>-<test>-<role>` and brings `lo` up.
    pub fn new(test: &str, role: &str) -> Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        remove_stale();
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

    /// The file `ip netns add` created (`/run/netns/NAME`), for `setns(2)`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Turns duplicate address detection off for every interface (IPv6 addresses usable at
    /// once; the benches' fixed topologies have no duplicates to detect).
    pub fn disable_dad(&self) -> Result<()> {
        self.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        self.sysctl("net.ipv6.conf.default.accept_dad", "0")
    }

    /// Moves the calling thread into the namespace (sockets it creates from now on belong
    /// there). See [`ReturnHere`] to come back.
    pub fn enter(&self) -> Result<()> {
        enter(&self.path())
    }

    /// Runs `f` on a scoped thread that entered the namespace first; sockets `f` creates belong
    /// to the namespace for their whole life and may be used from any thread afterwards. A
    /// panic in `f` is resumed on the caller.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = self.path();
        std::thread::scope(|s| {
            let thread = s.spawn(move || {
                enter(&path)?;
                f()
            });
            match thread.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs `f` on a new (detached) thread that entered the namespace first; panics there if
    /// it cannot enter.
    pub fn thread<T, F>(&self, f: F) -> JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path).unwrap_or_else(|e| panic!("{e:#}"));
            f()
        })
    }

    /// Runs the future `f()` makes on a new thread inside the namespace, with a current-thread
    /// tokio runtime, until it completes; a panic there is resumed on the caller.
    pub fn block_on<F, Fut>(&self, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let thread = self.thread(move || runtime().block_on(f()));
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
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
        stdout_of(&cmd, &out)
    }

    /// Starts `program args…` inside the namespace; logs go to `<label>.*.log` in `log_dir`.
    pub fn spawn(&self, label: &str, log_dir: &Path, program: &str, args: &[&str]) -> Result<Proc> {
        let mut cmd = self.command(program);
        cmd.args(args);
        Proc::spawn(cmd, label, log_dir)
    }

    /// Runs a shell snippet inside the namespace (`ip netns exec` gives it the namespace's own
    /// `/sys`).
    pub fn sh(&self, script: &str) -> Result<String> {
        self.exec("sh", &["-c", script])
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

    /// Adds every address of `cidrs` to `dev` (e.g. the documentation addresses on `lo`).
    pub fn add_addrs(&self, dev: &str, cidrs: &[&str]) -> Result<()> {
        cidrs.iter().try_for_each(|cidr| self.add_addr(dev, cidr))
    }

    /// Adds a route: `dest` (`default`, `10.0.0.0/8` …) via the gateway `via`.
    pub fn add_route(&self, dest: &str, via: &str) -> Result<()> {
        self.ip(&["route", "add", dest, "via", via]).map(drop)
    }

    /// A permanent neighbour entry: `addr` (IPv4 or IPv6) is at link-layer address `lladdr` on
    /// `dev` — no ARP or neighbour discovery (the benches' generator answers neither).
    pub fn neigh_permanent(&self, dev: &str, addr: &str, lladdr: &str) -> Result<()> {
        self.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            lladdr,
            "dev",
            dev,
            "nud",
            "permanent",
        ])
        .map(drop)
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

    /// True when a UDP socket is bound to every address of `addrs` inside the namespace (read
    /// from `/proc/thread-self/net/udp` on a thread inside: no process started). A wildcard
    /// (0.0.0.0) socket does not count.
    pub fn udp_bound(&self, addrs: &[SocketAddrV4]) -> Result<bool> {
        let keys: Vec<String> = addrs.iter().map(|a| proc_net_udp_key(*a)).collect();
        self.run_in(|| {
            let table = std::fs::read_to_string("/proc/thread-self/net/udp").unwrap_or_default();
            Ok(keys.iter().all(|k| table.contains(k.as_str())))
        })
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

    /// The pids of the processes inside, except this one (a thread of ours may have entered
    /// the namespace: the whole process then shows up in `ip netns pids`).
    fn other_pids(&self) -> Result<Vec<u32>> {
        let me = std::process::id();
        Ok(self.pids()?.into_iter().filter(|p| *p != me).collect())
    }

    /// Stops every process inside (but this one): SIGTERM, up to `grace` to exit, then
    /// SIGKILL and up to 2 s more.
    pub fn stop_all(&self, grace: Duration) {
        for (sig, wait) in [
            (libc::SIGTERM, grace),
            (libc::SIGKILL, Duration::from_secs(2)),
        ] {
            let Ok(pids) = self.other_pids() else { return };
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                signal(pid, sig);
            }
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline && self.other_pids().is_ok_and(|p| !p.is_empty()) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.stop_all(STOP_GRACE);
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: {e:#}");
        }
    }
}

/// A current-thread tokio runtime with I/O and time, for a thread inside a namespace (a
/// socket belongs to the namespace of the thread that creates it).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime")
}

/// Moves the calling thread into the network namespace at `path` (`/run/netns/NAME`).
pub fn enter(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: setns(2) on a descriptor we own; it only changes this thread's namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns({}): {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The calling thread's network namespace, to return to: [`Netns::enter`] this thread
/// somewhere, and dropping the guard brings it back.
#[derive(Debug)]
pub struct ReturnHere(File);

impl ReturnHere {
    /// Remembers the calling thread's current network namespace.
    pub fn remember() -> Result<Self> {
        Ok(Self(
            File::open("/proc/thread-self/ns/net").context("open /proc/thread-self/ns/net")?,
        ))
    }
}

impl Drop for ReturnHere {
    fn drop(&mut self) {
        // SAFETY: a valid descriptor of a network namespace file.
        if unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "warning: cannot return to the original network namespace: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// `198.51.100.20:3545` as `/proc/net/udp` writes a local address.
fn proc_net_udp_key(a: SocketAddrV4) -> String {
    format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(a.ip().octets()),
        a.port()
    )
}

/// Removes `tt-<pid>-…` namespaces whose process no longer exists; the first call of a
/// process does the work, later calls return at once. [`Netns::new`] calls it.
pub fn remove_stale() {
    static CLEAN: Once = Once::new();
    CLEAN.call_once(remove_stale_now);
}

fn remove_stale_now() {
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

/// Waits (up to 10 s) until UDP sockets are bound to `port` on every address in `addrs` inside
/// `ns`, failing early if `proc` exits. A wildcard (0.0.0.0) socket does not count: a Teredo
/// server must answer from the address the RS asked for (or the other one), which takes one
/// socket per address.
pub fn wait_udp_bound(ns: &Netns, proc: &mut Proc, addrs: &[Ipv4Addr], port: u16) -> Result<()> {
    let want: Vec<SocketAddr> = addrs
        .iter()
        .map(|a| SocketAddrV4::new(*a, port).into())
        .collect();
    wait_for(
        &format!("{} to listen on {want:?}", proc.label()),
        Duration::from_secs(10),
        || {
            proc.ensure_running()?;
            let bound: Vec<SocketAddr> = ns.udp_sockets()?.into_iter().map(|s| s.local).collect();
            Ok(want.iter().all(|w| bound.contains(w)).then_some(()))
        },
    )
    .with_context(|| format!("{} stderr:\n{}", proc.label(), tail(&proc.stderr(), 30)))
    .map(drop)
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

    #[test]
    fn proc_net_udp_keys() {
        // /proc/net/udp: 198.51.100.20:3545 on a little-endian host.
        if cfg!(target_endian = "little") {
            assert_eq!(
                proc_net_udp_key("198.51.100.20:3545".parse().unwrap()),
                "146433C6:0DD9"
            );
        }
    }

    #[test]
    fn namespace_lifecycle() {
        if !crate::root_or_skip(crate::function_name!()) {
            return;
        }
        let a = Netns::new("testkit", "a").unwrap();
        let b = Netns::new("testkit", "b").unwrap();
        a.veth("v0", &b, "v0").unwrap();
        a.add_addr("v0", "192.0.2.1/24").unwrap();
        b.add_addrs("v0", &["192.0.2.2/24", "192.0.2.3/24"])
            .unwrap();
        assert_eq!(b.ipv4_addrs("v0").unwrap().len(), 2);
        let sock = b
            .run_in(|| Ok(std::net::UdpSocket::bind("192.0.2.2:3544")?))
            .unwrap();
        assert!(b.udp_bound(&["192.0.2.2:3544".parse().unwrap()]).unwrap());
        assert!(!a.udp_bound(&["192.0.2.2:3544".parse().unwrap()]).unwrap());
        drop(sock);
        let name = a.name().to_owned();
        drop(a);
        let list = run(Command::new("ip").args(["netns", "list"])).unwrap();
        assert!(!list.contains(&name), "{name} still listed");
    }
}
