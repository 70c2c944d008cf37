//! `client-sim qualify --nat none` behind **real** Linux NATs (nftables recipes of NAT.md §9 on a
//! router namespace) and without NAT, against our `teredo-server` and against Debian's
//! `miredo-server`: every client profile must detect the NAT type the kernel really implements,
//! learn the mapping conntrack really gave it, and build its Teredo address from that.
//!
//! Topology, one per (test, server) — each test runs both servers side by side, every profile
//! as a concurrent `client-sim` process (own socket, own conntrack flows) in the same LAN host:
//! ```text
//! [srv 198.51.100.1+.2] --br0-- [nat wan0 198.51.100.20 | lan0 10.0.0.1] -- [cli 10.0.0.2]
//! [srv 198.51.100.1+.2] --br0-- [cli 198.51.100.10]                       (no NAT)
//! ```
//!
//! Observed matrix (identical with both servers; q = qualified, exit 0; off = offline, exit 3,
//! "client behind symmetric NAT"; XP's cone probe takes 3 × 4 s when it fails, hence ≈ 12 s):
//!
//! | NAT (recipe)                        | vista              | xp-sp2               | rfc5991              | miredo       |
//! |-------------------------------------|--------------------|----------------------|----------------------|--------------|
//! | none (public host)                  | q none             | q none, C=1          | q none               | q none       |
//! | full cone (R4)                      | q restricted       | q cone, C=1          | q restricted         | q restricted |
//! | address-restricted (R5)             | q restricted       | q restricted         | q restricted         | q restricted |
//! | port-restricted (R1 + WAN firewall) | q restricted       | q restricted         | q restricted         | q restricted |
//! | bare masquerade (R1 alone)          | q restricted       | off symmetric (port) | q restricted         | q restricted |
//! | symmetric (R3)                      | q symmetric (port) | off symmetric (port) | off symmetric (port) | q restricted |
//!
//! * The Miredo profile never probes the secondary address (like Miredo 1.2.6, TEREDO.md §5.3),
//!   so it reports `restricted` behind the symmetric NAT; rfc5991 and vista have no cone probe
//!   (RFC 5991 §3.2, implemented in Vista per its Appendix A), so they report `restricted`
//!   behind the full cone.
//! * `miredo-server` answers the cone RS (both link-locals: Windows' and XP's) from the other
//!   address and a restricted RS to the secondary from the secondary (TEREDO.md §14 T2, T3,
//!   T3b, T5), exactly like ours: no cell differs between the two servers.
//! * **Bare masquerade is not a port-restricted cone for a client that runs the cone probe**
//!   (XP), through no fault of the client or the servers: the refused RA of the cone probe (from the secondary) leaves an
//!   `[UNREPLIED]` conntrack entry on the router that reserves the external port toward the
//!   secondary, so the symmetric check gets another port (M1 ≠ M2). The tests assert that
//!   entry; details in `teredo_tests::nat_recipes`. A stateful WAN input firewall (what real
//!   routers have) removes the effect: that is the port-restricted row. client-sim's NAT
//!   model has both: `--nat port-restricted` (R1 + firewall) and `--nat masquerade` (R1
//!   alone, `unsolicited-reserve=30s`); `nat_fidelity` compares them with these routers.
//!
//! Not covered: a kernel mapping-expiry test (NAT.md R8). `client-sim qualify` exits as soon
//! as it is qualified and has no refresh-interval flag, so seeing the mapping change would
//! need a ≥ 30 s client run; the NAT model's short-timeout scenario is covered by `client-sim
//! lab` instead.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use anyhow::{Context as _, Result};
use teredo_tests::client_sim::{self, QualifyRun, TeredoFields};
use teredo_tests::miredo::TEREDO_PORT;
use teredo_tests::nft::NatKind;
use teredo_tests::servers::ServerImpl;
use teredo_tests::topo::{
    self, conntrack_udp_mapping, NatSite, LAN_GATEWAY, LAN_HOST, LAN_PREFIX_LEN, NAT_WAN,
    PUBLIC_CLIENT, SERVER_PRIMARY, SERVER_SECONDARY,
};
use teredo_tests::{check, function_name, require_root, Internet, Netns, Proc, TestDir};

/// The client profiles run in every topology (`client-sim qualify --profile`).
const PROFILES: [&str; 4] = ["vista", "xp-sp2", "rfc5991", "miredo"];

/// Where the client sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Site {
    /// On the Internet segment (198.51.100.10), no NAT.
    Public,
    /// Behind a NAT router of this kind.
    Nat(NatKind),
}

impl Site {
    fn name(self) -> String {
        match self {
            Self::Public => "none".to_owned(),
            Self::Nat(kind) => format!("{kind} ({})", kind.recipe()),
        }
    }
}

/// What a profile must report in a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Expected {
    /// Exit status: 0 qualified, 3 offline behind a symmetric NAT.
    exit: i32,
    /// `NAT` field.
    nat: &'static str,
    /// The address carries C=1 (XP after a successful cone probe).
    cone_flag: bool,
    /// The client sent RSs to the secondary address (the symmetric check ran).
    probed_secondary: bool,
}

/// The matrix of the module documentation.
fn expected(site: Site, profile: &str) -> Expected {
    let cone_probe = profile == "xp-sp2";
    let secondary_check = profile != "miredo";
    let (exit, nat) = match site {
        Site::Public => (0, "none"),
        Site::Nat(NatKind::FullCone) if cone_probe => (0, "cone"),
        Site::Nat(NatKind::FullCone | NatKind::AddressRestricted | NatKind::PortRestricted) => {
            (0, "restricted")
        }
        // The cone probe's refused RA reserves the port toward the secondary (module docs).
        Site::Nat(NatKind::BareMasquerade) if cone_probe => (3, "symmetric (port)"),
        Site::Nat(NatKind::BareMasquerade) => (0, "restricted"),
        Site::Nat(NatKind::Symmetric) => match profile {
            // RFC 6081 symmetric NAT support: qualifies anyway.
            "vista" => (0, "symmetric (port)"),
            // Never asks the secondary: never notices.
            "miredo" => (0, "restricted"),
            _ => (3, "symmetric (port)"),
        },
    };
    // A cone probe that gets through ends qualification at once (no secondary check): behind
    // a full cone and on a public address.
    let cone_ok = cone_probe && matches!(site, Site::Public | Site::Nat(NatKind::FullCone));
    Expected {
        exit,
        nat,
        cone_flag: cone_ok && profile == "xp-sp2",
        probed_secondary: secondary_check && !cone_ok,
    }
}

/// One topology: an Internet with a Teredo server and either a NAT site or a public client.
/// Fields drop in order: the server stops first, the Internet goes last.
struct Topology {
    server_impl: ServerImpl,
    _server: Proc,
    /// Where client-sim runs.
    client: Netns,
    /// The NAT router, if any.
    router: Option<Netns>,
    _srv: Netns,
    _internet: Internet,
}

impl Topology {
    fn new(test: &str, dir: &TestDir, site: Site, server_impl: ServerImpl) -> Result<Self> {
        let tag = format!("{test}-{}", server_impl.as_str());
        let internet = Internet::new(&tag)?;
        let srv = topo::public_host(&internet, &tag, "srv", &[SERVER_PRIMARY, SERVER_SECONDARY])?;
        let (router, client) = match site {
            Site::Public => (
                None,
                topo::public_host(&internet, &tag, "cli", &[PUBLIC_CLIENT])?,
            ),
            Site::Nat(kind) => {
                let lan = format!("{LAN_GATEWAY}/{LAN_PREFIX_LEN}");
                let ruleset = kind.ruleset("wan0", "lan0", &lan);
                let site = NatSite::new(&internet, &tag, NAT_WAN, &ruleset)?;
                (Some(site.router), site.host)
            }
        };
        if server_impl == ServerImpl::OursXdp {
            teredo_tests::servers::xdp_pass_on_hub(&internet, dir)?;
        }
        let server = server_impl.start(&srv, dir)?;
        Ok(Self {
            server_impl,
            _server: server,
            client,
            router,
            _srv: srv,
            _internet: internet,
        })
    }
}

/// One profile's run in one topology, with what conntrack on the router said right after.
struct Cell {
    server_impl: ServerImpl,
    profile: &'static str,
    run: QualifyRun,
    wall: f64,
    /// conntrack's mapping of the flow client → primary:3544 (NAT sites only).
    m1: Option<SocketAddrV4>,
    /// … of the flow client → secondary:3544.
    m2: Option<SocketAddrV4>,
    /// conntrack's entry for the cone probe's RA (secondary:3544 → NAT_WAN:<M1 port>).
    cone_ra: ConeRaEntry,
}

/// What the router's conntrack holds for a datagram secondary:3544 → NAT_WAN:<M1 port> (the
/// RA answering a cone RS), read from the reply tuple's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConeRaEntry {
    /// No entry: no such datagram, or dropped before conntrack confirmed it (R5's FORWARD
    /// filter, the WAN input firewall).
    Absent,
    /// DNATed to the LAN host (R4: the RA got through).
    ToClient,
    /// Delivered to the router itself, where no socket wants it: `[UNREPLIED]`, and the
    /// external port is reserved toward the secondary (bare masquerade, R3).
    Refused,
    /// Anything else (the line is kept for the failure message).
    Other,
}

/// Classifies the conntrack entry whose original tuple is `from` → `to`.
fn cone_ra_entry(router: &Netns, from: SocketAddrV4, to: SocketAddrV4) -> Result<ConeRaEntry> {
    let Some(line) = teredo_tests::nft::conntrack_udp_entry(router, from, to)? else {
        return Ok(ConeRaEntry::Absent);
    };
    // udp 17 25 src=198.51.100.2 dst=198.51.100.20 sport=3544 dport=56625 [UNREPLIED] \
    //     src=198.51.100.20 dst=198.51.100.2 sport=56625 dport=3544 mark=0 use=1
    let reply_src: Option<Ipv4Addr> = line
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("src="))
        .nth(1)
        .and_then(|a| a.parse().ok());
    Ok(match reply_src {
        Some(ip) if ip == LAN_HOST => ConeRaEntry::ToClient,
        Some(ip) if ip == NAT_WAN && line.contains("[UNREPLIED]") => ConeRaEntry::Refused,
        _ => {
            eprintln!("unexpected conntrack entry: {line}");
            ConeRaEntry::Other
        }
    })
}

fn run_cell(topo: &Topology, dir: &TestDir, profile: &'static str) -> Result<Cell> {
    let label = format!("client-sim-{}-{profile}", topo.server_impl.as_str());
    let started = Instant::now();
    let run = client_sim::qualify(&topo.client, dir, &label, SERVER_PRIMARY, profile, &[])?;
    let wall = started.elapsed().as_secs_f64();
    let local = run.report.local_mapping;
    let (mut m1, mut m2, mut cone_ra) = (None, None, ConeRaEntry::Absent);
    if let Some(router) = &topo.router {
        let to = |ip| SocketAddrV4::new(ip, TEREDO_PORT);
        m1 = conntrack_udp_mapping(router, local, to(SERVER_PRIMARY))?;
        m2 = conntrack_udp_mapping(router, local, to(SERVER_SECONDARY))?;
        if let Some(m1) = m1 {
            cone_ra = cone_ra_entry(router, to(SERVER_SECONDARY), m1)?;
        }
    }
    Ok(Cell {
        server_impl: topo.server_impl,
        profile,
        run,
        wall,
        m1,
        m2,
        cone_ra,
    })
}

/// Everything wrong with `cell` (empty = as expected).
fn mismatches(site: Site, cell: &Cell) -> Vec<String> {
    let exp = expected(site, cell.profile);
    let r = &cell.run.report;
    let mut bad = Vec::new();
    let mut want = |ok: bool, what: String| {
        if !ok {
            bad.push(what);
        }
    };
    want(
        cell.run.exit_code == Some(exp.exit) && r.exit_code == exp.exit,
        format!(
            "exit status {:?} (report {}), expected {}",
            cell.run.exit_code, r.exit_code, exp.exit
        ),
    );
    want(
        r.profile == cell.profile,
        format!("profile {:?}", r.profile),
    );
    want(
        r.nat == exp.nat,
        format!("NAT {:?}, expected {:?}", r.nat, exp.nat),
    );
    let qualified = exp.exit == 0;
    let (state, outcome, error) = if qualified {
        ("qualified", "qualified", None)
    } else {
        (
            "offline",
            "symmetric_nat",
            Some("client behind symmetric NAT"),
        )
    };
    want(
        r.state == state,
        format!("state {:?}, expected {state:?}", r.state),
    );
    want(
        r.outcome == outcome,
        format!("outcome {:?}, expected {outcome:?}", r.outcome),
    );
    want(
        r.error.as_deref() == error,
        format!("error {:?}, expected {error:?}", r.error),
    );

    // The client's own socket, and the mapping the real NAT gave its flow to the primary.
    let local = r.local_mapping;
    let local_ip = match site {
        Site::Public => PUBLIC_CLIENT,
        Site::Nat(_) => LAN_HOST,
    };
    want(*local.ip() == local_ip, format!("local mapping {local}"));
    let mapping = match site {
        Site::Public => Some(local),
        Site::Nat(_) => cell.m1,
    };
    let Some(mapping) = mapping else {
        want(
            false,
            format!("conntrack has no flow {local} -> {SERVER_PRIMARY}:{TEREDO_PORT}"),
        );
        return bad;
    };
    want(
        *mapping.ip()
            == if site == Site::Public {
                PUBLIC_CLIENT
            } else {
                NAT_WAN
            },
        format!("conntrack mapping {mapping}"),
    );
    want(
        r.external_nat_mapping == Some(mapping),
        format!(
            "external NAT mapping {:?}, the NAT's (conntrack) {mapping}",
            r.external_nat_mapping
        ),
    );
    // Every kind but R3 is masquerade keeping the port of a fresh flow (EIM, port preserving).
    if site != Site::Nat(NatKind::Symmetric) {
        want(
            mapping.port() == local.port(),
            format!("mapping {mapping} does not preserve the port of {local}"),
        );
    }
    want(
        r.nat_special_behaviour.port_preserving == Some(mapping.port() == local.port()),
        format!(
            "port preserving {:?}",
            r.nat_special_behaviour.port_preserving
        ),
    );

    // The symmetric check, seen from the router.
    if let Site::Nat(kind) = site {
        match (exp.probed_secondary, cell.m2) {
            (false, None) => {}
            (false, Some(m2)) => want(false, format!("unexpected flow to the secondary ({m2})")),
            (true, None) => want(false, "no flow to the secondary in conntrack".to_owned()),
            (true, Some(m2)) => {
                let symmetric = exp.nat.starts_with("symmetric");
                want(
                    (m2 != mapping) == symmetric && *m2.ip() == NAT_WAN,
                    format!(
                        "secondary mapping {m2} vs primary {mapping} for NAT {}",
                        exp.nat
                    ),
                );
            }
        }
        // The cone probe's RAs (from the secondary) at the router.
        let cone_probe = cell.profile == "xp-sp2";
        let cone_ra = match kind {
            _ if !cone_probe => ConeRaEntry::Absent,
            NatKind::FullCone => ConeRaEntry::ToClient,
            NatKind::BareMasquerade | NatKind::Symmetric => ConeRaEntry::Refused,
            NatKind::AddressRestricted | NatKind::PortRestricted => ConeRaEntry::Absent,
        };
        want(
            cell.cone_ra == cone_ra,
            format!(
                "conntrack entry {SERVER_SECONDARY}:{TEREDO_PORT} -> {mapping}: {:?}, \
                 expected {cone_ra:?}",
                cell.cone_ra
            ),
        );
    }

    // The Teredo address: primary server, flags, the NAT's mapping.
    match (qualified, r.teredo_address) {
        (false, None) => {}
        (false, Some(a)) => want(false, format!("offline but has address {a}")),
        (true, None) => want(false, "qualified without a Teredo address".to_owned()),
        (true, Some(a)) => match TeredoFields::decode(a) {
            None => want(false, format!("{a} is not a Teredo address")),
            Some(t) => {
                want(t.server == SERVER_PRIMARY, format!("server field of {a}"));
                want(
                    t.mapped == mapping,
                    format!("mapping in {a}, expected {mapping}"),
                );
                let flags_ok = if cell.profile == "xp-sp2" {
                    // No random bits (pre-RFC 5991); C=1 only after a successful cone probe.
                    t.flags == if exp.cone_flag { 0x8000 } else { 0 }
                } else {
                    // RFC 5991 random bits only, C=0.
                    t.flags & !0x3cff == 0
                };
                want(flags_ok, format!("flags {:#06x} of {a}", t.flags));
            }
        },
    }
    bad
}

/// Builds one topology per server, runs every profile in each concurrently, prints the
/// observed matrix rows and fails with every mismatch.
fn qualify_matrix(test: &str, site: Site) {
    qualify_matrix_against(test, site, &ServerImpl::ALL);
}

/// [`qualify_matrix`] against `servers`; with [`ServerImpl::OursXdp`], also checks that the
/// XDP program answered every router solicitation.
fn qualify_matrix_against(test: &str, site: Site, servers: &[ServerImpl]) {
    let dir = check(TestDir::new(test));
    let started = Instant::now();
    let topologies: Vec<Topology> = servers
        .iter()
        .map(|s| check(Topology::new(test, &dir, site, *s)))
        .collect();
    let results: Vec<Result<Cell>> = std::thread::scope(|scope| {
        let handles: Vec<_> = topologies
            .iter()
            .flat_map(|t| PROFILES.iter().map(move |p| (t, *p)))
            .map(|(t, p)| {
                let dir = &dir;
                scope.spawn(move || {
                    run_cell(t, dir, p).with_context(|| format!("{} / {p}", t.server_impl))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client-sim thread panicked"))
            .collect()
    });
    let mut failures = Vec::new();
    for cell in results {
        let cell = check(cell);
        let r = &cell.run.report;
        eprintln!(
            "{test}: NAT {} | {} | {:<7} -> exit {:?}, {}, NAT {}, external {}, address {}, \
             error {} ({:.1} s; conntrack M1 {:?}, M2 {:?})",
            site.name(),
            cell.server_impl,
            cell.profile,
            cell.run.exit_code,
            r.state,
            r.nat,
            r.external_nat_mapping
                .map_or_else(|| "none".to_owned(), |m| m.to_string()),
            r.teredo_address
                .map_or_else(|| "none".to_owned(), |a| a.to_string()),
            r.error.as_deref().unwrap_or("none"),
            cell.wall,
            cell.m1,
            cell.m2,
        );
        for m in mismatches(site, &cell) {
            failures.push(format!("{} / {}: {m}", cell.server_impl, cell.profile));
        }
    }
    eprintln!("{test}: {:.1} s", started.elapsed().as_secs_f64());
    for t in topologies
        .iter()
        .filter(|t| t.server_impl == ServerImpl::OursXdp)
    {
        let (n, _) = check(teredo_tests::servers::assert_answered_in_xdp(&t._srv));
        eprintln!("{test}: the XDP fast path answered {n} router solicitations");
    }
    assert!(
        failures.is_empty(),
        "NAT {}: {} mismatch(es):\n{}",
        site.name(),
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn expected_matrix_is_consistent() {
    // Spot checks of the table in the module documentation.
    let e = |site, p| expected(site, p);
    assert!(e(Site::Public, "xp-sp2").cone_flag);
    assert!(!e(Site::Public, "xp-sp2").probed_secondary);
    assert!(e(Site::Public, "rfc5991").probed_secondary);
    let fc = Site::Nat(NatKind::FullCone);
    assert_eq!(
        (
            e(fc, "vista").nat,
            e(fc, "xp-sp2").nat,
            e(fc, "vista").cone_flag
        ),
        ("restricted", "cone", false)
    );
    assert_eq!(e(fc, "miredo").nat, "restricted");
    let sym = Site::Nat(NatKind::Symmetric);
    assert_eq!((e(sym, "vista").exit, e(sym, "xp-sp2").exit), (0, 3));
    assert_eq!(
        (e(sym, "rfc5991").exit, e(sym, "miredo").nat),
        (3, "restricted")
    );
    assert!(!e(sym, "miredo").probed_secondary);
    let bare = Site::Nat(NatKind::BareMasquerade);
    assert_eq!(
        (e(bare, "vista").nat, e(bare, "xp-sp2").exit),
        ("restricted", 3)
    );
    assert_eq!(e(bare, "rfc5991").nat, "restricted");
    let pr = Site::Nat(NatKind::PortRestricted);
    assert!(PROFILES
        .iter()
        .all(|p| e(pr, p).nat == "restricted" && e(pr, p).exit == 0));
}

#[test]
fn client_sim_qualifies_without_nat() {
    require_root!("miredo-server");
    qualify_matrix(function_name!(), Site::Public);
}

/// Every profile without NAT and behind a full-cone NAT (cone RSs answered from the other
/// address) against `teredo-server --fast-path xdp`.
#[test]
fn client_sim_qualifies_with_xdp_fast_path() {
    require_root!();
    let test = function_name!();
    qualify_matrix_against(test, Site::Public, &[ServerImpl::OursXdp]);
    qualify_matrix_against(
        &format!("{test}_cone"),
        Site::Nat(NatKind::FullCone),
        &[ServerImpl::OursXdp],
    );
}

#[test]
fn client_sim_behind_full_cone_nat() {
    require_root!("nft", "conntrack", "sysctl", "miredo-server");
    qualify_matrix(function_name!(), Site::Nat(NatKind::FullCone));
}

#[test]
fn client_sim_behind_address_restricted_nat() {
    require_root!("nft", "conntrack", "sysctl", "miredo-server");
    qualify_matrix(function_name!(), Site::Nat(NatKind::AddressRestricted));
}

#[test]
fn client_sim_behind_port_restricted_nat() {
    require_root!("nft", "conntrack", "sysctl", "miredo-server");
    qualify_matrix(function_name!(), Site::Nat(NatKind::PortRestricted));
}

#[test]
fn client_sim_behind_bare_masquerade() {
    require_root!("nft", "conntrack", "sysctl", "miredo-server");
    qualify_matrix(function_name!(), Site::Nat(NatKind::BareMasquerade));
}

#[test]
fn client_sim_behind_symmetric_nat() {
    require_root!("nft", "conntrack", "sysctl", "miredo-server");
    qualify_matrix(function_name!(), Site::Nat(NatKind::Symmetric));
}
