//! A short `versus` run (one round, 1 s trials, low rates) with both devices of both parts:
//! our server and `miredo-server` under client-sim's RS storm, our relay and Miredo's under
//! ICMPv6 echo from qualified Teredo clients. Its table must name both devices with
//! router advertisements and echo replies actually received, and its JSON every run.

use std::process::Command;

use testkit::{bin_path, find_tool, function_name, requirements_met, TestDir};

/// The numbers of a table row `| part | figure | ours | miredo | ratio |` whose part and
/// figure start with `part` and `figure`: (ours, miredo) as the leading number of each cell
/// (`None` for `-`).
fn row(table: &str, part: &str, figure: &str) -> (Option<f64>, Option<f64>) {
    let line = table
        .lines()
        .find(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            cells.len() > 4 && cells[1] == part && cells[2].starts_with(figure)
        })
        .unwrap_or_else(|| panic!("no row {part:?} / {figure:?} in:\n{table}"));
    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
    let num = |c: &str| {
        c.split_whitespace()
            .next()
            .and_then(|w| w.parse::<f64>().ok())
    };
    (num(cells[3]), num(cells[4]))
}

#[test]
fn versus_smoke_both_devices() {
    let tools = ["miredo", "miredo-server", "ethtool", "taskset"];
    if !requirements_met(function_name!(), true, &tools) {
        return;
    }
    let dir = TestDir::new(function_name!()).unwrap();
    let json = dir.join("versus.json");
    let tool = |t: &str| find_tool(t).unwrap();
    let out = Command::new(bin_path("versus").unwrap())
        .args([
            "--quick",
            "--duration",
            "1",
            "--drain",
            "0.5",
            "--server-clients",
            "10",
            "--server-start-rate",
            "1000",
            "--server-max-rate",
            "2000",
            "--server-rates",
            "1000",
            "--relay-clients",
            "10",
            "--qualify-rate",
            "1000",
            "--relay-start-rate",
            "500",
            "--relay-max-rate",
            "1000",
            "--relay-rates",
            "500",
            "--max-load",
            "1000",
            "--wait-quiet",
            "0",
        ])
        .arg("--miredo-bin")
        .arg(tool("miredo"))
        .arg("--miredo-server-bin")
        .arg(tool("miredo-server"))
        .arg("--keep")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "versus failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("| part | figure | ours | miredo | ratio |"),
        "{stdout}"
    );
    for (part, answers) in [
        ("server", "saturation, RA/s"),
        ("relay, 10 clients", "saturation, echo replies/s"),
        ("server", "throughput"),
        ("relay, 10 clients", "throughput"),
    ] {
        let (ours, miredo) = row(&stdout, part, answers);
        for (dev, v) in [("ours", ours), ("miredo", miredo)] {
            assert!(
                v.is_some_and(|v| v > 0.0),
                "{part} {answers}: {dev} has {v:?}\n{stdout}\n{stderr}"
            );
        }
    }
    // RTTs at the fixed rates, for both devices.
    for (part, figure) in [
        ("server", "RTT p99 at 1.0 k RS/s"),
        ("relay, 10 clients", "RTT p99 at 0.5 k echo"),
    ] {
        let (ours, miredo) = row(&stdout, part, figure);
        assert!(ours.is_some() && miredo.is_some(), "{figure}\n{stdout}");
    }
    assert!(stdout.contains("generator: "), "{stdout}");

    // The JSON: every run, each with the load before and after, and the answers the
    // fixed-rate trials got.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("versus JSON");
    let steps = v["steps"].as_array().expect("steps");
    // 2 parts × 2 devices × (search, saturation, one fixed rate).
    assert_eq!(steps.len(), 12, "{v:#}");
    for s in steps {
        assert!(s["error"].is_null(), "{s:#}");
        assert!(s["load_before"].as_f64().is_some() && s["load_after"].as_f64().is_some());
        if s["kind"] == "fixed" {
            let got = s["run"]["data"]["received"].as_u64().unwrap_or(0);
            assert!(got > 0, "no answers at a fixed rate: {s:#}");
        }
    }
}
