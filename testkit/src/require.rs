//! What a test needs from the machine (root, executables), and the loud skip.
//!
//! A test that cannot run prints `*** SKIPPED: <test> needs … ***` straight to stderr (libtest
//! captures `eprintln!` of passing tests, and a skip must be seen) and passes — unless `CI` is
//! set ([`in_ci`]): then it panics, because CI must never skip.

use std::io::Write as _;
use std::path::PathBuf;

/// True when this process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when the environment variable `CI` is set to anything but "", "0" or "false".
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE"))
}

/// Finds an executable by name in `PATH`, then in `/usr/sbin` and `/sbin` (root tools such as
/// `miredo` and `nft` live there and are missing from some users' `PATH`).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Checks what a test needs from the machine: root (`root`) and the executables in `tools`.
///
/// Returns true when all is there. Otherwise prints `SKIPPED: <test> needs …` to stderr and
/// returns false — unless `CI` is set ([`in_ci`]), where it panics: CI must never skip.
pub fn requirements_met(test: &str, root: bool, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if root && !is_root() {
        missing.push("root (network namespaces)".to_owned());
    }
    for tool in tools {
        if find_tool(tool).is_none() {
            missing.push(format!("the `{tool}` executable"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("SKIPPED: {test} needs {}", missing.join(", "));
    assert!(!in_ci(), "{msg}; CI is set, and CI must never skip");
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests, and a
    // skip must be seen.
    let _ = writeln!(std::io::stderr(), "\n*** {msg} ***");
    false
}

/// True if `test` may run (root); otherwise skips loudly, or panics under `CI`.
pub fn root_or_skip(test: &str) -> bool {
    requirements_met(test, true, &[])
}

/// The name of the enclosing function, without the crate name (`interop::my_test`).
#[macro_export]
macro_rules! function_name {
    () => {{
        fn f() {}
        let name = ::std::any::type_name_of_val(&f);
        let name = name.strip_suffix("::f").unwrap_or(name);
        name.split_once("::").map_or(name, |(_, rest)| rest)
    }};
}

/// Returns from the enclosing test unless it runs as root and every named executable exists
/// (see [`requirements_met`]: skip loudly, or panic under `CI`).
///
/// `require_root!();` or `require_root!("miredo", "tshark");`
#[macro_export]
macro_rules! require_root {
    ($($tool:expr),* $(,)?) => {
        if !$crate::requirements_met($crate::function_name!(), true, &[$($tool),*]) {
            return;
        }
    };
}

/// Returns from the enclosing test unless every named executable exists (no root needed).
#[macro_export]
macro_rules! require_tools {
    ($($tool:expr),+ $(,)?) => {
        if !$crate::requirements_met($crate::function_name!(), false, &[$($tool),+]) {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn function_name_drops_the_crate() {
        assert_eq!(
            crate::function_name!(),
            "require::tests::function_name_drops_the_crate"
        );
    }

    #[test]
    fn present_tools_are_found() {
        assert!(super::find_tool("sh").is_some());
        assert!(super::find_tool("no-such-tool-teredo").is_none());
        assert!(super::requirements_met(
            "present_tools_are_found",
            false,
            &["sh"]
        ));
    }
}
