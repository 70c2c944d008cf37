//! The RFC 4787 behaviours as RFC 5780 probes see them, and the presets.

use super::*;

#[test]
fn every_combination_probes_as_configured() {
    let now = Instant::now();
    for &mapping in M::ALL {
        for &filtering in F::ALL {
            for &ports in PortAllocation::ALL {
                for &pooling in Pooling::ALL {
                    let mut nat = Nat::try_new(NatConfig {
                        mapping,
                        filtering,
                        ports,
                        pooling,
                        ..NatConfig::new(two_ips(), 3)
                    })
                    .unwrap();
                    let what = format!("{mapping}/{filtering}/{ports}/{pooling}");
                    assert_eq!(probe_mapping(&mut nat, now), mapping, "{what}");
                    assert_eq!(probe_filtering(&mut nat, now), filtering, "{what}");
                }
            }
        }
    }
}

#[test]
fn presets_match_the_rfc4787_table() {
    let now = Instant::now();
    let table = [
        (
            NatPreset::FullCone,
            M::EndpointIndependent,
            F::EndpointIndependent,
        ),
        (
            NatPreset::Restricted,
            M::EndpointIndependent,
            F::AddressDependent,
        ),
        (
            NatPreset::PortRestricted,
            M::EndpointIndependent,
            F::AddressAndPortDependent,
        ),
        (
            NatPreset::Masquerade,
            M::EndpointIndependent,
            F::AddressAndPortDependent,
        ),
        (
            NatPreset::Symmetric,
            M::AddressAndPortDependent,
            F::AddressAndPortDependent,
        ),
        (
            NatPreset::SymmetricAddress,
            M::AddressDependent,
            F::AddressAndPortDependent,
        ),
    ];
    for (preset, mapping, filtering) in table {
        let config = preset.config(two_ips(), 1).unwrap().unwrap();
        assert_eq!(
            (config.mapping, config.filtering),
            (mapping, filtering),
            "{preset}"
        );
        let expected_ports = if preset == NatPreset::Symmetric {
            PortAllocation::Random
        } else {
            PortAllocation::Preserving
        };
        assert_eq!(config.ports, expected_ports, "{preset}");
        assert_eq!(config.timeout, secs(120), "{preset}");
        assert!(config.hairpinning && !config.inbound_refresh, "{preset}");
        let reserve = (preset == NatPreset::Masquerade).then_some(CONNTRACK_UDP_UNREPLIED);
        assert_eq!(config.unsolicited_reserve, reserve, "{preset}");
        let mut nat = preset_nat(preset);
        assert_eq!(probe_mapping(&mut nat, now), mapping, "{preset}");
        assert_eq!(probe_filtering(&mut nat, now), filtering, "{preset}");
    }
    assert_eq!(NatPreset::None.config(two_ips(), 1), Ok(None));
}

/// What the preset docs promise a Teredo client: the cone probe (RS to the primary, RA
/// from the secondary) passes only behind full cone; the secondary-address check sees a
/// different mapping behind the symmetric presets, and behind a bare masquerade after the
/// refused cone probe (without it, masquerade is port-restricted).
#[test]
fn presets_as_a_teredo_client_sees_them() {
    let now = Instant::now();
    let client = ep("192.168.1.10:40000");
    let primary = ep("198.51.100.10:3544");
    let secondary = ep("198.51.100.11:3544");
    for (&preset, cone_probe) in NatPreset::ALL[1..]
        .iter()
        .flat_map(|p| [(p, true), (p, false)])
    {
        let mut nat = preset_nat(preset);
        let m1 = fwd(nat.outbound(now, client, primary));
        if cone_probe {
            let cone = nat.inbound(now, m1, secondary).is_ok();
            assert_eq!(cone, preset == NatPreset::FullCone, "{preset} cone probe");
        }
        let m2 = fwd(nat.outbound(now, client, secondary));
        let symmetric = matches!(preset, NatPreset::Symmetric | NatPreset::SymmetricAddress)
            || (preset == NatPreset::Masquerade && cone_probe);
        assert_eq!(
            m1 != m2,
            symmetric,
            "{preset} secondary check, cone probe {cone_probe}"
        );
        if preset == NatPreset::SymmetricAddress {
            assert_ne!(m1.ip(), m2.ip(), "symmetric-address changes the address");
            assert_eq!(m1.port(), client.port(), "and preserves the port");
        }
    }
}

#[test]
fn preset_names_round_trip() {
    let names: Vec<&str> = NatPreset::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "none",
            "full-cone",
            "restricted",
            "port-restricted",
            "masquerade",
            "symmetric",
            "symmetric-address"
        ]
    );
    for &preset in NatPreset::ALL {
        assert_eq!(preset.as_str().parse::<NatPreset>(), Ok(preset));
        assert_eq!(preset.to_string(), preset.as_str());
    }
    let err = "cone".parse::<NatPreset>().unwrap_err();
    assert!(matches!(&err, NatConfigError::BadValue { key, .. } if key == "preset"));
}

#[test]
fn symmetric_address_needs_two_addresses() {
    let one = vec![ip("203.0.113.1")];
    assert_eq!(
        NatPreset::SymmetricAddress.config(one.clone(), 0),
        Err(NatConfigError::TooFewExternalIps {
            preset: NatPreset::SymmetricAddress,
            needed: 2,
            got: 1
        })
    );
    for &preset in &NatPreset::ALL[1..] {
        assert_eq!(
            preset.config(Vec::new(), 0),
            Err(NatConfigError::NoExternalIps)
        );
        if preset != NatPreset::SymmetricAddress {
            assert!(preset.config(one.clone(), 0).unwrap().is_some());
        }
    }
}

/// RFC 6081 Figure 1's predictable symmetric NATs: named, outside `ALL`, symmetric towards
/// the two server addresses; the port-preserving one keeps the client's port on the first
/// mapping, the sequential one hands out consecutive ports.
#[test]
fn predictable_symmetric_presets() {
    use crate::{Nat, Outbound};
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::Instant;
    let inside = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 50_000);
    let s1 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 3544);
    let s2 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 3544);
    let now = Instant::now();
    for &preset in NatPreset::PREDICTABLE {
        assert!(!NatPreset::ALL.contains(&preset));
        assert_eq!(preset.as_str().parse::<NatPreset>().unwrap(), preset);
        let cfg = preset
            .config(vec![Ipv4Addr::new(203, 0, 113, 1)], 5)
            .unwrap()
            .unwrap();
        let mut nat = Nat::new(cfg);
        let mut out = |to| match nat.outbound(now, inside, to) {
            Ok(Outbound::Forward(t)) => t.external,
            other => panic!("{other:?}"),
        };
        let (m1, m2) = (out(s1), out(s2));
        assert_ne!(m1, m2, "{preset}: a mapping per destination");
        match preset {
            NatPreset::PortPreservingSymmetric => assert_eq!(m1.port(), inside.port()),
            _ => assert_eq!(m2.port(), m1.port() + 1, "{preset}: the next port"),
        }
    }
}
