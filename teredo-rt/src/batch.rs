//! Batched UDP I/O: `recvmmsg` / `sendmmsg` with buffers allocated once.
//!
//! A relay or server spends most of its time in the kernel, one system call per datagram
//! each way. [`RecvBatch`] receives up to its capacity of datagrams in one `recvmmsg`;
//! [`SendBatch`] collects datagrams and sends them in one `sendmmsg`, optionally merging a
//! run of equal-length datagrams to the same destination into one `UDP_SEGMENT` (UDP GSO)
//! send, which the kernel splits into the original datagrams after routing them once.
//! A receive batch [`with_control`](RecvBatch::with_control) also reads each datagram's
//! kernel receive time (`SO_TIMESTAMPNS`) and `UDP_GRO` segment size.
//!
//! Both are plain buffers around a raw descriptor: they never block (`MSG_DONTWAIT`) and
//! report `WouldBlock`, so a tokio driver calls them inside `UdpSocket::try_io`. Nothing is
//! allocated per call; the `msghdr`/`iovec` arrays point into the batch's own heap buffers
//! and are refreshed before every call, so moving a batch is harmless.
//!
//! Linux only (`recvmmsg`, `sendmmsg`, `UDP_SEGMENT` since 4.18).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Most datagrams merged into one `UDP_SEGMENT` send (the kernel allows 64 or more).
pub const MAX_SEGMENTS: usize = 64;
/// Most bytes in one `UDP_SEGMENT` send (below the 65,507-byte IPv4 UDP payload limit).
pub const MAX_GSO_BYTES: usize = 65_000;

/// Size of a control buffer for one `UDP_SEGMENT` message (`CMSG_SPACE(2)` is 24 on 64-bit).
const CMSG_BYTES: usize = 32;

/// An aligned control-message buffer.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Cmsg([u8; CMSG_BYTES]);

/// Room for a received datagram's control messages: a timestamp (`CMSG_SPACE(16)`, 32)
/// and a `UDP_GRO` segment size (`CMSG_SPACE(4)`, 24).
const RECV_CMSG_BYTES: usize = 64;

/// An aligned control-message buffer for receiving.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct RecvCmsg([u8; RECV_CMSG_BYTES]);

fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain data (pointers and integers); all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid (AF_UNSPEC).
    unsafe { std::mem::zeroed() }
}

/// Decodes an `AF_INET`/`AF_INET6` socket address written by the kernel.
fn from_storage(sa: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match libc::c_int::from(sa.ss_family) {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which is smaller and
            // less aligned than sockaddr_storage.
            let a = unsafe { &*std::ptr::from_ref(sa).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*std::ptr::from_ref(sa).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Encodes `a` into `sa`; returns the length to pass to the kernel.
fn to_storage(a: SocketAddr, sa: &mut libc::sockaddr_storage) -> libc::socklen_t {
    *sa = zeroed_storage();
    match a {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger and more aligned than sockaddr_in.
            let s = unsafe { &mut *std::ptr::from_mut(sa).cast::<libc::sockaddr_in>() };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = a.port().to_be();
            s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let s = unsafe { &mut *std::ptr::from_mut(sa).cast::<libc::sockaddr_in6>() };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = a.port().to_be();
            s.sin6_addr.s6_addr = a.ip().octets();
            s.sin6_flowinfo = a.flowinfo();
            s.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// One datagram of a [`RecvBatch`].
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// Its bytes (at most the slot size).
    pub data: &'a [u8],
    /// Its source (`None` if the kernel gave no IPv4/IPv6 address).
    pub from: Option<SocketAddr>,
    /// The datagram was larger than the slot and was cut (`MSG_TRUNC`): treat as oversized.
    pub truncated: bool,
    /// The kernel's receive time (`SCM_TIMESTAMPNS`, CLOCK_REALTIME nanoseconds), when the
    /// batch reads control messages ([`RecvBatch::with_control`]) and the socket has
    /// `SO_TIMESTAMPNS` on ([`enable_rx_timestamps`]).
    pub kernel_time_ns: Option<u64>,
    /// With `UDP_GRO` on ([`enable_udp_gro`]) and control messages read: `data` holds
    /// several datagrams merged by the kernel, each this long (the last may be shorter).
    pub segment_size: Option<usize>,
}

/// Turns on `UDP_GRO`: a run of datagrams from one source may be read as one buffer of
/// equal segments ([`Received::segment_size`]), one receive for the run.
pub fn enable_udp_gro(fd: RawFd) -> io::Result<()> {
    set_flag(fd, libc::SOL_UDP, libc::UDP_GRO)
}

/// Turns on `SO_TIMESTAMPNS`: the kernel stamps every datagram as it arrives, so that a
/// receive time does not include the wait for the reader.
pub fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    set_flag(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS)
}

/// Sets the boolean socket option `level`/`name` to 1.
fn set_flag(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a c_int option of the advertised size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Receive buffers for `recvmmsg`: `capacity` slots of `slot` bytes each.
pub struct RecvBatch {
    slot: usize,
    bufs: Box<[u8]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// One control buffer per slot with [`Self::with_control`] (empty otherwise).
    ctrl: Box<[RecvCmsg]>,
    len: usize,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` only ever point into this batch's own heap
// buffers (refreshed before each call); nothing is shared with another thread.
unsafe impl Send for RecvBatch {}
// SAFETY: `&RecvBatch` only reads (no interior mutability).
unsafe impl Sync for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.capacity())
            .field("slot", &self.slot)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Buffers for `capacity` datagrams (at least 1) of up to `slot` bytes each. A slot of
    /// `MAX_DATAGRAM + 1` bytes takes any datagram; the pages are only touched when used.
    pub fn new(capacity: usize, slot: usize) -> Self {
        let capacity = capacity.max(1);
        let slot = slot.max(1);
        Self {
            slot,
            bufs: vec![0u8; capacity * slot].into_boxed_slice(),
            addrs: vec![zeroed_storage(); capacity].into_boxed_slice(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                capacity
            ]
            .into_boxed_slice(),
            hdrs: (0..capacity)
                .map(|_| libc::mmsghdr {
                    msg_hdr: zeroed_msghdr(),
                    msg_len: 0,
                })
                .collect(),
            ctrl: Box::default(),
            len: 0,
        }
    }

    /// The same batch, also reading each datagram's control messages: its kernel receive
    /// time (the socket needs [`enable_rx_timestamps`]) and its `UDP_GRO` segment size (the
    /// socket needs [`enable_udp_gro`]).
    pub fn with_control(mut self) -> Self {
        self.ctrl = vec![RecvCmsg([0; RECV_CMSG_BYTES]); self.capacity()].into_boxed_slice();
        self
    }

    /// Most datagrams one [`recv`](Self::recv) returns.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Datagrams held since the last [`recv`](Self::recv).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Receives up to `max` (capped at the capacity) datagrams from `fd` without waiting:
    /// their count (≥ 1), or `WouldBlock` when none is queued. Replaces what was held.
    pub fn recv(&mut self, fd: RawFd, max: usize) -> io::Result<usize> {
        self.len = 0;
        let n = max.clamp(1, self.capacity());
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i * self.slot..].as_mut_ptr().cast(),
                iov_len: self.slot,
            };
            let h = &mut self.hdrs[i];
            h.msg_hdr = zeroed_msghdr();
            h.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &raw mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_len = 0;
            if let Some(c) = self.ctrl.get_mut(i) {
                h.msg_hdr.msg_control = c.0.as_mut_ptr().cast();
                h.msg_hdr.msg_controllen = RECV_CMSG_BYTES as _;
            }
        }
        // SAFETY: `hdrs[..n]` are valid mmsghdrs whose name and iovec pointers refer to
        // live buffers of the advertised sizes, owned by `self` for the whole call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let got = usize::try_from(r).map_err(|_| io::Error::last_os_error())?;
        self.len = got.min(n);
        Ok(self.len)
    }

    /// Datagram `i` (< [`len`](Self::len)).
    pub fn get(&self, i: usize) -> Received<'_> {
        assert!(i < self.len, "datagram {i} of {}", self.len);
        let h = &self.hdrs[i].msg_hdr;
        let n = (self.hdrs[i].msg_len as usize).min(self.slot);
        Received {
            data: &self.bufs[i * self.slot..i * self.slot + n],
            from: from_storage(&self.addrs[i], h.msg_namelen),
            truncated: h.msg_flags & libc::MSG_TRUNC != 0,
            kernel_time_ns: None,
            segment_size: None,
        }
        .with_control(h, !self.ctrl.is_empty())
    }
}

impl Received<'_> {
    /// Reads the timestamp and GRO segment size from `h`'s control messages.
    fn with_control(mut self, h: &libc::msghdr, has_control: bool) -> Self {
        if !has_control || h.msg_control.is_null() || h.msg_controllen == 0 {
            return self;
        }
        // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
        // msg_controllen (which the kernel set to what it wrote).
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
                if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    self.kernel_time_ns = u64::try_from(ts.tv_sec)
                        .ok()
                        .zip(u64::try_from(ts.tv_nsec).ok())
                        .map(|(s, ns)| s * 1_000_000_000 + ns);
                } else if level == libc::SOL_UDP && kind == libc::UDP_GRO {
                    let seg: libc::c_int =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    self.segment_size = usize::try_from(seg).ok().filter(|s| *s > 0);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        self
    }
}

/// One entry of a [`SendBatch`]: one datagram, or a run of them sent as one GSO send.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: usize,
    len: usize,
    to: SocketAddr,
    /// Segment size (the first datagram's length).
    seg: usize,
    /// Datagrams in the entry.
    segs: usize,
    class: u8,
    /// More datagrams may join (the last one was full-sized).
    open: bool,
    /// Being sent one datagram at a time (the kernel refused the GSO send).
    split: bool,
    /// Datagrams of it already sent that way.
    split_sent: usize,
}

/// What happened to one entry of a [`SendBatch`]: reported once per entry.
#[derive(Debug)]
pub struct Sent {
    /// Datagrams it carried.
    pub datagrams: usize,
    /// Their bytes.
    pub bytes: usize,
    /// The class given to [`SendBatch::push`].
    pub class: u8,
    /// Why it was not sent (`None`: sent).
    pub error: Option<io::Error>,
}

/// Outgoing datagrams collected into one arena and sent with `sendmmsg`.
pub struct SendBatch {
    arena: Box<[u8]>,
    used: usize,
    entries: Vec<Entry>,
    /// First entry not yet sent.
    next: usize,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    cmsgs: Box<[Cmsg]>,
    gso: bool,
}

// SAFETY: as for `RecvBatch`: the raw pointers only point into this batch's own buffers.
unsafe impl Send for SendBatch {}
// SAFETY: `&SendBatch` only reads (no interior mutability).
unsafe impl Sync for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("entries", &self.entries.len())
            .field("next", &self.next)
            .field("used", &self.used)
            .field("gso", &self.gso)
            .finish_non_exhaustive()
    }
}

impl SendBatch {
    /// Room for `entries` sends (at least 1) and `bytes` bytes in all. With `gso`, runs of
    /// datagrams to one destination, of one class, all of the first one's length (the last
    /// may be shorter), become one `UDP_SEGMENT` send.
    pub fn new(entries: usize, bytes: usize, gso: bool) -> Self {
        let entries = entries.max(1);
        Self {
            arena: vec![0u8; bytes].into_boxed_slice(),
            used: 0,
            entries: Vec::with_capacity(entries),
            next: 0,
            addrs: vec![zeroed_storage(); entries].into_boxed_slice(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                entries
            ]
            .into_boxed_slice(),
            hdrs: (0..entries)
                .map(|_| libc::mmsghdr {
                    msg_hdr: zeroed_msghdr(),
                    msg_len: 0,
                })
                .collect(),
            cmsgs: vec![Cmsg([0; CMSG_BYTES]); entries].into_boxed_slice(),
            gso,
        }
    }

    /// Whether runs are merged into `UDP_SEGMENT` sends (turned off for good when the
    /// kernel refuses one).
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Nothing waiting to be sent.
    pub fn is_empty(&self) -> bool {
        self.next == self.entries.len()
    }

    /// Copies `data` in, to be sent to `to`. False (nothing copied) when the batch is
    /// full: send it first. `class` is the caller's label, reported back in [`Sent`];
    /// datagrams of different classes are never merged.
    pub fn push(&mut self, data: &[u8], to: SocketAddr, class: u8) -> bool {
        if self.used + data.len() > self.arena.len() {
            return false;
        }
        let pending = self.next < self.entries.len();
        if self.gso {
            let used = self.used;
            if let Some(e) = self.entries.last_mut().filter(|e| {
                pending
                    && e.open
                    && e.to == to
                    && e.class == class
                    && !data.is_empty()
                    && data.len() <= e.seg
                    && e.segs < MAX_SEGMENTS
                    && e.len + data.len() <= MAX_GSO_BYTES
                    && e.start + e.len == used
            }) {
                self.arena[self.used..self.used + data.len()].copy_from_slice(data);
                self.used += data.len();
                e.len += data.len();
                e.segs += 1;
                e.open = data.len() == e.seg;
                return true;
            }
        }
        if self.entries.len() == self.entries.capacity() {
            return false;
        }
        self.arena[self.used..self.used + data.len()].copy_from_slice(data);
        self.entries.push(Entry {
            start: self.used,
            len: data.len(),
            to,
            seg: data.len(),
            segs: 1,
            class,
            open: !data.is_empty(),
            split: false,
            split_sent: 0,
        });
        self.used += data.len();
        true
    }

    /// Sends what is pending without waiting, reporting each entry to `done` once.
    /// `Ok` when the batch is empty again (and reset), `WouldBlock` when the socket buffer
    /// is full: call again when writable, it resumes where it stopped. Per-datagram errors
    /// (unreachable destination...) are reported in [`Sent::error`] and skipped.
    pub fn send(&mut self, fd: RawFd, mut done: impl FnMut(Sent)) -> io::Result<()> {
        while self.next < self.entries.len() {
            if self.entries[self.next].split {
                self.send_split(fd, &mut done)?;
                continue;
            }
            let n = self.prepare();
            // SAFETY: `hdrs[next..next + n]` are valid mmsghdrs pointing into `arena`,
            // `addrs` and `cmsgs`, owned by `self` for the whole call.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[self.next..].as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            match usize::try_from(r) {
                Ok(sent) => {
                    let sent = sent.min(n);
                    for e in &self.entries[self.next..self.next + sent] {
                        done(Sent {
                            datagrams: e.segs,
                            bytes: e.len,
                            class: e.class,
                            error: None,
                        });
                    }
                    self.next += sent;
                }
                Err(_) => {
                    let err = io::Error::last_os_error();
                    match err.kind() {
                        io::ErrorKind::WouldBlock => return Err(err),
                        io::ErrorKind::Interrupted => {}
                        _ if self.entries[self.next].segs > 1 => {
                            // The kernel refused the GSO send (no checksum offload on the
                            // route, segment above the MTU...): send these one by one, and
                            // stop merging.
                            tracing::debug!(error = %err, "UDP_SEGMENT send refused; GSO off");
                            self.gso = false;
                            self.send_split(fd, &mut done)?;
                        }
                        _ => {
                            let e = self.entries[self.next];
                            done(Sent {
                                datagrams: e.segs,
                                bytes: e.len,
                                class: e.class,
                                error: Some(err),
                            });
                            self.next += 1;
                        }
                    }
                }
            }
        }
        self.clear();
        Ok(())
    }

    /// Drops everything pending (unreported).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.next = 0;
        self.used = 0;
    }

    /// Fills the headers of the pending entries; returns how many.
    fn prepare(&mut self) -> usize {
        let n = self.entries.len() - self.next;
        for i in self.next..self.entries.len() {
            let e = self.entries[i];
            let namelen = to_storage(e.to, &mut self.addrs[i]);
            self.iovs[i] = libc::iovec {
                iov_base: self.arena[e.start..].as_mut_ptr().cast(),
                iov_len: e.len,
            };
            let h = &mut self.hdrs[i];
            h.msg_hdr = zeroed_msghdr();
            h.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_iov = &raw mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_len = 0;
            if e.segs > 1 {
                let c = &mut self.cmsgs[i];
                c.0 = [0; CMSG_BYTES];
                h.msg_hdr.msg_control = c.0.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE is a pure computation.
                h.msg_hdr.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
                // SAFETY: the control buffer is CMSG_BYTES ≥ CMSG_SPACE(2) bytes, aligned
                // for cmsghdr, and `msg_control`/`msg_controllen` describe it.
                unsafe {
                    let cm = libc::CMSG_FIRSTHDR(&raw const h.msg_hdr);
                    (*cm).cmsg_level = libc::SOL_UDP;
                    (*cm).cmsg_type = libc::UDP_SEGMENT;
                    (*cm).cmsg_len = libc::CMSG_LEN(2) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), e.seg as u16);
                }
            }
        }
        n
    }

    /// Sends the datagrams of entry `next` one by one (resuming after `split_sent`), then
    /// reports it; `WouldBlock` leaves it to be resumed.
    fn send_split(&mut self, fd: RawFd, done: &mut impl FnMut(Sent)) -> io::Result<()> {
        let mut e = self.entries[self.next];
        let mut sa = zeroed_storage();
        let namelen = to_storage(e.to, &mut sa);
        let mut first_err = None;
        let mut failed = 0;
        while e.split_sent < e.segs {
            let off = e.start + e.split_sent * e.seg;
            let len = e.seg.min(e.start + e.len - off);
            // SAFETY: the arena range is valid for reads; `sa` holds `namelen` bytes.
            let r = unsafe {
                libc::sendto(
                    fd,
                    self.arena[off..].as_ptr().cast(),
                    len,
                    libc::MSG_DONTWAIT,
                    (&raw const sa).cast(),
                    namelen,
                )
            };
            if r < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => {
                        let pending = &mut self.entries[self.next];
                        pending.split = true;
                        pending.split_sent = e.split_sent;
                        return Err(err);
                    }
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        failed += 1;
                        first_err.get_or_insert(err);
                    }
                }
            }
            e.split_sent += 1;
        }
        let seg_bytes = |k: usize| k * e.seg;
        if failed < e.segs {
            done(Sent {
                datagrams: e.segs - failed,
                bytes: e.len.saturating_sub(seg_bytes(failed)),
                class: e.class,
                error: None,
            });
        }
        if let Some(err) = first_err {
            done(Sent {
                datagrams: failed,
                bytes: seg_bytes(failed).min(e.len),
                class: e.class,
                error: Some(err),
            });
        }
        self.next += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd as _;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Receives everything queued on `b` (waiting up to 2 s for `want` datagrams).
    fn drain(b: &UdpSocket, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut rb = RecvBatch::new(8, 2048);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while got.len() < want && std::time::Instant::now() < deadline {
            match rb.recv(b.as_raw_fd(), 8) {
                Ok(n) => {
                    for i in 0..n {
                        let r = rb.get(i);
                        assert!(!r.truncated);
                        got.push((r.data.to_vec(), r.from.unwrap()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn recv_takes_several_datagrams_with_sources_and_flags_truncation() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        let mut rb = RecvBatch::new(4, 100);
        assert_eq!(
            rb.recv(b.as_raw_fd(), 4).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..6u8 {
            a.send_to(&[i; 10], to).unwrap();
        }
        a.send_to(&[9; 150], to).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(rb.recv(b.as_raw_fd(), 10).unwrap(), 4, "capped at capacity");
        for i in 0..4 {
            let r = rb.get(i);
            assert_eq!(r.data, &[i as u8; 10]);
            assert_eq!(r.from, Some(a.local_addr().unwrap()));
            assert!(!r.truncated);
        }
        assert_eq!(rb.recv(b.as_raw_fd(), 4).unwrap(), 3);
        assert_eq!(rb.get(1).data, &[5; 10]);
        let big = rb.get(2);
        assert!(big.truncated, "150 bytes in a 100-byte slot");
        assert_eq!(big.data.len(), 100);
        assert_eq!(rb.len(), 3);
    }

    #[test]
    fn timestamped_recv_reads_the_kernel_receive_time() {
        let (a, b) = pair();
        enable_rx_timestamps(b.as_raw_fd()).unwrap();
        // The kernel turns its receive stamping on in deferred work: until then a datagram
        // is stamped when read.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        for i in 0..3u8 {
            a.send_to(&[i; 10], b.local_addr().unwrap()).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let mut rb = RecvBatch::new(4, 100).with_control();
        assert_eq!(rb.recv(b.as_raw_fd(), 4).unwrap(), 3);
        for i in 0..3 {
            let t = rb.get(i).kernel_time_ns.expect("a kernel timestamp");
            assert!((before..=after).contains(&t), "{before} <= {t} <= {after}");
        }
        // Without `with_control`, none (even though the socket stamps).
        a.send_to(&[7; 10], b.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut plain = RecvBatch::new(4, 100);
        assert_eq!(plain.recv(b.as_raw_fd(), 4).unwrap(), 1);
        assert_eq!(plain.get(0).kernel_time_ns, None);
    }

    #[test]
    fn gro_reads_a_gso_run_as_one_buffer_of_segments() {
        let (a, b) = pair();
        enable_udp_gro(b.as_raw_fd()).unwrap();
        let mut sb = SendBatch::new(4, 4096, true);
        for i in 0..5u8 {
            assert!(sb.push(&[i; 100], b.local_addr().unwrap(), 0));
        }
        sb.send(a.as_raw_fd(), |_| {}).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut rb = RecvBatch::new(8, MAX_GSO_BYTES + 1).with_control();
        let n = rb.recv(b.as_raw_fd(), 8).unwrap();
        let mut segs = Vec::new();
        for i in 0..n {
            let r = rb.get(i);
            let seg = r.segment_size.unwrap_or(r.data.len());
            segs.extend(r.data.chunks(seg).map(<[u8]>::to_vec));
        }
        assert_eq!(segs.len(), 5, "every datagram, merged or not");
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(s, &vec![i as u8; 100]);
        }
    }

    #[test]
    fn send_delivers_every_datagram_in_order() {
        let (a, b) = pair();
        let (c, d) = pair();
        let mut sb = SendBatch::new(16, 16 * 200, false);
        for i in 0..10u8 {
            let to = if i % 3 == 0 {
                d.local_addr()
            } else {
                b.local_addr()
            };
            assert!(sb.push(&[i; 50], to.unwrap(), i % 2));
        }
        let mut reports = Vec::new();
        sb.send(a.as_raw_fd(), |s| reports.push(s)).unwrap();
        assert!(sb.is_empty());
        assert_eq!(reports.len(), 10);
        assert!(reports
            .iter()
            .all(|s| s.error.is_none() && s.datagrams == 1));
        assert_eq!(reports[3].class, 1);
        let at_b: Vec<u8> = drain(&b, 6).iter().map(|(d, _)| d[0]).collect();
        assert_eq!(at_b, [1, 2, 4, 5, 7, 8]);
        let at_d: Vec<u8> = drain(&d, 4).iter().map(|(d, _)| d[0]).collect();
        assert_eq!(at_d, [0, 3, 6, 9]);
        drop(c);
    }

    #[test]
    fn gso_merges_runs_and_the_receiver_still_gets_each_datagram() {
        let (a, b) = pair();
        let (_c, d) = pair();
        let (tb, td) = (b.local_addr().unwrap(), d.local_addr().unwrap());
        let mut sb = SendBatch::new(8, 64 * 1024, true);
        // A run of 5 equal to b, a shorter last one closing it, one to d, 3 more to b.
        for i in 0..5u8 {
            assert!(sb.push(&[i; 300], tb, 0));
        }
        assert!(sb.push(&[5; 120], tb, 0));
        assert!(sb.push(&[6; 300], tb, 0), "after a short one: a new entry");
        assert!(sb.push(&[7; 300], td, 0));
        assert!(sb.push(&[8; 300], tb, 1), "another class: a new entry");
        assert!(sb.push(&[9; 300], tb, 1));
        let mut reports = Vec::new();
        sb.send(a.as_raw_fd(), |s| reports.push(s)).unwrap();
        let shape: Vec<(usize, usize, u8)> = reports
            .iter()
            .map(|s| {
                assert!(s.error.is_none(), "{:?}", s.error);
                (s.datagrams, s.bytes, s.class)
            })
            .collect();
        // Loopback takes UDP GSO (checksum offload): the kernel did not refuse the merge.
        assert!(sb.gso(), "UDP_SEGMENT refused on loopback");
        assert_eq!(
            shape,
            [(6, 1620, 0), (1, 300, 0), (1, 300, 0), (2, 600, 1)],
            "gso still on: {}",
            sb.gso()
        );
        let at_b = drain(&b, 9);
        let lens: Vec<(u8, usize)> = at_b.iter().map(|(d, _)| (d[0], d.len())).collect();
        assert_eq!(
            lens,
            [
                (0, 300),
                (1, 300),
                (2, 300),
                (3, 300),
                (4, 300),
                (5, 120),
                (6, 300),
                (8, 300),
                (9, 300)
            ]
        );
        assert!(at_b.iter().all(|(d, _)| d.iter().all(|&x| x == d[0])));
        assert_eq!(drain(&d, 1).len(), 1);
    }

    #[test]
    fn a_refused_gso_send_goes_out_one_by_one_and_gso_turns_off() {
        let (a, b) = pair();
        // SO_NO_CHECK (no UDP checksum) makes the kernel refuse UDP_SEGMENT sends.
        let one: libc::c_int = 1;
        // SAFETY: a valid int option on a live socket.
        let rc = unsafe {
            libc::setsockopt(
                a.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let tb = b.local_addr().unwrap();
        let mut sb = SendBatch::new(8, 8192, true);
        for i in 0..4u8 {
            assert!(sb.push(&[i; 200], tb, 3));
        }
        assert!(sb.push(&[4; 100], tb, 3));
        let mut reports = Vec::new();
        sb.send(a.as_raw_fd(), |s| reports.push(s)).unwrap();
        assert!(!sb.gso());
        assert_eq!(reports.len(), 1);
        assert!(reports[0].error.is_none());
        assert_eq!((reports[0].datagrams, reports[0].bytes), (5, 900));
        let got: Vec<(u8, usize)> = drain(&b, 5).iter().map(|(d, _)| (d[0], d.len())).collect();
        assert_eq!(got, [(0, 200), (1, 200), (2, 200), (3, 200), (4, 100)]);
        // No more merging.
        assert!(sb.push(&[5; 200], tb, 3));
        assert!(sb.push(&[6; 200], tb, 3));
        reports.clear();
        sb.send(a.as_raw_fd(), |s| reports.push(s)).unwrap();
        assert_eq!(reports.len(), 2);
    }

    #[test]
    fn push_refuses_when_full_and_errors_are_reported_per_entry() {
        let (a, b) = pair();
        let mut sb = SendBatch::new(2, 100, false);
        assert!(sb.push(&[1; 60], b.local_addr().unwrap(), 0));
        assert!(!sb.push(&[2; 60], b.local_addr().unwrap(), 0), "arena full");
        // Port 0 is not a valid destination: that entry fails alone.
        assert!(sb.push(&[3; 10], "127.0.0.1:0".parse().unwrap(), 7));
        assert!(
            !sb.push(&[4; 1], b.local_addr().unwrap(), 0),
            "entries full"
        );
        let mut reports = Vec::new();
        sb.send(a.as_raw_fd(), |s| reports.push(s)).unwrap();
        assert_eq!(reports.len(), 2);
        assert!(reports[0].error.is_none());
        assert_eq!(reports[1].class, 7);
        assert!(reports[1].error.is_some());
        assert_eq!(drain(&b, 1)[0].0, [1; 60]);
        // Reset: room again.
        assert!(sb.push(&[2; 60], b.local_addr().unwrap(), 0));
    }

    #[test]
    fn addresses_round_trip() {
        for a in ["192.0.2.1:3544", "[2001:db8::1]:80"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut s = zeroed_storage();
            let len = to_storage(a, &mut s);
            assert_eq!(from_storage(&s, len), Some(a));
        }
        assert_eq!(from_storage(&zeroed_storage(), 128), None);
    }
}
