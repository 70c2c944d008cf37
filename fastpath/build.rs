//! Builds the XDP programs (src/bpf/teredo_server.bpf.c, src/bpf/teredo_relay.bpf.c) with
//! clang when it is there.
//!
//! Nothing is downloaded: clang (Debian's `clang`, or `$CLANG`) and the headers of
//! `libbpf-dev` and `linux-libc-dev` are the whole toolchain. When either is missing the crate
//! still builds, without the program: `cfg(teredo_xdp_object)` stays unset and
//! `TEREDO_XDP_UNAVAILABLE` carries the one-line reason the loader reports.

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "src/bpf/teredo_server.bpf.c";
const PASS_SOURCE: &str = "src/bpf/xdp_pass.bpf.c";
const HEADER: &str = "src/bpf/teredo_server.h";
const RELAY_SOURCE: &str = "src/bpf/teredo_relay.bpf.c";
const RELAY_HEADER: &str = "src/bpf/teredo_relay.h";
const BARE_SOURCE: &str = "src/bpf/xdp_bare.bpf.c";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(teredo_xdp_object)");
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-changed={HEADER}");
    println!("cargo::rerun-if-changed={PASS_SOURCE}");
    println!("cargo::rerun-if-changed={RELAY_SOURCE}");
    println!("cargo::rerun-if-changed={RELAY_HEADER}");
    println!("cargo::rerun-if-changed={BARE_SOURCE}");
    println!("cargo::rerun-if-env-changed=CLANG");
    println!("cargo::rerun-if-env-changed=TEREDO_XDP_DISABLE");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("teredo_server.bpf.o");
    let pass = out.join("xdp_pass.bpf.o");
    let relay = out.join("teredo_relay.bpf.o");
    let bare = out.join("xdp_bare.bpf.o");
    match build(SOURCE, &object)
        .and_then(|()| build(PASS_SOURCE, &pass))
        .and_then(|()| build(RELAY_SOURCE, &relay))
        .and_then(|()| build(BARE_SOURCE, &bare))
    {
        Ok(()) => {
            println!("cargo::rustc-cfg=teredo_xdp_object");
            println!("cargo::rustc-env=TEREDO_XDP_OBJECT={}", object.display());
            println!("cargo::rustc-env=TEREDO_XDP_PASS_OBJECT={}", pass.display());
            println!(
                "cargo::rustc-env=TEREDO_XDP_RELAY_OBJECT={}",
                relay.display()
            );
            println!("cargo::rustc-env=TEREDO_XDP_BARE_OBJECT={}", bare.display());
        }
        Err(reason) => {
            println!(
                "cargo::warning=teredo-fastpath: {reason}; --fast-path xdp will not be available"
            );
            println!("cargo::rustc-env=TEREDO_XDP_UNAVAILABLE={reason}");
        }
    }
}

fn build(source: &str, object: &std::path::Path) -> Result<(), String> {
    if std::env::var_os("TEREDO_XDP_DISABLE").is_some() {
        return Err("built without the XDP program: TEREDO_XDP_DISABLE was set".into());
    }
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // linux/types.h includes asm/types.h from the multiarch directory of the host.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        other => other,
    };
    if !std::path::Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        return Err(
            "built without the XDP program: libbpf headers (bpf/bpf_helpers.h) not found at build time"
                .into(),
        );
    }
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", source, "-o"])
        .arg(object)
        .output()
        .map_err(|e| {
            format!("built without the XDP program: {clang} not found at build time ({e})")
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().next().unwrap_or("no output");
        return Err(format!(
            "built without the XDP program: {clang} failed: {first}"
        ));
    }
    Ok(())
}
