//! The generator: complete Ethernet frames written with `sendmmsg` (batches of 64) on an
//! `AF_PACKET` socket with `PACKET_QDISC_BYPASS`, paced by a token bucket; and an
//! `AF_PACKET` receive socket for the trust set-up.
//!
//! The transmit socket is opened with protocol 0, so the kernel never hands it received
//! frames (no per-packet clone on the sink side while measuring). Frames are built once
//! per peer ([`FrameRing`]); the generator cycles through them.

use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Frames per `sendmmsg` call.
pub const BATCH: usize = 64;

fn ifindex(ifname: &str) -> Result<libc::c_uint> {
    let c = std::ffi::CString::new(ifname)?;
    // SAFETY: a NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {ifname}: {}", io::Error::last_os_error());
    }
    Ok(i)
}

fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid descriptor and a c_int option of the advertised size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An `AF_PACKET` raw socket bound to one interface (of the calling thread's namespace).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifname: String,
}

impl PacketSocket {
    fn open(ifname: &str, protocol: u16) -> Result<Self> {
        let index = ifindex(ifname)?;
        let proto_be = protocol.to_be();
        // SAFETY: socket(2) has no memory-safety preconditions.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto_be),
            )
        };
        if fd < 0 {
            bail!(
                "AF_PACKET socket: {} (needs CAP_NET_RAW)",
                io::Error::last_os_error()
            );
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = proto_be;
        sll.sll_ifindex = index as libc::c_int;
        // SAFETY: a valid sockaddr_ll of the advertised size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            bail!("bind AF_PACKET to {ifname}: {}", io::Error::last_os_error());
        }
        Ok(Self {
            fd,
            ifname: ifname.to_owned(),
        })
    }

    /// A transmit-only socket on `ifname` that bypasses the qdisc.
    pub fn transmitter(ifname: &str) -> Result<Self> {
        let s = Self::open(ifname, 0)?;
        setsockopt_int(&s.fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
            .map_err(|e| anyhow::anyhow!("PACKET_QDISC_BYPASS on {ifname}: {e}"))?;
        setsockopt_int(&s.fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20)
            .map_err(|e| anyhow::anyhow!("SO_SNDBUFFORCE on {ifname}: {e}"))?;
        Ok(s)
    }

    /// A socket receiving every frame on `ifname` (both directions), with a `rcvbuf`-byte
    /// buffer.
    pub fn receiver(ifname: &str, rcvbuf: usize) -> Result<Self> {
        let s = Self::open(ifname, libc::ETH_P_ALL as u16)?;
        let size = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
        setsockopt_int(&s.fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size)
            .map_err(|e| anyhow::anyhow!("SO_RCVBUFFORCE on {ifname}: {e}"))?;
        Ok(s)
    }

    /// A socket receiving the IPv4 frames on `ifname` with a `rcvbuf`-byte buffer and kernel
    /// receive timestamps ([`Self::recv_timestamped`]).
    pub fn timestamped_receiver(ifname: &str, rcvbuf: usize) -> Result<Self> {
        let s = Self::open(ifname, libc::ETH_P_IP as u16)?;
        let size = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
        setsockopt_int(&s.fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size)
            .map_err(|e| anyhow::anyhow!("SO_RCVBUFFORCE on {ifname}: {e}"))?;
        setsockopt_int(&s.fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
            .map_err(|e| anyhow::anyhow!("SO_TIMESTAMPNS on {ifname}: {e}"))?;
        Ok(s)
    }

    /// Receives one frame within `timeout` (`None` on timeout): its length, `sll_pkttype`,
    /// and the kernel's receive time (CLOCK_REALTIME, ns) when the socket asked for one.
    pub fn recv_timestamped(
        &self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<Option<(usize, u8, Option<u64>)>> {
        if !self.readable_within(timeout) {
            return Ok(None);
        }
        // SAFETY: plain data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // Room for one timespec control message (and some to spare), 8-byte aligned.
        let mut control = [0u64; 16];
        // SAFETY: plain data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&raw mut sll).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control);
        // SAFETY: every pointer in `msg` points at live storage of the advertised size.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
        let Ok(n) = usize::try_from(n) else {
            return self.recv_failed(io::Error::last_os_error());
        };
        let mut stamp = None;
        // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
        // msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                c = libc::CMSG_NXTHDR(&raw const msg, c);
            }
        }
        Ok(Some((n, sll.sll_pkttype, stamp)))
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Sends `frames` (in batches of [`BATCH`]); how many the kernel took.
    pub fn send_frames(&self, frames: &[&[u8]]) -> usize {
        let mut sent = 0;
        for chunk in frames.chunks(BATCH) {
            let mut iov: Vec<libc::iovec> = chunk
                .iter()
                .map(|f| libc::iovec {
                    iov_base: f.as_ptr().cast_mut().cast(),
                    iov_len: f.len(),
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = iov
                .iter_mut()
                .map(|v| mmsghdr(std::ptr::from_mut(v)))
                .collect();
            let mut done = 0;
            // Bounded: every round either sends something or gives up.
            while done < hdrs.len() {
                match sendmmsg(&self.fd, &mut hdrs[done..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => done += n,
                }
            }
            sent += done;
        }
        sent
    }

    /// Receives one frame within `timeout`: its length and `sll_pkttype`
    /// (`PACKET_OUTGOING` for our own transmissions); `None` on timeout.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<(usize, u8)>> {
        if !self.readable_within(timeout) {
            return Ok(None);
        }
        match testkit::packet::recv_ll(self.fd.as_fd(), buf) {
            Ok((n, sll)) => Ok(Some((n, sll.sll_pkttype))),
            Err(e) => self.recv_failed(e),
        }
    }

    /// Whether a frame is waiting, or arrives within `timeout`.
    fn readable_within(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        r > 0
    }

    /// After a receive failed with `e`: nothing there (`None`; another thread took the
    /// frame, or a signal came), or the error.
    fn recv_failed<T>(&self, e: io::Error) -> Result<Option<T>> {
        if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
            Ok(None)
        } else {
            bail!("recv on {}: {e}", self.ifname)
        }
    }
}

fn mmsghdr(iov: *mut libc::iovec) -> libc::mmsghdr {
    // SAFETY: msghdr is plain data; all-zero is valid (no name, no control).
    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
    h.msg_hdr.msg_iov = iov;
    h.msg_hdr.msg_iovlen = 1;
    h
}

fn sendmmsg(fd: &OwnedFd, hdrs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let n = libc::c_uint::try_from(hdrs.len()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: `hdrs` are valid mmsghdrs whose iovecs point at live buffers.
    let r = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), n, 0) };
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// Frames built once, sent in order over and over: `hdrs[j]` describes frame `j % n`, and
/// there are `n + BATCH` of them, so any [`BATCH`] consecutive frames are one slice.
pub struct FrameRing {
    frames: Vec<Vec<u8>>,
    _iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    n: usize,
    pos: usize,
}

impl std::fmt::Debug for FrameRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameRing")
            .field("frames", &self.n)
            .finish()
    }
}

impl FrameRing {
    /// A ring of `frames` (at least one).
    pub fn new(frames: Vec<Vec<u8>>) -> Self {
        assert!(!frames.is_empty(), "no frames");
        let n = frames.len();
        let mut iov: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr().cast_mut().cast(),
                iov_len: f.len(),
            })
            .collect();
        // The iovecs live on the heap and never move again: pointers into them stay valid
        // when the ring is moved.
        let base = iov.as_mut_ptr();
        let hdrs = (0..n + BATCH)
            .map(|j| {
                // SAFETY: `j % n < iov.len()`: in bounds of the allocation.
                mmsghdr(unsafe { base.add(j % n) })
            })
            .collect();
        Self {
            frames,
            _iov: iov,
            hdrs,
            n,
            pos: 0,
        }
    }

    /// Number of distinct frames.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false (a ring has at least one frame).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The frames, in the ring's order (for generators with their own copy).
    pub fn frames(&self) -> &[Vec<u8>] {
        &self.frames
    }

    /// The index of the next frame to send.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Makes frame `pos % len` the next to send (after a generator with its own copy sent
    /// up to it).
    pub fn seek(&mut self, pos: usize) {
        self.pos = pos % self.n;
    }

    /// Sends the next `count` (≤ [`BATCH`]) frames; how many the kernel took.
    pub fn send(&mut self, sock: &PacketSocket, count: usize) -> io::Result<usize> {
        let count = count.min(BATCH);
        let r = sendmmsg(&sock.fd, &mut self.hdrs[self.pos..self.pos + count])?;
        self.pos = (self.pos + r) % self.n;
        Ok(r)
    }
}

/// What one generator run offered.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Offered {
    /// Frames the kernel took.
    pub sent: u64,
    /// How long the run lasted (seconds).
    pub secs: f64,
    /// Failed sends (`sendmmsg` calls, AF_XDP kicks).
    pub errors: u64,
    /// Frames the driver refused, not in `sent` (AF_XDP: a veth whose peer's queue was
    /// full; `AF_PACKET` sees those as failed `sendmmsg` calls).
    pub refused: u64,
}

impl Offered {
    /// Frames per second actually offered.
    pub fn pps(&self) -> f64 {
        if self.secs > 0.0 {
            self.sent as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Sends frames from `ring` for `duration`: as fast as possible (`rate` `None`) or paced at
/// `rate` frames per second by [`pace`] in bursts of 1..=[`BATCH`] frames. Stops early when
/// `stop` is set.
pub fn blast(
    sock: &PacketSocket,
    ring: &mut FrameRing,
    rate: Option<f64>,
    duration: Duration,
    stop: &AtomicBool,
) -> Offered {
    pace(rate, duration, stop, BATCH as u64, |n| {
        ring.send(sock, n as usize).map(|m| m as u64)
    })
}

/// The token bucket every generator shares: calls `send(n)` (which sends up to `n` frames,
/// at most `max_burst`, and says how many went) for `duration`, as fast as possible
/// (`rate` `None`: `n` = `max_burst`) or paced at `rate` frames per second by a bucket
/// refilled continuously and spent in bursts of about one millisecond's worth
/// (1..=`max_burst` frames). If the generator falls behind it does not catch up by more
/// than a few bursts. A failed `send` is counted and followed by a 50 µs pause. Stops
/// early when `stop` is set.
pub fn pace(
    rate: Option<f64>,
    duration: Duration,
    stop: &AtomicBool,
    max_burst: u64,
    mut send: impl FnMut(u64) -> io::Result<u64>,
) -> Offered {
    let start = Instant::now();
    if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        // Nothing to offer (a search whose every step sent nothing asks for 0).
        return Offered::default();
    }
    let burst = rate.map_or(max_burst, |r| ((r / 1000.0) as u64).clamp(1, max_burst));
    let max_debt = 4 * max_burst;
    let mut sent = 0u64;
    // Tokens forgiven when the generator fell behind.
    let mut forgiven = 0u64;
    let mut errors = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let el = start.elapsed();
        if el >= duration {
            break;
        }
        let n = match rate {
            None => max_burst,
            Some(r) => {
                let due = ((r * el.as_secs_f64()) as u64).saturating_sub(forgiven);
                let mut owed = due.saturating_sub(sent);
                if owed > max_debt {
                    forgiven += owed - max_debt;
                    owed = max_debt;
                }
                if owed < burst {
                    let wait = Duration::from_secs_f64((burst - owed) as f64 / r);
                    if wait > Duration::from_micros(30) {
                        std::thread::sleep(wait.min(duration.saturating_sub(el)));
                    } else {
                        std::hint::spin_loop();
                    }
                    continue;
                }
                owed.min(max_burst)
            }
        };
        match send(n) {
            Ok(m) => sent += m,
            Err(_) => {
                errors += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
    Offered {
        sent,
        secs: start.elapsed().as_secs_f64(),
        errors,
        refused: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs [`pace`] with a sender that takes everything, recording the burst sizes.
    fn bursts(rate: Option<f64>, secs: f64, max_burst: u64) -> (Offered, Vec<u64>) {
        let mut seen = Vec::new();
        let o = pace(
            rate,
            Duration::from_secs_f64(secs),
            &AtomicBool::new(false),
            max_burst,
            |n| {
                seen.push(n);
                Ok(n)
            },
        );
        (o, seen)
    }

    #[test]
    fn paced_runs_offer_the_rate_in_millisecond_bursts() {
        // 200 k/s with room for 2048 per burst: ~200 per burst.
        let (o, seen) = bursts(Some(200_000.0), 0.2, 2048);
        assert!(
            (25_000..=42_000).contains(&o.sent),
            "sent {} in 0.2 s",
            o.sent
        );
        // About 1 ms worth per burst; more (up to 2048) only to catch up after a stall.
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        assert!((200..=400).contains(&median), "bursts {seen:?}");
        assert!(seen.iter().all(|&n| n <= 2048), "bursts {seen:?}");
        // The AF_PACKET generator's bursts stop at one sendmmsg.
        let (_, seen) = bursts(Some(200_000.0), 0.05, BATCH as u64);
        assert!(seen.iter().all(|&n| n <= BATCH as u64));
    }

    #[test]
    fn unpaced_runs_send_full_bursts_and_nothing_is_offered_at_rate_zero() {
        let (o, seen) = bursts(None, 0.01, 2048);
        assert!(!seen.is_empty() && seen.iter().all(|&n| n == 2048));
        assert_eq!(o.sent, 2048 * seen.len() as u64);
        let (o, seen) = bursts(Some(0.0), 0.01, 64);
        assert_eq!((o.sent, seen.len()), (0, 0));
    }

    #[test]
    fn failed_sends_are_counted() {
        let o = pace(
            None,
            Duration::from_millis(5),
            &AtomicBool::new(false),
            64,
            |_| Err(io::Error::other("refused")),
        );
        assert_eq!(o.sent, 0);
        assert!(o.errors > 0);
    }
}
