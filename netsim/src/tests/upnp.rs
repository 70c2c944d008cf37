//! The UPnP IGD: the switch, leases that admit anyone, the leased port under symmetric
//! mapping, conflicts, lease expiry, reboots and the spec key.

use super::*;

fn symmetric_upnp() -> Nat {
    let mut c = NatPreset::Symmetric
        .config(vec![ip("203.0.113.1")], 5)
        .unwrap()
        .unwrap();
    c.upnp = true;
    Nat::try_new(c).unwrap()
}

#[test]
fn off_by_default_and_refused_when_off() {
    let t0 = Instant::now();
    for preset in NatPreset::ALL {
        if let Ok(Some(c)) = preset.config(two_ips(), 1) {
            assert!(!c.upnp, "{preset}");
        }
    }
    let mut nat = nat_with(|_| {});
    let x = ep("192.168.1.2:40000");
    assert_eq!(
        nat.add_port_mapping(t0, 40000, x, Duration::ZERO),
        Err(UpnpError::NoIgd)
    );
    assert_eq!(nat.get_external_ip_address(*x.ip()), Err(UpnpError::NoIgd));
    let c = nat.counters();
    assert_eq!((c.upnp_requests, c.upnp_refused), (2, 2));
}

#[test]
fn a_lease_admits_anyone_and_symmetric_mapping_goes_on() {
    let t0 = Instant::now();
    let mut nat = symmetric_upnp();
    let x = ep("192.168.1.2:40000");
    let leased = nat.add_port_mapping(t0, 40000, x, Duration::ZERO).unwrap();
    assert_eq!(leased, ep("203.0.113.1:40000"));
    assert_eq!(nat.get_external_ip_address(*x.ip()), Ok(ip("203.0.113.1")));
    // Inbound from a stranger, before the client sent anything: delivered.
    let stranger = ep("198.51.100.77:1234");
    assert_eq!(nat.inbound(t0, leased, stranger).unwrap().internal, x);
    // The first dynamic mapping lands on the leased port (the server reflects it), the
    // next destination gets another port: still a symmetric NAT.
    let server = ep("198.51.100.10:3544");
    assert_eq!(fwd(nat.outbound(t0, x, server)), leased);
    let other = fwd(nat.outbound(t0, x, ep("198.51.100.11:3544")));
    assert_ne!(other, leased);
    // The fresh mapping still filters strangers; the lease does not.
    assert_eq!(nat.inbound(t0, other, stranger), Err(NatDrop::Filtered));
    assert!(nat.inbound(t0, leased, ep("198.51.100.99:9")).is_ok());
    let c = nat.counters();
    assert_eq!((c.upnp_mappings_added, c.upnp_inbound), (1, 2));
    check_invariants(&nat);
}

#[test]
fn conflicts_and_leased_ports_are_not_allocated() {
    let t0 = Instant::now();
    let mut nat = nat_with(|c| c.upnp = true);
    let (a, b) = (ep("192.168.1.2:40000"), ep("192.168.1.3:40000"));
    nat.add_port_mapping(t0, 40000, a, Duration::ZERO).unwrap();
    assert_eq!(
        nat.add_port_mapping(t0, 40000, b, Duration::ZERO),
        Err(UpnpError::Conflict)
    );
    // A port-preserving NAT does not give B the port leased to A.
    let mb = fwd(nat.outbound(t0, b, ep("198.51.100.10:3544")));
    assert_ne!(mb.port(), 40000);
    // B's dynamic mapping port cannot be leased to A either.
    assert_eq!(
        nat.add_port_mapping(t0, mb.port(), a, Duration::ZERO),
        Err(UpnpError::Conflict)
    );
    // Renewing one's own lease is fine; port 0 is refused.
    assert!(nat.add_port_mapping(t0, 40000, a, secs(60)).is_ok());
    assert_eq!(
        nat.add_port_mapping(t0, 0, a, Duration::ZERO),
        Err(UpnpError::InvalidArgs)
    );
    check_invariants(&nat);
}

#[test]
fn leases_lapse_and_reboot_and_delete_forget_them() {
    let t0 = Instant::now();
    let mut nat = symmetric_upnp();
    let x = ep("192.168.1.2:40000");
    let leased = nat.add_port_mapping(t0, 40000, x, secs(10)).unwrap();
    let stranger = ep("198.51.100.77:1234");
    assert!(nat.inbound(t0 + secs(9), leased, stranger).is_ok());
    assert_eq!(
        nat.inbound(t0 + secs(10), leased, stranger),
        Err(NatDrop::NoMapping)
    );
    assert!(nat.leases(t0 + secs(10)).is_empty());

    nat.add_port_mapping(t0, 40000, x, Duration::ZERO).unwrap();
    nat.reboot();
    assert_eq!(nat.inbound(t0, leased, stranger), Err(NatDrop::NoMapping));

    nat.add_port_mapping(t0, 40000, x, Duration::ZERO).unwrap();
    assert_eq!(nat.delete_port_mapping(t0, 40000, *x.ip()), Ok(()));
    assert_eq!(
        nat.delete_port_mapping(t0, 40000, *x.ip()),
        Err(UpnpError::NoSuchEntry)
    );
    assert_eq!(nat.inbound(t0, leased, stranger), Err(NatDrop::NoMapping));
}

#[test]
fn spec_key() {
    let c = NatConfig::from_spec("preset=symmetric,upnp=on").unwrap();
    assert!(c.upnp);
    assert_eq!(c.mapping, M::AddressAndPortDependent);
    assert!(c.to_spec().contains("upnp=on"));
    assert_eq!(NatConfig::from_spec(&c.to_spec()).unwrap(), c);
    assert!(!NatConfig::from_spec("preset=symmetric").unwrap().upnp);
}
