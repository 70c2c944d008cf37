//! Debian's Miredo 1.2.6 as a Teredo **relay** (`RelayType cone`) inside a namespace: the
//! reference relay that our client (`client-sim ping`) is checked against.
//!
//! Findings (Debian 12, miredo 1.2.6-7.1+b2, as root; see also TEREDO.md §7.2, §14 R-a/R-b):
//! * Config: `RelayType cone`, `InterfaceName <ifname>`, `BindAddress <IPv4>` and
//!   `BindPort <port>` (a relay must be reachable at a fixed public address:port). No
//!   `ServerAddress`: a relay has no server.
//! * Command: `ip netns exec NS miredo -f -c FILE -p PIDFILE`, started as root like the
//!   client (it opens `/dev/net/tun`, then drops to the `miredo` user). It prints only
//!   `miredo[PID]: Starting...`.
//! * Unlike the client it runs no hook: it configures its TUN itself — MTU 1280, link-local
//!   `fe80::ffff:ffff:ffff/64` and the on-link route `2001::/32 dev <ifname> metric 1024`.
//!   The namespace needs IPv6 forwarding (native → Teredo packets reach the TUN through the
//!   kernel's forwarding path, and Teredo → native packets leave the same way) and a route to
//!   the native segment; the native hosts need a route to 2001::/32 via the relay.
//! * Ready = the UDP socket `<BindAddress>:<BindPort>` is bound and the 2001::/32 route is
//!   installed.
//! * SIGTERM: "Exiting on signal 15", "Terminated with no error."; the TUN goes away.
//!
//! Relay behaviour (TEREDO.md §6.5, §7.2; the first two points are asserted on the wire by
//! the `miredo_relay` e2e tests):
//! * A native packet for an unknown Teredo peer is queued (LIFO, 1280 bytes per peer) and
//!   answered with an **indirect bubble** to the peer's server:3544 only (cone mode: no direct
//!   bubble) whose IPv6 source is a per-peer `fe80::<HMAC>` link-local and whose **hop limit
//!   is 0**.
//! * The client's direct bubble back (IPv6 destination = that link-local) makes the peer
//!   trusted **even if its outer source is not the mapping embedded in its address** (a
//!   symmetric NAT): Miredo's reply-bubble check. The queue is then flushed to the outer
//!   source.
//! * Bubbles are re-sent only when another native packet for the peer arrives (no timer),
//!   at most every 3 s and 4 times; a Teredo packet from a peer the relay has no entry for is
//!   dropped ("relays are explicitly allowed to drop packets from unknown peers").

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::miredo;
use crate::netns::Netns;
use crate::process::{tail, Proc, TestDir};
use crate::wait::wait_for;

/// The Miredo relay's configuration file.
pub fn relay_config(bind: SocketAddrV4, ifname: &str) -> String {
    format!(
        "# teredo-tests: Miredo as a Teredo relay\n\
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
    let conf = dir.write(&format!("{label}.conf"), &relay_config(bind, ifname))?;
    let pid = dir.join(format!("{label}.pid"));
    let mut relay = ns.spawn(
        label,
        dir.path(),
        "miredo",
        &[
            "-f",
            "-c",
            conf.to_str().context("non-UTF-8 path")?,
            "-p",
            pid.to_str().context("non-UTF-8 path")?,
        ],
    )?;
    miredo::wait_udp_bound(ns, &mut relay, &[*bind.ip()], bind.port())?;
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
}
