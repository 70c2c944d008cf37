//! Fuzzing harness of the NAT model, shared by the cargo-fuzz target `nat` (`fuzz/`) and the
//! corpus replay test (`netsim/tests/corpus.rs`). Not a stable API: hidden from the
//! documentation.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use teredo::fuzzing::{advance, Input, MAX_OPS};

use crate::nat::check_invariants;
use crate::{
    FilteringBehavior, MappingBehavior, Nat, NatConfig, Outbound, Pooling, PortAllocation,
};

/// Internal hosts of the harness: 10.0.0.1–4, ports 5000–5003.
fn internal(b: u8) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(10, 0, 0, 1 + (b & 3)),
        5000 + u16::from(b >> 2 & 3),
    )
}

/// Remote Internet endpoints: 198.51.100.0–7, ports 3544–3547.
fn remote(b: u8) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(198, 51, 100, b & 7),
        3544 + u16::from(b >> 3 & 3),
    )
}

/// Input: a spec string `[len: u8][bytes]` (parsed with [`NatConfig::from_spec`]; what
/// parses must print back with [`NatConfig::to_spec`] to a spec that parses to the same
/// config), five config bytes (behaviours, 1–3 external addresses, a small mapping cap and
/// port range, timeout, loss, seed; the seed's low bit turns the UPnP gateway on), then
/// operations `[op: u8][args]`; `op % 7`: 0 outbound `[host][remote]` (bit 7 of remote: to
/// one of the NAT's own addresses, i.e. hairpin), 1 inbound `[external][port][remote]`,
/// 2 clock step, 3 expire, 4 reboot, 5 mapping lookup, 6 UPnP `[host][port][flags]` (bit 0:
/// delete, else add with a lease of `flags >> 1` seconds; bit 7 of port: the host's own port).
/// After every operation the tables are checked for internal consistency, and translations
/// must use the NAT's own addresses and port range.
pub fn nat(data: &[u8]) {
    let mut input = Input::new(data);
    let spec_len = usize::from(input.u8());
    spec(&String::from_utf8_lossy(input.bytes(spec_len)));
    let c: [u8; 5] = std::array::from_fn(|_| input.u8());
    let ips: Vec<Ipv4Addr> = (0..1 + c[1] % 3)
        .map(|i| Ipv4Addr::new(203, 0, 113, 1 + i))
        .collect();
    let mut cfg = NatConfig::new(ips.clone(), u64::from(c[4]));
    cfg.mapping = MappingBehavior::ALL[usize::from(c[0]) % MappingBehavior::ALL.len()];
    cfg.filtering = FilteringBehavior::ALL[usize::from(c[0] >> 2) % FilteringBehavior::ALL.len()];
    cfg.ports = PortAllocation::ALL[usize::from(c[0] >> 4) % PortAllocation::ALL.len()];
    cfg.pooling = Pooling::ALL[usize::from(c[0] >> 6 & 1)];
    cfg.hairpinning = c[0] & 0x80 == 0;
    cfg.max_mappings = 1 + usize::from(c[1] >> 2 & 15);
    cfg.inbound_refresh = c[1] & 0x40 != 0;
    if c[1] & 0x80 != 0 {
        cfg.loss = 0.25;
    }
    if c[2] != 0xff {
        // Small port ranges, so that allocation runs out.
        let lo = 1024 + u16::from(c[2] >> 5) * 4000;
        cfg.port_range = lo..=lo + u16::from(c[2] & 31);
    }
    cfg.timeout = Duration::from_secs(u64::from(c[3]));
    cfg.upnp = c[4] & 1 == 1;
    if c[4] & 2 != 0 {
        // Linux conntrack's port reservation, as long as the mapping timeout.
        cfg.unsolicited_reserve = Some(Duration::from_secs(u64::from(c[3]).max(1)));
    }
    let (lo, hi) = (*cfg.port_range.start(), *cfg.port_range.end());
    let mut nat = Nat::new(cfg);
    let mut now = teredo::fuzzing::epoch();
    let mut externals: Vec<SocketAddrV4> = Vec::new();
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 7 {
            0 => {
                let from = internal(input.u8());
                let r = input.u8();
                let to = if r & 0x80 != 0 {
                    let e = ips[usize::from(r) % ips.len()];
                    let port = externals
                        .get(usize::from(r & 7))
                        .map_or(lo, SocketAddrV4::port);
                    SocketAddrV4::new(e, port)
                } else {
                    remote(r)
                };
                match nat.outbound(now, from, to) {
                    Ok(Outbound::Forward(t)) => {
                        check_external(&ips, lo, hi, t.external);
                        if externals.len() < 8 && !externals.contains(&t.external) {
                            externals.push(t.external);
                        }
                    }
                    Ok(Outbound::Hairpin(h)) => {
                        check_external(&ips, lo, hi, h.from);
                        assert!(nat.is_external(*to.ip()));
                        assert_eq!(h.to.ip().octets()[..3], [10, 0, 0], "hairpin to {}", h.to);
                    }
                    Err(_) => {}
                }
            }
            1 => {
                let e = input.u8();
                let p = input.u8();
                let ip = ips[usize::from(e) % ips.len()];
                let port = match externals.get(usize::from(p & 7)) {
                    Some(x) if p & 0x80 == 0 => x.port(),
                    _ => lo.wrapping_add(u16::from(p)),
                };
                let from = remote(input.u8());
                if let Ok(t) = nat.inbound(now, SocketAddrV4::new(ip, port), from) {
                    assert_eq!(
                        t.internal.ip().octets()[..3],
                        [10, 0, 0],
                        "inbound to {}",
                        t.internal
                    );
                }
            }
            2 => {
                now = advance(now, input.step());
                if nat.poll_timeout().is_some_and(|t| t <= now) {
                    nat.expire(now);
                    assert!(
                        nat.poll_timeout().is_none_or(|t| t > now),
                        "expired everything due"
                    );
                }
            }
            3 => nat.expire(now),
            4 => {
                nat.reboot();
                assert_eq!(nat.mappings(), 0);
            }
            6 => {
                let host = internal(input.u8());
                let p = input.u8();
                let flags = input.u8();
                let port = if p & 0x80 != 0 {
                    host.port()
                } else {
                    lo.wrapping_add(u16::from(p))
                };
                if flags & 1 == 1 {
                    let _ = nat.delete_port_mapping(now, port, *host.ip());
                } else {
                    let lease = Duration::from_secs(u64::from(flags >> 1));
                    if let Ok(x) = nat.add_port_mapping(now, port, host, lease) {
                        assert!(ips.contains(x.ip()) && x.port() == port, "lease {x}");
                        if externals.len() < 8 && !externals.contains(&x) {
                            externals.push(x);
                        }
                    }
                }
                // A live lease is held by one host and never shares its port with another
                // host's dynamic mapping.
                let leases = nat.leases(now);
                for (i, l) in leases.iter().enumerate() {
                    assert!(leases[..i].iter().all(|o| o.external != l.external));
                }
            }
            _ => {
                let from = internal(input.u8());
                let to = remote(input.u8());
                if let Some(x) = nat.mapping_for(from, to) {
                    check_external(&ips, lo, hi, x);
                }
            }
        }
        check_invariants(&nat);
    }
}

fn check_external(ips: &[Ipv4Addr], lo: u16, hi: u16, x: SocketAddrV4) {
    assert!(ips.contains(x.ip()), "external address {x}");
    assert!(
        (lo..=hi).contains(&x.port()) && x.port() != 0,
        "external port {x}"
    );
}

/// A spec string: parse errors are fine; what parses must round-trip through `to_spec`.
fn spec(s: &str) {
    if let Ok(c) = NatConfig::from_spec(s) {
        let again = NatConfig::from_spec(&c.to_spec());
        assert_eq!(
            again.as_ref(),
            Ok(&c),
            "spec {s:?} printed as {:?}",
            c.to_spec()
        );
    }
}
