//! The Teredo server library run in-process inside a network namespace, and the tools to
//! talk to it from inside that namespace.
//!
//! A socket belongs to the network namespace of the thread that created it, for its whole
//! life. So everything here that opens a socket does it on a short-lived thread that entered
//! the namespace first (`setns(2)` changes only the calling thread), and the socket is then
//! used from any thread:
//!
//! * [`in_netns`] / [`udp_socket`]: run a closure / bind a `std` UDP socket in a namespace.
//! * [`InprocServer`]: `teredo_server::start` on its own thread (which entered the namespace)
//!   with a current-thread tokio runtime; its Prometheus registry is read in-process
//!   ([`InprocServer::metric`]).
//! * [`native_channel`]: a `NativeSide::Channel` and its receiving half, readable from plain
//!   (non-async) test code.
//! * [`RawIpv4`]: sends UDP datagrams with any IPv4 source (`IP_HDRINCL`): sources no socket
//!   can bind (224.0.0.1, 255.255.255.255, 0.1.2.3, or the server's own address and port).
//!   Sent to a local address, such a datagram travels over `lo`, which keeps the sender's
//!   route: the kernel's martian-source checks (done on input routing only) never see it, and
//!   the UDP socket it is addressed to receives it as is.
//! * [`Sniffer`]: an `AF_PACKET` socket that sees every packet the namespace transmits, on
//!   any interface (`PACKET_OUTGOING` copies only, so each packet is seen once even on `lo`):
//!   what "nothing was emitted" is checked against.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use teredo_server::{NativeSide, ServerOptions};
use tokio::sync::mpsc as tokio_mpsc;

use crate::inproc_component::Inproc;
use crate::netns::Netns;

/// Runs `f` on a new thread that entered `ns` first; sockets `f` creates belong to `ns`.
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    ns.run_in(f)
}

/// A UDP socket bound to `addr` inside `ns`.
pub fn udp_socket(ns: &Netns, addr: SocketAddrV4) -> Result<UdpSocket> {
    in_netns(ns, || {
        UdpSocket::bind(addr).with_context(|| format!("bind UDP {addr} in {}", ns.name()))
    })
}

/// The value of one series in Prometheus text format (`name{labels}` exactly as written).
pub use testkit::metrics::value as metric_value;

/// `teredo_server::start` running on its own thread inside a namespace.
///
/// Dropping it stops the server (shutdown, then the thread is joined).
#[derive(Debug)]
pub struct InprocServer {
    inproc: Inproc,
    primary: SocketAddrV4,
    secondary: SocketAddrV4,
}

impl InprocServer {
    /// Starts the server with `options` inside `ns` and waits until it has bound its sockets
    /// (or failed to: the error of `teredo_server::start`).
    pub fn start(ns: &Netns, options: ServerOptions) -> Result<Self> {
        let registry = options.registry.clone();
        let (inproc, (primary, secondary)) =
            Inproc::start(ns, "server", registry, move |shutdown| async move {
                let server = teredo_server::start(options, shutdown).await?;
                let addrs = (server.primary_addr(), server.secondary_addr());
                Ok((addrs, server.wait()))
            })?;
        Ok(Self {
            inproc,
            primary,
            secondary,
        })
    }

    /// The bound primary address.
    pub fn primary_addr(&self) -> SocketAddrV4 {
        self.primary
    }

    /// The bound secondary address.
    pub fn secondary_addr(&self) -> SocketAddrV4 {
        self.secondary
    }

    /// The server's registry in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.inproc.metrics_text()
    }

    /// The current value of one series (`name{labels}`), `None` if there is no such series.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.inproc.metric(series)
    }

    /// Waits (polling) until `series` equals `want`.
    pub fn wait_metric(&self, series: &str, want: f64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.metric(series);
            if got == Some(want) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{series} = {got:?} after {timeout:?}, want {want}\n{}",
                    self.metrics_text()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Shuts the server down and returns how its tasks ended.
    pub fn stop(self) -> Result<()> {
        self.inproc.stop()
    }
}

/// The next packet on `rx` (a native side's receiving end), polled from plain test code, if
/// one comes within `timeout`.
pub(crate) fn recv_within(
    rx: &mut tokio_mpsc::Receiver<Vec<u8>>,
    timeout: Duration,
) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    loop {
        match rx.try_recv() {
            Ok(p) => return Some(p),
            Err(tokio_mpsc::error::TryRecvError::Disconnected) => return None,
            Err(tokio_mpsc::error::TryRecvError::Empty) => {}
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The receiving half of [`native_channel`].
#[derive(Debug)]
pub struct NativeRx(tokio_mpsc::Receiver<Vec<u8>>);

/// A `NativeSide::Channel` holding `capacity` packets, and its receiver.
pub fn native_channel(capacity: usize) -> (NativeSide, NativeRx) {
    let (tx, rx) = tokio_mpsc::channel(capacity);
    (NativeSide::Channel(tx), NativeRx(rx))
}

impl NativeRx {
    /// The next packet handed to the native side, if one comes within `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        recv_within(&mut self.0, timeout)
    }

    /// Every packet already waiting.
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.0.try_recv().ok()).collect()
    }
}

/// Creates a socket; the error names what it was for.
fn socket(domain: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> Result<OwnedFd> {
    // SAFETY: socket(2) has no memory-safety preconditions.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        bail!(
            "socket({domain}, {ty}, {protocol}): {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A raw IPv4 socket (`IPPROTO_RAW`, so `IP_HDRINCL`) for datagrams with a forged source.
#[derive(Debug)]
pub struct RawIpv4 {
    fd: OwnedFd,
}

impl RawIpv4 {
    /// Opens the socket inside `ns` (needs `CAP_NET_RAW`).
    pub fn open(ns: &Netns) -> Result<Self> {
        in_netns(ns, || {
            let fd = socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW)
                .context("raw IPv4 socket")?;
            Ok(Self { fd })
        })
    }

    /// Sends `payload` as a UDP datagram `from` → `to` (UDP checksum 0: none, as IPv4
    /// allows). The kernel fills in the IPv4 identification and header checksum; it keeps
    /// the source unless it is 0.0.0.0 (then it picks one: 0.0.0.0 itself cannot be sent).
    pub fn send_udp(&self, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> Result<()> {
        let udp_len = u16::try_from(8 + payload.len()).context("datagram too large")?;
        let total = udp_len.checked_add(20).context("datagram too large")?;
        let mut p = Vec::with_capacity(usize::from(total));
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&from.ip().octets());
        p.extend_from_slice(&to.ip().octets());
        p.extend_from_slice(&from.port().to_be_bytes());
        p.extend_from_slice(&to.port().to_be_bytes());
        p.extend_from_slice(&udp_len.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        // SAFETY: all-zero is a valid sockaddr_in.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from(*to.ip()).to_be();
        // SAFETY: the buffer and the address are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                p.as_ptr().cast(),
                p.len(),
                0,
                std::ptr::from_ref(&sin).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            bail!(
                "raw send {from} -> {to}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }
}

/// `sll_pkttype` of a packet the host transmitted (linux/if_packet.h).
const PACKET_OUTGOING: u8 = 4;
/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// A packet the namespace transmitted, as [`Sniffer`] saw it (link-layer header removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sniffed {
    /// EtherType ([`ETH_P_IP`], [`ETH_P_IPV6`], …).
    pub ethertype: u16,
    /// Index of the interface it left on.
    pub ifindex: i32,
    /// The network-layer packet.
    pub bytes: Vec<u8>,
}

/// A UDP/IPv4 datagram taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpDatagram {
    /// IPv4 source and UDP source port.
    pub src: SocketAddrV4,
    /// IPv4 destination and UDP destination port.
    pub dst: SocketAddrV4,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

impl Sniffed {
    /// The packet as a UDP/IPv4 datagram (unfragmented), if it is one.
    pub fn udp4(&self) -> Option<UdpDatagram> {
        let b = &self.bytes;
        if self.ethertype != ETH_P_IP || b.len() < 20 || b[0] >> 4 != 4 || b[9] != 17 {
            return None;
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([b[2], b[3]])).min(b.len());
        let udp = b.get(ihl..total)?;
        if udp.len() < 8 {
            return None;
        }
        let ip = |o: usize| Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]);
        let port = |o: usize| u16::from_be_bytes([udp[o], udp[o + 1]]);
        let len = usize::from(port(4)).clamp(8, udp.len());
        Some(UdpDatagram {
            src: SocketAddrV4::new(ip(12), port(0)),
            dst: SocketAddrV4::new(ip(16), port(2)),
            payload: udp[8..len].to_vec(),
        })
    }

    /// The packet if it is IPv6.
    pub fn ipv6(&self) -> Option<&[u8]> {
        (self.ethertype == ETH_P_IPV6 && self.bytes.first().is_some_and(|b| b >> 4 == 6))
            .then_some(self.bytes.as_slice())
    }
}

/// Sees every packet a namespace transmits (see the module documentation).
#[derive(Debug)]
pub struct Sniffer {
    fd: OwnedFd,
}

impl Sniffer {
    /// Opens an `AF_PACKET`/`SOCK_DGRAM` socket for all protocols inside `ns`; it records
    /// from now on.
    pub fn open(ns: &Netns) -> Result<Self> {
        in_netns(ns, || {
            let protocol = libc::c_int::from((libc::ETH_P_ALL as u16).to_be());
            let fd =
                socket(libc::AF_PACKET, libc::SOCK_DGRAM, protocol).context("AF_PACKET socket")?;
            let size: libc::c_int = 8 << 20;
            // SAFETY: setsockopt with a valid int option value. Best effort (root may exceed
            // rmem_max with SO_RCVBUFFORCE).
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    std::ptr::from_ref(&size).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            Ok(Self { fd })
        })
    }

    /// Every transmitted packet recorded since the last call (or since [`Sniffer::open`]).
    pub fn drain(&self) -> Vec<Sniffed> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, sll)) = testkit::packet::recv_ll(self.fd.as_fd(), &mut buf) else {
                // EAGAIN: nothing more (any other error ends the drain too).
                return out;
            };
            if sll.sll_pkttype == PACKET_OUTGOING {
                out.push(Sniffed {
                    ethertype: u16::from_be(sll.sll_protocol),
                    ifindex: sll.sll_ifindex,
                    bytes: buf[..n].to_vec(),
                });
            }
        }
    }
}
