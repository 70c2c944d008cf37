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

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use teredo_tests::bins::workspace_root;
use teredo_tests::process::run;
use teredo_tests::{check, require_tools};

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
    for addr in ["198.51.100.10", "198.51.100.20", "2001:db8:1::20", "2001:db8:1::100"] {
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
