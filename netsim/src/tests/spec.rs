//! The spec syntax: parsing, errors naming the key, round trips.

use super::*;

#[test]
fn spec_parses_free_combinations() {
    let c = NatConfig::from_spec(
        "mapping=apd,filtering=ei,ports=random,timeout=20s,hairpin=off,loss=0.1,delay=50ms",
    )
    .unwrap();
    assert_eq!(c.mapping, M::AddressAndPortDependent);
    assert_eq!(c.filtering, F::EndpointIndependent);
    assert_eq!(c.ports, PortAllocation::Random);
    assert_eq!(c.timeout, secs(20));
    assert!(!c.hairpinning);
    assert_eq!(c.loss, 0.1);
    assert_eq!(c.delay, Duration::from_millis(50));
    assert_eq!(c.external_ips, [NatConfig::DEFAULT_EXTERNAL_IP]);

    assert_eq!(NatConfig::from_spec("").unwrap(), NatConfig::default());
    let c = NatConfig::from_spec(
        " MAPPING = Address-Dependent , Inbound_Refresh=yes, loss=10%, port-range=2000-2999, \
         max-mappings=10, seed=9, pooling=arbitrary, ips=192.0.2.1+192.0.2.2, timeout=2m",
    )
    .unwrap();
    assert_eq!(c.mapping, M::AddressDependent);
    assert!(c.inbound_refresh);
    assert_eq!(c.loss, 0.1);
    assert_eq!(c.port_range, 2000..=2999);
    assert_eq!((c.max_mappings, c.seed), (10, 9));
    assert_eq!(c.external_ips, [ip("192.0.2.1"), ip("192.0.2.2")]);
    assert_eq!(c.timeout, secs(120));

    // Presets as a base, overridable, independent of key order.
    let c = NatConfig::from_spec("filtering=apd,preset=full-cone").unwrap();
    assert_eq!(
        (c.mapping, c.filtering),
        (M::EndpointIndependent, F::AddressAndPortDependent)
    );
    let a =
        NatConfig::from_spec("preset=symmetric-address,ips=192.0.2.1+192.0.2.2,seed=3").unwrap();
    let b =
        NatConfig::from_spec("seed=3,ips=192.0.2.1+192.0.2.2,preset=symmetric-address").unwrap();
    assert_eq!(a, b);
    assert_eq!(
        Some(a),
        NatPreset::SymmetricAddress
            .config(vec![ip("192.0.2.1"), ip("192.0.2.2")], 3)
            .unwrap()
    );

    // apply_spec on top of a preset leaves addresses and seed alone.
    let mut c = NatPreset::Symmetric.config(two_ips(), 11).unwrap().unwrap();
    c.apply_spec("timeout=20s").unwrap();
    assert_eq!(
        (c.timeout, c.seed, c.ports),
        (secs(20), 11, PortAllocation::Random)
    );
}

#[test]
fn spec_errors_name_the_key() {
    let cases: &[(&str, &str)] = &[
        ("mapping=xyz", "mapping"),
        ("filtering=", "filtering"),
        ("ports=odd", "ports"),
        ("pooling=sometimes", "pooling"),
        ("colour=red", "colour"),
        ("timeout=20", "timeout"),
        ("timeout=20 fortnights", "timeout"),
        ("timeout=0s", "timeout"),
        ("delay=-5ms", "delay"),
        ("delay=2000d", "delay"),
        ("hairpin=maybe", "hairpin"),
        ("inbound-refresh=2", "inbound-refresh"),
        ("loss=1.5", "loss"),
        ("loss=lots", "loss"),
        ("loss=NaN", "loss"),
        ("port-range=2000-1000", "port-range"),
        ("port-range=0-10", "port-range"),
        ("port-range=70000", "port-range"),
        ("max-mappings=0", "max-mappings"),
        ("max-mappings=-1", "max-mappings"),
        ("seed=x", "seed"),
        ("ips=", "ips"),
        ("ips=203.0.113.1+203.0.113.1", "ips"),
        ("ips=::1", "ips"),
        ("preset=cone", "preset"),
        ("preset=none", "none"),
        ("preset=symmetric-address", "ips"),
        ("mapping=ei,mapping=ad", "mapping"),
        ("mapping", "mapping"),
    ];
    for (spec, key) in cases {
        let err = NatConfig::from_spec(spec).expect_err(spec);
        let msg = err.to_string();
        assert!(msg.contains(key), "{spec}: {msg}");
    }
    assert!(matches!(
        NatConfig::from_spec("colour=red"),
        Err(NatConfigError::UnknownKey { key }) if key == "colour"
    ));
    assert!(matches!(
        NatConfig::from_spec("mapping=ei,Mapping=ad"),
        Err(NatConfigError::DuplicateKey { key }) if key == "Mapping"
    ));
    assert!(matches!(
        NatConfig::from_spec("mapping"),
        Err(NatConfigError::NotKeyValue { .. })
    ));
    assert!(matches!(
        NatConfig::from_spec("loss=1.5"),
        Err(NatConfigError::OutOfRange { key: "loss", .. })
    ));
    // A failed apply leaves the config unchanged.
    let mut c = NatConfig::default();
    assert!(c.apply_spec("timeout=5s,loss=2").is_err());
    assert_eq!(c, NatConfig::default());
}

#[test]
fn spec_round_trips_every_preset() {
    for &preset in &NatPreset::ALL[1..] {
        let mut c = preset.config(two_ips(), 99).unwrap().unwrap();
        c.delay = Duration::from_micros(1500);
        c.loss = 0.015;
        let spec = c.to_spec();
        assert_eq!(NatConfig::from_spec(&spec).as_ref(), Ok(&c), "{spec}");
        assert_eq!(spec.parse::<NatConfig>(), Ok(c));
    }
    assert_eq!(format_duration(secs(120)), "2m");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    assert_eq!(parse_duration("1h"), Some(secs(3600)));
}

#[test]
fn jitter_adds_a_random_delay_within_its_bound_and_round_trips() {
    use std::time::{Duration, Instant};
    let c = NatConfig::from_spec("delay=5ms,jitter=30ms,seed=3").unwrap();
    assert_eq!(c.jitter, Duration::from_millis(30));
    assert_eq!(NatConfig::from_spec(&c.to_spec()).unwrap(), c);
    assert!(NatConfig::from_spec("jitter=fast").is_err());
    let mut nat = Nat::new(c);
    let t = Instant::now();
    let internal = "10.0.0.2:5000".parse().unwrap();
    let delays: Vec<Duration> = (0..50u16)
        .map(|i| {
            let to = SocketAddrV4::new("198.51.100.1".parse().unwrap(), 1000 + i);
            nat.outbound(t, internal, to).unwrap().delay()
        })
        .collect();
    let (lo, hi) = (Duration::from_millis(5), Duration::from_millis(35));
    assert!(delays.iter().all(|d| (lo..=hi).contains(d)), "{delays:?}");
    assert!(
        delays.windows(2).any(|w| w[0] > w[1]),
        "later ones overtake: {delays:?}"
    );
}
