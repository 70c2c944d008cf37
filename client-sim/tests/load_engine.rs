//! `client-sim load --ceiling --engine mmsg|tokio --json FILE`, a short run in this process
//! (no root, no server): the JSON report names the engine and its timestamp source, the
//! counts add up (every answer went through the reflector, RTT samples = answers), the
//! descriptors per client are stated; `--engine mmsg` where it cannot run is a one-line
//! error, and so is `--phase rs` on the tokio engine. Figures are printed, not asserted.

use clap::Parser as _;
use client_sim::cli::{run, Cli};
use serde_json::Value;

fn ceiling(engine: &str, dir: &std::path::Path) -> Value {
    let json = dir.join(format!("{engine}.json"));
    let args = [
        "client-sim",
        "load",
        "--ceiling",
        "--engine",
        engine,
        "--cpu",
        "0",
        "--clients",
        "20",
        "--rate",
        "4000",
        "--duration",
        "2s",
        "--drain",
        "500ms",
        // Figures are not asserted: any loss passes.
        "--loss-threshold",
        "100%",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ];
    let code = run(Cli::try_parse_from(args).unwrap()).unwrap();
    assert_eq!(code, 0, "{engine}");
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

#[test]
fn ceiling_reports_its_engine() {
    let dir = std::env::temp_dir().join(format!("load-engine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (engine, stamps) in [("mmsg", "kernel (SO_TIMESTAMPNS"), ("tokio", "user space")] {
        let r = ceiling(engine, &dir);
        let e = &r["engine"];
        let d = &r["data"];
        println!(
            "{engine}: sent {} received {} rtt p50 {} ms, {}",
            d["sent"], d["received"], d["rtt_ms"]["p50"], e
        );
        assert_eq!(r["mode"], "ceiling");
        assert_eq!(e["name"], engine);
        assert!(e["timestamps"].as_str().unwrap().starts_with(stamps), "{e}");
        let cpu = if engine == "mmsg" {
            Value::from(0)
        } else {
            Value::Null
        };
        assert_eq!(e["cpu"], cpu, "pinned only in the mmsg thread");
        let (sent, received) = (d["sent"].as_u64().unwrap(), d["received"].as_u64().unwrap());
        assert!(sent > 0 && received > 0 && received <= sent, "{d}");
        assert_eq!(d["rtt_ms"]["count"].as_u64(), Some(received));
        assert_eq!(d["senders"].as_u64(), Some(20));
        let reflected = e["reflector_echoed"].as_u64().unwrap();
        assert!(
            reflected >= received,
            "every answer went through the reflector"
        );
        assert!(e["reflector_received"].as_u64().unwrap() >= reflected);
        // One socket per client, plus the runtime's and the reflector's few.
        let per_client = e["fds_per_client"].as_f64().unwrap();
        assert!((1.0..3.0).contains(&per_client), "{per_client}");
        assert!(e["generator_socket_drops"].is_u64());
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_engine_that_cannot_run_is_a_one_line_error() {
    let args = [
        "client-sim",
        "load",
        "--server",
        "127.0.0.1",
        "--engine",
        "mmsg",
        "--phase",
        "qualify",
        "--clients",
        "1",
        "--quiet",
    ];
    let e = run(Cli::try_parse_from(args).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--engine mmsg is not available: "), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn the_rs_storm_runs_on_mmsg_only() {
    let args = [
        "client-sim",
        "load",
        "--phase",
        "rs",
        "--ceiling",
        "--engine",
        "tokio",
        "--clients",
        "1",
        "--quiet",
    ];
    let e = run(Cli::try_parse_from(args).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--engine tokio cannot run --phase rs: "),
        "{e}"
    );
    assert!(e.contains("mmsg"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    // No NAT model, no data destination.
    let e = run(Cli::try_parse_from([
        "client-sim",
        "load",
        "--phase",
        "rs",
        "--server",
        "198.51.100.1",
        "--target",
        "2001:db8::1",
        "--quiet",
    ])
    .unwrap())
    .unwrap_err()
    .to_string();
    assert!(e.contains("no --target"), "{e}");
}
