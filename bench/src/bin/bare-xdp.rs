//! `bare-xdp`: attaches the protocol-free XDP program of `teredo_fastpath::BareXdp` to
//! interfaces of the namespace it runs in and keeps it there until SIGINT/SIGTERM: the bare
//! `XDP_TX` / `XDP_REDIRECT` rate of the bench's links, the ceiling of any fast path on them.
//! `server-bench` and `relay-bench` run it as the device `bare-xdp`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use teredo_bench::xdp::BARE_READY;
use teredo_fastpath::{BareMode, BareXdp};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// The bare XDP rates of the bench's links (see `server-bench` / `relay-bench --devices`).
#[derive(Debug, Parser)]
#[command(name = "bare-xdp", version)]
struct Args {
    /// Send every IPv4/IPv6 frame arriving on IF straight back (MACs swapped).
    #[arg(long, value_name = "IF")]
    tx: Vec<String>,
    /// IN=OUT,DST_MAC,SRC_MAC: send every IPv4/IPv6 frame arriving on IN out of OUT, from
    /// SRC_MAC to DST_MAC.
    #[arg(long, value_name = "IN=OUT,DST,SRC")]
    redirect: Vec<String>,
    /// Drop every IPv4/IPv6 frame arriving on IF.
    #[arg(long, value_name = "IF")]
    drop: Vec<String>,
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC address {s:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad MAC address {s:?}: not 6 bytes"))
}

fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name).context("interface name")?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {name}");
    }
    Ok(i)
}

/// Parses `IN=OUT,DST,SRC`.
fn parse_redirect(s: &str) -> Result<(String, BareMode)> {
    let (from, rest) = s
        .split_once('=')
        .with_context(|| format!("--redirect {s:?}: expected IN=OUT,DST_MAC,SRC_MAC"))?;
    let parts: Vec<&str> = rest.split(',').collect();
    let [to, dst, src] = parts[..] else {
        bail!("--redirect {s:?}: expected IN=OUT,DST_MAC,SRC_MAC");
    };
    let mode = BareMode::Redirect {
        ifindex: ifindex(to)?,
        dst: parse_mac(dst)?,
        src: parse_mac(src)?,
    };
    Ok((from.to_owned(), mode))
}

fn run(args: &Args) -> Result<()> {
    let mut plan: Vec<(String, BareMode)> = Vec::new();
    plan.extend(args.tx.iter().map(|i| (i.clone(), BareMode::Tx)));
    plan.extend(args.drop.iter().map(|i| (i.clone(), BareMode::Drop)));
    for r in &args.redirect {
        plan.push(parse_redirect(r)?);
    }
    if plan.is_empty() {
        bail!("nothing to do: give --tx, --redirect or --drop");
    }
    // SAFETY: installing an async-signal-safe handler (one atomic store).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut attached = Vec::new();
    for (interface, mode) in &plan {
        let p =
            BareXdp::attach(interface, *mode).with_context(|| format!("{interface}: {mode:?}"))?;
        eprintln!("bare-xdp: {interface}: {mode:?} ({})", p.mode().as_str());
        attached.push(p);
    }
    eprintln!("{BARE_READY} ({} interfaces)", attached.len());
    while !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare-xdp: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_bad_redirects() {
        assert_eq!(parse_mac("02:00:00:00:01:0a").unwrap(), [2, 0, 0, 0, 1, 10]);
        assert!(parse_mac("02:00:00").is_err());
        assert!(parse_mac("zz:00:00:00:00:00").is_err());
        assert!(parse_redirect("inet0").is_err());
        assert!(parse_redirect("inet0=lo,02:00:00:00:00:01").is_err());
    }
}
