//! Kernel NAT kinds for a NAT router namespace: the nftables recipes of NAT.md §9 (R1, R3, R4,
//! R5) as rulesets for the router's WAN and LAN interfaces (load one with [`Netns::nft`]).
//!
//! [`Netns::nft`]: crate::netns::Netns::nft
//!
//! # A Linux trap: unsolicited inbound datagrams reserve the external port
//! A UDP datagram that reaches a Linux router from outside and matches no flow still gets a
//! conntrack entry when it is delivered locally (the router's own WAN address, no socket:
//! `[UNREPLIED] src=<remote> dst=<wan> sport=… dport=<port>`, confirmed in the INPUT hook, 30 s
//! lifetime). While it lives, masquerade cannot give the tuple `<wan>:<port> → <remote>` to an
//! outgoing flow — the reply tuple would clash — so a LAN host that then sends from the internal
//! port behind `<port>` to that remote gets **another** external port.
//!
//! The Teredo cone probe (RFC 4380 §5.2.1) produces exactly that: the cone RS goes to the
//! primary, the RA comes back from the **secondary** and is refused by a port-restricted NAT,
//! leaving the entry behind; the symmetric-NAT check that follows (restricted RS to the
//! secondary) gets a new port, M1 ≠ M2, and the client concludes "symmetric NAT". Measured here
//! (Linux 6.18): bare `masquerade` (R1) made the Vista profile, when it still ran the cone probe,
//! report `symmetric (port)`, and makes XP SP2 go offline ("client behind symmetric NAT"), with our server and with `miredo-server`
//! alike. A datagram the router *drops* before the confirmation hook leaves no entry, so any
//! stateful WAN input firewall (`iifname "wan0" ct state new drop`, what home routers have)
//! gives the textbook port-restricted cone: [`NatKind::PortRestricted`] is R1 plus that
//! firewall, [`NatKind::BareMasquerade`] is R1 alone. R5 is immune (its refused datagrams are
//! DNATed and dropped in FORWARD, before confirmation) and R4 lets them through.

use std::fmt;
use std::net::SocketAddrV4;

use anyhow::Result;

use crate::netns::Netns;

/// A kernel NAT behaviour (RFC 4787 terms, NAT.md §4 / §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// R4: full cone — endpoint-independent mapping and filtering (dynamic map + DNAT).
    FullCone,
    /// R5: address-restricted cone — EIM + address-dependent filtering (R4 + permit set).
    AddressRestricted,
    /// R1 + a stateful WAN input firewall: port-restricted cone — EIM + address-and-port-
    /// dependent filtering, port preserving (see the module documentation for the firewall).
    PortRestricted,
    /// R1 alone: Linux's default NAPT without any firewall. EIM+APDF for outgoing flows, but
    /// refused inbound datagrams reserve external ports (module documentation); the NAT
    /// model's `masquerade` preset (`unsolicited-reserve=30s`).
    BareMasquerade,
    /// R3: symmetric — `masquerade random,fully-random`: address-and-port-dependent mapping
    /// with random ports, APDF.
    Symmetric,
}

impl NatKind {
    /// Every kind.
    pub const ALL: [Self; 5] = [
        Self::FullCone,
        Self::AddressRestricted,
        Self::PortRestricted,
        Self::BareMasquerade,
        Self::Symmetric,
    ];

    /// Short name (`full-cone`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FullCone => "full-cone",
            Self::AddressRestricted => "address-restricted",
            Self::PortRestricted => "port-restricted",
            Self::BareMasquerade => "bare-masquerade",
            Self::Symmetric => "symmetric",
        }
    }

    /// The NAT model's preset (`netsim::NatPreset`, `client-sim --nat`) that matches this
    /// router, cell by cell for every client profile (the e2e test `nat_fidelity` checks it).
    pub fn preset(self) -> &'static str {
        match self {
            Self::FullCone => "full-cone",
            Self::AddressRestricted => "restricted",
            Self::PortRestricted => "port-restricted",
            Self::BareMasquerade => "masquerade",
            Self::Symmetric => "symmetric",
        }
    }

    /// The NAT.md §9 recipe(s) it is built from.
    pub fn recipe(self) -> &'static str {
        match self {
            Self::FullCone => "R4",
            Self::AddressRestricted => "R5",
            Self::PortRestricted => "R1 + WAN input firewall",
            Self::BareMasquerade => "R1",
            Self::Symmetric => "R3",
        }
    }

    /// The ruleset (for `nft -f`, starting with `flush ruleset`) of a router whose WAN
    /// interface is `wan`, LAN interface `lan_if` and LAN prefix `lan` (`10.0.0.0/24`).
    pub fn ruleset(self, wan: &str, lan_if: &str, lan: &str) -> String {
        match self {
            Self::FullCone => full_cone(wan, lan),
            Self::AddressRestricted => format!(
                "{}{}",
                full_cone(wan, lan),
                address_restricted_filter(wan, lan_if)
            ),
            Self::PortRestricted => {
                format!("{}{}", masquerade(wan, lan, ""), wan_input_firewall(wan))
            }
            Self::BareMasquerade => masquerade(wan, lan, ""),
            Self::Symmetric => masquerade(wan, lan, " random,fully-random"),
        }
    }
}

impl fmt::Display for NatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// R1 (`flags` empty) or R3 (`flags` = ` random,fully-random`).
fn masquerade(wan: &str, lan: &str, flags: &str) -> String {
    format!(
        "flush ruleset\n\
         table ip nat {{\n\
         \x20 chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   oifname \"{wan}\" ip saddr {lan} masquerade{flags}\n\
         \x20 }}\n\
         }}\n"
    )
}

/// R4: learns external port → internal endpoint from the conntrack reply tuple after SNAT, and
/// DNATs every inbound UDP datagram to a learned port.
fn full_cone(wan: &str, lan: &str) -> String {
    format!(
        "flush ruleset\n\
         table ip nat {{\n\
         \x20 map cone {{ type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout 2m; }}\n\
         \x20 chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;\n\
         \x20   iifname \"{wan}\" meta l4proto udp dnat ip to udp dport map @cone\n\
         \x20 }}\n\
         \x20 chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   oifname \"{wan}\" ip saddr {lan} masquerade\n\
         \x20 }}\n\
         \x20 chain learn {{ type filter hook postrouting priority 200; policy accept;\n\
         \x20   oifname \"{wan}\" meta l4proto udp ct direction original update @cone {{ ct reply proto-dst : ct original ip saddr . ct original proto-src }}\n\
         \x20 }}\n\
         }}\n"
    )
}

/// R5's filter on top of R4: a DNATed (unsolicited) inbound datagram passes only if the
/// internal endpoint has sent to the remote IP before.
fn address_restricted_filter(wan: &str, lan_if: &str) -> String {
    format!(
        "table ip filter {{\n\
         \x20 set permit_a {{ type ipv4_addr . inet_service . ipv4_addr; flags dynamic,timeout; timeout 2m; }}\n\
         \x20 chain forward {{ type filter hook forward priority filter; policy accept;\n\
         \x20   iifname \"{lan_if}\" oifname \"{wan}\" meta l4proto udp update @permit_a {{ ip saddr . udp sport . ip daddr }}\n\
         \x20   iifname \"{wan}\" meta l4proto udp ct status dnat ip daddr . udp dport . ip saddr != @permit_a counter drop\n\
         \x20 }}\n\
         }}\n"
    )
}

/// A stateful firewall for the router itself: new inbound connections on the WAN are dropped
/// (before conntrack confirms them, so they reserve nothing; module documentation).
fn wan_input_firewall(wan: &str) -> String {
    format!(
        "table inet firewall {{\n\
         \x20 chain input {{ type filter hook input priority filter; policy accept;\n\
         \x20   iifname \"{wan}\" ct state new counter drop\n\
         \x20 }}\n\
         }}\n"
    )
}

/// The conntrack entry (one line of `conntrack -L -p udp --orig-src … --orig-port-dst …`) of
/// the UDP flow whose original tuple is `from` → `to`, in the NAT router `router`; `None` when
/// there is none. The reply tuple (the second `src=`/`dst=`/`sport=`/`dport=`) tells what the
/// NAT made of the flow.
pub fn conntrack_udp_entry(
    router: &Netns,
    from: SocketAddrV4,
    to: SocketAddrV4,
) -> Result<Option<String>> {
    let out = router.exec(
        "conntrack",
        &[
            "-L",
            "-p",
            "udp",
            "--orig-src",
            &from.ip().to_string(),
            "--orig-port-src",
            &from.port().to_string(),
            "--orig-dst",
            &to.ip().to_string(),
            "--orig-port-dst",
            &to.port().to_string(),
        ],
    )?;
    Ok(out
        .lines()
        .find(|l| l.starts_with("udp"))
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rulesets_name_the_interfaces() {
        for kind in NatKind::ALL {
            let r = kind.ruleset("wan0", "lan0", "10.0.0.0/24");
            assert!(r.starts_with("flush ruleset\n"), "{kind}: {r}");
            assert!(r.contains("oifname \"wan0\" ip saddr 10.0.0.0/24 masquerade"));
            assert_eq!(r.contains("fully-random"), kind == NatKind::Symmetric);
            assert_eq!(
                r.contains("map cone"),
                matches!(kind, NatKind::FullCone | NatKind::AddressRestricted)
            );
            assert_eq!(r.contains("@permit_a"), kind == NatKind::AddressRestricted);
            assert_eq!(
                r.contains("ct state new counter drop"),
                kind == NatKind::PortRestricted
            );
            assert_eq!(r.matches('{').count(), r.matches('}').count(), "{r}");
        }
        assert!(NatKind::AddressRestricted
            .ruleset("wan0", "lan0", "10.0.0.0/24")
            .contains("iifname \"lan0\" oifname \"wan0\""));
    }
}
