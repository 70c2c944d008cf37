//! The XDP generator (`--generator xdp`): the kernel's own packet generator, live-frames
//! `BPF_PROG_TEST_RUN` of an `XDP_TX` program ([`teredo_fastpath::XdpGen`]) on a frame
//! "received" on the generator's veth, whose copies go out of that veth without a socket,
//! an skb or a qdisc. Several times faster than the `AF_PACKET` generator, so that the XDP
//! devices are measured and not the generator.
//!
//! It cycles through the same [`FrameRing`] (one frame per test run, `repeat` copies of
//! it) and is paced by the same token bucket ([`pace`]), so its figures compare with the
//! `AF_PACKET` ones. A veth takes XDP frames only with NAPI on: an XDP program on it (the
//! XDP devices) or GRO enabled, which [`enable_napi`] does on the device's ends of the
//! links.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use teredo_fastpath::XdpGen;

use crate::afpacket::{pace, FrameRing, Offered};
use crate::topo::{Topology, INET_IF, NATIVE_IF};

/// Copies of one frame per test run at most, the unpaced burst: about a millisecond's
/// worth at the rates this generator reaches (a few million per second), so a flood
/// stops on time and the frames of the ring alternate every millisecond.
pub const MAX_REPEAT: u64 = 2048;

/// Which generator sends the measured traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorKind {
    /// `AF_PACKET`, `sendmmsg` × 64, `PACKET_QDISC_BYPASS` ([`crate::afpacket`]).
    #[default]
    Afpacket,
    /// Live-frames `BPF_PROG_TEST_RUN` of an `XDP_TX` program (this module).
    Xdp,
}

impl GeneratorKind {
    /// `afpacket` / `xdp`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Afpacket => "afpacket",
            Self::Xdp => "xdp",
        }
    }
}

/// The loaded program and the generator's two links (ifindexes in its namespace).
#[derive(Debug)]
pub struct XdpSender {
    prog: XdpGen,
    inet: u32,
    native: u32,
}

fn ifindex(ifname: &str) -> Result<u32> {
    let c = std::ffi::CString::new(ifname)?;
    // SAFETY: a NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {ifname}: {}", std::io::Error::last_os_error());
    }
    Ok(i)
}

impl XdpSender {
    /// Loads the program and looks up the links (call inside `gen`).
    pub fn open() -> Result<Self> {
        let prog = XdpGen::load().context("--generator xdp")?;
        Ok(Self {
            prog,
            inet: ifindex(INET_IF)?,
            native: ifindex(NATIVE_IF)?,
        })
    }

    /// The ifindex of `ifname` ([`INET_IF`] or [`NATIVE_IF`]).
    pub fn link(&self, ifname: &str) -> u32 {
        if ifname == NATIVE_IF {
            self.native
        } else {
            self.inet
        }
    }

    /// Sends frames from `ring` out of `ifindex` for `duration`: as fast as possible (`rate`
    /// `None`, [`MAX_REPEAT`] copies per run) or paced at `rate` frames per second (about a
    /// millisecond's worth per run). Stops early when `stop` is set.
    pub fn blast(
        &self,
        ifindex: u32,
        ring: &mut FrameRing,
        rate: Option<f64>,
        duration: Duration,
        stop: &AtomicBool,
    ) -> Offered {
        pace(rate, duration, stop, MAX_REPEAT, |n| {
            let repeat = u32::try_from(n).unwrap_or(u32::MAX);
            self.prog
                .send(ring.next_frame(), ifindex, repeat)
                .map_err(std::io::Error::other)
        })
    }
}

/// NAPI on the device's ends of both links (GRO on), so that they take the XDP
/// generator's frames whatever the device (a veth without NAPI drops them).
pub fn enable_napi(topo: &Topology) -> Result<()> {
    for link in [INET_IF, NATIVE_IF] {
        topo.relay
            .exec("ethtool", &["-K", link, "gro", "on"])
            .with_context(|| format!("ethtool -K {link} gro on (for --generator xdp)"))?;
    }
    Ok(())
}
