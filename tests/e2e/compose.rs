//! The container lab (`docker/`): cheap consistency checks here; the full run is `.ci/run`'s
//! "Container lab" step (`docker/build.sh` then `docker/up.sh`), where its table is seen.
//!
//! * `compose_file_is_accepted_by_docker_compose`: `docker-compose config` (v1, Debian 12's)
//!   accepts `docker/compose.yml` with and without each profile (`miredo`, `monitoring`,
//!   `load`, `conformance`, `plug-server`, `plug-relay`), and the services are the documented
//!   ones.
//! * `compose_file_is_accepted_by_docker_compose_v2`: the same file and profiles with
//!   `docker compose` (v2, `docker/install-compose-v2.sh`), the same services.
//! * `plugged_devices_share_the_lab_network`: the plugged-in server and relay run in the
//!   network namespace of the lab's `server` / `relay` containers, with the image and command
//!   line given in the environment, and the conformance container sits on both networks.
//! * `prometheus_config_is_valid`: `promtool check config` on `docker/lab/prometheus.yml`,
//!   which scrapes the server's, the relay's and the load generator's compose addresses.
//! * `matrix_rows_have_a_container_and_a_lab_expectation`: every row of `docker/lab/matrix.tsv`
//!   names a compose service that runs it, and `client-sim lab` has an expected outcome for its
//!   profile × NAT kind (the runner takes its expectations from there).
//! * `entrypoints_parse`: `bash -n` on every script.
//! * `container_report_renders_the_runners_verdict`: `client-sim container-report` on a verdict
//!   in the runner's shape writes a page with a row per scenario and JUnit with a test case
//!   per scenario (parsed with roxmltree).
//! * `container_report_renders_in_headless_chromium`: that page in Debian's headless Chromium
//!   (the counts its script made in the rendered DOM, no console error, a screenshot).
//! * `container_lab_results_have_report_and_junit`: every runner's results folder under
//!   `docker/results/` (`.ci/run` runs the container lab before `cargo test`) has its
//!   `report.html` and a `junit.xml` that parses, one test case per row of `verdict.json`.
//! * `container_lab_end_to_end` (ignored: minutes, root and Docker; `.ci/run` runs the same
//!   two commands): builds the images and runs the lab.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

use teredo_tests::bins::workspace_root;
use teredo_tests::process::run;
use teredo_tests::{bin_path, check, function_name, require_root, require_tools, TestDir};

fn docker_dir() -> PathBuf {
    workspace_root().join("docker")
}

/// Every compose profile of `docker/compose.yml`.
const PROFILES: [&str; 6] = [
    "miredo",
    "monitoring",
    "load",
    "conformance",
    "plug-server",
    "plug-relay",
];

/// Which compose: `docker-compose` (v1) or `docker compose` (v2).
#[derive(Clone, Copy)]
enum Compose {
    V1,
    V2,
}

/// `docker-compose` / `docker compose` `-f docker/compose.yml -p teredo-lab [--profile P]…
/// ARGS…` with `env` set, stdout.
fn compose_env(v: Compose, profiles: &[&str], env: &[(&str, &str)], args: &[&str]) -> String {
    let file = docker_dir().join("compose.yml");
    let mut cmd = match v {
        Compose::V1 => Command::new("docker-compose"),
        Compose::V2 => {
            let mut c = Command::new("docker");
            c.arg("compose");
            c
        }
    };
    cmd.arg("-f").arg(&file).args(["-p", "teredo-lab"]);
    for p in profiles {
        cmd.args(["--profile", p]);
    }
    // Where the results would go; `config` only interpolates it.
    cmd.env("TEREDO_LAB_RESULTS", std::env::temp_dir());
    cmd.envs(env.iter().copied());
    check(run(cmd.args(args)))
}

fn compose(profile: Option<&str>, args: &[&str]) -> String {
    compose_env(Compose::V1, profile.as_slice(), &[], args)
}

fn service_names(out: &str) -> BTreeSet<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn services(profile: Option<&str>) -> BTreeSet<String> {
    service_names(&compose(profile, &["config", "--services"]))
}

/// The lines of `service`'s block in `config` output (v1 and v2 both print two-space service
/// names under `services:`).
fn service_block(config: &str, service: &str) -> String {
    config
        .lines()
        .skip_while(|l| *l != format!("  {service}:"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Every service of every profile.
fn all_services() -> BTreeSet<String> {
    let mut all: BTreeSet<String> = SERVICES.iter().map(|s| (*s).to_owned()).collect();
    all.extend(
        [
            "miredo",
            "prometheus",
            "loadgen",
            "conform",
            "server-plugged",
            "relay-plugged",
        ]
        .map(str::to_owned),
    );
    all
}

/// One row of `docker/lab/matrix.tsv`.
struct Row {
    id: String,
    container: String,
    profile: String,
    nat: String,
}

fn matrix() -> Vec<Row> {
    let path = docker_dir().join("lab/matrix.tsv");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(
                f.len(),
                8,
                "matrix.tsv row without 8 tab-separated fields: {l:?}"
            );
            Row {
                id: f[0].to_owned(),
                container: f[1].to_owned(),
                profile: f[2].to_owned(),
                nat: f[3].to_owned(),
            }
        })
        .collect()
}

const SERVICES: [&str; 13] = [
    "runner",
    "server",
    "relay",
    "v6host",
    "nat-fullcone",
    "nat-restricted",
    "nat-portrestricted",
    "nat-symmetric",
    "client-fullcone",
    "client-restricted",
    "client-portrestricted",
    "client-symmetric",
    "client-model",
];

#[test]
fn compose_file_is_accepted_by_docker_compose() {
    require_tools!("docker-compose");
    compose(None, &["config", "-q"]);
    for profile in PROFILES {
        compose(Some(profile), &["config", "-q"]);
    }
    // (docker-compose 1.29's `config --services` lists profiled services too.)
    assert_eq!(services(Some("miredo")), all_services());
    let config = compose(Some("miredo"), &["config"]);
    // The Miredo client runs only with its profile (docker/up.sh enables it by default).
    let miredo: String = config
        .lines()
        .skip_while(|l| *l != "  miredo:")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        miredo.contains("profiles:\n    - miredo"),
        "miredo service without `profiles: [miredo]`:\n{miredo}"
    );
    // Prometheus comes with `monitoring` and `load`, the load generator with `load` only.
    let config = compose(Some("load"), &["config"]);
    let service = |name: &str| -> String {
        config
            .lines()
            .skip_while(|l| *l != format!("  {name}:"))
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    assert!(
        service("prometheus").contains("profiles:\n    - monitoring\n    - load\n"),
        "{config}"
    );
    assert!(
        service("loadgen").contains("profiles:\n    - load\n"),
        "{config}"
    );
    // `client-sim prom-check` reads the page Prometheus serves (docker/lab/, mounted in both)
    // and the Grafana dashboard.
    for mount in ["/docker/lab:/lab:ro", "/docker/grafana:/grafana:ro"] {
        assert!(service("loadgen").contains(mount), "{mount}: {config}");
    }
    assert!(
        service("prometheus").contains("/docker/lab:/lab:ro"),
        "{config}"
    );
    // No image is ever pulled: every service runs a locally built image (docker/build.sh),
    // unless TEREDO_LAB_SERVER_IMAGE / _RELAY_IMAGE name another one.
    let images: BTreeSet<&str> = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .collect();
    assert_eq!(
        images,
        BTreeSet::from(["teredo-lab/lab:latest", "teredo-lab/prometheus:latest"]),
        "{config}"
    );
}

#[test]
fn prometheus_config_is_valid() {
    require_tools!("promtool");
    let file = docker_dir().join("lab/prometheus.yml");
    let out = check(run(Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(&file)));
    assert!(out.contains("SUCCESS"), "{out}");
    let text = std::fs::read_to_string(&file).expect("read prometheus.yml");
    // The compose addresses and metrics ports of docker/lab/{server,relay,loadgen}.sh.
    for target in [
        "198.51.100.10:9101",
        "198.51.100.20:9102",
        "198.51.100.60:9103",
    ] {
        assert!(
            text.contains(&format!("\"{target}\"")),
            "{target} not scraped"
        );
    }
}

#[test]
fn matrix_rows_have_a_container_and_a_lab_expectation() {
    require_tools!("docker-compose");
    let services = services(Some("miredo"));
    let client_sim = check(bin_path("client-sim"));
    let rows = matrix();
    assert!(rows.len() >= 9, "{} rows", rows.len());
    let mut ids = BTreeSet::new();
    for row in &rows {
        assert!(ids.insert(row.id.clone()), "duplicate id {}", row.id);
        assert!(
            services.contains(&row.container),
            "{}: no compose service {}",
            row.id,
            row.container
        );
        let out = check(run(Command::new(&client_sim).args([
            "lab",
            "--json",
            "--seed",
            "1",
            "--profile",
            &row.profile,
            "--nat",
            &row.nat,
        ])));
        let lab: serde_json::Value = serde_json::from_str(&out).expect("client-sim lab --json");
        let scenario = lab["scenarios"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["variant"] == "-"))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no plain lab scenario for {} × {}",
                    row.id, row.profile, row.nat
                )
            });
        assert!(
            scenario["expected"]["state"].is_string(),
            "{}: {scenario}",
            row.id
        );
    }
    // Every kernel NAT kind has two profiles.
    for kind in ["full-cone", "restricted", "port-restricted", "symmetric"] {
        let n = rows
            .iter()
            .filter(|r| {
                r.nat == kind && r.container.starts_with("client-") && r.container != "client-model"
            })
            .count();
        assert_eq!(n, 2, "{kind}: {n} client-sim rows behind its router");
    }
}

#[test]
fn entrypoints_parse() {
    require_tools!("bash");
    let mut scripts = vec![
        docker_dir().join("base-image.sh"),
        docker_dir().join("build.sh"),
        docker_dir().join("up.sh"),
        docker_dir().join("console-shot.sh"),
    ];
    for entry in std::fs::read_dir(docker_dir().join("lab")).expect("docker/lab") {
        let path = entry.expect("docker/lab entry").path();
        if path.extension().is_some_and(|e| e == "sh") {
            scripts.push(path);
        }
    }
    assert!(scripts.len() >= 10, "{scripts:?}");
    for s in scripts {
        check(run(Command::new("bash").arg("-n").arg(&s)));
    }
}

/// The whole lab: `docker/build.sh` then `docker/up.sh` (a few minutes the first time: the
/// base image, a release build). `.ci/run` runs the same commands as a step of its own.
/// `cargo test -p teredo-tests --test e2e compose -- --ignored`.
#[test]
#[ignore = "minutes, root and Docker: .ci/run runs docker/build.sh and docker/up.sh itself"]
fn container_lab_end_to_end() {
    require_root!("docker", "docker-compose");
    for script in ["build.sh", "up.sh"] {
        let status = Command::new(docker_dir().join(script))
            .current_dir(workspace_root())
            .status()
            .unwrap_or_else(|e| panic!("run docker/{script}: {e}"));
        assert!(status.success(), "docker/{script}: {status}");
    }
    check_report_files(&docker_dir().join("results"));
}

#[test]
fn compose_file_is_accepted_by_docker_compose_v2() {
    require_tools!("docker");
    let present = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    // Not an executable on PATH but a Docker CLI plugin: the loud skip by hand.
    if !present {
        let msg = "SKIPPED: compose_file_is_accepted_by_docker_compose_v2 needs `docker compose` \
                   (docker/install-compose-v2.sh)";
        assert!(
            !teredo_tests::in_ci(),
            "{msg}; CI is set, and CI must never skip"
        );
        let _ = writeln!(std::io::stderr(), "\n*** {msg} ***");
        return;
    }
    compose_env(Compose::V2, &[], &[], &["config", "-q"]);
    for profile in PROFILES {
        compose_env(Compose::V2, &[profile], &[], &["config", "-q"]);
    }
    // v2 lists only the services of the enabled profiles.
    let out = compose_env(Compose::V2, &PROFILES, &[], &["config", "--services"]);
    assert_eq!(service_names(&out), all_services());
    let out = compose_env(Compose::V2, &[], &[], &["config", "--services"]);
    assert_eq!(
        service_names(&out),
        SERVICES.iter().map(|s| (*s).to_owned()).collect()
    );
}

#[test]
fn plugged_devices_share_the_lab_network() {
    require_tools!("docker-compose");
    let env = [
        ("TEREDO_LAB_SERVER", "plugged"),
        ("TEREDO_LAB_SERVER_IMAGE", "example/teredo-server:1"),
        ("TEREDO_LAB_SERVER_CMD", "tsrv --bind 198.51.100.10"),
        ("TEREDO_LAB_RELAY_CMD", "trelay --port 3545"),
    ];
    let config = compose_env(
        Compose::V1,
        &["plug-server", "plug-relay", "conformance"],
        &env,
        &["config"],
    );
    let server = service_block(&config, "server-plugged");
    assert!(
        server.contains("network_mode: service:server\n"),
        "{server}"
    );
    assert!(
        server.contains("image: example/teredo-server:1\n"),
        "{server}"
    );
    assert!(
        server.contains("command: tsrv --bind 198.51.100.10\n"),
        "{server}"
    );
    assert!(
        server.contains("profiles:\n    - plug-server\n"),
        "{server}"
    );
    let relay = service_block(&config, "relay-plugged");
    assert!(relay.contains("network_mode: service:relay\n"), "{relay}");
    assert!(relay.contains("image: teredo-lab/lab:latest\n"), "{relay}");
    assert!(relay.contains("/dev/net/tun:/dev/net/tun"), "{relay}");
    // The lab's own containers set up the network and know what runs.
    assert!(
        service_block(&config, "server").contains("SERVER_IMPL: plugged\n"),
        "{config}"
    );
    let conform = service_block(&config, "conform");
    for want in [
        "profiles:\n    - conformance\n",
        "ipv4_address: 198.51.100.70",
        "ipv6_address: 2001:db8:1::70",
    ] {
        assert!(conform.contains(want), "{want:?} not in\n{conform}");
    }
}

/// The runner's report files in `dir` (a results folder with its `table.txt`): `junit.xml`
/// parses, with one test case per row of `verdict.json` and one failure per mismatch, and
/// `report.html` has one table row per scenario. Returns the number of scenarios.
fn check_report_files(dir: &std::path::Path) -> usize {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    };
    let verdict: serde_json::Value =
        serde_json::from_str(&read("verdict.json")).expect("verdict.json");
    let rows = verdict["rows"].as_array().expect("rows").len();
    let mismatches = verdict["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["result"] != "ok")
        .count();
    let xml = read("junit.xml");
    let doc = roxmltree::Document::parse(&xml).expect("junit.xml is XML");
    let cases = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .count();
    let failures = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .count();
    assert_eq!((cases, failures), (rows, mismatches), "{}", dir.display());
    let html = read("report.html");
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", dir.display());
    assert_eq!(html.matches(r#"<tr class="row "#).count(), rows);
    rows
}

/// Writes a verdict in the runner's shape into `dir`, one row per row of
/// `docker/lab/matrix.tsv` (the last one missing its result file), and runs
/// `client-sim container-report` on it; returns the number of rows.
fn synthetic_report(dir: &std::path::Path) -> usize {
    let rows = matrix();
    let n = rows.len();
    let json_rows: Vec<serde_json::Value> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let missing = i + 1 == n;
            serde_json::json!({
                "id": r.id, "container": r.container, "profile": r.profile, "nat": r.nat,
                "router": "nft R1", "expected": "qualified/cone C=1",
                "state": if missing { "missing" } else { "qualified" },
                "nat_type": "cone", "address": "-", "error": "-", "ping6_expected": "3/3",
                "ping6": "3/3", "ping6_detail": "", "why": "because", "notes": [],
                "problems": if missing { vec!["no result file before the deadline"] } else { vec![] },
                "result": if missing { "MISMATCH" } else { "ok" },
            })
        })
        .collect();
    let verdict = serde_json::json!({
        "server": "ours", "relay": "ours", "relay_trust": "strict", "rows": json_rows,
        "total": n, "ok": n - 1, "mismatches": 1, "elapsed_s": 40, "exit_code": 1,
    });
    std::fs::write(dir.join("verdict.json"), verdict.to_string()).unwrap();
    let client_sim = check(bin_path("client-sim"));
    check(run(Command::new(&client_sim).args([
        "container-report".as_ref(),
        dir.join("verdict.json").as_os_str(),
        "--html".as_ref(),
        dir.join("report.html").as_os_str(),
        "--junit".as_ref(),
        dir.join("junit.xml").as_os_str(),
    ])));
    n
}

/// `client-sim container-report` on a verdict in the runner's shape.
#[test]
fn container_report_renders_the_runners_verdict() {
    let dir = check(TestDir::new(function_name!()));
    let n = synthetic_report(dir.path());
    assert_eq!(check_report_files(dir.path()), n);
}

/// The container lab's page in headless Chromium: the page's script counted one matrix
/// block and one table row per scenario in the rendered DOM, one mismatch, no console error.
#[test]
fn container_report_renders_in_headless_chromium() {
    use teredo_tests::browser::{attr, chromium, console_errors, screenshot, start_tag};
    let test = function_name!();
    if !teredo_tests::requirements_met(test, false, &["chromium", "timeout"]) {
        return;
    }
    let dir = check(TestDir::new(test));
    let n = synthetic_report(dir.path());
    let url = format!("file://{}", dir.join("report.html").display());
    let (dom, stderr) = check(chromium(dir.path(), &["--dump-dom", &url]));
    assert!(dom.contains(r#"data-ready="1""#), "{stderr}");
    let stats = check(start_tag(&dom, r#"id="stats""#));
    assert_eq!(check(attr(stats, "data-rows")), n.to_string(), "{stats}");
    assert_eq!(check(attr(stats, "data-runs")), n.to_string(), "{stats}");
    assert_eq!(check(attr(stats, "data-mismatches")), "1", "{stats}");
    let errors = console_errors(&stderr, &["teredo-lab report ready"]);
    assert!(errors.is_empty(), "{errors:#?}");
    let png = dir.join("container-report.png");
    let stderr = check(screenshot(dir.path(), &url, &png, (1400, 1200)));
    assert!(
        console_errors(&stderr, &["teredo-lab report ready"]).is_empty(),
        "{stderr}"
    );
    let keep = check(teredo_tests::bins::profile_dir()).join("e2e-artifacts");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::copy(&png, keep.join("container-report.png")).unwrap();
    eprintln!(
        "container report: {n} scenarios, screenshot {} bytes",
        std::fs::metadata(&png).unwrap().len()
    );
}

/// Whether `dir` holds the runner's verdict (rows of container scenarios), not the verdict
/// of a conformance or load run.
fn is_runner_verdict(dir: &std::path::Path) -> bool {
    std::fs::read_to_string(dir.join("verdict.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| {
            v["rows"]
                .as_array()
                .is_some_and(|r| r.iter().all(|r| r["container"].is_string()))
        })
}

/// After a container lab run (`.ci/run` runs it before `cargo test`), every runner's results
/// folder under `docker/results/` has its `report.html` and a `junit.xml` that parses.
#[test]
fn container_lab_results_have_report_and_junit() {
    let results = docker_dir().join("results");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&results)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .chain([results.clone()])
        .filter(|p| is_runner_verdict(p))
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        let msg = format!(
            "SKIPPED: container_lab_results_have_report_and_junit needs a container lab run's \
             results in {} (docker/up.sh)",
            results.display()
        );
        assert!(
            !teredo_tests::in_ci(),
            "{msg}; CI runs the container lab first"
        );
        let _ = writeln!(std::io::stderr(), "\n*** {msg} ***");
        return;
    }
    for d in &dirs {
        let rows = check_report_files(d);
        eprintln!(
            "{}: report.html and junit.xml, {rows} scenarios",
            d.display()
        );
    }
}
