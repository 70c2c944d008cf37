//! The Teredo server that `versus`' relay part needs: `client-sim load`'s clients qualify
//! against a real server before they send through the relay, and their first packet to the
//! native host (the direct connectivity test) goes through it. Our `teredo-server` in a
//! namespace of its own, pinned to the generator's CPU (it only works while clients
//! qualify and warm up, not during the trials), so that restarting the relay under test
//! never touches it.
//!
//! ```text
//!  namespace gen                                 namespace tsrv (CPU0)
//!  tsrv0 192.0.2.254/24, 2001:db8:5::2/64 ---- veth ---- tsrv0 192.0.2.1, .2/24, 2001:db8:5::1/64
//!  nat0 + 2001:db8::99 (the native host:          teredo-server --native raw
//!   its kernel answers the echo requests)         default routes via the generator
//! ```
//!
//! The generator forwards IPv4 (the relay's bubbles to the server, 192.0.2.0/24 via the
//! generator in the relay's namespace).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use testkit::{Netns, Proc};

use crate::frames::{GEN_V4, TEREDO_PORT};
use crate::topo::{Topology, GEN_CPU};

/// The server's primary address.
pub const TSRV_PRIMARY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Its secondary (client-sim's default: primary + 1).
pub const TSRV_SECONDARY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The generator's end of the link.
const GEN_SIDE_V4: &str = "192.0.2.254";
const GEN_SIDE_V6: &str = "2001:db8:5::2";
const SRV_V6: &str = "2001:db8:5::1";
/// The link's interface (same name on both sides).
const TSRV_IF: &str = "tsrv0";

/// Our Teredo server, running in its own namespace.
#[derive(Debug)]
pub struct QualifyServer {
    proc: Proc,
    /// Dropped after the process: the namespace goes last.
    ns: Netns,
}

impl QualifyServer {
    /// Builds its namespace and link to `topo.gen`, makes the generator's kernel the native
    /// host, routes the server's network from the relay's namespace, starts `bin` and waits
    /// (≤ 10 s) until it listens on both addresses.
    pub fn start(topo: &Topology, bin: &Path, dir: &Path) -> Result<Self> {
        let ns = Netns::new("bench", "tsrv")?;
        ns.disable_dad()?;
        topo.gen.veth(TSRV_IF, &ns, TSRV_IF)?;
        topo.gen.add_addr(TSRV_IF, &format!("{GEN_SIDE_V4}/24"))?;
        topo.gen.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{GEN_SIDE_V6}/64"),
            "dev",
            TSRV_IF,
            "nodad",
        ])?;
        topo.gen_is_native_host()?;
        for key in ["all", "default", TSRV_IF] {
            topo.gen
                .sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0")?;
        }
        topo.gen.sysctl("net.ipv4.ip_forward", "1")?;
        topo.relay.add_route("192.0.2.0/24", &GEN_V4.to_string())?;
        for a in [TSRV_PRIMARY, TSRV_SECONDARY] {
            ns.add_addr(TSRV_IF, &format!("{a}/24"))?;
        }
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{SRV_V6}/64"),
            "dev",
            TSRV_IF,
            "nodad",
        ])?;
        ns.add_route("default", GEN_SIDE_V4)?;
        ns.ip(&["-6", "route", "add", "default", "via", GEN_SIDE_V6])?;
        let mut cmd = ns.command("taskset");
        cmd.args(["-c", &GEN_CPU.to_string()])
            .arg(bin)
            .args([
                "--primary",
                &TSRV_PRIMARY.to_string(),
                "--secondary",
                &TSRV_SECONDARY.to_string(),
                "--native",
                "raw",
            ])
            .env("RUST_LOG", "warn");
        let mut proc = Proc::spawn_one_log(cmd, "qualify-server", dir)
            .context("cannot start teredo-server")?;
        let binds = [
            SocketAddrV4::new(TSRV_PRIMARY, TEREDO_PORT),
            SocketAddrV4::new(TSRV_SECONDARY, TEREDO_PORT),
        ];
        testkit::wait::wait_for(
            "the qualification server to listen",
            Duration::from_secs(10),
            || {
                if let Some(st) = proc.try_status()? {
                    bail!(
                        "teredo-server exited ({st}): {}",
                        testkit::process::tail_file(proc.log_path(), 10)
                    );
                }
                Ok(ns.udp_bound(&binds)?.then_some(()))
            },
        )?;
        Ok(Self { proc, ns })
    }

    /// Fails if the server has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(st) = self.proc.try_status()? {
            bail!(
                "the qualification server exited ({st}): {}",
                testkit::process::tail_file(self.proc.log_path(), 10)
            );
        }
        Ok(())
    }

    /// Its namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }
}
