//! Debian's headless Chromium for the tests of our HTML pages: run it with a bounded time and
//! a private profile, read the rendered DOM (`--dump-dom`) and the page's console (Chromium
//! logs it to stderr with `--enable-logging=stderr --v=0`), take screenshots, and read a few
//! things back (start tags, attributes, a PNG's size).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};

/// Longest Chromium may take for one page; `timeout(1)` kills it after that.
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs headless Chromium with `args` (and a profile under `work`); returns its stdout and
/// its stderr (which carries the page's console lines, marked `CONSOLE`).
pub fn chromium(work: &Path, args: &[&str]) -> Result<(String, String)> {
    let profile = work.join("chromium-profile");
    let out = Command::new("timeout")
        .arg(BROWSER_TIMEOUT.as_secs().to_string())
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .context("run chromium")?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        out.status.success(),
        "chromium failed: {}\n{stderr}",
        out.status
    );
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), stderr))
}

/// The page's console lines in Chromium's stderr.
pub fn console_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("CONSOLE")).collect()
}

/// Console errors: every console line not containing one of `expected`, and uncaught
/// exceptions or refused resources Chromium reported.
pub fn console_errors<'a>(stderr: &'a str, expected: &[&str]) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| {
            (l.contains("CONSOLE") && !expected.iter().any(|e| l.contains(e)))
                || l.contains("Uncaught")
                || l.contains("Refused to execute")
                || l.contains("Failed to load resource")
        })
        .collect()
}

/// Takes a `width` × `height` screenshot of `url` into `png`; returns its console stderr.
pub fn screenshot(work: &Path, url: &str, png: &Path, (w, h): (u32, u32)) -> Result<String> {
    let size = format!("--window-size={w},{h}");
    let arg = format!("--screenshot={}", png.display());
    let (_, stderr) = chromium(work, &[&arg, &size, url])?;
    let data = std::fs::read(png).context("no screenshot")?;
    ensure!(
        png_size(&data)? == (w, h),
        "screenshot size {:?}",
        png_size(&data)?
    );
    Ok(stderr)
}

/// The start tag (up to `>`) of the first element with `marker` in it.
pub fn start_tag<'a>(dom: &'a str, marker: &str) -> Result<&'a str> {
    let at = dom
        .find(marker)
        .with_context(|| format!("{marker} not in the DOM"))?;
    let start = dom[..at].rfind('<').context("no tag start")?;
    let end = at + dom[at..].find('>').context("no tag end")?;
    Ok(&dom[start..=end])
}

/// An attribute value in a start tag.
pub fn attr<'a>(tag: &'a str, name: &str) -> Result<&'a str> {
    let key = format!(r#"{name}=""#);
    let at = tag
        .find(&key)
        .with_context(|| format!("no {name} in {tag}"))?
        + key.len();
    let len = tag[at..].find('"').context("unterminated attribute")?;
    Ok(&tag[at..at + len])
}

/// Width and height from a PNG's IHDR chunk.
pub fn png_size(png: &[u8]) -> Result<(u32, u32)> {
    ensure!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    ensure!(png.len() >= 24 && &png[12..16] == b"IHDR", "no IHDR");
    Ok((
        u32::from_be_bytes(png[16..20].try_into()?),
        u32::from_be_bytes(png[20..24].try_into()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tags_attributes_and_console_errors() {
        let dom = r#"<p><span id="stats" data-arrows="7">x</span></p>"#;
        let tag = start_tag(dom, r#"id="stats""#).unwrap();
        assert_eq!(attr(tag, "data-arrows").unwrap(), "7");
        assert!(attr(tag, "data-none").is_err());
        let log = "[1:2:INFO:CONSOLE(3)] \"ready\"\n[1:2:INFO:CONSOLE(9)] \"Uncaught x\"\nother";
        assert_eq!(console_lines(log).len(), 2);
        assert_eq!(console_errors(log, &["ready"]).len(), 1);
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&[0, 0, 2, 0, 0, 0, 1, 0]);
        assert_eq!(png_size(&png).unwrap(), (512, 256));
    }
}
