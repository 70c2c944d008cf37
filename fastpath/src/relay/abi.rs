//! What the relay program and its loader share, mirroring `src/bpf/teredo_relay.h` (keep the
//! two in step; the layout test below pins sizes, offsets and counter indices), and the
//! public types built on it.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// `struct rl_config`: address and port in network order, the rest in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawConfig {
    pub(crate) enabled: u32,
    pub(crate) relay_addr: [u8; 4],
    pub(crate) relay_port: [u8; 2],
    pub(crate) pad: u16,
    pub(crate) tun_mtu: u32,
    pub(crate) validity_ns: u64,
}

// SAFETY: plain `repr(C)` data without padding (pinned by `layout_matches_the_header`);
// every bit pattern is a valid value.
unsafe impl aya::Pod for RawConfig {}

/// `struct rl_peer_key`: the peer's Teredo IPv6 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawPeerKey {
    pub(crate) addr: [u8; 16],
}

// SAFETY: as `RawConfig`.
unsafe impl aya::Pod for RawPeerKey {}

/// `struct rl_peer`: mapping in network order, times in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawPeer {
    pub(crate) mapping_addr: [u8; 4],
    pub(crate) mapping_port: [u8; 2],
    pub(crate) pad: u16,
    pub(crate) last_rx_ns: u64,
    pub(crate) last_used_ns: u64,
}

// SAFETY: as `RawConfig`.
unsafe impl aya::Pod for RawPeer {}

/// Largest [`RelayFastPathConfig::tun_mtu`]: the program checksums datagrams of at most
/// `RL_MAX_SUM_LEN` (2048) bytes, UDP header included.
pub const MAX_TUN_MTU: u32 = 2048 - 8;

/// Number of counters (`RL_COUNTERS`): the two directions, then one per pass reason.
pub(crate) const COUNTERS: u32 = 2 + RelayPassReason::ALL.len() as u32;

/// What the relay program needs to know of the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayFastPathConfig {
    /// The relay's Teredo address and port (where clients' datagrams arrive, and the source
    /// of what it sends them).
    pub relay: SocketAddrV4,
    /// The largest native IPv6 packet encapsulated (the TUN's MTU; larger ones get a Packet
    /// Too Big from the kernel). At most [`MAX_TUN_MTU`].
    pub tun_mtu: u32,
    /// A trusted peer is used while its last reception is younger than this (the core's
    /// `RelayConfig::validity`).
    pub validity: Duration,
    /// Capacity of the peer map (the core's `RelayConfig::max_peers`).
    pub max_peers: u32,
}

impl RelayFastPathConfig {
    pub(crate) fn raw(&self, enabled: bool) -> RawConfig {
        RawConfig {
            enabled: u32::from(enabled),
            relay_addr: self.relay.ip().octets(),
            relay_port: self.relay.port().to_be_bytes(),
            pad: 0,
            tun_mtu: self.tun_mtu,
            validity_ns: u64::try_from(self.validity.as_nanos()).unwrap_or(u64::MAX),
        }
    }
}

/// A peer the core trusts, as the program sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    /// The peer's NAT mapping: the only source accepted from it, and where its packets go.
    pub mapping: SocketAddrV4,
    /// Its last reception ([`crate::monotonic_ns`] clock); the program moves it on each
    /// packet it forwards from the peer.
    pub last_rx_ns: u64,
    /// Its last use in either direction (same clock), moved by the program too.
    pub last_used_ns: u64,
}

impl PeerEntry {
    pub(crate) fn raw(&self) -> RawPeer {
        RawPeer {
            mapping_addr: self.mapping.ip().octets(),
            mapping_port: self.mapping.port().to_be_bytes(),
            pad: 0,
            last_rx_ns: self.last_rx_ns,
            last_used_ns: self.last_used_ns,
        }
    }

    pub(crate) fn from_raw(raw: &RawPeer) -> Self {
        Self {
            mapping: SocketAddrV4::new(
                Ipv4Addr::from(raw.mapping_addr),
                u16::from_be_bytes(raw.mapping_port),
            ),
            last_rx_ns: raw.last_rx_ns,
            last_used_ns: raw.last_used_ns,
        }
    }
}

/// Why the relay program left a frame to the kernel and the user-space relay (`XDP_PASS`,
/// the frame untouched).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RelayPassReason {
    /// The program is loaded but switched off.
    Disabled,
    /// Neither IPv4/UDP to the relay's address and port nor IPv6 to 2001:0::/32.
    NotForRelay,
    /// IPv4 options or fragments, a bad IPv4 header or UDP checksum, inconsistent lengths:
    /// left to the kernel's own checks.
    Ipv4Unchecked,
    /// A form the program does not forward: auth header, origin indication, trailers, VLAN.
    UnhandledForm,
    /// A bubble (the core runs the exchanges).
    Bubble,
    /// No map entry for the peer, or a datagram not from its recorded mapping.
    NotTrusted,
    /// The peer's last reception is as old as the validity or older: the core decides (it
    /// may run a bubble exchange first).
    Expired,
    /// Hop limit 0 or 1: the kernel sends the time exceeded.
    HopLimit,
    /// A native packet longer than the TUN's MTU: the kernel sends the packet too big.
    TooBig,
    /// Something the core or the kernel would drop or treat specially (non-Teredo source,
    /// Teredo or non-global destination, non-global native source, lengths): passed so that
    /// they count it.
    Refused,
    /// `bpf_fib_lookup` found no complete route (no route, no neighbour, MTU exceeded,
    /// forwarding off).
    NoRoute,
    /// The frame could not be grown or shrunk.
    NoRoom,
}

impl RelayPassReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 12] = [
        Self::Disabled,
        Self::NotForRelay,
        Self::Ipv4Unchecked,
        Self::UnhandledForm,
        Self::Bubble,
        Self::NotTrusted,
        Self::Expired,
        Self::HopLimit,
        Self::TooBig,
        Self::Refused,
        Self::NoRoute,
        Self::NoRoom,
    ];

    /// The snake_case metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::NotForRelay => "not_for_relay",
            Self::Ipv4Unchecked => "ipv4_unchecked",
            Self::UnhandledForm => "unhandled_form",
            Self::Bubble => "bubble",
            Self::NotTrusted => "not_trusted",
            Self::Expired => "expired",
            Self::HopLimit => "hop_limit",
            Self::TooBig => "too_big",
            Self::Refused => "refused",
            Self::NoRoute => "no_route",
            Self::NoRoom => "no_room",
        }
    }

    /// Position in [`RelayCounters::passed`] and [`Self::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// The relay program's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayCounters {
    /// Datagrams from trusted peers decapsulated and sent out natively.
    pub to_native: u64,
    /// Native packets encapsulated and sent to trusted peers.
    pub to_teredo: u64,
    /// Frames passed, by [`RelayPassReason::index`].
    pub passed: [u64; RelayPassReason::ALL.len()],
}

impl RelayCounters {
    pub(crate) fn from_raw(raw: &[u64; COUNTERS as usize]) -> Self {
        let mut passed = [0; RelayPassReason::ALL.len()];
        passed.copy_from_slice(&raw[2..]);
        Self {
            to_native: raw[0],
            to_teredo: raw[1],
            passed,
        }
    }

    /// Frames passed for `reason`.
    pub fn passed_for(&self, reason: RelayPassReason) -> u64 {
        self.passed[reason.index()]
    }

    /// Every frame the program saw.
    pub fn total(&self) -> u64 {
        self.to_native + self.to_teredo + self.passed.iter().sum::<u64>()
    }

    /// What happened between `earlier` and `self` (counters only grow).
    pub fn since(&self, earlier: &Self) -> Self {
        let mut passed = self.passed;
        for (p, e) in passed.iter_mut().zip(earlier.passed) {
            *p = p.wrapping_sub(e);
        }
        Self {
            to_native: self.to_native.wrapping_sub(earlier.to_native),
            to_teredo: self.to_teredo.wrapping_sub(earlier.to_teredo),
            passed,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn layout_matches_the_header() {
        assert_eq!(size_of::<RawConfig>(), 24);
        assert_eq!(offset_of!(RawConfig, relay_addr), 4);
        assert_eq!(offset_of!(RawConfig, relay_port), 8);
        assert_eq!(offset_of!(RawConfig, tun_mtu), 12);
        assert_eq!(offset_of!(RawConfig, validity_ns), 16);
        assert_eq!(size_of::<RawPeerKey>(), 16);
        assert_eq!(size_of::<RawPeer>(), 24);
        assert_eq!(offset_of!(RawPeer, mapping_port), 4);
        assert_eq!(offset_of!(RawPeer, last_rx_ns), 8);
        assert_eq!(offset_of!(RawPeer, last_used_ns), 16);
        let h = include_str!("../bpf/teredo_relay.h");
        assert!(h.contains("RL_TO_NATIVE = 0,"));
        assert!(h.contains("RL_TO_TEREDO = 1,"));
        assert!(h.contains(&format!("RL_COUNTERS = {COUNTERS},")));
        assert!(h.contains(&format!("#define RL_MAX_SUM_LEN {}\n", MAX_TUN_MTU + 8)));
        for r in RelayPassReason::ALL {
            let c = format!("RL_PASS_{} = {},", r.as_str().to_uppercase(), 2 + r.index());
            assert!(h.contains(&c), "header lacks {c}");
        }
    }

    #[test]
    fn raw_forms_round_trip() {
        let cfg = RelayFastPathConfig {
            relay: "192.0.2.1:3544".parse().unwrap(),
            tun_mtu: 1280,
            validity: Duration::from_secs(30),
            max_peers: 16,
        };
        let raw = cfg.raw(true);
        assert_eq!(raw.relay_addr, [192, 0, 2, 1]);
        assert_eq!(raw.relay_port, [0x0d, 0xd8]);
        assert_eq!(raw.validity_ns, 30_000_000_000);
        let e = PeerEntry {
            mapping: "203.0.113.9:40000".parse().unwrap(),
            last_rx_ns: 5,
            last_used_ns: 7,
        };
        assert_eq!(e.raw().mapping_port, 40000u16.to_be_bytes());
        assert_eq!(PeerEntry::from_raw(&e.raw()), e);
    }

    #[test]
    fn counters_by_reason() {
        let mut raw = [0u64; COUNTERS as usize];
        raw[0] = 3;
        raw[1] = 4;
        raw[2 + RelayPassReason::Expired.index()] = 2;
        let c = RelayCounters::from_raw(&raw);
        assert_eq!(c.to_native, 3);
        assert_eq!(c.to_teredo, 4);
        assert_eq!(c.passed_for(RelayPassReason::Expired), 2);
        assert_eq!(c.total(), 9);
        assert_eq!(c.since(&c), RelayCounters::default());
    }
}
