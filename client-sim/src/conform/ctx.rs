//! The context one check runs in: the target, UDP endpoints the check opens, and the trace of
//! every datagram sent and received (the evidence in the report and the pcap).
//!
//! Each check opens its own endpoints, so a late answer to one check can never be taken for
//! an answer in the next; they close when the check ends.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::RngCore as _;
use serde::Serialize;

use super::target::Target;

/// One of the check's endpoints (an index into its sockets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ep(usize);

/// A received datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rx {
    /// The endpoint it arrived on.
    pub ep: Ep,
    /// Its source.
    pub from: SocketAddr,
    /// When, since the check started.
    pub at: Duration,
    /// The UDP payload.
    pub bytes: Vec<u8>,
}

/// Direction of a traced datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// From the tool to the target.
    Sent,
    /// From the target to the tool.
    Received,
}

/// One datagram of the evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Traced {
    /// Microseconds since the check started.
    pub at_us: u64,
    /// Sent or received.
    pub dir: Dir,
    /// The tool's endpoint.
    pub local: SocketAddr,
    /// The other end.
    pub remote: SocketAddr,
    /// The UDP payload, hex.
    pub hex: String,
    /// What the check meant by it (sent) or what it was taken for (received), if said.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// Microseconds since the run started (the pcap's clock and order: the pcap holds the
    /// datagrams of every check sorted by this).
    pub run_us: u64,
    /// The raw bytes (the pcap's payload).
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

/// The context of one check.
pub struct Ctx<'a> {
    /// What is tested, with what.
    pub target: &'a Target,
    run_start: Instant,
    start: Instant,
    sockets: Vec<UdpSocket>,
    /// The raw IPv4 socket of [`Ctx::send_forged`], opened on first use.
    raw4: Option<socket2::Socket>,
    /// Indices of the raw ICMPv6 endpoints ([`Ctx::icmp6_echo_raw`]), read with `recvmsg`.
    raw6: Vec<usize>,
    trace: Vec<Traced>,
    rng: rand_chacha::ChaCha8Rng,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("sockets", &self.sockets.len())
            .field("trace", &self.trace.len())
            .finish()
    }
}

impl<'a> Ctx<'a> {
    /// A fresh context; `run_start` is the start of the whole run, `seed` makes nonces and
    /// ports of random choice repeatable.
    pub fn new(target: &'a Target, run_start: Instant, seed: u64) -> Self {
        use rand::SeedableRng as _;
        Self {
            target,
            run_start,
            start: Instant::now(),
            sockets: Vec::new(),
            raw4: None,
            raw6: Vec::new(),
            trace: Vec::new(),
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A UDP endpoint on the tool's IPv4 address, ephemeral port.
    pub fn udp(&mut self) -> anyhow::Result<Ep> {
        self.udp_at(SocketAddrV4::new(self.target.local, 0).into())
    }

    /// A UDP endpoint bound to `addr` (IPv4 or IPv6).
    pub fn udp_at(&mut self, addr: SocketAddr) -> anyhow::Result<Ep> {
        let s = UdpSocket::bind(addr).with_context(|| format!("cannot bind UDP {addr}"))?;
        s.set_nonblocking(true)?;
        self.sockets.push(s);
        Ok(Ep(self.sockets.len() - 1))
    }

    /// The bound address of `ep`.
    pub fn addr(&self, ep: Ep) -> SocketAddr {
        self.sockets[ep.0]
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// The bound IPv4 address of `ep` (panics for an IPv6 endpoint: a bug in the check).
    pub fn addr4(&self, ep: Ep) -> SocketAddrV4 {
        match self.addr(ep) {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => panic!("endpoint {a} is IPv6"),
        }
    }

    /// Sends `bytes` from `ep` to `to`, traced with `note`.
    pub fn send(
        &mut self,
        ep: Ep,
        to: impl Into<SocketAddr>,
        bytes: &[u8],
        note: &str,
    ) -> anyhow::Result<()> {
        let to = to.into();
        let local = self.addr(ep);
        self.sockets[ep.0]
            .send_to(bytes, to)
            .with_context(|| format!("cannot send from {local} to {to}"))?;
        self.record(Dir::Sent, local, to, bytes, note);
        Ok(())
    }

    /// Sends `bytes` as a UDP datagram with a forged IPv4 source `from` (a raw `IP_HDRINCL`
    /// socket; UDP checksum 0, which IPv4 allows), traced with `note`. For sources no socket
    /// can bind: the server's own P:3544, or non-global addresses that are not local. Needs
    /// raw sockets ([`Target::need_raw`]). Sent to a local address, the datagram loops back
    /// over `lo` with its source intact.
    pub fn send_forged(
        &mut self,
        from: SocketAddrV4,
        to: SocketAddrV4,
        bytes: &[u8],
        note: &str,
    ) -> anyhow::Result<()> {
        if self.raw4.is_none() {
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
            )
            .context("raw IPv4 socket (needs CAP_NET_RAW)")?;
            self.raw4 = Some(s);
        }
        let packet = ipv4_udp(from, to, bytes)?;
        let raw = self.raw4.as_ref().expect("opened above");
        raw.send_to(
            &packet,
            &SocketAddr::from(SocketAddrV4::new(*to.ip(), 0)).into(),
        )
        .with_context(|| format!("cannot send forged {from} -> {to}"))?;
        self.record(Dir::Sent, from.into(), to.into(), bytes, note);
        Ok(())
    }

    /// An endpoint that receives the ICMPv6 echo requests this host receives natively (a
    /// raw ICMPv6 socket filtered to type 128): what a server's native side emits towards
    /// `--native-local`. A received datagram's bytes are the IPv6 packet, its header rebuilt
    /// from what the kernel reports (source, destination, hop limit; traffic class and flow
    /// label read as 0), and its source the IPv6 source, port 0. Needs raw sockets; sending
    /// on it is a bug in the check.
    pub fn icmp6_echo_raw(&mut self) -> anyhow::Result<Ep> {
        let s = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::RAW,
            Some(socket2::Protocol::ICMPV6),
        )
        .context("raw ICMPv6 socket (needs CAP_NET_RAW)")?;
        // ICMP6_FILTER (netinet/icmp6.h): a set bit blocks that type; pass only 128.
        let mut filter = [u32::MAX; 8];
        filter[128 / 32] &= !(1u32 << (128 % 32));
        // SAFETY: `filter` is the 32-byte struct icmp6_filter the option expects.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_ICMPV6,
                1, // ICMP6_FILTER
                filter.as_ptr().cast(),
                size_of_val(&filter) as libc::socklen_t,
            )
        };
        anyhow::ensure!(rc == 0, "ICMP6_FILTER: {}", std::io::Error::last_os_error());
        for opt in [libc::IPV6_RECVHOPLIMIT, libc::IPV6_RECVPKTINFO] {
            let on: libc::c_int = 1;
            // SAFETY: `on` is the int the option expects.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_IPV6,
                    opt,
                    std::ptr::from_ref(&on).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            anyhow::ensure!(
                rc == 0,
                "IPv6 socket option {opt}: {}",
                std::io::Error::last_os_error()
            );
        }
        s.set_nonblocking(true)?;
        self.sockets.push(UdpSocket::from(s));
        self.raw6.push(self.sockets.len() - 1);
        Ok(Ep(self.sockets.len() - 1))
    }

    /// Every datagram arriving on any endpoint within `window`.
    pub fn collect(&mut self, window: Duration) -> Vec<Rx> {
        self.recv_until(window, |_| false)
    }

    /// Datagrams arriving on any endpoint until one satisfies `done` (included) or `window`
    /// has passed.
    pub fn recv_until(&mut self, window: Duration, mut done: impl FnMut(&Rx) -> bool) -> Vec<Rx> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let mut progressed = false;
            for i in 0..self.sockets.len() {
                loop {
                    let (bytes, from) = if self.raw6.contains(&i) {
                        match recv_icmp6(&self.sockets[i], &mut buf) {
                            Some(got) => got,
                            None => break,
                        }
                    } else {
                        match self.sockets[i].recv_from(&mut buf) {
                            Ok((n, from)) => (buf[..n].to_vec(), from),
                            Err(_) => break,
                        }
                    };
                    progressed = true;
                    let rx = Rx {
                        ep: Ep(i),
                        from,
                        at: self.start.elapsed(),
                        bytes,
                    };
                    let local = self.addr(Ep(i));
                    self.record(Dir::Received, local, from, &rx.bytes, "");
                    let stop = done(&rx);
                    got.push(rx);
                    if stop {
                        return got;
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return got;
            }
            if !progressed {
                self.poll(deadline - now);
            }
        }
    }

    /// The first datagram satisfying `want` within `window` (others are still traced).
    pub fn expect_one(
        &mut self,
        window: Duration,
        mut want: impl FnMut(&Rx) -> bool,
    ) -> Option<Rx> {
        let got = self.recv_until(window, |rx| want(rx));
        got.into_iter().last().filter(|rx| want(rx))
    }

    /// Waits up to `max` for any endpoint to become readable.
    fn poll(&self, max: Duration) {
        let mut fds: Vec<libc::pollfd> = self
            .sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = libc::c_int::try_from(max.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        if fds.is_empty() {
            std::thread::sleep(max);
            return;
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    }

    /// Adds a note to the last traced datagram that came from `from` (what a received
    /// datagram was taken for).
    pub fn annotate(&mut self, rx: &Rx, note: &str) {
        let hex = hex(&rx.bytes);
        if let Some(t) = self
            .trace
            .iter_mut()
            .rev()
            .find(|t| t.dir == Dir::Received && t.remote == rx.from && t.hex == hex)
        {
            t.note = note.to_owned();
        }
    }

    /// Eight random bytes (nonces).
    pub fn nonce(&mut self) -> [u8; 8] {
        let mut n = [0u8; 8];
        self.rng.fill_bytes(&mut n);
        n
    }

    /// A random u32 (ports, identifiers).
    pub fn random_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }

    /// Time since the check started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Sleeps `d`, discarding nothing: whatever arrives meanwhile is traced and returned.
    pub fn wait(&mut self, d: Duration) -> Vec<Rx> {
        self.collect(d)
    }

    /// The evidence gathered so far.
    pub fn into_trace(self) -> Vec<Traced> {
        self.trace
    }

    fn record(
        &mut self,
        dir: Dir,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
        note: &str,
    ) {
        let now = Instant::now();
        self.trace.push(Traced {
            at_us: duration_us(now - self.start),
            run_us: duration_us(now - self.run_start),
            dir,
            local,
            remote,
            hex: hex(bytes),
            note: note.to_owned(),
            bytes: bytes.to_vec(),
        });
    }
}

/// Reads one message from a raw ICMPv6 socket with its ancillary data and rebuilds the IPv6
/// packet: `None` when nothing is waiting (or the kernel left out the destination).
fn recv_icmp6(sock: &UdpSocket, buf: &mut [u8]) -> Option<(Vec<u8>, SocketAddr)> {
    // SAFETY: all-zero is a valid sockaddr_in6 / msghdr; the pointers stored in `msg` stay
    // valid for the duration of the call, and CMSG_* walk only the control buffer the
    // kernel filled (msg_controllen is updated by recvmsg).
    unsafe {
        let mut from: libc::sockaddr_in6 = std::mem::zeroed();
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = std::ptr::from_mut(&mut from).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT);
        let n = usize::try_from(n).ok()?;

        let mut hop_limit = 0u8;
        let mut dst = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    let v = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                    hop_limit = u8::try_from(v).unwrap_or(0);
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    dst = Some(std::net::Ipv6Addr::from(info.ipi6_addr.s6_addr));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        let src = std::net::Ipv6Addr::from(from.sin6_addr.s6_addr);
        let mut packet = vec![0u8; 40 + n];
        teredo::wire::ipv6::emit_ipv6_header(&mut packet, src, dst?, 58, hop_limit, n).ok()?;
        packet[40..].copy_from_slice(&buf[..n]);
        Some((packet, std::net::SocketAddrV6::new(src, 0, 0, 0).into()))
    }
}

/// The forged datagram: an IPv4 and a UDP header (netsim's, with valid checksums; the
/// kernel fills in the identification) in front of `payload`.
fn ipv4_udp(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    netsim::pcap::ipv4_udp(from, to, 0, payload).context("cannot build the forged datagram")
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Lower-case hex, no separators.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_datagram_layout() {
        let p = ipv4_udp(
            "198.51.100.1:3544".parse().unwrap(),
            "198.51.100.2:3544".parse().unwrap(),
            &[1, 2, 3],
        )
        .unwrap();
        assert_eq!(p.len(), 31);
        assert_eq!(&p[2..4], &31u16.to_be_bytes());
        assert_eq!(p[9], 17);
        assert_eq!(&p[12..16], &[198, 51, 100, 1]);
        assert_eq!(&p[16..20], &[198, 51, 100, 2]);
        assert_eq!(&p[20..22], &3544u16.to_be_bytes());
        assert_eq!(&p[24..26], &11u16.to_be_bytes());
        assert_eq!(&p[28..], &[1, 2, 3]);
    }
}
