//! Tests of the namespace harness itself.

use std::net::SocketAddrV4;
use std::time::Duration;

use teredo_tests::netns::PREFIX;
use teredo_tests::process::run;
use teredo_tests::topo::{self, NatSite, LAN_HOST, NAT_WAN, SERVER_PRIMARY};
use teredo_tests::wait::wait_for;
use teredo_tests::{check, function_name, require_root, Internet, Netns, TestDir};

fn netns_names() -> Vec<String> {
    let out = check(run(std::process::Command::new("ip").args(["netns", "list"])));
    out.lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Sends one UDP datagram from inside `ns` with bash's `/dev/udp` (no extra tools needed).
fn send_udp(ns: &Netns, to: SocketAddrV4) {
    let script = format!("echo teredo-tests > /dev/udp/{}/{}", to.ip(), to.port());
    check(ns.exec("bash", &["-c", &script]));
}

#[test]
fn namespace_is_removed_with_its_processes() {
    require_root!();
    let test = function_name!();
    let dir = check(TestDir::new(test));
    let ns = check(Netns::new(test, "a"));
    let name = ns.name().to_owned();
    assert!(name.starts_with(PREFIX), "{name}");
    assert!(netns_names().contains(&name));
    // A child and a grandchild: Drop must end both, not only what it spawned directly.
    let mut sh = check(ns.spawn("sh", dir.path(), "sh", &["-c", "sleep 600 & sleep 600"]));
    check(wait_for("two sleeps", Duration::from_secs(5), || {
        Ok((ns.pids()?.len() >= 2).then_some(()))
    }));
    let pids = check(ns.pids());
    drop(ns);
    assert!(!netns_names().contains(&name), "{name} still listed");
    for pid in pids {
        // Gone, or a zombie waiting for us to reap it (the direct child).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, r)| &r[..1]);
        assert!(
            matches!(state, None | Some("Z")),
            "pid {pid} survived: {stat}"
        );
    }
    assert!(check(sh.try_status()).is_some(), "sh was not stopped");
}

#[test]
fn internet_bridge_connects_hosts() {
    require_root!();
    let test = function_name!();
    let internet = check(Internet::new(test));
    let a = check(topo::public_host(&internet, test, "a", &[SERVER_PRIMARY]));
    let b = check(topo::public_host(&internet, test, "b", &[NAT_WAN]));
    assert_eq!(check(b.ipv4_addrs("eth0")), vec![NAT_WAN]);
    let b_mac = check(b.ip(&["-o", "link", "show", "eth0"]));
    let b_mac = b_mac
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("eth0 has a MAC address")
        .to_owned();
    // A datagram from a to b needs ARP first: once a's neighbour table holds b's MAC, the
    // bridge carried the request and the reply.
    send_udp(&a, SocketAddrV4::new(NAT_WAN, 9));
    check(wait_for(
        "ARP resolution a -> b",
        Duration::from_secs(5),
        || {
            let neigh = a.ip(&["neigh", "show", &NAT_WAN.to_string()])?;
            Ok(neigh.contains(&b_mac).then_some(()))
        },
    ));
}

#[test]
fn masquerade_router_maps_lan_host() {
    require_root!("nft", "conntrack", "sysctl");
    let test = function_name!();
    let internet = check(Internet::new(test));
    let _server = check(topo::public_host(&internet, test, "srv", &[SERVER_PRIMARY]));
    let site = check(NatSite::masquerade(&internet, test, NAT_WAN));
    let to = SocketAddrV4::new(SERVER_PRIMARY, 3544);
    send_udp(&site.host, to);
    let (entry, _) = check(wait_for(
        "a conntrack entry",
        Duration::from_secs(5),
        || {
            let out = site.router.exec(
                "conntrack",
                &["-L", "-p", "udp", "--orig-dst", "198.51.100.1"],
            )?;
            Ok(out
                .lines()
                .find(|l| l.starts_with("udp"))
                .map(str::to_owned))
        },
    ));
    assert!(entry.contains("src=10.0.0.2 dst=198.51.100.1"), "{entry}");
    // bash picks an ephemeral source port: read it back, then look the flow up by it.
    let sport: u16 = entry
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sport="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no sport in {entry}"));
    let from = SocketAddrV4::new(LAN_HOST, sport);
    let mapped = check(site.udp_mapping(from, to)).expect("the flow is tracked");
    assert_eq!(*mapped.ip(), NAT_WAN, "not masqueraded: {entry}");
    assert_ne!(mapped.port(), 0);
    // Nothing for a flow that never was.
    let other = SocketAddrV4::new(LAN_HOST, sport.wrapping_add(1).max(1));
    assert_eq!(check(site.udp_mapping(other, to)), None);
}
