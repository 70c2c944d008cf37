//! The bare XDP rates of an interface, for the benches (`src/bpf/xdp_bare.bpf.c`): every IPv4
//! or IPv6 frame sent straight back (`XDP_TX`, MACs swapped), out of another interface
//! (`XDP_REDIRECT`, fixed MACs) or dropped, with no protocol work at all. A fast path on the
//! same interfaces cannot beat these; the benches report how far from them it is.

use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};

use crate::program::{attach, bare_object, verifier_line, AttachMode};
use crate::Error;

/// What the bare program does with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BareMode {
    /// Back out of the interface it came in on, MAC addresses swapped.
    Tx,
    /// Out of interface `ifindex`, from MAC `src` to MAC `dst`.
    Redirect {
        /// The egress interface.
        ifindex: u32,
        /// Destination MAC address written into the frame.
        dst: [u8; 6],
        /// Source MAC address written into the frame.
        src: [u8; 6],
    },
    /// Dropped.
    Drop,
}

/// `struct bare_cfg` of the program, set as a global before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct RawBare {
    mode: u32,
    out_ifindex: u32,
    dst: [u8; 6],
    src: [u8; 6],
}

// SAFETY: plain old data: integers and byte arrays, no padding (4 + 4 + 6 + 6 = 20 bytes,
// alignment 4).
unsafe impl aya::Pod for RawBare {}

impl RawBare {
    fn new(mode: BareMode) -> Self {
        match mode {
            BareMode::Tx => Self {
                mode: 0,
                out_ifindex: 0,
                dst: [0; 6],
                src: [0; 6],
            },
            BareMode::Redirect { ifindex, dst, src } => Self {
                mode: 1,
                out_ifindex: ifindex,
                dst,
                src,
            },
            BareMode::Drop => Self {
                mode: 2,
                out_ifindex: 0,
                dst: [0; 6],
                src: [0; 6],
            },
        }
    }
}

/// The bare program, loaded and attached to one interface; dropping it detaches it.
pub struct BareXdp {
    _ebpf: Ebpf,
    mode: AttachMode,
}

impl std::fmt::Debug for BareXdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BareXdp")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl BareXdp {
    /// Loads the program for `mode` and attaches it to `interface` (natively when the driver
    /// supports it).
    pub fn attach(interface: &str, mode: BareMode) -> Result<Self, Error> {
        let cfg = RawBare::new(mode);
        let mut ebpf = EbpfLoader::new()
            .set_global("bare_cfg", &cfg, true)
            .load(bare_object()?)
            .map_err(|e| Error::Load(e.to_string()))?;
        let prog: &mut Xdp = ebpf
            .program_mut("xdp_bare")
            .ok_or_else(|| Error::Load("the object has no program xdp_bare".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| Error::Load(e.to_string()))?;
        prog.load().map_err(|e| Error::Load(verifier_line(&e)))?;
        let mode = attach(prog, interface)?;
        Ok(Self { _ebpf: ebpf, mode })
    }

    /// How it was attached.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_config_has_the_c_layout() {
        assert_eq!(size_of::<RawBare>(), 20);
        let r = RawBare::new(BareMode::Redirect {
            ifindex: 7,
            dst: [1; 6],
            src: [2; 6],
        });
        assert_eq!(
            (r.mode, r.out_ifindex, r.dst, r.src),
            (1, 7, [1; 6], [2; 6])
        );
        assert_eq!(RawBare::new(BareMode::Drop).mode, 2);
        assert_eq!(RawBare::new(BareMode::Tx).mode, 0);
    }
}
