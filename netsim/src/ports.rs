//! Choosing a new mapping's external address (pooling, RFC 4787 §4.1) and port (§4.2.1).
//! Never "port overloading" (REQ-3): a port is only handed out if no mapping holds it on that
//! address.

use std::net::{Ipv4Addr, SocketAddrV4};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::table::Table;
use crate::{NatConfig, Pooling, PortAllocation, PortCheck};

/// How often random port allocation re-draws on a collision before scanning for a free port.
const RANDOM_PORT_TRIES: usize = 16;

/// The allocator's own state: the sequential cursor of each pool address.
#[derive(Debug, Clone)]
pub(crate) struct Ports {
    /// Sequential allocation cursor per pool address.
    cursors: Vec<u16>,
}

impl Ports {
    pub(crate) fn new(config: &NatConfig) -> Self {
        let lo = (*config.port_range.start()).max(1);
        Self {
            cursors: vec![lo; config.external_ips.len()],
        }
    }

    /// Restarts sequential allocation from the bottom of the port range (a NAT reboot).
    pub(crate) fn reset(&mut self, config: &NatConfig) {
        let lo = (*config.port_range.start()).max(1);
        self.cursors.iter_mut().for_each(|c| *c = lo);
    }

    /// Picks a pool address and a free port on it for a new mapping of `internal`, never an
    /// external endpoint for which `avoid` is true (a reserved one, see `reserve`). Each
    /// endpoint the model itself would take is then offered to `host` (see [`PortCheck`]):
    /// [`PortCheck::Taken`] makes the allocator go on as for a port some mapping holds,
    /// [`PortCheck::Stop`] ends the search (no port). A host that always answers
    /// [`PortCheck::Usable`] sees the model's own choice, RNG draws included.
    pub(crate) fn allocate(
        &mut self,
        config: &NatConfig,
        rng: &mut ChaCha8Rng,
        table: &Table,
        internal: SocketAddrV4,
        avoid: &dyn Fn(SocketAddrV4) -> bool,
        host: &mut dyn FnMut(SocketAddrV4) -> PortCheck,
    ) -> Option<(usize, u16)> {
        let n = config.external_ips.len();
        if n == 0 {
            return None;
        }
        match config.pooling {
            Pooling::Paired => {
                let idx = paired_index(config.seed, *internal.ip(), n);
                self.allocate_port(config, rng, table, idx, internal.port(), avoid, host)
                    .map(|p| (idx, p))
            }
            Pooling::Arbitrary => {
                let first = pick_arbitrary(rng, table, internal, n);
                (0..n).map(|k| (first + k) % n).find_map(|idx| {
                    self.allocate_port(config, rng, table, idx, internal.port(), avoid, host)
                        .map(|port| (idx, port))
                })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate_port(
        &mut self,
        config: &NatConfig,
        rng: &mut ChaCha8Rng,
        table: &Table,
        idx: usize,
        internal_port: u16,
        avoid: &dyn Fn(SocketAddrV4) -> bool,
        host: &mut dyn FnMut(SocketAddrV4) -> PortCheck,
    ) -> Option<u16> {
        let (lo, hi) = port_bounds(config)?;
        if table.used(idx) > usize::from(hi - lo) {
            return None;
        }
        let ip = config.external_ips[idx];
        let mut check = |port: u16| {
            let external = SocketAddrV4::new(ip, port);
            if !table.port_free(ip, port) || avoid(external) {
                PortCheck::Taken
            } else {
                host(external)
            }
        };
        match config.ports {
            PortAllocation::Preserving if (lo..=hi).contains(&internal_port) => {
                match check(internal_port) {
                    PortCheck::Usable => return Some(internal_port),
                    PortCheck::Stop => return None,
                    PortCheck::Taken => {}
                }
                self.sequential(idx, lo, hi, &mut check)
            }
            PortAllocation::Preserving | PortAllocation::Sequential => {
                self.sequential(idx, lo, hi, &mut check)
            }
            PortAllocation::Random => {
                for _ in 0..RANDOM_PORT_TRIES {
                    let port = rng.random_range(lo..=hi);
                    match check(port) {
                        PortCheck::Usable => return Some(port),
                        PortCheck::Stop => return None,
                        PortCheck::Taken => {}
                    }
                }
                let start = rng.random_range(lo..=hi);
                scan(start, lo, hi, &mut check)
            }
        }
    }

    /// The next usable port from pool address `idx`'s cursor, which then moves past it.
    fn sequential(
        &mut self,
        idx: usize,
        lo: u16,
        hi: u16,
        check: &mut dyn FnMut(u16) -> PortCheck,
    ) -> Option<u16> {
        let port = scan(self.cursors[idx], lo, hi, check)?;
        self.cursors[idx] = if port == hi { lo } else { port + 1 };
        Some(port)
    }
}

/// The first port at or after `start` that `check` finds usable, wrapping within `lo..=hi`;
/// `None` when none is or `check` says stop.
fn scan(start: u16, lo: u16, hi: u16, check: &mut dyn FnMut(u16) -> PortCheck) -> Option<u16> {
    let start = start.clamp(lo, hi);
    for port in (start..=hi).chain(lo..start) {
        match check(port) {
            PortCheck::Usable => return Some(port),
            PortCheck::Stop => return None,
            PortCheck::Taken => {}
        }
    }
    None
}

/// The allocatable ports, without port 0; `None` if empty.
fn port_bounds(config: &NatConfig) -> Option<(u16, u16)> {
    let lo = (*config.port_range.start()).max(1);
    let hi = *config.port_range.end();
    (lo <= hi).then_some((lo, hi))
}

/// A uniformly random pool index among those `internal` has no live mapping on (all of
/// them if it has mappings everywhere).
fn pick_arbitrary(rng: &mut ChaCha8Rng, table: &Table, internal: SocketAddrV4, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let counts = table.endpoint_counts(internal);
    let is_free = |i: usize| counts.is_none_or(|c| c.get(i).is_none_or(|n| *n == 0));
    let free = (0..n).filter(|i| is_free(*i)).count();
    if free == 0 {
        return rng.random_range(0..n);
    }
    let nth = rng.random_range(0..free);
    (0..n).filter(|i| is_free(*i)).nth(nth).unwrap_or(0)
}

/// Paired pooling's address for an internal IP: a seeded hash, so it is stable for the whole
/// run (REQ-2 "always the same") without any per-host state.
pub(crate) fn paired_index(seed: u64, internal: Ipv4Addr, n: usize) -> usize {
    // splitmix64 finaliser.
    let mut z = (seed ^ u64::from(u32::from(internal))).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // The remainder is below `n`, which is a usize.
    (z % n as u64) as usize
}
