//! A deliberately misbehaving Teredo server: the sans-IO core [`teredo::server::Server`]
//! driven over real sockets inside a namespace, with switchable faults that each break one
//! rule a conformance check enforces. It shows that `client-sim conform` fails exactly the
//! checks a target breaks, and no others.
//!
//! Without a fault it behaves as the core does (RS → RA, bubbles and ICMPv6 relayed, native
//! packets out of a raw IPv6 socket, like `teredo-server --native raw`).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use teredo::addr::TeredoAddr;
use teredo::io::{Local, Output};
use teredo::server::{Server, ServerConfig};
use teredo::wire::origin::{OriginIndication, ORIGIN_INDICATOR, ORIGIN_LEN};
use teredo::wire::packet::MAX_UDP_PAYLOAD;
use teredo::wire::TeredoPacket;
use teredo::DropReason;

use crate::inproc::in_netns;
use crate::netns::Netns;

/// A rule the misbehaving server breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers a cone RS from the address it arrived on (RFC 4380 §5.3.2: the RA must come
    /// from the other address).
    ConeFromSameAddress,
    /// Relays a bubble whose Teredo source does not embed the sender's mapping (RFC 4380
    /// §5.3.1 case 5 / §5.3: spoofed sources must be discarded), with the sender's real
    /// mapping as origin indication, as a server that skips the check would.
    ForwardSpoofedBubble,
}

impl Fault {
    /// Both faults.
    pub const ALL: [Self; 2] = [Self::ConeFromSameAddress, Self::ForwardSpoofedBubble];

    /// The implementation name of a server with this fault in the expectations file.
    pub fn implementation(self) -> &'static str {
        match self {
            Self::ConeFromSameAddress => "misbehaving-cone",
            Self::ForwardSpoofedBubble => "misbehaving-spoof",
        }
    }

    /// The conformance checks this fault breaks (TEREDO.md (b) numbering): exactly these may
    /// fail against a server with this fault.
    pub fn breaks(self) -> &'static [&'static str] {
        match self {
            // S03 sends a cone RS from a link-local IID of its own too, and judges where
            // the RA comes from.
            Self::ConeFromSameAddress => &["S02", "S03"],
            Self::ForwardSpoofedBubble => &["S08"],
        }
    }
}

/// The server running on its own thread; dropping it stops the thread.
#[derive(Debug)]
pub struct MisbehavingServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl MisbehavingServer {
    /// Binds `primary`:3544 and `secondary`:3544 (addresses of `ns`) and a raw IPv6 socket
    /// in `ns`, and serves with `faults` until dropped or [`stop`](Self::stop)ped.
    pub fn start(
        ns: &Netns,
        primary: Ipv4Addr,
        secondary: Ipv4Addr,
        faults: &[Fault],
    ) -> Result<Self> {
        let port = teredo::addr::TEREDO_PORT;
        let (p, s, raw) = in_netns(ns, || {
            let p = UdpSocket::bind(SocketAddrV4::new(primary, port))
                .with_context(|| format!("bind {primary}:{port}"))?;
            let s = UdpSocket::bind(SocketAddrV4::new(secondary, port))
                .with_context(|| format!("bind {secondary}:{port}"))?;
            Ok((p, s, raw_ipv6()?))
        })?;
        let mut cfg = ServerConfig::new(primary);
        cfg.secondary = secondary;
        let driver = Driver {
            core: Server::new(cfg),
            sockets: [p, s],
            raw,
            faults: faults.to_vec(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("misbehaving-server".into())
            .spawn(move || driver.serve(&flag))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and returns how its loop ended.
    pub fn stop(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("misbehaving server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for MisbehavingServer {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

struct Driver {
    core: Server,
    /// Primary, secondary.
    sockets: [UdpSocket; 2],
    raw: OwnedFd,
    faults: Vec<Fault>,
}

impl Driver {
    fn serve(mut self, stop: &AtomicBool) -> Result<()> {
        let mut buf = vec![0u8; MAX_UDP_PAYLOAD + 64];
        let mut out = vec![0u8; MAX_UDP_PAYLOAD];
        for s in &self.sockets {
            s.set_nonblocking(true)?;
        }
        while !stop.load(Ordering::Relaxed) {
            let mut fds = self.sockets.each_ref().map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            // SAFETY: two valid pollfds.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, 50) };
            if rc <= 0 {
                continue;
            }
            for (i, local) in [(0, Local::Primary), (1, Local::Secondary)] {
                if fds[i].revents == 0 {
                    continue;
                }
                while let Ok((n, std::net::SocketAddr::V4(from))) =
                    self.sockets[i].recv_from(&mut buf)
                {
                    self.datagram(local, from, &buf[..n], &mut out)?;
                }
            }
        }
        Ok(())
    }

    fn has(&self, f: Fault) -> bool {
        self.faults.contains(&f)
    }

    /// One datagram in, at most one out, with the faults applied.
    fn datagram(
        &mut self,
        local: Local,
        from: SocketAddrV4,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        let now = Instant::now();
        let mut origin_fix = None;
        match self.core.handle_udp(now, local, from, data) {
            Ok(_) => {}
            Err(DropReason::SpoofedSource) if self.has(Fault::ForwardSpoofedBubble) => {
                // Skip the mapping check: let the core believe the datagram came from the
                // mapping its source embeds, then put the real sender in the origin
                // indication.
                let Some(claimed) = spoofed_bubble_claim(data) else {
                    return Ok(());
                };
                if self.core.handle_udp(now, local, claimed, data).is_err() {
                    return Ok(());
                }
                origin_fix = Some(from);
            }
            Err(_) => return Ok(()),
        }
        let Some(output) = self.core.poll_output(out) else {
            return Ok(());
        };
        match output {
            Output::Udp {
                local: reply_from,
                to,
                len,
                kind,
            } => {
                let reply_from = if kind == teredo::io::Kind::RouterAdvertisement
                    && self.has(Fault::ConeFromSameAddress)
                {
                    // The core answers a cone RS from the other address; this one does not.
                    local
                } else {
                    reply_from
                };
                if let Some(real) = origin_fix {
                    if len >= ORIGIN_LEN && out[..2] == ORIGIN_INDICATOR {
                        OriginIndication(real).emit(&mut out[..ORIGIN_LEN])?;
                    }
                }
                let socket = match reply_from {
                    Local::Primary | Local::Port(_) => &self.sockets[0],
                    Local::Secondary => &self.sockets[1],
                };
                // A datagram the kernel refuses (no route) is lost, as on a real server.
                let _ = socket.send_to(&out[..len], to);
            }
            Output::Ipv6 { len, .. } => send_native(&self.raw, &out[..len]),
            _ => {}
        }
        Ok(())
    }
}

/// The mapping a bubble's Teredo source claims, if `data` is a bubble from a Teredo source.
fn spoofed_bubble_claim(data: &[u8]) -> Option<SocketAddrV4> {
    let pkt = TeredoPacket::parse(data).ok()?;
    if !pkt.is_bubble() {
        return None;
    }
    TeredoAddr::from_ipv6(&pkt.src()).map(|t| t.mapped)
}

/// A raw `AF_INET6`/`IPPROTO_RAW` socket (header included), in the calling thread's
/// namespace.
fn raw_ipv6() -> Result<OwnedFd> {
    // SAFETY: socket(2) has no memory-safety preconditions.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        bail!("raw IPv6 socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends a complete IPv6 packet to its own destination; errors are losses.
fn send_native(fd: &OwnedFd, packet: &[u8]) {
    let Some(dst) = packet.get(24..40) else {
        return;
    };
    let mut octets = [0u8; 16];
    octets.copy_from_slice(dst);
    // SAFETY: plain old data; all-zero is valid.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_addr.s6_addr = Ipv6Addr::from(octets).octets();
    // SAFETY: valid fd, buffer and address of the advertised sizes.
    unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_names_its_implementation_and_checks() {
        for f in Fault::ALL {
            assert!(f.implementation().starts_with("misbehaving-"));
            assert!(!f.breaks().is_empty());
        }
    }
}
