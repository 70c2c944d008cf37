//! Property tests of the server: the structured strategy over every field a datagram has,
//! the invariants every (input, result, output) triple must satisfy, and proof that the
//! strategy reaches every branch.

use super::*;

fn arb_local() -> impl Strategy<Value = Local> {
    prop_oneof![Just(Local::Primary), Just(Local::Secondary)]
}

/// Global addresses from the documentation ranges, with any port.
fn arb_global_sa() -> impl Strategy<Value = SocketAddrV4> {
    (
        prop_oneof![Just([192, 0, 2]), Just([198, 51, 100]), Just([203, 0, 113])],
        any::<u8>(),
        any::<u16>(),
    )
        .prop_map(|(n, h, port)| SocketAddrV4::new(Ipv4Addr::new(n[0], n[1], n[2], h), port))
}

fn arb_any_sa() -> impl Strategy<Value = SocketAddrV4> {
    (any::<u32>(), any::<u16>()).prop_map(|(ip, port)| SocketAddrV4::new(ip.into(), port))
}

fn arb_non_global_sa() -> impl Strategy<Value = SocketAddrV4> {
    (
        prop_oneof![
            Just([0, 1, 2, 3]),
            Just([10, 0, 0, 1]),
            Just([127, 0, 0, 1]),
            Just([169, 254, 9, 9]),
            Just([172, 20, 0, 1]),
            Just([192, 168, 1, 5]),
            Just([192, 88, 99, 1]),
            Just([224, 0, 0, 1]),
            Just([255, 255, 255, 255]),
        ],
        any::<u16>(),
    )
        .prop_map(|(o, port)| SocketAddrV4::new(o.into(), port))
}

/// Where a datagram comes from: mostly global clients, sometimes anything, non-global
/// sources, or the server itself.
fn arb_from() -> impl Strategy<Value = SocketAddrV4> {
    prop_oneof![
        16 => arb_global_sa(),
        2 => arb_any_sa(),
        2 => arb_non_global_sa(),
        1 => Just(SocketAddrV4::new(P, TEREDO_PORT)),
        1 => Just(SocketAddrV4::new(S, TEREDO_PORT)),
        1 => Just(SocketAddrV4::new(P, TEREDO_PORT + 1)),
    ]
}

fn arb_config() -> impl Strategy<Value = ServerConfig> {
    (
        prop_oneof![3 => Just(Some(1280)), 1 => Just(None), 1 => any::<u32>().prop_map(Some)],
        prop_oneof![3 => Just(1240usize), 1 => Just(88), 1 => 0usize..2000],
        prop_oneof![4 => Just(true), 1 => Just(false)],
        prop_oneof![4 => Just(TEREDO_PORT), 1 => Just(TEREDO_PORT + 1)],
    )
        .prop_map(|(mtu, max_icmpv6_payload, native, port)| ServerConfig {
            mtu,
            max_icmpv6_payload,
            native,
            port,
            ..ServerConfig::new(P)
        })
}

/// The ICMPv6/other payload of a structured datagram.
#[derive(Clone, Debug)]
enum Payload {
    Empty,
    Rs { slla: bool },
    Echo { reply: bool, data: Vec<u8> },
    Random(Vec<u8>),
    Big(usize),
}

fn arb_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        3 => Just(Payload::Empty),
        3 => any::<bool>().prop_map(|slla| Payload::Rs { slla }),
        3 => (any::<bool>(), vec(any::<u8>(), 0..64))
            .prop_map(|(reply, data)| Payload::Echo { reply, data }),
        2 => vec(any::<u8>(), 0..64).prop_map(Payload::Random),
        1 => (1200usize..1300).prop_map(Payload::Big),
    ]
}

/// Client ID, authentication value, nonce, confirmation.
type OwnedAuth = (Vec<u8>, Vec<u8>, [u8; 8], u8);

/// A mostly-valid Teredo datagram with random fields, resolved against `from` so that
/// valid Teredo sources (and therefore the deeper branches) come up often.
#[derive(Clone, Debug)]
struct Spec {
    local: Local,
    from: SocketAddrV4,
    auth: Option<OwnedAuth>,
    origin: Option<SocketAddrV4>,
    version: u8,
    tc_flow: u32,
    plen: Option<u16>,
    nh: Option<u8>,
    hop: u8,
    src: (u8, [u8; 16], u16),
    dst: (u8, [u8; 16], u16, SocketAddrV4),
    payload: Payload,
    fix_checksum: bool,
    trailers: Vec<u8>,
    /// Put the origin indication before the auth header (wrong order).
    oi_first: bool,
    /// Cut the datagram to this fraction (per mille) of its length.
    cut: Option<u16>,
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    let auth = proptest::option::weighted(
        0.4,
        (
            prop_oneof![3 => Just(vec![]), 1 => vec(any::<u8>(), 0..20)],
            prop_oneof![3 => Just(vec![]), 1 => vec(any::<u8>(), 0..20)],
            any::<[u8; 8]>(),
            any::<u8>(),
        ),
    );
    let header = (
        prop_oneof![20 => Just(6u8), 1 => 0u8..16],
        any::<u32>(),
        proptest::option::weighted(0.05, any::<u16>()),
        proptest::option::weighted(0.1, prop_oneof![Just(17u8), Just(6), any::<u8>()]),
        prop_oneof![3 => Just(255u8), 1 => Just(0), 1 => any::<u8>()],
    );
    let addrs = (
        (0u8..9, any::<[u8; 16]>(), any::<u16>()),
        (
            // Mostly ff02::2, this server's clients and native hosts.
            prop_oneof![4 => Just(0u8), 4 => Just(2), 2 => Just(5), 3 => Just(7), 4 => 0u8..14],
            any::<[u8; 16]>(),
            any::<u16>(),
            prop_oneof![3 => arb_global_sa(), 1 => arb_any_sa()],
        ),
    );
    let rest = (
        arb_payload(),
        prop_oneof![4 => Just(true), 1 => Just(false)],
        prop_oneof![
            3 => Just(vec![]),
            1 => Just(NONCE_TRAILER.to_vec()),
            1 => Just(vec![0x41, 0]), // unknown, "discard if not understood"
            1 => vec(any::<u8>(), 0..16),
        ],
        prop_oneof![9 => Just(false), 1 => Just(true)],
        proptest::option::weighted(0.05, 0u16..1000),
    );
    (
        arb_local(),
        arb_from(),
        auth,
        proptest::option::weighted(0.05, arb_any_sa()),
        header,
        addrs,
        rest,
    )
        .prop_map(
            |(
                local,
                from,
                auth,
                origin,
                (version, tc_flow, plen, nh, hop),
                (src, dst),
                (payload, fix_checksum, trailers, oi_first, cut),
            )| Spec {
                local,
                from,
                auth,
                origin,
                version,
                tc_flow,
                plen,
                nh,
                hop,
                src,
                dst,
                payload,
                fix_checksum,
                trailers,
                oi_first,
                cut,
            },
        )
}

fn with_prefix_bits(mut o: [u8; 16], prefix: &[u8]) -> Ipv6Addr {
    o[..prefix.len()].copy_from_slice(prefix);
    Ipv6Addr::from(o)
}

impl Spec {
    fn src(&self) -> Ipv6Addr {
        let (kind, rnd, flags) = self.src;
        let server = Ipv4Addr::new(rnd[0], rnd[1], rnd[2], rnd[3]);
        match kind {
            0 => LLR,
            1 => LLC,
            2 => LL_TEREDO_CONE,
            3 => with_prefix_bits(rnd, &[0xfe, 0x80, 0, 0, 0, 0, 0, 0]),
            4 => teredo(if rnd[4] & 1 == 0 { P } else { server }, flags, self.from),
            5 => teredo(
                P,
                flags,
                SocketAddrV4::new(*self.from.ip(), self.from.port().wrapping_add(1)),
            ),
            6 => with_prefix_bits(rnd, &[0x20, 0x01, 0, 0]),
            7 => "2001:db8::1".parse().unwrap(),
            _ => Ipv6Addr::from(rnd),
        }
    }

    fn dst(&self) -> Ipv6Addr {
        let (kind, rnd, flags, peer) = self.dst;
        let foreign = Ipv4Addr::new(rnd[0], rnd[1], rnd[2], rnd[3]);
        match kind {
            0 => ALL_ROUTERS,
            1 => server_link_local(P),
            2 => teredo(P, flags, peer),
            3 => teredo(P, flags, SocketAddrV4::new(P, TEREDO_PORT)),
            4 => teredo(P, flags, SocketAddrV4::new(S, TEREDO_PORT)),
            5 => teredo(foreign, flags, peer),
            6 => teredo(
                P,
                flags,
                SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), peer.port()),
            ),
            7 => NATIVE,
            8 => "fe80::1".parse().unwrap(),
            9 => "ff02::1".parse().unwrap(),
            10 => Ipv6Addr::LOCALHOST,
            11 => Ipv6Addr::UNSPECIFIED,
            12 => Ipv4Addr::new(rnd[0], rnd[1], rnd[2], rnd[3]).to_ipv6_mapped(),
            _ => Ipv6Addr::from(rnd),
        }
    }

    fn datagram(&self) -> Vec<u8> {
        let mut d = Vec::new();
        if let (Some(o), true) = (self.origin, self.oi_first) {
            d.extend_from_slice(&oi(o));
        }
        if let Some((id, au, nonce, conf)) = &self.auth {
            let a = Auth {
                client_id: id,
                auth_value: au,
                nonce: *nonce,
                confirmation: *conf,
            };
            let at = d.len();
            d.resize(at + a.buffer_len(), 0);
            a.emit(&mut d[at..]).unwrap();
        }
        if let (Some(o), false) = (self.origin, self.oi_first) {
            d.extend_from_slice(&oi(o));
        }
        let (payload, auto_nh) = match &self.payload {
            Payload::Empty => (vec![], NEXT_HEADER_NONE),
            Payload::Rs { slla } => {
                let mut p = vec![0u8; if *slla { 24 } else { 8 }];
                p[0] = 133;
                if *slla {
                    p[8..10].copy_from_slice(&[1, 2]);
                }
                (p, NEXT_HEADER_ICMPV6)
            }
            Payload::Echo { reply, data } => {
                let mut p = vec![if *reply { 129 } else { 128 }, 0, 0, 0, 0, 1, 0, 1];
                p.extend_from_slice(data);
                (p, NEXT_HEADER_ICMPV6)
            }
            Payload::Random(p) => (p.clone(), NEXT_HEADER_ICMPV6),
            Payload::Big(n) => {
                let mut p = vec![0u8; *n];
                p[0] = 128;
                (p, NEXT_HEADER_ICMPV6)
            }
        };
        let nh = self.nh.unwrap_or(auto_nh);
        let mut ip = vec![0u8; 40];
        emit_ipv6_header(&mut ip, self.src(), self.dst(), nh, self.hop, payload.len()).unwrap();
        let first = (u32::from(self.version) << 28) | (self.tc_flow & 0x0fff_ffff);
        ip[..4].copy_from_slice(&first.to_be_bytes());
        if let Some(plen) = self.plen {
            ip[4..6].copy_from_slice(&plen.to_be_bytes());
        }
        ip.extend_from_slice(&payload);
        if self.fix_checksum && nh == NEXT_HEADER_ICMPV6 && ip.len() >= 44 {
            finish_icmpv6(&mut ip);
        }
        d.extend_from_slice(&ip);
        d.extend_from_slice(&self.trailers);
        if let Some(per_mille) = self.cut {
            d.truncate(d.len() * usize::from(per_mille) / 1000);
        }
        d
    }
}

/// The invariants every (input, result, output) triple must satisfy.
fn check_invariants(
    cfg: &ServerConfig,
    local: Local,
    from: SocketAddrV4,
    data: &[u8],
    (r, out): &Outcome,
) -> Result<(), TestCaseError> {
    let own = |sa: &SocketAddrV4| {
        sa.port() == cfg.port && (*sa.ip() == cfg.primary || *sa.ip() == cfg.secondary)
    };
    if own(&from) {
        prop_assert_eq!(r, &Err(DropReason::Loop));
    }
    if !is_ipv4_global_unicast(*from.ip()) {
        prop_assert!(r.is_err());
    }
    prop_assert_eq!(r.is_ok(), out.is_some(), "Ok iff an output: {:?}", out);
    let (Ok(handled), Some((o, bytes))) = (r, out) else {
        return Ok(());
    };
    prop_assert!(bytes.len() <= MAX_UDP_PAYLOAD, "{} bytes", bytes.len());
    let input = TeredoPacket::parse_keeping_trailers(data).expect("accepted input is well formed");
    if !matches!(handled, Handled::ForwardedToClient { .. }) {
        // Only a client gets trailers the server could not judge (RFC 6081 §5.1.2).
        prop_assert!(Trailers::validate(input.trailers).is_ok());
    }
    prop_assert!(input.origin.is_none());
    match (*handled, *o) {
        (
            Handled::RouterSolicitation { cone, reply_from },
            Output::Udp {
                local: from_local,
                to,
                kind,
                ..
            },
        ) => {
            prop_assert_eq!(kind, Kind::RouterAdvertisement);
            prop_assert_eq!(to, from, "an RA goes back to the RS's source");
            prop_assert_eq!(from_local, reply_from);
            prop_assert_eq!(reply_from, if cone { local.other() } else { local });
            let p = TeredoPacket::parse(bytes).unwrap();
            prop_assert_eq!(p.origin, Some(OriginIndication(from)));
            prop_assert_eq!(
                p.auth,
                input.auth.map(|a| Auth {
                    confirmation: 0,
                    ..a
                })
            );
            let ra = RouterAdvertisement::parse(p.ipv6).unwrap();
            prop_assert_eq!(ra.prefix, (server_prefix(cfg.primary), 64));
            prop_assert_eq!(ra.src, server_link_local(cfg.primary));
            prop_assert_eq!(ra.dst, input.src());
            prop_assert_eq!(ra.mtu, cfg.mtu);
        }
        (
            Handled::ForwardedToClient {
                bubble,
                with_origin,
            },
            Output::Udp {
                local: from_local,
                to,
                kind,
                ..
            },
        ) => {
            prop_assert_eq!(from_local, Local::Primary);
            prop_assert_eq!(kind, if bubble { Kind::Bubble } else { Kind::Icmpv6 });
            prop_assert!(is_ipv4_global_unicast(*to.ip()), "to {}", to);
            prop_assert!(!own(&to), "to {}", to);
            let d = TeredoAddr::from_ipv6(&input.dst()).expect("Teredo destination");
            prop_assert_eq!(to, d.mapped);
            prop_assert_eq!(with_origin, d.server == cfg.primary);
            prop_assert_eq!(bubble, input.is_bubble());
            match TeredoAddr::from_ipv6(&input.src()) {
                Some(s) => prop_assert_eq!(s.mapped, from),
                None => prop_assert!(with_origin),
            }
            if !bubble {
                prop_assert_eq!(input.next_header(), NEXT_HEADER_ICMPV6);
                prop_assert!(input.ipv6_payload().len() <= cfg.max_icmpv6_payload);
            }
            let relayed = input.ipv6_and_trailers(data);
            if with_origin {
                prop_assert_eq!(&bytes[..8], &oi(from)[..]);
                prop_assert_eq!(&bytes[8..], relayed);
            } else {
                prop_assert_eq!(&bytes[..], relayed);
            }
        }
        (Handled::ForwardedNative { bubble }, Output::Ipv6 { kind, .. }) => {
            prop_assert!(cfg.native);
            prop_assert_eq!(kind, if bubble { Kind::Bubble } else { Kind::Icmpv6 });
            prop_assert_eq!(bubble, input.is_bubble());
            prop_assert_eq!(&bytes[..], input.ipv6);
            let dst = input.dst();
            prop_assert!(!is_ipv6_non_global(&dst) && !is_teredo(&dst), "{}", dst);
            let s = TeredoAddr::from_ipv6(&input.src()).expect("Teredo source");
            prop_assert_eq!(s.mapped, from);
        }
        (h, o) => prop_assert!(false, "{:?} produced {:?}", h, o),
    }
    Ok(())
}

/// A label for the coverage tally.
fn label(r: &Result<Handled, DropReason>) -> String {
    match r {
        Ok(Handled::RouterSolicitation { cone, .. }) => format!("rs cone={cone}"),
        Ok(Handled::ForwardedToClient {
            bubble,
            with_origin,
        }) => format!("client bubble={bubble} oi={with_origin}"),
        Ok(Handled::ForwardedNative { bubble }) => format!("native bubble={bubble}"),
        Err(e) => e.as_str().to_owned(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_datagrams_never_panic(
        local in arb_local(),
        from in arb_any_sa(),
        data in prop_oneof![4 => vec(any::<u8>(), 0..128), 1 => vec(any::<u8>(), 0..2000)],
    ) {
        let cfg = ServerConfig::new(P);
        let mut s = Server::new(cfg);
        let outcome = run(&mut s, local, from, &data);
        check_invariants(&cfg, local, from, &data, &outcome)?;
    }

    /// Arbitrary bytes after a valid auth header, or after a valid IPv6 header.
    #[test]
    fn arbitrary_tails_never_panic(
        local in arb_local(),
        from in arb_from(),
        nonce in any::<[u8; 8]>(),
        header in any::<[u8; 40]>(),
        tail in vec(any::<u8>(), 0..200),
    ) {
        let cfg = ServerConfig::new(P);
        let mut s = Server::new(cfg);
        let mut auth = [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        auth[4..12].copy_from_slice(&nonce);
        let mut h = header;
        h[0] = 0x60 | (h[0] & 0x0f);
        for data in [cat(&[&auth, &tail]), cat(&[&auth, &h, &tail]), cat(&[&h, &tail])] {
            let outcome = run(&mut s, local, from, &data);
            check_invariants(&cfg, local, from, &data, &outcome)?;
        }
    }

    /// Structured fuzz: sequences of mostly-valid datagrams on one server.
    #[test]
    fn structured_fuzz(cfg in arb_config(), specs in vec(arb_spec(), 1..6)) {
        let mut s = Server::new(cfg);
        for spec in &specs {
            let data = spec.datagram();
            let outcome = run(&mut s, spec.local, spec.from, &data);
            check_invariants(&cfg, spec.local, spec.from, &data, &outcome)?;
        }
    }
}

/// The structured strategy really reaches every branch of the server.
#[test]
fn structured_fuzz_covers_the_server() {
    let mut runner = TestRunner::deterministic();
    let strategy = (arb_config(), arb_spec());
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..5_000 {
        let (cfg, spec) = strategy.new_tree(&mut runner).unwrap().current();
        let mut s = Server::new(cfg);
        let data = spec.datagram();
        let outcome = run(&mut s, spec.local, spec.from, &data);
        check_invariants(&cfg, spec.local, spec.from, &data, &outcome).unwrap();
        *tally.entry(label(&outcome.0)).or_default() += 1;
    }
    let want = [
        "rs cone=false",
        "rs cone=true",
        "client bubble=true oi=true",
        "client bubble=true oi=false",
        "client bubble=false oi=true",
        "client bubble=false oi=false",
        "native bubble=true",
        "native bubble=false",
    ];
    let reasons = [
        DropReason::Truncated,
        DropReason::BadIpVersion,
        DropReason::BadLength,
        DropReason::BadEncapsulation,
        DropReason::MandatoryTrailer,
        DropReason::BadChecksum,
        DropReason::Malformed,
        DropReason::NonGlobalSource,
        DropReason::Loop,
        DropReason::UnexpectedOrigin,
        DropReason::NotBubbleOrIcmpv6,
        DropReason::TooLarge,
        DropReason::SpoofedSource,
        DropReason::NotAllowed,
        DropReason::NonGlobalDestination,
        DropReason::NonGlobalMappedAddress,
        DropReason::NativeDisabled,
        DropReason::NotForUs,
    ];
    let missing: Vec<&str> = want
        .iter()
        .copied()
        .chain(reasons.iter().map(|r| r.as_str()))
        .filter(|l| !tally.contains_key(*l))
        .collect();
    assert!(missing.is_empty(), "never reached: {missing:?}\n{tally:#?}");
}

/// `--rs-rate-limit`: per source address, well-formed RSs only, other sources and other
/// traffic untouched, tokens back with time; off by default.
#[test]
fn rs_rate_limit_per_source() {
    use std::time::Duration;
    let t0 = now();
    let mut s = Server::new(ServerConfig {
        rs_rate_limit: 2,
        rs_rate_key: 99,
        ..ServerConfig::new(P)
    });
    let good = rs(None, LL_WINDOWS_RESTRICTED, false);
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD];
    let mut feed = |s: &mut Server, t: Instant, from: SocketAddrV4, d: &[u8]| {
        let r = s.handle_udp(t, Local::Primary, from, d);
        let out = s.poll_output(&mut buf);
        assert_eq!(r.is_ok(), out.is_some());
        r
    };
    // A burst of 2, then dropped, from the same address whatever the port.
    for port in [40000, 40001] {
        let from = SocketAddrV4::new(*a().ip(), port);
        assert!(feed(&mut s, t0, from, &good).is_ok());
    }
    assert_eq!(feed(&mut s, t0, a(), &good), Err(DropReason::RateLimited));
    // Malformed RSs are dropped for what they are and take no token.
    let mut bad = good.clone();
    bad[42] ^= 0xff;
    assert_eq!(feed(&mut s, t0, a(), &bad), Err(DropReason::BadChecksum));
    // Another source is not affected (its own bucket, almost surely: 65536 of them).
    assert!(feed(&mut s, t0, b(), &good).is_ok());
    // Relaying is not limited: a bubble from A to B still goes through.
    let bubble_ab = {
        let mut v = vec![0u8; 40];
        emit_bubble(&mut v, ours(a()), ours(b()), 255).unwrap();
        v
    };
    assert!(feed(&mut s, t0, a(), &bubble_ab).is_ok());
    // Half a second later one token is back (2 per second).
    let t1 = t0 + Duration::from_millis(500);
    assert!(feed(&mut s, t1, a(), &good).is_ok());
    assert_eq!(feed(&mut s, t1, a(), &good), Err(DropReason::RateLimited));

    // Off by default: a hundred RSs from one source, a hundred RAs.
    let mut free = server();
    for _ in 0..100 {
        assert!(feed(&mut free, t0, a(), &good).is_ok());
    }
}
