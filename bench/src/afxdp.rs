//! The AF_XDP generator (`--generator afxdp`): the ring's frames copied once into the UMEM
//! of a transmit-only XDP socket on the generator's veth, one 2048-byte chunk per frame,
//! and sent by writing descriptors to the socket's TX ring and kicking the kernel with
//! `sendto` (no frame copied from user space per send, no `sendmmsg` headers).
//!
//! A veth has no zero-copy AF_XDP, so the socket runs in copy mode (zero-copy is tried
//! first, for other links): each `sendto` turns up to 32 descriptors into skbs and hands
//! them straight to the driver (no qdisc), as `PACKET_QDISC_BYPASS` does. No XDP program is
//! needed on either end for sending. It cycles through the same [`FrameRing`] order and is
//! paced by the same token bucket ([`pace`]), so its figures compare with the `AF_PACKET`
//! ones.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::afpacket::{pace, FrameRing, Offered};
use crate::topo::{INET_IF, NATIVE_IF};

/// Bytes of UMEM per frame (the smallest chunk the kernel accepts).
pub const CHUNK: usize = 2048;
/// Descriptors in the TX and completion rings.
const RING: u32 = 4096;
/// Frames written per [`pace`] burst at most, the unpaced burst: as many as one
/// `AF_PACKET` `sendmmsg`. Longer bursts (2048 was tried) overflow the 256-frame queue of
/// the device's veth: those frames are dropped (the generator veth's `tx_dropped`).
pub const MAX_BURST: u64 = 64;
/// A kick that moves nothing for this long gives up (what is left goes with the next one).
const STALL: Duration = Duration::from_millis(10);

/// Which generator sends the measured traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorKind {
    /// `AF_PACKET`, `sendmmsg` × 64, `PACKET_QDISC_BYPASS` ([`crate::afpacket`]).
    #[default]
    Afpacket,
    /// An `AF_XDP` socket's TX ring (this module).
    Afxdp,
}

impl GeneratorKind {
    /// `afpacket` / `afxdp`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Afpacket => "afpacket",
            Self::Afxdp => "afxdp",
        }
    }
}

/// An anonymous or socket mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: plain memory; the owner serialises access (`&mut self` or a `Mutex`).
unsafe impl Send for Mapping {}

impl Mapping {
    /// `len` bytes of `fd` at `offset`, or anonymous memory when `fd` is `None`.
    fn new(len: usize, fd: Option<&OwnedFd>, offset: u64) -> io::Result<Self> {
        let (flags, raw) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd.as_raw_fd()),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
            ),
        };
        let off = libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset"))?;
        // SAFETY: a fresh mapping chosen by the kernel; nothing aliases it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw,
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap gave NULL"))?,
            len,
        })
    }

    /// The address of byte `off` (checked to leave `room` bytes, aligned to `room`'s
    /// alignment `align`).
    fn at(&self, off: u64, room: usize, align: usize) -> *mut u8 {
        let off = usize::try_from(off).expect("offset fits");
        assert!(
            off + room <= self.len && off % align == 0,
            "ring offset {off}"
        );
        // SAFETY: in bounds (checked).
        unsafe { self.ptr.as_ptr().add(off) }
    }

    /// The `u32` at byte `off` as an atomic (ring producer and consumer indexes).
    fn atomic(&self, off: u64) -> &AtomicU32 {
        // SAFETY: in bounds and aligned (checked); the kernel shares the word atomically.
        unsafe { &*self.at(off, 4, 4).cast::<AtomicU32>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn setsockopt<T>(fd: &OwnedFd, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the advertised size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            std::ptr::from_ref(v).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A transmit-only XDP socket bound to queue 0 of one interface, with its UMEM.
pub struct XskTx {
    // Declared first: the socket closes before its rings and UMEM are unmapped.
    fd: OwnedFd,
    tx: Mapping,
    tx_off: libc::xdp_ring_offset,
    cq: Mapping,
    cq_off: libc::xdp_ring_offset,
    umem: Mapping,
    chunks: usize,
    /// Length of the frame in each chunk that holds one.
    lens: Vec<u32>,
    /// Our TX producer index (the shared one is written from it).
    prod: u32,
    /// The TX consumer index last seen.
    seen: u32,
    /// Frames the driver refused (`EBUSY`) not yet subtracted from what the kernel took
    /// (the consumer index shows them later).
    refused: u64,
    /// Frames the driver refused since the socket opened.
    refused_total: u64,
    zero_copy: bool,
}

impl std::fmt::Debug for XskTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskTx")
            .field("chunks", &self.chunks)
            .field("frames", &self.lens.len())
            .field("zero_copy", &self.zero_copy)
            .finish_non_exhaustive()
    }
}

impl XskTx {
    /// A socket on `ifname` (of the calling thread's namespace) whose UMEM holds up to
    /// `frames` frames: zero-copy if the driver has it, else copy mode. A socket on the same
    /// queue closed just before may hold it for a moment (`EBUSY`): retried for a second.
    pub fn open(ifname: &str, frames: usize) -> Result<Self> {
        let c = std::ffi::CString::new(ifname)?;
        // SAFETY: a NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {ifname}: {}", io::Error::last_os_error());
        }
        let chunks = frames.max(64).next_power_of_two();
        let start = Instant::now();
        loop {
            let r = Self::try_open(ifindex, chunks, libc::XDP_ZEROCOPY)
                .or_else(|_| Self::try_open(ifindex, chunks, libc::XDP_COPY));
            match r {
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed().as_secs() < 1 =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return r.with_context(|| format!("AF_XDP socket on {ifname}")),
            }
        }
    }

    fn try_open(ifindex: u32, chunks: usize, bind_flags: u16) -> io::Result<Self> {
        // SAFETY: socket(2) has no memory-safety preconditions.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let umem = Mapping::new(chunks * CHUNK, None, 0)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: umem.len as u64,
            chunk_size: CHUNK as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(&fd, libc::XDP_UMEM_REG, &reg)?;
        // The fill ring is unused (no receiving) but bind wants one.
        setsockopt(&fd, libc::XDP_UMEM_FILL_RING, &64u32)?;
        setsockopt(&fd, libc::XDP_UMEM_COMPLETION_RING, &RING)?;
        setsockopt(&fd, libc::XDP_TX_RING, &RING)?;
        let sndbuf: libc::c_int = 4 << 20;
        // SAFETY: a c_int option of the advertised size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&raw const sndbuf).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain data; all-zero is valid.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` is writable for `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&raw mut off).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let n = RING as usize;
        let tx = Mapping::new(
            off.tx.desc as usize + n * size_of::<libc::xdp_desc>(),
            Some(&fd),
            libc::XDP_PGOFF_TX_RING as u64,
        )?;
        let cq = Mapping::new(
            off.cr.desc as usize + n * size_of::<u64>(),
            Some(&fd),
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;
        let sxdp = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: bind_flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: 0,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: a valid sockaddr_xdp of the advertised size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sxdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let prod = tx.atomic(off.tx.producer).load(Ordering::Acquire);
        Ok(Self {
            fd,
            tx,
            tx_off: off.tx,
            cq,
            cq_off: off.cr,
            umem,
            chunks,
            lens: Vec::new(),
            prod,
            seen: prod,
            refused: 0,
            refused_total: 0,
            zero_copy: bind_flags == libc::XDP_ZEROCOPY,
        })
    }

    /// Frames the UMEM holds at most.
    pub fn capacity(&self) -> usize {
        self.chunks
    }

    /// Whether the driver took the socket in zero-copy mode (never on a veth).
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Writes `frames` (at most [`Self::capacity`], each at most [`CHUNK`] bytes) into the
    /// UMEM, chunk `i` for frame `i`. Call with nothing in flight ([`Self::drain`]).
    pub fn load(&mut self, frames: &[Vec<u8>]) -> Result<()> {
        if frames.len() > self.chunks {
            bail!("{} frames for a UMEM of {}", frames.len(), self.chunks);
        }
        self.lens.clear();
        for (i, f) in frames.iter().enumerate() {
            if f.len() > CHUNK {
                bail!("a {}-byte frame does not fit a {CHUNK}-byte chunk", f.len());
            }
            // SAFETY: chunk `i` is inside the UMEM (`i < chunks`), `f` fits it, and the
            // kernel reads the UMEM only for descriptors in flight (none).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    f.as_ptr(),
                    self.umem.ptr.as_ptr().add(i * CHUNK),
                    f.len(),
                );
            }
            self.lens.push(f.len() as u32);
        }
        Ok(())
    }

    /// The kernel's TX consumer index.
    fn consumer(&self) -> u32 {
        self.tx.atomic(self.tx_off.consumer).load(Ordering::Acquire)
    }

    /// Frees the completion ring (the addresses are not needed: the frames never change).
    fn reap(&mut self) {
        let prod = self.cq.atomic(self.cq_off.producer).load(Ordering::Acquire);
        self.cq
            .atomic(self.cq_off.consumer)
            .store(prod, Ordering::Release);
    }

    /// Frames the kernel took from the TX ring and the driver accepted, since the last
    /// call.
    fn taken(&mut self) -> u64 {
        let c = self.consumer();
        let n = u64::from(c.wrapping_sub(self.seen));
        self.seen = c;
        let r = self.refused.min(n);
        self.refused -= r;
        n - r
    }

    /// Queues up to `n` frames starting at frame `*next` (round robin over the loaded
    /// frames, `*next` moving on), then kicks the kernel until it took everything queued (or
    /// nothing moved for 10 ms); how many frames the driver accepted during the call. Like
    /// `sendmmsg` on `AF_PACKET`, a frame the driver refuses (a veth whose peer's queue is
    /// full) is not counted as sent.
    pub fn send(&mut self, next: &mut usize, n: u64) -> io::Result<u64> {
        let frames = self.lens.len();
        if frames == 0 {
            return Err(io::Error::other("no frames loaded"));
        }
        self.reap();
        let free = RING - self.prod.wrapping_sub(self.consumer());
        let k = u32::try_from(n).unwrap_or(u32::MAX).min(free);
        let descs = self
            .tx
            .at(
                self.tx_off.desc,
                RING as usize * size_of::<libc::xdp_desc>(),
                align_of::<libc::xdp_desc>(),
            )
            .cast::<libc::xdp_desc>();
        for i in 0..k {
            let slot = (self.prod.wrapping_add(i) & (RING - 1)) as usize;
            let d = libc::xdp_desc {
                addr: (*next * CHUNK) as u64,
                len: self.lens[*next],
                options: 0,
            };
            // SAFETY: `slot < RING`, inside the mapped descriptor array; the kernel reads
            // the slot only once the producer index below passes it.
            unsafe { descs.add(slot).write(d) };
            *next = (*next + 1) % frames;
        }
        self.prod = self.prod.wrapping_add(k);
        self.tx
            .atomic(self.tx_off.producer)
            .store(self.prod, Ordering::Release);
        self.kick(STALL)?;
        Ok(self.taken())
    }

    /// Kicks until the TX ring is empty, or nothing moved for `stall`.
    fn kick(&mut self, stall: Duration) -> io::Result<()> {
        let mut last = self.consumer();
        let mut since = Instant::now();
        while last != self.prod {
            // SAFETY: no buffer: a bare kick of the TX ring.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                // EAGAIN: more to send, or the completion ring or send buffer is full;
                // EBUSY: the driver refused one frame (NET_XMIT_DROP; the kernel consumed
                // its descriptor); ENOBUFS: out of skbs for now. All retried.
                match e.raw_os_error() {
                    Some(libc::EBUSY) => {
                        self.refused += 1;
                        self.refused_total += 1;
                    }
                    Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => {}
                    _ => return Err(e),
                }
            }
            self.reap();
            let c = self.consumer();
            if c != last {
                last = c;
                since = Instant::now();
            } else if since.elapsed() > stall {
                break;
            }
        }
        Ok(())
    }

    /// Kicks out whatever is still queued (for at most `stall` without progress); how many
    /// frames the driver accepted.
    pub fn drain(&mut self, stall: Duration) -> io::Result<u64> {
        self.kick(stall)?;
        Ok(self.taken())
    }
}

/// The generator's two AF_XDP sockets, each grown (reopened) when a ring has more frames
/// than its UMEM holds.
#[derive(Debug)]
pub struct AfXdpSender {
    inet: Mutex<Option<XskTx>>,
    native: Mutex<Option<XskTx>>,
}

impl AfXdpSender {
    /// Opens a socket on each link (call inside `gen`).
    pub fn open() -> Result<Self> {
        Ok(Self {
            inet: Mutex::new(Some(XskTx::open(INET_IF, 1024)?)),
            native: Mutex::new(Some(XskTx::open(NATIVE_IF, 1024)?)),
        })
    }

    /// Sends frames from `ring` out of `ifname` ([`INET_IF`] or [`NATIVE_IF`]) for
    /// `duration`: as fast as possible (`rate` `None`, [`MAX_BURST`] frames per kick) or
    /// paced at `rate` frames per second by [`pace`]. Stops early when `stop` is set;
    /// what is still queued then is kicked out and counted.
    pub fn blast(
        &self,
        ifname: &str,
        ring: &mut FrameRing,
        rate: Option<f64>,
        duration: Duration,
        stop: &AtomicBool,
    ) -> Result<Offered> {
        let mut guard = if ifname == NATIVE_IF {
            self.native.lock()
        } else {
            self.inet.lock()
        }
        .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.as_ref().is_none_or(|x| x.capacity() < ring.len()) {
            // The old socket must go first: one socket per queue.
            *guard = None;
            *guard = Some(XskTx::open(ifname, ring.len())?);
        }
        let x = guard.as_mut().expect("opened above");
        x.drain(STALL)?;
        x.load(ring.frames())?;
        let mut next = ring.position();
        let refused = x.refused_total;
        let mut o = pace(rate, duration, stop, MAX_BURST, |n| x.send(&mut next, n));
        o.sent += x.drain(Duration::from_millis(100))?;
        o.refused = x.refused_total - refused;
        ring.seek(next);
        Ok(o)
    }
}
