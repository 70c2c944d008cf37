//! `AF_PACKET` sockets: the one receive that the bench's generator and the tests' sniffer
//! share.

use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd};

/// Receives one frame from the `AF_PACKET` socket `fd` without waiting: its length and the
/// link-layer address it came with (`sll_pkttype`, `sll_protocol`, `sll_ifindex`). An empty
/// queue is `ErrorKind::WouldBlock`.
pub fn recv_ll(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, libc::sockaddr_ll)> {
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: valid descriptor, buffer and address storage of the advertised sizes.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&raw mut sll).cast(),
            &raw mut len,
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    Ok((n, sll))
}
