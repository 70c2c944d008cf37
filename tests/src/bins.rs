//! The workspace's binaries (`teredo-server`, …), built once per test process.
//!
//! Cargo builds a package's own `[[bin]]`s before its integration tests, but not those of other
//! workspace members, and artifact dependencies are unstable. So the first call to [`bin_path`]
//! runs `$CARGO build --workspace --bins` in the workspace root with the profile and target
//! directory of the running test binary (derived from `current_exe()`:
//! `<target>/<profile-dir>/deps/e2e-<hash>`). When `.ci/run` has already run
//! `cargo build --workspace --bins` this is a no-op that takes well under a second.
//! Cargo releases its build lock before it runs test binaries, so the nested build does not
//! wait on the outer `cargo test`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::process::tail;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
}

/// `<target>/<profile-dir>` of the running test binary, e.g. `target/debug`.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let deps = exe
        .parent()
        .context("test binary has no parent directory")?;
    if deps.file_name().is_some_and(|n| n == "deps") {
        Ok(deps.parent().context("deps/ has no parent")?.to_owned())
    } else {
        // Not under cargo's layout (copied somewhere?): assume the binaries sit beside it.
        Ok(deps.to_owned())
    }
}

/// Builds the workspace binaries (once per process) and returns the path of binary `name`.
pub fn bin_path(name: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| build_bins().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "binary `{name}` not found at {} after building the workspace binaries",
            path.display()
        );
    }
    Ok(path)
}

fn build_bins() -> Result<PathBuf> {
    let dir = profile_dir()?;
    let target_dir = dir.parent().context("profile directory has no parent")?;
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => bail!("odd profile directory {}", dir.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args([
            "build",
            "--workspace",
            "--bins",
            "--profile",
            &profile,
            "--target-dir",
        ])
        .arg(target_dir);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 60)
        );
    }
    Ok(dir)
}
