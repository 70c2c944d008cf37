//! Loading the relay program, attaching it, filling its peer map and reading its counters
//! (aya).

use std::net::Ipv6Addr;
use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};

use super::abi::{
    PeerEntry, RawConfig, RawPeer, RawPeerKey, RelayCounters, RelayFastPathConfig, COUNTERS,
    MAX_TUN_MTU,
};
use crate::{AttachMode, Error, XdpAction};

/// The program's name (its `SEC("xdp")` function).
const PROGRAM: &str = "teredo_relay";
const CONFIG_MAP: &str = "rl_config";
const PEERS_MAP: &str = "rl_peers";
const COUNTERS_MAP: &str = "rl_counters";

/// The ELF object clang built, or why there is none.
fn object() -> Result<&'static [u8], Error> {
    #[cfg(teredo_xdp_object)]
    {
        static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("TEREDO_XDP_RELAY_OBJECT"));
        Ok(OBJECT)
    }
    #[cfg(not(teredo_xdp_object))]
    {
        Err(Error::NotBuilt(env!("TEREDO_XDP_UNAVAILABLE")))
    }
}

/// The loaded relay program with its maps. Dropping it detaches the program from every
/// interface.
pub struct XdpRelay {
    ebpf: Ebpf,
    config: Array<MapData, RawConfig>,
    peers: HashMap<MapData, RawPeerKey, RawPeer>,
    counters: PerCpuArray<MapData, u64>,
    cfg: RelayFastPathConfig,
}

impl std::fmt::Debug for XdpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpRelay")
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |e| Error::Map {
        map,
        reason: e.to_string(),
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, Error> {
    ebpf.take_map(name)
        .ok_or_else(|| Error::Load(format!("the object has no map {name}")))
}

impl XdpRelay {
    /// Loads the program (verifier included) with a peer map of `cfg.max_peers` entries and
    /// writes its configuration, switched on. Not attached anywhere yet.
    pub fn load(cfg: &RelayFastPathConfig) -> Result<Self, Error> {
        if cfg.max_peers == 0 {
            return Err(Error::Unsupported(
                "run the relay with a peer map of 0 entries",
            ));
        }
        if cfg.tun_mtu > MAX_TUN_MTU {
            return Err(Error::Unsupported(
                "encapsulate packets longer than 2040 bytes (the TUN's MTU)",
            ));
        }
        let mut ebpf = EbpfLoader::new()
            .set_max_entries(PEERS_MAP, cfg.max_peers)
            .load(object()?)
            .map_err(|e| Error::Load(e.to_string()))?;
        let mut config: Array<MapData, RawConfig> =
            Array::try_from(take(&mut ebpf, CONFIG_MAP)?).map_err(map_err(CONFIG_MAP))?;
        let peers = HashMap::try_from(take(&mut ebpf, PEERS_MAP)?).map_err(map_err(PEERS_MAP))?;
        let counters =
            PerCpuArray::try_from(take(&mut ebpf, COUNTERS_MAP)?).map_err(map_err(COUNTERS_MAP))?;
        config
            .set(0, cfg.raw(true), 0)
            .map_err(map_err(CONFIG_MAP))?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| Error::Load(format!("the object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| Error::Load(e.to_string()))?;
        prog.load()
            .map_err(|e| Error::Load(crate::program::verifier_line(&e)))?;
        Ok(Self {
            ebpf,
            config,
            peers,
            counters,
            cfg: *cfg,
        })
    }

    /// Attaches the program to `interface`: natively when the driver supports it, else in
    /// generic mode. Returns the mode used. The relay attaches it to its Teredo (IPv4) side
    /// and its native side (once if they are one interface).
    pub fn attach(&mut self, interface: &str) -> Result<AttachMode, Error> {
        crate::program::attach(self.program_mut()?, interface)
    }

    /// Switches the program on or off (off: it passes every frame, counted as `disabled`).
    pub fn set_enabled(&mut self, enabled: bool) -> Result<(), Error> {
        self.config
            .set(0, self.cfg.raw(enabled), 0)
            .map_err(map_err(CONFIG_MAP))
    }

    /// Adds or replaces the entry of the trusted peer `peer`. Fails when the map is full
    /// (the peer then stays on the slow path).
    pub fn upsert_peer(&mut self, peer: Ipv6Addr, entry: PeerEntry) -> Result<(), Error> {
        let key = RawPeerKey {
            addr: peer.octets(),
        };
        self.peers
            .insert(key, entry.raw(), 0)
            .map_err(map_err(PEERS_MAP))
    }

    /// Removes `peer`'s entry; an absent one is not an error.
    pub fn remove_peer(&mut self, peer: &Ipv6Addr) -> Result<(), Error> {
        let key = RawPeerKey {
            addr: peer.octets(),
        };
        match self.peers.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(e) => Err(map_err(PEERS_MAP)(e)),
        }
    }

    /// A snapshot of the peer map (entries changed meanwhile may or may not be seen).
    pub fn peers(&self) -> Vec<(Ipv6Addr, PeerEntry)> {
        self.peers
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (Ipv6Addr::from(k.addr), PeerEntry::from_raw(&v)))
            .collect()
    }

    /// Empties the peer map.
    pub fn clear_peers(&mut self) -> Result<(), Error> {
        let keys: Vec<RawPeerKey> = self.peers.keys().filter_map(Result::ok).collect();
        for k in keys {
            self.remove_peer(&Ipv6Addr::from(k.addr))?;
        }
        Ok(())
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<RelayCounters, Error> {
        let mut raw = [0u64; COUNTERS as usize];
        for (i, slot) in (0u32..).zip(raw.iter_mut()) {
            let values = self.counters.get(&i, 0).map_err(map_err(COUNTERS_MAP))?;
            *slot = values.iter().sum();
        }
        Ok(RelayCounters::from_raw(&raw))
    }

    /// Runs the program once on `frame` (Ethernet first) as received on the interface
    /// `ingress_ifindex` of the calling thread's network namespace (its route lookups are
    /// made there) and returns its verdict and the frame as it left the program. Counters
    /// and peer stamps move as for a received frame.
    pub fn test_run(
        &self,
        frame: &[u8],
        ingress_ifindex: u32,
    ) -> Result<(XdpAction, Vec<u8>), Error> {
        let prog: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .ok_or_else(|| Error::Load(format!("the object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| Error::Load(e.to_string()))?;
        let fd = prog
            .fd()
            .map_err(|e| Error::Load(e.to_string()))?
            .as_fd()
            .as_raw_fd();
        crate::test_run::run(fd, frame, Some(ingress_ifindex))
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, Error> {
        self.ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| Error::Load(format!("the object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| Error::Load(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The relay's driver keeps it in a task and reads the counters from another.
    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<XdpRelay>();
    }

    #[test]
    fn refuses_what_the_program_cannot_do() {
        let mut cfg = RelayFastPathConfig {
            relay: "192.0.2.1:3544".parse().unwrap(),
            tun_mtu: MAX_TUN_MTU + 1,
            validity: Duration::from_secs(30),
            max_peers: 16,
        };
        let e = XdpRelay::load(&cfg).unwrap_err().to_string();
        assert!(e.contains("2040"), "{e}");
        cfg.tun_mtu = 1280;
        cfg.max_peers = 0;
        let e = XdpRelay::load(&cfg).unwrap_err().to_string();
        assert!(e.contains("0 entries"), "{e}");
    }
}
