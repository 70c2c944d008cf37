//! Unit tests of the NAT model: shared helpers and the RFC 5780 probes here, the tests by
//! concern in the sibling files.

mod model;
mod ports;
mod presets;
mod props;
mod reserve;
mod spec;
mod upnp;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::nat::check_invariants;
use crate::spec::{format_duration, parse_duration};
use crate::*;
use FilteringBehavior as F;
use MappingBehavior as M;

fn ep(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn two_ips() -> Vec<Ipv4Addr> {
    vec![ip("203.0.113.1"), ip("203.0.113.2")]
}

fn preset_nat(preset: NatPreset) -> Nat {
    Nat::try_new(preset.config(two_ips(), 42).unwrap().unwrap()).unwrap()
}

/// A NAT on 203.0.113.1 with the default (port-restricted) behaviour, modified by `f`.
fn nat_with(f: impl FnOnce(&mut NatConfig)) -> Nat {
    let mut config = NatConfig::new(vec![ip("203.0.113.1")], 7);
    f(&mut config);
    Nat::try_new(config).unwrap()
}

#[track_caller]
fn fwd(result: Result<Outbound, NatDrop>) -> SocketAddrV4 {
    match result {
        Ok(Outbound::Forward(t)) => t.external,
        other => panic!("expected a forwarded datagram, got {other:?}"),
    }
}

/// RFC 5780 §4.3 mapping tests I/II/III: one internal endpoint to (IP1,P1), (IP2,P1),
/// (IP2,P2); compare the external endpoints.
fn probe_mapping(nat: &mut Nat, now: Instant) -> MappingBehavior {
    let x = ep("10.0.0.2:5000");
    let m1 = fwd(nat.outbound(now, x, ep("198.51.100.1:3478")));
    let m2 = fwd(nat.outbound(now, x, ep("198.51.100.2:3478")));
    let m3 = fwd(nat.outbound(now, x, ep("198.51.100.2:3479")));
    if m1 == m2 {
        assert_eq!(m2, m3);
        M::EndpointIndependent
    } else if m2 == m3 {
        M::AddressDependent
    } else {
        M::AddressAndPortDependent
    }
}

/// RFC 5780 §4.4 filtering tests: after a binding to (IP1,P1), unsolicited datagrams from
/// a new IP and port, then from the same IP with a new port, then from IP1:P1 itself.
fn probe_filtering(nat: &mut Nat, now: Instant) -> FilteringBehavior {
    let x = ep("10.0.0.3:6000");
    let server = ep("198.51.100.1:3478");
    let m = fwd(nat.outbound(now, x, server));
    let behaviour = match (
        nat.inbound(now, m, ep("198.51.100.2:3479")),
        nat.inbound(now, m, ep("198.51.100.1:3479")),
    ) {
        (Ok(_), Ok(_)) => F::EndpointIndependent,
        (Err(NatDrop::Filtered), Ok(_)) => F::AddressDependent,
        (Err(NatDrop::Filtered), Err(NatDrop::Filtered)) => F::AddressAndPortDependent,
        other => panic!("inconsistent filtering: {other:?}"),
    };
    assert_eq!(nat.inbound(now, m, server).unwrap().internal, x);
    behaviour
}
