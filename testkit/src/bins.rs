//! The workspace's binaries (`teredo-server`, …): built once per test process for the tests
//! ([`bin_path`]), found beside the running binary and snapshotted for the benches
//! ([`sibling`], [`snapshot`]).
//!
//! Cargo builds a package's own `[[bin]]`s before its integration tests, but not those of other
//! workspace members, and artifact dependencies are unstable. So the first call to [`bin_path`]
//! runs `$CARGO build --workspace --bins` in the workspace root with the profile and target
//! directory of the running test binary (derived from `current_exe()`:
//! `<target>/<profile-dir>/deps/e2e-<hash>`). When `.ci/run` has already run
//! `cargo build --workspace --bins` this is a no-op that takes well under a second.
//! Cargo releases its build lock before it runs test binaries, so the nested build does not
//! wait on the outer `cargo test`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::process::tail;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ has a parent directory")
}

/// `name` next to the running binary (where cargo puts the other binaries of a build).
pub fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    Ok(exe.with_file_name(name))
}

/// Copies `bin` into `dir`, so that a rebuild during a long run changes nothing; `hint` says
/// how to build it when it is missing.
pub fn snapshot(bin: &Path, dir: &Path, hint: &str) -> Result<PathBuf> {
    if !bin.is_file() {
        bail!("{} not found: {hint}", bin.display());
    }
    let to = dir.join(bin.file_name().context("binary path without a name")?);
    fs::copy(bin, &to).with_context(|| format!("copy {}", bin.display()))?;
    Ok(to)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        let here = sibling("x").unwrap();
        assert_eq!(here.file_name().unwrap(), "x");
        assert!(profile_dir().unwrap().is_dir());
        let dir = crate::TestDir::new("testkit_bins_paths").unwrap();
        let copy = snapshot(&std::env::current_exe().unwrap(), dir.path(), "").unwrap();
        assert!(copy.is_file());
        assert!(snapshot(&dir.join("missing"), dir.path(), "build it")
            .unwrap_err()
            .to_string()
            .contains("build it"));
    }
}
