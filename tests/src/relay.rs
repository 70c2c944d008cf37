//! The full Teredo topology with a relay (TEREDO.md §15, "client X → native host H via
//! relay R"): our `teredo-server` and `teredo-relay` binaries, a native IPv6 host, and a
//! Teredo client behind a NAT router.
//!
//! ```text
//!  IPv4 "Internet" 198.51.100.0/24 (bridge)             native IPv6 2001:db8::/64 (bridge)
//!  [srv .1 +.2: teredo-server --native raw] ------------- eth1 2001:db8::2
//!  [rly .30:3545: teredo-relay --native tun] ------------ eth1 2001:db8::1 (forwarding on)
//!  [nat wan0 .20 | lan0 10.0.0.1] -- [cli 10.0.0.2]        [h6 2001:db8::99, 2001::/32 via ::1]
//! ```
//!
//! The server sends the client's echo requests (its direct IPv6 connectivity test) out of a
//! raw socket onto the native segment; the native host's replies to the 2001::/32 Teredo
//! address are routed to the relay, whose kernel forwards them into its TUN. IPv6 duplicate
//! address detection is off in every namespace (`accept_dad = 0` before any interface is
//! attached, `nodad` on the addresses) so the segment works at once.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::bins::bin_path;
use crate::inproc::in_netns;
use crate::metrics::{self, value as metric_value};
use crate::netns::{Internet, Netns};
use crate::process::{tail, Proc, TestDir};
use crate::servers;
use crate::topo::{self, SERVER_PRIMARY, SERVER_SECONDARY};
use crate::wait::wait_for;

/// The relay's IPv4 address on the Internet segment.
pub const RELAY_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);
/// The relay's UDP port.
pub const RELAY_PORT: u16 = 3545;
/// The relay's address on the native segment (also its ICMPv6 error source).
pub const RELAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// The server's address on the native segment.
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// The native IPv6 host.
pub const NATIVE_HOST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
/// The relay's metrics endpoint (inside its namespace).
pub const RELAY_METRICS: SocketAddrV4 = SocketAddrV4::new(RELAY_V4, 9100);
/// The relay's TUN device.
pub const RELAY_TUN: &str = "teredo0";

/// Turns IPv6 duplicate address detection off for interfaces created from now on.
fn no_dad(ns: &Netns) -> Result<()> {
    ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
    ns.sysctl("net.ipv6.conf.default.accept_dad", "0")
}

/// Adds an IPv6 address without duplicate address detection.
fn add_v6(ns: &Netns, dev: &str, cidr: &str) -> Result<()> {
    ns.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"])
        .map(drop)
}

/// The server, relay and native host of the topology (the client side is up to the test).
#[derive(Debug)]
pub struct RelayTopology {
    /// The IPv4 Internet.
    pub internet: Internet,
    /// The native IPv6 segment (a bridge namespace too).
    pub native: Internet,
    /// The Teredo server's namespace.
    pub srv: Netns,
    /// The relay's namespace.
    pub rly: Netns,
    /// The native IPv6 host's namespace.
    pub h6: Netns,
}

impl RelayTopology {
    /// Builds the namespaces and links (no process started yet).
    pub fn new(test: &str) -> Result<Self> {
        let internet = Internet::new(test)?;
        let native = Internet::new(test)?;
        let srv = Netns::new(test, "srv")?;
        let rly = Netns::new(test, "rly")?;
        let h6 = Netns::new(test, "h6")?;
        for ns in [&srv, &rly, &h6] {
            no_dad(ns)?;
        }
        for (ns, addrs) in [
            (&srv, &[SERVER_PRIMARY, SERVER_SECONDARY][..]),
            (&rly, &[RELAY_V4][..]),
        ] {
            internet.attach(ns, "eth0")?;
            for a in addrs {
                ns.add_addr("eth0", &format!("{a}/{}", topo::INTERNET_PREFIX_LEN))?;
            }
        }
        native.attach(&srv, "eth1")?;
        add_v6(&srv, "eth1", &format!("{SERVER_V6}/64"))?;
        native.attach(&rly, "eth1")?;
        add_v6(&rly, "eth1", &format!("{RELAY_V6}/64"))?;
        rly.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        native.attach(&h6, "eth0")?;
        add_v6(&h6, "eth0", &format!("{NATIVE_HOST}/64"))?;
        h6.add_route("2001::/32", &RELAY_V6.to_string())?;
        Ok(Self {
            internet,
            native,
            srv,
            rly,
            h6,
        })
    }

    /// Starts `teredo-server --native raw` on .1/.2 and waits until it listens.
    pub fn start_server(&self, dir: &TestDir) -> Result<Proc> {
        servers::start_ours(&self.srv, dir, "raw")
    }

    /// Starts `teredo-relay --native tun` with `extra` flags and waits until its route is
    /// installed (the last step of its start).
    pub fn start_relay(&self, dir: &TestDir, extra: &[&str]) -> Result<Proc> {
        let bin = bin_path("teredo-relay")?;
        let bind = SocketAddrV4::new(RELAY_V4, RELAY_PORT).to_string();
        let icmp = RELAY_V6.to_string();
        let metrics = RELAY_METRICS.to_string();
        let mut args = vec![
            "--bind",
            &bind,
            "--native",
            "tun:teredo0",
            "--workers",
            "2",
            "--icmp-source",
            &icmp,
            "--metrics-addr",
            &metrics,
        ];
        args.extend_from_slice(extra);
        let mut relay = self.rly.spawn(
            "teredo-relay",
            dir.path(),
            bin.to_str().context("non-UTF-8 binary path")?,
            &args,
        )?;
        wait_for(
            "the relay's 2001::/32 route",
            Duration::from_secs(10),
            || {
                relay.ensure_running()?;
                let r = self.rly.ip(&["-6", "route", "show", "2001::/32"])?;
                Ok((!r.trim().is_empty()).then_some(r))
            },
        )
        .with_context(|| format!("teredo-relay stderr:\n{}", tail(&relay.stderr(), 30)))?;
        Ok(relay)
    }

    /// The relay's `/metrics` page.
    pub fn relay_metrics(&self) -> Result<String> {
        metrics::fetch_in(&self.rly, RELAY_METRICS.into())
    }

    /// One series of the relay's metrics (0 when absent).
    pub fn relay_metric(&self, series: &str) -> Result<f64> {
        Ok(metric_value(&self.relay_metrics()?, series).unwrap_or(0.0))
    }
}

/// Sends `count` ICMPv6 echo requests (0.2 s apart) from `ns` to [`NATIVE_HOST`] and counts
/// the matching echo replies that arrive within 2 s of the last request: `ping -6 -c COUNT
/// -i 0.2 -W 2`, without needing iputils (a raw ICMPv6 socket; the kernel fills in the
/// checksum and the source address). Returns (replies, a log line per event).
pub fn ping6(ns: &Netns, count: u16) -> Result<(u16, String)> {
    in_netns(ns, || {
        let fd = raw_icmpv6()?;
        let id = (std::process::id() as u16) ^ 0x5a5a;
        let mut log = String::new();
        let mut seen = vec![false; usize::from(count)];
        let start = std::time::Instant::now();
        let end_of = |i: u16| Duration::from_millis(200) * u32::from(i);
        let mut next = 0u16;
        loop {
            let now = start.elapsed();
            if next < count && now >= end_of(next) {
                let mut req = vec![128, 0, 0, 0];
                req.extend_from_slice(&id.to_be_bytes());
                req.extend_from_slice(&next.to_be_bytes());
                req.extend_from_slice(b"teredo-lab relay ping");
                send_to(&fd, &req, NATIVE_HOST)?;
                log.push_str(&format!("{now:?}: echo request seq {next}\n"));
                next += 1;
                continue;
            }
            let deadline = if next < count {
                end_of(next)
            } else {
                end_of(count.saturating_sub(1)) + Duration::from_secs(2)
            };
            if now >= deadline && next >= count {
                break;
            }
            if let Some((from, msg)) = recv(&fd, deadline - now)? {
                if msg.len() >= 8
                    && msg[0] == 129
                    && msg[4..6] == id.to_be_bytes()
                    && from == NATIVE_HOST
                {
                    let seq = u16::from_be_bytes([msg[6], msg[7]]);
                    if let Some(s) = seen.get_mut(usize::from(seq)) {
                        *s = true;
                    }
                    log.push_str(&format!("{:?}: echo reply seq {seq}\n", start.elapsed()));
                }
            }
        }
        let replies = seen.iter().filter(|s| **s).count() as u16;
        log.push_str(&format!("{count} requests, {replies} replies\n"));
        Ok((replies, log))
    })
}

/// A raw ICMPv6 socket (in the namespace of the calling thread): what the native host pings
/// Teredo peers with.
pub fn raw_icmpv6() -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: socket(2) has no memory-safety preconditions.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMPV6,
        )
    };
    if fd < 0 {
        anyhow::bail!("raw ICMPv6 socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

fn sockaddr6(ip: Ipv6Addr) -> libc::sockaddr_in6 {
    // SAFETY: plain old data; all-zero is valid.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_addr.s6_addr = ip.octets();
    sa
}

fn send_to(fd: &std::os::fd::OwnedFd, msg: &[u8], to: Ipv6Addr) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    let sa = sockaddr6(to);
    // SAFETY: valid fd, buffer and address of the advertised sizes.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if n < 0 {
        anyhow::bail!("sendto {to}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// One ICMPv6 message (without IPv6 header) within `wait`, with its source.
fn recv(fd: &std::os::fd::OwnedFd, wait: Duration) -> Result<Option<(Ipv6Addr, Vec<u8>)>> {
    use std::os::fd::AsRawFd as _;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
    if rc <= 0 {
        return Ok(None);
    }
    let mut buf = [0u8; 2048];
    let mut sa = sockaddr6(Ipv6Addr::UNSPECIFIED);
    let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: valid fd, buffer and address storage of the advertised sizes.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&raw mut sa).cast(),
            &raw mut len,
        )
    };
    let Ok(n) = usize::try_from(n) else {
        return Ok(None);
    };
    Ok(Some((
        Ipv6Addr::from(sa.sin6_addr.s6_addr),
        buf[..n].to_vec(),
    )))
}
