//! The device(s) under test and what the tool has to test them with. Checks read it to
//! address the target and to decide whether they can run (a check that needs something
//! missing here is reported as skipped with the reason a `Target::need_*` method gives).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

/// How the detail of a check skipped by `--quick` ends; such a check is left out of the
/// comparison with an expectations file rather than counted as a mismatch.
pub const LEFT_OUT_BY_QUICK: &str = "left out by --quick";

/// A Teredo server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ServerTarget {
    /// Primary address (the one in the advertised prefix).
    pub primary: Ipv4Addr,
    /// Secondary address (primary + 1 by convention).
    pub secondary: Ipv4Addr,
    /// UDP port of both (3544).
    pub port: u16,
}

impl ServerTarget {
    /// Primary address and port.
    pub fn p(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.primary, self.port)
    }
    /// Secondary address and port.
    pub fn s(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.secondary, self.port)
    }
}

/// A Teredo relay under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RelayTarget {
    /// Its Teredo UDP address.
    pub addr: SocketAddrV4,
}

/// Everything a run needs to know about the target and the tool's own means.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// The server under test, if any.
    pub server: Option<ServerTarget>,
    /// The relay under test, if any.
    pub relay: Option<RelayTarget>,
    /// The tool's IPv4 source address (where its client sockets bind).
    pub local: Ipv4Addr,
    /// The tool's native IPv6 address: routed to the relay's 2001::/32 and where the
    /// server's native side delivers (checks of native forwarding need it).
    pub native_local: Option<Ipv6Addr>,
    /// Local addresses in non-global ranges (RS sources the server must ignore).
    pub non_global_sources: Vec<Ipv4Addr>,
    /// True when the tool may open raw sockets (root or CAP_NET_RAW).
    pub raw: bool,
    /// How long "nothing arrives" is waited for.
    pub quiet: Duration,
    /// Skip the checks that wait tens of seconds (relay give-up, staleness).
    pub quick: bool,
}

impl Target {
    /// The server, or the reason a server check cannot run.
    pub fn need_server(&self) -> Result<ServerTarget, String> {
        self.server
            .ok_or_else(|| "no server under test (--server)".to_owned())
    }

    /// The relay, or the reason a relay check cannot run.
    pub fn need_relay(&self) -> Result<RelayTarget, String> {
        self.relay
            .ok_or_else(|| "no relay under test (--relay)".to_owned())
    }

    /// The native IPv6 address, or the reason a native-side check cannot run.
    pub fn need_native(&self) -> Result<Ipv6Addr, String> {
        self.native_local.ok_or_else(|| {
            "needs a native IPv6 address of this host routed to the target (--native-local)"
                .to_owned()
        })
    }

    /// Ok when raw sockets are available, or the reason.
    pub fn need_raw(&self) -> Result<(), String> {
        if self.raw {
            Ok(())
        } else {
            Err("needs raw sockets (run as root or with CAP_NET_RAW)".to_owned())
        }
    }

    /// Ok unless `--quick` was given.
    pub fn need_slow(&self, how_long: &str) -> Result<(), String> {
        if self.quick {
            Err(format!("waits {how_long}: {LEFT_OUT_BY_QUICK}"))
        } else {
            Ok(())
        }
    }
}

/// The local IPv4 address the kernel would send from to reach `to` (a connected UDP socket
/// sends nothing).
pub fn route_source(to: Ipv4Addr) -> anyhow::Result<Ipv4Addr> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("UDP socket")?;
    s.connect((to, 9))
        .with_context(|| format!("no IPv4 route to {to}"))?;
    match s.local_addr()? {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(a) => anyhow::bail!("unexpected IPv6 source {a}"),
    }
}

/// True when this process can open a raw IPv4 socket.
pub fn can_open_raw() -> bool {
    socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::UDP),
    )
    .is_ok()
}
