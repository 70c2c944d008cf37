//! `BPF_PROG_TEST_RUN`: a program run on a frame in memory, no interface needed (the relay's
//! names one as the ingress, for its route lookups). The differential tests drive the
//! programs with it; aya 0.13 has no wrapper, so this is the bpf(2) call itself.

use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use crate::{Error, XdpServer};

/// What the program decided for a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    /// `XDP_ABORTED` (a program error).
    Aborted,
    /// `XDP_DROP`.
    Drop,
    /// `XDP_PASS`: on to the kernel and the user-space server.
    Pass,
    /// `XDP_TX`: the (rewritten) frame goes back out of the interface.
    Tx,
    /// `XDP_REDIRECT` or anything else.
    Other(u32),
}

impl XdpAction {
    fn from_retval(v: u32) -> Self {
        match v {
            0 => Self::Aborted,
            1 => Self::Drop,
            2 => Self::Pass,
            3 => Self::Tx,
            n => Self::Other(n),
        }
    }
}

/// `union bpf_attr`'s `test` member (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// `struct xdp_md` (include/uapi/linux/bpf.h), the context handed in with `ctx_in`.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

impl XdpAction {
    /// `XDP_REDIRECT` (`bpf_redirect`: out of another interface).
    pub const REDIRECT: Self = Self::Other(4);
}

impl XdpServer {
    /// Runs the program once on `frame` (Ethernet first) and returns its verdict and the
    /// frame as it left the program. The counters count the run like a received packet.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<(XdpAction, Vec<u8>), Error> {
        let fd = self
            .program()?
            .fd()
            .map_err(|e| Error::Load(e.to_string()))?
            .as_fd()
            .as_raw_fd();
        run(fd, frame, None)
    }
}

/// `BPF_PROG_TEST_RUN` of the XDP program `fd` on `frame`, as received on the interface
/// `ingress_ifindex` of the calling thread's network namespace when given (the program's
/// `ctx->ingress_ifindex`, and where `bpf_fib_lookup` looks), else on the namespace's
/// loopback.
pub(crate) fn run(
    fd: RawFd,
    frame: &[u8],
    ingress_ifindex: Option<u32>,
) -> Result<(XdpAction, Vec<u8>), Error> {
    // Room for the frame grown by the program (an RA is larger than its RS, an encapsulated
    // packet larger than the native one).
    let mut out = vec![0u8; frame.len() + 512];
    let size_in = u32::try_from(frame.len())
        .map_err(|_| Error::TestRun(std::io::Error::other("frame too large")))?;
    let ctx = ingress_ifindex.map(|ifindex| XdpMd {
        data_end: size_in,
        ingress_ifindex: ifindex,
        ..XdpMd::default()
    });
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(fd).map_err(|_| Error::TestRun(std::io::Error::other("fd")))?,
        data_size_in: size_in,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    if let Some(ctx) = &ctx {
        attr.ctx_size_in = size_of::<XdpMd>() as u32;
        attr.ctx_in = std::ptr::from_ref(ctx) as u64;
    }
    // SAFETY: `attr` is a valid bpf_attr prefix of the size passed; the kernel reads
    // `data_size_in` bytes from `frame` and `ctx_size_in` from `ctx`, and writes at most
    // `data_size_out` into `out`, all alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            size_of::<TestRunAttr>(),
        )
    };
    if r < 0 {
        return Err(Error::TestRun(std::io::Error::last_os_error()));
    }
    out.truncate(attr.data_size_out as usize);
    Ok((XdpAction::from_retval(attr.retval), out))
}
