//! The Docker Swarm stack (`docker/swarm/`): cheap consistency checks here; the run itself
//! (`docker/swarm/up.sh`: swarm init, 3 generator replicas, the merged report, Prometheus'
//! view of every replica) is `.ci/run`'s "Docker Swarm" step.
//!
//! * `stack_file_is_accepted_by_docker_compose`: `docker-compose config` reads
//!   `docker/swarm/stack.yml` (format 3.8, as `docker stack deploy` does), with the compose
//!   `load` profile's services, 3 generator replicas with their task slot as
//!   `CLIENT_SIM_REPLICA_INDEX`, and no fixed address (Swarm has none).
//! * `prometheus_discovers_every_replica`: `promtool check config` on
//!   `docker/swarm/prometheus.yml`, whose `loadgen` job finds its targets by DNS on
//!   `tasks.loadgen`.
//! * `swarm_scripts_parse`: `bash -n` on `up.sh` and the stack's entrypoints.
//! * `swarm_run_results_merge_again`: after a swarm run (`.ci/run` runs it before `cargo
//!   test`, into `docker/results/swarm/`), `client-sim load-report` on the host merges the 3
//!   replicas' reports into the same totals and percentiles as the run's `merged.json`, and its
//!   JUnit has one passing case per replica. Without those results it skips, saying so, outside
//!   CI and fails in CI (like `compose.rs`' `container_lab_results_have_report_and_junit`).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

use teredo_tests::bins::workspace_root;
use teredo_tests::process::run;
use teredo_tests::{bin_path, check, require_tools};

fn swarm_dir() -> PathBuf {
    workspace_root().join("docker/swarm")
}

#[test]
fn stack_file_is_accepted_by_docker_compose() {
    require_tools!("docker-compose");
    let config = check(run(Command::new("docker-compose")
        .arg("-f")
        .arg(swarm_dir().join("stack.yml"))
        .arg("config")
        .env("TEREDO_SWARM_RESULTS", std::env::temp_dir())));
    let services: BTreeSet<&str> = config
        .lines()
        .skip_while(|l| *l != "services:")
        .skip(1)
        .take_while(|l| l.starts_with(' ') || l.is_empty())
        .filter_map(|l| l.strip_prefix("  ")?.strip_suffix(':'))
        .filter(|l| !l.starts_with(' '))
        .collect();
    assert_eq!(
        services,
        BTreeSet::from(["loadgen", "prometheus", "relay", "server", "v6host"]),
        "{config}"
    );
    let loadgen: String = config
        .lines()
        .skip_while(|l| *l != "  loadgen:")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(loadgen.contains("      replicas: 3\n"), "{loadgen}");
    assert!(
        loadgen.contains("CLIENT_SIM_REPLICA_INDEX: '{{.Task.Slot}}'"),
        "{loadgen}"
    );
    assert!(
        !config.contains("ipv4_address") && !config.contains("devices"),
        "{config}"
    );
    for addr in [
        "198.51.100.10",
        "198.51.100.20",
        "2001:db8:1::20",
        "2001:db8:1::100",
    ] {
        assert!(config.contains(addr), "{addr} not placed");
    }
}

#[test]
fn prometheus_discovers_every_replica() {
    require_tools!("promtool");
    let file = swarm_dir().join("prometheus.yml");
    let out = check(run(Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(&file)));
    assert!(out.contains("SUCCESS"), "{out}");
    let text = std::fs::read_to_string(&file).expect("read prometheus.yml");
    assert!(text.contains("dns_sd_configs"), "{text}");
    assert!(text.contains("\"tasks.loadgen\""), "{text}");
}

#[test]
fn swarm_scripts_parse() {
    require_tools!("bash");
    for s in [
        swarm_dir().join("up.sh"),
        workspace_root().join("docker/lab/swarm-place.sh"),
        workspace_root().join("docker/lab/swarm-loadgen.sh"),
        workspace_root().join("docker/lab/swarm-check.sh"),
    ] {
        check(run(Command::new("bash").arg("-n").arg(&s)));
    }
}

#[test]
fn swarm_run_results_merge_again() {
    let dir = workspace_root().join("docker/results/swarm");
    let reports: Vec<PathBuf> = (1..=3)
        .map(|i| dir.join(format!("load-{i}.json")))
        .collect();
    if !(reports.iter().all(|p| p.exists()) && dir.join("merged.json").exists()) {
        let msg = format!(
            "SKIPPED: swarm_run_results_merge_again needs a swarm run's results in {} \
             (TEREDO_SWARM_RESULTS=$PWD/docker/results/swarm docker/swarm/up.sh)",
            dir.display()
        );
        assert!(
            !teredo_tests::in_ci(),
            "{msg}; CI runs the swarm before the tests"
        );
        let _ = writeln!(std::io::stderr(), "\n*** {msg} ***");
        return;
    }
    let client_sim = check(bin_path("client-sim"));
    let junit = std::env::temp_dir().join(format!("swarm-merge-{}.xml", std::process::id()));
    let out = check(run(Command::new(client_sim)
        .arg("load-report")
        .args(&reports)
        .arg("--json")
        .arg("--junit")
        .arg(&junit)));
    let again: serde_json::Value = serde_json::from_str(&out).expect("load-report --json");
    let text = std::fs::read_to_string(dir.join("merged.json")).expect("merged.json");
    let run_merged: serde_json::Value = serde_json::from_str(&text).expect("merged.json");
    for key in [
        "clients",
        "qualify",
        "data",
        "exit_code",
        "started_unix_s",
        "finished_unix_s",
    ] {
        assert_eq!(again[key], run_merged[key], "{key}");
    }
    assert_eq!(again["generators"].as_array().map(Vec::len), Some(3));
    let sent: u64 = reports
        .iter()
        .map(|p| {
            let r: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(p).expect("report")).expect("json");
            r["data"]["sent"].as_u64().expect("sent")
        })
        .sum();
    assert_eq!(again["data"]["sent"].as_u64(), Some(sent));
    let xml = std::fs::read_to_string(&junit).expect("junit");
    let _ = std::fs::remove_file(&junit);
    let doc = roxmltree::Document::parse(&xml).expect("JUnit XML");
    let replicas = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .filter(|n| {
            n.attribute("name")
                .is_some_and(|a| a.starts_with("replica "))
        })
        .count();
    assert_eq!(replicas, 3, "{xml}");
    assert_eq!(doc.root_element().attribute("failures"), Some("0"), "{xml}");
}
