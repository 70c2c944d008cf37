//! Replays the NAT model's fuzz corpus as ordinary tests: every file under
//! `fuzz/corpus/nat/` and `fuzz/regressions/nat/` goes through the harness of the cargo-fuzz
//! target `nat`.

use std::path::Path;

#[test]
fn nat_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir).join("nat")) {
            files.extend(entries.map(|e| e.expect("directory entry").path()));
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no corpus for fuzz target nat");
    for f in files {
        let data = std::fs::read(&f).expect("read corpus file");
        let r = std::panic::catch_unwind(|| netsim::fuzzing::nat(&data));
        assert!(r.is_ok(), "fuzz target nat fails on {}", f.display());
    }
}
