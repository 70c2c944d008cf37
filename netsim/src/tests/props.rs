//! Property tests: random operations keep the invariants and are deterministic.

use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Remote {
    Internet(u8, u16),
    Own(usize, u16),
}

#[derive(Debug, Clone)]
enum Op {
    Out {
        host: u8,
        port: u16,
        remote: Remote,
    },
    In {
        ip: u8,
        port: u16,
        remote: (u8, u16),
    },
    Advance(u64),
    Expire,
    Reboot,
}

/// External ports, biased towards the ones the operations' internal ports map to (the
/// preserved 1000/1001 and the bottom of the range), so inbound and hairpin operations
/// often hit live mappings.
fn arb_external_port() -> impl Strategy<Value = u16> {
    prop_oneof![3 => 1000u16..1004, 1 => 995u16..1045]
}

fn arb_remote() -> impl Strategy<Value = Remote> {
    prop_oneof![
        4 => (1u8..4, prop::sample::select(vec![3544u16, 3545, 40000])).prop_map(|(h, p)| Remote::Internet(h, p)),
        1 => (0usize..3, arb_external_port()).prop_map(|(i, p)| Remote::Own(i, p)),
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..5, prop::sample::select(vec![1000u16, 1001, 5000]), arb_remote())
            .prop_map(|(host, port, remote)| Op::Out { host, port, remote }),
        4 => (prop_oneof![3 => Just(1u8), 1 => 1u8..4], arb_external_port(), (1u8..4, prop::sample::select(vec![3544u16, 3545, 40000])))
            .prop_map(|(ip, port, remote)| Op::In { ip, port, remote }),
        2 => (0u64..90_000).prop_map(Op::Advance),
        1 => Just(Op::Expire),
        1 => Just(Op::Reboot),
    ]
}

fn arb_config() -> impl Strategy<Value = NatConfig> {
    (
        (0usize..3, 0usize..3, 0usize..3, 0usize..2, 1u8..=3),
        (1000u16..1010, 0u16..40, 1usize..30),
        (
            0.0f64..0.5,
            any::<bool>(),
            any::<bool>(),
            1u64..300,
            0u64..100,
            any::<u64>(),
        ),
    )
        .prop_map(
            |((m, f, p, pool, n), (lo, span, max), (loss, inr, hp, timeout, delay, seed))| {
                NatConfig {
                    mapping: M::ALL[m],
                    filtering: F::ALL[f],
                    ports: PortAllocation::ALL[p],
                    pooling: Pooling::ALL[pool],
                    external_ips: (1..=n).map(|i| Ipv4Addr::new(203, 0, 113, i)).collect(),
                    timeout: secs(timeout),
                    inbound_refresh: inr,
                    hairpinning: hp,
                    upnp: false,
                    loss,
                    delay: Duration::from_millis(delay),
                    jitter: Duration::from_millis(seed % 50),
                    port_range: lo..=lo + span,
                    max_mappings: max,
                    unsolicited_reserve: (seed & 1 == 1).then(|| secs(1 + seed % 40)),
                    seed,
                }
            },
        )
}

/// Configs `validate` would refuse; `Nat::new` must still not panic.
fn arb_wild_config() -> impl Strategy<Value = NatConfig> {
    (
        arb_config(),
        prop::collection::vec(
            prop::sample::select(vec![ip("203.0.113.1"), ip("203.0.113.2")]),
            0..3,
        ),
        (any::<u16>(), any::<u16>()),
        prop_oneof![Just(f64::NAN), Just(-1.0), Just(2.0), 0.0f64..1.0],
        prop_oneof![
            Just(Duration::MAX),
            Just(Duration::ZERO),
            (1u64..100).prop_map(secs)
        ],
        0usize..4,
    )
        .prop_map(|(base, ips, (a, b), loss, timeout, max)| NatConfig {
            external_ips: ips,
            port_range: a.min(b).max(990)..=b.max(a).min(1050),
            loss,
            timeout,
            max_mappings: max,
            ..base
        })
}

/// Runs `ops` and records every observable output, with instants relative to the start
/// so runs from different origins compare equal.
fn run(config: &NatConfig, ops: &[Op]) -> (Vec<String>, NatCounters) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut nat = Nat::new(config.clone());
    let mut log = Vec::new();
    for op in ops {
        let entry = match op {
            Op::Out { host, port, remote } => {
                let internal = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, *host), *port);
                let remote = match *remote {
                    Remote::Internet(h, p) => SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, h), p),
                    Remote::Own(i, p) => {
                        let ips = &config.external_ips;
                        let ip = ips
                            .get(i % ips.len().max(1))
                            .copied()
                            .unwrap_or(NatConfig::DEFAULT_EXTERNAL_IP);
                        SocketAddrV4::new(ip, p)
                    }
                };
                let result = nat.outbound(now, internal, remote);
                if let Ok(Outbound::Forward(t)) = result {
                    assert_eq!(nat.mapping_for(internal, remote), Some(t.external));
                }
                format!("{result:?}")
            }
            Op::In {
                ip,
                port,
                remote: (h, p),
            } => {
                let external = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, *ip), *port);
                let remote = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, *h), *p);
                format!("{:?}", nat.inbound(now, external, remote))
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(*ms);
                continue;
            }
            Op::Expire => {
                nat.expire(now);
                if let Some(next) = nat.poll_timeout() {
                    assert!(next > now);
                }
                "expire".to_owned()
            }
            Op::Reboot => {
                nat.reboot();
                "reboot".to_owned()
            }
        };
        log.push(format!(
            "{entry} mappings={} next={:?}",
            nat.mappings(),
            nat.poll_timeout().map(|t| t - t0)
        ));
        check_invariants(&nat);
    }
    (log, nat.counters().clone())
}

proptest! {
    #[test]
    fn random_operations_keep_invariants_and_are_deterministic(
        config in arb_config(),
        ops in prop::collection::vec(arb_op(), 0..200),
    ) {
        let first = run(&config, &ops);
        prop_assert_eq!(&first, &run(&config, &ops));
        prop_assert_eq!(first.1.dropped_total() + first.1.outbound_translated
            + first.1.inbound_translated + first.1.hairpinned,
            ops.iter().filter(|o| matches!(o, Op::Out { .. } | Op::In { .. })).count() as u64);
    }

    #[test]
    fn degenerate_configs_never_panic(
        config in arb_wild_config(),
        ops in prop::collection::vec(arb_op(), 0..100),
    ) {
        let first = run(&config, &ops);
        prop_assert_eq!(&first, &run(&config, &ops));
    }

    #[test]
    fn spec_round_trips(config in arb_config()) {
        prop_assert_eq!(NatConfig::from_spec(&config.to_spec()), Ok(config));
    }
}
