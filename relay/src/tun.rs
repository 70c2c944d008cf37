//! The TUN device: the relay's native IPv6 side.
//!
//! Linux only. `/dev/net/tun` is opened once per worker and attached to the same interface
//! with `TUNSETIFF` and `IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE`: the kernel spreads the
//! packets it routes into the device over the queues by flow hash, and each worker reads
//! and writes its own queue. No packet-information header (Miredo uses one; it only
//! carries the protocol, and everything here is IPv6).
//!
//! Why raw ioctls and not a TUN crate: we need exactly three ioctls (`TUNSETIFF` per queue,
//! `SIOCSIFMTU`, `SIOCSIFFLAGS`) plus non-blocking `read`/`write`, all of which `libc`
//! (already a dependency) declares; `tun-rs` fits functionally but brings about fifteen
//! crates (route management, `nix`, Windows bindings) for features we do not use, and
//! still cannot install the route we want.
//!
//! Address and route are set with the `ip` command (iproute2), run once at start:
//! `ip -6 addr add fe80::ffff:ffff:ffff/64 dev NAME nodad` (Miredo's relay address) and
//! `ip -6 route replace 2001::/32 via fe80::1 dev NAME`. The route is a **gateway** route,
//! not on-link as Miredo installs it: on-link, the kernel creates one neighbour entry per
//! Teredo destination and collapses past `gc_thresh3` (PERF.md); via a gateway it keeps one.
//! A netlink crate would avoid the subprocess, but `ip` is what the operator would type,
//! is present wherever the relay can create a TUN, and fails with a readable message.
//! The device is not persistent: it disappears (with its route) when the relay exits.
//!
//! With TUN GSO (`--offload all|tun`, the default) the queues are opened with
//! `IFF_VNET_HDR`, and a run of same-flow UDP packets is written as one GSO packet
//! (`VIRTIO_NET_HDR_GSO_UDP_L4`), see [`crate::gso`].

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::config::TUN_MTU;
use crate::gso;

/// Link-local address put on the TUN (Miredo's relay uses the same).
pub const TUN_LINK_LOCAL: &str = "fe80::ffff:ffff:ffff/64";
/// The Teredo prefix routed into the TUN.
pub const TEREDO_ROUTE: &str = "2001::/32";
/// Gateway of that route: any link-local works on a point-to-point device without
/// neighbour discovery; a gateway keeps the neighbour cache at one entry.
pub const ROUTE_GATEWAY: &str = "fe80::1";

/// One queue of the TUN device, registered with tokio.
#[derive(Debug)]
pub(crate) struct TunQueue {
    fd: AsyncFd<OwnedFd>,
    /// Opened with `IFF_VNET_HDR`: every read and write starts with a `virtio_net_hdr`, and
    /// writes may be GSO packets (see [`gso`]).
    vnet: bool,
    /// GSO writes work (cleared for good when the kernel refuses one: before Linux 6.2 a
    /// TUN takes no USO packets).
    gso_ok: AtomicBool,
}

impl TunQueue {
    /// Reads one packet without waiting; `WouldBlock` when the queue is empty. With a
    /// virtio-net header, the header is read aside: no offload was negotiated
    /// (`TUNSETOFFLOAD` is never called), so the kernel hands over complete, checksummed,
    /// unsegmented packets and the header carries nothing we need.
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let fd = self.fd.get_ref().as_raw_fd();
        if !self.vnet {
            return read_fd(fd, buf);
        }
        let mut hdr = [0u8; gso::VNET_HDR_LEN];
        let iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
        ];
        // SAFETY: both iovecs describe live, writable buffers of the given lengths.
        let n = unsafe { libc::readv(fd, iov.as_ptr(), 2) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        Ok(n.saturating_sub(gso::VNET_HDR_LEN))
    }

    /// Writes a batch of IPv6 packets, reporting each packet's length (or the reason it was
    /// dropped) to `done`. With a virtio-net header, runs of same-flow UDP packets
    /// ([`gso::Runs`]) go out as one GSO write each: one system call and one pass through
    /// IPv6 forwarding per run; the kernel splits it into the original packets (checksums
    /// recomputed, which is why only packets whose checksum verifies are merged).
    pub(crate) async fn write_many<'a>(
        &self,
        packets: impl Iterator<Item = &'a [u8]>,
        done: &mut impl FnMut(Result<usize, teredo::DropReason>),
    ) {
        if !self.vnet {
            for p in packets {
                done(self.write(p).await.map(|()| p.len()).map_err(|e| {
                    tracing::debug!(error = %e, len = p.len(), "TUN write failed");
                    teredo::DropReason::SendFailed
                }));
            }
            return;
        }
        let mut runs = gso::Runs::new(packets, self.gso_ok.load(Ordering::Relaxed));
        while let Some(run) = runs.next_run() {
            let mut r = self.write_run(&run).await;
            if run.len() > 1
                && r.as_ref()
                    .is_err_and(|e| e.raw_os_error() == Some(libc::EINVAL))
            {
                if self.gso_ok.swap(false, Ordering::Relaxed) {
                    tracing::warn!("the kernel refuses GSO writes to the TUN; TUN GSO off");
                }
                r = Ok(());
                for p in run.packets() {
                    if let Err(e) = self.write_run(&gso::Run::single(p)).await {
                        r = Err(e);
                    }
                }
            }
            for p in run.packets() {
                done(match &r {
                    Ok(()) => Ok(p.len()),
                    Err(_) => Err(teredo::DropReason::SendFailed),
                });
            }
            if let Err(e) = r {
                tracing::debug!(error = %e, packets = run.len(), "TUN write failed");
            }
        }
    }

    /// Writes one run (one packet, or a GSO packet made of several), waiting if needed.
    async fn write_run(&self, run: &gso::Run<'_>) -> io::Result<()> {
        let mut iov = gso::IoVecs::default();
        let total = run.iovecs(&mut iov);
        let fd = self.fd.get_ref().as_raw_fd();
        let n = match writev_fd(fd, iov.as_slice()) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.fd
                    .async_io(Interest::WRITABLE, |f| {
                        writev_fd(f.as_raw_fd(), iov.as_slice())
                    })
                    .await?
            }
            r => r?,
        };
        if n == total {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "short TUN write: {n} of {total} bytes"
            )))
        }
    }

    /// Waits until the queue may be readable.
    pub(crate) async fn readable(
        &self,
    ) -> io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, OwnedFd>> {
        self.fd.readable().await
    }

    /// Writes one IPv6 packet, waiting if the queue is full (rare: a TUN write injects the
    /// packet into the stack).
    pub(crate) async fn write(&self, packet: &[u8]) -> io::Result<()> {
        if self.vnet {
            return self.write_run(&gso::Run::single(packet)).await;
        }
        let fd = self.fd.get_ref().as_raw_fd();
        let n = match write_fd(fd, packet) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.fd
                    .async_io(Interest::WRITABLE, |f| write_fd(f.as_raw_fd(), packet))
                    .await?
            }
            r => r?,
        };
        if n == packet.len() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "short TUN write: {n} of {} bytes",
                packet.len()
            )))
        }
    }
}

fn writev_fd(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: every iovec describes a live buffer valid for reads of its length.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `fd` is an open descriptor owned by the caller; `buf` is valid for writes of
    // `buf.len()` bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `fd` is an open descriptor owned by the caller; `buf` is valid for reads of
    // `buf.len()` bytes.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// An `ifreq` naming `name` (checked by the configuration: 1..=15 bytes, no NUL).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (arrays, integers and a union of them); all-zero is
    // a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req
}

/// Opens one queue of the multi-queue TUN `name` (creating the device with the first),
/// with a virtio-net header if `vnet`.
fn open_queue(name: &str, vnet: bool) -> io::Result<OwnedFd> {
    let path = c"/dev/net/tun";
    // SAFETY: a NUL-terminated path and plain flags.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot open /dev/net/tun: {e}"),
        ));
    }
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = ifreq(name);
    let vnet_flag = if vnet { libc::IFF_VNET_HDR } else { 0 };
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE | vnet_flag) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &raw mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// `ioctl(socket, request, ifreq)` on a throwaway `AF_INET6` datagram socket.
fn if_ioctl(request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: plain socket(2) call.
    let s = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `s` was just returned by socket(2).
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: the SIOC[GS]IF* requests read/write a `struct ifreq`, which `req` is.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), request, std::ptr::from_mut(req)) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs `ip ARGS…` and turns a failure into an error quoting its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        anyhow::anyhow!(
            "cannot run `ip {}`: {e} (iproute2 is needed for --native tun)",
            args.join(" ")
        )
    })?;
    if !out.status.success() {
        anyhow::bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates the TUN device `name` with `queues` queues, sets MTU 1280, brings it up, adds
/// the link-local address and the 2001::/32 route. With `gso`, the queues carry virtio-net
/// headers so that writes can be GSO packets. Must run inside a tokio runtime.
pub(crate) fn create(name: &str, queues: usize, gso: bool) -> anyhow::Result<Vec<TunQueue>> {
    let mut fds = Vec::with_capacity(queues);
    for _ in 0..queues.max(1) {
        let fd = open_queue(name, gso).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                " (needs CAP_NET_ADMIN; use --native none to run without it)"
            } else if e.raw_os_error() == Some(libc::EBUSY) {
                " (a TUN device of that name exists without IFF_MULTI_QUEUE, or is in use)"
            } else {
                ""
            };
            anyhow::anyhow!("cannot create TUN device {name}: {e}{hint}")
        })?;
        fds.push(fd);
    }
    let mut req = ifreq(name);
    req.ifr_ifru.ifru_mtu = TUN_MTU as libc::c_int;
    if_ioctl(libc::SIOCSIFMTU, &mut req)
        .map_err(|e| anyhow::anyhow!("cannot set the MTU of TUN device {name}: {e}"))?;
    let mut req = ifreq(name);
    if_ioctl(libc::SIOCGIFFLAGS, &mut req)
        .map_err(|e| anyhow::anyhow!("cannot read the flags of TUN device {name}: {e}"))?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    if_ioctl(libc::SIOCSIFFLAGS, &mut req)
        .map_err(|e| anyhow::anyhow!("cannot bring TUN device {name} up: {e}"))?;
    ip(&[
        "-6",
        "addr",
        "replace",
        TUN_LINK_LOCAL,
        "dev",
        name,
        "nodad",
    ])?;
    ip(&[
        "-6",
        "route",
        "replace",
        TEREDO_ROUTE,
        "via",
        ROUTE_GATEWAY,
        "dev",
        name,
    ])?;
    let queues = fds
        .into_iter()
        .map(|fd| {
            // SAFETY: `OwnedFd` owns its descriptor, which stays open and unchanged until
            // the `AsyncFd` drops it; we are inside a tokio runtime (`start` runs on it).
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map(|fd| TunQueue {
                    fd,
                    vnet: gso,
                    gso_ok: AtomicBool::new(gso),
                })
                .map_err(|e| anyhow::anyhow!("cannot register TUN device {name} with tokio: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(queues)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_carries_the_name() {
        let r = ifreq("teredo0");
        let name: Vec<u8> = r.ifr_name.iter().map(|c| *c as u8).collect();
        assert_eq!(&name[..8], b"teredo0\0");
        let r = ifreq("exactly15bytes!");
        assert_eq!(r.ifr_name[14] as u8, b'!');
        assert_eq!(r.ifr_name[15], 0, "NUL-terminated");
    }
}
