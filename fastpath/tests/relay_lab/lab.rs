//! The relay namespace the program runs in, the program, and the two cores in the same
//! state.

use std::ffi::CString;
use std::net::SocketAddrV4;
use std::time::Instant;

use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use teredo::relay::{Event, Handled, Relay, RelayConfig};
use teredo::{Local, Output};
use teredo_fastpath::{PeerEntry, RelayFastPathConfig, XdpRelay};
use testkit::Netns;

use super::frames::{
    bubble, ipv6, teredo, GW4, GW4_MAC, GW6, GW6_MAC, H, INET_MAC, NAT6, NAT_MAC, NAT_MTU, RELAY,
    SERVER, SMAP, TUN_MTU, VALIDITY, WMAP, XMAP, YMAP,
};
use super::kernel::ipv6_at;

/// A relay namespace: `inet0` (192.0.2.1/24, default route via 192.0.2.254) and `nat0`
/// (2001:db8:1::1/64, default route via 2001:db8:1::fe, MTU 1600), each one end of a veth
/// pair, permanent neighbour entries for both gateways, IPv6 forwarding on, IPv4 forwarding
/// on these two interfaces only.
pub(crate) fn topology() -> Netns {
    let ns = Netns::new("relay_differential", "relay").expect("namespace");
    let setup = || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        ns.disable_dad()?;
        ns.ip(&[
            "link",
            "add",
            "inet0",
            "address",
            &mac(INET_MAC),
            "type",
            "veth",
            "peer",
            "name",
            "inet0p",
        ])?;
        ns.ip(&[
            "link",
            "add",
            "nat0",
            "address",
            &mac(NAT_MAC),
            "mtu",
            &NAT_MTU.to_string(),
            "type",
            "veth",
            "peer",
            "name",
            "nat0p",
        ])?;
        for dev in ["inet0", "inet0p", "nat0", "nat0p"] {
            ns.link_up(dev)?;
        }
        ns.add_addr("inet0", &format!("{}/24", RELAY.ip()))?;
        ns.add_addr("nat0", &format!("{NAT6}/64"))?;
        ns.neigh_permanent("inet0", &GW4.to_string(), &mac(GW4_MAC))?;
        ns.neigh_permanent("nat0", &GW6.to_string(), &mac(GW6_MAC))?;
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &GW4.to_string(),
            "dev",
            "inet0",
        ])?;
        ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &GW6.to_string(),
            "dev",
            "nat0",
        ])?;
        // bpf_fib_lookup(AF_INET) wants IPv4 forwarding on the interface the native packet
        // came in on: only there (and on inet0 for the single-interface cases), as a relay
        // host needs it.
        ns.sysctl("net.ipv4.conf.nat0.forwarding", "1")?;
        ns.sysctl("net.ipv4.conf.inet0.forwarding", "1")?;
        ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        Ok(())
    };
    setup().unwrap_or_else(|e| panic!("relay namespace: {e:#}"));
    ns
}

pub(crate) fn mac(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

pub(crate) fn ifindex(name: &str) -> u32 {
    let c = CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name} in this namespace");
    i
}

pub(crate) fn fast_config() -> RelayFastPathConfig {
    RelayFastPathConfig {
        relay: RELAY,
        tun_mtu: TUN_MTU as u32,
        validity: VALIDITY,
        max_peers: 1024,
    }
}

/// The program loaded, or `None` (after a loud skip) where it cannot run outside CI.
pub(crate) fn load(cfg: &RelayFastPathConfig) -> Option<XdpRelay> {
    if !testkit::root_or_skip("relay fast path differential tests (BPF_PROG_TEST_RUN)") {
        return None;
    }
    match XdpRelay::load(cfg) {
        Ok(x) => Some(x),
        Err(e @ teredo_fastpath::Error::NotBuilt(_)) => {
            assert!(!testkit::in_ci(), "{e}; CI is set, and CI must never skip");
            eprintln!("\n*** SKIPPED: relay fast path differential tests: {e} ***");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

pub(crate) fn core_config() -> RelayConfig {
    RelayConfig {
        validity: VALIDITY,
        icmp_source: Some(NAT6),
        ..RelayConfig::default()
    }
}

/// Makes `mapping`'s peer trusted the way a client does: a native packet for it (queued,
/// indirect bubble to its server), then its direct bubble from its mapping.
pub(crate) fn trust(core: &mut Relay, at: Instant, mapping: SocketAddrV4) -> Vec<Event> {
    let peer = teredo(mapping);
    let r = core.handle_ipv6(at, &ipv6(H, peer, 64, 17, 8));
    assert_eq!(r, Ok(Handled::Queued { bubble_sent: true }));
    let mut buf = vec![0u8; 65_536];
    let o = core.poll_output(&mut buf).expect("indirect bubble");
    assert!(
        matches!(o, Output::Udp { to, .. } if to == SocketAddrV4::new(SERVER, 3544)),
        "{o:?}"
    );
    let bubble_src = ipv6_at(&buf, 8);
    let r = core.handle_udp(at, Local::Primary, mapping, &bubble(peer, bubble_src));
    assert!(matches!(r, Ok(Handled::Bubble { flushed: 1, .. })), "{r:?}");
    while core.poll_output(&mut buf).is_some() {}
    std::iter::from_fn(|| core.poll_event()).collect()
}

/// Two cores in the same state (same seed, same inputs): X and W trusted at `now`, S trusted
/// 40 s before (expired), Y in a bubble exchange; and the events that state produced with
/// their times.
pub(crate) fn cores(t0: Instant, now: Instant) -> (Relay, Relay, Vec<(Instant, Event)>) {
    let mk = || Relay::new(core_config(), ChaCha8Rng::seed_from_u64(6081), t0);
    let (mut alone, mut behind) = (mk(), mk());
    let mut events = Vec::new();
    for (at, m) in [(t0, SMAP), (now, XMAP), (now, WMAP)] {
        trust(&mut alone, at, m);
        events.extend(trust(&mut behind, at, m).into_iter().map(|e| (at, e)));
    }
    let y = ipv6(H, teredo(YMAP), 64, 17, 8);
    for core in [&mut alone, &mut behind] {
        assert_eq!(
            core.handle_ipv6(now, &y),
            Ok(Handled::Queued { bubble_sent: true })
        );
        let mut buf = vec![0u8; 2048];
        while core.poll_output(&mut buf).is_some() {}
        while core.poll_event().is_some() {}
    }
    (alone, behind, events)
}

/// The relay's map update for a core event: trusted peers in (stamped `stamp`), gone ones
/// out.
pub(crate) fn apply(xdp: &mut XdpRelay, e: &Event, stamp: u64) {
    match *e {
        Event::PeerTrusted { peer, mapping, .. } => xdp
            .upsert_peer(
                peer,
                PeerEntry {
                    mapping,
                    last_rx_ns: stamp,
                    last_used_ns: stamp,
                },
            )
            .unwrap(),
        Event::PeerUnreachable { peer, .. }
        | Event::PeerExpired { peer, .. }
        | Event::PeerEvicted { peer, .. } => xdp.remove_peer(&peer).unwrap(),
        _ => {}
    }
}
