//! Port allocation and address pooling.

use super::*;

#[test]
fn port_preservation_falls_back_to_sequential() {
    let now = Instant::now();
    let server = ep("198.51.100.10:3544");
    let mut nat = nat_with(|_| {});
    assert_eq!(
        fwd(nat.outbound(now, ep("10.0.0.2:5000"), server)).port(),
        5000
    );
    // Same port on a second host: not overloaded, the next port from the range's base.
    assert_eq!(
        fwd(nat.outbound(now, ep("10.0.0.3:5000"), server)).port(),
        1024
    );
    assert_eq!(
        fwd(nat.outbound(now, ep("10.0.0.4:5000"), server)).port(),
        1025
    );
    // A port outside the range (well-known) is not preserved either.
    assert_eq!(
        fwd(nat.outbound(now, ep("10.0.0.5:53"), server)).port(),
        1026
    );
    // Preserved again once free.
    assert_eq!(
        fwd(nat.outbound(now, ep("10.0.0.6:6000"), server)).port(),
        6000
    );
}

#[test]
fn sequential_allocation_steps_by_one_and_wraps() {
    let t0 = Instant::now();
    let server = ep("198.51.100.10:3544");
    let mut nat = nat_with(|c| {
        c.ports = PortAllocation::Sequential;
        c.port_range = 20000..=20002;
        c.timeout = secs(10);
    });
    let hosts: Vec<SocketAddrV4> = (2..6)
        .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 5000))
        .collect();
    for (i, host) in hosts[..3].iter().enumerate() {
        assert_eq!(
            fwd(nat.outbound(t0, *host, server)).port(),
            20000 + i as u16
        );
    }
    assert_eq!(nat.outbound(t0, hosts[3], server), Err(NatDrop::NoPort));
    assert_eq!(nat.counters().no_port, 1);
    // Keep hosts 1 and 2 alive; host 0's mapping lapses and its port is reused after the
    // wrap.
    fwd(nat.outbound(t0 + secs(5), hosts[1], server));
    fwd(nat.outbound(t0 + secs(5), hosts[2], server));
    assert_eq!(
        fwd(nat.outbound(t0 + secs(10), hosts[3], server)).port(),
        20000
    );
    assert_eq!(nat.counters().mappings_expired, 1);

    // APDM + sequential: one endpoint's sessions get consecutive ports (RFC 6081 §5.5).
    let mut nat = nat_with(|c| {
        c.mapping = M::AddressAndPortDependent;
        c.ports = PortAllocation::Sequential;
    });
    let x = ep("10.0.0.2:5000");
    let ports: Vec<u16> = (0..3)
        .map(|i| fwd(nat.outbound(t0, x, SocketAddrV4::new(ip("198.51.100.1"), 3000 + i))).port())
        .collect();
    assert_eq!(ports, [1024, 1025, 1026]);
}

fn random_ports(seed: u64) -> Vec<u16> {
    let now = Instant::now();
    let mut nat = nat_with(|c| {
        c.mapping = M::AddressAndPortDependent;
        c.ports = PortAllocation::Random;
        c.port_range = 40000..=40999;
        c.seed = seed;
    });
    let x = ep("10.0.0.2:5000");
    (0..50)
        .map(|i| fwd(nat.outbound(now, x, SocketAddrV4::new(ip("198.51.100.1"), 1000 + i))).port())
        .collect()
}

#[test]
fn random_allocation_is_reproducible_from_the_seed() {
    let a = random_ports(1);
    assert_eq!(a, random_ports(1));
    assert_ne!(a, random_ports(2));
    assert!(a.iter().all(|p| (40000..=40999).contains(p)));
    let mut distinct = a.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), a.len(), "no port overloading");
    // Not simply sequential from somewhere.
    assert!(a.windows(2).any(|w| w[1] != w[0] + 1));
}

#[test]
fn paired_pooling_keeps_an_internal_ip_on_one_address() {
    let now = Instant::now();
    let pool = vec![ip("203.0.113.1"), ip("203.0.113.2"), ip("203.0.113.3")];
    let mut nat = Nat::try_new(NatConfig {
        mapping: M::AddressAndPortDependent,
        ..NatConfig::new(pool.clone(), 5)
    })
    .unwrap();
    let mut seen = Vec::new();
    for host in 1..=16u8 {
        let mut ips = Vec::new();
        for port in 0..4u16 {
            for r in 0..4u16 {
                let internal = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, host), 5000 + port);
                let remote = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1 + r as u8), 3544);
                ips.push(*fwd(nat.outbound(now, internal, remote)).ip());
            }
        }
        ips.dedup();
        assert_eq!(ips.len(), 1, "host {host}");
        seen.push(ips[0]);
    }
    seen.sort_unstable();
    seen.dedup();
    assert!(seen.len() >= 2, "hosts spread over the pool: {seen:?}");
}

#[test]
fn arbitrary_pooling_moves_new_sessions_to_other_addresses() {
    let now = Instant::now();
    let pool = vec![ip("203.0.113.1"), ip("203.0.113.2"), ip("203.0.113.3")];
    let mut nat = Nat::try_new(NatConfig {
        mapping: M::AddressDependent,
        pooling: Pooling::Arbitrary,
        ..NatConfig::new(pool, 5)
    })
    .unwrap();
    let x = ep("10.0.0.2:5000");
    let mut ips: Vec<Ipv4Addr> = (1..=3)
        .map(|r| {
            *fwd(nat.outbound(
                now,
                x,
                SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, r), 3544),
            ))
            .ip()
        })
        .collect();
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(ips.len(), 3);
}

/// Every preset's port choices through `outbound_checked` with a host that accepts
/// everything are `outbound`'s, draw for draw.
#[test]
fn checked_outbound_with_an_accepting_host_is_outbound() {
    let t0 = Instant::now();
    for preset in NatPreset::ALL {
        let Ok(Some(cfg)) = preset.config(two_ips(), 7) else {
            continue;
        };
        let mut plain = Nat::new(cfg.clone());
        let mut checked = Nat::new(cfg);
        for i in 0..200u16 {
            let host = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5000 + i % 7);
            let remote = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1 + (i % 3) as u8), 3544);
            let now = t0 + secs(u64::from(i));
            let a = plain.outbound(now, host, remote);
            let b = checked.outbound_checked(now, host, remote, &mut |_| PortCheck::Usable);
            assert_eq!(a, b, "{preset} datagram {i}");
        }
        assert_eq!(plain.counters(), checked.counters(), "{preset}");
    }
}

/// A port the host cannot bind is skipped like a port in use: preservation falls back to
/// the sequential scan, random allocation draws again; the host is asked only about ports
/// the model would take, and never again about an existing mapping.
#[test]
fn host_vetoed_ports_are_skipped() {
    let now = Instant::now();
    let server = ep("198.51.100.10:3544");
    let mut nat = nat_with(|_| {});
    let mut asked = Vec::new();
    let mut host = |e: SocketAddrV4| {
        asked.push(e.port());
        if e.port() == 5000 || e.port() == 1024 {
            PortCheck::Taken
        } else {
            PortCheck::Usable
        }
    };
    let m = fwd(nat.outbound_checked(now, ep("10.0.0.2:5000"), server, &mut host));
    assert_eq!(m.port(), 1025);
    fwd(nat.outbound_checked(now, ep("10.0.0.2:5000"), server, &mut host));
    assert_eq!(asked, [5000, 1024, 1025]);

    let mut sym = preset_nat(NatPreset::Symmetric);
    let mut reference = preset_nat(NatPreset::Symmetric);
    let model_choice = fwd(reference.outbound(now, ep("10.0.0.2:5000"), server));
    let got = fwd(
        sym.outbound_checked(now, ep("10.0.0.2:5000"), server, &mut |e| {
            if e == model_choice {
                PortCheck::Taken
            } else {
                PortCheck::Usable
            }
        }),
    );
    assert_ne!(got, model_choice);
    assert!(sym.receives_on(got, now));
    check_invariants(&sym);
}

/// `Stop` ends the search: no mapping, a counted `no_port` drop.
#[test]
fn host_stop_refuses_the_mapping() {
    let now = Instant::now();
    let server = ep("198.51.100.10:3544");
    let mut nat = preset_nat(NatPreset::Symmetric);
    let mut calls = 0;
    let r = nat.outbound_checked(now, ep("10.0.0.2:5000"), server, &mut |_| {
        calls += 1;
        PortCheck::Stop
    });
    assert_eq!(r, Err(NatDrop::NoPort));
    assert_eq!(calls, 1);
    assert_eq!(nat.mappings(), 0);
    assert_eq!(nat.counters().no_port, 1);
}

/// A removed mapping stops receiving at once and its flow gets a new one; `receives_on`
/// follows expiry too.
#[test]
fn removed_and_expired_mappings_stop_receiving() {
    let t0 = Instant::now();
    let server = ep("198.51.100.10:3544");
    let internal = ep("10.0.0.2:5000");
    let mut nat = preset_nat(NatPreset::Symmetric);
    let m = fwd(nat.outbound(t0, internal, server));
    assert!(nat.receives_on(m, t0));
    assert!(nat.remove_mapping(m));
    assert!(!nat.remove_mapping(m));
    assert!(!nat.receives_on(m, t0));
    assert_eq!(nat.inbound(t0, m, server), Err(NatDrop::NoMapping));
    assert_eq!(nat.counters().mappings_removed, 1);
    let m2 = fwd(nat.outbound(t0, internal, server));
    assert!(nat.receives_on(m2, t0));
    let timeout = nat.config().timeout;
    assert!(!nat.receives_on(m2, t0 + timeout));
    check_invariants(&nat);
}
