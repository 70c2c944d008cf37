//! Client behaviour: the profiles, the client type and every knob of [`ClientConfig`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use crate::addr::{
    LL_MIREDO_RESTRICTED, LL_TEREDO_CONE, LL_WINDOWS_CONE, LL_WINDOWS_RESTRICTED, LL_XP_RESTRICTED,
};

use super::*;

/// A client behaviour preset. Each maps to a [`ClientConfig`] through
/// [`ClientConfig::profile`]; see there for the knob table and its sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Profile {
    /// Windows XP SP2 (RFC 4380 as written): cone probe, C=1 behind a cone NAT, secondary
    /// check, offline behind a symmetric NAT, no random flag bits, XP link-locals and SLLA
    /// option (TEREDO.md §4.1; seed how-to "client behind symmetric NAT").
    XpSp2,
    /// A plain RFC 4380 client with the RFC 5991 updates: no cone probe (§3.2), random flag
    /// bits (§3.1), secondary check, offline behind a symmetric NAT (no RFC 6081).
    Rfc5991,
    /// Windows Vista SP1: no cone probe and C=0 (RFC 5991 §3.2, implemented in Vista per its
    /// App. A), random flags, secondary check, qualifies behind a symmetric NAT (RFC 6081 §5.2,
    /// TEREDO.md §12).
    Vista,
    /// Windows 7: as Vista, plus the `dormant` state after idle time unless
    /// `default_qualified` (seed how-to, TEREDO.md §12).
    Win7,
    /// Miredo 1.2.x (TEREDO.md §5.3): restricted RS to the primary only (no cone probe, no
    /// secondary check), random flags, fixed 30 s refresh after the previous RS, 100 s
    /// before retrying, ignores the managed-network rule.
    Miredo,
}

impl Profile {
    /// Every profile, in a stable order.
    pub const ALL: &'static [Self] = &[
        Self::XpSp2,
        Self::Rfc5991,
        Self::Vista,
        Self::Win7,
        Self::Miredo,
    ];

    /// The kebab-case name (`xp-sp2`, `rfc5991`, `vista`, `win7`, `miredo`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::XpSp2 => "xp-sp2",
            Self::Rfc5991 => "rfc5991",
            Self::Vista => "vista",
            Self::Win7 => "win7",
            Self::Miredo => "miredo",
        }
    }

    /// True for the Windows profiles.
    pub fn is_windows(self) -> bool {
        matches!(self, Self::XpSp2 | Self::Vista | Self::Win7)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A profile name that is not one of [`Profile::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown client profile `{0}` (expected xp-sp2, rfc5991, vista, win7 or miredo)")]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownProfile(s.to_owned()))
    }
}

/// Windows' Teredo client types that matter to the managed-network rule
/// (`netsh interface teredo set state type=…`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientType {
    /// `client`: disabled on a managed (domain) network.
    #[default]
    Client,
    /// `enterpriseclient`: runs on managed networks too.
    EnterpriseClient,
}

impl ClientType {
    /// The netsh spelling: `client` or `enterpriseclient`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::EnterpriseClient => "enterpriseclient",
        }
    }
}

impl fmt::Display for ClientType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every knob of the client. Build one with [`ClientConfig::profile`] and adjust fields.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfig {
    /// The server's primary IPv4 address (embedded in the prefix and the address).
    pub server: Ipv4Addr,
    /// The server's secondary IPv4 address; `None` = primary + 1 (the convention, TEREDO.md
    /// §4.4). RAs are accepted only from these two addresses.
    pub secondary: Option<Ipv4Addr>,
    /// A name to show in [`Status`] instead of the primary address (display only).
    pub server_name: Option<String>,
    /// RFC 4380 phase 1: first probe with the cone link-local; an RA from the other server
    /// address means cone NAT.
    pub cone_probe: bool,
    /// Set C=1 in the address when the cone probe succeeded (XP). Later clients keep C=0
    /// (RFC 5991 §3.2) but still report NAT `cone`.
    pub use_cone_flag: bool,
    /// Probe the secondary address to tell restricted from symmetric NATs (RFC 4380 §5.2.1).
    pub secondary_check: bool,
    /// RFC 6081 §5.2: keep the address behind a symmetric NAT instead of going offline.
    pub symmetric_support: bool,
    /// RFC 6081 §5.3: before qualifying, ask the NAT's UPnP gateway for a port mapping of
    /// the client's port ([`Output::Upnp`](crate::io::Output::Upnp)); behind a single
    /// UPnP-enabled symmetric NAT, send to symmetric peers at their embedded mapping. Needs
    /// `symmetric_support` (the RFC's dependency); ignored without it.
    pub upnp: bool,
    /// RFC 6081 §5.4 Port-Preserving Symmetric NAT extension: behind a symmetric NAT whose
    /// mapped port equals the local port, reach a peer through a random local port
    /// advertised in a Random Port trailer; and, whatever the NAT, send direct bubbles to a
    /// peer's advertised random port. Needs `symmetric_support`; ignored without it.
    pub port_preserving: bool,
    /// RFC 6081 §5.5 Sequential Port-Symmetric NAT extension: behind a symmetric NAT that is
    /// not port-preserving, predict the external port of a random local port with an echo
    /// test (RS, direct bubble, RS to the secondary) and advertise it. Needs
    /// `port_preserving` (the RFC's dependency) and `symmetric_support`; ignored without.
    pub sequential: bool,
    /// RFC 5991 §3.1: 12 random flag bits (mask 0x3CFF), drawn once per mapping.
    pub random_flags: bool,
    /// Link-local source of restricted RSs (cone flag clear).
    pub ll_restricted: Ipv6Addr,
    /// Link-local source of cone RSs (cone flag set).
    pub ll_cone: Ipv6Addr,
    /// Append XP's 16-byte source link-layer address option to every RS.
    pub xp_slla: bool,
    /// Time to wait for an RA before resending (RFC 4380 §5.2.1: T = 4 s; at least
    /// [`MIN_TIMER`]).
    pub retransmit: Duration,
    /// RSs sent per phase before giving up on it (RFC 4380 §5.2.1: N = 3; 0 counts as 1).
    /// A phase therefore fails `attempts × retransmit` after its first RS.
    pub attempts: u8,
    /// Teredo refresh interval (RFC 4380 §5.2, RFC 6081 §5.1.1: default 30 s). The
    /// (randomized) interval is at least [`MIN_TIMER`].
    pub refresh_interval: Duration,
    /// Randomized refresh interval as fractions of `refresh_interval`, drawn uniformly
    /// after each exchange and measured from the RA (the last interaction with the
    /// server). Values are clamped to RFC 6081's 50–150 %. `None` = fixed interval measured
    /// from the previous RS (Miredo).
    pub refresh_jitter: Option<(f32, f32)>,
    /// Wait before qualifying again after a failure (Miredo: 100 s; at least [`MIN_TIMER`]).
    pub offline_retry: Duration,
    /// Enter `dormant` after this long without [`Client::note_activity`] (Windows 7).
    pub dormant_after: Option<Duration>,
    /// Windows' `DefaultQualified`: never go dormant.
    pub default_qualified: bool,
    /// Apply Windows' managed-network rule (RFC 5991 App. A). Miredo does not.
    pub managed_network_check: bool,
    /// The host is on a managed (domain) network.
    pub managed_network: bool,
    /// Windows client type; `EnterpriseClient` runs on managed networks.
    pub client_type: ClientType,
    /// Peer table cap (default 1024); when full the least recently used entry is reused.
    pub max_peers: usize,
    /// Packets queued per peer while it is being reached (default 16).
    pub queue_packets_per_peer: usize,
    /// Bytes queued per peer while it is being reached (default 4096; Miredo 1280).
    pub queue_bytes_per_peer: usize,
    /// A trusted peer is used directly while its last reception is younger than this
    /// (RFC 4380 §5.2.4: 30 s); afterwards it is probed again first.
    pub peer_validity: Duration,
    /// Spacing of probes (bubbles, echo tests) to one peer and their retransmission timeout
    /// (RFC 4380: 2 s; at least [`MIN_TIMER`]).
    pub bubble_interval: Duration,
    /// Repetitions of a probe after the first (RFC 4380: 3).
    pub bubble_retries: u8,
    /// Window of the probe cap (RFC 4380 §5.2.6: 300 s).
    pub bubble_window: Duration,
    /// Probes per window without an answer (RFC 4380 §5.2.6: 4).
    pub max_bubbles_per_window: u8,
    /// RFC 4380 §5.2.8 local client discovery: send discovery bubbles to 224.0.0.253 every
    /// 200–300 s once qualified, accept them from the link ([`Client::handle_discovery`])
    /// and reach local peers at their LAN address.
    pub local_discovery: bool,
    /// Prefix length of the client's IPv4 subnet: a discovery bubble from outside it is
    /// discarded (RFC 4380 §5.2.8 MUST). Default 24.
    pub local_prefix_len: u8,
    /// RFC 6081 §5.6 Hairpinning extension: an indirect bubble to a peer not reached yet
    /// carries our local address (and a UPnP mapping that differs from the server's) in an
    /// Alternate Address trailer plus a nonce; a peer's alternates get direct bubbles, and a
    /// direct bubble echoing our nonce is accepted from any plausible address, so two
    /// clients behind one NAT that does not hairpin reach each other over their LAN.
    pub hairpinning: bool,
    /// RFC 6081 §5.7 Server Load Reduction extension: a trusted peer gone quiet for
    /// `peer_validity` is re-validated with direct bubbles carrying a Neighbor Discovery
    /// Option solicitation (3 of them, 2 s apart) before falling back to the indirect bubble
    /// through its server; a solicitation is answered with an advertisement.
    pub server_load_reduction: bool,
}

/// RFC 4380 §5.2.1 T.
const RETRANSMIT: Duration = Duration::from_secs(4);
/// RFC 4380 §5.2.1 N.
const ATTEMPTS: u8 = 3;
/// RFC 4380 §5.2 / RFC 6081 §5.1.1 default refresh interval.
const REFRESH: Duration = Duration::from_secs(30);
/// RFC 4380 §5.2 randomized refresh interval: 75–100 %.
const RFC4380_JITTER: (f32, f32) = (0.75, 1.0);
/// Miredo's restart delay (`maintain.c`, TEREDO.md §5.3).
const OFFLINE_RETRY: Duration = Duration::from_secs(100);
/// Idle time before Windows 7 goes dormant. \[UNVERIFIED\]: the real Windows value was not
/// found; 60 minutes is a documented assumption of this lab.
pub const WIN7_DORMANT_AFTER: Duration = Duration::from_secs(60 * 60);

impl ClientConfig {
    /// The configuration of a [`Profile`] for the server at `server` (primary address).
    ///
    /// | knob | xp-sp2 | rfc5991 | vista | win7 | miredo |
    /// |---|---|---|---|---|---|
    /// | `cone_probe` | yes (R4380 §5.2.1) | no (R5991 §3.2) | no (R5991 App. A, see below) | no (as vista) | no (M ≥ 0.9.5) |
    /// | `use_cone_flag` | yes | no | no (R5991 App. A) | no | no |
    /// | `secondary_check` | yes (R4380) | yes | yes (obs. "symmetric (port)") | yes | no (M ignores `ServerAddress2`) |
    /// | `symmetric_support` | no → offline (seed how-to) | no | yes (R6081 §5.2, TEREDO.md §12) | yes | n/a |
    /// | `upnp` (R6081 §5.3) | no (needs `symmetric_support`) | no | no \[UNVERIFIED\], an option | yes (see below) | no (M TODO "support for UPnP IGD") |
    /// | `port_preserving` (R6081 §5.4) | no (needs `symmetric_support`) | no | no \[UNVERIFIED\], an option | yes (see below) | no (M has no RFC 6081) |
    /// | `sequential` (R6081 §5.5) | no | no | no \[UNVERIFIED\] | yes \[UNVERIFIED\] (see below) | no |
    /// | `random_flags` | no | yes (R5991 §3.1) | yes (SP1, R5991 App. A) | yes | yes (M ≥ 1.1.0) |
    /// | link-locals | fe80::5445:5245:444f / fe80::8000:5445:5245:444f | fe80::ffff:ffff:fffe / fe80::8000:ffff:ffff:fffe | as rfc5991 | as rfc5991 | fe80::ffff:ffff:ffff (cone unused) |
    /// | `xp_slla` | yes (TEREDO.md §4.1) | no | no | no | no |
    /// | `retransmit` × `attempts` | 4 s × 3 | 4 s × 3 | 4 s × 3 | 4 s × 3 | 4 s × 3 (`maintain.c`) |
    /// | refresh | 30 s, 75–100 % [UNVERIFIED for XP] | 30 s, 75–100 % (R4380 §5.2) | 30 s, 75–100 % | 30 s, 75–100 % | 30 s fixed after the previous RS |
    /// | `offline_retry` | 100 s \[UNVERIFIED\] | 100 s | 100 s \[UNVERIFIED\] | 100 s \[UNVERIFIED\] | 100 s (M) |
    /// | `dormant_after` | — | — | — | 60 min \[UNVERIFIED\] | — |
    /// | managed-network rule | yes (R5991 App. A, seed how-to) | no | yes | yes | no |
    /// | `local_discovery` (R4380 §5.2.8) | no \[UNVERIFIED\], an option | no \[UNVERIFIED\] | yes \[UNVERIFIED\], an option | yes \[UNVERIFIED\], an option | no (M 1.2.6 has no `discovery.c`; only master/1.3, `libteredo/discovery.c`) |
    /// | nonce trailers (R6081 §5.2) | no | no | yes | yes | no (answers to the bubble's link-local source instead, TEREDO.md §6.5) |
    /// | `hairpinning` (R6081 §5.6) | no | no (RFC 4380 + 5991 only) | no \[UNVERIFIED\], an option | yes \[UNVERIFIED\], an option | no (M 1.2.6 has none, TEREDO.md (a)) |
    /// | `server_load_reduction` (R6081 §5.7) | no | no | no \[UNVERIFIED\], an option | yes \[UNVERIFIED\], an option | no (M 1.2.6 has none) |
    ///
    /// Data-path knobs are the same for every profile: RFC 4380's 30 s validity, 2 s × 3
    /// probes, at most 4 per 300 s, 1024 peers, 16 packets / 4096 bytes queued per peer. All
    /// profiles answer a relayed bubble with a direct bubble to the origin indication whose
    /// destination is the relayed bubble's source; only `symmetric_support` adds the nonce.
    ///
    /// UPnP in Windows: Microsoft's "Required Firewall Exceptions for Teredo" (learn.microsoft.com,
    /// win32/teredo) asks firewalls to pass UDP port 1900 "as this allows UPnP discovery
    /// traffic to flow and has the potential to improve connectivity rates", naming
    /// FwpmSystemPortsGet0, an API of Windows 7 and later; KB 968510 says the same; netsh
    /// outputs of later Windows print `UPNP: Yes` (TEREDO.md §12). No source says whether
    /// Vista did it: off there, a knob like any other.
    ///
    /// The cone probe in Vista and 7: RFC 5991 §3.2 ("Deprecation of Cone Bit") says clients
    /// SHOULD skip the first phase of qualification, so that "a distinction between cone and
    /// restricted NATs can no longer be made", and its Appendix A, written by Microsoft's
    /// author, says this deprecation "is implemented in Windows Vista and Windows Server
    /// 2008". That is the one primary source, so both profiles skip the probe. The evidence
    /// the other way is weaker: the Windows 7 netsh output in "Displaying Teredo Client
    /// Status" (sourcedaddy.com) prints `NAT : restricted`, which a client without the probe
    /// prints behind a cone NAT too; the `NAT : cone` output found (pastebin.com/djW18bhk) is
    /// a natawareclient with `UPNP: Yes`, where the gateway's port mapping, not a cone
    /// probe, can be what makes it cone; Microsoft's NetDebug script sends a cone RS, but it
    /// is a diagnostic tool, not the client. `cone_probe` stays a knob for users who see
    /// otherwise on their Windows.
    ///
    /// Port-preserving and sequential: `netsh interface teredo show state` of a
    /// natawareclient (Windows 7 and later) prints "NAT Special Behaviour : UPNP: Yes,
    /// PortPreserving: Yes" (pastebin.com/djW18bhk, TEREDO.md §12): on for win7. No source
    /// for Vista: off, an option, \[UNVERIFIED\]. For the sequential extension no Windows
    /// output exists (it is described in MS-TERE, Microsoft's specification of these
    /// extensions); RFC 6081 says SHOULD, so it is on for win7 \[UNVERIFIED\] and off for Vista.
    ///
    /// Local discovery: Miredo's `libteredo/discovery.c` (darconeous/miredo master after
    /// 1.2.3, and upstream 1.3) sends discovery bubbles to 224.0.0.253 every 200–299 s; the
    /// Debian 1.2.6 this lab models as `miredo` has none (TEREDO.md §1). For Windows no
    /// source says which versions do it: on for Vista and 7, off for XP SP2, all marked
    /// \[UNVERIFIED\] and a knob like any other.
    ///
    /// Hairpinning and server load reduction: specified for Windows in Microsoft's MS-TERE,
    /// and RFC 6081 says an implementation SHOULD support both; no public source says which
    /// Windows version first did. On for Windows 7, off for Vista, both \[UNVERIFIED\];
    /// XP SP2 predates RFC 6081 and the rfc5991 profile follows RFC 4380 + 5991 alone.
    ///
    /// Windows retries after a failure too, but its delay is not documented; Miredo's 100 s
    /// is used for every profile. The rfc5991 profile follows the RFCs alone, and the
    /// managed-network rule is a Windows policy, not an RFC requirement.
    pub fn profile(profile: Profile, server: Ipv4Addr) -> Self {
        let mut c = Self {
            server,
            secondary: None,
            server_name: None,
            cone_probe: false,
            use_cone_flag: false,
            secondary_check: true,
            symmetric_support: false,
            upnp: false,
            port_preserving: false,
            sequential: false,
            random_flags: true,
            ll_restricted: LL_WINDOWS_RESTRICTED,
            ll_cone: LL_WINDOWS_CONE,
            xp_slla: false,
            retransmit: RETRANSMIT,
            attempts: ATTEMPTS,
            refresh_interval: REFRESH,
            refresh_jitter: Some(RFC4380_JITTER),
            offline_retry: OFFLINE_RETRY,
            dormant_after: None,
            default_qualified: false,
            managed_network_check: profile.is_windows(),
            managed_network: false,
            client_type: ClientType::Client,
            max_peers: DEFAULT_MAX_PEERS,
            queue_packets_per_peer: DEFAULT_QUEUE_PACKETS_PER_PEER,
            queue_bytes_per_peer: DEFAULT_QUEUE_BYTES_PER_PEER,
            peer_validity: PEER_VALIDITY,
            bubble_interval: BUBBLE_INTERVAL,
            bubble_retries: BUBBLE_RETRIES,
            bubble_window: BUBBLE_WINDOW,
            max_bubbles_per_window: MAX_BUBBLES_PER_WINDOW,
            local_discovery: false,
            local_prefix_len: 24,
            hairpinning: false,
            server_load_reduction: false,
        };
        match profile {
            Profile::XpSp2 => {
                c.cone_probe = true;
                c.use_cone_flag = true;
                c.random_flags = false;
                c.ll_restricted = LL_XP_RESTRICTED;
                c.ll_cone = LL_TEREDO_CONE;
                c.xp_slla = true;
            }
            Profile::Rfc5991 => {}
            Profile::Vista => {
                c.symmetric_support = true;
                c.local_discovery = true;
            }
            Profile::Win7 => {
                c.symmetric_support = true;
                c.upnp = true;
                c.port_preserving = true;
                c.sequential = true;
                c.local_discovery = true;
                c.hairpinning = true;
                c.server_load_reduction = true;
                c.dormant_after = Some(WIN7_DORMANT_AFTER);
            }
            Profile::Miredo => {
                c.secondary_check = false;
                c.ll_restricted = LL_MIREDO_RESTRICTED;
                c.ll_cone = LL_TEREDO_CONE;
                c.refresh_jitter = None;
            }
        }
        c
    }

    /// The secondary server address: configured, or primary + 1.
    pub fn secondary_addr(&self) -> Ipv4Addr {
        self.secondary
            .unwrap_or_else(|| Ipv4Addr::from(u32::from(self.server).wrapping_add(1)))
    }

    /// True when the managed-network rule keeps this client offline.
    pub fn blocked_by_managed_network(&self) -> bool {
        self.managed_network_check
            && self.managed_network
            && self.client_type != ClientType::EnterpriseClient
    }
}
