//! The `teredo-server` binary: help, exit codes, the one-line error, signals.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_teredo-server");

/// Both addresses on loopback, any free port: a server any user can start.
const ON_LOOPBACK: [&str; 6] = [
    "--primary",
    "127.0.0.1",
    "--secondary",
    "127.0.0.2",
    "--port",
    "0",
];

/// The binary with a clean environment for its flags and logs.
fn server() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TEREDO_SERVER_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "error").stdin(Stdio::null());
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run teredo-server")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Exit code 1 and exactly one line on stderr, which is returned.
fn one_error_line(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    let line = err.trim_end().to_owned();
    assert!(line.starts_with("teredo-server: error: "), "{line}");
    line
}

#[test]
fn help_lists_every_flag() {
    let o = run(server().arg("--help"));
    assert!(o.status.success());
    let help = String::from_utf8(o.stdout).unwrap();
    for flag in [
        "--primary <IPV4>",
        "--secondary <IPV4>",
        "--port <PORT>",
        "--metrics-addr <IP:PORT>",
        "--native <NATIVE>",
        "--mtu <MTU>",
        "--icmpv6-max-payload <BYTES>",
        "--log-format <LOG_FORMAT>",
        "[env: TEREDO_SERVER_PRIMARY=]",
        "[default: 3544]",
        "[default: raw]",
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&mut server()).status.code(), Some(2));
    assert_eq!(
        run(server().args(["--primary", "not-an-address"]))
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn bad_configuration_is_one_line_and_exit_1() {
    let o = run(server().args(["--primary", "198.51.100.1", "--secondary", "198.51.100.1"]));
    assert_eq!(
        one_error_line(&o),
        "teredo-server: error: primary and secondary addresses must differ (both are 198.51.100.1)"
    );

    let o = run(server().args(["--primary", "192.0.2.77", "--native", "none"]));
    let line = one_error_line(&o);
    assert!(
        line.starts_with("teredo-server: error: cannot bind UDP socket 192.0.2.77:3544: "),
        "{line}"
    );
}

/// Without CAP_NET_RAW, `--native raw` fails and the message suggests `--native none`.
#[test]
fn raw_socket_without_cap_net_raw_suggests_native_none() {
    let args = ON_LOOPBACK;
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let o = if root {
        // Drop CAP_NET_RAW from the bounding set so the exec'd binary lacks it.
        let mut c = Command::new("setpriv");
        c.args(["--bounding-set=-net_raw", "--inh-caps=-net_raw", "--", BIN])
            .args(args)
            .env("RUST_LOG", "error");
        match c.output() {
            Ok(o) if !stderr(&o).starts_with("setpriv:") => o,
            other => {
                assert!(!testkit::require::in_ci(), "setpriv unusable: {other:?}");
                // Straight to stderr: libtest would capture `eprintln!`.
                let _ = writeln!(
                    std::io::stderr(),
                    "raw_socket_without_cap_net_raw: SKIPPED (setpriv unusable)"
                );
                return;
            }
        }
    } else {
        run(server().args(args))
    };
    let line = one_error_line(&o);
    assert!(
        line.contains("cannot open raw IPv6 socket") && line.contains("--native none"),
        "{line}"
    );
}

/// The binary starts, logs JSON when asked, and exits 0 on SIGTERM.
#[test]
fn runs_until_sigterm() {
    let mut child = server()
        .args(ON_LOOPBACK)
        .args([
            "--native",
            "none",
            "--log-format",
            "json",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "never listened: {seen:#?}");
        let line = lines.next().expect("stderr closed").unwrap();
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not JSON: {line}"
        );
        let listening = line.contains("teredo server listening");
        seen.push(line);
        if listening {
            break;
        }
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("teredo server stopped")),
        "{seen:#?} {rest:#?}"
    );
}
