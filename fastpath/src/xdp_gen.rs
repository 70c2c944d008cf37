//! The benches' XDP generator (`src/bpf/xdp_gen.bpf.c`, `XDP_TX` and nothing else), run
//! with live-frames `BPF_PROG_TEST_RUN`: the kernel's own packet generator. Each
//! [`XdpGen::send`] puts `repeat` copies of one frame on the wire of a veth (or any
//! interface with `ndo_xdp_xmit`) without a socket, an skb or a qdisc.
//!
//! The far end must take XDP frames: a veth does only when it runs an XDP program or has
//! NAPI on (GRO enabled); otherwise the kernel drops the copies and counts them on the
//! sending interface, and `send` still succeeds. Needs root (CAP_BPF + CAP_NET_ADMIN),
//! Linux ≥ 5.18, and a kernel that allows live frames: some hardened kernels refuse every
//! live-frames run with `EPERM` while ordinary test runs work, which [`XdpGen::load`]
//! finds out at once.

use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use aya::programs::Xdp;
use aya::Ebpf;

use crate::program::verifier_line;
use crate::test_run::run_live;
use crate::Error;

/// Frames per batch of the live run (the kernel's maximum): one page-pool refill and
/// one transmit flush per batch.
const BATCH_SIZE: u32 = 256;

fn gen_object() -> Result<&'static [u8], Error> {
    #[cfg(teredo_xdp_object)]
    {
        static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("TEREDO_XDP_GEN_OBJECT"));
        Ok(OBJECT)
    }
    #[cfg(not(teredo_xdp_object))]
    {
        Err(Error::NotBuilt(env!("TEREDO_XDP_UNAVAILABLE")))
    }
}

/// The generator program, loaded (attached nowhere).
pub struct XdpGen {
    _ebpf: Ebpf,
    fd: RawFd,
}

impl std::fmt::Debug for XdpGen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpGen").finish_non_exhaustive()
    }
}

impl XdpGen {
    /// Loads the program and checks that the kernel runs it in live-frames mode (one run on
    /// a blank frame "received" on the loopback, which has no XDP transmit: nothing leaves).
    pub fn load() -> Result<Self, Error> {
        let mut ebpf = Ebpf::load(gen_object()?).map_err(|e| Error::Load(e.to_string()))?;
        let prog: &mut Xdp = ebpf
            .program_mut("xdp_gen")
            .ok_or_else(|| Error::Load("the object has no program xdp_gen".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| Error::Load(e.to_string()))?;
        prog.load().map_err(|e| Error::Load(verifier_line(&e)))?;
        // The descriptor lives as long as `ebpf`, which this struct owns.
        let fd = prog
            .fd()
            .map_err(|e| Error::Load(e.to_string()))?
            .as_fd()
            .as_raw_fd();
        let gen = Self { _ebpf: ebpf, fd };
        // The loopback is interface 1 in every namespace.
        run_live(gen.fd, &[0u8; 60], 1, 1, 1).map_err(|e| match e {
            Error::TestRun(io) => Error::TestRun(std::io::Error::new(
                io.kind(),
                format!("this kernel refuses live frames (BPF_F_TEST_XDP_LIVE_FRAMES): {io}"),
            )),
            other => other,
        })?;
        Ok(gen)
    }

    /// Sends `repeat` copies of `frame` (Ethernet first, at most a page less the kernel's
    /// headroom) out of interface `ifindex` of the calling thread's network namespace;
    /// returns `repeat`, the copies handed to the interface (what it dropped shows in its
    /// counters only).
    pub fn send(&self, frame: &[u8], ifindex: u32, repeat: u32) -> Result<u64, Error> {
        if repeat == 0 {
            return Ok(0);
        }
        run_live(self.fd, frame, ifindex, repeat, BATCH_SIZE.min(repeat))?;
        Ok(u64::from(repeat))
    }
}
