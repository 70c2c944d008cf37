//! The topology `client-sim conform` runs in, and the implementations it is pointed at.
//!
//! ```text
//!  IPv4 "Internet" 198.51.100.0/24 (bridge)          native IPv6 2001:db8::/64 (bridge)
//!  [srv .1 +.2: server under test] ------------------ eth1 2001:db8::2
//!  [rly .30:3545: relay under test] ----------------- eth1 2001:db8::1 (2001::/32 → TUN)
//!  [tst .10 +.11 +10.99.0.10 +192.168.99.10: client-sim conform] --------------- eth0 2001:db8::99 (2001::/32 via ::1)
//! ```
//!
//! It is [`RelayTopology`] with its native host as the tester: the tool's native address is
//! where the server's native side delivers echo requests and what the relay's 2001::/32 route
//! serves, so it can play both the Teredo client and the native peer. The tester has a second
//! IPv4 address and two in non-global ranges ([`TESTER_NON_GLOBAL`]).

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::miredo;
use crate::misbehaving::{Fault, MisbehavingServer};
use crate::netns::Netns;
use crate::process::{Proc, TestDir};
use crate::relay::{RelayTopology, RELAY_PORT, RELAY_TUN, RELAY_V4};
use crate::servers::ServerImpl;
use crate::topo::{self, SERVER_PRIMARY, SERVER_SECONDARY};

/// The tool's first IPv4 address (its client sockets bind here).
pub const TESTER_V4: Ipv4Addr = topo::PUBLIC_CLIENT;
/// The tool's second IPv4 address.
pub const TESTER_V4_SECOND: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
/// The tool's addresses in non-global ranges (`--non-global-source`): RS sources a server
/// must ignore, and embedded client or server addresses a relay must never send to. The
/// server and the relay get a route to each (via [`TESTER_V4`]), so that an answer they
/// should not send would reach the tool and be seen.
pub const TESTER_NON_GLOBAL: [Ipv4Addr; 2] = [
    Ipv4Addr::new(10, 99, 0, 10),
    Ipv4Addr::new(192, 168, 99, 10),
];

/// The namespaces of a conformance run.
#[derive(Debug)]
pub struct ConformLab {
    /// Server, relay and the native segment; `topo.h6` is the tester.
    pub topo: RelayTopology,
}

impl ConformLab {
    /// Builds the namespaces and links (nothing started).
    pub fn new(test: &str) -> Result<Self> {
        let topo = RelayTopology::new(test)?;
        topo.internet.attach(&topo.h6, "eth1")?;
        for a in [TESTER_V4, TESTER_V4_SECOND] {
            topo.h6
                .add_addr("eth1", &format!("{a}/{}", topo::INTERNET_PREFIX_LEN))?;
        }
        for a in TESTER_NON_GLOBAL {
            topo.h6.add_addr("eth1", &format!("{a}/32"))?;
            for ns in [&topo.srv, &topo.rly] {
                ns.add_route(&format!("{a}/32"), &TESTER_V4.to_string())?;
            }
        }
        Ok(Self { topo })
    }

    /// The namespace the tool runs in.
    pub fn tester(&self) -> &Netns {
        &self.topo.h6
    }
}

/// An implementation under test: which processes play the server and/or the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// `teredo-server --native raw` and `teredo-relay --trust strict`.
    Ours,
    /// `teredo-server --native raw` and `teredo-relay --trust lenient`.
    OursLenient,
    /// Debian's `miredo-server` (server checks only).
    MiredoServer,
    /// Debian's `miredo`, `RelayType cone` (relay checks only).
    MiredoRelay,
    /// The sans-IO core with one fault ([`crate::misbehaving`]; server checks only).
    Misbehaving(Fault),
}

impl Implementation {
    /// Its name in `conformance/expectations.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::OursLenient => "ours-lenient",
            Self::MiredoServer => "miredo-server",
            Self::MiredoRelay => "miredo-relay",
            Self::Misbehaving(f) => f.implementation(),
        }
    }

    /// Whether it has a server under test (`--server`).
    pub fn has_server(self) -> bool {
        !matches!(self, Self::MiredoRelay)
    }

    /// Whether it has a relay under test (`--relay`).
    pub fn has_relay(self) -> bool {
        matches!(self, Self::Ours | Self::OursLenient | Self::MiredoRelay)
    }

    /// The executables it needs besides ours.
    pub fn tools(self) -> &'static [&'static str] {
        match self {
            Self::MiredoServer => &["miredo-server"],
            Self::MiredoRelay => &["miredo"],
            _ => &[],
        }
    }

    /// Starts it in `lab` and waits until it listens; logs go to `dir`.
    pub fn start(self, lab: &ConformLab, dir: &TestDir) -> Result<Running> {
        let t = &lab.topo;
        let mut running = Running::default();
        match self {
            Self::Ours | Self::OursLenient => {
                let trust = if self == Self::Ours {
                    "strict"
                } else {
                    "lenient"
                };
                running.procs.push(t.start_server(dir)?);
                running.procs.push(t.start_relay(dir, &["--trust", trust])?);
            }
            Self::MiredoServer => running.procs.push(ServerImpl::Miredo.start(&t.srv, dir)?),
            Self::MiredoRelay => running.procs.push(miredo::spawn_relay(
                &t.rly,
                dir,
                "miredo-relay",
                std::net::SocketAddrV4::new(RELAY_V4, RELAY_PORT),
                RELAY_TUN,
            )?),
            Self::Misbehaving(fault) => {
                running.inproc = Some(MisbehavingServer::start(
                    &t.srv,
                    SERVER_PRIMARY,
                    SERVER_SECONDARY,
                    &[fault],
                )?);
            }
        }
        Ok(running)
    }
}

/// What [`Implementation::start`] started; dropping it stops everything.
#[derive(Debug, Default)]
pub struct Running {
    /// Child processes (server, relay).
    pub procs: Vec<Proc>,
    /// The in-process misbehaving server.
    pub inproc: Option<MisbehavingServer>,
}

impl Running {
    /// Fails if a process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.procs.iter_mut().try_for_each(Proc::ensure_running)
    }
}
