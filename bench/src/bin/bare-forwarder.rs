//! `bare-forwarder`: the per-packet ceiling of PERF.md ("recvmmsg → check → TUN write; TUN
//! read → sendmmsg"). No Teredo logic at all: a fixed table of the bench's peers (Teredo
//! address → mapping); a datagram whose IPv6 source is in the table and whose outer source
//! is that peer's mapping is written to the TUN, a packet read from the TUN whose
//! destination is in the table is sent to that mapping. One thread, one UDP socket, one TUN
//! queue, `poll` on both. Stops on SIGINT/SIGTERM and prints its counters.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};
use clap::Parser;
use teredo_bench::frames::{peers, RELAY_PORT, RELAY_V4};
use teredo_bench::tun;

/// Packets per recvmmsg / TUN read burst / sendmmsg.
const BATCH: usize = 64;
/// Buffer per packet (TUN MTU 1280, plus room to detect oversize).
const BUF: usize = 2048;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Bare per-packet forwarder between a UDP socket and a TUN device (the bench's ceiling).
#[derive(Debug, Parser)]
#[command(name = "bare-forwarder", version)]
struct Args {
    /// UDP address to bind.
    #[arg(long, default_value_t = SocketAddrV4::new(RELAY_V4, RELAY_PORT))]
    bind: SocketAddrV4,
    /// TUN device to create (2001::/32 via fe80::1 is routed into it).
    #[arg(long, default_value = "teredo0")]
    tun: String,
    /// Peers in the fixed table (the bench's peers 0..N).
    #[arg(long, default_value_t = 1)]
    peers: u32,
}

#[derive(Debug, Default)]
struct Counters {
    t2n: u64,
    t2n_dropped: u64,
    n2t: u64,
    n2t_dropped: u64,
}

fn udp_socket(bind: SocketAddrV4) -> Result<OwnedFd> {
    // SAFETY: socket(2) has no memory-safety preconditions.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        bail!("UDP socket: {}", io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sa = sockaddr_in(bind);
    // SAFETY: a valid sockaddr_in of the advertised size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r != 0 {
        bail!("bind {bind}: {}", io::Error::last_os_error());
    }
    Ok(fd)
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = a.port().to_be();
    sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    sa
}

fn from_sockaddr_in(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    )
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Receive and send state: `BATCH` buffers, addresses and headers, allocated once.
struct Io {
    bufs: Vec<[u8; BUF]>,
    addrs: Vec<libc::sockaddr_in>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Io {
    fn new() -> Box<Self> {
        // SAFETY: plain data; all-zero is valid.
        let zero_sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut io = Box::new(Self {
            bufs: vec![[0u8; BUF]; BATCH],
            addrs: vec![zero_sa; BATCH],
            iov: Vec::with_capacity(BATCH),
            // SAFETY: plain data; all-zero is valid.
            hdrs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
        });
        for i in 0..BATCH {
            let base = io.bufs[i].as_mut_ptr();
            io.iov.push(libc::iovec {
                iov_base: base.cast(),
                iov_len: BUF,
            });
        }
        io
    }

    /// Points header `i` at buffer `i` (length `len`) and address `i`.
    fn arm(&mut self, i: usize, len: usize) {
        self.iov[i].iov_len = len;
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_iov = &raw mut self.iov[i];
        h.msg_iovlen = 1;
        h.msg_name = (&raw mut self.addrs[i]).cast();
        h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        self.hdrs[i].msg_len = 0;
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(c) => {
            eprintln!(
                "bare-forwarder: t2n {} (dropped {}), n2t {} (dropped {})",
                c.t2n, c.t2n_dropped, c.n2t, c.n2t_dropped
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bare-forwarder: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<Counters> {
    // SAFETY: installing an async-signal-safe handler (one atomic store).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let table: HashMap<[u8; 16], SocketAddrV4> = peers(args.peers)
        .iter()
        .map(|p| (p.addr.octets(), p.mapped))
        .collect();
    let tun_fd = tun::open(&args.tun)?;
    tun::configure(&args.tun)?;
    let udp = udp_socket(args.bind)?;
    eprintln!(
        "bare-forwarder: {} <-> {} with {} peers",
        args.bind,
        args.tun,
        table.len()
    );
    let mut io = Io::new();
    let mut c = Counters::default();
    let mut fds = [
        libc::pollfd {
            fd: udp.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: tun_fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    while !STOP.load(Ordering::Relaxed) {
        // SAFETY: two valid pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, 200) };
        if r <= 0 {
            continue;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            udp_to_tun(&udp, &tun_fd, &table, &mut io, &mut c);
        }
        if fds[1].revents & libc::POLLIN != 0 {
            tun_to_udp(&udp, &tun_fd, &table, &mut io, &mut c);
        }
    }
    Ok(c)
}

/// recvmmsg → check (outer source == the peer's mapping) → one TUN write per packet.
fn udp_to_tun(
    udp: &OwnedFd,
    tun: &OwnedFd,
    table: &HashMap<[u8; 16], SocketAddrV4>,
    io: &mut Io,
    c: &mut Counters,
) {
    for i in 0..BATCH {
        io.arm(i, BUF);
    }
    // SAFETY: BATCH armed headers pointing at live buffers and addresses.
    let n = unsafe {
        libc::recvmmsg(
            udp.as_raw_fd(),
            io.hdrs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let Ok(n) = usize::try_from(n) else { return };
    for i in 0..n {
        let len = io.hdrs[i].msg_len as usize;
        let pkt = &io.bufs[i][..len.min(BUF)];
        let from = from_sockaddr_in(&io.addrs[i]);
        let ok = len < BUF
            && pkt.len() >= 40
            && pkt[0] >> 4 == 6
            && pkt[8..24]
                .try_into()
                .ok()
                .and_then(|src: [u8; 16]| table.get(&src))
                == Some(&from);
        if ok && write_fd(tun.as_raw_fd(), pkt).is_ok() {
            c.t2n += 1;
        } else {
            c.t2n_dropped += 1;
        }
    }
}

/// TUN reads (up to a batch) → look up the mapping → one sendmmsg.
fn tun_to_udp(
    udp: &OwnedFd,
    tun: &OwnedFd,
    table: &HashMap<[u8; 16], SocketAddrV4>,
    io: &mut Io,
    c: &mut Counters,
) {
    let mut k = 0;
    for _ in 0..BATCH {
        let Ok(len) = read_fd(tun.as_raw_fd(), &mut io.bufs[k]) else {
            break;
        };
        let dst = io.bufs[k]
            .get(24..40)
            .and_then(|d| <[u8; 16]>::try_from(d).ok());
        match dst.and_then(|d| table.get(&d)) {
            Some(to) if (40..BUF).contains(&len) => {
                io.addrs[k] = sockaddr_in(*to);
                io.arm(k, len);
                k += 1;
            }
            _ => c.n2t_dropped += 1,
        }
    }
    let mut done = 0;
    // Bounded: each round sends something or stops.
    while done < k {
        // SAFETY: `k - done` armed headers pointing at live buffers and addresses.
        let r = unsafe {
            libc::sendmmsg(
                udp.as_raw_fd(),
                io.hdrs[done..].as_mut_ptr(),
                (k - done) as libc::c_uint,
                0,
            )
        };
        match usize::try_from(r) {
            Ok(0) | Err(_) => break,
            Ok(m) => done += m,
        }
    }
    c.n2t += done as u64;
    c.n2t_dropped += (k - done) as u64;
}
