//! A single-queue TUN device for the bare forwarder (IFF_TUN | IFF_NO_PI, non-blocking),
//! configured like our relay's: MTU 1280, fe80::ffff:ffff:ffff/64, and 2001::/32 via
//! fe80::1 (one neighbour entry, PERF.md).

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use testkit::process::run;

/// Opens `/dev/net/tun` and creates (or attaches to) the TUN device `name`.
pub fn open(name: &str) -> Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("bad interface name {name:?}");
    }
    // SAFETY: a NUL-terminated path and plain flags.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        bail!("cannot open /dev/net/tun: {}", io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &raw mut req) } < 0 {
        bail!(
            "cannot create TUN device {name}: {} (needs CAP_NET_ADMIN)",
            io::Error::last_os_error()
        );
    }
    Ok(fd)
}

/// The `ip` arguments that route the Teredo prefix 2001::/32 via fe80::1 on `dev`: one
/// neighbour entry for every Teredo destination (Miredo's own route is on-link).
pub fn gateway_route(dev: &str) -> [&str; 8] {
    [
        "-6",
        "route",
        "replace",
        "2001::/32",
        "via",
        "fe80::1",
        "dev",
        dev,
    ]
}

/// MTU 1280, up, Miredo's link-local address, 2001::/32 via fe80::1 (with `ip`).
pub fn configure(name: &str) -> Result<()> {
    for args in [
        &["link", "set", name, "mtu", "1280", "up"][..],
        &[
            "-6",
            "addr",
            "replace",
            "fe80::ffff:ffff:ffff/64",
            "dev",
            name,
            "nodad",
        ],
        &gateway_route(name)[..],
    ] {
        run(Command::new("ip").args(args)).context("configuring the TUN device")?;
    }
    Ok(())
}
