//! The Teredo client's qualification and maintenance state machine (RFC 4380 §5.2.1,
//! §5.2.2, §5.2.5; RFC 5991 §3; RFC 6081 §5.1.1, §5.2), sans-IO.
//!
//! The client sends router solicitations (RS) to its server and learns its NAT mapping from
//! the origin indication of the router advertisements (RA) that come back. Which RS it sends,
//! in which order, what it concludes and how it keeps the mapping alive are all knobs of
//! [`ClientConfig`], so that the behaviours of Windows XP SP2, Vista, Windows 7, an RFC 5991
//! client and Miredo are just configurations ([`ClientConfig::profile`]).
//!
//! # Qualification (TEREDO.md §5.1, §15)
//! 1. *Cone probe* ([`ClientConfig::cone_probe`]): RS from the cone link-local to the
//!    primary. A conforming server answers a cone RS from its **other** address, so an RA
//!    that gets through (and comes from the secondary address) proves the NAT lets
//!    unsolicited traffic in: **cone**, qualified. No answer after
//!    [`ClientConfig::attempts`] RSs [`ClientConfig::retransmit`] apart → phase 2.
//! 2. *Restricted*: RS from the restricted link-local to the primary; its RA gives the
//!    mapping M1. No answer → `Offline`, "cannot reach primary Teredo server over UDP".
//! 3. *Secondary check* ([`ClientConfig::secondary_check`]): restricted RS to the secondary
//!    address, mapping M2. M1 == M2 → restricted (or none), qualified; M1 ≠ M2 → symmetric
//!    ("(address)" if the IPv4 differs, "(port)" otherwise): qualified with M1 when
//!    [`ClientConfig::symmetric_support`] (RFC 6081 §5.2), else `Offline`, "client behind
//!    symmetric NAT". No answer → `Offline`, "cannot reach secondary Teredo server over UDP".
//!
//! The NAT type is `none` whenever the mapping equals the client's own socket address.
//!
//! # Maintenance (RFC 4380 §5.2.5, RFC 6081 §5.1.1)
//! Once qualified, the client sends an RS with the cone value that qualified to the primary
//! every refresh interval (fixed, Miredo; or randomized within
//! [`ClientConfig::refresh_jitter`]). A changed mapping gives a new address and
//! [`Event::AddressChanged`]; no answer after the retries → `Offline`. After any failure
//! except the managed-network rule the client starts over after
//! [`ClientConfig::offline_retry`].
//!
//! # Driving it
//! Feed datagrams from the server with [`Client::handle_udp`], call [`Client::handle_timeout`]
//! at [`Client::poll_timeout`], and drain [`Client::poll_transmit`] and
//! [`Client::poll_event`] after every input. Time and randomness come from the caller.

use std::collections::VecDeque;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::addr::{
    TeredoAddr, FLAG_CONE, FLAG_RANDOM_MASK, LL_MIREDO_RESTRICTED, LL_TEREDO_CONE, LL_WINDOWS_CONE,
    LL_WINDOWS_RESTRICTED, LL_XP_RESTRICTED, TEREDO_PORT, TEREDO_PREFIX, TEREDO_PREFIX_OBSOLETE,
};
use crate::wire::auth::Auth;
use crate::wire::ndp::{emit_rs, RouterAdvertisement, ICMPV6_ROUTER_ADVERTISEMENT};
use crate::wire::packet::{MAX_UDP_PAYLOAD, NEXT_HEADER_ICMPV6};
use crate::wire::TeredoPacket;
use crate::DropReason;

/// Smallest MTU an RA may announce (the IPv6 minimum link MTU).
pub const MIN_RA_MTU: u32 = 1280;
/// Largest MTU an RA may announce (Miredo's bound, the largest IPv6 payload without jumbograms).
pub const MAX_RA_MTU: u32 = 65_535;
/// How many RS nonces of one exchange are remembered: a late RA answering an earlier
/// retransmission of the same phase is still accepted.
pub const NONCE_RING: usize = 4;
/// Cap on queued events; when full the oldest is dropped (and counted).
pub const MAX_EVENTS: usize = 64;
/// Size of the largest RS the client emits (auth 13 + IPv6 40 + RS 8 + XP's option 16).
pub const MAX_RS_LEN: usize = 13 + 40 + 8 + 16;
/// Floor applied to the retransmission, refresh and offline-retry timers, so that a zero
/// in the configuration cannot make a driver spin without time advancing.
pub const MIN_TIMER: Duration = Duration::from_millis(100);

/// A client behaviour preset. Each maps to a [`ClientConfig`] through
/// [`ClientConfig::profile`]; see there for the knob table and its sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Windows XP SP2 (RFC 4380 as written): cone probe, C=1 behind a cone NAT, secondary
    /// check, offline behind a symmetric NAT, no random flag bits, XP link-locals and SLLA
    /// option (TEREDO.md §4.1; seed how-to "client behind symmetric NAT").
    XpSp2,
    /// A plain RFC 4380 client with the RFC 5991 updates: no cone probe (§3.2), random flag
    /// bits (§3.1), secondary check, offline behind a symmetric NAT (no RFC 6081).
    Rfc5991,
    /// Windows Vista SP1: cone probe for reporting only (address C=0, RFC 5991 App. A),
    /// random flags, secondary check, qualifies behind a symmetric NAT (RFC 6081 §5.2,
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
/// Idle time before Windows 7 goes dormant. [UNVERIFIED]: the real Windows value was not
/// found; 60 minutes is a documented assumption of this lab.
pub const WIN7_DORMANT_AFTER: Duration = Duration::from_secs(60 * 60);

impl ClientConfig {
    /// The configuration of a [`Profile`] for the server at `server` (primary address).
    ///
    /// | knob | xp-sp2 | rfc5991 | vista | win7 | miredo |
    /// |---|---|---|---|---|---|
    /// | `cone_probe` | yes (R4380 §5.2.1) | no (R5991 §3.2) | yes, reported only (TEREDO.md (a)) | yes | no (M ≥ 0.9.5) |
    /// | `use_cone_flag` | yes | no | no (R5991 App. A) | no | no |
    /// | `secondary_check` | yes (R4380) | yes | yes (obs. "symmetric (port)") | yes | no (M ignores `ServerAddress2`) |
    /// | `symmetric_support` | no → offline (seed how-to) | no | yes (R6081 §5.2, TEREDO.md §12) | yes | n/a |
    /// | `random_flags` | no | yes (R5991 §3.1) | yes (SP1, R5991 App. A) | yes | yes (M ≥ 1.1.0) |
    /// | link-locals | fe80::5445:5245:444f / fe80::8000:5445:5245:444f | fe80::ffff:ffff:fffe / fe80::8000:ffff:ffff:fffe | as rfc5991 | as rfc5991 | fe80::ffff:ffff:ffff (cone unused) |
    /// | `xp_slla` | yes (TEREDO.md §4.1) | no | no | no | no |
    /// | `retransmit` × `attempts` | 4 s × 3 | 4 s × 3 | 4 s × 3 | 4 s × 3 | 4 s × 3 (`maintain.c`) |
    /// | refresh | 30 s, 75–100 % [UNVERIFIED for XP] | 30 s, 75–100 % (R4380 §5.2) | 30 s, 75–100 % | 30 s, 75–100 % | 30 s fixed after the previous RS |
    /// | `offline_retry` | 100 s [UNVERIFIED] | 100 s | 100 s [UNVERIFIED] | 100 s [UNVERIFIED] | 100 s (M) |
    /// | `dormant_after` | — | — | — | 60 min [UNVERIFIED] | — |
    /// | managed-network rule | yes (R5991 App. A, seed how-to) | no | yes | yes | no |
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
                c.cone_probe = true;
                c.symmetric_support = true;
            }
            Profile::Win7 => {
                c.cone_probe = true;
                c.symmetric_support = true;
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

/// Which RS the client is waiting on while qualifying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbePhase {
    /// Cone RS to the primary (RFC 4380 phase 1).
    Cone,
    /// Restricted RS to the primary.
    Restricted,
    /// Restricted RS to the secondary address (symmetric-NAT check).
    Secondary,
}

impl ProbePhase {
    /// Short snake_case label: `cone`, `restricted`, `secondary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cone => "cone",
            Self::Restricted => "restricted",
            Self::Secondary => "secondary",
        }
    }
}

/// The client's state, as `netsh interface teredo show state` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not usable: failed, or disabled by the managed-network rule ([`Client::error`] says why).
    Offline,
    /// Qualifying.
    Probe(ProbePhase),
    /// Qualified: [`Client::address`] is usable.
    Qualified,
    /// Windows 7: idle, not refreshing, no address until woken.
    Dormant,
}

impl State {
    /// snake_case metric label: `offline`, `probe_cone`, `probe_restricted`,
    /// `probe_secondary`, `qualified`, `dormant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offline => "offline",
            Self::Probe(ProbePhase::Cone) => "probe_cone",
            Self::Probe(ProbePhase::Restricted) => "probe_restricted",
            Self::Probe(ProbePhase::Secondary) => "probe_secondary",
            Self::Qualified => "qualified",
            Self::Dormant => "dormant",
        }
    }
}

/// Windows spelling: `offline`, `qualified`, `dormant`, and for the probes
/// `probe (primary server)` (observed on Windows for the restricted phase, TEREDO.md §12),
/// `probe (secondary server)` and `probe (cone)` (not observed; same pattern).
impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Offline => "offline",
            Self::Probe(ProbePhase::Cone) => "probe (cone)",
            Self::Probe(ProbePhase::Restricted) => "probe (primary server)",
            Self::Probe(ProbePhase::Secondary) => "probe (secondary server)",
            Self::Qualified => "qualified",
            Self::Dormant => "dormant",
        })
    }
}

/// What the client concluded about its NAT.
///
/// Without a cone probe (rfc5991, miredo) a cone NAT is reported as `restricted`; without
/// a secondary check (miredo) a symmetric NAT is never detected and is reported as
/// `restricted` too — the client reports what it can observe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NatType {
    /// Not determined (yet).
    #[default]
    Unknown,
    /// No NAT: the mapping is the client's own socket address.
    None,
    /// Cone NAT: the cone probe's RA came in from the other server address.
    Cone,
    /// Restricted or port-restricted cone NAT (or an undetected cone/symmetric one).
    Restricted,
    /// Symmetric NAT, same external IPv4 but different ports per destination.
    SymmetricPort,
    /// Symmetric NAT with different external IPv4 addresses per destination.
    SymmetricAddress,
}

impl NatType {
    /// snake_case metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::None => "none",
            Self::Cone => "cone",
            Self::Restricted => "restricted",
            Self::SymmetricPort => "symmetric_port",
            Self::SymmetricAddress => "symmetric_address",
        }
    }

    /// True for both symmetric kinds.
    pub fn is_symmetric(self) -> bool {
        matches!(self, Self::SymmetricPort | Self::SymmetricAddress)
    }
}

/// Windows spelling: `none`, `cone`, `restricted`, `symmetric (port)`,
/// `symmetric (address)`, `unknown`.
impl fmt::Display for NatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unknown => "unknown",
            Self::None => "none",
            Self::Cone => "cone",
            Self::Restricted => "restricted",
            Self::SymmetricPort => "symmetric (port)",
            Self::SymmetricAddress => "symmetric (address)",
        })
    }
}

/// Why the client is offline. The messages are Windows' `Error :` lines (TEREDO.md §12;
/// exact English wording [UNVERIFIED]); the secondary one is this lab's wording.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ClientError {
    /// The secondary check found a symmetric NAT and symmetric support is off.
    #[error("client behind symmetric NAT")]
    SymmetricNat,
    /// No valid RA from the primary after the retries (qualification or refresh).
    #[error("cannot reach primary Teredo server over UDP")]
    PrimaryUnreachable,
    /// No valid RA from the secondary address after the retries.
    #[error("cannot reach secondary Teredo server over UDP")]
    SecondaryUnreachable,
    /// Windows' managed-network rule (RFC 5991 App. A) with client type `client`.
    #[error("client is in a managed network")]
    ManagedNetwork,
}

impl ClientError {
    /// snake_case metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SymmetricNat => "symmetric_nat",
            Self::PrimaryUnreachable => "primary_unreachable",
            Self::SecondaryUnreachable => "secondary_unreachable",
            Self::ManagedNetwork => "managed_network",
        }
    }
}

/// Something the driver may want to log or act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The state changed (the first event is the initial probe state).
    StateChanged(State),
    /// The client (re)qualified; follows `StateChanged(Qualified)`.
    Qualified {
        /// The Teredo address.
        address: Ipv6Addr,
        /// The NAT type concluded.
        nat: NatType,
    },
    /// A refresh found a new mapping: `old` is invalid, use `new` (RFC 4380 §5.2.5).
    AddressChanged {
        /// The previous address.
        old: Ipv6Addr,
        /// The new address.
        new: Ipv6Addr,
    },
    /// The client went offline; follows `StateChanged(Offline)` when the state changed.
    Failed {
        /// Why.
        error: ClientError,
    },
}

/// An RS written into the caller's buffer: send `len` bytes from the client's socket to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination: a server address, port 3544.
    pub to: SocketAddrV4,
    /// Bytes written.
    pub len: usize,
}

/// Counters for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCounters {
    /// RSs handed to the driver.
    pub rs_sent: u64,
    /// RAs accepted.
    pub ra_accepted: u64,
    /// Datagrams refused by [`Client::handle_udp`] (all reasons).
    pub ra_rejected: u64,
    /// Refusals per reason, indexed like [`DropReason::ALL`]; see [`Self::rejected`].
    pub rejected_by_reason: [u64; DropReason::ALL.len()],
    /// Transitions into `qualified`.
    pub qualifications: u64,
    /// Mapping changes detected by a refresh.
    pub address_changes: u64,
    /// Transitions into `offline`.
    pub failures: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
}

impl Default for ClientCounters {
    fn default() -> Self {
        Self {
            rs_sent: 0,
            ra_accepted: 0,
            ra_rejected: 0,
            rejected_by_reason: [0; DropReason::ALL.len()],
            qualifications: 0,
            address_changes: 0,
            failures: 0,
            events_dropped: 0,
        }
    }
}

impl ClientCounters {
    /// Refusals counted under `reason`.
    pub fn rejected(&self, reason: DropReason) -> u64 {
        reason_index(reason)
            .and_then(|i| self.rejected_by_reason.get(i).copied())
            .unwrap_or(0)
    }

    fn count_reject(&mut self, reason: DropReason) {
        self.ra_rejected += 1;
        if let Some(c) = reason_index(reason).and_then(|i| self.rejected_by_reason.get_mut(i)) {
            *c += 1;
        }
    }
}

fn reason_index(reason: DropReason) -> Option<usize> {
    DropReason::ALL.iter().position(|r| *r == reason)
}

/// A snapshot of what `netsh interface teredo show state` shows; its `Display` prints it in
/// that layout (lines without a value are left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// `Type`: the client type.
    pub client_type: ClientType,
    /// `Server Name`: the configured name, or the primary address.
    pub server_name: String,
    /// `Client Refresh Interval`.
    pub refresh_interval: Duration,
    /// `Client Port`: the local UDP port.
    pub client_port: u16,
    /// `State`.
    pub state: State,
    /// `Network`: managed or unmanaged.
    pub managed_network: bool,
    /// `NAT`.
    pub nat: NatType,
    /// `NAT Special Behaviour` UPnP (RFC 6081 §5.3): not implemented, always false.
    pub upnp: bool,
    /// `NAT Special Behaviour` PortPreserving: mapped port == local port (RFC 6081 §5.4).
    pub port_preserving: Option<bool>,
    /// `Local Mapping`: the client's socket address.
    pub local_mapping: SocketAddrV4,
    /// `External NAT Mapping`: the mapping the server saw.
    pub external_mapping: Option<SocketAddrV4>,
    /// `Error`.
    pub error: Option<ClientError>,
    /// The Teredo address (netsh shows it under `ipconfig`).
    pub address: Option<Ipv6Addr>,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "Yes" } else { "No" };
        writeln!(f, "Type                    : {}", self.client_type)?;
        writeln!(f, "Server Name             : {}", self.server_name)?;
        writeln!(
            f,
            "Client Refresh Interval : {} seconds",
            self.refresh_interval.as_secs()
        )?;
        writeln!(f, "Client Port             : {}", self.client_port)?;
        writeln!(f, "State                   : {}", self.state)?;
        writeln!(
            f,
            "Network                 : {}",
            if self.managed_network {
                "managed"
            } else {
                "unmanaged"
            }
        )?;
        writeln!(f, "NAT                     : {}", self.nat)?;
        if let Some(pp) = self.port_preserving {
            writeln!(
                f,
                "NAT Special Behaviour   : UPNP: {}, PortPreserving: {}",
                yes_no(self.upnp),
                yes_no(pp)
            )?;
        }
        writeln!(f, "Local Mapping           : {}", self.local_mapping)?;
        if let Some(m) = self.external_mapping {
            writeln!(f, "External NAT Mapping    : {m}")?;
        }
        if let Some(a) = self.address {
            writeln!(f, "Address                 : {a}")?;
        }
        if let Some(e) = self.error {
            writeln!(f, "Error                   : {e}")?;
        }
        Ok(())
    }
}

/// What an outstanding exchange is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Cone,
    Restricted,
    Secondary { m1: SocketAddrV4 },
    Refresh,
}

/// RSs of one phase (or one refresh) and their retransmission timer.
#[derive(Clone, Copy, Debug)]
struct Exchange {
    step: Step,
    /// The RS carries the cone link-local.
    cone: bool,
    /// Server address the RSs go to.
    to: Ipv4Addr,
    /// RSs sent so far.
    sent: u8,
    /// When the latest RS was queued.
    last_sent: Instant,
    /// When to resend or give up; `None` = never (timer overflow).
    deadline: Option<Instant>,
    /// Nonces of the latest RSs (ring of [`NONCE_RING`]).
    nonces: [[u8; 8]; NONCE_RING],
    /// Nonces recorded (the ring is full past [`NONCE_RING`]).
    recorded: usize,
}

impl Exchange {
    fn has_nonce(&self, n: &[u8; 8]) -> bool {
        self.nonces[..self.recorded.min(NONCE_RING)].contains(n)
    }
}

/// An RS waiting for [`Client::poll_transmit`].
#[derive(Clone, Copy, Debug)]
struct PendingRs {
    to: Ipv4Addr,
    src: Ipv6Addr,
    nonce: [u8; 8],
}

/// `now + d`, or `None` when that overflows `Instant` (the timer then never fires).
fn after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The client state machine. See the module documentation.
pub struct Client {
    cfg: ClientConfig,
    rng: Box<dyn RngCore + Send>,
    local: SocketAddrV4,
    state: State,
    nat: NatType,
    error: Option<ClientError>,
    /// The mapping in use (qualified) or last learned.
    mapping: Option<SocketAddrV4>,
    /// The address; `Some` only while qualified.
    address: Option<Ipv6Addr>,
    /// Random flag bits and the mapping they were drawn for (RFC 5991: once per mapping).
    random_bits: Option<(SocketAddrV4, u16)>,
    /// The cone value of the RS that qualified (used for refreshes, RFC 4380 §5.2.5).
    qualified_cone: bool,
    exchange: Option<Exchange>,
    next_refresh: Option<Instant>,
    retry_at: Option<Instant>,
    last_activity: Instant,
    pending: Option<PendingRs>,
    events: VecDeque<Event>,
    counters: ClientCounters,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("local", &self.local)
            .field("state", &self.state)
            .field("nat", &self.nat)
            .field("mapping", &self.mapping)
            .field("address", &self.address)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Creates a client bound to `local` (its own socket address, used to detect "no NAT"
    /// and port preservation: pass the real address, not 0.0.0.0) and starts qualifying:
    /// the first RS is waiting in [`Self::poll_transmit`] — unless the managed-network rule
    /// applies, in which case the client stays offline for good.
    pub fn new(
        config: ClientConfig,
        rng: impl RngCore + Send + 'static,
        local: SocketAddrV4,
        now: Instant,
    ) -> Self {
        let mut c = Self {
            cfg: config,
            rng: Box::new(rng),
            local,
            state: State::Offline,
            nat: NatType::Unknown,
            error: None,
            mapping: None,
            address: None,
            random_bits: None,
            qualified_cone: false,
            exchange: None,
            next_refresh: None,
            retry_at: None,
            last_activity: now,
            pending: None,
            events: VecDeque::new(),
            counters: ClientCounters::default(),
        };
        c.start_qualification(now);
        c
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The client's socket address.
    pub fn local(&self) -> SocketAddrV4 {
        self.local
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The NAT type concluded so far (`Unknown` while qualifying).
    pub fn nat_type(&self) -> NatType {
        self.nat
    }

    /// The Teredo address; `Some` only while qualified.
    pub fn address(&self) -> Option<Ipv6Addr> {
        self.address
    }

    /// The NAT mapping in use, or the last one learned (e.g. M1 when offline behind a
    /// symmetric NAT, or while dormant). Cleared when qualification starts over and when
    /// the server became unreachable.
    pub fn mapping(&self) -> Option<SocketAddrV4> {
        self.mapping
    }

    /// Why the client is offline; `None` in every other state.
    pub fn error(&self) -> Option<ClientError> {
        self.error
    }

    /// The counters.
    pub fn counters(&self) -> &ClientCounters {
        &self.counters
    }

    /// A snapshot for `show state`-like output.
    pub fn status(&self) -> Status {
        Status {
            client_type: self.cfg.client_type,
            server_name: self
                .cfg
                .server_name
                .clone()
                .unwrap_or_else(|| self.cfg.server.to_string()),
            refresh_interval: self.cfg.refresh_interval,
            client_port: self.local.port(),
            state: self.state,
            managed_network: self.cfg.managed_network,
            nat: self.nat,
            upnp: false,
            port_preserving: self.mapping.map(|m| m.port() == self.local.port()),
            local_mapping: self.local,
            external_mapping: self.mapping,
            error: self.error,
            address: self.address,
        }
    }

    /// Records application activity (the data path calls this when it sends or receives
    /// through the tunnel). It pushes back the `dormant` deadline and, in `dormant`, wakes
    /// the client up (as Windows does when an application needs Teredo).
    pub fn note_activity(&mut self, now: Instant) {
        self.last_activity = self.last_activity.max(now);
        if self.state == State::Dormant {
            self.wake(now);
        }
    }

    /// Leaves `dormant` and qualifies again; no effect in other states.
    pub fn wake(&mut self, now: Instant) {
        if self.state == State::Dormant {
            self.last_activity = self.last_activity.max(now);
            tracing::debug!("teredo client waking up");
            self.start_qualification(now);
        }
    }

    /// When [`Self::handle_timeout`] wants to be called; `None` when nothing is scheduled
    /// (offline for good, dormant).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let exchange = self.exchange.and_then(|e| e.deadline);
        match self.state {
            State::Offline => earliest(exchange, self.retry_at),
            State::Probe(_) => exchange,
            State::Qualified => {
                let refresh = if self.exchange.is_some() {
                    exchange
                } else {
                    self.next_refresh
                };
                earliest(refresh, self.dormant_deadline())
            }
            State::Dormant => None,
        }
    }

    fn dormant_deadline(&self) -> Option<Instant> {
        if self.cfg.default_qualified {
            return None;
        }
        self.cfg
            .dormant_after
            .and_then(|d| after(self.last_activity, d))
    }

    /// Fires whatever timers are due at `now`: retransmissions, phase failures, refreshes,
    /// the dormant transition and the offline retry. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Offline {
            if self.retry_at.is_some_and(|t| t <= now) {
                tracing::debug!("teredo client retrying qualification");
                self.start_qualification(now);
            }
            return;
        }
        if self.state == State::Qualified && self.dormant_deadline().is_some_and(|t| t <= now) {
            self.enter_dormant();
            return;
        }
        if let Some(ex) = self.exchange {
            if ex.deadline.is_some_and(|t| t <= now) {
                if ex.sent < self.cfg.attempts.max(1) {
                    self.send_rs(now);
                } else {
                    self.exchange = None;
                    self.exchange_failed(now, ex.step);
                }
            }
            return;
        }
        if self.state == State::Qualified && self.next_refresh.is_some_and(|t| t <= now) {
            self.next_refresh = None;
            tracing::debug!(cone = self.qualified_cone, "teredo client refreshing");
            self.begin_exchange(now, Step::Refresh);
        }
    }

    /// Writes the next RS into `buf` (at least [`MAX_RS_LEN`] bytes). `None` when there is
    /// nothing to send (or `buf` is too small: the RS is then lost and will be retransmitted).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let rs = self.pending.take()?;
        let auth = Auth::nonce_only(rs.nonce);
        match emit_rs(buf, Some(&auth), rs.src, self.cfg.xp_slla) {
            Ok(len) => {
                self.counters.rs_sent += 1;
                Some(Transmit {
                    to: SocketAddrV4::new(rs.to, TEREDO_PORT),
                    len,
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "poll_transmit buffer too small; RS discarded");
                None
            }
        }
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Handles a datagram received on the client's socket from `from`. Only router
    /// advertisements answering an outstanding RS are accepted; every other datagram is
    /// refused with a counted [`DropReason`] and changes nothing.
    ///
    /// Checks, in order: source is the primary or secondary server address with port 3544
    /// (`unexpected_source`); well-formed Teredo packet (wire reasons); ICMPv6 RA
    /// (`not_router_advertisement`); auth header whose nonce is one of the outstanding RSs'
    /// (`bad_nonce`); confirmation 0 (`bad_confirmation`); origin indication
    /// (`missing_origin`); valid RA with exactly one PIO (wire reasons); IPv6 destination
    /// == the RS's link-local (`wrong_destination`); PIO 2001:0:<server>::/64, 3ffe:831f
    /// accepted and rewritten (`foreign_prefix`); MTU option in 1280..=65535 (`bad_mtu`);
    /// sent from the address the cone rule predicts — the other address for a cone RS, the
    /// same one otherwise (`unexpected_server_address`).
    pub fn handle_udp(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        data: &[u8],
    ) -> Result<(), DropReason> {
        let r = self.router_advertisement(now, from, data);
        match r {
            Ok(()) => self.counters.ra_accepted += 1,
            Err(reason) => {
                self.counters.count_reject(reason);
                tracing::debug!(%from, reason = reason.as_str(), len = data.len(), state = %self.state, "client drop");
            }
        }
        r
    }

    fn router_advertisement(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        data: &[u8],
    ) -> Result<(), DropReason> {
        let primary = self.cfg.server;
        let secondary = self.cfg.secondary_addr();
        if from.port() != TEREDO_PORT || (*from.ip() != primary && *from.ip() != secondary) {
            return Err(DropReason::UnexpectedSource);
        }
        if data.len() > MAX_UDP_PAYLOAD {
            return Err(DropReason::Oversized);
        }
        let pkt = TeredoPacket::parse(data)?;
        if pkt.next_header() != NEXT_HEADER_ICMPV6
            || pkt.ipv6_payload().first() != Some(&ICMPV6_ROUTER_ADVERTISEMENT)
        {
            return Err(DropReason::NotRouterAdvertisement);
        }
        let Some(ex) = self.exchange else {
            return Err(DropReason::BadNonce);
        };
        let Some(auth) = pkt.auth else {
            return Err(DropReason::BadNonce);
        };
        if !ex.has_nonce(&auth.nonce) {
            return Err(DropReason::BadNonce);
        }
        if auth.confirmation != 0 {
            return Err(DropReason::BadConfirmation);
        }
        let Some(origin) = pkt.origin else {
            return Err(DropReason::MissingOrigin);
        };
        let ra = RouterAdvertisement::parse(pkt.ipv6)?;
        let ll = if ex.cone {
            self.cfg.ll_cone
        } else {
            self.cfg.ll_restricted
        };
        if ra.dst != ll {
            return Err(DropReason::WrongDestination);
        }
        let (prefix, prefix_len) = ra.prefix;
        let p = prefix.octets();
        let known_prefix = p[..4] == TEREDO_PREFIX || p[..4] == TEREDO_PREFIX_OBSOLETE;
        if !known_prefix || prefix_len != 64 || p[4..8] != primary.octets() {
            return Err(DropReason::ForeignPrefix);
        }
        if ra
            .mtu
            .is_some_and(|m| !(MIN_RA_MTU..=MAX_RA_MTU).contains(&m))
        {
            return Err(DropReason::BadMtu);
        }
        let expected = match (ex.cone, ex.to == primary) {
            (false, _) => ex.to,
            (true, true) => secondary,
            (true, false) => primary,
        };
        if *from.ip() != expected {
            return Err(DropReason::UnexpectedServerAddress);
        }
        // Accepted. An obsolete 3ffe:831f prefix needs no rewriting here: the address is
        // always built under 2001:0::/32 from the (checked) server field.
        self.exchange = None;
        self.on_ra(now, ex, origin.0);
        Ok(())
    }

    fn on_ra(&mut self, now: Instant, ex: Exchange, mapped: SocketAddrV4) {
        tracing::debug!(step = ?ex.step, %mapped, "teredo client accepted RA");
        match ex.step {
            Step::Cone => {
                let nat = self.none_or(mapped, NatType::Cone);
                self.qualify(now, ex, mapped, nat);
            }
            Step::Restricted => {
                self.mapping = Some(mapped);
                if self.cfg.secondary_check {
                    self.set_state(State::Probe(ProbePhase::Secondary));
                    self.begin_exchange(now, Step::Secondary { m1: mapped });
                } else {
                    let nat = self.none_or(mapped, NatType::Restricted);
                    self.qualify(now, ex, mapped, nat);
                }
            }
            Step::Secondary { m1 } => {
                if mapped == m1 {
                    let nat = self.none_or(m1, NatType::Restricted);
                    self.qualify(now, ex, m1, nat);
                } else {
                    let nat = if mapped.ip() != m1.ip() {
                        NatType::SymmetricAddress
                    } else {
                        NatType::SymmetricPort
                    };
                    tracing::debug!(%m1, m2 = %mapped, %nat, "symmetric NAT detected");
                    self.mapping = Some(m1);
                    self.nat = nat;
                    if self.cfg.symmetric_support {
                        self.qualify(now, ex, m1, nat);
                    } else {
                        self.fail(now, ClientError::SymmetricNat);
                    }
                }
            }
            Step::Refresh => {
                if self.mapping != Some(mapped) {
                    let old = self.address;
                    self.mapping = Some(mapped);
                    if mapped == self.local {
                        self.nat = NatType::None;
                    } else if self.nat == NatType::None {
                        self.nat = NatType::Unknown;
                    }
                    let new = self.build_address(mapped, self.qualified_cone);
                    self.address = Some(new);
                    self.counters.address_changes += 1;
                    tracing::debug!(?old, %new, %mapped, "teredo mapping changed");
                    if let Some(old) = old {
                        self.push_event(Event::AddressChanged { old, new });
                    }
                }
                self.schedule_refresh(now, ex.last_sent);
            }
        }
    }

    fn none_or(&self, mapped: SocketAddrV4, nat: NatType) -> NatType {
        if mapped == self.local {
            NatType::None
        } else {
            nat
        }
    }

    fn qualify(&mut self, now: Instant, ex: Exchange, mapped: SocketAddrV4, nat: NatType) {
        self.mapping = Some(mapped);
        self.nat = nat;
        self.error = None;
        self.qualified_cone = ex.cone;
        let address = self.build_address(mapped, ex.cone);
        self.address = Some(address);
        self.last_activity = self.last_activity.max(now);
        self.counters.qualifications += 1;
        self.set_state(State::Qualified);
        self.push_event(Event::Qualified { address, nat });
        self.schedule_refresh(now, ex.last_sent);
    }

    /// Address = 2001:0:<server>:<flags>:~port:~IPv4, flags = C (if detected and used) |
    /// random bits (kept while the mapping is unchanged).
    fn build_address(&mut self, mapped: SocketAddrV4, cone: bool) -> Ipv6Addr {
        let random = if self.cfg.random_flags {
            match self.random_bits {
                Some((m, bits)) if m == mapped => bits,
                _ => {
                    let bits = (self.rng.next_u32() as u16) & FLAG_RANDOM_MASK;
                    self.random_bits = Some((mapped, bits));
                    bits
                }
            }
        } else {
            0
        };
        let c = if cone && self.cfg.use_cone_flag {
            FLAG_CONE
        } else {
            0
        };
        TeredoAddr {
            server: self.cfg.server,
            flags: c | random,
            mapped,
        }
        .to_ipv6()
    }

    fn schedule_refresh(&mut self, now: Instant, rs_sent: Instant) {
        let interval = self.cfg.refresh_interval.max(MIN_TIMER);
        self.next_refresh = match self.cfg.refresh_jitter {
            None => after(rs_sent, interval),
            Some((lo, hi)) => {
                let u = f64::from(self.rng.next_u32()) / f64::from(u32::MAX);
                let (lo, hi) = (f64::from(lo), f64::from(hi));
                let factor = (lo + (hi - lo) * u).clamp(0.5, 1.5);
                let factor = if factor.is_nan() { 1.0 } else { factor };
                let d = Duration::try_from_secs_f64(interval.as_secs_f64() * factor)
                    .unwrap_or(interval);
                after(now, d.max(MIN_TIMER))
            }
        };
    }

    fn start_qualification(&mut self, now: Instant) {
        self.retry_at = None;
        self.error = None;
        self.nat = NatType::Unknown;
        self.mapping = None;
        self.address = None;
        self.exchange = None;
        self.next_refresh = None;
        self.pending = None;
        if self.cfg.blocked_by_managed_network() {
            self.fail(now, ClientError::ManagedNetwork);
            return;
        }
        let (phase, step) = if self.cfg.cone_probe {
            (ProbePhase::Cone, Step::Cone)
        } else {
            (ProbePhase::Restricted, Step::Restricted)
        };
        self.set_state(State::Probe(phase));
        self.begin_exchange(now, step);
    }

    fn begin_exchange(&mut self, now: Instant, step: Step) {
        let (cone, to) = match step {
            Step::Cone => (true, self.cfg.server),
            Step::Restricted => (false, self.cfg.server),
            Step::Secondary { .. } => (false, self.cfg.secondary_addr()),
            Step::Refresh => (self.qualified_cone, self.cfg.server),
        };
        self.exchange = Some(Exchange {
            step,
            cone,
            to,
            sent: 0,
            last_sent: now,
            deadline: None,
            nonces: [[0; 8]; NONCE_RING],
            recorded: 0,
        });
        self.send_rs(now);
    }

    /// Queues the next RS of the current exchange with a fresh nonce.
    fn send_rs(&mut self, now: Instant) {
        let mut nonce = [0u8; 8];
        self.rng.fill_bytes(&mut nonce);
        let retransmit = self.cfg.retransmit.max(MIN_TIMER);
        let (ll_cone, ll_restricted) = (self.cfg.ll_cone, self.cfg.ll_restricted);
        let Some(ex) = self.exchange.as_mut() else {
            return;
        };
        ex.nonces[ex.recorded % NONCE_RING] = nonce;
        ex.recorded = ex.recorded.saturating_add(1);
        ex.sent = ex.sent.saturating_add(1);
        ex.last_sent = now;
        ex.deadline = after(now, retransmit);
        self.pending = Some(PendingRs {
            to: ex.to,
            src: if ex.cone { ll_cone } else { ll_restricted },
            nonce,
        });
    }

    fn exchange_failed(&mut self, now: Instant, step: Step) {
        tracing::debug!(?step, "teredo client: no RA after the retries");
        match step {
            Step::Cone => {
                self.set_state(State::Probe(ProbePhase::Restricted));
                self.begin_exchange(now, Step::Restricted);
            }
            Step::Restricted | Step::Refresh => {
                self.mapping = None;
                self.fail(now, ClientError::PrimaryUnreachable);
            }
            Step::Secondary { .. } => {
                self.mapping = None;
                self.fail(now, ClientError::SecondaryUnreachable);
            }
        }
    }

    fn fail(&mut self, now: Instant, error: ClientError) {
        self.exchange = None;
        self.next_refresh = None;
        self.pending = None;
        self.address = None;
        self.error = Some(error);
        self.counters.failures += 1;
        self.retry_at = match error {
            ClientError::ManagedNetwork => None,
            _ => after(now, self.cfg.offline_retry.max(MIN_TIMER)),
        };
        tracing::debug!(%error, "teredo client offline");
        self.set_state(State::Offline);
        self.push_event(Event::Failed { error });
    }

    fn enter_dormant(&mut self) {
        tracing::debug!("teredo client idle: dormant");
        self.exchange = None;
        self.next_refresh = None;
        self.pending = None;
        self.address = None;
        self.set_state(State::Dormant);
    }

    fn set_state(&mut self, state: State) {
        if self.state != state {
            tracing::debug!(from = %self.state, to = %state, "teredo client state");
            self.state = state;
            self.push_event(Event::StateChanged(state));
        }
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.counters.events_dropped += 1;
        }
        self.events.push_back(e);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::addr::server_link_local;
    use crate::server::{Local, Output, Server, ServerConfig};
    use crate::wire::ipv6::finish_icmpv6;
    use crate::wire::ndp::RaParams;

    const P: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const S: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    /// A client behind a NAT.
    const PRIVATE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 10), 5000);
    /// A client with a global address (no NAT).
    const GLOBAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 77), 5000);
    /// The NAT's external address.
    const EXT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 40000);

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// How the fake NAT picks the external address for a destination.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Mapping {
        /// No translation.
        Identity,
        /// Endpoint-independent: one external address for everything.
        Fixed(SocketAddrV4),
        /// A different port per destination IPv4.
        SymmetricPort(SocketAddrV4),
        /// A different external IPv4 per destination IPv4.
        SymmetricAddress(SocketAddrV4),
    }

    /// A minimal NAT: mapping per [`Mapping`], and optionally address-restricted filtering
    /// (inbound only from an IPv4 the mapping has sent to).
    struct Nat {
        mapping: Mapping,
        restricted: bool,
        sent: HashSet<(SocketAddrV4, Ipv4Addr)>,
    }

    impl Nat {
        fn new(mapping: Mapping, restricted: bool) -> Self {
            Self {
                mapping,
                restricted,
                sent: HashSet::new(),
            }
        }

        fn outbound(&mut self, local: SocketAddrV4, to: SocketAddrV4) -> SocketAddrV4 {
            let d = to.ip().octets()[3];
            let ext = match self.mapping {
                Mapping::Identity => local,
                Mapping::Fixed(e) => e,
                Mapping::SymmetricPort(e) => SocketAddrV4::new(*e.ip(), e.port() + u16::from(d)),
                Mapping::SymmetricAddress(e) => {
                    let o = e.ip().octets();
                    SocketAddrV4::new(Ipv4Addr::new(o[0], o[1], o[2], o[3] + d), e.port())
                }
            };
            self.sent.insert((ext, *to.ip()));
            ext
        }

        fn inbound(&self, from: SocketAddrV4, to: SocketAddrV4) -> bool {
            if !self.sent.iter().any(|(e, _)| *e == to) {
                return false;
            }
            !self.restricted || self.sent.contains(&(to, *from.ip()))
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Kind {
        NoNat,
        Cone,
        Restricted,
        SymPort,
        SymAddr,
    }

    const KINDS: [Kind; 5] = [
        Kind::NoNat,
        Kind::Cone,
        Kind::Restricted,
        Kind::SymPort,
        Kind::SymAddr,
    ];

    fn nat_for(kind: Kind) -> (Nat, SocketAddrV4) {
        match kind {
            Kind::NoNat => (Nat::new(Mapping::Identity, false), GLOBAL),
            Kind::Cone => (Nat::new(Mapping::Fixed(EXT), false), PRIVATE),
            Kind::Restricted => (Nat::new(Mapping::Fixed(EXT), true), PRIVATE),
            Kind::SymPort => (Nat::new(Mapping::SymmetricPort(EXT), true), PRIVATE),
            Kind::SymAddr => (Nat::new(Mapping::SymmetricAddress(EXT), true), PRIVATE),
        }
    }

    /// One client, one NAT, one real [`Server`], in memory, on virtual time.
    struct Lab {
        client: Client,
        server: Server,
        nat: Nat,
        t0: Instant,
        now: Instant,
        server_up: bool,
        /// (time since t0, destination, RS source link-local) of every RS sent.
        rs_log: Vec<(Duration, SocketAddrV4, Ipv6Addr)>,
        drops: Vec<DropReason>,
        events: Vec<(Duration, Event)>,
    }

    impl Lab {
        fn new(cfg: ClientConfig, kind: Kind, seed: u64) -> Self {
            Self::with_server(cfg, kind, seed, true)
        }

        fn with_server(cfg: ClientConfig, kind: Kind, seed: u64, server_up: bool) -> Self {
            let (nat, local) = nat_for(kind);
            let t0 = t0();
            let client = Client::new(cfg, ChaCha8Rng::seed_from_u64(seed), local, t0);
            let mut lab = Self {
                client,
                server: Server::new(ServerConfig::new(P)),
                nat,
                t0,
                now: t0,
                server_up,
                rs_log: Vec::new(),
                drops: Vec::new(),
                events: Vec::new(),
            };
            lab.pump();
            lab
        }

        fn profile(p: Profile, kind: Kind) -> Self {
            Self::new(ClientConfig::profile(p, P), kind, 7)
        }

        fn elapsed(&self) -> Duration {
            self.now - self.t0
        }

        /// Moves datagrams until nothing is left to send.
        fn pump(&mut self) {
            let mut buf = [0u8; 1500];
            let mut sbuf = vec![0u8; MAX_UDP_PAYLOAD];
            while let Some(t) = self.client.poll_transmit(&mut buf) {
                let pkt = TeredoPacket::parse(&buf[..t.len]).expect("RS parses");
                self.rs_log.push((self.elapsed(), t.to, pkt.src()));
                let src = self.nat.outbound(self.client.local(), t.to);
                if !self.server_up || t.to.port() != TEREDO_PORT {
                    continue;
                }
                let local = match *t.to.ip() {
                    ip if ip == P => Local::Primary,
                    ip if ip == S => Local::Secondary,
                    _ => continue,
                };
                if self
                    .server
                    .handle_udp(self.now, local, src, &buf[..t.len])
                    .is_err()
                {
                    continue;
                }
                while let Some(out) = self.server.poll_output(&mut sbuf) {
                    let Output::Udp {
                        from_local,
                        to,
                        len,
                    } = out
                    else {
                        continue;
                    };
                    let from = SocketAddrV4::new(self.server.address(from_local), TEREDO_PORT);
                    if self.nat.inbound(from, to) {
                        if let Err(r) = self.client.handle_udp(self.now, from, &sbuf[..len]) {
                            self.drops.push(r);
                        }
                    }
                }
            }
            while let Some(e) = self.client.poll_event() {
                self.events.push((self.elapsed(), e));
            }
        }

        /// Runs timers for `d` of virtual time, jumping from one `poll_timeout` to the next.
        fn run_for(&mut self, d: Duration) {
            let end = self.now + d;
            self.pump();
            let mut guard = 0;
            while let Some(t) = self.client.poll_timeout() {
                if t > end {
                    break;
                }
                guard += 1;
                assert!(guard < 100_000, "timer loop does not advance");
                self.now = self.now.max(t);
                self.client.handle_timeout(self.now);
                self.pump();
            }
            self.now = end;
        }

        fn addr(&self) -> TeredoAddr {
            TeredoAddr::from_ipv6(&self.client.address().expect("qualified")).unwrap()
        }

        fn rs_times(&self) -> Vec<u64> {
            self.rs_log.iter().map(|(t, _, _)| t.as_secs()).collect()
        }

        fn qualified_events(&self) -> Vec<(Ipv6Addr, NatType)> {
            self.events
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::Qualified { address, nat } => Some((*address, *nat)),
                    _ => None,
                })
                .collect()
        }
    }

    /// Expected outcome of qualification: (state, NAT type, C bit, error).
    fn expected(p: Profile, k: Kind) -> (State, NatType, bool, Option<ClientError>) {
        use Kind::*;
        use NatType as N;
        let q = State::Qualified;
        let sym_off = |n| (State::Offline, n, false, Some(ClientError::SymmetricNat));
        match (p, k) {
            (Profile::XpSp2, NoNat) => (q, N::None, true, None),
            (Profile::XpSp2, Cone) => (q, N::Cone, true, None),
            (Profile::XpSp2, Restricted) => (q, N::Restricted, false, None),
            (Profile::XpSp2 | Profile::Rfc5991, SymPort) => sym_off(N::SymmetricPort),
            (Profile::XpSp2 | Profile::Rfc5991, SymAddr) => sym_off(N::SymmetricAddress),
            (Profile::Rfc5991 | Profile::Miredo, NoNat) => (q, N::None, false, None),
            (Profile::Rfc5991 | Profile::Miredo, Cone | Restricted) => {
                (q, N::Restricted, false, None)
            }
            (Profile::Vista | Profile::Win7, NoNat) => (q, N::None, false, None),
            (Profile::Vista | Profile::Win7, Cone) => (q, N::Cone, false, None),
            (Profile::Vista | Profile::Win7, Restricted) => (q, N::Restricted, false, None),
            (Profile::Vista | Profile::Win7, SymPort) => (q, N::SymmetricPort, false, None),
            (Profile::Vista | Profile::Win7, SymAddr) => (q, N::SymmetricAddress, false, None),
            (Profile::Miredo, SymPort | SymAddr) => (q, N::Restricted, false, None),
        }
    }

    #[test]
    fn profile_matrix() {
        for &p in Profile::ALL {
            for k in KINDS {
                let mut lab = Lab::profile(p, k);
                lab.run_for(secs(60));
                let (state, nat, cone, error) = expected(p, k);
                let ctx = format!("{p} behind {k:?}: {:?}", lab.client.status());
                assert_eq!(lab.client.state(), state, "{ctx}");
                assert_eq!(lab.client.nat_type(), nat, "{ctx}");
                assert_eq!(lab.client.error(), error, "{ctx}");
                assert!(lab.drops.is_empty(), "{ctx}: {:?}", lab.drops);
                let cfg = ClientConfig::profile(p, P);
                // RS link-locals are the profile's.
                for (_, _, src) in &lab.rs_log {
                    assert!(*src == cfg.ll_restricted || *src == cfg.ll_cone, "{ctx}");
                }
                if state != State::Qualified {
                    assert_eq!(lab.client.address(), None, "{ctx}");
                    assert_eq!(
                        lab.client.error().unwrap().to_string(),
                        "client behind symmetric NAT"
                    );
                    assert!(lab.events.iter().any(|(_, e)| *e
                        == Event::Failed {
                            error: ClientError::SymmetricNat
                        }));
                    continue;
                }
                let a = lab.addr();
                assert_eq!(a.server, P, "{ctx}");
                assert_eq!(a.is_cone(), cone, "{ctx}");
                let want_mapping = match k {
                    Kind::NoNat => GLOBAL,
                    Kind::Cone | Kind::Restricted => EXT,
                    // M1 is the mapping towards the primary.
                    Kind::SymPort => SocketAddrV4::new(*EXT.ip(), EXT.port() + 1),
                    Kind::SymAddr => SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 6), 40000),
                };
                assert_eq!(a.mapped, want_mapping, "{ctx}");
                assert_eq!(lab.client.mapping(), Some(want_mapping), "{ctx}");
                let random = a.flags & !FLAG_CONE;
                assert_eq!(
                    random & !FLAG_RANDOM_MASK,
                    0,
                    "{ctx}: flags {:#06x}",
                    a.flags
                );
                if !cfg.random_flags {
                    assert_eq!(random, 0, "{ctx}");
                }
                assert_eq!(
                    lab.qualified_events(),
                    vec![(lab.client.address().unwrap(), nat)],
                    "{ctx}"
                );
            }
        }
    }

    #[test]
    fn random_bits_are_random_and_deterministic() {
        let flags = |seed| {
            let mut lab = Lab::new(
                ClientConfig::profile(Profile::Rfc5991, P),
                Kind::Restricted,
                seed,
            );
            lab.run_for(secs(1));
            lab.addr().flags
        };
        assert_eq!(flags(1), flags(1));
        let all: HashSet<u16> = (0..16).map(flags).collect();
        assert!(all.len() > 8, "{all:?}");
        assert!(all.iter().all(|f| f & !FLAG_RANDOM_MASK == 0));
    }

    #[test]
    fn message_flow_timing() {
        // Vista behind a restricted NAT: 3 cone RSs 4 s apart, then restricted + secondary.
        let mut lab = Lab::profile(Profile::Vista, Kind::Restricted);
        lab.run_for(secs(13));
        let log: Vec<_> = lab
            .rs_log
            .iter()
            .map(|(t, to, src)| (t.as_secs(), *to.ip(), *src))
            .collect();
        assert_eq!(
            log,
            vec![
                (0, P, LL_WINDOWS_CONE),
                (4, P, LL_WINDOWS_CONE),
                (8, P, LL_WINDOWS_CONE),
                (12, P, LL_WINDOWS_RESTRICTED),
                (12, S, LL_WINDOWS_RESTRICTED),
            ]
        );
        let states: Vec<_> = lab
            .events
            .iter()
            .filter_map(|(t, e)| match e {
                Event::StateChanged(s) => Some((t.as_secs(), *s)),
                _ => None,
            })
            .collect();
        assert_eq!(
            states,
            vec![
                (0, State::Probe(ProbePhase::Cone)),
                (12, State::Probe(ProbePhase::Restricted)),
                (12, State::Probe(ProbePhase::Secondary)),
                (12, State::Qualified),
            ]
        );
        // Cone NAT: the cone RS is answered from the secondary address and qualifies at once.
        let mut lab = Lab::profile(Profile::XpSp2, Kind::Cone);
        lab.run_for(secs(1));
        assert_eq!(lab.rs_times(), vec![0]);
        assert_eq!(lab.client.state(), State::Qualified);
        // Miredo: a single restricted RS to the primary.
        let mut lab = Lab::profile(Profile::Miredo, Kind::Restricted);
        lab.run_for(secs(1));
        assert_eq!(
            lab.rs_log,
            vec![(
                Duration::ZERO,
                SocketAddrV4::new(P, 3544),
                LL_MIREDO_RESTRICTED
            )]
        );
    }

    #[test]
    fn unreachable_server_goes_offline_then_retries() {
        for &p in Profile::ALL {
            let cfg = ClientConfig::profile(p, P);
            let mut lab = Lab::with_server(cfg.clone(), Kind::Restricted, 7, false);
            lab.run_for(secs(200));
            // 4 s × 3 per phase; the cone phase (if any) first.
            let phase = if cfg.cone_probe { 24 } else { 12 };
            let first_round: Vec<u64> = (0..phase / 4).map(|i| i * 4).collect();
            let times = lab.rs_times();
            assert_eq!(&times[..first_round.len()], &first_round[..], "{p}");
            // Retry after 100 s offline.
            assert_eq!(times[first_round.len()], phase + 100, "{p}");
            let failed: Vec<_> = lab
                .events
                .iter()
                .filter(|(_, e)| matches!(e, Event::Failed { .. }))
                .map(|(t, e)| (t.as_secs(), *e))
                .collect();
            assert_eq!(
                failed[0],
                (
                    phase,
                    Event::Failed {
                        error: ClientError::PrimaryUnreachable
                    }
                ),
                "{p}"
            );
            // Observe the offline state between attempts.
            let mut lab = Lab::with_server(cfg, Kind::Restricted, 7, false);
            lab.run_for(secs(phase + 1));
            assert_eq!(lab.client.state(), State::Offline, "{p}");
            assert_eq!(
                lab.client.error().map(|e| e.to_string()).as_deref(),
                Some("cannot reach primary Teredo server over UDP")
            );
            assert_eq!(lab.client.address(), None);
            assert_eq!(
                lab.client.poll_timeout(),
                Some(lab.t0 + secs(phase + 100)),
                "{p}"
            );
            // The server comes back: the retry qualifies.
            lab.server_up = true;
            lab.run_for(secs(120));
            assert_eq!(lab.client.state(), State::Qualified, "{p}");
            assert_eq!(lab.client.error(), None);
        }
    }

    #[test]
    fn secondary_unreachable() {
        let mut cfg = ClientConfig::profile(Profile::Rfc5991, P);
        cfg.secondary = Some(Ipv4Addr::new(198, 51, 100, 99));
        let mut lab = Lab::new(cfg, Kind::Restricted, 1);
        lab.run_for(secs(13));
        assert_eq!(lab.client.state(), State::Offline);
        assert_eq!(lab.client.error(), Some(ClientError::SecondaryUnreachable));
        assert_eq!(lab.rs_times(), vec![0, 0, 4, 8]);
    }

    #[test]
    fn symmetric_offline_retries_and_miredo_never_probes_secondary() {
        let mut lab = Lab::profile(Profile::XpSp2, Kind::SymPort);
        lab.run_for(secs(13));
        assert_eq!(lab.client.state(), State::Offline);
        assert_eq!(lab.client.nat_type(), NatType::SymmetricPort);
        let st = lab.client.status();
        assert_eq!(st.error, Some(ClientError::SymmetricNat));
        assert!(st
            .to_string()
            .contains("Error                   : client behind symmetric NAT"));
        assert!(st
            .to_string()
            .contains("NAT                     : symmetric (port)"));
        lab.run_for(secs(100));
        assert!(matches!(lab.client.state(), State::Probe(_)));
        let mut lab = Lab::profile(Profile::Miredo, Kind::SymAddr);
        lab.run_for(secs(100));
        assert!(lab.rs_log.iter().all(|(_, to, _)| *to.ip() == P));
    }

    /// Gaps between the qualifying RS at `qualified_at` and the refresh RSs after it.
    fn refresh_gaps(lab: &Lab, qualified_at: Duration) -> Vec<f64> {
        let t: Vec<f64> = std::iter::once(qualified_at)
            .chain(
                lab.rs_log
                    .iter()
                    .map(|(t, _, _)| *t)
                    .filter(|t| *t > qualified_at),
            )
            .map(|t| t.as_secs_f64())
            .collect();
        t.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[test]
    fn refresh_intervals() {
        // Miredo: exactly 30 s after the previous RS.
        let mut lab = Lab::profile(Profile::Miredo, Kind::Restricted);
        lab.run_for(secs(301));
        assert_eq!(
            lab.rs_times(),
            vec![0, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300]
        );
        let first = lab.client.address();
        assert_eq!(lab.client.counters().ra_accepted, 11);
        assert_eq!(lab.client.counters().rs_sent, 11);
        // Randomized: within 75–100 % of 30 s, not all equal, refresh RS to the primary
        // with the link-local that qualified.
        for (p, kind, ll) in [
            (Profile::Rfc5991, Kind::Restricted, LL_WINDOWS_RESTRICTED),
            (Profile::Vista, Kind::Restricted, LL_WINDOWS_RESTRICTED),
            (Profile::Vista, Kind::Cone, LL_WINDOWS_CONE),
            (Profile::Win7, Kind::SymPort, LL_WINDOWS_RESTRICTED),
            (Profile::XpSp2, Kind::Cone, LL_TEREDO_CONE),
        ] {
            let mut lab = Lab::profile(p, kind);
            lab.run_for(secs(25));
            let qualified_at = lab.rs_log.last().unwrap().0;
            let addr = lab.client.address().unwrap();
            let n = lab.rs_log.len();
            lab.run_for(secs(600));
            assert_eq!(lab.client.state(), State::Qualified, "{p}");
            assert_eq!(lab.client.address(), Some(addr), "{p}: flags kept");
            let refreshes = &lab.rs_log[n..];
            assert!(refreshes.len() >= 20, "{p}: {}", refreshes.len());
            assert!(
                refreshes
                    .iter()
                    .all(|(_, to, src)| *to == SocketAddrV4::new(P, 3544) && *src == ll),
                "{p}"
            );
            let gaps = refresh_gaps(&lab, qualified_at);
            assert!(
                gaps.iter().all(|g| (22.5..=30.0).contains(g)),
                "{p}: {gaps:?}"
            );
            let distinct: HashSet<u64> = gaps.iter().map(|g| (g * 1000.0) as u64).collect();
            assert!(distinct.len() > 5, "{p}: {gaps:?}");
            assert!(lab.drops.is_empty());
        }
        assert!(first.is_some());
    }

    #[test]
    fn mapping_change_gives_new_address() {
        for &p in Profile::ALL {
            let mut lab = Lab::profile(p, Kind::Restricted);
            lab.run_for(secs(40));
            let old = lab.client.address().unwrap();
            let old_flags = lab.addr().flags;
            let ext2 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 41000);
            lab.nat.mapping = Mapping::Fixed(ext2);
            lab.run_for(secs(31));
            let new = lab.client.address().unwrap();
            assert_ne!(old, new, "{p}");
            let a = lab.addr();
            assert_eq!(a.mapped, ext2, "{p}");
            assert_eq!(a.server, P);
            assert_eq!(a.flags & !(FLAG_RANDOM_MASK | FLAG_CONE), 0);
            if !lab.client.config().random_flags {
                assert_eq!(a.flags, old_flags);
            }
            let changes: Vec<_> = lab
                .events
                .iter()
                .filter(|(_, e)| matches!(e, Event::AddressChanged { .. }))
                .map(|(_, e)| *e)
                .collect();
            assert_eq!(changes, vec![Event::AddressChanged { old, new }], "{p}");
            assert_eq!(lab.client.counters().address_changes, 1);
            assert_eq!(lab.client.state(), State::Qualified);
            // Stable afterwards.
            lab.run_for(secs(120));
            assert_eq!(lab.client.address(), Some(new), "{p}");
        }
    }

    #[test]
    fn refresh_failure_goes_offline() {
        let mut lab = Lab::profile(Profile::Miredo, Kind::Restricted);
        lab.run_for(secs(1));
        lab.server_up = false;
        lab.run_for(secs(60));
        // RS at 30, 34, 38 unanswered: offline at 42 (Miredo: "down ≈12 s after the refresh").
        assert_eq!(lab.rs_times(), vec![0, 30, 34, 38]);
        assert_eq!(lab.client.state(), State::Offline);
        assert_eq!(lab.client.address(), None);
        assert!(lab.events.contains(&(
            secs(42),
            Event::Failed {
                error: ClientError::PrimaryUnreachable
            }
        )));
    }

    /// A client of `profile` whose first RS has been taken: (client, nonce, RS source).
    fn probing(profile: Profile) -> (Client, Instant, [u8; 8], Ipv6Addr) {
        let now = t0();
        let mut c = Client::new(
            ClientConfig::profile(profile, P),
            ChaCha8Rng::seed_from_u64(3),
            PRIVATE,
            now,
        );
        let mut buf = [0u8; MAX_RS_LEN];
        let t = c.poll_transmit(&mut buf).unwrap();
        assert_eq!(t.to, SocketAddrV4::new(P, 3544));
        let pkt = TeredoPacket::parse(&buf[..t.len]).unwrap();
        (c, now, pkt.auth.unwrap().nonce, pkt.src())
    }

    fn ra(nonce: Option<[u8; 8]>, dst: Ipv6Addr, primary: Ipv4Addr, mtu: Option<u32>) -> Vec<u8> {
        let p = RaParams {
            auth: nonce.map(Auth::nonce_only),
            origin: EXT,
            src: server_link_local(P),
            dst,
            primary,
            mtu,
        };
        let mut buf = vec![0u8; 256];
        let n = p.emit(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn bad_ras_are_rejected_with_their_reason() {
        let (mut c, now, nonce, ll) = probing(Profile::Miredo);
        let from = SocketAddrV4::new(P, 3544);
        let good = ra(Some(nonce), ll, P, Some(1280));
        let mut cases: Vec<(&str, SocketAddrV4, Vec<u8>, DropReason)> = vec![
            (
                "wrong nonce",
                from,
                ra(Some([0xee; 8]), ll, P, Some(1280)),
                DropReason::BadNonce,
            ),
            (
                "no auth",
                from,
                ra(None, ll, P, Some(1280)),
                DropReason::BadNonce,
            ),
            (
                "foreign prefix",
                from,
                ra(Some(nonce), ll, Ipv4Addr::new(198, 51, 100, 7), Some(1280)),
                DropReason::ForeignPrefix,
            ),
            (
                "wrong source port",
                SocketAddrV4::new(P, 3545),
                good.clone(),
                DropReason::UnexpectedSource,
            ),
            (
                "non-server IP",
                SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 66), 3544),
                good.clone(),
                DropReason::UnexpectedSource,
            ),
            (
                "wrong destination",
                from,
                ra(Some(nonce), LL_WINDOWS_RESTRICTED, P, None),
                DropReason::WrongDestination,
            ),
            (
                "small MTU",
                from,
                ra(Some(nonce), ll, P, Some(1000)),
                DropReason::BadMtu,
            ),
            (
                "huge MTU",
                from,
                ra(Some(nonce), ll, P, Some(70_000)),
                DropReason::BadMtu,
            ),
            (
                "restricted RA from the secondary",
                SocketAddrV4::new(S, 3544),
                good.clone(),
                DropReason::UnexpectedServerAddress,
            ),
        ];
        // No origin indication: cut the 8 bytes after the auth header.
        let mut no_oi = good.clone();
        no_oi.drain(13..21);
        cases.push(("no OI", from, no_oi, DropReason::MissingOrigin));
        // Confirmation byte set.
        let mut conf = good.clone();
        conf[12] = 1;
        cases.push(("confirmation", from, conf, DropReason::BadConfirmation));
        // A bubble from the server.
        let mut bubble = good[..21].to_vec();
        let mut b = [0u8; 40];
        crate::wire::ipv6::emit_bubble(&mut b, server_link_local(P), ll, 0).unwrap();
        bubble.extend_from_slice(&b);
        cases.push(("bubble", from, bubble, DropReason::NotRouterAdvertisement));
        // Broken ICMPv6 checksum.
        let mut sum = good.clone();
        let last = sum.len() - 1;
        sum[last] ^= 1;
        cases.push(("checksum", from, sum, DropReason::BadChecksum));
        // A second prefix information option.
        let mut two = good.clone();
        let pio = two[21 + 40 + 16..21 + 40 + 16 + 32].to_vec();
        two.extend_from_slice(&pio);
        let plen = u16::from_be_bytes([two[21 + 4], two[21 + 5]]) + 32;
        two[21 + 4..21 + 6].copy_from_slice(&plen.to_be_bytes());
        finish_icmpv6(&mut two[21..]);
        cases.push(("two PIOs", from, two, DropReason::Malformed));
        assert_eq!(
            c.poll_event(),
            Some(Event::StateChanged(State::Probe(ProbePhase::Restricted)))
        );
        for (what, from, bytes, reason) in &cases {
            assert_eq!(c.handle_udp(now, *from, bytes), Err(*reason), "{what}");
            assert_eq!(c.state(), State::Probe(ProbePhase::Restricted), "{what}");
            assert_eq!(c.address(), None);
            assert_eq!(c.poll_event(), None, "{what}");
        }
        assert_eq!(c.counters().ra_rejected, cases.len() as u64);
        assert_eq!(c.counters().rejected(DropReason::BadNonce), 2);
        assert_eq!(c.counters().rejected(DropReason::BadMtu), 2);
        assert_eq!(c.counters().ra_accepted, 0);
        // Truncations and garbage never panic and never qualify.
        for n in 0..good.len() {
            assert!(c.handle_udp(now, from, &good[..n]).is_err(), "len {n}");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        for _ in 0..2000 {
            let len = (rng.next_u32() % 200) as usize;
            let mut junk = vec![0u8; len];
            rng.fill_bytes(&mut junk);
            if len > 1 && rng.next_u32() % 2 == 0 {
                junk[..2].copy_from_slice(&[0, 1]);
            }
            let _ = c.handle_udp(now, from, &junk);
        }
        assert_eq!(c.state(), State::Probe(ProbePhase::Restricted));
        // The genuine RA still qualifies; replaying it afterwards is refused.
        assert_eq!(c.handle_udp(now, from, &good), Ok(()));
        assert_eq!(c.state(), State::Qualified);
        assert_eq!(c.mapping(), Some(EXT));
        assert_eq!(c.handle_udp(now, from, &good), Err(DropReason::BadNonce));
    }

    #[test]
    fn obsolete_prefix_is_accepted_and_rewritten() {
        let (mut c, now, nonce, ll) = probing(Profile::Miredo);
        let mut v = ra(Some(nonce), ll, P, None);
        // PIO prefix starts 13 + 8 + 40 + 16 + 16 bytes in.
        let at = 13 + 8 + 40 + 16 + 16;
        assert_eq!(&v[at..at + 4], &TEREDO_PREFIX);
        v[at..at + 4].copy_from_slice(&TEREDO_PREFIX_OBSOLETE);
        finish_icmpv6(&mut v[21..]);
        assert_eq!(c.handle_udp(now, SocketAddrV4::new(P, 3544), &v), Ok(()));
        let a = c.address().unwrap();
        assert_eq!(a.octets()[..4], TEREDO_PREFIX);
        assert_eq!(TeredoAddr::from_ipv6(&a).unwrap().mapped, EXT);
    }

    #[test]
    fn cone_ra_from_the_same_address_is_not_cone() {
        // A server that wrongly answers a cone RS from the address it arrived on must not
        // make the client conclude "cone" (RFC 5991 §3.2).
        let (mut c, now, nonce, ll) = probing(Profile::XpSp2);
        assert_eq!(ll, LL_TEREDO_CONE);
        let v = ra(Some(nonce), ll, P, None);
        assert_eq!(
            c.handle_udp(now, SocketAddrV4::new(P, 3544), &v),
            Err(DropReason::UnexpectedServerAddress)
        );
        assert_eq!(c.handle_udp(now, SocketAddrV4::new(S, 3544), &v), Ok(()));
        assert_eq!(c.nat_type(), NatType::Cone);
        assert!(TeredoAddr::from_ipv6(&c.address().unwrap())
            .unwrap()
            .is_cone());
    }

    #[test]
    fn every_rs_has_a_fresh_nonce_and_late_answers_count() {
        let (mut c, now, n1, ll) = probing(Profile::Miredo);
        c.handle_timeout(now + secs(4));
        let mut buf = [0u8; MAX_RS_LEN];
        let t = c.poll_transmit(&mut buf).unwrap();
        let n2 = TeredoPacket::parse(&buf[..t.len])
            .unwrap()
            .auth
            .unwrap()
            .nonce;
        assert_ne!(n1, n2);
        assert_eq!(t.len, 61);
        // The RA to the first RS arrives late: still the current phase, accepted.
        let v = ra(Some(n1), ll, P, None);
        assert_eq!(
            c.handle_udp(now + secs(5), SocketAddrV4::new(P, 3544), &v),
            Ok(())
        );
        assert_eq!(c.state(), State::Qualified);
    }

    #[test]
    fn xp_rs_carries_slla() {
        let now = t0();
        let mut c = Client::new(
            ClientConfig::profile(Profile::XpSp2, P),
            ChaCha8Rng::seed_from_u64(3),
            PRIVATE,
            now,
        );
        let mut buf = [0u8; MAX_RS_LEN];
        let t = c.poll_transmit(&mut buf).unwrap();
        assert_eq!(t.len, 13 + 40 + 24);
        let pkt = TeredoPacket::parse(&buf[..t.len]).unwrap();
        assert_eq!(pkt.src(), LL_TEREDO_CONE);
        crate::wire::ndp::RouterSolicitation::parse(pkt.ipv6).unwrap();
        // Too small a buffer loses the RS without panicking.
        c.handle_timeout(now + secs(4));
        assert_eq!(c.poll_transmit(&mut buf[..10]), None);
    }

    #[test]
    fn win7_goes_dormant_unless_default_qualified() {
        let mut lab = Lab::profile(Profile::Win7, Kind::Restricted);
        lab.run_for(secs(59 * 60));
        assert_eq!(lab.client.state(), State::Qualified);
        lab.run_for(secs(2 * 60));
        assert_eq!(lab.client.state(), State::Dormant);
        assert_eq!(lab.client.address(), None);
        assert_eq!(lab.client.poll_timeout(), None);
        let dormant_at = lab
            .events
            .iter()
            .find(|(_, e)| *e == Event::StateChanged(State::Dormant))
            .unwrap()
            .0;
        // Idle time counts from qualification (12 s: after the cone probe).
        assert_eq!(dormant_at, secs(12) + WIN7_DORMANT_AFTER);
        let n = lab.rs_log.len();
        lab.run_for(secs(3600));
        assert_eq!(lab.rs_log.len(), n, "no refresh while dormant");
        // Activity wakes it up and it qualifies again.
        let now = lab.now;
        lab.client.note_activity(now);
        lab.run_for(secs(20));
        assert_eq!(lab.client.state(), State::Qualified);
        assert_eq!(lab.qualified_events().len(), 2);

        // Activity keeps it qualified.
        let mut lab = Lab::profile(Profile::Win7, Kind::Restricted);
        for _ in 0..12 {
            lab.run_for(secs(10 * 60));
            let now = lab.now;
            lab.client.note_activity(now);
        }
        assert_eq!(lab.client.state(), State::Qualified);

        // default_qualified: never dormant; other profiles never dormant.
        let mut cfg = ClientConfig::profile(Profile::Win7, P);
        cfg.default_qualified = true;
        let mut lab = Lab::new(cfg, Kind::Restricted, 5);
        lab.run_for(secs(3 * 3600));
        assert_eq!(lab.client.state(), State::Qualified);
        let mut lab = Lab::profile(Profile::Vista, Kind::Restricted);
        lab.run_for(secs(3 * 3600));
        assert_eq!(lab.client.state(), State::Qualified);
        // wake() explicitly.
        let mut lab = Lab::profile(Profile::Win7, Kind::Cone);
        lab.run_for(secs(2 * 3600));
        assert_eq!(lab.client.state(), State::Dormant);
        let now = lab.now;
        lab.client.wake(now);
        lab.pump();
        assert_eq!(lab.client.state(), State::Qualified);
        assert_eq!(lab.client.nat_type(), NatType::Cone);
    }

    #[test]
    fn managed_network_rule() {
        for &p in Profile::ALL {
            let mut cfg = ClientConfig::profile(p, P);
            cfg.managed_network = true;
            let mut lab = Lab::new(cfg.clone(), Kind::Restricted, 1);
            lab.run_for(secs(600));
            if p.is_windows() {
                assert_eq!(lab.client.state(), State::Offline, "{p}");
                assert!(lab.rs_log.is_empty());
                assert_eq!(lab.client.poll_timeout(), None);
                assert_eq!(
                    lab.client.error().unwrap().to_string(),
                    "client is in a managed network"
                );
                assert_eq!(
                    lab.events,
                    vec![(
                        Duration::ZERO,
                        Event::Failed {
                            error: ClientError::ManagedNetwork
                        }
                    )]
                );
                assert!(lab
                    .client
                    .status()
                    .to_string()
                    .contains("Network                 : managed"));
            } else {
                assert_eq!(lab.client.state(), State::Qualified, "{p}");
            }
            cfg.client_type = ClientType::EnterpriseClient;
            let mut lab = Lab::new(cfg, Kind::Restricted, 1);
            lab.run_for(secs(60));
            assert_eq!(lab.client.state(), State::Qualified, "{p}");
        }
    }

    #[test]
    fn status_snapshot() {
        let mut lab = Lab::profile(Profile::Rfc5991, Kind::Restricted);
        lab.run_for(secs(1));
        let st = lab.client.status();
        assert_eq!(st.state, State::Qualified);
        assert_eq!(st.nat, NatType::Restricted);
        assert_eq!(st.client_port, 5000);
        assert_eq!(st.local_mapping, PRIVATE);
        assert_eq!(st.external_mapping, Some(EXT));
        assert_eq!(st.port_preserving, Some(false));
        assert_eq!(st.server_name, "198.51.100.1");
        let text = st.to_string();
        for line in [
            "Type                    : client",
            "Client Refresh Interval : 30 seconds",
            "State                   : qualified",
            "NAT                     : restricted",
            "NAT Special Behaviour   : UPNP: No, PortPreserving: No",
            "Local Mapping           : 192.168.1.10:5000",
            "External NAT Mapping    : 203.0.113.5:40000",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        assert!(!text.contains("Error"));
        // Port-preserving NAT.
        let mut cfg = ClientConfig::profile(Profile::Vista, P);
        cfg.server_name = Some("teredo.example".into());
        let mut lab = Lab::new(cfg, Kind::Restricted, 1);
        lab.nat.mapping = Mapping::Fixed(SocketAddrV4::new(*EXT.ip(), PRIVATE.port()));
        lab.run_for(secs(20));
        let st = lab.client.status();
        assert_eq!(st.port_preserving, Some(true));
        assert_eq!(st.server_name, "teredo.example");
    }

    #[test]
    fn names_and_labels() {
        for &p in Profile::ALL {
            assert_eq!(p.as_str().parse::<Profile>(), Ok(p));
            assert_eq!(p.to_string(), p.as_str());
        }
        assert_eq!("WIN7".parse::<Profile>(), Ok(Profile::Win7));
        assert!("xp".parse::<Profile>().is_err());
        let nat: Vec<String> = [
            NatType::None,
            NatType::Cone,
            NatType::Restricted,
            NatType::SymmetricPort,
            NatType::SymmetricAddress,
            NatType::Unknown,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            nat,
            [
                "none",
                "cone",
                "restricted",
                "symmetric (port)",
                "symmetric (address)",
                "unknown"
            ]
        );
        assert_eq!(State::Offline.to_string(), "offline");
        assert_eq!(
            State::Probe(ProbePhase::Restricted).to_string(),
            "probe (primary server)"
        );
        assert_eq!(State::Dormant.to_string(), "dormant");
        assert_eq!(
            ClientError::PrimaryUnreachable.to_string(),
            "cannot reach primary Teredo server over UDP"
        );
        for r in DropReason::ALL {
            assert!(reason_index(*r).is_some());
        }
        fn is_send<T: Send>() {}
        is_send::<Client>();
    }

    #[test]
    fn hostile_config_does_not_panic() {
        let mut cfg = ClientConfig::profile(Profile::Vista, P);
        cfg.retransmit = Duration::MAX;
        cfg.refresh_interval = Duration::MAX;
        cfg.refresh_jitter = Some((f32::NAN, -3.0));
        cfg.offline_retry = Duration::MAX;
        cfg.dormant_after = Some(Duration::MAX);
        cfg.attempts = 0;
        let mut lab = Lab::new(cfg.clone(), Kind::Restricted, 1);
        lab.run_for(secs(10));
        lab.client.handle_timeout(lab.now + secs(1_000_000));
        cfg.retransmit = Duration::ZERO;
        cfg.refresh_interval = Duration::ZERO;
        cfg.refresh_jitter = Some((9.0, f32::INFINITY));
        cfg.offline_retry = Duration::ZERO;
        let mut lab = Lab::with_server(cfg, Kind::SymPort, 1, false);
        lab.run_for(secs(1));
        lab.server_up = true;
        lab.run_for(secs(1));
    }
}
