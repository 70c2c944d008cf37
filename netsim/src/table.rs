//! The mapping table: live mappings indexed both ways (by external endpoint, and by what an
//! outbound datagram looks them up with), the expiry order, and the per-address bookkeeping
//! that port allocation and arbitrary pooling read. It keeps those indexes consistent and
//! decides nothing: which mapping to use and when is [`Nat`](crate::Nat)'s business.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use crate::MAX_REMOTES_PER_MAPPING;

/// What a mapping is keyed by besides the internal endpoint, per mapping behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Dest {
    Any,
    Ip(Ipv4Addr),
    IpPort(SocketAddrV4),
    /// A mapping retired by a port reservation (`Nat`'s conntrack model): it keeps serving
    /// the remotes it holds permits for, new remotes get the mapping that replaced it. Keyed
    /// by its own external endpoint, hence unique.
    Retired(SocketAddrV4),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct MappingKey {
    pub(crate) internal: SocketAddrV4,
    pub(crate) dest: Dest,
}

/// `None` as an instant: never (a timeout beyond what `Instant` can represent).
pub(crate) type Deadline = Option<Instant>;

pub(crate) fn passed(deadline: Deadline, now: Instant) -> bool {
    deadline.is_some_and(|d| now >= d)
}

#[derive(Debug, Clone)]
pub(crate) struct Mapping {
    pub(crate) key: MappingKey,
    pub(crate) pool_idx: usize,
    pub(crate) expires: Deadline,
    /// Filter permits: remote endpoint (port 0 under ADF) and when the permit lapses, least
    /// recently refreshed first; at most [`MAX_REMOTES_PER_MAPPING`]. Empty under EIF.
    pub(crate) permits: VecDeque<(SocketAddrV4, Deadline)>,
}

impl Mapping {
    /// Records (or renews) the permit for `permit` until `until`, forgetting the least
    /// recently refreshed permit if the mapping already holds
    /// [`MAX_REMOTES_PER_MAPPING`].
    pub(crate) fn record_permit(&mut self, permit: SocketAddrV4, until: Deadline) {
        if let Some(pos) = self.permits.iter().position(|(r, _)| *r == permit) {
            self.permits.remove(pos);
        } else if self.permits.len() >= MAX_REMOTES_PER_MAPPING {
            self.permits.pop_front();
        }
        self.permits.push_back((permit, until));
    }
}

/// The mappings of one NAT.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// The mapping table, by external endpoint (unique: no port overloading).
    by_external: HashMap<SocketAddrV4, Mapping>,
    /// The same mappings, by what an outbound datagram looks them up with.
    by_key: HashMap<MappingKey, SocketAddrV4>,
    /// Expiry order (deterministic iteration for `expire`).
    expiry: BTreeSet<(Instant, SocketAddrV4)>,
    /// Live mappings per pool address (skips scanning a full address).
    used: Vec<usize>,
    /// Arbitrary pooling: live mappings per internal endpoint and pool address.
    endpoint_pool: HashMap<SocketAddrV4, Vec<u32>>,
    /// Whether `endpoint_pool` is kept: only where it matters (arbitrary pooling over several
    /// addresses).
    track_endpoints: bool,
    /// External endpoints held by UPnP leases of other hosts: not free for a new mapping.
    reserved: Vec<SocketAddrV4>,
    /// Retired mappings ([`Dest::Retired`]) per internal endpoint, oldest first.
    retired: HashMap<SocketAddrV4, Vec<SocketAddrV4>>,
}

impl Table {
    /// An empty table over `pool_len` external addresses.
    pub(crate) fn new(pool_len: usize, track_endpoints: bool) -> Self {
        Self {
            by_external: HashMap::new(),
            by_key: HashMap::new(),
            expiry: BTreeSet::new(),
            used: vec![0; pool_len],
            endpoint_pool: HashMap::new(),
            track_endpoints,
            reserved: Vec::new(),
            retired: HashMap::new(),
        }
    }

    /// Mappings in the table, expired or not.
    pub(crate) fn len(&self) -> usize {
        self.by_external.len()
    }

    pub(crate) fn contains(&self, external: SocketAddrV4) -> bool {
        self.by_external.contains_key(&external)
    }

    pub(crate) fn get_mut(&mut self, external: SocketAddrV4) -> Option<&mut Mapping> {
        self.by_external.get_mut(&external)
    }

    pub(crate) fn get(&self, external: SocketAddrV4) -> Option<&Mapping> {
        self.by_external.get(&external)
    }

    /// The external endpoint of the mapping for `key`, if any.
    pub(crate) fn lookup(&self, key: &MappingKey) -> Option<SocketAddrV4> {
        self.by_key.get(key).copied()
    }

    /// The retired mappings of `internal` (external endpoints, oldest first).
    pub(crate) fn retired(&self, internal: SocketAddrV4) -> &[SocketAddrV4] {
        self.retired.get(&internal).map_or(&[], Vec::as_slice)
    }

    /// Re-keys the mapping at `external` as retired ([`Dest::Retired`]), freeing its key for a
    /// new mapping.
    pub(crate) fn retire(&mut self, external: SocketAddrV4) {
        let Some(m) = self.by_external.get_mut(&external) else {
            return;
        };
        if matches!(m.key.dest, Dest::Retired(_)) {
            return;
        }
        self.by_key.remove(&m.key);
        m.key.dest = Dest::Retired(external);
        self.by_key.insert(m.key, external);
        self.retired
            .entry(m.key.internal)
            .or_default()
            .push(external);
    }

    pub(crate) fn is_expired(&self, external: SocketAddrV4, now: Instant) -> bool {
        self.by_external
            .get(&external)
            .is_some_and(|m| passed(m.expires, now))
    }

    /// The mapping that expires first, with its deadline.
    pub(crate) fn next_expiry(&self) -> Option<(Instant, SocketAddrV4)> {
        self.expiry.first().copied()
    }

    /// Live mappings on pool address `idx`.
    pub(crate) fn used(&self, idx: usize) -> usize {
        self.used[idx]
    }

    /// Per-pool-address mapping counts of an internal endpoint (only kept with arbitrary
    /// pooling over several addresses; `None` when it has no mapping).
    pub(crate) fn endpoint_counts(&self, internal: SocketAddrV4) -> Option<&Vec<u32>> {
        self.endpoint_pool.get(&internal)
    }

    pub(crate) fn port_free(&self, ip: Ipv4Addr, port: u16) -> bool {
        let ep = SocketAddrV4::new(ip, port);
        !self.by_external.contains_key(&ep) && !self.reserved.contains(&ep)
    }

    /// Sets the endpoints [`Self::port_free`] treats as taken (the other hosts' UPnP leases,
    /// before an allocation).
    pub(crate) fn set_reserved(&mut self, reserved: Vec<SocketAddrV4>) {
        self.reserved = reserved;
    }

    /// Moves the mapping's deadline to `until` (never earlier than it was, should the caller's
    /// clock step back; `None`, never, stays never).
    pub(crate) fn refresh(&mut self, external: SocketAddrV4, until: Deadline) {
        let Some(m) = self.by_external.get_mut(&external) else {
            return;
        };
        let new = match (m.expires, until) {
            (Some(old), Some(new)) => Some(old.max(new)),
            _ => None,
        };
        if new == m.expires {
            return;
        }
        if let Some(old) = m.expires {
            self.expiry.remove(&(old, external));
        }
        if let Some(new) = new {
            self.expiry.insert((new, external));
        }
        m.expires = new;
    }

    /// Adds a new mapping (the caller has checked that `external` is free).
    pub(crate) fn insert(
        &mut self,
        external: SocketAddrV4,
        key: MappingKey,
        pool_idx: usize,
        expires: Deadline,
    ) {
        if let Some(deadline) = expires {
            self.expiry.insert((deadline, external));
        }
        self.by_external.insert(
            external,
            Mapping {
                key,
                pool_idx,
                expires,
                permits: VecDeque::new(),
            },
        );
        self.by_key.insert(key, external);
        self.used[pool_idx] += 1;
        if self.track_endpoints {
            let n = self.used.len();
            self.endpoint_pool
                .entry(key.internal)
                .or_insert_with(|| vec![0; n])[pool_idx] += 1;
        }
    }

    pub(crate) fn remove(&mut self, external: SocketAddrV4) {
        let Some(m) = self.by_external.remove(&external) else {
            return;
        };
        self.by_key.remove(&m.key);
        if matches!(m.key.dest, Dest::Retired(_)) {
            if let Some(list) = self.retired.get_mut(&m.key.internal) {
                list.retain(|e| *e != external);
                if list.is_empty() {
                    self.retired.remove(&m.key.internal);
                }
            }
        }
        if let Some(deadline) = m.expires {
            self.expiry.remove(&(deadline, external));
        }
        self.used[m.pool_idx] = self.used[m.pool_idx].saturating_sub(1);
        if let Some(counts) = self.endpoint_pool.get_mut(&m.key.internal) {
            counts[m.pool_idx] = counts[m.pool_idx].saturating_sub(1);
            if counts.iter().all(|c| *c == 0) {
                self.endpoint_pool.remove(&m.key.internal);
            }
        }
    }

    /// Forgets every mapping.
    pub(crate) fn clear(&mut self) {
        self.by_external.clear();
        self.by_key.clear();
        self.expiry.clear();
        self.endpoint_pool.clear();
        self.retired.clear();
        self.used.iter_mut().for_each(|u| *u = 0);
    }

    /// Asserts that the indexes agree with each other and with `config`: pool and port
    /// bookkeeping, expiry records, permit caps. `paired` gives the pool index paired pooling
    /// must have chosen for an internal IP, if pooling is paired.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn check_invariants(
        &self,
        config: &crate::NatConfig,
        paired: impl Fn(Ipv4Addr) -> Option<usize>,
    ) {
        let n = config.external_ips.len();
        assert!(self.len() <= config.max_mappings);
        assert_eq!(self.by_key.len(), self.by_external.len());
        let mut deadlines = 0;
        let mut used = vec![0; n];
        let mut per_endpoint: HashMap<SocketAddrV4, Vec<u32>> = HashMap::new();
        for (external, m) in &self.by_external {
            assert_eq!(self.by_key.get(&m.key), Some(external));
            assert_eq!(config.external_ips[m.pool_idx], *external.ip());
            assert!(external.port() != 0 && config.port_range.contains(&external.port()));
            assert!(m.permits.len() <= MAX_REMOTES_PER_MAPPING);
            if let Some(deadline) = m.expires {
                deadlines += 1;
                assert!(self.expiry.contains(&(deadline, *external)));
            }
            used[m.pool_idx] += 1;
            if let Some(idx) = paired(*m.key.internal.ip()) {
                assert_eq!(m.pool_idx, idx);
            } else if n >= 2 {
                per_endpoint
                    .entry(m.key.internal)
                    .or_insert_with(|| vec![0; n])[m.pool_idx] += 1;
            }
        }
        assert_eq!(self.expiry.len(), deadlines);
        let mut retired = 0;
        for (internal, list) in &self.retired {
            assert!(!list.is_empty());
            for external in list {
                let m = &self.by_external[external];
                assert_eq!(
                    m.key,
                    MappingKey {
                        internal: *internal,
                        dest: Dest::Retired(*external)
                    }
                );
                retired += 1;
            }
        }
        let keyed = self
            .by_external
            .values()
            .filter(|m| matches!(m.key.dest, Dest::Retired(_)))
            .count();
        assert_eq!(retired, keyed);
        assert_eq!(self.used, used);
        assert_eq!(self.endpoint_pool, per_endpoint);
    }
}
