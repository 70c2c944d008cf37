//! `qualify` over real UDP sockets against the real tokio server (`teredo-server`), both
//! in-process, in a private network namespace: the server drops non-global sources such as
//! 127.0.0.1, so the namespace's loopback gets the documentation addresses 198.51.100.1 and
//! .2 (server) and .10 (client). Needs root; without it the tests print SKIPPED, or fail when
//! CI is set.
//!
//! Each component runs on its own thread that entered the namespace (`setns`) with its own
//! current-thread tokio runtime (the pattern of server/tests/server.rs).

use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use client_sim::qualify::{qualify, NatChoice, QualifyOptions, QualifyReport};
use client_sim::report::Outcome;
use netsim::NatPreset;
use teredo::client::Profile;
use teredo_rt::Shutdown;
use teredo_server::{start, NativeSide, ServerOptions};
use testkit::netns::runtime;
use testkit::{check, root_or_skip, Netns};

const PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// A second local address for the symmetric-address NAT's external pool.
const CLIENT2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
/// In the namespace's /24, but nobody listens there.
const NOBODY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);

/// A network namespace with the lab addresses on `lo`, deleted on drop.
fn lab(tag: &str) -> Netns {
    check(Netns::with_lo_addrs(
        "qualify",
        tag,
        &[
            "198.51.100.1",
            "198.51.100.2",
            "198.51.100.10",
            "198.51.100.11",
        ],
        24,
    ))
}

/// Starts the server in the namespace; it runs until the returned sender is dropped or
/// sent to.
fn start_server(ns: &Netns) -> (mpsc::Sender<()>, JoinHandle<()>) {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let handle = ns.thread(move || {
        runtime().block_on(async move {
            let mut o = ServerOptions::new(PRIMARY);
            o.native = NativeSide::Disabled;
            let (trigger, shutdown) = Shutdown::new();
            let server = start(o, shutdown).await.expect("server starts");
            ready_tx.send(()).unwrap();
            // Wait for the stop signal without blocking the runtime.
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            trigger.trigger();
            server.wait().await.unwrap();
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server ready");
    (stop_tx, handle)
}

fn run_qualify(ns: &Netns, opts: QualifyOptions) -> JoinHandle<QualifyReport> {
    ns.thread(move || {
        runtime().block_on(async move {
            let (_trigger, shutdown) = Shutdown::new();
            qualify(opts, shutdown).await.expect("qualify runs")
        })
    })
}

/// Options for one run; `seed` also picks the NAT's random ports, so concurrent runs on the
/// same address need different seeds (equal ones would collide and retry).
fn options(seed: u64, server: Ipv4Addr, profile: Profile, nat: NatChoice) -> QualifyOptions {
    let mut o = QualifyOptions::new(server);
    o.profile = profile;
    o.nat = nat;
    o.bind = CLIENT;
    o.seed = Some(seed);
    o.timeout = Duration::from_secs(40);
    o
}

#[test]
fn qualify_against_the_real_server() {
    if !root_or_skip("qualify_against_the_real_server") {
        return;
    }
    let ns = lab("q");
    let (stop, server) = start_server(&ns);

    // All at once (each has its own sockets): the cone probes filtered by a NAT take 12 s.
    let none = run_qualify(&ns, options(2, PRIMARY, Profile::Vista, NatChoice::None));
    let restricted = run_qualify(
        &ns,
        options(
            3,
            PRIMARY,
            Profile::XpSp2,
            NatChoice::Preset(NatPreset::PortRestricted),
        ),
    );
    let vista_sym = run_qualify(
        &ns,
        options(
            4,
            PRIMARY,
            Profile::Vista,
            NatChoice::Preset(NatPreset::Symmetric),
        ),
    );
    let xp_sym = run_qualify(
        &ns,
        options(
            5,
            PRIMARY,
            Profile::XpSp2,
            NatChoice::Preset(NatPreset::Symmetric),
        ),
    );
    let vista_addr = run_qualify(
        &ns,
        options(
            6,
            PRIMARY,
            Profile::Vista,
            NatChoice::Spec(format!("preset=symmetric-address,ips={CLIENT}+{CLIENT2}")),
        ),
    );
    let xp_cone = run_qualify(
        &ns,
        options(
            7,
            PRIMARY,
            Profile::XpSp2,
            NatChoice::Preset(NatPreset::FullCone),
        ),
    );
    let unreachable = run_qualify(&ns, options(8, NOBODY, Profile::Rfc5991, NatChoice::None));

    let r = none.join().unwrap();
    assert_eq!(r.outcome, Outcome::Qualified, "{r}");
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.status.nat, "none", "{r}");
    assert_eq!(
        r.status.external_nat_mapping.as_deref(),
        Some(&*r.status.local_mapping)
    );
    assert!(r.status.local_mapping.starts_with("198.51.100.10:"), "{r}");
    assert!(r
        .status
        .teredo_address
        .as_deref()
        .unwrap()
        .starts_with("2001:0:c633:6401:"));

    let r = restricted.join().unwrap();
    assert_eq!(r.outcome, Outcome::Qualified, "{r}");
    assert_eq!(r.status.nat, "restricted", "{r}");
    assert!(r.status.local_mapping.starts_with("10.0.0.2:"), "{r}");
    // Port preserving: the external mapping has the internal port.
    let port = r.status.local_mapping.rsplit(':').next().unwrap();
    assert_eq!(
        r.status.external_nat_mapping.as_deref(),
        Some(&*format!("198.51.100.10:{port}"))
    );
    assert_eq!(r.status.nat_special_behaviour.port_preserving, Some(true));
    // XP's three cone-probe RAs came from 198.51.100.2 on the wire and the NAT model
    // filtered them.
    assert_eq!(r.counters.nat_drops["filtered"], 3, "{:?}", r.counters);

    let r = vista_sym.join().unwrap();
    assert_eq!(r.outcome, Outcome::Qualified, "{r}");
    assert_eq!(r.status.nat, "symmetric (port)", "{r}");
    // One real socket per mapping: the pre-bound one, toward the primary, toward the
    // secondary.
    assert_eq!(r.counters.sockets, 3, "{:?}", r.counters);

    let r = xp_sym.join().unwrap();
    assert_eq!(r.outcome, Outcome::SymmetricNat, "{r}");
    assert_eq!(r.exit_code, 3);
    assert_eq!(r.status.state, "offline");
    assert_eq!(
        r.status.error.as_deref(),
        Some("client behind symmetric NAT")
    );

    let r = vista_addr.join().unwrap();
    assert_eq!(r.outcome, Outcome::Qualified, "{r}");
    assert_eq!(r.status.nat, "symmetric (address)", "{r}");

    let r = xp_cone.join().unwrap();
    assert_eq!(r.outcome, Outcome::Qualified, "{r}");
    assert_eq!(r.status.nat, "cone", "{r}");
    let a: std::net::Ipv6Addr = r.status.teredo_address.as_deref().unwrap().parse().unwrap();
    assert_eq!(a.segments()[4] & 0x8000, 0x8000, "C bit in {a}");

    let r = unreachable.join().unwrap();
    assert_eq!(r.outcome, Outcome::ServerUnreachable, "{r}");
    assert_eq!(r.exit_code, 4);
    assert_eq!(
        r.status.error.as_deref(),
        Some("cannot reach primary Teredo server over UDP")
    );
    assert_eq!(r.counters.rs_sent, 3);

    drop(stop);
    server.join().unwrap();
}

#[test]
fn qualify_binary_exit_status_and_json() {
    if !root_or_skip("qualify_binary_exit_status_and_json") {
        return;
    }
    let ns = lab("bin");
    let (stop, server) = start_server(&ns);
    let bin = env!("CARGO_BIN_EXE_client-sim");
    let run = |args: &[&str]| {
        ns.command(bin)
            .arg("qualify")
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run client-sim")
    };
    // xp-sp2 behind a symmetric NAT: offline, exit 3, netsh-like block.
    let out = run(&[
        "--server",
        "198.51.100.1",
        "--bind",
        "198.51.100.10",
        "--profile",
        "xp-sp2",
        "--nat",
        "symmetric",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "State                   : offline",
        "NAT                     : symmetric (port)",
        "Error                   : client behind symmetric NAT",
        "Local Mapping           : 10.0.0.2:",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    // --bind 0.0.0.0 finds the real local address; rfc5991 with no NAT; JSON.
    let out = run(&["--server", "198.51.100.1", "--profile", "rfc5991", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["state"], "qualified");
    assert_eq!(j["nat"], "none");
    assert_eq!(j["outcome"], "qualified");
    assert_eq!(j["exit_code"], 0);
    assert_eq!(j["local_mapping"], j["external_nat_mapping"]);
    assert!(j["local_mapping"]
        .as_str()
        .unwrap()
        .starts_with("198.51.100."));
    // Managed network: exit 5 at once.
    let out = run(&["--server", "198.51.100.1", "--managed-network"]);
    assert_eq!(out.status.code(), Some(5));
    // Still probing when the timeout hits: exit 6.
    let out = run(&[
        "--server",
        "198.51.100.50",
        "--profile",
        "xp-sp2",
        "--timeout",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(6));
    drop(stop);
    server.join().unwrap();
}
