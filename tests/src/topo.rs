//! Building blocks of test topologies: hosts on the "IPv4 Internet" and NAT routers with a
//! private LAN behind them, plus the addresses the tests use.
//!
//! The Internet is 198.51.100.0/24 (TEST-NET-2: Miredo and RFC 4380 accept it as global
//! unicast); private addresses only ever appear behind a NAT. Since every topology has its own
//! [`Internet`], these constants are shared by all tests without conflicts.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Context as _, Result};

use crate::netns::{Internet, Netns};
use crate::nft;

/// Prefix length of the Internet segment.
pub const INTERNET_PREFIX_LEN: u8 = 24;
/// The Teredo server's primary address.
pub const SERVER_PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The Teredo server's secondary address (primary + 1, the Miredo/Windows convention).
pub const SERVER_SECONDARY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// A client with a public address (no NAT).
pub const PUBLIC_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The WAN address of the first NAT router.
pub const NAT_WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
/// A NAT router's LAN address (the default gateway of the host behind it).
pub const LAN_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The host behind a NAT router.
pub const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Prefix length of a NAT router's LAN.
pub const LAN_PREFIX_LEN: u8 = 24;

/// A new namespace plugged into `internet` as `eth0` with `addrs` (each /24).
pub fn public_host(
    internet: &Internet,
    test: &str,
    role: &str,
    addrs: &[Ipv4Addr],
) -> Result<Netns> {
    let ns = Netns::new(test, role)?;
    internet.attach(&ns, "eth0")?;
    for addr in addrs {
        ns.add_addr("eth0", &format!("{addr}/{INTERNET_PREFIX_LEN}"))?;
    }
    Ok(ns)
}

/// NAT.md R1: Linux's default NAPT — endpoint-independent mapping, address-and-port-dependent
/// filtering, port-preserving when it can; without a WAN input firewall refused inbound
/// datagrams reserve ports (`testkit::nft`), which the NAT model's `masquerade` preset models.
pub fn masquerade_ruleset(wan: &str, lan: &str) -> String {
    format!(
        "flush ruleset\n\
         table ip nat {{\n\
         \x20 chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   oifname \"{wan}\" ip saddr {lan} masquerade\n\
         \x20 }}\n\
         }}\n"
    )
}

/// A NAT router (`wan0` on the Internet, `lan0` = [`LAN_GATEWAY`]) and one host behind it
/// (`eth0` = [`LAN_HOST`], default route via the router).
#[derive(Debug)]
pub struct NatSite {
    /// The router.
    pub router: Netns,
    /// The host on its LAN.
    pub host: Netns,
}

impl NatSite {
    /// Builds the site with `wan` as the router's public address and loads `ruleset` (nft)
    /// on the router, with IPv4 forwarding on.
    pub fn new(internet: &Internet, test: &str, wan: Ipv4Addr, ruleset: &str) -> Result<Self> {
        let router = Netns::new(test, "nat")?;
        internet.attach(&router, "wan0")?;
        router.add_addr("wan0", &format!("{wan}/{INTERNET_PREFIX_LEN}"))?;
        let host = Netns::new(test, "lan")?;
        router.veth("lan0", &host, "eth0")?;
        router.add_addr("lan0", &format!("{LAN_GATEWAY}/{LAN_PREFIX_LEN}"))?;
        host.add_addr("eth0", &format!("{LAN_HOST}/{LAN_PREFIX_LEN}"))?;
        host.add_route("default", &LAN_GATEWAY.to_string())?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        router.nft(ruleset)?;
        Ok(Self { router, host })
    }

    /// A masquerading (NAT.md R1) site.
    pub fn masquerade(internet: &Internet, test: &str, wan: Ipv4Addr) -> Result<Self> {
        let lan = format!("{LAN_GATEWAY}/{LAN_PREFIX_LEN}");
        Self::new(internet, test, wan, &masquerade_ruleset("wan0", &lan))
    }

    /// The external (mapped) address of the UDP flow `from` → `to` on this router, read from
    /// conntrack's reply tuple; `None` if there is no such flow (yet).
    pub fn udp_mapping(
        &self,
        from: SocketAddrV4,
        to: SocketAddrV4,
    ) -> Result<Option<SocketAddrV4>> {
        conntrack_udp_mapping(&self.router, from, to)
    }
}

/// The mapping a NAT in `ns` gave the UDP flow `from` → `to`: the destination of the
/// conntrack entry's reply tuple (`conntrack -L -p udp --orig-src … `).
pub fn conntrack_udp_mapping(
    ns: &Netns,
    from: SocketAddrV4,
    to: SocketAddrV4,
) -> Result<Option<SocketAddrV4>> {
    let Some(line) = nft::conntrack_udp_entry(ns, from, to)? else {
        return Ok(None);
    };
    // udp 17 29 src=10.0.0.2 dst=198.51.100.1 sport=48681 dport=3544 \
    //     src=198.51.100.1 dst=198.51.100.20 sport=3544 dport=48681 mark=0 use=1
    let values = |key: &str| -> Vec<&str> {
        line.split_whitespace()
            .filter_map(|w| w.strip_prefix(key))
            .collect()
    };
    let (dsts, dports) = (values("dst="), values("dport="));
    let reply_dst: Ipv4Addr = dsts
        .get(1)
        .with_context(|| format!("no reply tuple in {line:?}"))?
        .parse()?;
    let reply_dport: u16 = dports
        .get(1)
        .with_context(|| format!("no reply tuple in {line:?}"))?
        .parse()?;
    Ok(Some(SocketAddrV4::new(reply_dst, reply_dport)))
}
