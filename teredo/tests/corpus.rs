//! Replays the fuzz corpus as ordinary tests: every file under `fuzz/corpus/<target>/` (the
//! committed seeds) and `fuzz/regressions/<target>/` (inputs that once found a bug) goes
//! through the same harness function as the cargo-fuzz target.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        files.extend(entries.map(|e| e.expect("directory entry").path()));
    }
    files.sort();
    assert!(!files.is_empty(), "no corpus for fuzz target {target}");
    files
}

fn replay(target: &str, harness: fn(&[u8])) {
    for f in inputs(target) {
        let data = std::fs::read(&f).expect("read corpus file");
        let r = std::panic::catch_unwind(|| harness(&data));
        assert!(r.is_ok(), "fuzz target {target} fails on {}", f.display());
    }
}

#[test]
fn wire_corpus() {
    replay("wire", teredo::fuzzing::wire);
}

#[test]
fn server_corpus() {
    replay("server", teredo::fuzzing::server_datagram);
}

#[test]
fn relay_udp_corpus() {
    replay("relay_udp", teredo::fuzzing::relay_udp);
}

#[test]
fn relay_ipv6_corpus() {
    replay("relay_ipv6", teredo::fuzzing::relay_ipv6);
}

#[test]
fn client_corpus() {
    replay("client", teredo::fuzzing::client_udp);
}
