//! Loading the program, attaching it, configuring it and reading its counters (aya).

use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{Xdp, XdpFlags};
use aya::Ebpf;

use crate::abi::{Counters, FastPathConfig, RawConfig, COUNTERS};
use crate::Error;

/// The program's name (its `SEC("xdp")` function).
const PROGRAM: &str = "teredo_server";
const CONFIG_MAP: &str = "fp_config";
const COUNTERS_MAP: &str = "fp_counters";

/// The ELF object clang built, or why there is none.
pub(crate) fn object() -> Result<&'static [u8], Error> {
    #[cfg(teredo_xdp_object)]
    {
        static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("TEREDO_XDP_OBJECT"));
        Ok(OBJECT)
    }
    #[cfg(not(teredo_xdp_object))]
    {
        Err(Error::NotBuilt(env!("TEREDO_XDP_UNAVAILABLE")))
    }
}

/// The `xdp_bare` object (the benches' bare XDP rates), or why there is none.
pub(crate) fn bare_object() -> Result<&'static [u8], Error> {
    #[cfg(teredo_xdp_object)]
    {
        static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("TEREDO_XDP_BARE_OBJECT"));
        Ok(OBJECT)
    }
    #[cfg(not(teredo_xdp_object))]
    {
        Err(Error::NotBuilt(env!("TEREDO_XDP_UNAVAILABLE")))
    }
}

/// The `xdp_pass` object (an XDP program that passes everything), or why there is none.
pub(crate) fn pass_object() -> Result<&'static [u8], Error> {
    #[cfg(teredo_xdp_object)]
    {
        Ok(include_bytes!(env!("TEREDO_XDP_PASS_OBJECT")))
    }
    #[cfg(not(teredo_xdp_object))]
    {
        Err(Error::NotBuilt(env!("TEREDO_XDP_UNAVAILABLE")))
    }
}

/// How the program was attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (native XDP): veth, most physical NICs.
    Native,
    /// Generic XDP (after the SKB is built): any interface, slower.
    Generic,
}

impl AttachMode {
    /// `native` or `generic`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

/// The loaded program with its maps. Dropping it detaches the program from every interface.
pub struct XdpServer {
    ebpf: Ebpf,
    config: Array<MapData, RawConfig>,
    counters: PerCpuArray<MapData, u64>,
    fast: FastPathConfig,
}

impl std::fmt::Debug for XdpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpServer")
            .field("config", &self.fast)
            .finish_non_exhaustive()
    }
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |e| Error::Map {
        map,
        reason: e.to_string(),
    }
}

impl XdpServer {
    /// Loads the program (verifier included) and writes its configuration, switched on.
    pub fn load(fast: &FastPathConfig) -> Result<Self, Error> {
        let mut ebpf = Ebpf::load(object()?).map_err(|e| Error::Load(e.to_string()))?;
        let config = ebpf
            .take_map(CONFIG_MAP)
            .ok_or_else(|| Error::Load(format!("the object has no map {CONFIG_MAP}")))?;
        let mut config: Array<MapData, RawConfig> =
            Array::try_from(config).map_err(map_err(CONFIG_MAP))?;
        let counters = ebpf
            .take_map(COUNTERS_MAP)
            .ok_or_else(|| Error::Load(format!("the object has no map {COUNTERS_MAP}")))?;
        let counters: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(counters).map_err(map_err(COUNTERS_MAP))?;
        config
            .set(0, fast.raw(true), 0)
            .map_err(map_err(CONFIG_MAP))?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| Error::Load(format!("the object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| Error::Load(e.to_string()))?;
        prog.load().map_err(|e| Error::Load(verifier_line(&e)))?;
        Ok(Self {
            ebpf,
            config,
            counters,
            fast: *fast,
        })
    }

    /// Attaches the program to `interface`: natively when the driver supports it, else in
    /// generic mode. Returns the mode used.
    pub fn attach(&mut self, interface: &str) -> Result<AttachMode, Error> {
        attach(self.program()?, interface)
    }

    /// Replaces the configuration (e.g. the port, once bound), keeping the program switched
    /// on.
    pub fn reconfigure(&mut self, fast: &FastPathConfig) -> Result<(), Error> {
        self.fast = *fast;
        self.set_enabled(true)
    }

    /// Switches the program on or off (off: it passes every packet, counted as `disabled`).
    pub fn set_enabled(&mut self, enabled: bool) -> Result<(), Error> {
        self.config
            .set(0, self.fast.raw(enabled), 0)
            .map_err(map_err(CONFIG_MAP))
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, Error> {
        let mut raw = [0u64; COUNTERS as usize];
        for (i, slot) in (0u32..).zip(raw.iter_mut()) {
            let values = self.counters.get(&i, 0).map_err(map_err(COUNTERS_MAP))?;
            *slot = values.iter().sum();
        }
        Ok(Counters::from_raw(raw))
    }

    pub(crate) fn program(&mut self) -> Result<&mut Xdp, Error> {
        self.ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| Error::Load(format!("the object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| Error::Load(e.to_string()))
    }
}

/// Attaches `prog` to `interface`, natively if the driver can, else in generic mode.
pub(crate) fn attach(prog: &mut Xdp, interface: &str) -> Result<AttachMode, Error> {
    match prog.attach(interface, XdpFlags::DRV_MODE) {
        Ok(_) => Ok(AttachMode::Native),
        Err(native) => match prog.attach(interface, XdpFlags::SKB_MODE) {
            Ok(_) => Ok(AttachMode::Generic),
            Err(generic) => Err(Error::Attach {
                interface: interface.to_owned(),
                reason: format!("native: {native}; generic: {generic}"),
            }),
        },
    }
}

/// The program error in one line: the verifier's log is long, its last line says why.
pub(crate) fn verifier_line(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            // The summary lines at the end ("processed N insns", "verification time",
            // "stack depth") say nothing of why: the line before them does.
            let last = log
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| {
                    !l.is_empty()
                        && !l.starts_with("processed ")
                        && !l.starts_with("verification time")
                        && !l.starts_with("stack depth")
                })
                .unwrap_or("");
            format!("{io_error} (verifier: {last})")
        }
        other => other.to_string(),
    }
}
