//! Timers, filter permits, hairpinning, loss and delay, the table cap, reboots and
//! degenerate configs.

use super::*;

#[test]
fn mapping_expires_after_the_timeout() {
    let t0 = Instant::now();
    let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.10:3544"));
    let mut nat = nat_with(|_| {});
    let m = fwd(nat.outbound(t0, x, server));
    assert_eq!(nat.poll_timeout(), Some(t0 + secs(120)));
    assert_eq!(nat.inbound(t0 + secs(119), m, server).unwrap().internal, x);
    assert_eq!(
        nat.inbound(t0 + secs(120), m, server),
        Err(NatDrop::NoMapping)
    );
    assert_eq!(nat.mappings(), 0);
    assert_eq!(nat.poll_timeout(), None);
    let c = nat.counters();
    assert_eq!((c.mappings_expired, c.inbound_no_mapping), (1, 1));
}

#[test]
fn outbound_refreshes_and_expire_removes() {
    let t0 = Instant::now();
    let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.10:3544"));
    let mut nat = nat_with(|_| {});
    let m = fwd(nat.outbound(t0, x, server));
    assert_eq!(fwd(nat.outbound(t0 + secs(100), x, server)), m);
    assert_eq!(nat.poll_timeout(), Some(t0 + secs(220)));
    assert!(nat.inbound(t0 + secs(219), m, server).is_ok());
    nat.expire(t0 + secs(219));
    assert_eq!(nat.mappings(), 1);
    nat.expire(t0 + secs(220));
    assert_eq!(nat.mappings(), 0);
    assert_eq!(nat.mapping_for(x, server), None);
    assert_eq!(nat.counters().mappings_expired, 1);
}

#[test]
fn inbound_refreshes_only_when_configured() {
    let t0 = Instant::now();
    let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.10:3544"));
    for inbound_refresh in [false, true] {
        let mut nat = nat_with(|c| c.inbound_refresh = inbound_refresh);
        let m = fwd(nat.outbound(t0, x, server));
        assert!(nat.inbound(t0 + secs(100), m, server).is_ok());
        let later = nat.inbound(t0 + secs(121), m, server);
        if inbound_refresh {
            assert!(later.is_ok());
            assert_eq!(nat.poll_timeout(), Some(t0 + secs(241)));
        } else {
            assert_eq!(later, Err(NatDrop::NoMapping));
        }
    }
}

#[test]
fn filter_permits_lapse_per_remote() {
    let t0 = Instant::now();
    let x = ep("10.0.0.2:5000");
    let (peer, server) = (ep("198.51.100.20:4000"), ep("198.51.100.10:3544"));
    let mut nat = nat_with(|_| {});
    let m = fwd(nat.outbound(t0, x, peer));
    fwd(nat.outbound(t0 + secs(60), x, server));
    fwd(nat.outbound(t0 + secs(120), x, server));
    // The mapping lives on thanks to the server keep-alives, but the hole towards the
    // peer was last used at t0.
    assert!(nat.inbound(t0 + secs(150), m, server).is_ok());
    assert_eq!(nat.inbound(t0 + secs(150), m, peer), Err(NatDrop::Filtered));
}

#[test]
fn remotes_per_mapping_are_bounded_lru() {
    let now = Instant::now();
    let x = ep("10.0.0.2:5000");
    let remote = |i: u16| SocketAddrV4::new(ip("198.51.100.1"), 1000 + i);
    let mut nat = nat_with(|_| {});
    let m = fwd(nat.outbound(now, x, remote(0)));
    for i in 1..MAX_REMOTES_PER_MAPPING as u16 {
        fwd(nat.outbound(now, x, remote(i)));
    }
    // Touch remote 0 again, then one more remote evicts the least recently used: remote 1.
    fwd(nat.outbound(now, x, remote(0)));
    fwd(nat.outbound(now, x, remote(MAX_REMOTES_PER_MAPPING as u16)));
    assert!(nat.inbound(now, m, remote(0)).is_ok());
    assert_eq!(nat.inbound(now, m, remote(1)), Err(NatDrop::Filtered));
    assert!(nat.inbound(now, m, remote(2)).is_ok());
    assert!(nat
        .inbound(now, m, remote(MAX_REMOTES_PER_MAPPING as u16))
        .is_ok());
    assert_eq!(
        nat.table.get(m).unwrap().permits.len(),
        MAX_REMOTES_PER_MAPPING
    );
}

#[test]
fn hairpinning_uses_the_external_source_and_filters() {
    let now = Instant::now();
    let (a, b, server) = (
        ep("10.0.0.2:4000"),
        ep("10.0.0.3:5000"),
        ep("198.51.100.10:3544"),
    );
    let mut nat = nat_with(|_| {});
    let a_ext = fwd(nat.outbound(now, a, server));
    let b_ext = fwd(nat.outbound(now, b, server));
    // Port-restricted: A has not sent to B's mapping yet, so B's datagram is filtered at
    // A's mapping — but it opened B's mapping towards A's.
    assert_eq!(nat.outbound(now, b, a_ext), Err(NatDrop::Filtered));
    let expected = Hairpin {
        from: a_ext,
        to: b,
        delay: Duration::ZERO,
    };
    assert_eq!(nat.outbound(now, a, b_ext), Ok(Outbound::Hairpin(expected)));
    let back = nat.outbound(now, b, a_ext).unwrap();
    assert_eq!(
        back,
        Outbound::Hairpin(Hairpin {
            from: b_ext,
            to: a,
            delay: Duration::ZERO
        })
    );
    assert_eq!(
        nat.outbound(now, a, ep("203.0.113.1:9")),
        Err(NatDrop::NoMapping)
    );
    let c = nat.counters();
    assert_eq!(
        (c.hairpinned, c.inbound_filtered, c.inbound_no_mapping),
        (2, 1, 1)
    );
    assert_eq!(c.outbound_translated, 2);

    // Full cone: straight through.
    let mut nat = preset_nat(NatPreset::FullCone);
    let a_ext = fwd(nat.outbound(now, a, server));
    let b_ext = fwd(nat.outbound(now, b, server));
    assert!(matches!(
        nat.outbound(now, b, a_ext),
        Ok(Outbound::Hairpin(Hairpin { from, to, .. })) if from == b_ext && to == a
    ));
}

#[test]
fn hairpinning_off_drops_without_a_mapping() {
    let now = Instant::now();
    let (a, b, server) = (
        ep("10.0.0.2:4000"),
        ep("10.0.0.3:5000"),
        ep("198.51.100.10:3544"),
    );
    let mut nat = nat_with(|c| c.hairpinning = false);
    fwd(nat.outbound(now, a, server));
    let b_ext = fwd(nat.outbound(now, b, server));
    assert_eq!(nat.outbound(now, a, b_ext), Err(NatDrop::HairpinOff));
    assert_eq!(nat.counters().hairpin_off, 1);
    assert_eq!(nat.counters().dropped(NatDrop::HairpinOff), 1);
    assert_eq!(nat.mappings(), 2);
}

#[test]
fn loss_rate_is_roughly_as_configured_and_reproducible() {
    let now = Instant::now();
    let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.10:3544"));
    let run = || {
        let mut nat = nat_with(|c| {
            c.loss = 0.1;
            c.filtering = F::EndpointIndependent;
        });
        let mut results = Vec::new();
        for _ in 0..10_000 {
            results.push(nat.outbound(now, x, server).err());
        }
        let m = nat.mapping_for(x, server).unwrap();
        for _ in 0..10_000 {
            results.push(nat.inbound(now, m, server).err());
        }
        (results, nat.counters().clone())
    };
    let (results, counters) = run();
    let lost_out = results[..10_000].iter().filter(|r| r.is_some()).count();
    let lost_in = results[10_000..].iter().filter(|r| r.is_some()).count();
    assert!(results.iter().flatten().all(|r| *r == NatDrop::Lost));
    // Binomial(10 000, 0.1): σ = 30, so ±100 is more than 3σ.
    assert!((900..=1100).contains(&lost_out), "{lost_out}");
    assert!((900..=1100).contains(&lost_in), "{lost_in}");
    assert_eq!(counters.lost, (lost_out + lost_in) as u64);
    assert_eq!(counters.outbound_translated, 10_000 - lost_out as u64);
    assert_eq!(counters.inbound_translated, 10_000 - lost_in as u64);
    assert_eq!(run(), (results, counters), "same seed, same losses");

    let mut nat = nat_with(|c| c.loss = 1.0);
    assert_eq!(nat.outbound(now, x, server), Err(NatDrop::Lost));
    assert_eq!(nat.mappings(), 1, "a lost outbound datagram still maps");
}

#[test]
fn delay_is_reported() {
    let now = Instant::now();
    let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.10:3544"));
    let mut nat = nat_with(|c| c.delay = Duration::from_millis(50));
    let out = nat.outbound(now, x, server).unwrap();
    assert_eq!(out.delay(), Duration::from_millis(50));
    let m = fwd(Ok(out));
    assert_eq!(
        nat.inbound(now, m, server).unwrap().delay,
        Duration::from_millis(50)
    );
}

#[test]
fn table_cap_is_a_counted_drop() {
    let t0 = Instant::now();
    let server = ep("198.51.100.10:3544");
    let host = |i: u8| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 5000);
    let mut nat = nat_with(|c| c.max_mappings = 3);
    for i in 1..=3 {
        fwd(nat.outbound(t0, host(i), server));
    }
    assert_eq!(nat.outbound(t0, host(4), server), Err(NatDrop::TableFull));
    assert_eq!(nat.counters().table_full, 1);
    assert_eq!(nat.mappings(), 3);
    // Existing mappings keep working.
    fwd(nat.outbound(t0 + secs(1), host(1), server));
    // Once the others expire there is room again.
    fwd(nat.outbound(t0 + secs(120), host(4), server));
    assert_eq!(nat.mappings(), 2);
    assert_eq!(nat.counters().mappings_expired, 2);
}

#[test]
fn reboot_forgets_everything() {
    let t0 = Instant::now();
    let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.10:3544"));
    let mut nat = nat_with(|c| c.ports = PortAllocation::Sequential);
    let m = fwd(nat.outbound(t0, x, server));
    fwd(nat.outbound(t0, ep("10.0.0.3:5000"), server));
    nat.reboot();
    assert_eq!(nat.mappings(), 0);
    assert_eq!(nat.poll_timeout(), None);
    assert_eq!(nat.mapping_for(x, server), None);
    assert_eq!(nat.inbound(t0, m, server), Err(NatDrop::NoMapping));
    // Sequential allocation restarts at the base: the same port again.
    assert_eq!(fwd(nat.outbound(t0, x, server)), m);
    let c = nat.counters();
    assert_eq!(
        (c.mappings_created, c.mappings_flushed, c.reboots),
        (3, 2, 1)
    );
}

#[test]
fn new_copes_with_degenerate_configs() {
    let now = Instant::now();
    let (x, server) = (ep("10.0.0.2:5000"), ep("198.51.100.10:3544"));
    let mut nat = Nat::new(NatConfig::new(Vec::new(), 0));
    assert_eq!(nat.outbound(now, x, server), Err(NatDrop::NoPort));
    let mut nat = Nat::new(NatConfig {
        port_range: 0..=0,
        ..NatConfig::default()
    });
    assert_eq!(nat.outbound(now, x, server), Err(NatDrop::NoPort));
    let mut nat = Nat::new(NatConfig {
        timeout: Duration::MAX,
        loss: f64::NAN,
        ..NatConfig::default()
    });
    let m = fwd(nat.outbound(now, x, server));
    assert_eq!(
        nat.poll_timeout(),
        None,
        "a timeout beyond Instant never expires"
    );
    assert!(nat.inbound(now + secs(1_000_000), m, server).is_ok());
    assert!(Nat::try_new(NatConfig::new(Vec::new(), 0)).is_err());
}
