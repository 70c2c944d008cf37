//! UDP sockets for Teredo servers, relays and clients.
//!
//! Teredo rides on plain IPv4 UDP, but a few socket options matter and `UdpSocket::bind`
//! sets none of them:
//!
//! - **DF is never set** (RFC 4380 §5.1.2: Teredo packets must not be sent with the IPv4
//!   "don't fragment" bit, since the IPv6 MTU inside is handled end to end). Linux sets DF on
//!   UDP by default (`ip_no_pmtu_disc = 0`, `IP_PMTUDISC_WANT`), so we set
//!   `IP_MTU_DISCOVER = IP_PMTUDISC_DONT` explicitly. socket2 has no setter, hence `libc`.
//! - **`SO_REUSEPORT`** lets several relay workers bind the same address; the kernel spreads
//!   flows over them. `SO_REUSEADDR` stays off by default: on UDP it would let two unrelated
//!   processes share a port silently.
//! - **Large kernel buffers** (4 MiB requested) absorb bursts; the kernel caps the request at
//!   `net.core.rmem_max` / `wmem_max` without error, which is fine.
//! - **`IP_FREEBIND`** (optional) binds an address not (yet) configured on the host, e.g. in
//!   a network namespace that is still being set up.
//!
//! One socket per local address: the server must answer from the address a packet reached
//! (the cone test depends on it), which a socket bound to `0.0.0.0` cannot guarantee.
//!
//! Receive buffers must be [`MAX_DATAGRAM`]` + 1` bytes: UDP truncation is silent, so a read
//! that fills the whole buffer (`n == buf.len()`) is how an oversized datagram is detected.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd as _;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Upper bound on a UDP payload we can receive: the IPv4 total-length limit (the exact
/// maximum payload, 65,535 − 20 − 8 = 65,507, is smaller, so this bound is safe).
///
/// Allocate receive buffers of `MAX_DATAGRAM + 1` bytes and treat `n == buf.len()` as
/// oversized: the kernel truncates silently.
pub const MAX_DATAGRAM: usize = 65_535;

/// Default size requested for the kernel receive and send buffers: 4 MiB.
pub const DEFAULT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Options for [`bind_udp`]. `Default` gives a socket for a single-worker component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpOptions {
    /// Set `SO_REUSEADDR` (default off).
    pub reuse_address: bool,
    /// Set `SO_REUSEPORT` so several workers can bind the same address (default off). Every
    /// socket sharing the port must set it.
    pub reuse_port: bool,
    /// Kernel receive buffer to request (`SO_RCVBUF`); `None` keeps the system default.
    pub recv_buffer_size: Option<usize>,
    /// Kernel send buffer to request (`SO_SNDBUF`); `None` keeps the system default.
    pub send_buffer_size: Option<usize>,
    /// Set `IP_FREEBIND`: allow binding an address the host does not have (default off).
    pub freebind: bool,
}

impl Default for UdpOptions {
    fn default() -> Self {
        Self {
            reuse_address: false,
            reuse_port: false,
            recv_buffer_size: Some(DEFAULT_SOCKET_BUFFER),
            send_buffer_size: Some(DEFAULT_SOCKET_BUFFER),
            freebind: false,
        }
    }
}

/// Creates a non-blocking IPv4 UDP socket configured by `opts` (DF never set, see the
/// module docs), binds it to `addr` and registers it with the current tokio runtime.
///
/// Errors keep their [`io::ErrorKind`] and name the address and the failing step, e.g.
/// `cannot bind UDP socket 127.0.0.1:3544: Address already in use (os error 98)`.
///
/// Must be called from inside a tokio runtime with I/O enabled (tokio panics otherwise);
/// outside one this returns an error instead. Use [`bind_udp_std`] to build the socket
/// elsewhere.
pub fn bind_udp(addr: SocketAddrV4, opts: &UdpOptions) -> io::Result<tokio::net::UdpSocket> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other(format!(
            "cannot register UDP socket {addr}: not inside a tokio runtime"
        )));
    }
    let socket = bind_udp_std(addr, opts)?;
    tokio::net::UdpSocket::from_std(socket)
        .map_err(|e| annotate(e, &format!("cannot register UDP socket {addr} with tokio")))
}

/// The address `socket` is bound to (with the real port when port 0 was `asked` for), as
/// the IPv4 address it must be; errors name the address asked for.
pub fn bound_v4(
    socket: &tokio::net::UdpSocket,
    asked: SocketAddrV4,
) -> anyhow::Result<SocketAddrV4> {
    match socket
        .local_addr()
        .map_err(|e| annotate(e, &format!("cannot read the address of UDP socket {asked}")))?
    {
        std::net::SocketAddr::V4(a) => Ok(a),
        std::net::SocketAddr::V6(a) => {
            anyhow::bail!("UDP socket {asked} bound to IPv6 address {a}")
        }
    }
}

/// The same as [`bind_udp`] but returns the (already non-blocking) `std` socket, for callers
/// that register it with a runtime later or elsewhere.
pub fn bind_udp_std(addr: SocketAddrV4, opts: &UdpOptions) -> io::Result<std::net::UdpSocket> {
    let step = |what: &'static str| move |e: io::Error| annotate(e, &format!("{what} {addr}"));

    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(step("cannot create UDP socket for"))?;
    socket
        .set_nonblocking(true)
        .map_err(step("cannot make non-blocking UDP socket"))?;
    socket
        .set_reuse_address(opts.reuse_address)
        .map_err(step("cannot set SO_REUSEADDR on UDP socket"))?;
    if opts.reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(step("cannot set SO_REUSEPORT on UDP socket"))?;
    }
    if let Some(size) = opts.recv_buffer_size {
        socket
            .set_recv_buffer_size(size)
            .map_err(step("cannot set SO_RCVBUF on UDP socket"))?;
    }
    if let Some(size) = opts.send_buffer_size {
        socket
            .set_send_buffer_size(size)
            .map_err(step("cannot set SO_SNDBUF on UDP socket"))?;
    }
    set_pmtudisc_dont(&socket).map_err(step("cannot set IP_MTU_DISCOVER on UDP socket"))?;
    if opts.freebind {
        socket
            .set_freebind_v4(true)
            .map_err(step("cannot set IP_FREEBIND on UDP socket"))?;
    }
    socket
        .bind(&SockAddr::from(addr))
        .map_err(step("cannot bind UDP socket"))?;

    tracing::debug!(
        %addr,
        local = ?socket.local_addr().ok().and_then(|a| a.as_socket()),
        requested_recv_buffer = ?opts.recv_buffer_size,
        recv_buffer = ?socket.recv_buffer_size().ok(),
        requested_send_buffer = ?opts.send_buffer_size,
        send_buffer = ?socket.send_buffer_size().ok(),
        reuse_port = opts.reuse_port,
        "UDP socket bound"
    );
    Ok(socket.into())
}

/// `setsockopt(IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)`: never set DF, ignore PMTU.
fn set_pmtudisc_dont(socket: &Socket) -> io::Result<()> {
    let value: libc::c_int = libc::IP_PMTUDISC_DONT;
    // SAFETY: the fd is a valid open socket owned by `socket` for the duration of the call;
    // the option value points to a live c_int and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Prefixes `error`'s message with `context`, keeping its kind (callers match on
/// `ErrorKind::AddrInUse` etc.).
fn annotate(error: io::Error, context: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{context}: {error}"))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::os::fd::AsRawFd as _;
    use std::time::Duration;

    use super::{bind_udp, bind_udp_std, UdpOptions, MAX_DATAGRAM};

    const LOOPBACK_ANY_PORT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);

    fn local_v4(socket: &tokio::net::UdpSocket) -> SocketAddrV4 {
        match socket.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => panic!("IPv6 local address {a}"),
        }
    }

    fn int_sockopt(fd: i32, level: i32, name: i32) -> i32 {
        let mut value: libc::c_int = -1;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid fd, value/len point to live locals of the advertised size.
        let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut len) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        value
    }

    #[tokio::test]
    async fn binds_loopback_and_exchanges_a_datagram() {
        let a = bind_udp(LOOPBACK_ANY_PORT, &UdpOptions::default()).unwrap();
        let b = bind_udp(LOOPBACK_ANY_PORT, &UdpOptions::default()).unwrap();
        let a_addr = local_v4(&a);
        assert_eq!(*a_addr.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(a_addr.port(), 0);

        b.send_to(b"bubble", a_addr).await.unwrap();
        let mut buf = vec![0; MAX_DATAGRAM + 1];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), a.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"bubble");
        assert_eq!(from, SocketAddr::V4(local_v4(&b)));
    }

    #[tokio::test]
    async fn socket_options_are_applied() {
        let socket = bind_udp(LOOPBACK_ANY_PORT, &UdpOptions::default()).unwrap();
        let fd = socket.as_raw_fd();
        assert_eq!(
            int_sockopt(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            libc::IP_PMTUDISC_DONT
        );
        assert_eq!(int_sockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR), 0);
        assert_eq!(int_sockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT), 0);
        // Whatever the kernel cap, the request raised the buffer above its usual default
        // (212,992 bytes, reported doubled) or at least did not fail.
        assert!(int_sockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF) > 0);
        // Non-blocking: a read with nothing queued fails with WouldBlock instead of hanging.
        let mut buf = [0u8; 16];
        let err = socket.try_recv_from(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);

        let opts = UdpOptions {
            freebind: true,
            recv_buffer_size: None,
            send_buffer_size: None,
            ..UdpOptions::default()
        };
        let socket = bind_udp(LOOPBACK_ANY_PORT, &opts).unwrap();
        assert_eq!(
            int_sockopt(socket.as_raw_fd(), libc::SOL_IP, libc::IP_FREEBIND),
            1
        );
    }

    #[tokio::test]
    async fn second_bind_without_reuse_names_the_address() {
        let first = bind_udp(LOOPBACK_ANY_PORT, &UdpOptions::default()).unwrap();
        let addr = local_v4(&first);
        let err = bind_udp(addr, &UdpOptions::default()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("cannot bind UDP socket {addr}: ")),
            "{message}"
        );
    }

    #[tokio::test]
    async fn reuse_port_lets_workers_share_an_address() {
        let opts = UdpOptions {
            reuse_port: true,
            ..UdpOptions::default()
        };
        let first = bind_udp(LOOPBACK_ANY_PORT, &opts).unwrap();
        let addr = local_v4(&first);
        let second = bind_udp(addr, &opts).unwrap();
        assert_eq!(local_v4(&second), addr);
        assert_eq!(
            int_sockopt(second.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT),
            1
        );
        // A socket without the option still cannot join them.
        assert!(bind_udp(addr, &UdpOptions::default()).is_err());
    }

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        let err = bind_udp(LOOPBACK_ANY_PORT, &UdpOptions::default()).unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:0"), "{err}");
        // The std variant works anywhere.
        let socket = bind_udp_std(LOOPBACK_ANY_PORT, &UdpOptions::default()).unwrap();
        assert!(socket.local_addr().unwrap().port() != 0);
    }
}
