//! Linux conntrack's port reservation by refused inbound datagrams
//! ([`NatConfig::unsolicited_reserve`]), as measured behind a bare `masquerade` (Linux 6.18):
//! an unsolicited datagram from R to the router's `wan:P` leaves `[UNREPLIED]`, and a LAN host
//! that then sends from the internal port behind `P` to R leaves from another port, while its
//! flows to others keep `P`; and since Linux gives a new flow the mapping of the internal
//! endpoint's most recent flow, every *new* remote after R gets R's port too.

use super::*;

fn masquerade() -> Nat {
    nat_with(|c| c.unsolicited_reserve = Some(CONNTRACK_UDP_UNREPLIED))
}

#[test]
fn a_refused_datagram_diverts_the_next_flow_to_its_source() {
    let t0 = Instant::now();
    let (x, primary, secondary) = (
        ep("10.0.0.2:41000"),
        ep("198.51.100.1:3544"),
        ep("198.51.100.2:3544"),
    );
    let mut nat = masquerade();
    let m1 = fwd(nat.outbound(t0, x, primary));
    assert_eq!(m1, ep("203.0.113.1:41000"));
    assert_eq!(nat.inbound(t0, m1, secondary), Err(NatDrop::Filtered));
    assert_eq!(nat.reservations(), 1);
    let m2 = fwd(nat.outbound(t0 + secs(1), x, secondary));
    assert_ne!(m2, m1, "the reserved port is not used toward the secondary");
    assert_eq!(m2.ip(), m1.ip());
    assert_eq!(nat.counters().mappings_diverted, 1);
    // The diverted mapping serves the secondary (both ways); the primary keeps M1.
    assert_eq!(
        nat.inbound(t0 + secs(1), m2, secondary).unwrap().internal,
        x
    );
    assert_eq!(fwd(nat.outbound(t0 + secs(2), x, secondary)), m2);
    assert_eq!(fwd(nat.outbound(t0 + secs(2), x, primary)), m1);
    assert_eq!(nat.mapping_for(x, secondary), Some(m2));
    assert_eq!(nat.mapping_for(x, primary), Some(m1));
    // A remote never contacted before gets the newest mapping, M2, as Linux gives it.
    let relay = ep("198.51.100.30:3545");
    assert_eq!(fwd(nat.outbound(t0 + secs(2), x, relay)), m2);
    assert_eq!(nat.inbound(t0 + secs(2), m2, relay).unwrap().internal, x);
    assert_eq!(nat.mappings(), 2);
    // The secondary still cannot reach M1: the reservation stands, renewed by each attempt.
    assert_eq!(
        nat.inbound(t0 + secs(3), m1, secondary),
        Err(NatDrop::Filtered)
    );
    assert_eq!(nat.counters().mappings_diverted, 1);
    check_invariants(&nat);
}

#[test]
fn without_the_behaviour_refused_datagrams_leave_nothing() {
    let t0 = Instant::now();
    let (x, primary, secondary) = (
        ep("10.0.0.2:41000"),
        ep("198.51.100.1:3544"),
        ep("198.51.100.2:3544"),
    );
    let mut nat = nat_with(|_| {});
    let m1 = fwd(nat.outbound(t0, x, primary));
    assert_eq!(nat.inbound(t0, m1, secondary), Err(NatDrop::Filtered));
    assert_eq!(nat.reservations(), 0);
    assert_eq!(fwd(nat.outbound(t0, x, secondary)), m1);
    assert_eq!(nat.counters().mappings_diverted, 0);
}

#[test]
fn a_datagram_to_no_mapping_reserves_the_port_too() {
    // Case B of the measurement: nothing was ever sent from 42000, yet the port is taken
    // toward the remote that knocked.
    let t0 = Instant::now();
    let (x, remote) = (ep("10.0.0.2:42000"), ep("198.51.100.2:6001"));
    let mut nat = masquerade();
    let knocked = ep("203.0.113.1:42000");
    assert_eq!(nat.inbound(t0, knocked, remote), Err(NatDrop::NoMapping));
    let m = fwd(nat.outbound(t0, x, remote));
    assert_ne!(m, knocked);
    // Another remote gets the preserved port.
    assert_eq!(
        fwd(nat.outbound(t0, ep("10.0.0.2:42001"), remote)).port(),
        42001
    );
    check_invariants(&nat);
}

#[test]
fn the_reservation_is_per_remote_endpoint_and_lapses() {
    let t0 = Instant::now();
    let (x, primary, knocker) = (
        ep("10.0.0.2:43000"),
        ep("198.51.100.1:3544"),
        ep("198.51.100.2:6003"),
    );
    let mut nat = masquerade();
    let m1 = fwd(nat.outbound(t0, x, primary));
    assert!(nat.inbound(t0, m1, knocker).is_err());
    // Another port of the same remote IP is not reserved (case C of the measurement).
    assert_eq!(fwd(nat.outbound(t0, x, ep("198.51.100.2:6002"))), m1);
    // Renewed at 20 s, so still there at 49 s; gone at 50 s.
    assert!(nat.inbound(t0 + secs(20), m1, knocker).is_err());
    nat.expire(t0 + secs(49));
    assert_eq!(nat.reservations(), 1);
    nat.expire(t0 + secs(50));
    assert_eq!(nat.reservations(), 0);
    assert_eq!(fwd(nat.outbound(t0 + secs(50), x, knocker)), m1);
    assert_eq!(nat.counters().mappings_diverted, 0);
}

#[test]
fn passed_datagrams_reserve_nothing() {
    let t0 = Instant::now();
    let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.1:3544"));
    let mut nat = masquerade();
    let m = fwd(nat.outbound(t0, x, server));
    assert!(nat.inbound(t0, m, server).is_ok());
    assert_eq!(nat.reservations(), 0);
    // Lost datagrams never reached the NAT.
    let mut lossy = nat_with(|c| {
        c.unsolicited_reserve = Some(secs(30));
        c.loss = 1.0;
    });
    assert_eq!(lossy.inbound(t0, m, server), Err(NatDrop::Lost));
    assert_eq!(lossy.reservations(), 0);
}

#[test]
fn reservations_are_bounded_and_cleared_by_a_reboot() {
    let t0 = Instant::now();
    let mut nat = nat_with(|c| {
        c.unsolicited_reserve = Some(secs(30));
        c.max_mappings = 4;
    });
    for port in 2000..2100 {
        let _ = nat.inbound(t0, ep(&format!("203.0.113.1:{port}")), ep("192.0.2.9:53"));
    }
    assert_eq!(nat.reservations(), 4);
    check_invariants(&nat);
    nat.reboot();
    assert_eq!(nat.reservations(), 0);
}

#[test]
fn the_spec_key_round_trips() {
    let c = NatConfig::from_spec("unsolicited-reserve=30s").unwrap();
    assert_eq!(c.unsolicited_reserve, Some(CONNTRACK_UDP_UNREPLIED));
    assert!(c.to_spec().ends_with(",unsolicited-reserve=30s"));
    assert_eq!(NatConfig::from_spec(&c.to_spec()), Ok(c));
    let off = NatConfig::from_spec("unsolicited-reserve=off").unwrap();
    assert_eq!(off, NatConfig::default());
    assert!(off.to_spec().ends_with(",unsolicited-reserve=off"));
    let m = NatConfig::from_spec("preset=masquerade").unwrap();
    assert_eq!(m.unsolicited_reserve, Some(secs(30)));
    assert!(matches!(
        NatConfig::from_spec("unsolicited-reserve=0s"),
        Err(NatConfigError::OutOfRange {
            key: "unsolicited-reserve",
            ..
        })
    ));
    assert!(matches!(
        NatConfig::from_spec("unsolicited-reserve=soon"),
        Err(NatConfigError::BadValue { key, .. }) if key == "unsolicited-reserve"
    ));
}

#[test]
fn the_retired_mapping_serves_its_remotes_until_their_permits_lapse() {
    let t0 = Instant::now();
    let (x, primary, secondary, other) = (
        ep("10.0.0.2:41000"),
        ep("198.51.100.1:3544"),
        ep("198.51.100.2:3544"),
        ep("198.51.100.3:3544"),
    );
    let mut nat = masquerade();
    let m1 = fwd(nat.outbound(t0, x, primary));
    assert!(nat.inbound(t0, m1, secondary).is_err());
    let m2 = fwd(nat.outbound(t0, x, secondary));
    // Keep M1 alive through the primary for 100 s; M2 lives on by the secondary.
    assert_eq!(fwd(nat.outbound(t0 + secs(100), x, primary)), m1);
    assert_eq!(fwd(nat.outbound(t0 + secs(100), x, secondary)), m2);
    assert_eq!(
        nat.inbound(t0 + secs(100), m1, primary).unwrap().internal,
        x
    );
    // 'other' was never sent to: it gets M2, not the retired M1.
    assert_eq!(fwd(nat.outbound(t0 + secs(101), x, other)), m2);
    // Once M1 has expired, the primary gets the current mapping too.
    nat.expire(t0 + secs(220));
    assert_eq!(nat.mappings(), 1);
    assert_eq!(fwd(nat.outbound(t0 + secs(220), x, primary)), m2);
    check_invariants(&nat);
}
