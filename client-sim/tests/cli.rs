//! The `client-sim` binary: help texts, usage errors, one-line errors, the lab's output and
//! exit status, byte-identical output for one seed.

use std::process::{Command, Output};

fn client_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_client-sim"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run client-sim")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const PROFILES: &[&str] = &["xp-sp2", "rfc5991", "vista", "win7", "miredo"];
const NATS: &[&str] = &[
    "none",
    "full-cone",
    "restricted",
    "port-restricted",
    "symmetric",
    "symmetric-address",
];

#[test]
fn help_lists_profiles_presets_and_exit_statuses() {
    for sub in ["lab", "qualify", "ping", "udp-echo"] {
        let o = client_sim(&[sub, "--help"]);
        assert!(o.status.success());
        let text = stdout(&o);
        for name in PROFILES.iter().chain(NATS) {
            assert!(
                text.lines().any(|l| l.trim_start().starts_with(name)),
                "{sub} --help lacks a line for {name}:\n{text}"
            );
        }
        assert!(text.contains("--log-format"), "{text}");
    }
    let text = stdout(&client_sim(&["qualify", "--help"]));
    for code in [
        "0  qualified",
        "3  offline: client behind symmetric NAT",
        "4  offline",
        "5  offline: client is in a managed network",
        "6  --timeout",
    ] {
        assert!(text.contains(code), "{code}\n{text}");
    }
    for flag in [
        "--server",
        "--secondary",
        "--profile",
        "--nat",
        "--nat-spec",
        "--bind",
        "--port",
        "--timeout",
        "--json",
        "--managed-network",
        "--client-type",
        "--default-qualified",
    ] {
        assert!(text.contains(flag), "{flag}\n{text}");
    }
    for sub in ["ping", "udp-echo"] {
        let text = stdout(&client_sim(&[sub, "--help"]));
        for want in [
            "0  at least one answer",
            "3  offline: client behind symmetric NAT",
            "7  no answer at all (100 % packet loss)",
            "--count",
            "--size",
            "--interval",
            "--wait",
            "--server",
            "--profile",
            "--nat",
            "--json",
        ] {
            assert!(text.contains(want), "{sub}: {want}\n{text}");
        }
    }
    let text = stdout(&client_sim(&["lab", "--help"]));
    for flag in ["--seed", "--json", "--pcap", "--profile", "--nat"] {
        assert!(text.contains(flag), "{flag}\n{text}");
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["lab", "--profile", "xp"][..],
        &["lab", "--nat", "cone"],
        &["qualify"],
        &["qualify", "--server", "not-an-ip"],
        &["qualify", "--server", "198.51.100.1", "--timeout", "soon"],
        &[
            "qualify",
            "--server",
            "198.51.100.1",
            "--nat",
            "symmetric",
            "--nat-spec",
            "mapping=apd",
        ],
        &["ping", "--server", "198.51.100.1"],
        &[
            "ping",
            "--server",
            "198.51.100.1",
            "2001:db8::99",
            "--size",
            "5000",
        ],
        &["udp-echo", "--server", "198.51.100.1", "2001:db8::99"],
        &["frobnicate"],
    ] {
        let o = client_sim(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn errors_are_one_line_with_status_1() {
    for (args, want) in [
        (
            &["qualify", "--server", "0.0.0.0"][..],
            "is not a unicast address",
        ),
        (
            &[
                "qualify",
                "--server",
                "127.0.0.2",
                "--bind",
                "127.0.0.1",
                "--nat",
                "symmetric-address",
            ],
            "needs at least 2 external IPv4 addresses",
        ),
        (
            &[
                "qualify",
                "--server",
                "127.0.0.2",
                "--bind",
                "127.0.0.1",
                "--nat-spec",
                "mapping=sideways",
            ],
            "bad value `sideways` for NAT spec key `mapping`",
        ),
        (
            &[
                "qualify",
                "--server",
                "127.0.0.1",
                "--bind",
                "127.0.0.1",
                "--nat",
                "full-cone",
            ],
            "also the simulated NAT's external address",
        ),
        (
            &["qualify", "--server", "127.0.0.2", "--bind", "192.0.2.200"],
            "cannot bind UDP socket 192.0.2.200:0",
        ),
        (
            &["lab", "--pcap", "/proc/version"],
            "cannot create pcap directory",
        ),
        (
            &[
                "udp-echo",
                "--server",
                "127.0.0.2",
                "--size",
                "1",
                "[2001:db8::99]:7",
            ],
            "--size must be at least 2 for UDP",
        ),
    ] {
        let o = client_sim(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("client-sim: error: "), "{err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    }
}

#[test]
fn lab_prints_the_table_and_is_byte_identical_per_seed() {
    let a = client_sim(&["lab", "--seed", "9"]);
    assert_eq!(a.status.code(), Some(0), "{}", stdout(&a));
    let text = stdout(&a);
    let header = text.lines().next().unwrap();
    for col in [
        "profile",
        "NAT",
        "expected",
        "state",
        "NAT type",
        "Teredo address",
        "error",
        "fault",
        "result",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        text.contains("62 scenarios, 62 ok, 0 mismatches (seed 9)"),
        "{text}"
    );
    assert!(!text.contains("MISMATCH"));
    assert!(text.contains("26 rows, 26 ok, 0 mismatches"), "{text}");
    assert!(
        text.contains("81 cells, 81 ok (") && text.contains("documented deviations), 0 mismatches"),
        "{text}"
    );
    assert!(stderr(&a).contains("81 grid cells"), "{}", stderr(&a));
    assert!(stderr(&a).contains("wall time"), "{}", stderr(&a));
    let b = client_sim(&["lab", "--seed", "9"]);
    assert_eq!(a.stdout, b.stdout, "same seed, same bytes");
    let c = client_sim(&["lab", "--seed", "10"]);
    assert_ne!(a.stdout, c.stdout);

    let j = client_sim(&[
        "lab",
        "--json",
        "--profile",
        "xp-sp2,miredo",
        "--nat",
        "symmetric",
    ]);
    assert_eq!(j.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["mismatches"], 0);
    let s = v["scenarios"].as_array().unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0]["name"], "xp-sp2__symmetric");
    assert_eq!(s[0]["observed"]["state"], "offline");
    assert_eq!(s[0]["observed"]["error"], "client behind symmetric NAT");
    assert_eq!(s[0]["observed"]["status"]["nat"], "symmetric (port)");
    // NAT drops per reason: the cone probe's three RAs filtered.
    assert_eq!(s[0]["observed"]["nat_drops"]["filtered"], 3);
    assert_eq!(s[0]["observed"]["nat_drops_total"], 3);
    assert_eq!(s[1]["observed"]["nat"], "restricted");
}
