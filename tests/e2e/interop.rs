//! Debian's Miredo client qualifying against a Teredo server in network namespaces.
//!
//! Every scenario runs against both server implementations ([`ServerImpl`]): ours
//! (`teredo-server`, the tests that matter) and Debian's `miredo-server` (the
//! `…_against_miredo_server` tests: the reference that shows the harness and the expectations
//! are right). How Miredo is run, and what it needs, is written down in
//! `teredo_tests::miredo`.
//!
//! Topologies (each test has its own, see `teredo_tests::topo`):
//! ```text
//! direct:      [srv 198.51.100.1+.2] --br0-- [cli 198.51.100.10]
//! masquerade:  [srv 198.51.100.1+.2] --br0-- [nat wan0 198.51.100.20 | lan0 10.0.0.1] -- [cli 10.0.0.2]
//! ```

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::Result;
use teredo_tests::miredo::{self, TEREDO_PORT};
use teredo_tests::servers;
use teredo_tests::topo::{self, NatSite, NAT_WAN, PUBLIC_CLIENT, SERVER_PRIMARY, SERVER_SECONDARY};
use teredo_tests::tshark::{tshark_check, Capture, TEREDO_FILTER};
use teredo_tests::{check, function_name, requirements_met, Internet, Netns, Proc, TestDir};

/// The Miredo client's tunnel interface.
const IFNAME: &str = "teredo0";
/// Qualification takes well under a second here; the slack covers a loaded CI machine and one
/// lost RS (Miredo retransmits after 4 s).
const QUALIFY_TIMEOUT: Duration = Duration::from_secs(20);

/// The Teredo server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerImpl {
    /// Our `teredo-server` binary.
    Ours,
    /// Debian's `miredo-server`, the reference.
    Miredo,
    /// Ours with the XDP fast path answering the router solicitations.
    OursXdp,
}

impl ServerImpl {
    /// [`requirements_met`] for a test running this server and the Miredo client.
    fn requirements_met(self, test: &str, more_tools: &[&str]) -> bool {
        let mut tools = vec!["miredo"];
        if self == Self::Miredo {
            tools.push("miredo-server");
        }
        if self == Self::OursXdp {
            tools.push("promtool");
        }
        tools.extend_from_slice(more_tools);
        requirements_met(test, true, &tools)
    }

    /// Starts the server on [`SERVER_PRIMARY`] / [`SERVER_SECONDARY`] inside `ns` and waits until
    /// it listens on both.
    fn start(self, ns: &Netns, dir: &TestDir) -> Result<Proc> {
        match self {
            Self::Ours => servers::ServerImpl::Ours,
            Self::Miredo => servers::ServerImpl::Miredo,
            Self::OursXdp => servers::ServerImpl::OursXdp,
        }
        .start(ns, dir)
    }
}

impl ServerImpl {
    /// With the fast path, the hub's veth ends get an XDP program so that they take the
    /// frames the fast path sends back.
    fn prepare(self, internet: &Internet, dir: &TestDir) {
        if self == Self::OursXdp {
            check(servers::xdp_pass_on_hub(internet, dir));
        }
    }

    /// With the fast path, the RAs must have come from the XDP program.
    fn check_fast_path(self, srv: &Netns) {
        if self == Self::OursXdp {
            let (n, text) = check(servers::assert_answered_in_xdp(srv));
            eprintln!("XDP fast path answered {n} router solicitation(s)");
            super::promtool::assert_clean(
                "teredo-server --fast-path xdp",
                &text,
                &[
                    "teredo_server_fast_path_router_solicitations_total{address=\"primary\",cone=\"false\"}",
                    "teredo_server_fast_path_router_advertisements_total{address=\"primary\"}",
                    "teredo_server_fast_path_passed_total{reason=\"not_router_solicitation\"}",
                ],
            );
        }
    }
}

/// The fields of a Teredo address (RFC 4380 §4), decoded here independently of `teredo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TeredoAddr {
    server: Ipv4Addr,
    flags: u16,
    mapped: SocketAddrV4,
}

impl TeredoAddr {
    /// `2001:0:<server>:<flags>:<~port>:<~ipv4>`; `None` outside 2001:0::/32.
    fn decode(addr: Ipv6Addr) -> Option<Self> {
        let o = addr.octets();
        if o[..4] != [0x20, 0x01, 0, 0] {
            return None;
        }
        let server = Ipv4Addr::new(o[4], o[5], o[6], o[7]);
        let flags = u16::from_be_bytes([o[8], o[9]]);
        let port = !u16::from_be_bytes([o[10], o[11]]);
        let ip = Ipv4Addr::from(!u32::from_be_bytes([o[12], o[13], o[14], o[15]]));
        Some(Self {
            server,
            flags,
            mapped: SocketAddrV4::new(ip, port),
        })
    }
}

#[test]
fn teredo_address_decoder() {
    // RFC 6081 Figure 2 style example (TEREDO.md §2).
    let a = TeredoAddr::decode("2001:0:cb00:7178:0:efff:3fff:fdfe".parse().unwrap()).unwrap();
    assert_eq!(a.server, Ipv4Addr::new(203, 0, 113, 120));
    assert_eq!(a.flags, 0);
    assert_eq!(a.mapped, "192.0.2.1:4096".parse().unwrap());
    // What Miredo 1.2.6 got from miredo-server here.
    let a = TeredoAddr::decode("2001:0:c633:6401:14f0:32cc:39cc:9bf5".parse().unwrap()).unwrap();
    assert_eq!(a.server, SERVER_PRIMARY);
    assert_eq!(a.flags, 0x14f0);
    assert_eq!(a.mapped, SocketAddrV4::new(PUBLIC_CLIENT, 52_531));
    assert_eq!(TeredoAddr::decode("2001:db8::1".parse().unwrap()), None);
}

/// Checks what every Miredo-client Teredo address must satisfy, and returns it decoded.
fn assert_miredo_address(addr: Ipv6Addr) -> TeredoAddr {
    let t = TeredoAddr::decode(addr).unwrap_or_else(|| panic!("{addr} is not a Teredo address"));
    assert_eq!(t.server, SERVER_PRIMARY, "embedded server of {addr}");
    // RFC 5991 flags: only the 12 random bits (0x3cff) may be set; Miredo never sets C (0x8000).
    assert_eq!(t.flags & !0x3cff, 0, "flags of {addr}: {:#06x}", t.flags);
    t
}

/// Server and client on the Internet segment, no NAT: the mapping is the client's own socket.
fn qualifies_direct(test: &str, server: ServerImpl) {
    if !server.requirements_met(test, &[]) {
        return;
    }
    let dir = check(TestDir::new(test));
    let internet = check(Internet::new(test));
    let srv = check(topo::public_host(
        &internet,
        test,
        "srv",
        &[SERVER_PRIMARY, SERVER_SECONDARY],
    ));
    let cli = check(topo::public_host(&internet, test, "cli", &[PUBLIC_CLIENT]));
    server.prepare(&internet, &dir);
    let _server = check(server.start(&srv, &dir));
    let mut client = check(miredo::spawn_client(
        &cli,
        &dir,
        "miredo",
        SERVER_PRIMARY,
        IFNAME,
    ));
    let (addr, took) = check(miredo::wait_qualified(
        &cli,
        &mut client,
        IFNAME,
        QUALIFY_TIMEOUT,
    ));
    eprintln!("{test}: Miredo qualified as {addr} in {took:?}");
    server.check_fast_path(&srv);

    let t = assert_miredo_address(addr);
    let port = check(miredo::client_port(&cli));
    assert_eq!(
        t.mapped,
        SocketAddrV4::new(PUBLIC_CLIENT, port),
        "mapping in {addr}"
    );
}

#[test]
fn miredo_client_qualifies_direct() {
    qualifies_direct(function_name!(), ServerImpl::Ours);
}

#[test]
fn miredo_client_qualifies_direct_against_miredo_server() {
    qualifies_direct(function_name!(), ServerImpl::Miredo);
}

#[test]
fn miredo_client_qualifies_direct_with_xdp_fast_path() {
    qualifies_direct(function_name!(), ServerImpl::OursXdp);
}

/// The client behind a masquerading NAT (NAT.md R1): the address must carry the NAT's public
/// address and the external port conntrack gave the client's flow to the server.
fn qualifies_behind_masquerade(test: &str, server: ServerImpl) {
    if !server.requirements_met(test, &["nft", "conntrack", "sysctl"]) {
        return;
    }
    let dir = check(TestDir::new(test));
    let internet = check(Internet::new(test));
    let srv = check(topo::public_host(
        &internet,
        test,
        "srv",
        &[SERVER_PRIMARY, SERVER_SECONDARY],
    ));
    let site = check(NatSite::masquerade(&internet, test, NAT_WAN));
    server.prepare(&internet, &dir);
    let _server = check(server.start(&srv, &dir));
    let mut client = check(miredo::spawn_client(
        &site.host,
        &dir,
        "miredo",
        SERVER_PRIMARY,
        IFNAME,
    ));
    let (addr, took) = check(miredo::wait_qualified(
        &site.host,
        &mut client,
        IFNAME,
        QUALIFY_TIMEOUT,
    ));
    eprintln!("{test}: Miredo qualified as {addr} in {took:?}");
    server.check_fast_path(&srv);

    let t = assert_miredo_address(addr);
    assert_eq!(*t.mapped.ip(), NAT_WAN, "mapped IPv4 in {addr}");
    let port = check(miredo::client_port(&site.host));
    let from = SocketAddrV4::new(topo::LAN_HOST, port);
    let to = SocketAddrV4::new(SERVER_PRIMARY, TEREDO_PORT);
    let mapping = check(site.udp_mapping(from, to))
        .unwrap_or_else(|| panic!("conntrack on the NAT has no flow {from} -> {to}"));
    assert_eq!(t.mapped, mapping, "mapping in {addr} vs conntrack");
}

#[test]
fn miredo_client_qualifies_behind_masquerade() {
    qualifies_behind_masquerade(function_name!(), ServerImpl::Ours);
}

#[test]
fn miredo_client_qualifies_behind_masquerade_against_miredo_server() {
    qualifies_behind_masquerade(function_name!(), ServerImpl::Miredo);
}

#[test]
fn miredo_client_qualifies_behind_masquerade_with_xdp_fast_path() {
    qualifies_behind_masquerade(function_name!(), ServerImpl::OursXdp);
}

/// Captures the qualification on the server's interface and has tshark dissect it: the RS and
/// the RA must be Teredo + IPv6 + ICMPv6, with no malformed packet and no bad checksum, the
/// RA must echo the RS's nonce, carry the client's mapping as origin indication, leave from
/// the primary address (Miredo's RS is not cone) and go to the RS's link-local source.
fn rs_ra_dissect_cleanly(test: &str, server: ServerImpl) {
    if !server.requirements_met(test, &["tshark"]) {
        return;
    }
    let dir = check(TestDir::new(test));
    let internet = check(Internet::new(test));
    let srv = check(topo::public_host(
        &internet,
        test,
        "srv",
        &[SERVER_PRIMARY, SERVER_SECONDARY],
    ));
    let cli = check(topo::public_host(&internet, test, "cli", &[PUBLIC_CLIENT]));
    server.prepare(&internet, &dir);
    let _server = check(server.start(&srv, &dir));
    // Frames sent back by XDP never pass the server's own capture point: with the fast path,
    // capture on the Internet's bridge.
    let (capture_ns, capture_if) = if server == ServerImpl::OursXdp {
        (internet.hub(), "br0")
    } else {
        (&srv, "eth0")
    };
    let mut capture = check(Capture::start(
        capture_ns,
        dir.path(),
        "tshark",
        capture_if,
        TEREDO_FILTER,
    ));
    let mut client = check(miredo::spawn_client(
        &cli,
        &dir,
        "miredo",
        SERVER_PRIMARY,
        IFNAME,
    ));
    let (addr, _) = check(miredo::wait_qualified(
        &cli,
        &mut client,
        IFNAME,
        QUALIFY_TIMEOUT,
    ));
    let port = check(miredo::client_port(&cli));
    // The RA reached the client before its address appeared: both are on the wire, wait
    // until dumpcap has written them (it must not be stopped before, see `Capture::stop`).
    check(capture.wait_frames(
        2,
        "teredo && (icmpv6.type == 133 || icmpv6.type == 134)",
        Duration::from_secs(10),
    ));
    let pcap = check(capture.stop());
    let report = check(tshark_check(&pcap));
    for frame in &report.frames {
        eprintln!("{test}: {frame}");
    }
    check(report.ensure_clean());

    let rs = report
        .frames
        .iter()
        .find(|f| f.is_teredo_rs())
        .unwrap_or_else(|| panic!("no Teredo RS dissected: {:#?}", report.frames));
    let ra = report
        .frames
        .iter()
        .find(|f| f.is_teredo_ra())
        .unwrap_or_else(|| panic!("no Teredo RA dissected: {:#?}", report.frames));
    let client = SocketAddrV4::new(PUBLIC_CLIENT, port);
    assert_eq!((rs.ipv4_src, rs.udp_src), (Some(PUBLIC_CLIENT), Some(port)));
    assert_eq!(
        (rs.ipv4_dst, rs.udp_dst),
        (Some(SERVER_PRIMARY), Some(TEREDO_PORT))
    );
    assert!(
        rs.teredo_nonce.is_some(),
        "Miredo's RS carries a nonce: {rs:#?}"
    );
    assert_eq!(
        (ra.ipv4_src, ra.udp_src),
        (Some(SERVER_PRIMARY), Some(TEREDO_PORT))
    );
    assert_eq!((ra.ipv4_dst, ra.udp_dst), (Some(PUBLIC_CLIENT), Some(port)));
    assert_eq!(
        ra.teredo_nonce, rs.teredo_nonce,
        "RA must echo the RS nonce"
    );
    assert_eq!(ra.teredo_confirmation.as_deref(), Some("00"));
    assert_eq!(
        ra.teredo_origin,
        Some(client),
        "origin indication of the RA"
    );
    assert_eq!(
        ra.ipv6_dst.first(),
        rs.ipv6_src.first(),
        "RA goes to the RS source"
    );
    assert_eq!(TeredoAddr::decode(addr).map(|t| t.mapped), Some(client));
    server.check_fast_path(&srv);
}

#[test]
fn miredo_rs_ra_dissect_cleanly() {
    rs_ra_dissect_cleanly(function_name!(), ServerImpl::Ours);
}

#[test]
fn miredo_rs_ra_dissect_cleanly_against_miredo_server() {
    rs_ra_dissect_cleanly(function_name!(), ServerImpl::Miredo);
}

#[test]
fn miredo_rs_ra_dissect_cleanly_with_xdp_fast_path() {
    rs_ra_dissect_cleanly(function_name!(), ServerImpl::OursXdp);
}
