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
//! # Data path (RFC 4380 §5.2.3, §5.2.4, §5.2.6, §5.2.9; RFC 6081 §5.2; TEREDO.md §6, §15)
//! While qualified, the application hands IPv6 packets from the Teredo address to
//! [`Client::send_ipv6`] and reads what arrives with [`Client::poll_ipv6`]. A bounded peer
//! table ([`ClientConfig::max_peers`], least recently used evicted) remembers per IPv6
//! peer its mapping, whether it is trusted, the last reception/transmission, the probes
//! sent in the current 300 s window, the nonces and a bounded FIFO queue.
//! * **Trusted and valid** (last reception < [`ClientConfig::peer_validity`]): the packet
//!   goes straight to the peer's mapping.
//! * **Native destination** (not 2001::/32): the packet is queued and a *direct IPv6
//!   connectivity test* runs: an ICMPv6 echo request (src = our address, dst = the
//!   destination, data = an 8-byte random nonce, hop limit 128) goes to **our** server,
//!   which forwards it natively; the reply comes back through whichever relay serves the
//!   destination, and the client trusts that relay's address and port (the outer source of
//!   the reply) for the destination when the data equals the nonce, then flushes the queue
//!   there. A relay first sends an indirect bubble through our server (it has no entry for
//!   us); the client answers every bubble the server relays with a **direct bubble to the
//!   origin indication** (src = our address, dst = the bubble's IPv6 source, which is the
//!   relay's per-peer link-local for our relay), echoing the bubble's RFC 6081 nonce
//!   trailer when [`ClientConfig::symmetric_support`] is on. That bubble opens our NAT
//!   toward the relay and lets the relay trust us.
//! * **Teredo destination** (the cone bit is ignored, RFC 5991 §3.2): the packet is queued,
//!   a direct bubble goes to the peer's embedded mapping (opening our NAT) and an indirect
//!   bubble to the peer's server, port 3544 (with a fresh nonce trailer under symmetric
//!   support). The peer's direct answer from its embedded mapping — or, under symmetric
//!   support, from any mapping when it echoes our nonce, which is then recorded — makes it
//!   trusted and flushes the queue.
//! * **Pacing** (RFC 4380 §5.2.6): probes (a bubble pair, or an echo request) at least
//!   [`ClientConfig::bubble_interval`] apart, retransmitted on a timer up to
//!   [`ClientConfig::bubble_retries`] times, at most [`ClientConfig::max_bubbles_per_window`]
//!   per [`ClientConfig::bubble_window`] without an answer. After the last one the queue is
//!   dropped (`peer_unreachable`) and sends to the peer are refused until the window ends.
//!   Answers to relayed bubbles are rate-limited globally instead (10/s): they go to the
//!   address the server saw, so they cannot be aimed at a third party.
//! * **Reception** (RFC 4380 §5.2.3): from the server, bubbles are answered as above and
//!   other packets are delivered only when the server vouches for them (Teredo source whose
//!   embedded mapping is the origin indication). Otherwise: trusted entry and outer source
//!   == its mapping → accepted; echo reply carrying the nonce of our test → trusted;
//!   Teredo source whose embedded mapping == outer source → trusted (created if needed);
//!   else dropped — in particular no echo test is started for an unknown non-Teredo source
//!   (CVE-2006-6266). Packets with a routing header (CVE-2006-6263), with a link-local
//!   source (other than bubbles) or not addressed to our Teredo address are dropped.
//! * Every packet sent or delivered counts as activity ([`Client::note_activity`]) for the
//!   Windows 7 dormant timer. Losing or changing the address empties the peer table.
//!
//! # Driving it
//! Feed every datagram received on the client's socket to [`Client::handle_udp`], call
//! [`Client::handle_timeout`] at [`Client::poll_timeout`], and drain
//! [`Client::poll_transmit`] (router solicitations, bubbles, echo tests, data),
//! [`Client::poll_ipv6`] and [`Client::poll_event`] after every input. Time and randomness
//! come from the caller.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::addr::{
    is_ipv4_global_unicast, is_ipv6_non_global, is_link_local, TeredoAddr, FLAG_CONE,
    FLAG_RANDOM_MASK, LL_MIREDO_RESTRICTED, LL_TEREDO_CONE, LL_WINDOWS_CONE, LL_WINDOWS_RESTRICTED,
    LL_XP_RESTRICTED, TEREDO_PORT, TEREDO_PREFIX, TEREDO_PREFIX_OBSOLETE,
};
use crate::wire::auth::Auth;
use crate::wire::ipv6::{emit_bubble, Echo};
use crate::wire::ndp::{emit_rs, RouterAdvertisement, ICMPV6_ROUTER_ADVERTISEMENT};
use crate::wire::packet::{
    check_ipv6_exact_len, ipv6_dst, ipv6_src, IPV6_HEADER_LEN, MAX_UDP_PAYLOAD, NEXT_HEADER_ICMPV6,
};
use crate::wire::trailer::{Trailers, TYPE_NONCE};
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
/// Default [`ClientConfig::max_peers`] (Miredo's peer list without libJudy).
pub const DEFAULT_MAX_PEERS: usize = 1024;
/// Default [`ClientConfig::queue_packets_per_peer`].
pub const DEFAULT_QUEUE_PACKETS_PER_PEER: usize = 16;
/// Default [`ClientConfig::queue_bytes_per_peer`].
pub const DEFAULT_QUEUE_BYTES_PER_PEER: usize = 4096;
/// Bytes queued for all peers together; beyond it packets are dropped (`global_queue_full`).
pub const GLOBAL_QUEUE_BYTES: usize = 256 * 1024;
/// Peer validity (RFC 4380 §5.2.4): 30 s since the last reception.
pub const PEER_VALIDITY: Duration = Duration::from_secs(30);
/// Bubble / echo-test spacing and retransmission timeout (RFC 4380 §5.2.4, §5.2.6): 2 s.
pub const BUBBLE_INTERVAL: Duration = Duration::from_secs(2);
/// Repetitions of a bubble or echo test after the first (RFC 4380 §5.2.4): 3.
pub const BUBBLE_RETRIES: u8 = 3;
/// Window of the bubble cap (RFC 4380 §5.2.6): 300 s.
pub const BUBBLE_WINDOW: Duration = Duration::from_secs(300);
/// Probes per window without an answer (RFC 4380 §5.2.6): 4.
pub const MAX_BUBBLES_PER_WINDOW: u8 = 4;
/// Length of the echo-test nonce (RFC 4380 §5.2.9 recommends at least 64 bits).
pub const ECHO_NONCE_LEN: usize = 8;
/// Hop limit of the echo test (Miredo's value).
pub const ECHO_HOP_LIMIT: u8 = 128;
/// Hop limit of the client's bubbles: link-scope on the Teredo pseudo-link (as the relay's
/// default; Miredo sends 0, every known receiver accepts both).
pub const BUBBLE_HOP_LIMIT: u8 = 255;
/// Datagrams waiting in [`Client::poll_transmit`]; beyond it outputs are dropped
/// (`output_queue_full`).
pub const MAX_OUTPUTS: usize = 256;
/// Bytes waiting in [`Client::poll_transmit`].
pub const MAX_OUTPUT_BYTES: usize = 512 * 1024;
/// Packets waiting in [`Client::poll_ipv6`]; beyond it deliveries are dropped
/// (`output_queue_full`).
pub const MAX_DELIVERIES: usize = 256;
/// Bytes waiting in [`Client::poll_ipv6`].
pub const MAX_DELIVERY_BYTES: usize = 512 * 1024;
/// Answers to relayed (indirect) bubbles per second, long-run.
pub const REPLY_BUBBLE_RATE: u64 = 10;
/// Answers to relayed bubbles that may be sent back to back.
pub const REPLY_BUBBLE_BURST: u64 = 10;
/// ICMPv6 echo reply type.
const ICMPV6_ECHO_REPLY: u8 = 129;
/// IPv6 extension headers walked looking for a routing header.
const MAX_EXTENSION_HEADERS: usize = 8;

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
    /// | `cone_probe` | yes (R4380 §5.2.1) | no (R5991 §3.2) | yes, reported only (TEREDO.md (a)) | yes | no (M ≥ 0.9.5) |
    /// | `use_cone_flag` | yes | no | no (R5991 App. A) | no | no |
    /// | `secondary_check` | yes (R4380) | yes | yes (obs. "symmetric (port)") | yes | no (M ignores `ServerAddress2`) |
    /// | `symmetric_support` | no → offline (seed how-to) | no | yes (R6081 §5.2, TEREDO.md §12) | yes | n/a |
    /// | `random_flags` | no | yes (R5991 §3.1) | yes (SP1, R5991 App. A) | yes | yes (M ≥ 1.1.0) |
    /// | link-locals | fe80::5445:5245:444f / fe80::8000:5445:5245:444f | fe80::ffff:ffff:fffe / fe80::8000:ffff:ffff:fffe | as rfc5991 | as rfc5991 | fe80::ffff:ffff:ffff (cone unused) |
    /// | `xp_slla` | yes (TEREDO.md §4.1) | no | no | no | no |
    /// | `retransmit` × `attempts` | 4 s × 3 | 4 s × 3 | 4 s × 3 | 4 s × 3 | 4 s × 3 (`maintain.c`) |
    /// | refresh | 30 s, 75–100 % [UNVERIFIED for XP] | 30 s, 75–100 % (R4380 §5.2) | 30 s, 75–100 % | 30 s, 75–100 % | 30 s fixed after the previous RS |
    /// | `offline_retry` | 100 s \[UNVERIFIED\] | 100 s | 100 s \[UNVERIFIED\] | 100 s \[UNVERIFIED\] | 100 s (M) |
    /// | `dormant_after` | — | — | — | 60 min \[UNVERIFIED\] | — |
    /// | managed-network rule | yes (R5991 App. A, seed how-to) | no | yes | yes | no |
    /// | nonce trailers (R6081 §5.2) | no | no | yes | yes | no (answers to the bubble's link-local source instead, TEREDO.md §6.5) |
    ///
    /// Data-path knobs are the same for every profile: RFC 4380's 30 s validity, 2 s × 3
    /// probes, at most 4 per 300 s, 1024 peers, 16 packets / 4096 bytes queued per peer. All
    /// profiles answer a relayed bubble with a direct bubble to the origin indication whose
    /// destination is the relayed bubble's source; only `symmetric_support` adds the nonce.
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
            max_peers: DEFAULT_MAX_PEERS,
            queue_packets_per_peer: DEFAULT_QUEUE_PACKETS_PER_PEER,
            queue_bytes_per_peer: DEFAULT_QUEUE_BYTES_PER_PEER,
            peer_validity: PEER_VALIDITY,
            bubble_interval: BUBBLE_INTERVAL,
            bubble_retries: BUBBLE_RETRIES,
            bubble_window: BUBBLE_WINDOW,
            max_bubbles_per_window: MAX_BUBBLES_PER_WINDOW,
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
/// exact English wording \[UNVERIFIED\]); the secondary one is this lab's wording.
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
    /// A peer became trusted, or its mapping changed: packets to it now go to `mapping`
    /// (for a native peer, the relay that answered the echo test).
    PeerTrusted {
        /// The peer's IPv6 address.
        peer: Ipv6Addr,
        /// Where its packets go.
        mapping: SocketAddrV4,
    },
    /// A peer did not answer any probe: its queue was dropped and packets to it are refused
    /// until the probe window ends.
    PeerUnreachable {
        /// The peer's IPv6 address.
        peer: Ipv6Addr,
    },
}

/// A datagram written into the caller's buffer: send `len` bytes from the client's socket to
/// `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination: a server address (port 3544), a peer's or a relay's mapping.
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
    /// Datagrams refused by [`Client::handle_udp`] on the qualification path: router
    /// advertisements (from anywhere), anything else from the server while not qualified,
    /// and malformed datagrams from the server or while not qualified.
    pub ra_rejected: u64,
    /// Datagrams refused by [`Client::handle_udp`] per reason, both paths, indexed like
    /// [`DropReason::ALL`]; see [`Self::rejected`].
    pub rejected_by_reason: [u64; DropReason::ALL.len()],
    /// Datagrams accepted on the data path (delivered packets, bubbles, echo-test replies).
    pub data_accepted: u64,
    /// Datagrams refused by [`Client::handle_udp`] on the data path (everything that is
    /// not counted in `ra_rejected`).
    pub data_rejected: u64,
    /// Packets dropped after [`Client::handle_udp`] or [`Client::send_ipv6`] returned, and
    /// application packets refused by [`Client::send_ipv6`], per reason, indexed like
    /// [`DropReason::ALL`]: queued packets discarded later (`peer_unreachable`,
    /// `peer_evicted`, `address_lost`), packets that did not fit the output queue when a
    /// queue was flushed or a bubble answered (`output_queue_full`), outputs larger than the
    /// caller's buffer (`output_buffer_too_small`). A received packet that does not fit the
    /// [`Client::poll_ipv6`] queue is a refusal of `handle_udp` (`output_queue_full`) and
    /// counts in `rejected_by_reason`. See [`Self::dropped`].
    pub dropped_by_reason: [u64; DropReason::ALL.len()],
    /// Application packets sent over UDP (directly, or released from a queue).
    pub ipv6_sent: u64,
    /// Packets delivered to the application.
    pub ipv6_delivered: u64,
    /// Application packets put in a peer queue.
    pub queued: u64,
    /// Queued packets released to a peer.
    pub flushed: u64,
    /// Bubbles sent to reach a peer (direct and indirect counted separately).
    pub bubbles_sent: u64,
    /// Bubbles accepted (relayed by the server, or direct from a peer).
    pub bubbles_received: u64,
    /// Direct bubbles sent in answer to bubbles relayed by the server.
    pub reply_bubbles_sent: u64,
    /// Answers to relayed bubbles suppressed by the rate limit.
    pub reply_bubbles_suppressed: u64,
    /// Echo requests of direct IPv6 connectivity tests sent.
    pub echo_tests_sent: u64,
    /// Echo tests answered (a relay found and trusted).
    pub echo_tests_ok: u64,
    /// Peers that answered no probe.
    pub give_ups: u64,
    /// Peer entries created.
    pub peers_created: u64,
    /// Peer entries reused for another peer because the table was full.
    pub peers_evicted: u64,
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
            data_accepted: 0,
            data_rejected: 0,
            dropped_by_reason: [0; DropReason::ALL.len()],
            ipv6_sent: 0,
            ipv6_delivered: 0,
            queued: 0,
            flushed: 0,
            bubbles_sent: 0,
            bubbles_received: 0,
            reply_bubbles_sent: 0,
            reply_bubbles_suppressed: 0,
            echo_tests_sent: 0,
            echo_tests_ok: 0,
            give_ups: 0,
            peers_created: 0,
            peers_evicted: 0,
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

    /// Application packets dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        reason_index(reason)
            .and_then(|i| self.dropped_by_reason.get(i).copied())
            .unwrap_or(0)
    }

    /// Application packets dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_by_reason.iter().sum()
    }

    /// Datagrams refused by [`Client::handle_udp`], both paths.
    pub fn rejected_total(&self) -> u64 {
        self.ra_rejected + self.data_rejected
    }

    fn count_reject(&mut self, reason: DropReason, path: Path) {
        match path {
            Path::Qualification => self.ra_rejected += 1,
            Path::Data => self.data_rejected += 1,
        }
        if let Some(c) = reason_index(reason).and_then(|i| self.rejected_by_reason.get_mut(i)) {
            *c += 1;
        }
    }

    fn count_drop(&mut self, reason: DropReason, n: u64) {
        if let Some(c) = reason_index(reason).and_then(|i| self.dropped_by_reason.get_mut(i)) {
            *c += n;
        }
    }
}

/// Which part of [`Client::handle_udp`] handled a datagram (for the split counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Qualification,
    Data,
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
    /// The peer table (ordered, so that everything is a deterministic function of the
    /// inputs and the seed).
    peers: BTreeMap<Ipv6Addr, Peer>,
    /// Probe timers `(due, peer)`; a peer's live record is the one equal to its `deadline`.
    timers: BTreeSet<(Instant, Ipv6Addr)>,
    /// Bytes in all peer queues.
    queued_bytes: usize,
    /// Datagrams waiting in [`Self::poll_transmit`] after the RS.
    outputs: VecDeque<(SocketAddrV4, Vec<u8>)>,
    output_bytes: usize,
    /// Packets waiting in [`Self::poll_ipv6`].
    deliveries: VecDeque<Vec<u8>>,
    delivery_bytes: usize,
    /// Token bucket of the answers to relayed bubbles, in thousandths of a token.
    reply_tokens: u64,
    reply_last: Instant,
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
            peers: BTreeMap::new(),
            timers: BTreeSet::new(),
            queued_bytes: 0,
            outputs: VecDeque::new(),
            output_bytes: 0,
            deliveries: VecDeque::new(),
            delivery_bytes: 0,
            reply_tokens: REPLY_BUBBLE_BURST * 1000,
            reply_last: now,
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
                let probes = self.timers.first().map(|(t, _)| *t);
                earliest(earliest(refresh, self.dormant_deadline()), probes)
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
    /// the dormant transition, the offline retry, and the probes of the data path
    /// (bubble and echo-test retransmissions, give-ups). Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Qualified {
            self.fire_probe_timers(now);
        }
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

    /// Writes the next datagram to send into `buf`: the pending RS first, then bubbles, echo
    /// tests and data in the order they were produced. `None` when there is nothing to send.
    /// A buffer of [`MAX_UDP_PAYLOAD`] bytes always suffices ([`MAX_RS_LEN`] for RSs alone).
    /// An RS that does not fit is lost (it will be retransmitted) and `None` is returned;
    /// another datagram that does not fit is discarded and counted
    /// (`output_buffer_too_small`), and the next one is tried.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(rs) = self.pending.take() {
            let auth = Auth::nonce_only(rs.nonce);
            return match emit_rs(buf, Some(&auth), rs.src, self.cfg.xp_slla) {
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
            };
        }
        while let Some((to, bytes)) = self.outputs.pop_front() {
            self.output_bytes = self.output_bytes.saturating_sub(bytes.len());
            if let Some(dst) = buf.get_mut(..bytes.len()) {
                dst.copy_from_slice(&bytes);
                return Some(Transmit {
                    to,
                    len: bytes.len(),
                });
            }
            self.counters
                .count_drop(DropReason::OutputBufferTooSmall, 1);
            tracing::warn!(
                need = bytes.len(),
                have = buf.len(),
                "poll_transmit buffer too small; datagram discarded"
            );
        }
        None
    }

    /// Writes the next packet for the application (an IPv6 packet to our Teredo address,
    /// trailers stripped) into `buf`; returns its length. `None` when there is none. A
    /// packet larger than `buf` is discarded and counted (`output_buffer_too_small`);
    /// [`MAX_UDP_PAYLOAD`] bytes always suffice.
    pub fn poll_ipv6(&mut self, buf: &mut [u8]) -> Option<usize> {
        while let Some(p) = self.deliveries.pop_front() {
            self.delivery_bytes = self.delivery_bytes.saturating_sub(p.len());
            if let Some(dst) = buf.get_mut(..p.len()) {
                dst.copy_from_slice(&p);
                return Some(p.len());
            }
            self.counters
                .count_drop(DropReason::OutputBufferTooSmall, 1);
        }
        None
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Handles a datagram received on the client's socket from `from`: a router
    /// advertisement (qualification path), or — while qualified — a packet of the data path
    /// (see the module documentation; bubbles relayed by the server are answered, accepted
    /// packets wait in [`Self::poll_ipv6`]). A refused datagram returns its counted
    /// [`DropReason`] (`ra_rejected` or `data_rejected`) and changes nothing — except a
    /// packet that proved its peer but did not fit the [`Self::poll_ipv6`] queue
    /// (`output_queue_full`): the peer is trusted all the same.
    ///
    /// Which path: an ICMPv6 router advertisement (from anyone) is checked as an RA below;
    /// anything else from the server while not qualified is `not_router_advertisement`, from
    /// elsewhere `not_qualified`; malformed datagrams count on the qualification path when
    /// they come from the server or the client is not qualified.
    ///
    /// RA checks, in order: source is the primary or secondary server address with port 3544
    /// (`unexpected_source`); well-formed Teredo packet (wire reasons); ICMPv6 RA
    /// (`not_router_advertisement`); auth header whose nonce is one of the outstanding RSs'
    /// (`bad_nonce`); confirmation 0 (`bad_confirmation`); origin indication
    /// (`missing_origin`); valid RA with exactly one PIO (wire reasons); IPv6 destination
    /// == the RS's link-local (`wrong_destination`); PIO `2001:0:<server>::/64`, 3ffe:831f
    /// accepted and rewritten (`foreign_prefix`); MTU option in 1280..=65535 (`bad_mtu`);
    /// sent from the address the cone rule predicts — the other address for a cone RS, the
    /// same one otherwise (`unexpected_server_address`).
    pub fn handle_udp(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        data: &[u8],
    ) -> Result<(), DropReason> {
        let (path, r) = self.dispatch(now, from, data);
        match (path, r) {
            (Path::Qualification, Ok(())) => self.counters.ra_accepted += 1,
            (Path::Data, Ok(())) => self.counters.data_accepted += 1,
            (path, Err(reason)) => {
                self.counters.count_reject(reason, path);
                tracing::debug!(%from, reason = reason.as_str(), len = data.len(), state = %self.state, ?path, "client drop");
            }
        }
        r
    }

    fn is_server(&self, from: SocketAddrV4) -> bool {
        from.port() == TEREDO_PORT
            && (*from.ip() == self.cfg.server || *from.ip() == self.cfg.secondary_addr())
    }

    fn dispatch(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        data: &[u8],
    ) -> (Path, Result<(), DropReason>) {
        let from_server = self.is_server(from);
        let qualified = self.state == State::Qualified && self.address.is_some();
        let malformed_path = if from_server || !qualified {
            Path::Qualification
        } else {
            Path::Data
        };
        if data.len() > MAX_UDP_PAYLOAD {
            return (malformed_path, Err(DropReason::Oversized));
        }
        let pkt = match TeredoPacket::parse(data) {
            Ok(p) => p,
            Err(e) => return (malformed_path, Err(e.into())),
        };
        let is_ra = pkt.next_header() == NEXT_HEADER_ICMPV6
            && pkt.ipv6_payload().first() == Some(&ICMPV6_ROUTER_ADVERTISEMENT);
        if is_ra {
            return (
                Path::Qualification,
                self.router_advertisement(now, from, &pkt),
            );
        }
        if !qualified {
            return if from_server {
                (Path::Qualification, Err(DropReason::NotRouterAdvertisement))
            } else {
                (Path::Data, Err(DropReason::NotQualified))
            };
        }
        (Path::Data, self.data_packet(now, from, &pkt, from_server))
    }

    fn router_advertisement(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        pkt: &TeredoPacket<'_>,
    ) -> Result<(), DropReason> {
        let primary = self.cfg.server;
        let secondary = self.cfg.secondary_addr();
        if !self.is_server(from) {
            return Err(DropReason::UnexpectedSource);
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
                    // Peers know the old address; start over with the new one.
                    self.reset_data_path();
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
        self.reset_data_path();
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
        self.reset_data_path();
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
        self.reset_data_path();
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

// ---- the data path (RFC 4380 §5.2.3, §5.2.4, §5.2.6, §5.2.9; RFC 6081 §5.2) -------------

/// Where a peer is in its reachability procedure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerPhase {
    /// No probe running (trusted, or not contacted yet).
    Idle,
    /// Bubbles or echo tests sent, waiting for an answer; the retransmission timer runs.
    Probing,
    /// No answer to any probe: packets to the peer are refused until the probe window ends.
    Failed,
}

impl PeerPhase {
    /// snake_case label: `idle`, `probing`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Probing => "probing",
            Self::Failed => "failed",
        }
    }
}

/// A read-only view of a peer entry ([`Client::peer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// A Teredo address (reached with bubbles) rather than a native one (echo test).
    pub teredo: bool,
    /// Where packets to the peer go: the mapping embedded in a Teredo address or recorded on
    /// trust, or for a native peer the relay that answered its echo test (`None` before).
    pub mapping: Option<SocketAddrV4>,
    /// The peer proved its mapping (RFC 4380 §5.2.3).
    pub trusted: bool,
    /// Trusted and heard from within [`ClientConfig::peer_validity`].
    pub valid: bool,
    /// Probe state.
    pub phase: PeerPhase,
    /// Probes sent in the current window without an answer.
    pub probes: u8,
    /// Packets waiting for the peer to become reachable.
    pub queued_packets: usize,
    /// Their bytes.
    pub queued_bytes: usize,
}

/// The provisional state of a direct IPv6 connectivity test (RFC 4380 §5.2.9).
#[derive(Clone, Copy, Debug)]
struct EchoTest {
    nonce: [u8; ECHO_NONCE_LEN],
    id: u16,
}

/// One peer (RFC 4380 §5.2 "list of recent peers", RFC 6081 §5.2.1).
#[derive(Debug)]
struct Peer {
    teredo: bool,
    mapping: Option<SocketAddrV4>,
    trusted: bool,
    /// `None` = "30 s before creation" (RFC 4380 §5.2.3, §5.2.6): long enough ago.
    last_rx: Option<Instant>,
    last_tx: Option<Instant>,
    last_used: Instant,
    phase: PeerPhase,
    /// Probes in the current window (RFC 4380 §5.2.6 "bubbles").
    probes: u8,
    /// Probes of the running exchange.
    attempts: u8,
    window_start: Instant,
    last_probe: Option<Instant>,
    /// The live timer record in [`Client::timers`].
    deadline: Option<Instant>,
    /// Native peers: the echo test of the current (or last) exchange.
    echo: Option<EchoTest>,
    /// RFC 6081 "Nonce Sent": the latest indirect bubble's nonce and the one before (a late
    /// answer to a retransmission still counts).
    nonce_sent: [Option<[u8; 4]>; 2],
    /// RFC 6081 "Nonce Received": echoed in our direct bubbles.
    nonce_received: Option<[u8; 4]>,
    queue: VecDeque<Vec<u8>>,
    queue_bytes: usize,
}

impl Peer {
    fn new(now: Instant, teredo: Option<TeredoAddr>) -> Self {
        Self {
            teredo: teredo.is_some(),
            mapping: teredo.map(|t| t.mapped),
            trusted: false,
            last_rx: None,
            last_tx: None,
            last_used: now,
            phase: PeerPhase::Idle,
            probes: 0,
            attempts: 0,
            window_start: now,
            last_probe: None,
            deadline: None,
            echo: None,
            nonce_sent: [None; 2],
            nonce_received: None,
            queue: VecDeque::new(),
            queue_bytes: 0,
        }
    }

    fn valid(&self, now: Instant, validity: Duration) -> bool {
        self.trusted
            && self
                .last_rx
                .is_some_and(|t| now.saturating_duration_since(t) < validity)
    }
}

/// What the pacing rules allow now.
enum Gate {
    Now,
    At(Instant),
    Exhausted,
}

/// A bubble (RFC 4380 §2.8), with an RFC 6081 nonce trailer when given.
fn bubble_bytes(src: Ipv6Addr, dst: Ipv6Addr, nonce: Option<[u8; 4]>) -> Vec<u8> {
    let mut b = vec![0u8; IPV6_HEADER_LEN + 6];
    let mut len = emit_bubble(&mut b, src, dst, BUBBLE_HOP_LIMIT).unwrap_or(0);
    if let Some(n) = nonce {
        if let Some(rest) = b.get_mut(len..) {
            len += Trailers::emit(TYPE_NONCE, &n, rest).unwrap_or(0);
        }
    }
    b.truncate(len);
    b
}

/// The first well-formed nonce trailer.
fn trailer_nonce(trailers: &[u8]) -> Option<[u8; 4]> {
    Trailers::new(trailers)
        .filter(|t| t.ty == TYPE_NONCE)
        .find_map(|t| t.nonce())
}

/// True when the packet (or its extension header chain, as far as it can be read) carries
/// a routing header.
fn has_routing_header(ipv6: &[u8]) -> bool {
    let Some(&first) = ipv6.get(6) else {
        return false;
    };
    let (mut nh, mut off) = (first, IPV6_HEADER_LEN);
    for _ in 0..MAX_EXTENSION_HEADERS {
        let len = match nh {
            43 => return true,
            // Hop-by-hop, destination options: (Hdr Ext Len + 1) × 8.
            0 | 60 => ipv6.get(off + 1).map(|l| (usize::from(*l) + 1) * 8),
            // Fragment header: 8 bytes.
            44 => Some(8),
            // Authentication header: (Payload Len + 2) × 4.
            51 => ipv6.get(off + 1).map(|l| (usize::from(*l) + 2) * 4),
            _ => return false,
        };
        let (Some(len), Some(&next)) = (len, ipv6.get(off)) else {
            return false;
        };
        nh = next;
        off += len;
    }
    false
}

/// True when `ipv6` is an ICMPv6 echo reply (valid checksum) whose data is the test's nonce.
fn answers_echo_test(ipv6: &[u8], test: Option<EchoTest>) -> bool {
    let Some(test) = test else {
        return false;
    };
    ipv6.get(6) == Some(&NEXT_HEADER_ICMPV6)
        && ipv6.get(IPV6_HEADER_LEN) == Some(&ICMPV6_ECHO_REPLY)
        && Echo::parse(ipv6).is_ok_and(|e| e.reply && e.data == test.nonce)
}

impl Client {
    /// Sends an IPv6 packet of the application (RFC 4380 §5.2.4): `packet` is a complete
    /// IPv6 packet whose source is the client's Teredo address. `Ok` when it was sent
    /// (waiting in [`Self::poll_transmit`]) or queued while its destination is being reached
    /// (see the module documentation); `Err` when it was dropped, with the counted reason:
    /// `not_qualified` (no address; a dormant client wakes up and qualifies again),
    /// wire reasons, `too_large`, `wrong_source`, `not_allowed` (to our own address),
    /// `non_global_destination`, `non_global_mapped_address` / `non_global_server` (a Teredo
    /// destination embedding a non-global IPv4, RFC 4380 §5.2.4), `peer_unreachable` (no
    /// answer to the probes, until the window ends), `queue_full`, `global_queue_full`,
    /// `peer_table_full`, `output_queue_full`. Counts as activity ([`Self::note_activity`]).
    pub fn send_ipv6(&mut self, now: Instant, packet: &[u8]) -> Result<(), DropReason> {
        let r = self.transmit_ipv6(now, packet);
        if let Err(reason) = r {
            self.counters.count_drop(reason, 1);
            tracing::debug!(
                reason = reason.as_str(),
                len = packet.len(),
                "client send drop"
            );
        }
        r
    }

    /// The entry for a peer, if any (`valid` as of `now`).
    pub fn peer(&self, addr: &Ipv6Addr, now: Instant) -> Option<PeerInfo> {
        let validity = self.cfg.peer_validity;
        self.peers.get(addr).map(|p| PeerInfo {
            teredo: p.teredo,
            mapping: p.mapping,
            trusted: p.trusted,
            valid: p.valid(now, validity),
            phase: p.phase,
            probes: p.probes,
            queued_packets: p.queue.len(),
            queued_bytes: p.queue_bytes,
        })
    }

    /// Entries in the peer table.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    fn transmit_ipv6(&mut self, now: Instant, packet: &[u8]) -> Result<(), DropReason> {
        self.note_activity(now);
        let (State::Qualified, Some(own)) = (self.state, self.address) else {
            return Err(DropReason::NotQualified);
        };
        if packet.len() < IPV6_HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let version = packet.first().map_or(0, |b| b >> 4);
        if version != 6 {
            return Err(DropReason::BadIpVersion);
        }
        check_ipv6_exact_len(packet)?;
        if packet.len() > MAX_UDP_PAYLOAD {
            return Err(DropReason::TooLarge);
        }
        let (src, dst) = (ipv6_src(packet), ipv6_dst(packet));
        if src != own {
            return Err(DropReason::WrongSource);
        }
        if dst == own {
            return Err(DropReason::NotAllowed);
        }
        if is_ipv6_non_global(&dst) {
            return Err(DropReason::NonGlobalDestination);
        }
        let teredo = TeredoAddr::from_ipv6(&dst);
        if let Some(t) = teredo {
            // RFC 4380 §5.2.4 cases 4/5: never send to a non-global IPv4 (or port 0).
            if !is_ipv4_global_unicast(*t.mapped.ip()) || t.mapped.port() == 0 {
                return Err(DropReason::NonGlobalMappedAddress);
            }
            if !is_ipv4_global_unicast(t.server) {
                return Err(DropReason::NonGlobalServer);
            }
        }
        // Case 1: trusted and valid.
        let validity = self.cfg.peer_validity;
        if let Some(p) = self.peers.get_mut(&dst) {
            if let (true, Some(to)) = (p.valid(now, validity), p.mapping) {
                p.last_tx = Some(now);
                p.last_used = now;
                self.push_output(to, packet.to_vec())?;
                self.counters.ipv6_sent += 1;
                return Ok(());
            }
        }
        // Cases 2 and 5: queue, and reach the peer first.
        self.hold(now, dst, teredo, packet)
    }

    /// Queues a packet for a peer that is not trusted and valid, starting a probe exchange.
    fn hold(
        &mut self,
        now: Instant,
        addr: Ipv6Addr,
        teredo: Option<TeredoAddr>,
        packet: &[u8],
    ) -> Result<(), DropReason> {
        self.ensure_peer(now, addr, teredo)?;
        let window = self.cfg.bubble_window.max(MIN_TIMER);
        let Some(p) = self.peers.get_mut(&addr) else {
            return Err(DropReason::PeerTableFull);
        };
        p.last_used = now;
        if p.phase == PeerPhase::Failed {
            if after(p.window_start, window).is_some_and(|end| now >= end) {
                p.phase = PeerPhase::Idle;
                p.probes = 0;
            } else {
                return Err(DropReason::PeerUnreachable);
            }
        }
        if p.phase == PeerPhase::Idle {
            p.phase = PeerPhase::Probing;
            p.attempts = 0;
            if !p.teredo {
                let mut nonce = [0u8; ECHO_NONCE_LEN];
                self.rng.fill_bytes(&mut nonce);
                let id = self.rng.next_u32() as u16;
                p.echo = Some(EchoTest { nonce, id });
            }
            match self.gate(&addr, now) {
                Gate::Now => self.send_probe(now, addr),
                Gate::At(t) => self.set_deadline(addr, Some(t)),
                Gate::Exhausted => {
                    self.give_up(now, addr);
                    return Err(DropReason::PeerUnreachable);
                }
            }
        }
        self.enqueue(addr, packet)
    }

    fn enqueue(&mut self, addr: Ipv6Addr, packet: &[u8]) -> Result<(), DropReason> {
        let (max_packets, max_bytes) = (
            self.cfg.queue_packets_per_peer,
            self.cfg.queue_bytes_per_peer,
        );
        let global = self.queued_bytes;
        let Some(p) = self.peers.get_mut(&addr) else {
            return Err(DropReason::PeerTableFull);
        };
        if p.queue.len() >= max_packets || p.queue_bytes.saturating_add(packet.len()) > max_bytes {
            return Err(DropReason::QueueFull);
        }
        if global.saturating_add(packet.len()) > GLOBAL_QUEUE_BYTES {
            return Err(DropReason::GlobalQueueFull);
        }
        p.queue.push_back(packet.to_vec());
        p.queue_bytes += packet.len();
        self.queued_bytes += packet.len();
        self.counters.queued += 1;
        Ok(())
    }

    /// Creates the entry if it does not exist, reusing the least recently used one when the
    /// table is full (peers being probed last).
    fn ensure_peer(
        &mut self,
        now: Instant,
        addr: Ipv6Addr,
        teredo: Option<TeredoAddr>,
    ) -> Result<(), DropReason> {
        if self.peers.contains_key(&addr) {
            return Ok(());
        }
        if self.peers.len() >= self.cfg.max_peers {
            let victim = self
                .peers
                .iter()
                .min_by_key(|(_, p)| (p.phase == PeerPhase::Probing, p.last_used))
                .map(|(a, _)| *a);
            let Some(victim) = victim else {
                return Err(DropReason::PeerTableFull);
            };
            self.remove_peer(victim, DropReason::PeerEvicted);
            self.counters.peers_evicted += 1;
        }
        self.peers.insert(addr, Peer::new(now, teredo));
        self.counters.peers_created += 1;
        Ok(())
    }

    fn remove_peer(&mut self, addr: Ipv6Addr, reason: DropReason) {
        let Some(p) = self.peers.remove(&addr) else {
            return;
        };
        if let Some(d) = p.deadline {
            self.timers.remove(&(d, addr));
        }
        self.queued_bytes = self.queued_bytes.saturating_sub(p.queue_bytes);
        self.counters.count_drop(reason, p.queue.len() as u64);
    }

    /// Forgets every peer (the address changed or was lost); queued packets are counted as
    /// `address_lost`.
    fn reset_data_path(&mut self) {
        let lost: u64 = self.peers.values().map(|p| p.queue.len() as u64).sum();
        self.counters.count_drop(DropReason::AddressLost, lost);
        self.peers.clear();
        self.timers.clear();
        self.queued_bytes = 0;
    }

    fn gate(&mut self, addr: &Ipv6Addr, now: Instant) -> Gate {
        let window = self.cfg.bubble_window.max(MIN_TIMER);
        let interval = self.cfg.bubble_interval.max(MIN_TIMER);
        let max = self.cfg.max_bubbles_per_window;
        let Some(p) = self.peers.get_mut(addr) else {
            return Gate::Exhausted;
        };
        if p.probes > 0 && after(p.window_start, window).is_some_and(|end| now >= end) {
            p.probes = 0;
        }
        if p.probes >= max {
            return Gate::Exhausted;
        }
        match p.last_probe.map(|l| after(l, interval)) {
            Some(Some(t)) if now < t => Gate::At(t),
            Some(None) => Gate::Exhausted,
            _ => Gate::Now,
        }
    }

    fn set_deadline(&mut self, addr: Ipv6Addr, at: Option<Instant>) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        if let Some(old) = p.deadline.take() {
            self.timers.remove(&(old, addr));
        }
        p.deadline = at;
        if let Some(t) = at {
            self.timers.insert((t, addr));
        }
    }

    /// Sends one probe: a direct and an indirect bubble to a Teredo peer, an echo request
    /// through our server for a native one; arms the retransmission timer.
    fn send_probe(&mut self, now: Instant, addr: Ipv6Addr) {
        let Some(own) = self.address else {
            return;
        };
        let symmetric = self.cfg.symmetric_support;
        let interval = self.cfg.bubble_interval.max(MIN_TIMER);
        let fresh = symmetric.then(|| self.rng.next_u32().to_be_bytes());
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        if p.probes == 0 {
            p.window_start = now;
        }
        p.probes = p.probes.saturating_add(1);
        p.attempts = p.attempts.saturating_add(1);
        p.last_probe = Some(now);
        p.last_tx = Some(now);
        let mut out: Vec<(SocketAddrV4, Vec<u8>)> = Vec::with_capacity(2);
        if p.teredo {
            let t = TeredoAddr::from_octets_unchecked(&addr.octets());
            // RFC 6081 §5.2.4.2: echo the peer's nonce once it sent us an indirect bubble.
            let echo = if symmetric { p.nonce_received } else { None };
            if let Some(n) = fresh {
                p.nonce_sent = [Some(n), p.nonce_sent[0]];
            }
            let direct_to = p.mapping.unwrap_or(t.mapped);
            out.push((direct_to, bubble_bytes(own, addr, echo)));
            out.push((
                SocketAddrV4::new(t.server, TEREDO_PORT),
                bubble_bytes(own, addr, fresh),
            ));
        } else if let Some(test) = p.echo {
            let echo = Echo {
                reply: false,
                id: test.id,
                seq: u16::from(p.attempts),
                data: &test.nonce,
            };
            let mut b = vec![0u8; IPV6_HEADER_LEN + 8 + ECHO_NONCE_LEN];
            if let Ok(len) = echo.emit(&mut b, own, addr, ECHO_HOP_LIMIT) {
                b.truncate(len);
                out.push((SocketAddrV4::new(self.cfg.server, TEREDO_PORT), b));
            }
        }
        let teredo = p.teredo;
        for (to, bytes) in out {
            if self.push_output(to, bytes).is_ok() {
                if teredo {
                    self.counters.bubbles_sent += 1;
                } else {
                    self.counters.echo_tests_sent += 1;
                }
            }
        }
        tracing::trace!(peer = %addr, teredo, "client probe");
        self.set_deadline(addr, after(now, interval));
    }

    /// Runs the due probe timers: retransmissions and give-ups.
    fn fire_probe_timers(&mut self, now: Instant) {
        let limit = self.cfg.bubble_retries.saturating_add(1);
        while let Some(&(at, addr)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, addr));
            let Some(p) = self.peers.get_mut(&addr) else {
                continue;
            };
            if p.deadline != Some(at) {
                continue;
            }
            p.deadline = None;
            if p.phase != PeerPhase::Probing {
                continue;
            }
            if p.attempts >= limit {
                self.give_up(now, addr);
                continue;
            }
            match self.gate(&addr, now) {
                Gate::Now => self.send_probe(now, addr),
                Gate::At(t) => self.set_deadline(addr, Some(t)),
                Gate::Exhausted => self.give_up(now, addr),
            }
        }
    }

    /// No answer to the probes: drop the queue, refuse packets until the window ends.
    fn give_up(&mut self, now: Instant, addr: Ipv6Addr) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        p.phase = PeerPhase::Failed;
        if p.probes == 0 {
            p.window_start = now;
        }
        p.trusted = false;
        let queue = std::mem::take(&mut p.queue);
        let bytes = std::mem::take(&mut p.queue_bytes);
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        self.counters
            .count_drop(DropReason::PeerUnreachable, queue.len() as u64);
        self.counters.give_ups += 1;
        self.set_deadline(addr, None);
        tracing::debug!(peer = %addr, dropped = queue.len(), "client gave up on peer");
        self.push_event(Event::PeerUnreachable { peer: addr });
    }

    /// Marks the peer trusted at `from` and releases its queue there.
    fn trust(&mut self, now: Instant, addr: Ipv6Addr, from: SocketAddrV4) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let changed = !p.trusted || p.mapping != Some(from);
        p.trusted = true;
        p.mapping = Some(from);
        p.last_rx = Some(now);
        p.last_used = now;
        p.probes = 0;
        p.attempts = 0;
        p.phase = PeerPhase::Idle;
        p.nonce_sent = [None; 2];
        let queue = std::mem::take(&mut p.queue);
        let bytes = std::mem::take(&mut p.queue_bytes);
        if !queue.is_empty() {
            p.last_tx = Some(now);
        }
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        self.set_deadline(addr, None);
        if changed {
            tracing::debug!(peer = %addr, mapping = %from, "client trusts peer");
            self.push_event(Event::PeerTrusted {
                peer: addr,
                mapping: from,
            });
        }
        for packet in queue {
            match self.push_output(from, packet) {
                Ok(()) => {
                    self.counters.flushed += 1;
                    self.counters.ipv6_sent += 1;
                }
                Err(reason) => self.counters.count_drop(reason, 1),
            }
        }
    }

    fn push_output(&mut self, to: SocketAddrV4, bytes: Vec<u8>) -> Result<(), DropReason> {
        if self.outputs.len() >= MAX_OUTPUTS
            || self.output_bytes.saturating_add(bytes.len()) > MAX_OUTPUT_BYTES
        {
            return Err(DropReason::OutputQueueFull);
        }
        self.output_bytes += bytes.len();
        self.outputs.push_back((to, bytes));
        Ok(())
    }

    fn deliver(&mut self, now: Instant, ipv6: &[u8]) -> Result<(), DropReason> {
        if self.deliveries.len() >= MAX_DELIVERIES
            || self.delivery_bytes.saturating_add(ipv6.len()) > MAX_DELIVERY_BYTES
        {
            return Err(DropReason::OutputQueueFull);
        }
        self.delivery_bytes += ipv6.len();
        self.deliveries.push_back(ipv6.to_vec());
        self.counters.ipv6_delivered += 1;
        self.note_activity(now);
        Ok(())
    }

    fn take_reply_token(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.reply_last);
        self.reply_last = self.reply_last.max(now);
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.reply_tokens = self
            .reply_tokens
            .saturating_add(ms.saturating_mul(REPLY_BUBBLE_RATE))
            .min(REPLY_BUBBLE_BURST * 1000);
        if self.reply_tokens >= 1000 {
            self.reply_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// A datagram of the data path (the client is qualified).
    fn data_packet(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        pkt: &TeredoPacket<'_>,
        from_server: bool,
    ) -> Result<(), DropReason> {
        let Some(own) = self.address else {
            return Err(DropReason::NotQualified);
        };
        if pkt.dst() != own {
            return Err(DropReason::NotOurAddress);
        }
        let bubble = pkt.is_bubble();
        if !bubble && is_link_local(&pkt.src()) {
            return Err(DropReason::LinkLocalSource);
        }
        if has_routing_header(pkt.ipv6) {
            return Err(DropReason::RoutingHeader);
        }
        if from_server {
            return self.relayed_by_server(now, pkt, own, bubble);
        }
        // Only servers insert origin indications.
        if pkt.origin.is_some() {
            return Err(DropReason::UnexpectedOrigin);
        }
        self.direct(now, from, pkt, bubble)
    }

    /// A packet the server relayed (RFC 4380 §5.2.3, first part): answer bubbles with a
    /// direct bubble to the origin indication; deliver other packets only when the server
    /// vouches for their source.
    fn relayed_by_server(
        &mut self,
        now: Instant,
        pkt: &TeredoPacket<'_>,
        own: Ipv6Addr,
        bubble: bool,
    ) -> Result<(), DropReason> {
        let src = pkt.src();
        let teredo = TeredoAddr::from_ipv6(&src);
        if !bubble {
            // The server checked that a Teredo source's embedded mapping is where the packet
            // came from (RFC 4380 §5.3.1 case 5) and told us where that was.
            return match (teredo, pkt.origin) {
                (Some(t), Some(o)) if t.mapped == o.0 => self.deliver(now, pkt.ipv6),
                _ => Err(DropReason::UntrustedSource),
            };
        }
        let target = match (pkt.origin, teredo) {
            (Some(o), _) => o.0,
            (None, Some(t)) => t.mapped,
            (None, None) => return Err(DropReason::MissingOrigin),
        };
        if !is_ipv4_global_unicast(*target.ip()) || target.port() == 0 {
            return Err(DropReason::NonGlobalMappedAddress);
        }
        let nonce = trailer_nonce(pkt.trailers);
        self.counters.bubbles_received += 1;
        let symmetric = self.cfg.symmetric_support;
        let validity = self.cfg.peer_validity;
        let mut reply_to = target;
        let mut answer_indirectly = false;
        if let Some(t) = teredo {
            // RFC 6081 §5.2.4.3: remember (or clear) the peer's nonce.
            if self.ensure_peer(now, src, Some(t)).is_ok() {
                if let Some(p) = self.peers.get_mut(&src) {
                    p.nonce_received = nonce;
                    p.last_used = now;
                    // A peer behind a symmetric NAT is reachable only at the mapping it
                    // proved to us, not at the one the server saw.
                    if let (true, Some(m)) = (p.trusted, p.mapping) {
                        reply_to = m;
                    }
                    // RFC 6081 §3.1, second case: a peer behind a symmetric NAT cannot
                    // receive our direct answer at its embedded mapping, so also answer
                    // with an indirect bubble (a probe exchange of our own, paced as usual,
                    // carrying our nonce) unless we trust it or already probe it.
                    answer_indirectly =
                        symmetric && !p.valid(now, validity) && p.phase == PeerPhase::Idle;
                }
            }
        }
        if answer_indirectly {
            if let Some(p) = self.peers.get_mut(&src) {
                p.phase = PeerPhase::Probing;
                p.attempts = 0;
            }
            match self.gate(&src, now) {
                // The probe's direct bubble goes where the answer would, with the echo.
                Gate::Now => {
                    self.send_probe(now, src);
                    return Ok(());
                }
                Gate::At(t) => self.set_deadline(src, Some(t)),
                Gate::Exhausted => {
                    if let Some(p) = self.peers.get_mut(&src) {
                        p.phase = PeerPhase::Idle;
                    }
                }
            }
        }
        if !self.take_reply_token(now) {
            self.counters.reply_bubbles_suppressed += 1;
            return Ok(());
        }
        // RFC 6081 §5.2.4.2: the answer to an indirect bubble echoes its nonce.
        let echo = if self.cfg.symmetric_support {
            nonce
        } else {
            None
        };
        if self
            .push_output(reply_to, bubble_bytes(own, src, echo))
            .is_ok()
        {
            self.counters.reply_bubbles_sent += 1;
        } else {
            self.counters.count_drop(DropReason::OutputQueueFull, 1);
        }
        Ok(())
    }

    /// A packet straight from a peer or a relay (RFC 4380 §5.2.3 cases 1–3, 6; RFC 6081
    /// §5.2.4.4).
    fn direct(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        pkt: &TeredoPacket<'_>,
        bubble: bool,
    ) -> Result<(), DropReason> {
        let src = pkt.src();
        if let Some(p) = self.peers.get(&src) {
            // Case 1: trusted, from its mapping.
            if p.trusted && p.mapping == Some(from) {
                // A late answer to our own echo test is ours, not the application's.
                let swallow = bubble || answers_echo_test(pkt.ipv6, p.echo);
                self.trust(now, src, from);
                if bubble {
                    self.counters.bubbles_received += 1;
                }
                return if swallow {
                    Ok(())
                } else {
                    self.deliver(now, pkt.ipv6)
                };
            }
            // Case 2: the echo reply of our direct IPv6 connectivity test.
            if answers_echo_test(pkt.ipv6, p.echo) {
                if !is_ipv4_global_unicast(*from.ip()) || from.port() == 0 {
                    return Err(DropReason::NonGlobalMappedAddress);
                }
                self.counters.echo_tests_ok += 1;
                self.trust(now, src, from);
                return Ok(());
            }
        }
        let Some(t) = TeredoAddr::from_ipv6(&src) else {
            // Case 6: no echo test in answer to an unknown source (CVE-2006-6266).
            return Err(DropReason::UntrustedSource);
        };
        let accepted = if t.mapped == from {
            // Case 3 (CVE-2006-6264: never trust a non-global embedded IPv4).
            if !is_ipv4_global_unicast(*from.ip()) || from.port() == 0 {
                return Err(DropReason::NonGlobalMappedAddress);
            }
            self.ensure_peer(now, src, Some(t))?;
            true
        } else {
            // RFC 6081 §5.2.4.4: a direct bubble echoing the nonce of our indirect bubble.
            self.cfg.symmetric_support
                && bubble
                && is_ipv4_global_unicast(*from.ip())
                && from.port() != 0
                && trailer_nonce(pkt.trailers).is_some_and(|n| {
                    self.peers
                        .get(&src)
                        .is_some_and(|p| p.nonce_sent.contains(&Some(n)))
                })
        };
        if !accepted {
            return Err(DropReason::SpoofedSource);
        }
        self.trust(now, src, from);
        if bubble {
            self.counters.bubbles_received += 1;
            return Ok(());
        }
        self.deliver(now, pkt.ipv6)
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
                        local: from_local,
                        to,
                        len,
                        ..
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
        emit_bubble(&mut b, server_link_local(P), ll, 0).unwrap();
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

    // ---- the data path: clients, the real server and relay, a native echo host ----------

    use std::collections::VecDeque as Fifo;

    use crate::addr::is_teredo;
    use crate::io::Output as RelayOutput;
    use crate::relay::{Acceptance, Handled as RelayHandled, Relay, RelayConfig, TrustPolicy};

    /// The relay, on the IPv4 Internet (port 3545, as in TEREDO.md §14).
    const RELAY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 250), 3545);
    /// The native echo host.
    const H: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
    /// The second client's NAT and inside address.
    const EXT_Y: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 6), 41000);
    const PRIVATE_Y: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 2, 10), 6000);
    const PING_ID: u16 = 0x5157;

    impl Nat {
        /// Whether `to` is this NAT's external address (or the client's own without NAT).
        fn owns(&self, local: SocketAddrV4, to: SocketAddrV4) -> bool {
            match self.mapping {
                Mapping::Identity => local == to,
                _ => self.sent.iter().any(|(e, _)| *e == to),
            }
        }
    }

    /// The echo reply a host's stack would send to `pkt`, if it is an echo request.
    fn echo_reply_for(pkt: &[u8]) -> Option<Vec<u8>> {
        let e = Echo::parse(pkt).ok().filter(|e| !e.reply)?;
        let mut b = vec![0u8; pkt.len()];
        let n = Echo { reply: true, ..e }
            .emit(&mut b, ipv6_dst(pkt), ipv6_src(pkt), 64)
            .ok()?;
        b.truncate(n);
        Some(b)
    }

    fn echo_request(src: Ipv6Addr, dst: Ipv6Addr, seq: u16) -> Vec<u8> {
        let mut b = vec![0u8; 80];
        let n = Echo {
            reply: false,
            id: PING_ID,
            seq,
            data: &[0xab; 32],
        }
        .emit(&mut b, src, dst, 64)
        .unwrap();
        b.truncate(n);
        b
    }

    struct Host {
        client: Client,
        nat: Nat,
        /// Packets delivered to the application.
        inbox: Vec<Vec<u8>>,
        /// Answer echo requests, as a host's stack does.
        echo_responder: bool,
        drops: Vec<DropReason>,
    }

    /// Clients behind their NATs, the server, a relay routed 2001::/32 from the native side,
    /// and the echo host H, exchanging datagrams in memory with zero latency.
    struct Net {
        t0: Instant,
        now: Instant,
        server: Server,
        relay: Relay,
        hosts: Vec<Host>,
        wire: Fifo<(SocketAddrV4, SocketAddrV4, Vec<u8>)>,
        native: Fifo<Vec<u8>>,
        /// Every datagram on the IPv4 Internet: (time, from, to, payload).
        log: Vec<(Duration, SocketAddrV4, SocketAddrV4, Vec<u8>)>,
        relay_accepts: Vec<Acceptance>,
        relay_drops: Vec<DropReason>,
        /// Datagrams a NAT filtered.
        filtered: usize,
        h_up: bool,
    }

    impl Net {
        fn new(trust: TrustPolicy) -> Self {
            let t0 = t0();
            let cfg = RelayConfig {
                trust,
                icmp_source: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20)),
                ..RelayConfig::default()
            };
            Self {
                t0,
                now: t0,
                server: Server::new(ServerConfig::new(P)),
                relay: Relay::new(cfg, ChaCha8Rng::seed_from_u64(99), t0),
                hosts: Vec::new(),
                wire: Fifo::new(),
                native: Fifo::new(),
                log: Vec::new(),
                relay_accepts: Vec::new(),
                relay_drops: Vec::new(),
                filtered: 0,
                h_up: true,
            }
        }

        fn add_host(&mut self, cfg: ClientConfig, nat: Nat, local: SocketAddrV4) -> usize {
            let seed = 11 + self.hosts.len() as u64;
            let client = Client::new(cfg, ChaCha8Rng::seed_from_u64(seed), local, self.now);
            self.hosts.push(Host {
                client,
                nat,
                inbox: Vec::new(),
                echo_responder: true,
                drops: Vec::new(),
            });
            self.hosts.len() - 1
        }

        fn add(&mut self, p: Profile, kind: Kind) -> usize {
            let (nat, local) = nat_for(kind);
            self.add_host(ClientConfig::profile(p, P), nat, local)
        }

        fn elapsed(&self) -> Duration {
            self.now - self.t0
        }

        fn client(&self, i: usize) -> &Client {
            &self.hosts[i].client
        }

        fn addr(&self, i: usize) -> Ipv6Addr {
            self.client(i).address().expect("qualified")
        }

        fn send(&mut self, from: SocketAddrV4, to: SocketAddrV4, data: Vec<u8>) {
            self.log.push((self.elapsed(), from, to, data.clone()));
            self.wire.push_back((from, to, data));
        }

        fn arrive(&mut self, from: SocketAddrV4, to: SocketAddrV4, data: &[u8]) {
            let now = self.now;
            let local = match *to.ip() {
                ip if ip == P && to.port() == TEREDO_PORT => Some(Local::Primary),
                ip if ip == S && to.port() == TEREDO_PORT => Some(Local::Secondary),
                _ => None,
            };
            if let Some(local) = local {
                if self.server.handle_udp(now, local, from, data).is_ok() {
                    let mut b = vec![0u8; MAX_UDP_PAYLOAD];
                    while let Some(out) = self.server.poll_output(&mut b) {
                        match out {
                            Output::Udp {
                                local: from_local,
                                to,
                                len,
                                ..
                            } => {
                                let from =
                                    SocketAddrV4::new(self.server.address(from_local), TEREDO_PORT);
                                self.send(from, to, b[..len].to_vec());
                            }
                            Output::Ipv6 { len, .. } => self.native.push_back(b[..len].to_vec()),
                        }
                    }
                }
                return;
            }
            if to == RELAY {
                let r = self.relay.handle_udp(now, Local::Primary, from, data);
                if let Some(ip) = r.as_ref().ok().and_then(RelayHandled::in_place) {
                    self.native.push_back(ip.bytes(data).to_vec());
                }
                match r {
                    Ok(RelayHandled::Bubble { via, .. } | RelayHandled::Forwarded { via, .. }) => {
                        self.relay_accepts.push(via);
                    }
                    Ok(_) => {}
                    Err(r) => self.relay_drops.push(r),
                }
                return;
            }
            for h in &mut self.hosts {
                if h.nat.owns(h.client.local(), to) {
                    if h.nat.inbound(from, to) {
                        if let Err(r) = h.client.handle_udp(now, from, data) {
                            h.drops.push(r);
                        }
                    } else {
                        self.filtered += 1;
                    }
                    return;
                }
            }
        }

        fn native_arrive(&mut self, p: &[u8]) {
            let dst = ipv6_dst(p);
            if dst == H {
                if let Some(r) = echo_reply_for(p).filter(|_| self.h_up) {
                    self.native.push_back(r);
                }
            } else if is_teredo(&dst) {
                if let Ok(RelayHandled::Encapsulated {
                    to,
                    in_place: Some(_),
                }) = self.relay.handle_ipv6(self.now, p)
                {
                    self.send(RELAY, to, p.to_vec());
                }
            }
        }

        /// Moves everything until the network is quiet.
        fn pump(&mut self) {
            let mut b = vec![0u8; MAX_UDP_PAYLOAD];
            for _ in 0..100_000 {
                let mut busy = false;
                for i in 0..self.hosts.len() {
                    while let Some(t) = self.hosts[i].client.poll_transmit(&mut b) {
                        let h = &mut self.hosts[i];
                        let ext = h.nat.outbound(h.client.local(), t.to);
                        self.send(ext, t.to, b[..t.len].to_vec());
                        busy = true;
                    }
                    while let Some(n) = self.hosts[i].client.poll_ipv6(&mut b) {
                        let pkt = b[..n].to_vec();
                        let h = &mut self.hosts[i];
                        if let Some(r) = echo_reply_for(&pkt).filter(|_| h.echo_responder) {
                            let _ = h.client.send_ipv6(self.now, &r);
                        }
                        h.inbox.push(pkt);
                        busy = true;
                    }
                }
                while let Some(o) = self.relay.poll_output(&mut b) {
                    match o {
                        RelayOutput::Udp { to, len, .. } => self.send(RELAY, to, b[..len].to_vec()),
                        RelayOutput::Ipv6 { len, .. } => self.native.push_back(b[..len].to_vec()),
                    }
                    busy = true;
                }
                if let Some((from, to, data)) = self.wire.pop_front() {
                    self.arrive(from, to, &data);
                    busy = true;
                } else if let Some(p) = self.native.pop_front() {
                    self.native_arrive(&p);
                    busy = true;
                }
                if !busy {
                    return;
                }
            }
            panic!("the network does not settle");
        }

        fn run_for(&mut self, d: Duration) {
            let end = self.now + d;
            self.pump();
            for _ in 0..100_000 {
                let next = self
                    .hosts
                    .iter()
                    .map(|h| h.client.poll_timeout())
                    .fold(self.relay.poll_timeout(), earliest);
                let Some(t) = next.filter(|t| *t <= end) else {
                    self.now = end;
                    return;
                };
                self.now = self.now.max(t);
                let now = self.now;
                for h in &mut self.hosts {
                    if h.client.poll_timeout().is_some_and(|t| t <= now) {
                        h.client.handle_timeout(now);
                    }
                }
                if self.relay.poll_timeout().is_some_and(|t| t <= now) {
                    self.relay.handle_timeout(now);
                }
                self.pump();
            }
            panic!("timers do not advance");
        }

        fn ping(&mut self, i: usize, dst: Ipv6Addr, seq: u16) -> Result<(), DropReason> {
            let pkt = echo_request(self.addr(i), dst, seq);
            let r = self.hosts[i].client.send_ipv6(self.now, &pkt);
            self.pump();
            r
        }

        /// Sequence numbers of the echo replies host `i` got from `from`.
        fn replies(&self, i: usize, from: Ipv6Addr) -> Vec<u16> {
            self.hosts[i]
                .inbox
                .iter()
                .filter(|p| ipv6_src(p) == from)
                .filter_map(|p| Echo::parse(p).ok())
                .filter(|e| e.reply && e.id == PING_ID)
                .map(|e| e.seq)
                .collect()
        }

        /// `n` pings one second apart, then ten quiet seconds; the replies.
        fn ping_run(&mut self, i: usize, dst: Ipv6Addr, n: u16) -> Vec<u16> {
            for seq in 0..n {
                let _ = self.ping(i, dst, seq);
                self.run_for(secs(1));
            }
            self.run_for(secs(10));
            self.replies(i, dst)
        }

        /// The datagrams logged since `mark`, as (from, to, parsed packet).
        fn since(&self, mark: usize) -> Vec<(SocketAddrV4, SocketAddrV4, TeredoPacket<'_>)> {
            self.log[mark..]
                .iter()
                .map(|(_, f, t, d)| (*f, *t, TeredoPacket::parse(d).unwrap()))
                .collect()
        }
    }

    fn qualified_net(trust: TrustPolicy, p: Profile, kind: Kind) -> (Net, usize) {
        let mut net = Net::new(trust);
        let x = net.add(p, kind);
        net.run_for(secs(25));
        assert_eq!(net.client(x).state(), State::Qualified, "{p} {kind:?}");
        (net, x)
    }

    #[test]
    fn ping_native_host_through_server_and_relay() {
        for kind in [Kind::NoNat, Kind::Cone, Kind::Restricted] {
            let (mut net, x) = qualified_net(TrustPolicy::Strict, Profile::Rfc5991, kind);
            let xa = net.addr(x);
            let mark = net.log.len();
            assert_eq!(net.ping_run(x, H, 3), [0, 1, 2], "{kind:?}");
            let flow = net.since(mark);
            let m = net.client(x).mapping().unwrap();
            // TEREDO.md §15, client X -> native host H via relay R:
            // 1. X -> P:3544: echo request, src X, dst H, data = a 64-bit nonce.
            let (_, to, p) = &flow[0];
            assert_eq!(*to, SocketAddrV4::new(P, 3544), "{kind:?}");
            assert_eq!((p.src(), p.dst()), (xa, H));
            let test = Echo::parse(p.ipv6).unwrap();
            assert!(!test.reply);
            assert_eq!(test.data.len(), ECHO_NONCE_LEN);
            // 2. R -> P:3544: indirect bubble (src: R's per-peer link-local, dst X, nonce).
            let (from, to, p) = &flow[1];
            assert_eq!((*from, *to), (RELAY, SocketAddrV4::new(P, 3544)));
            assert!(p.is_bubble() && is_link_local(&p.src()) && p.dst() == xa);
            let relay_ll = p.src();
            // 3. P -> X's mapping: OI(R) + the bubble.
            let (from, to, p) = &flow[2];
            assert_eq!((*from, *to), (SocketAddrV4::new(P, 3544), m));
            assert_eq!(p.origin.map(|o| o.0), Some(RELAY));
            // 4. X -> R: direct bubble, src X, dst = the bubble's source; no nonce (rfc5991).
            let (_, to, p) = &flow[3];
            assert_eq!(*to, RELAY);
            assert!(p.is_bubble());
            assert_eq!((p.src(), p.dst()), (xa, relay_ll));
            assert!(p.trailers.is_empty());
            // 5. R -> X: the queued echo reply (the nonce comes back).
            let (from, to, p) = &flow[4];
            assert_eq!((*from, *to), (RELAY, m));
            assert_eq!(Echo::parse(p.ipv6).unwrap().data, test.data);
            // 6. X -> R: the application's queued echo request, then everything direct.
            let (_, to, p) = &flow[5];
            assert_eq!(*to, RELAY);
            assert_eq!(Echo::parse(p.ipv6).unwrap().id, PING_ID);
            // The rest: pings and replies through R, refreshes with the server.
            assert!(flow[6..].iter().all(|(f, t, _)| *f == RELAY
                || *t == RELAY
                || *t == SocketAddrV4::new(P, 3544)
                || *f == SocketAddrV4::new(P, 3544)));
            let peer = net.client(x).peer(&H, net.now).unwrap();
            assert!(peer.trusted && !peer.teredo);
            assert_eq!(peer.mapping, Some(RELAY));
            let c = net.client(x).counters();
            assert_eq!((c.echo_tests_sent, c.echo_tests_ok), (1, 1));
            assert_eq!((c.ipv6_sent, c.ipv6_delivered), (3, 3));
            assert_eq!((c.queued, c.flushed), (1, 1));
            assert_eq!(
                (c.reply_bubbles_sent, c.data_rejected, c.ra_rejected),
                (1, 0, 0)
            );
            assert_eq!(c.dropped_total(), 0);
            assert!(net.hosts[x].drops.is_empty(), "{:?}", net.hosts[x].drops);
            assert!(net.relay_drops.is_empty(), "{:?}", net.relay_drops);
            assert!(net
                .relay_accepts
                .iter()
                .all(|a| *a == Acceptance::EmbeddedMapping));
            assert!(net.hosts[x].client.events.iter().any(|e| *e
                == Event::PeerTrusted {
                    peer: H,
                    mapping: RELAY
                }));
        }
    }

    #[test]
    fn symmetric_nat_needs_a_lenient_relay() {
        // Strict relay (RFC 4380 §5.4.2): the direct bubble comes from the mapping the
        // symmetric NAT opened toward the relay, not the one embedded in the address.
        for p in [Profile::Vista, Profile::Miredo] {
            let (mut net, x) = qualified_net(TrustPolicy::Strict, p, Kind::SymPort);
            assert!(net.ping_run(x, H, 3).is_empty(), "{p}");
            assert!(net.relay_drops.contains(&DropReason::SpoofedSource), "{p}");
            assert!(
                net.relay.counters().dropped(DropReason::SpoofedSource) >= 4,
                "{p}"
            );
            let c = net.client(x).counters();
            // Echo tests at 0, 2, 4 and 6 s, then the queue (3 pings) is dropped.
            assert_eq!((c.echo_tests_sent, c.give_ups), (4, 1), "{p}");
            assert_eq!(c.dropped(DropReason::PeerUnreachable), 3, "{p}");
            assert!(net.hosts[x]
                .client
                .events
                .contains(&Event::PeerUnreachable { peer: H }));
            assert_eq!(
                net.client(x).peer(&H, net.now).unwrap().phase,
                PeerPhase::Failed
            );
            // Refused until the window is over, and no new echo test.
            let n = net.log.len();
            assert_eq!(net.ping(x, H, 9), Err(DropReason::PeerUnreachable));
            assert_eq!(net.log.len(), n);
        }
        // Lenient relay: Vista echoes the relay's nonce (RFC 6081 §5.2.4.2), Miredo answers
        // the relay's per-peer link-local; either way the actual mapping is recorded.
        for (p, via) in [
            (Profile::Vista, Acceptance::Nonce),
            (Profile::Win7, Acceptance::Nonce),
            (Profile::Miredo, Acceptance::LinkLocal),
        ] {
            let (mut net, x) = qualified_net(TrustPolicy::Lenient, p, Kind::SymPort);
            assert_eq!(net.ping_run(x, H, 3), [0, 1, 2], "{p}");
            assert_eq!(net.relay_accepts.first(), Some(&via), "{p}");
            let m = net.client(x).mapping().unwrap();
            let recorded = net.relay.peer(&net.addr(x)).unwrap().mapping;
            assert_ne!(
                recorded, m,
                "{p}: the relay uses the NAT's mapping toward it"
            );
            let bubble = net
                .since(0)
                .into_iter()
                .find(|(_, to, pkt)| *to == RELAY && pkt.is_bubble())
                .map(|(_, _, pkt)| trailer_nonce(pkt.trailers))
                .unwrap();
            assert_eq!(bubble.is_some(), via == Acceptance::Nonce, "{p}");
        }
    }

    #[test]
    fn teredo_to_teredo() {
        let mut net = Net::new(TrustPolicy::Strict);
        let x = net.add(Profile::Rfc5991, Kind::Restricted);
        let y = net.add_host(
            ClientConfig::profile(Profile::Rfc5991, P),
            Nat::new(Mapping::Fixed(EXT_Y), true),
            PRIVATE_Y,
        );
        net.run_for(secs(1));
        let (xa, ya) = (net.addr(x), net.addr(y));
        let mark = net.log.len();
        assert_eq!(net.ping_run(x, ya, 3), [0, 1, 2]);
        let flow = net.since(mark);
        // X -> Y.map: direct bubble (opens X's NAT; Y's NAT filters it). X -> P: indirect.
        assert_eq!(flow[0].1, EXT_Y);
        assert!(flow[0].2.is_bubble() && flow[0].2.trailers.is_empty());
        assert_eq!(flow[1].1, SocketAddrV4::new(P, 3544));
        assert!(flow[1].2.is_bubble());
        assert_eq!(net.filtered, 1);
        // P -> Y.map: OI(X.map) + bubble; Y -> X.map: direct bubble, dst X.
        assert_eq!(flow[2].1, EXT_Y);
        assert_eq!(flow[2].2.origin.map(|o| o.0), Some(EXT));
        assert_eq!((flow[3].0, flow[3].1), (EXT_Y, EXT));
        assert_eq!((flow[3].2.src(), flow[3].2.dst()), (ya, xa));
        // X trusts Y (embedded mapping == outer source), the ping goes direct.
        assert_eq!(flow[4].1, EXT_Y);
        assert_eq!(Echo::parse(flow[4].2.ipv6).unwrap().seq, 0);
        let px = net.client(x).peer(&ya, net.now).unwrap();
        let py = net.client(y).peer(&xa, net.now).unwrap();
        assert_eq!((px.trusted, px.mapping), (true, Some(EXT_Y)));
        assert_eq!((py.trusted, py.mapping), (true, Some(EXT)));
        assert_eq!(net.relay.counters().peers_created, 0, "no relay involved");
        assert!(net.hosts.iter().all(|h| h.drops.is_empty()));
    }

    #[test]
    fn rfc6081_symmetric_support_between_clients() {
        let setup = |peer: Profile| {
            let mut net = Net::new(TrustPolicy::Strict);
            let a = net.add(Profile::Vista, Kind::SymPort);
            let b = net.add_host(
                ClientConfig::profile(peer, P),
                Nat::new(Mapping::Fixed(EXT_Y), false),
                PRIVATE_Y,
            );
            net.run_for(secs(25));
            (net, a, b)
        };
        // RFC 6081 §3.1 first case: B (cone) initiates; A's direct answer echoes B's nonce
        // from another mapping, which B records.
        let (mut net, a, b) = setup(Profile::Vista);
        let (aa, ba) = (net.addr(a), net.addr(b));
        assert_eq!(net.ping_run(b, aa, 3), [0, 1, 2]);
        let pb = net.client(b).peer(&aa, net.now).unwrap();
        assert!(pb.trusted);
        assert_ne!(pb.mapping, Some(net.client(a).mapping().unwrap()));
        // Second case: A initiates; B's direct answer is filtered by A's NAT, B also
        // answers indirectly, A's direct answer to that carries B's nonce.
        let (mut net, a, b) = setup(Profile::Vista);
        let ba2 = net.addr(b);
        assert_eq!(net.ping_run(a, ba2, 3), [0, 1, 2]);
        assert!(net.filtered >= 1);
        assert!(net.client(a).peer(&ba2, net.now).unwrap().trusted);
        let _ = ba;
        // Without RFC 6081 on the cone side: no connectivity either way.
        let (mut net, a, b) = setup(Profile::Miredo);
        let (aa, ba) = (net.addr(a), net.addr(b));
        assert!(net.ping_run(b, aa, 3).is_empty());
        assert!(net.hosts[b].drops.contains(&DropReason::SpoofedSource));
        assert!(net.ping_run(a, ba, 3).is_empty());
    }

    #[test]
    fn queues_are_bounded_and_dropped_on_give_up() {
        let (mut net, x) = qualified_net(TrustPolicy::Strict, Profile::Rfc5991, Kind::Cone);
        net.h_up = false;
        let results: Vec<_> = (0..20).map(|s| net.ping(x, H, s)).collect();
        assert!(results[..16].iter().all(Result::is_ok));
        assert!(results[16..]
            .iter()
            .all(|r| *r == Err(DropReason::QueueFull)));
        let peer = net.client(x).peer(&H, net.now).unwrap();
        assert_eq!((peer.queued_packets, peer.queued_bytes), (16, 16 * 80));
        assert_eq!(peer.phase, PeerPhase::Probing);
        let t = net.elapsed();
        net.run_for(secs(20));
        let tests: Vec<Duration> = net
            .log
            .iter()
            .filter(|(at, _, to, d)| {
                *at >= t
                    && *to == SocketAddrV4::new(P, 3544)
                    && TeredoPacket::parse(d).unwrap().dst() == H
            })
            .map(|(at, _, _, _)| *at - t)
            .collect();
        assert_eq!(tests, [secs(0), secs(2), secs(4), secs(6)]);
        let c = net.client(x).counters();
        assert_eq!(c.dropped(DropReason::QueueFull), 4);
        assert_eq!(c.dropped(DropReason::PeerUnreachable), 16);
        assert_eq!(net.client(x).peer(&H, net.now).unwrap().queued_packets, 0);
        assert_eq!(net.client(x).queued_bytes, 0);
        // Refused until 300 s after the first test, then a new test starts.
        net.run_for(secs(250));
        assert_eq!(net.ping(x, H, 30), Err(DropReason::PeerUnreachable));
        net.run_for(secs(30));
        net.h_up = true;
        assert_eq!(net.ping(x, H, 31), Ok(()));
        net.run_for(secs(1));
        assert_eq!(net.replies(x, H), [31]);

        // The byte bound.
        let mut cfg = ClientConfig::profile(Profile::Rfc5991, P);
        cfg.queue_bytes_per_peer = 200;
        let mut net = Net::new(TrustPolicy::Strict);
        let (nat, local) = nat_for(Kind::Cone);
        let x = net.add_host(cfg, nat, local);
        net.run_for(secs(1));
        net.h_up = false;
        let r: Vec<_> = (0..3).map(|s| net.ping(x, H, s)).collect();
        assert_eq!(r, [Ok(()), Ok(()), Err(DropReason::QueueFull)]);
    }

    #[test]
    fn bubble_pacing_and_nonce_trailers() {
        // A Teredo destination that never answers.
        let ghost = TeredoAddr {
            server: P,
            flags: 0,
            mapped: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 99), 4000),
        }
        .to_ipv6();
        for (p, nonces) in [(Profile::Vista, true), (Profile::Rfc5991, false)] {
            let (mut net, x) = qualified_net(TrustPolicy::Strict, p, Kind::Restricted);
            let t = net.elapsed();
            // An application that keeps sending every second for 20 s.
            for s in 0..20 {
                let r = net.ping(x, ghost, s);
                assert!(r.is_ok() || r == Err(DropReason::PeerUnreachable), "{r:?}");
                net.run_for(secs(1));
            }
            let bubbles: Vec<(Duration, SocketAddrV4, Option<[u8; 4]>)> = net
                .log
                .iter()
                .filter(|(at, from, _, d)| {
                    *at >= t
                        && *from != SocketAddrV4::new(P, 3544)
                        && TeredoPacket::parse(d).unwrap().dst() == ghost
                })
                .map(|(at, _, to, d)| {
                    let pkt = TeredoPacket::parse(d).unwrap();
                    assert!(pkt.is_bubble());
                    (*at - t, *to, trailer_nonce(pkt.trailers))
                })
                .collect();
            // A direct and an indirect bubble at 0, 2, 4 and 6 s; nothing more in 300 s.
            let times: Vec<u64> = bubbles.iter().map(|(at, _, _)| at.as_secs()).collect();
            assert_eq!(times, [0, 0, 2, 2, 4, 4, 6, 6], "{p}");
            for (i, (_, to, nonce)) in bubbles.iter().enumerate() {
                if i % 2 == 0 {
                    assert_eq!(*to, SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 99), 4000));
                    assert_eq!(*nonce, None, "{p}: no nonce before one was received");
                } else {
                    assert_eq!(*to, SocketAddrV4::new(P, 3544));
                    assert_eq!(nonce.is_some(), nonces, "{p}");
                }
            }
            if nonces {
                let distinct: HashSet<_> = bubbles.iter().filter_map(|b| b.2).collect();
                assert_eq!(distinct.len(), 4, "a fresh nonce per indirect bubble");
            }
            let c = net.client(x).counters();
            assert_eq!((c.bubbles_sent, c.give_ups), (8, 1));
            // Packets 0..=7 were queued (the last ones refused after the give-up at 8 s).
            assert_eq!(c.dropped(DropReason::PeerUnreachable), 8 + 12, "{p}");
        }
    }

    /// A Teredo datagram: optional OI, then an IPv6 packet.
    fn datagram(origin: Option<SocketAddrV4>, ipv6: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        if let Some(o) = origin {
            let mut b = [0u8; 8];
            crate::wire::OriginIndication(o).emit(&mut b).unwrap();
            v.extend_from_slice(&b);
        }
        v.extend_from_slice(ipv6);
        v
    }

    #[test]
    fn reception_rules() {
        let (mut net, x) = qualified_net(TrustPolicy::Strict, Profile::Rfc5991, Kind::NoNat);
        let now = net.now;
        let xa = net.addr(x);
        let c = &mut net.hosts[x].client;
        let peer_map = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 4000);
        let peer = TeredoAddr {
            server: P,
            flags: 0,
            mapped: peer_map,
        }
        .to_ipv6();
        let native: Ipv6Addr = "2001:db8::5".parse().unwrap();
        let server = SocketAddrV4::new(P, 3544);
        let mut routed = echo_request(peer, xa, 1);
        routed[6] = 43;
        let mut ll = echo_request("fe80::1".parse().unwrap(), xa, 1);
        finish_icmpv6(&mut ll);
        let cases: Vec<(&str, SocketAddrV4, Vec<u8>, DropReason)> = vec![
            (
                "unknown non-Teredo source (no echo test: CVE-2006-6266)",
                peer_map,
                datagram(None, &echo_request(native, xa, 1)),
                DropReason::UntrustedSource,
            ),
            (
                "Teredo source, other mapping",
                SocketAddrV4::new(*peer_map.ip(), 4001),
                datagram(None, &echo_request(peer, xa, 1)),
                DropReason::SpoofedSource,
            ),
            (
                "routing header (CVE-2006-6263)",
                peer_map,
                datagram(None, &routed),
                DropReason::RoutingHeader,
            ),
            (
                "link-local source",
                peer_map,
                datagram(None, &ll),
                DropReason::LinkLocalSource,
            ),
            (
                "not our address",
                peer_map,
                datagram(None, &echo_request(peer, H, 1)),
                DropReason::NotOurAddress,
            ),
            (
                "origin indication not from the server",
                peer_map,
                datagram(Some(peer_map), &echo_request(peer, xa, 1)),
                DropReason::UnexpectedOrigin,
            ),
            (
                "non-bubble from the server it cannot vouch for",
                server,
                datagram(Some(peer_map), &echo_request(native, xa, 1)),
                DropReason::UntrustedSource,
            ),
            (
                "relayed bubble without origin from a non-Teredo source",
                server,
                datagram(None, &bubble_bytes(native, xa, None)),
                DropReason::MissingOrigin,
            ),
            (
                "relayed bubble to answer at a private address",
                server,
                datagram(
                    Some(SocketAddrV4::new(Ipv4Addr::new(10, 1, 1, 1), 9)),
                    &bubble_bytes(native, xa, None),
                ),
                DropReason::NonGlobalMappedAddress,
            ),
        ];
        for (what, from, bytes, reason) in &cases {
            assert_eq!(c.handle_udp(now, *from, bytes), Err(*reason), "{what}");
            assert_eq!(
                c.poll_transmit(&mut [0u8; 2000]),
                None,
                "{what}: nothing sent"
            );
            assert_eq!(c.poll_ipv6(&mut [0u8; 2000]), None, "{what}");
        }
        assert_eq!(c.counters().data_rejected, cases.len() as u64);
        assert_eq!(
            c.counters().ra_rejected,
            0,
            "data refusals are not RA refusals"
        );
        assert_eq!(c.peer_count(), 0, "no entry for refused sources");
        // Case 3: a Teredo source at its embedded mapping is trusted and delivered.
        let req = echo_request(peer, xa, 2);
        assert_eq!(c.handle_udp(now, peer_map, &datagram(None, &req)), Ok(()));
        let mut b = [0u8; 2000];
        assert_eq!(c.poll_ipv6(&mut b), Some(req.len()));
        assert_eq!(&b[..req.len()], &req[..]);
        let p = c.peer(&peer, now).unwrap();
        assert!(p.trusted && p.valid && p.teredo);
        // Relayed by the server with an origin indication that matches the embedded mapping:
        // the server vouches for it.
        let req = echo_request(peer, xa, 3);
        assert_eq!(
            c.handle_udp(now, server, &datagram(Some(peer_map), &req)),
            Ok(())
        );
        assert_eq!(c.poll_ipv6(&mut b), Some(req.len()));
        // A relay's indirect bubble: answered to the origin indication, dst = its source.
        let relay_ll: Ipv6Addr = "fe80::1234:5678".parse().unwrap();
        let relayed = datagram(Some(RELAY), &bubble_bytes(relay_ll, xa, Some([1, 2, 3, 4])));
        assert_eq!(c.handle_udp(now, server, &relayed), Ok(()));
        let t = c.poll_transmit(&mut b).unwrap();
        assert_eq!(t.to, RELAY);
        let answer = TeredoPacket::parse(&b[..t.len]).unwrap();
        assert!(answer.is_bubble());
        assert_eq!((answer.src(), answer.dst()), (xa, relay_ll));
        assert_eq!(trailer_nonce(answer.trailers), None, "rfc5991: no RFC 6081");
        assert_eq!(c.counters().ra_rejected, 0);
        assert_eq!(c.counters().reply_bubbles_sent, 1);
        // Answers are rate-limited: a burst of 10, then 10 per second.
        for _ in 0..20 {
            let _ = c.handle_udp(now, server, &relayed);
        }
        let mut answered = 0;
        while c.poll_transmit(&mut b).is_some() {
            answered += 1;
        }
        assert_eq!(answered, 9);
        assert_eq!(c.counters().reply_bubbles_suppressed, 11);
        // Not qualified: the data path is closed.
        let (mut c, now, _, _) = probing(Profile::Miredo);
        assert_eq!(
            c.handle_udp(now, peer_map, &datagram(None, &echo_request(peer, xa, 1))),
            Err(DropReason::NotQualified)
        );
        assert_eq!(
            c.send_ipv6(now, &echo_request(xa, H, 1)),
            Err(DropReason::NotQualified)
        );
        assert_eq!(
            (c.counters().data_rejected, c.counters().ra_rejected),
            (1, 0)
        );
    }

    #[test]
    fn send_validation() {
        let (mut net, x) = qualified_net(TrustPolicy::Strict, Profile::Rfc5991, Kind::Cone);
        let xa = net.addr(x);
        let now = net.now;
        let c = &mut net.hosts[x].client;
        let private_peer = TeredoAddr {
            server: P,
            flags: 0,
            mapped: SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 1), 4000),
        }
        .to_ipv6();
        let private_server = TeredoAddr {
            server: Ipv4Addr::new(10, 0, 0, 1),
            flags: 0,
            mapped: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 4000),
        }
        .to_ipv6();
        let mut truncated = echo_request(xa, H, 1);
        truncated.pop();
        for (pkt, want) in [
            (echo_request(H, xa, 1), DropReason::WrongSource),
            (echo_request(xa, xa, 1), DropReason::NotAllowed),
            (
                echo_request(xa, "fe80::1".parse().unwrap(), 1),
                DropReason::NonGlobalDestination,
            ),
            (
                echo_request(xa, "ff02::1".parse().unwrap(), 1),
                DropReason::NonGlobalDestination,
            ),
            (
                echo_request(xa, private_peer, 1),
                DropReason::NonGlobalMappedAddress,
            ),
            (
                echo_request(xa, private_server, 1),
                DropReason::NonGlobalServer,
            ),
            (truncated, DropReason::BadLength),
            (vec![0x45; 40], DropReason::BadIpVersion),
            (vec![0x60; 10], DropReason::Truncated),
        ] {
            assert_eq!(c.send_ipv6(now, &pkt), Err(want));
        }
        assert_eq!(c.counters().dropped_total(), 9);
        assert_eq!(c.poll_transmit(&mut [0u8; 100]), None);
        assert_eq!(c.peer_count(), 0);
    }

    #[test]
    fn peer_table_is_bounded() {
        let mut cfg = ClientConfig::profile(Profile::Rfc5991, P);
        cfg.max_peers = 2;
        let mut net = Net::new(TrustPolicy::Strict);
        let (nat, local) = nat_for(Kind::Cone);
        let x = net.add_host(cfg, nat, local);
        net.run_for(secs(1));
        net.h_up = false;
        let xa = net.addr(x);
        for i in 1..=3u16 {
            let dst = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i);
            let c = &mut net.hosts[x].client;
            assert_eq!(c.send_ipv6(net.now, &echo_request(xa, dst, i)), Ok(()));
            net.run_for(secs(1));
        }
        let c = net.client(x);
        assert_eq!(c.peer_count(), 2);
        assert_eq!(c.counters().peers_evicted, 1);
        assert_eq!(c.counters().dropped(DropReason::PeerEvicted), 1);
        assert!(c
            .peer(&Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1), net.now)
            .is_none());
    }

    #[test]
    fn losing_the_address_empties_the_peer_table() {
        let (mut net, x) = qualified_net(TrustPolicy::Strict, Profile::Miredo, Kind::Cone);
        // Miredo refreshes at 30 s, 60 s, ... after the first RS (t = 0).
        net.run_for(secs(3));
        net.h_up = false;
        assert_eq!(net.ping(x, H, 1), Ok(()));
        net.hosts[x].nat.mapping =
            Mapping::Fixed(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 41000));
        net.run_for(secs(4));
        let c = net.client(x);
        assert!(c
            .events
            .iter()
            .any(|e| matches!(e, Event::AddressChanged { .. })));
        assert_eq!(c.peer_count(), 0);
        assert_eq!(c.counters().dropped(DropReason::AddressLost), 1);
    }

    #[test]
    fn traffic_is_activity_for_the_dormant_timer() {
        let (mut net, x) = qualified_net(TrustPolicy::Strict, Profile::Win7, Kind::Cone);
        // A ping every 10 minutes keeps Windows 7 qualified for two hours.
        for s in 0..12 {
            assert_eq!(net.ping(x, H, s), Ok(()));
            net.run_for(secs(600));
        }
        assert_eq!(net.client(x).state(), State::Qualified);
        assert_eq!(net.replies(x, H).len(), 12);
        // Idle for an hour: dormant; the next packet wakes it up (and is refused).
        net.run_for(secs(3700));
        assert_eq!(net.client(x).state(), State::Dormant);
        let xa = TeredoAddr {
            server: P,
            flags: 0,
            mapped: EXT,
        }
        .to_ipv6();
        let now = net.now;
        assert_eq!(
            net.hosts[x].client.send_ipv6(now, &echo_request(xa, H, 1)),
            Err(DropReason::NotQualified)
        );
        assert!(matches!(net.client(x).state(), State::Probe(_)));
    }
}
