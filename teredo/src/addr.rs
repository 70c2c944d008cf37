//! Teredo addresses (RFC 4380 §4, RFC 5991 §3.1) and the well-known link-local addresses
//! that clients and servers use while qualifying.
//!
//! A Teredo address carries everything a peer needs to reach a client: the client's server
//! (to send indirect bubbles to) and the client's NAT mapping, obfuscated by inverting every
//! bit so that NATs that rewrite addresses inside payloads leave it alone.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

/// The Teredo UDP port servers listen on (RFC 4380 §2.7).
pub const TEREDO_PORT: u16 = 3544;

/// The first 32 bits of every Teredo address: 2001:0000::/32 (RFC 4380 §2.6).
pub const TEREDO_PREFIX: [u8; 4] = [0x20, 0x01, 0x00, 0x00];

/// The obsolete experimental prefix 3ffe:831f::/32 used by Windows XP before SP2.
pub const TEREDO_PREFIX_OBSOLETE: [u8; 4] = [0x3f, 0xfe, 0x83, 0x1f];

/// Cone flag (RFC 4380 §4): set by a client that found itself behind a cone NAT.
pub const FLAG_CONE: u16 = 0x8000;

/// The 12 flag bits a client fills at random (RFC 5991 §3.1): `|C|z|Random1|U|G|Random2|`.
pub const FLAG_RANDOM_MASK: u16 = 0x3cff;

/// Restricted-NAT router-solicitation source of current Windows (NetDebug, TEREDO.md §4.1).
pub const LL_WINDOWS_RESTRICTED: Ipv6Addr =
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xffff, 0xffff, 0xfffe);
/// Cone router-solicitation source of current Windows.
pub const LL_WINDOWS_CONE: Ipv6Addr =
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0x8000, 0xffff, 0xffff, 0xfffe);
/// Restricted router-solicitation source of Miredo (its "Vista variant").
pub const LL_MIREDO_RESTRICTED: Ipv6Addr =
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xffff, 0xffff, 0xffff);
/// Cone router-solicitation source of Miredo and Windows XP ("TEREDO" in ASCII).
pub const LL_TEREDO_CONE: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x8000, 0x5445, 0x5245, 0x444f);
/// Restricted router-solicitation source of Windows XP.
pub const LL_XP_RESTRICTED: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0x5445, 0x5245, 0x444f);

/// All-routers multicast address, the destination of every router solicitation.
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// The decoded fields of a Teredo address.
///
/// `mapped` is stored in clear; the obfuscation only exists on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TeredoAddr {
    /// The client's Teredo server (bits 32..64), the target of indirect bubbles.
    pub server: Ipv4Addr,
    /// Flags (bits 64..80): the cone bit and RFC 5991 random bits.
    pub flags: u16,
    /// The client's NAT mapping: external IPv4 and UDP port.
    pub mapped: SocketAddrV4,
}

impl TeredoAddr {
    /// Parses a 2001:0::/32 address; `None` for any other prefix.
    pub fn from_ipv6(addr: &Ipv6Addr) -> Option<Self> {
        let o = addr.octets();
        if o[..4] != TEREDO_PREFIX {
            return None;
        }
        Some(Self::from_octets_unchecked(&o))
    }

    /// Decodes the fields without looking at the prefix (link-local identifiers use the same
    /// 64-bit layout in their interface identifier, with the server field unused).
    pub fn from_octets_unchecked(o: &[u8; 16]) -> Self {
        let server = Ipv4Addr::new(o[4], o[5], o[6], o[7]);
        let flags = u16::from_be_bytes([o[8], o[9]]);
        let port = !u16::from_be_bytes([o[10], o[11]]);
        let ip = Ipv4Addr::from(!u32::from_be_bytes([o[12], o[13], o[14], o[15]]));
        Self {
            server,
            flags,
            mapped: SocketAddrV4::new(ip, port),
        }
    }

    /// Builds the IPv6 address under the Teredo prefix.
    pub fn to_ipv6(&self) -> Ipv6Addr {
        self.with_prefix(TEREDO_PREFIX)
    }

    /// Builds the address under an arbitrary 32-bit prefix (the obsolete 3ffe:831f::/32).
    pub fn with_prefix(&self, prefix: [u8; 4]) -> Ipv6Addr {
        let mut o = [0u8; 16];
        o[..4].copy_from_slice(&prefix);
        o[4..8].copy_from_slice(&self.server.octets());
        o[8..10].copy_from_slice(&self.flags.to_be_bytes());
        o[10..12].copy_from_slice(&(!self.mapped.port()).to_be_bytes());
        o[12..16].copy_from_slice(&(!u32::from(*self.mapped.ip())).to_be_bytes());
        Ipv6Addr::from(o)
    }

    /// True when the cone flag is set. RFC 5991 §3.2: peers should ignore it, servers must not.
    pub fn is_cone(&self) -> bool {
        self.flags & FLAG_CONE != 0
    }
}

/// True for any address under 2001:0::/32.
pub fn is_teredo(addr: &Ipv6Addr) -> bool {
    addr.octets()[..4] == TEREDO_PREFIX
}

/// True for fe80::/10.
pub fn is_link_local(addr: &Ipv6Addr) -> bool {
    let o = addr.octets();
    o[0] == 0xfe && o[1] & 0xc0 == 0x80
}

/// True when a link-local RS source carries the cone flag in its interface identifier
/// (bits 64..80, same position as in a Teredo address). This is all a server may look at:
/// clients use many different identifiers (TEREDO.md §4.1).
pub fn link_local_is_cone(addr: &Ipv6Addr) -> bool {
    addr.octets()[8] & 0x80 != 0
}

/// The server's link-local address, fe80::8000:f227:~IPv4 (cone flag, ~3544, ~primary IPv4),
/// used as the source of router advertisements. Windows Vista rejects the un-inverted port.
pub fn server_link_local(primary: Ipv4Addr) -> Ipv6Addr {
    TeredoAddr {
        server: Ipv4Addr::UNSPECIFIED,
        flags: FLAG_CONE,
        mapped: SocketAddrV4::new(primary, TEREDO_PORT),
    }
    .with_prefix([0xfe, 0x80, 0, 0])
}

/// The /64 prefix a server advertises: `2001:0:<primary IPv4>::/64`.
pub fn server_prefix(primary: Ipv4Addr) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o[..4].copy_from_slice(&TEREDO_PREFIX);
    o[4..8].copy_from_slice(&primary.octets());
    Ipv6Addr::from(o)
}

/// RFC 4380 §5.2.4 global-unicast test for an IPv4 address a Teredo node is about to send to.
///
/// Excluded: 0/8, 10/8, 127/8, 169.254/16, 172.16/12, 192.168/16, 192.88.99/24 (6to4 relay
/// anycast), 224/4 and 255.255.255.255. As in Miredo, the documentation ranges (192.0.2/24,
/// 198.51.100/24, 203.0.113/24), 100.64/10 and 240/4 count as global so that labs work, and
/// directed broadcasts are not checked (no subnet is known).
pub fn is_ipv4_global_unicast(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(o[0] == 0
        || o[0] == 10
        || o[0] == 127
        || (o[0] == 169 && o[1] == 254)
        || (o[0] == 172 && o[1] & 0xf0 == 16)
        || (o[0] == 192 && o[1] == 168)
        || (o[0] == 192 && o[1] == 88 && o[2] == 99)
        || o[0] & 0xf0 == 224
        || ip == Ipv4Addr::BROADCAST)
}

/// True for IPv6 destinations a Teredo server or relay must never forward to: unspecified,
/// loopback, link-local, multicast, and IPv4-mapped/compatible forms.
pub fn is_ipv6_non_global(addr: &Ipv6Addr) -> bool {
    addr.is_unspecified()
        || addr.is_loopback()
        || addr.is_multicast()
        || is_link_local(addr)
        || addr.to_ipv4_mapped().is_some()
        // IPv4-compatible ::a.b.c.d (::/96, deprecated by RFC 4291 §2.5.5.1; a kernel may
        // still route it into an automatic IPv4 tunnel).
        || addr.octets()[..12] == [0; 12]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn rfc6081_figure2_addresses() {
        let a = TeredoAddr {
            server: "203.0.113.120".parse().unwrap(),
            flags: 0,
            mapped: sa("192.0.2.1:4096"),
        };
        assert_eq!(
            a.to_ipv6(),
            "2001:0:cb00:7178:0:efff:3fff:fdfe"
                .parse::<Ipv6Addr>()
                .unwrap()
        );
        let b = TeredoAddr {
            server: "198.51.100.118".parse().unwrap(),
            flags: 0,
            mapped: sa("192.0.2.10:8192"),
        };
        assert_eq!(
            b.to_ipv6(),
            "2001:0:c633:6476:0:dfff:3fff:fdf5"
                .parse::<Ipv6Addr>()
                .unwrap()
        );
        assert_eq!(TeredoAddr::from_ipv6(&b.to_ipv6()), Some(b));
    }

    #[test]
    fn legacy_xp_example_decodes() {
        let a = TeredoAddr::from_ipv6(&"2001:0:4136:e378:8000:63bf:3fff:fdd2".parse().unwrap())
            .unwrap();
        assert_eq!(a.server, Ipv4Addr::new(65, 54, 227, 120));
        assert!(a.is_cone());
        assert_eq!(a.mapped, sa("192.0.2.45:40000"));
    }

    #[test]
    fn windows_random_flags_example() {
        let a = TeredoAddr::from_ipv6(&"2001:0:1117:34fa:1027:374b:e1fc:f635".parse().unwrap())
            .unwrap();
        assert!(!a.is_cone());
        assert_eq!(a.flags & !FLAG_RANDOM_MASK, 0);
    }

    #[test]
    fn non_teredo_is_rejected() {
        assert_eq!(TeredoAddr::from_ipv6(&"2001:db8::1".parse().unwrap()), None);
        assert!(!is_teredo(&"2002::1".parse().unwrap()));
    }

    #[test]
    fn server_link_local_matches_miredo() {
        assert_eq!(
            server_link_local(Ipv4Addr::new(192, 0, 2, 1)),
            "fe80::8000:f227:3fff:fdfe".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            server_link_local(Ipv4Addr::new(198, 51, 100, 1)),
            "fe80::8000:f227:39cc:9bfe".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            server_prefix(Ipv4Addr::new(198, 51, 100, 1)),
            "2001:0:c633:6401::".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn cone_bit_of_link_locals() {
        assert!(link_local_is_cone(&LL_WINDOWS_CONE));
        assert!(link_local_is_cone(&LL_TEREDO_CONE));
        assert!(!link_local_is_cone(&LL_WINDOWS_RESTRICTED));
        assert!(!link_local_is_cone(&LL_MIREDO_RESTRICTED));
        assert!(!link_local_is_cone(&LL_XP_RESTRICTED));
    }

    #[test]
    fn global_unicast_table() {
        for bad in [
            "0.1.2.3",
            "10.0.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "192.88.99.1",
            "224.0.0.1",
            "239.1.1.1",
            "255.255.255.255",
        ] {
            assert!(!is_ipv4_global_unicast(bad.parse().unwrap()), "{bad}");
        }
        for good in [
            "192.0.2.10",
            "198.51.100.1",
            "203.0.113.5",
            "8.8.8.8",
            "172.32.0.1",
            "172.15.0.1",
            "100.64.0.1",
            "240.0.0.1",
            "192.88.98.1",
        ] {
            assert!(is_ipv4_global_unicast(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn non_global_ipv6() {
        for bad in [
            "::",
            "::1",
            "fe80::1",
            "ff02::2",
            "ff0e::1",
            "::ffff:1.2.3.4",
        ] {
            assert!(is_ipv6_non_global(&bad.parse().unwrap()), "{bad}");
        }
        assert!(!is_ipv6_non_global(&"2001:db8::99".parse().unwrap()));
        assert!(!is_ipv6_non_global(&"::1:0:0:0:1".parse().unwrap()));
    }

    /// Regression: the doc promised "IPv4-mapped/compatible forms" but only the mapped form
    /// (::ffff:0:0/96) was checked; the IPv4-compatible form ::a.b.c.d passed as global.
    #[test]
    fn ipv4_compatible_is_non_global() {
        for bad in ["::1.2.3.4", "::198.51.100.1", "::0.0.0.2"] {
            assert!(is_ipv6_non_global(&bad.parse().unwrap()), "{bad}");
        }
    }

    fn arb_teredo_addr() -> impl Strategy<Value = TeredoAddr> {
        (any::<u32>(), any::<u16>(), any::<u32>(), any::<u16>()).prop_map(
            |(server, flags, ip, port)| TeredoAddr {
                server: Ipv4Addr::from(server),
                flags,
                mapped: SocketAddrV4::new(Ipv4Addr::from(ip), port),
            },
        )
    }

    proptest! {
        #[test]
        fn teredo_addr_round_trip(x in arb_teredo_addr()) {
            let v6 = x.to_ipv6();
            prop_assert!(is_teredo(&v6));
            prop_assert_eq!(TeredoAddr::from_ipv6(&v6), Some(x));
            prop_assert_eq!(x.is_cone(), x.flags & FLAG_CONE != 0);
        }

        #[test]
        fn any_prefix_round_trips_unchecked(x in arb_teredo_addr(), prefix in any::<[u8; 4]>()) {
            let v6 = x.with_prefix(prefix);
            prop_assert_eq!(&v6.octets()[..4], &prefix[..]);
            prop_assert_eq!(TeredoAddr::from_octets_unchecked(&v6.octets()), x);
            prop_assert_eq!(TeredoAddr::from_ipv6(&v6).is_some(), prefix == TEREDO_PREFIX);
        }

        #[test]
        fn from_ipv6_inverts_to_ipv6(o in any::<[u8; 16]>()) {
            let a = Ipv6Addr::from(o);
            if let Some(t) = TeredoAddr::from_ipv6(&a) {
                prop_assert_eq!(t.to_ipv6(), a);
            } else {
                prop_assert!(!is_teredo(&a));
            }
        }
    }
}
