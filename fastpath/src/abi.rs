//! What the program and its loader share: the configuration entry and the counter indices,
//! mirroring `src/bpf/teredo_server.h` (keep the two in step; the layout test below pins the
//! sizes and offsets).

use std::net::{Ipv4Addr, Ipv6Addr};

use teredo::addr::server_link_local;
use teredo::io::Local;
use teredo::server::ServerConfig;

use crate::Error;

/// `struct fp_config`: addresses and port in network order, the MTU in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawConfig {
    pub(crate) enabled: u32,
    pub(crate) primary: [u8; 4],
    pub(crate) secondary: [u8; 4],
    pub(crate) port: [u8; 2],
    pub(crate) pad: u16,
    pub(crate) mtu: u32,
    pub(crate) link_local: [u8; 16],
}

// SAFETY: plain `repr(C)` data without padding (pinned by `layout_matches_the_header`); every
// bit pattern is a valid value.
unsafe impl aya::Pod for RawConfig {}

/// Index of the first "answered" counter (`FP_ANSWERED`); the four are `2 * local + cone`.
const ANSWERED: usize = 0;
/// Number of counters (`FP_COUNTERS`).
pub(crate) const COUNTERS: u32 = 11;

/// Why the program handed a packet to the user-space server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PassReason {
    /// The program is loaded but switched off.
    Disabled,
    /// Not IPv4/UDP to one of the server's addresses and port (other traffic on the interface).
    NotForServer,
    /// IPv4 options or fragments, a bad IPv4 header or UDP checksum, or inconsistent lengths:
    /// left to the kernel's own checks.
    Ipv4Unchecked,
    /// Teredo traffic that is not a router solicitation (bubbles, ICMPv6 to relay).
    NotRouterSolicitation,
    /// An RS in a form the program does not answer: an auth header with a client ID or
    /// authentication value, trailers, options beyond 64 bytes.
    UnhandledForm,
    /// An RS the core refuses (or might): bad checksum, hop limit, code, lengths, an origin
    /// indication, a non-global or own source. The core counts its drop reason.
    Invalid,
    /// The frame could not be grown or shrunk to the RA's size.
    NoRoom,
}

impl PassReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 7] = [
        Self::Disabled,
        Self::NotForServer,
        Self::Ipv4Unchecked,
        Self::NotRouterSolicitation,
        Self::UnhandledForm,
        Self::Invalid,
        Self::NoRoom,
    ];

    /// The snake_case metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::NotForServer => "not_for_server",
            Self::Ipv4Unchecked => "ipv4_unchecked",
            Self::NotRouterSolicitation => "not_router_solicitation",
            Self::UnhandledForm => "unhandled_form",
            Self::Invalid => "invalid",
            Self::NoRoom => "no_room",
        }
    }

    /// The counter index (`FP_PASS_*`).
    const fn index(self) -> usize {
        4 + self as usize
    }
}

/// The program's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    raw: [u64; COUNTERS as usize],
}

impl Counters {
    pub(crate) fn from_raw(raw: [u64; COUNTERS as usize]) -> Self {
        Self { raw }
    }

    /// RSs answered that arrived on `local`, by cone flag.
    pub fn answered(&self, local: Local, cone: bool) -> u64 {
        self.raw[ANSWERED + 2 * local.index() + usize::from(cone)]
    }

    /// RSs answered in all.
    pub fn answered_total(&self) -> u64 {
        self.raw[ANSWERED..ANSWERED + 4].iter().sum()
    }

    /// Packets passed to user space for `reason`.
    pub fn passed(&self, reason: PassReason) -> u64 {
        self.raw[reason.index()]
    }

    /// What happened between `earlier` and `self` (counters only grow).
    pub fn since(&self, earlier: &Self) -> Self {
        let mut raw = self.raw;
        for (r, e) in raw.iter_mut().zip(earlier.raw) {
            *r = r.wrapping_sub(e);
        }
        Self { raw }
    }
}

/// What the program needs to know of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastPathConfig {
    /// Primary address (also in the advertised prefix).
    pub primary: Ipv4Addr,
    /// Secondary address.
    pub secondary: Ipv4Addr,
    /// The UDP port both addresses listen on.
    pub port: u16,
    /// MTU option value, `None` for no option.
    pub mtu: Option<u32>,
    /// The RA's IPv6 source, the server's link-local address.
    pub link_local: Ipv6Addr,
}

impl FastPathConfig {
    /// The fast path of a core configured with `cfg` (its `port` is the one bound). Refuses
    /// what the program does not implement: the per-source RS rate limit (state kept in user
    /// space), an MTU option of 0.
    pub fn from_core(cfg: &ServerConfig) -> Result<Self, Error> {
        if cfg.rs_rate_limit > 0 {
            return Err(Error::Unsupported(
                "apply --rs-rate-limit (its table lives in user space); use one or the other",
            ));
        }
        if cfg.mtu == Some(0) {
            return Err(Error::Unsupported("send an MTU option of 0"));
        }
        if cfg.primary == cfg.secondary {
            return Err(Error::Unsupported(
                "tell the primary from the secondary address when they are equal",
            ));
        }
        Ok(Self {
            primary: cfg.primary,
            secondary: cfg.secondary,
            port: cfg.port,
            mtu: cfg.mtu,
            link_local: server_link_local(cfg.primary),
        })
    }

    pub(crate) fn raw(&self, enabled: bool) -> RawConfig {
        RawConfig {
            enabled: u32::from(enabled),
            primary: self.primary.octets(),
            secondary: self.secondary.octets(),
            port: self.port.to_be_bytes(),
            pad: 0,
            mtu: self.mtu.unwrap_or(0),
            link_local: self.link_local.octets(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    /// `struct fp_config` in teredo_server.h: 4 + 4 + 4 + 2 + 2 + 4 + 16 bytes, no padding.
    #[test]
    fn layout_matches_the_header() {
        assert_eq!(size_of::<RawConfig>(), 36);
        assert_eq!(offset_of!(RawConfig, primary), 4);
        assert_eq!(offset_of!(RawConfig, secondary), 8);
        assert_eq!(offset_of!(RawConfig, port), 12);
        assert_eq!(offset_of!(RawConfig, mtu), 16);
        assert_eq!(offset_of!(RawConfig, link_local), 20);
        let h = include_str!("bpf/teredo_server.h");
        for (name, index) in [
            ("FP_PASS_DISABLED", PassReason::Disabled.index()),
            ("FP_PASS_NO_ROOM", PassReason::NoRoom.index()),
            ("FP_COUNTERS", COUNTERS as usize),
        ] {
            assert!(h.contains(&format!("{name} = {index},")), "{name}");
        }
        for r in PassReason::ALL {
            let c = format!("FP_PASS_{} = {},", r.as_str().to_uppercase(), r.index());
            assert!(h.contains(&c), "header lacks {c}");
        }
    }

    #[test]
    fn config_refuses_what_the_program_does_not_do() {
        let mut cfg = ServerConfig::new("198.51.100.1".parse().unwrap());
        let fp = FastPathConfig::from_core(&cfg).unwrap();
        assert_eq!(fp.link_local, server_link_local(cfg.primary));
        assert_eq!(fp.raw(true).port, [0x0d, 0xd8]);
        assert_eq!(fp.raw(true).mtu, 1280);
        cfg.mtu = None;
        assert_eq!(FastPathConfig::from_core(&cfg).unwrap().raw(false).mtu, 0);
        cfg.rs_rate_limit = 5;
        let e = FastPathConfig::from_core(&cfg).unwrap_err().to_string();
        assert!(e.contains("--rs-rate-limit"), "{e}");
    }

    #[test]
    fn counters_index_by_local_and_cone() {
        let mut raw = [0u64; COUNTERS as usize];
        raw[3] = 7; // secondary, cone
        raw[PassReason::Invalid.index()] = 2;
        let c = Counters::from_raw(raw);
        assert_eq!(c.answered(Local::Secondary, true), 7);
        assert_eq!(c.answered(Local::Primary, true), 0);
        assert_eq!(c.answered_total(), 7);
        assert_eq!(c.passed(PassReason::Invalid), 2);
        assert_eq!(c.since(&c), Counters::default());
    }
}
