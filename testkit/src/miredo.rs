//! Debian's Miredo 1.2.6 (`miredo`, `miredo-server`) inside network namespaces: client,
//! server and relay (`RelayType cone`).
//!
//! Findings (Debian 12, miredo 1.2.6-7.1+b2, as root; see also TEREDO.md §14):
//!
//! **Client** (`miredo`, `RelayType client`):
//! * Config file (directives are case-insensitive, `#` comments):
//!   `RelayType client`, `InterfaceName <ifname>` (default `miredo`; any name ≤ 15 bytes — it
//!   only has to be unique in its namespace), `ServerAddress <IPv4>` (numeric, so no resolver
//!   is needed after its chroot). `ServerAddress2` defaults to primary + 1 and is never used
//!   by 1.2.6 (it does not probe the secondary). `BindPort` is not needed: without it the
//!   kernel picks an ephemeral port, and the mapped port is then read back with `ss`.
//! * Command: `ip netns exec NS miredo -f -c FILE -p PIDFILE`. `-f` keeps it in the
//!   foreground **and** sends its syslog lines to stderr too (`miredo[PID]: …`); `-p` moves the
//!   pid file out of the shared `/var/run/miredo.pid`, so parallel instances do not clash.
//!   It must start as root: it opens `/dev/net/tun` (the TUN device must exist in the
//!   namespace's view of /dev, which `ip netns exec` leaves untouched), then drops to the
//!   `miredo` user (created by the package; `-u root` is refused: "This program is not
//!   supposed to keep root privileges") and chroots to `/var/run/miredo`.
//! * Process tree: `miredo` (root, supervisor) → `miredo` (user miredo, the Teredo engine,
//!   holds the UDP socket `0.0.0.0:<ephemeral>`) → `/usr/libexec/miredo/miredo-privproc`
//!   (root), which runs the hard-coded hook `/etc/miredo/client-hook` with `IFACE`, `STATE`
//!   (up/down/destroy), `ADDRESS`, `LLADDRESS`, `MTU`. The stock iproute2 hook flushes the
//!   interface, adds `fe80::ffff:ffff:ffff/64` and `<teredo address>/32` (so 2001::/32 is
//!   on-link), and a default route with metric 1029; the `teredo` policy table does not exist
//!   in `rt_tables`, so that part is skipped. The hook is used as shipped.
//! * Qualified = `ip -6 addr show dev IFNAME scope global` lists a 2001:0::/32 address; the
//!   same moment stderr shows `New Teredo address/MTU`, `Teredo pseudo-tunnel started` and
//!   ` (address: 2001:0:…, MTU: 1280)`.
//! * Timing: with the server already listening, qualification takes one RS/RA round trip —
//!   well under a second (60–170 ms measured here, direct and through a masquerading NAT,
//!   with either server).
//!   If the RS goes unanswered it retries every 4 s (3 tries), then waits 100 s
//!   ("No reply from Teredo server"): start the server, and wait for its sockets, first.
//! * SIGTERM: the supervisor stops the engine, the hook runs with `STATE=down`, the TUN goes
//!   away; ≈ 1.7 s in total ("Terminated with no error.").
//!
//! **Server** (`miredo-server`):
//! * Config: `ServerBindAddress <primary>` and `ServerBindAddress2 <secondary>` (default
//!   primary + 1). Both addresses must be configured on an interface of the namespace first.
//! * Command: `ip netns exec NS miredo-server -f -c FILE -p PIDFILE`; needs root at start
//!   (CAP_NET_RAW for its raw IPv6 socket), then drops to the `miredo` user. It prints only
//!   `miredo-server[PID]: Starting...`; it is ready once `ss -u -a -n` in the namespace shows
//!   UDP sockets on `<primary>:3544` and `<secondary>:3544` (a few ms).
//! * Neither daemon needs systemd, syslog or `/etc/miredo/*.conf`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context as _, Result};

pub use crate::netns::wait_udp_bound;
use crate::netns::Netns;
use crate::process::{tail, Proc, TestDir};
use crate::wait::wait_for;

/// Teredo's UDP port.
pub const TEREDO_PORT: u16 = 3544;

/// The Miredo client's configuration file.
pub fn client_config(server: Ipv4Addr, ifname: &str) -> String {
    format!(
        "# teredo-testkit: Miredo as a Teredo client\n\
         RelayType client\n\
         InterfaceName {ifname}\n\
         ServerAddress {server}\n"
    )
}

/// Starts `miredo -f` as a Teredo client of `server` inside `ns`; its tunnel is `ifname`.
/// Logs go to `<label>.stderr.log` in `dir`.
pub fn spawn_client(
    ns: &Netns,
    dir: &TestDir,
    label: &str,
    server: Ipv4Addr,
    ifname: &str,
) -> Result<Proc> {
    spawn(ns, dir, label, "miredo", &client_config(server, ifname))
}

/// Writes `<label>.conf` in `dir` and starts `program -f -c <conf> -p <dir>/<label>.pid` in
/// `ns` (`-f`: foreground, syslog lines on stderr too; `-p`: a pid file of its own, so that
/// parallel instances do not clash).
fn spawn(ns: &Netns, dir: &TestDir, label: &str, program: &str, config: &str) -> Result<Proc> {
    let conf = dir.write(&format!("{label}.conf"), config)?;
    let pid = dir.join(format!("{label}.pid"));
    ns.spawn(
        label,
        dir.path(),
        program,
        &[
            "-f",
            "-c",
            conf.to_str().context("non-UTF-8 path")?,
            "-p",
            pid.to_str().context("non-UTF-8 path")?,
        ],
    )
}

/// The Teredo (2001:0::/32) address on `ifname` inside `ns`, if any.
pub fn teredo_address(ns: &Netns, ifname: &str) -> Result<Option<Ipv6Addr>> {
    // Before the hook has run the interface may not exist yet: that is "no address".
    let Ok(out) = ns.ip(&["-6", "-o", "addr", "show", "dev", ifname, "scope", "global"]) else {
        return Ok(None);
    };
    Ok(out.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        words.find(|w| *w == "inet6")?;
        let addr: Ipv6Addr = words.next()?.split('/').next()?.parse().ok()?;
        (addr.segments()[..2] == [0x2001, 0]).then_some(addr)
    }))
}

/// Waits until the Miredo client `client` (running in `ns`) has a Teredo address on `ifname`;
/// returns it and the time it took. Fails early if the client exits, and quotes its stderr
/// on timeout.
pub fn wait_qualified(
    ns: &Netns,
    client: &mut Proc,
    ifname: &str,
    timeout: Duration,
) -> Result<(Ipv6Addr, Duration)> {
    wait_for("the Miredo client to qualify", timeout, || {
        client.ensure_running()?;
        teredo_address(ns, ifname)
    })
    .with_context(|| format!("{} stderr:\n{}", client.label(), tail(&client.stderr(), 30)))
}

/// The local UDP port of the Miredo client's Teredo socket inside `ns`.
pub fn client_port(ns: &Netns) -> Result<u16> {
    let sockets = ns.udp_sockets()?;
    sockets
        .iter()
        .find(|s| s.process.as_deref() == Some("miredo"))
        .map(|s| s.local.port())
        .with_context(|| format!("no UDP socket of `miredo` in {}: {sockets:?}", ns.name()))
}

/// The Miredo server's configuration file.
pub fn server_config(primary: Ipv4Addr, secondary: Ipv4Addr) -> String {
    format!(
        "# teredo-testkit: Miredo as a Teredo server\n\
         ServerBindAddress {primary}\n\
         ServerBindAddress2 {secondary}\n"
    )
}

/// Starts `miredo-server -f` on `primary` / `secondary` (both must already be addresses of
/// `ns`) and waits until it listens on both.
pub fn spawn_server(
    ns: &Netns,
    dir: &TestDir,
    label: &str,
    primary: Ipv4Addr,
    secondary: Ipv4Addr,
) -> Result<Proc> {
    let mut server = spawn(
        ns,
        dir,
        label,
        "miredo-server",
        &server_config(primary, secondary),
    )?;
    wait_udp_bound(ns, &mut server, &[primary, secondary], TEREDO_PORT)?;
    Ok(server)
}

/// The Miredo relay's configuration file (`RelayType cone`, its TUN `ifname`, bound to `bind`).
pub fn relay_config(bind: SocketAddrV4, ifname: &str) -> String {
    format!(
        "# teredo-testkit: Miredo as a Teredo relay\n\
         RelayType cone\n\
         InterfaceName {ifname}\n\
         BindAddress {}\n\
         BindPort {}\n",
        bind.ip(),
        bind.port()
    )
}

/// Starts `miredo -f` as a cone relay bound to `bind` (an address of `ns`) with the TUN
/// `ifname`, and waits (up to 10 s) until its socket is bound and its 2001::/32 route is
/// installed. Logs go to `<label>.stderr.log` in `dir`.
pub fn spawn_relay(
    ns: &Netns,
    dir: &TestDir,
    label: &str,
    bind: SocketAddrV4,
    ifname: &str,
) -> Result<Proc> {
    let mut relay = spawn(ns, dir, label, "miredo", &relay_config(bind, ifname))?;
    wait_udp_bound(ns, &mut relay, &[*bind.ip()], bind.port())?;
    wait_for(
        "the Miredo relay's 2001::/32 route",
        Duration::from_secs(10),
        || {
            relay.ensure_running()?;
            let r = ns.ip(&["-6", "route", "show", "2001::/32", "dev", ifname])?;
            Ok((!r.trim().is_empty()).then_some(r))
        },
    )
    .with_context(|| format!("{label} stderr:\n{}", tail(&relay.stderr(), 30)))?;
    Ok(relay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_config_has_the_directives() {
        let c = relay_config("198.51.100.30:3545".parse().unwrap(), "teredo0");
        for line in [
            "RelayType cone",
            "InterfaceName teredo0",
            "BindAddress 198.51.100.30",
            "BindPort 3545",
        ] {
            assert!(c.lines().any(|l| l == line), "{line} missing from {c}");
        }
        assert!(!c.contains("ServerAddress"));
    }

    #[test]
    fn client_and_server_configs() {
        let c = client_config(Ipv4Addr::new(198, 51, 100, 1), "teredo");
        assert!(c.lines().any(|l| l == "RelayType client"), "{c}");
        assert!(c.lines().any(|l| l == "ServerAddress 198.51.100.1"), "{c}");
        let s = server_config(
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv4Addr::new(198, 51, 100, 2),
        );
        assert!(
            s.lines().any(|l| l == "ServerBindAddress 198.51.100.1"),
            "{s}"
        );
        assert!(
            s.lines().any(|l| l == "ServerBindAddress2 198.51.100.2"),
            "{s}"
        );
    }
}
