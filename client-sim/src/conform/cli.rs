//! `client-sim conform`'s flags and what they turn into.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::target::{can_open_raw, route_source, RelayTarget, ServerTarget, Target};

/// The text after `client-sim conform --help`.
pub const CONFORM_AFTER: &str = "\
Levels: MUST (an RFC MUST or MUST NOT: fails the run), SHOULD (an RFC SHOULD), interop-windows
and interop-miredo (what those clients need; no RFC words). Only MUST failures make the exit
status 1, unless --strict. Results: pass, fail, skipped (the tool lacks what the check needs:
the detail names it), not-applicable, error (the tool failed, never counted as a pass).

What checks need:
  --server                 every server check (S..); the secondary defaults to primary + 1
  --relay                  every relay check (R..); the tool plays the client's Teredo server
                           itself on its own address, port 3544
  --native-local           native-side checks: this host's IPv6 address, routed to the relay's
                           2001::/32 and reachable from the server's native side
  --non-global-source      local addresses in non-global ranges (RS sources a server must ignore)
  root / CAP_NET_RAW       forged sources (raw sockets), receiving ICMPv6

Exit status:
  0  every MUST passed (with --strict: every check); with --expect: every verdict as expected
  1  a counted failure or tool error; with --expect: a verdict other than the expected one;
     or bad flags or files
  2  usage error

Examples:
  client-sim conform --server 198.51.100.1
  client-sim conform --relay 198.51.100.30:3545 --native-local 2001:db8::99 --junit conform.xml
  client-sim conform --server 198.51.100.1 --expect conformance/expectations.json \\
      --implementation miredo-server --json --pcap conform.pcap
  client-sim conform --list";

/// Flags of `client-sim conform`.
#[derive(Debug, Clone, Args)]
pub struct ConformArgs {
    /// The server under test: its primary IPv4 address.
    #[arg(long, value_name = "IPV4")]
    pub server: Option<Ipv4Addr>,

    /// The server's secondary address [default: primary + 1].
    #[arg(long, value_name = "IPV4", requires = "server")]
    pub secondary: Option<Ipv4Addr>,

    /// The server's UDP port.
    #[arg(long, default_value_t = teredo::addr::TEREDO_PORT)]
    pub server_port: u16,

    /// The relay under test: its Teredo UDP address.
    #[arg(long, value_name = "IPV4:PORT")]
    pub relay: Option<SocketAddrV4>,

    /// This host's native IPv6 address (routed to the relay's 2001::/32, reachable from the
    /// server's native side); native-side checks are skipped without it.
    #[arg(long, value_name = "IPV6")]
    pub native_local: Option<Ipv6Addr>,

    /// IPv4 address the tool's client sockets bind [default: the source the kernel picks
    /// towards the target].
    #[arg(long, value_name = "IPV4")]
    pub bind: Option<Ipv4Addr>,

    /// A local address in a non-global range (10/8, 169.254/16, 172.16/12, 192.168/16,
    /// 192.88.99/24, 127/8) to send RSs from, which the server must ignore; repeatable.
    #[arg(long = "non-global-source", value_name = "IPV4")]
    pub non_global_sources: Vec<Ipv4Addr>,

    /// Run only these checks (comma-separated ids).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub only: Vec<String>,

    /// Leave out these checks (comma-separated ids).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub skip: Vec<String>,

    /// How long "nothing arrives" is waited for.
    #[arg(long, default_value = "500ms", value_parser = crate::cli::parse_duration)]
    pub quiet: Duration,

    /// Leave out the checks that wait tens of seconds (relay give-up and staleness); they
    /// are reported as skipped.
    #[arg(long)]
    pub quick: bool,

    /// SHOULD and interop failures fail the run too.
    #[arg(long)]
    pub strict: bool,

    /// Print the report as JSON (every datagram in hex with its timing) instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Write JUnit XML (one test case per check) to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Write every datagram sent and received to FILE (pcap, raw IP link type).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Compare the verdicts with an expectations file (with --implementation); the exit
    /// status then says whether they match.
    #[arg(long, value_name = "FILE", requires = "implementation")]
    pub expect: Option<PathBuf>,

    /// Which implementation of the expectations file the target is.
    #[arg(long, value_name = "NAME", requires = "expect")]
    pub implementation: Option<String>,

    /// Seed of nonces and identifiers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// List the catalogue (id, device, level, RFC clause) and exit.
    #[arg(long)]
    pub list: bool,
}

impl ConformArgs {
    /// The target these flags describe, with the tool's means probed (raw sockets) and the
    /// local address looked up.
    pub fn target(&self) -> anyhow::Result<Target> {
        anyhow::ensure!(
            self.server.is_some() || self.relay.is_some(),
            "nothing to test: give --server IPV4 and/or --relay IPV4:PORT (or --list)"
        );
        let server = self.server.map(|primary| {
            let secondary = self
                .secondary
                .unwrap_or_else(|| Ipv4Addr::from(u32::from(primary).wrapping_add(1)));
            ServerTarget {
                primary,
                secondary,
                port: self.server_port,
            }
        });
        if let Some(s) = server {
            anyhow::ensure!(
                s.primary != s.secondary,
                "--secondary must differ from the primary address {}",
                s.primary
            );
        }
        let towards = server
            .map(|s| s.primary)
            .or(self.relay.map(|r| *r.ip()))
            .context("no target")?;
        let local = match self.bind {
            Some(a) => a,
            None => route_source(towards)?,
        };
        Ok(Target {
            server,
            relay: self.relay.map(|addr| RelayTarget { addr }),
            local,
            native_local: self.native_local,
            non_global_sources: self.non_global_sources.clone(),
            raw: can_open_raw(),
            quiet: self.quiet,
            quick: self.quick,
        })
    }
}
