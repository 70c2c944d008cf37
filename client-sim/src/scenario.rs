//! What a lab scenario is and what it must show: the simulated network's addresses and
//! timings, the scenario variants, the expected outcomes (final state, data path, faults) and
//! the observations they are checked against. The lab ([`crate::lab`]) and its faults
//! ([`crate::faults`]) both build on this; it depends on neither.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Duration;

use netsim::sim::SimCounters;
use netsim::{NatDrop, NatPreset};
use serde_json::json;
use teredo::addr::TeredoAddr;
use teredo::client::{ClientError, Event, NatType, Profile, State};
use teredo::DropReason;

use crate::report::StatusReport;

/// The server's primary address (its secondary is the next one, 198.51.100.2).
pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// External addresses of a scenario's NAT (the second one only for `symmetric-address`).
pub const NAT_EXTERNAL: [Ipv4Addr; 2] =
    [Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2)];
/// A client without NAT has this global address.
pub const CLIENT_GLOBAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// A client behind a NAT has this private address.
pub const CLIENT_INTERNAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Where the spoofed router advertisements of [`Variant::SpoofedRa`] claim to come from
/// when they do not impersonate the server.
pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);
/// The relay's Teredo UDP address (as in TEREDO.md §14).
pub const RELAY_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 20), 3545);
/// The relay's own native address (source of its ICMPv6 errors).
pub const RELAY_NATIVE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);
/// The native echo host (ICMPv6 echo, UDP echo on port 7).
pub const ECHO_HOST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
/// The second client of the matrix cells: its profile…
pub const PEER_PROFILE: Profile = Profile::Vista;
/// …its NAT preset…
pub const PEER_NAT: NatPreset = NatPreset::PortRestricted;
/// …the NAT's external address…
pub const PEER_NAT_EXTERNAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
/// …and the second client's own address behind it.
pub const PEER_INTERNAL: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
/// Echo requests per data-path run, one per [`PING_INTERVAL`].
pub const PINGS: u16 = 3;
/// Spacing of the echo requests.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Wait after the last echo request: longer than a give-up (4 probes 2 s apart, 8 s).
pub const PING_WAIT: Duration = Duration::from_secs(10);
/// Identifier of the lab's echo requests.
pub const PING_ID: u16 = 0x7e1a;

/// Virtual time a plain scenario runs. Long enough for every qualification path (at most
/// 24 s: cone probe and restricted probe both timing out) and two or three refreshes, and
/// shorter than the 100 s after which an offline client starts over — so the state at the
/// end is the outcome, not a retry in progress.
pub const SCENARIO_TIME: Duration = Duration::from_secs(90);
/// Virtual time of the idle scenarios: past Windows 7's 60-minute dormant timer.
pub const IDLE_TIME: Duration = Duration::from_secs(62 * 60);
/// Mapping timeout of [`Variant::MappingTimeout`]: shorter than any refresh interval.
pub const SHORT_MAPPING_TIMEOUT: Duration = Duration::from_secs(20);
/// When the fault of a fault scenario strikes: after the first refresh of every profile
/// (22.5–30 s after the first RA), before the second.
pub const FAULT_AT: Duration = Duration::from_secs(40);
/// How long a restarted server is gone ([`Variant::ServerRestart`]): shorter than the
/// retransmissions of one refresh (3 RSs 4 s apart), as a process restart is.
pub const RESTART_DOWNTIME: Duration = Duration::from_secs(5);
/// Loss on the client's NAT link in [`Variant::LossReorder`], per datagram and direction.
pub const FAULT_LOSS: f64 = 0.10;
/// Largest extra delay per datagram on the Internet in [`Variant::LossReorder`] (on top of
/// the 10 ms latency): datagrams sent within 30 ms of each other may arrive swapped.
pub const FAULT_JITTER: Duration = Duration::from_millis(30);
/// Longest virtual time [`Variant::LossReorder`] waits for qualification before its pings:
/// two offline retries (100 s each) fit, so a qualification whose RSs were all lost is
/// retried.
pub const LOSSY_TIME: Duration = Duration::from_secs(240);
/// The second client's address in [`Variant::SameLan`]: the same /24 as [`CLIENT_INTERNAL`].
pub const LAN_PEER_INTERNAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

/// How long the clients of [`Variant::Revalidate`] stay quiet between their two ping runs:
/// with the 10 s wait after the first run, more than RFC 4380's 30 s peer validity since the
/// last reply.
pub const QUIET_TIME: Duration = Duration::from_secs(35);

/// Echo requests of the [`Variant::LossReorder`] data path.
pub const LOSSY_PINGS: u16 = 20;
/// Their spacing: within [`FAULT_JITTER`], so that they overtake each other.
pub const LOSSY_PING_INTERVAL: Duration = Duration::from_millis(10);
/// Time the client of [`Variant::RelayRestart`] runs before its first pings.
pub const RELAY_RESTART_AT: Duration = Duration::from_secs(30);
/// Pings (one a second) the client sends first after a relay restart: enough to outlast a
/// relay that drops it until its peer entry goes stale (30 s) and its echo test runs.
pub const RESTART_PINGS: u16 = 40;

/// What a scenario changes on top of "this profile behind this NAT".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The plain matrix cell: 90 s behind the preset.
    Matrix,
    /// Idle for 62 minutes, no application traffic.
    Idle,
    /// Idle for 62 minutes with `DefaultQualified` set.
    DefaultQualified,
    /// On a managed (domain) network, client type `client`.
    ManagedNetwork,
    /// On a managed network, client type `enterpriseclient`.
    ManagedEnterprise,
    /// NAT mapping timeout 20 s (< refresh interval), sequential port allocation.
    MappingTimeout,
    /// The server never answers.
    ServerDown,
    /// The server never answers; an on-path attacker answers every RS with broken or
    /// spoofed router advertisements.
    SpoofedRa,
    /// Fault: the server process restarts at [`FAULT_AT`] (down for [`RESTART_DOWNTIME`],
    /// every piece of its state lost).
    ServerRestart,
    /// Fault: the server dies at [`FAULT_AT`] and stays dead.
    ServerDies,
    /// Fault: the relay restarts (peer table lost) between two rounds of pings.
    RelayRestart {
        /// The client sends first after the restart (else the native host does).
        client_first: bool,
        /// The new relay drops datagrams from clients it has no entry for (Miredo; the
        /// default accepts them as new trusted peers).
        drop_unknown: bool,
    },
    /// Fault: the NAT reboots at [`FAULT_AT`]: every mapping lost, random port allocation
    /// so that the new mapping has another port.
    NatReboot,
    /// Fault: [`FAULT_LOSS`] loss each way on the client's NAT link and [`FAULT_JITTER`]
    /// on the Internet (reordering), for [`LOSSY_TIME`], then [`LOSSY_PINGS`] pings.
    LossReorder,
    /// A second client of the same profile on the client's LAN (behind the same NAT, at
    /// [`LAN_PEER_INTERNAL`]); after [`SCENARIO_TIME`] the client pings it ([`PINGS`]).
    SameLan {
        /// The NAT hairpins (RFC 4787 REQ-9); off, only local discovery can help.
        hairpin: bool,
        /// Keep the profile's local discovery (RFC 4380 §5.2.8); `false` turns it off.
        discovery: bool,
        /// Keep the profile's Hairpinning extension (RFC 6081 §5.6); `false` turns it off.
        extension: bool,
    },
    /// A second client of the same profile behind a NAT of its own ([`PEER_NAT`] at
    /// [`PEER_NAT_EXTERNAL`]); after [`SCENARIO_TIME`] the client pings it ([`PINGS`]), both
    /// stay quiet for [`QUIET_TIME`], and it pings again: the peer must be re-validated.
    Revalidate {
        /// Keep the profile's Server Load Reduction extension (RFC 6081 §5.7); `false`
        /// turns it off.
        reduction: bool,
    },
}

impl Variant {
    /// Label used in scenario names and the table (`-` for the plain cell).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Matrix => "-",
            Self::Idle => "idle-61min",
            Self::DefaultQualified => "default-qualified-idle-61min",
            Self::ManagedNetwork => "managed-network",
            Self::ManagedEnterprise => "managed-enterpriseclient",
            Self::MappingTimeout => "mapping-timeout-20s",
            Self::ServerDown => "server-down",
            Self::SpoofedRa => "spoofed-ra",
            Self::ServerRestart => "server-restart",
            Self::ServerDies => "server-dies",
            Self::RelayRestart {
                client_first: false,
                drop_unknown: false,
            } => "relay-restart",
            Self::RelayRestart {
                client_first: false,
                drop_unknown: true,
            } => "relay-restart-drop-unknown",
            Self::RelayRestart {
                client_first: true,
                drop_unknown: false,
            } => "relay-restart-client-first",
            Self::RelayRestart {
                client_first: true,
                drop_unknown: true,
            } => "relay-restart-client-first-drop-unknown",
            Self::NatReboot => "nat-reboot",
            Self::LossReorder => "loss-10pct-reorder",
            Self::SameLan {
                hairpin,
                discovery,
                extension,
            } => match (hairpin, discovery, extension) {
                (false, true, true) => "same-lan",
                (false, false, true) => "same-lan-discovery-off",
                (true, true, true) => "same-lan-hairpin",
                (true, false, true) => "same-lan-hairpin-discovery-off",
                (false, true, false) => "same-lan-hairpinning-off",
                (false, false, false) => "same-lan-discovery-off-hairpinning-off",
                (true, true, false) => "same-lan-hairpin-hairpinning-off",
                (true, false, false) => "same-lan-hairpin-discovery-off-hairpinning-off",
            },
            Self::Revalidate { reduction: true } => "quiet-35s-revalidate",
            Self::Revalidate { reduction: false } => "quiet-35s-revalidate-load-reduction-off",
        }
    }

    /// Whether the scenario injects a fault (and is run by the fault driver, with a
    /// [`FaultExpect`]).
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            Self::ServerDown
                | Self::ServerRestart
                | Self::ServerDies
                | Self::RelayRestart { .. }
                | Self::NatReboot
                | Self::LossReorder
                | Self::SameLan { .. }
                | Self::Revalidate { .. }
        )
    }

    /// Virtual time the scenario runs.
    pub fn duration(self) -> Duration {
        match self {
            Self::Idle | Self::DefaultQualified => IDLE_TIME,
            Self::LossReorder => LOSSY_TIME,
            Self::RelayRestart { .. } => RELAY_RESTART_AT,
            _ => SCENARIO_TIME,
        }
    }
}

/// The outcome a scenario must reach, checked at the end of its virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// Final state.
    pub state: State,
    /// NAT type the client reports.
    pub nat: NatType,
    /// The `Error` line (`None` when not offline).
    pub error: Option<ClientError>,
    /// When set: whether the Teredo address carries the cone flag (0x8000).
    pub cone_bit: Option<bool>,
    /// At least this many `AddressChanged` events.
    pub min_address_changes: u64,
    /// At least this many datagrams refused by the client.
    pub min_rejected: u64,
}

impl Expect {
    /// Qualified, reporting `nat`.
    pub const fn qualified(nat: NatType) -> Self {
        Self {
            state: State::Qualified,
            nat,
            error: None,
            cone_bit: None,
            min_address_changes: 0,
            min_rejected: 0,
        }
    }

    /// Offline with `error`, reporting `nat`.
    pub const fn offline(nat: NatType, error: ClientError) -> Self {
        Self {
            state: State::Offline,
            nat,
            error: Some(error),
            ..Self::qualified(nat)
        }
    }

    /// Dormant, still reporting `nat`.
    pub const fn dormant(nat: NatType) -> Self {
        Self {
            state: State::Dormant,
            ..Self::qualified(nat)
        }
    }

    /// Also require the cone flag to be `set` (or clear).
    pub const fn cone_bit(self, set: bool) -> Self {
        Self {
            cone_bit: Some(set),
            ..self
        }
    }

    /// Also require at least `n` address changes.
    pub const fn address_changes(self, n: u64) -> Self {
        Self {
            min_address_changes: n,
            ..self
        }
    }

    /// Also require at least `n` refused datagrams.
    pub const fn rejected(self, n: u64) -> Self {
        Self {
            min_rejected: n,
            ..self
        }
    }

    /// Compact text for the table: `qualified/cone C=1`, `offline/symmetric (port)/symmetric_nat`.
    pub fn summary(&self) -> String {
        let mut s = format!("{}/{}", self.state, self.nat);
        if let Some(e) = self.error {
            let _ = write!(s, "/{}", e.as_str());
        }
        if let Some(c) = self.cone_bit {
            let _ = write!(s, " C={}", u8::from(c));
        }
        if self.min_address_changes > 0 {
            let _ = write!(s, " changes>={}", self.min_address_changes);
        }
        if self.min_rejected > 0 {
            let _ = write!(s, " rejected>={}", self.min_rejected);
        }
        s
    }

    /// Every way `o` differs from this expectation (empty: as expected).
    pub fn check(&self, o: &Observed) -> Vec<String> {
        let mut d = Vec::new();
        if let Some(e) = &o.run_error {
            d.push(format!("run failed: {e}"));
        }
        if o.state != self.state {
            d.push(format!("state {} (expected {})", o.state, self.state));
        }
        if o.nat != self.nat {
            d.push(format!("NAT {} (expected {})", o.nat, self.nat));
        }
        if o.error != self.error {
            let show = |e: Option<ClientError>| e.map_or("none".to_owned(), |e| e.to_string());
            d.push(format!(
                "error {} (expected {})",
                show(o.error),
                show(self.error)
            ));
        }
        match (self.state == State::Qualified, o.address) {
            (true, None) => d.push("no Teredo address".to_owned()),
            (false, Some(a)) => d.push(format!("Teredo address {a} (expected none)")),
            _ => {}
        }
        if let Some(want) = self.cone_bit {
            if o.cone_bit() != Some(want) {
                d.push(format!(
                    "cone bit {:?} (expected {})",
                    o.cone_bit(),
                    u8::from(want)
                ));
            }
        }
        if o.address_changes < self.min_address_changes {
            d.push(format!(
                "{} address changes (expected at least {})",
                o.address_changes, self.min_address_changes
            ));
        }
        if o.ra_rejected < self.min_rejected {
            d.push(format!(
                "{} datagrams refused (expected at least {})",
                o.ra_rejected, self.min_rejected
            ));
        }
        d
    }
}

/// What explains a data-path run without replies: a counter that must be non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The relay dropped packets for this reason.
    Relay(DropReason),
    /// A NAT (the client's or the peer's) dropped datagrams for this reason.
    Nat(NatDrop),
}

impl Blame {
    /// `relay spoofed_source`, `nat filtered`.
    pub fn label(self) -> String {
        match self {
            Self::Relay(r) => format!("relay {}", r.as_str()),
            Self::Nat(n) => format!("nat {}", n.as_str()),
        }
    }

    /// The blamed counter in an observed run.
    pub fn count(self, o: &PathObserved) -> u64 {
        match self {
            Self::Relay(r) => o.relay_drops.get(r.as_str()).copied().unwrap_or(0),
            Self::Nat(n) => o.nat_drops.get(n.as_str()).copied().unwrap_or(0),
        }
    }
}

/// The expected outcome of one data-path run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathExpect {
    /// No data path: the run does not happen (`-`).
    Skip,
    /// Every echo request answered.
    All,
    /// No echo request answered, and the blamed counter is non-zero.
    NoReply(Blame),
}

impl PathExpect {
    /// `-`, `3/3`, `0/3 relay spoofed_source`.
    pub fn summary(self) -> String {
        match self {
            Self::Skip => "-".to_owned(),
            Self::All => format!("{PINGS}/{PINGS}"),
            Self::NoReply(b) => format!("0/{PINGS} {}", b.label()),
        }
    }

    /// How `o` differs from this expectation (`None`: as expected).
    pub fn check(self, what: &str, o: Option<&PathObserved>) -> Option<String> {
        match (self, o) {
            (Self::Skip, None) => None,
            (Self::Skip, Some(o)) => {
                Some(format!("{what}: {} (expected no data path)", o.cell(None)))
            }
            (_, None) => Some(format!(
                "{what}: no data path (expected {})",
                self.summary()
            )),
            (Self::All, Some(o)) if o.received == PINGS && o.sent == PINGS => None,
            (Self::NoReply(b), Some(o)) if o.received == 0 && b.count(o) > 0 => None,
            (_, Some(o)) => Some(format!(
                "{what}: {} (expected {})",
                o.cell(None),
                self.summary()
            )),
        }
    }
}

/// The expected data-path outcomes of a scenario, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataExpect {
    /// Pinging [`ECHO_HOST`] through a strict relay.
    pub ping_strict: PathExpect,
    /// Pinging [`ECHO_HOST`] through a lenient relay.
    pub ping_lenient: PathExpect,
    /// Pinging the second client.
    pub teredo: PathExpect,
    /// The protocol reasoning.
    pub why: &'static str,
}

/// A qualified client behind a NAT that keeps one mapping for every destination (none, full
/// cone, restricted, port-restricted).
pub const DATA_OPEN: DataExpect = DataExpect {
    ping_strict: PathExpect::All,
    ping_lenient: PathExpect::All,
    teredo: PathExpect::All,
    why: "endpoint-independent mapping: the client's direct bubble answering the relay's \
          indirect bubble (relayed by 198.51.100.1 with an origin indication) leaves from the \
          mapping embedded in its address, so even a strict relay (RFC 4380 §5.4.2) trusts it \
          and flushes the echo reply; its data is the echo-test nonce -> the relay is trusted \
          for 2001:db8::99 and every ping goes through it, with either relay. Teredo peer \
          (vista behind port-restricted): our direct bubble opens our NAT toward the peer's \
          mapping (the peer's NAT filters it), the indirect bubble reaches the peer through \
          the server, the peer answers from its embedded mapping -> trusted, direct pings",
};

/// Vista / Windows 7 behind a symmetric NAT (RFC 6081 symmetric NAT support).
pub const DATA_SYMMETRIC_NONCE: DataExpect = DataExpect {
    ping_strict: PathExpect::NoReply(Blame::Relay(DropReason::SpoofedSource)),
    ping_lenient: PathExpect::All,
    teredo: PathExpect::NoReply(Blame::Nat(NatDrop::Filtered)),
    why: "the symmetric NAT gives the direct bubble toward the relay a new mapping (another \
          port, or for symmetric-address another external IPv4): a strict relay drops it as \
          spoofed_source (RFC 4380 §5.4.2) after each of its 4 indirect bubbles and gives up, \
          so the echo tests (0, 2, 4, 6 s) stay unanswered and the queue is dropped -> 0/3; a \
          lenient relay accepts it because it echoes the relay's nonce trailer (RFC 6081 \
          §5.2.4.2) and records the actual mapping -> 3/3. Teredo peer behind port-restricted: \
          RFC 6081 Fig. 1 gives port-symmetric -> port-restricted 'No': the peer's bubbles go \
          to the embedded mapping, which our NAT opened for the server only, and ours come \
          from a mapping the peer's NAT never saw -> both NATs filter, 0/3",
};

/// Miredo behind a symmetric NAT it never noticed (no secondary check).
pub const DATA_SYMMETRIC_LINK_LOCAL: DataExpect = DataExpect {
    ping_strict: PathExpect::NoReply(Blame::Relay(DropReason::SpoofedSource)),
    ping_lenient: PathExpect::All,
    teredo: PathExpect::NoReply(Blame::Nat(NatDrop::Filtered)),
    why: "as for vista, the direct bubble to the relay leaves from another mapping: a strict \
          relay drops it (spoofed_source) -> 0/3. Miredo sends no nonce trailer, but its \
          answer goes to the relayed bubble's source, the relay's per-peer link-local, which \
          a lenient relay takes as proof (Miredo's own extension, TEREDO.md §6.5) -> 3/3. The \
          Teredo peer's answers are filtered as for vista -> 0/3",
};

/// An offline client.
pub const DATA_OFFLINE: DataExpect = DataExpect {
    ping_strict: PathExpect::Skip,
    ping_lenient: PathExpect::Skip,
    teredo: PathExpect::Skip,
    why: "offline: no Teredo address, no data path",
};

/// The named scenarios.
pub const DATA_NOT_RUN: DataExpect = DataExpect {
    why: "no data path in this scenario: traffic would count as activity (idle), or the \
          point is qualification alone",
    ..DATA_OFFLINE
};

/// One scenario: a profile behind a NAT preset, a variant, and its expected outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Client profile.
    pub profile: Profile,
    /// NAT preset in front of the client.
    pub nat: NatPreset,
    /// What else is special.
    pub variant: Variant,
    /// The outcome to reach.
    pub expect: Expect,
    /// Why that outcome (the protocol reasoning).
    pub why: &'static str,
    /// The data-path outcomes to reach (matrix cells only).
    pub data: DataExpect,
    /// What the fault must show (fault scenarios only).
    pub fault: FaultExpect,
}

impl Scenario {
    /// The same scenario with data-path expectations.
    pub const fn data(self, data: DataExpect) -> Self {
        Self { data, ..self }
    }

    /// A fault scenario: `profile` behind `nat`, the fault `variant`, its final state
    /// `expect` and what the fault must show.
    pub const fn fault(
        profile: Profile,
        nat: NatPreset,
        variant: Variant,
        expect: Expect,
        fault: FaultExpect,
        why: &'static str,
    ) -> Self {
        Self {
            profile,
            nat,
            variant,
            expect,
            why,
            data: DATA_NOT_RUN,
            fault,
        }
    }

    /// `<profile>__<nat>` for matrix cells, `<profile>__<nat>__<variant>` otherwise; also the
    /// pcap file stem.
    pub fn name(&self) -> String {
        match self.variant {
            Variant::Matrix => format!("{}__{}", self.profile, self.nat),
            v => format!("{}__{}__{}", self.profile, self.nat, v.as_str()),
        }
    }
}

/// The seed of a scenario's RNG: the lab seed and the scenario name through FNV-1a and
/// SplitMix64 (stable across Rust versions, unlike `DefaultHasher`).
pub fn scenario_seed(lab_seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = (h ^ lab_seed).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a scenario ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Final state.
    pub state: State,
    /// NAT type reported.
    pub nat: NatType,
    /// The `Error` line.
    pub error: Option<ClientError>,
    /// The Teredo address (qualified only).
    pub address: Option<Ipv6Addr>,
    /// The mapping in use or last learned.
    pub mapping: Option<SocketAddrV4>,
    /// The `show state` block at the end.
    pub status: StatusReport,
    /// Virtual time of the first qualification.
    pub first_qualified: Option<Duration>,
    /// `AddressChanged` events.
    pub address_changes: u64,
    /// RSs sent.
    pub rs_sent: u64,
    /// RAs accepted.
    pub ra_accepted: u64,
    /// Datagrams the client refused.
    pub ra_rejected: u64,
    /// Refusals per drop reason (non-zero only).
    pub rejected: BTreeMap<&'static str, u64>,
    /// NAT drops per reason (every reason; empty without NAT).
    pub nat_drops: BTreeMap<&'static str, u64>,
    /// The network's counters.
    pub net: SimCounters,
    /// Every client event with its virtual time.
    pub events: Vec<(Duration, Event)>,
    /// Virtual time simulated.
    pub virtual_time: Duration,
    /// Simulation steps.
    pub steps: u64,
    /// The run stopped early (step bound).
    pub run_error: Option<String>,
    /// Datagrams the client refused on the data path.
    pub data_rejected: u64,
    /// The data-path runs (matrix cells whose client qualified).
    pub data: DataObserved,
    /// What was measured around the fault (fault scenarios).
    pub fault: Option<FaultObserved>,
}

/// One data-path run: echo requests sent, replies received, and the drops during the run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathObserved {
    /// Echo requests the application sent.
    pub sent: u16,
    /// Of those, refused at once by the client (`handle_ipv6` errors).
    pub refused: u16,
    /// Distinct echo replies delivered to the application.
    pub received: u16,
    /// Relay drops during the run, per reason (non-zero only).
    pub relay_drops: BTreeMap<&'static str, u64>,
    /// NAT drops during the run (every NAT of the network), per reason (non-zero only).
    pub nat_drops: BTreeMap<&'static str, u64>,
    /// The client's refusals and drops during the run, per reason (non-zero only).
    pub client_drops: BTreeMap<&'static str, u64>,
    /// When the first reply arrived, since the run started (to a second: replies are
    /// looked for once per request interval).
    pub first_reply: Option<Duration>,
}

impl PathObserved {
    /// `3/3`; without every reply also the counter that explains it: `blame`'s, or else
    /// the largest relay, NAT or client drop, e.g. `0/3 relay spoofed_source=4`.
    pub fn cell(&self, blame: Option<Blame>) -> String {
        let mut s = format!("{}/{}", self.received, self.sent);
        if self.received < self.sent {
            let top = |m: &BTreeMap<&'static str, u64>, what: &str| {
                m.iter()
                    .max_by_key(|(_, n)| **n)
                    .map(|(r, n)| (format!("{what} {r}"), *n))
            };
            let shown = blame
                .map(|b| (b.label(), b.count(self)))
                .or_else(|| top(&self.relay_drops, "relay"))
                .or_else(|| top(&self.nat_drops, "nat"))
                .or_else(|| top(&self.client_drops, "client"));
            if let Some((what, n)) = shown {
                let _ = write!(s, " {what}={n}");
            }
        }
        s
    }

    /// As JSON.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "sent": self.sent,
            "refused": self.refused,
            "received": self.received,
            "relay_drops": self.relay_drops,
            "nat_drops": self.nat_drops,
            "client_drops": self.client_drops,
            "first_reply_secs": self.first_reply.map(|d| d.as_secs_f64()),
        })
    }
}

/// The data-path runs of a scenario (`None`: not run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataObserved {
    /// Pinging [`ECHO_HOST`] through a strict relay.
    pub ping_strict: Option<PathObserved>,
    /// Pinging [`ECHO_HOST`] through a lenient relay (on a second network).
    pub ping_lenient: Option<PathObserved>,
    /// Pinging the second client.
    pub teredo: Option<PathObserved>,
}

impl DataExpect {
    /// Every way `o` differs from these expectations.
    pub fn check(&self, o: &DataObserved) -> Vec<String> {
        [
            self.ping_strict
                .check("ping (strict)", o.ping_strict.as_ref()),
            self.ping_lenient
                .check("ping (lenient)", o.ping_lenient.as_ref()),
            self.teredo.check("teredo<->teredo", o.teredo.as_ref()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl Observed {
    /// Whether the address carries the cone flag; `None` without an address.
    pub fn cone_bit(&self) -> Option<bool> {
        self.address
            .and_then(|a| TeredoAddr::from_ipv6(&a))
            .map(|t| t.is_cone())
    }

    /// Sum of the NAT's drops.
    pub fn nat_drops_total(&self) -> u64 {
        self.nat_drops.values().sum()
    }
}

/// What a fault scenario must show besides its final state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultExpect {
    /// Not a fault scenario.
    None,
    /// Offline exactly this long after the first RS that got no answer (the profile's
    /// retransmissions: `attempts × retransmit` per phase).
    OfflineAfter(Duration),
    /// The same Teredo address as before the fault, at least one RA accepted after it, no
    /// failure, and every ping through the relay answered afterwards.
    AddressKept,
    /// Another Teredo address than before the fault, carrying the NAT's new mapping, and
    /// every ping answered afterwards.
    AddressChanged,
    /// After the relay lost its peers: data flows again between `within.0` and `within.1`
    /// after the restart (the first reply of whoever sends first), then every echo request
    /// of the other side is answered; the new relay sent a bubble iff `bubbles`.
    DataResumes {
        /// Bounds of the time from the restart to the first reply.
        within: (Duration, Duration),
        /// Whether the restarted relay had to bubble.
        bubbles: bool,
    },
    /// The client qualified despite loss and reordering, and at least this many of the
    /// [`LOSSY_PINGS`] pings were answered (losses and reorderings are reported; over a
    /// short run either may happen not to occur for some seed).
    Lossy {
        /// Replies required.
        min_replies: u16,
    },
    /// [`Variant::SameLan`]: how the client's pings reach its LAN neighbour.
    SameLan(LanPath),
    /// [`Variant::Revalidate`]: every ping of both runs answered, and the re-validation
    /// after the quiet time used direct solicitations with no bubble through the server
    /// (`direct`, RFC 6081 §5.7), or RFC 4380's indirect bubble relayed by the server.
    Revalidate {
        /// Server Load Reduction expected.
        direct: bool,
    },
}

/// How two clients behind one NAT reach each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LanPath {
    /// Every ping answered, straight over the LAN (local discovery), nothing hairpinned.
    Lan,
    /// Every ping answered through the NAT's hairpinning, nothing over the LAN.
    Hairpin,
    /// Every ping after the first answered straight over the LAN by the RFC 6081 §5.6
    /// Hairpinning extension (the client trusted the peer at its LAN address by the nonce
    /// its direct bubble echoed), nothing hairpinned. The first request may be spent: the
    /// peer accepts the client's LAN address only once the client echoed the peer's own
    /// nonce (§5.6.4.1), which comes through the server after the client already flushed.
    HairpinExtension,
    /// No ping answered.
    Nowhere,
}

impl FaultExpect {
    /// Compact text for the table's `expected` column (empty for [`Self::None`]).
    pub fn summary(self) -> String {
        match self {
            Self::None => String::new(),
            Self::OfflineAfter(d) => format!("offline {}s after 1st lost RS", d.as_secs()),
            Self::AddressKept => "same address, RA after fault".to_owned(),
            Self::AddressChanged => "new address = new mapping".to_owned(),
            Self::DataResumes { within, bubbles } => format!(
                "data again in {}-{} s, {}",
                within.0.as_secs(),
                within.1.as_secs(),
                if bubbles {
                    "relay bubbles"
                } else {
                    "no bubble"
                }
            ),
            Self::Lossy { min_replies } => {
                format!("ping>={min_replies}/{LOSSY_PINGS}")
            }
            Self::SameLan(LanPath::Lan) => format!("ping {PINGS}/{PINGS} over the LAN"),
            Self::SameLan(LanPath::Hairpin) => format!("ping {PINGS}/{PINGS} hairpinned"),
            Self::SameLan(LanPath::HairpinExtension) => format!(
                "ping >={}/{PINGS} over the LAN by the hairpinning extension",
                PINGS - 1
            ),
            Self::SameLan(LanPath::Nowhere) => format!("ping 0/{PINGS}, nat hairpin_off"),
            Self::Revalidate { direct: true } => {
                "ping 3/3 twice, solicitation answered, no bubble via server".to_owned()
            }
            Self::Revalidate { direct: false } => {
                "ping 3/3 twice, indirect bubble via server".to_owned()
            }
        }
    }

    /// Every way `o` differs from this expectation.
    pub fn check(self, o: Option<&FaultObserved>) -> Vec<String> {
        let mut d = Vec::new();
        let Some(o) = o else {
            if self != Self::None {
                d.push("fault not run".to_owned());
            }
            return d;
        };
        let all = |what: &str, p: &Option<PathObserved>, d: &mut Vec<String>| match p {
            Some(p) if p.sent > 0 && p.received == p.sent => {}
            Some(p) => d.push(format!("{what}: {} (expected all)", p.cell(None))),
            None => d.push(format!("{what}: not run")),
        };
        match self {
            Self::None => {}
            Self::OfflineAfter(want) => match (o.first_lost_rs, o.offline_at) {
                (Some(rs), Some(off)) if off.saturating_sub(rs) == want => {}
                (rs, off) => d.push(format!(
                    "offline at {} after the first unanswered RS at {} (expected {} s later)",
                    secs_opt(off),
                    secs_opt(rs),
                    want.as_secs()
                )),
            },
            Self::AddressKept => {
                if o.address_before.is_none() || o.address_after != o.address_before {
                    d.push(format!(
                        "address {} -> {} (expected unchanged)",
                        addr_opt(o.address_before),
                        addr_opt(o.address_after)
                    ));
                }
                if o.ras_after == 0 {
                    d.push("no RA accepted after the fault".to_owned());
                }
                if o.failures_after > 0 {
                    d.push(format!("{} failures after the fault", o.failures_after));
                }
                all("ping after", &o.outbound, &mut d);
            }
            Self::AddressChanged => {
                if o.address_after.is_none() || o.address_after == o.address_before {
                    d.push(format!(
                        "address {} -> {} (expected a new one)",
                        addr_opt(o.address_before),
                        addr_opt(o.address_after)
                    ));
                }
                let embedded = o
                    .address_after
                    .and_then(|a| TeredoAddr::from_ipv6(&a))
                    .map(|t| t.mapped);
                if embedded.is_none() || embedded != o.nat_mapping {
                    d.push(format!(
                        "address carries {embedded:?}, the NAT maps {:?}",
                        o.nat_mapping
                    ));
                }
                all("ping after", &o.outbound, &mut d);
            }
            Self::DataResumes { within, bubbles } => {
                if (o.relay_bubbles_after > 0) != bubbles {
                    d.push(format!(
                        "the restarted relay sent {} bubbles (expected {})",
                        o.relay_bubbles_after,
                        if bubbles { "some" } else { "none" }
                    ));
                }
                match o.resumed_after {
                    Some(t) if t >= within.0 && t <= within.1 => {}
                    t => d.push(format!(
                        "data again after {} (expected {}-{} s)",
                        secs_opt(t),
                        within.0.as_secs(),
                        within.1.as_secs()
                    )),
                }
                all("ping before", &o.before, &mut d);
                // The side that sent first loses what the relay dropped before it learned
                // the peer again; the other side's requests must all be answered.
                all("second round after the restart", &o.second, &mut d);
            }
            Self::Lossy { min_replies } => match &o.outbound {
                Some(p) if p.received >= min_replies => {}
                Some(p) => d.push(format!(
                    "ping {} (expected at least {min_replies} replies)",
                    p.cell(None)
                )),
                None => d.push("no ping (not qualified)".to_owned()),
            },
            Self::SameLan(path) => {
                let (lan, hairpin) = (o.lan_unicast > 0, o.hairpinned > 0);
                match path {
                    LanPath::Lan | LanPath::Hairpin => all("ping", &o.outbound, &mut d),
                    LanPath::HairpinExtension => match &o.outbound {
                        Some(p) if p.sent > 0 && p.received + 1 >= p.sent => {}
                        Some(p) => d.push(format!(
                            "ping {} (expected all but the first)",
                            p.cell(None)
                        )),
                        None => d.push("no ping (not qualified)".to_owned()),
                    },
                    LanPath::Nowhere => match &o.outbound {
                        Some(p)
                            if p.sent > 0
                                && p.received == 0
                                && p.nat_drops.get("hairpin_off").is_some_and(|n| *n > 0) => {}
                        Some(p) => d.push(format!(
                            "ping {} (expected none, nat hairpin_off)",
                            p.cell(None)
                        )),
                        None => d.push("no ping (not qualified)".to_owned()),
                    },
                }
                // Over the LAN: the client sends to the peer's LAN address.
                let at_lan = matches!(path, LanPath::Lan | LanPath::HairpinExtension);
                if at_lan && (o.peer_mapping.is_none() || o.peer_mapping != o.peer_local) {
                    d.push(format!(
                        "packets to the peer go to {} (expected its LAN address {})",
                        sock_opt(o.peer_mapping),
                        sock_opt(o.peer_local)
                    ));
                }
                let by_extension = o.hairpin_peers_trusted > 0;
                if by_extension != (path == LanPath::HairpinExtension) {
                    d.push(format!(
                        "{} peers trusted by the hairpinning extension (expected {})",
                        o.hairpin_peers_trusted,
                        if by_extension { "none" } else { "some" }
                    ));
                }
                let want = (at_lan, path == LanPath::Hairpin);
                if (lan, hairpin) != want {
                    d.push(format!(
                        "{} datagrams over the LAN, {} hairpinned (expected {} and {})",
                        o.lan_unicast,
                        o.hairpinned,
                        if want.0 { "some" } else { "none" },
                        if want.1 { "some" } else { "none" }
                    ));
                }
            }
            Self::Revalidate { direct } => {
                all("ping before", &o.before, &mut d);
                all("ping after the quiet time", &o.outbound, &mut d);
                let solicited = o.solicitations_sent > 0 && o.advertisements_received > 0;
                if direct && (!solicited || o.server_bubbles > 0) {
                    d.push(format!(
                        "{} solicitations, {} advertisements, {} bubbles relayed by the \
                         server (expected some, some and none)",
                        o.solicitations_sent, o.advertisements_received, o.server_bubbles
                    ));
                }
                if !direct && (o.solicitations_sent > 0 || o.server_bubbles == 0) {
                    d.push(format!(
                        "{} solicitations, {} bubbles relayed by the server (expected none \
                         and some)",
                        o.solicitations_sent, o.server_bubbles
                    ));
                }
            }
        }
        d
    }
}

fn sock_opt(a: Option<SocketAddrV4>) -> String {
    a.map_or("-".to_owned(), |a| a.to_string())
}

fn secs_opt(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
}

fn addr_opt(a: Option<Ipv6Addr>) -> String {
    a.map_or("none".to_owned(), |a| a.to_string())
}

/// What was measured around a fault.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultObserved {
    /// When the fault struck (virtual time).
    pub fault_at: Duration,
    /// The Teredo address just before it.
    pub address_before: Option<Ipv6Addr>,
    /// The Teredo address at the end.
    pub address_after: Option<Ipv6Addr>,
    /// RAs the client accepted after it.
    pub ras_after: u64,
    /// Transitions to offline after it.
    pub failures_after: u64,
    /// The first RS the client sent at or after the fault that got no answer.
    pub first_lost_rs: Option<Duration>,
    /// When the client first went offline after the fault.
    pub offline_at: Option<Duration>,
    /// The NAT's mapping toward the server's primary address at the end.
    pub nat_mapping: Option<SocketAddrV4>,
    /// RSs sent, RAs accepted (whole run).
    pub rs_sent: u64,
    /// RAs accepted (whole run).
    pub ra_accepted: u64,
    /// RSs sent beyond one per accepted RA: retransmissions (and unanswered probes).
    pub rs_retransmissions: u64,
    /// Bubbles (direct and indirect) and echo tests the client sent (whole run).
    pub client_probes: u64,
    /// Datagrams the client's NAT lost.
    pub nat_lost: u64,
    /// Datagrams that arrived out of order on the Internet.
    pub reordered: u64,
    /// Bubbles the (restarted) relay sent after the restart.
    pub relay_bubbles_after: u64,
    /// From the relay restart to the first reply of the first round after it.
    pub resumed_after: Option<Duration>,
    /// The second round after a relay restart (whoever did not send first).
    pub second: Option<PathObserved>,
    /// Pings before the fault ([`Variant::RelayRestart`]).
    pub before: Option<PathObserved>,
    /// The native host's pings to the client after the fault.
    pub inbound: Option<PathObserved>,
    /// The client's pings to the native host after the fault (to its LAN neighbour in
    /// [`Variant::SameLan`]).
    pub outbound: Option<PathObserved>,
    /// Unicast datagrams between the clients on the LAN ([`Variant::SameLan`]).
    pub lan_unicast: u64,
    /// Discovery datagrams delivered on the LAN.
    pub lan_multicast: u64,
    /// Datagrams the NAT hairpinned between them.
    pub hairpinned: u64,
    /// The pinged peer's own socket address (its LAN address behind the NAT).
    pub peer_local: Option<SocketAddrV4>,
    /// Where the client sends packets for the pinged peer at the end.
    pub peer_mapping: Option<SocketAddrV4>,
    /// Peers the client trusted at an address only the Hairpinning extension accepts.
    pub hairpin_peers_trusted: u64,
    /// Direct bubbles the client sent to a peer's alternate addresses.
    pub hairpin_bubbles_sent: u64,
    /// Server Load Reduction solicitations the client sent (whole run).
    pub solicitations_sent: u64,
    /// Advertisements the client received (whole run).
    pub advertisements_received: u64,
    /// Bubbles the server relayed during the second ping run of [`Variant::Revalidate`].
    pub server_bubbles: u64,
}

impl FaultObserved {
    /// Compact text for the table's `fault` column.
    pub fn summary(&self, variant: Variant) -> String {
        let mut s = String::new();
        let p = |p: &Option<PathObserved>| p.as_ref().map_or("-".to_owned(), |p| p.cell(None));
        match variant {
            Variant::ServerDown | Variant::ServerDies => {
                let _ = write!(
                    s,
                    "RS lost {} offline {}",
                    secs_opt(self.first_lost_rs),
                    secs_opt(self.offline_at)
                );
            }
            Variant::ServerRestart | Variant::NatReboot => {
                let same =
                    self.address_before.is_some() && self.address_before == self.address_after;
                let _ = write!(
                    s,
                    "addr {} RA after {} ping {}",
                    if same { "kept" } else { "changed" },
                    self.ras_after,
                    p(&self.outbound)
                );
            }
            Variant::RelayRestart { .. } => {
                let _ = write!(
                    s,
                    "before {} bubbles {} in {} out {} data again {}",
                    p(&self.before),
                    self.relay_bubbles_after,
                    p(&self.inbound),
                    p(&self.outbound),
                    secs_opt(self.resumed_after)
                );
            }
            Variant::SameLan { .. } => {
                let _ = write!(
                    s,
                    "ping {} lan {} discovery {} hairpinned {} alt-bubbles {} alt-trusted {}",
                    p(&self.outbound),
                    self.lan_unicast,
                    self.lan_multicast,
                    self.hairpinned,
                    self.hairpin_bubbles_sent,
                    self.hairpin_peers_trusted
                );
            }
            Variant::Revalidate { .. } => {
                let _ = write!(
                    s,
                    "before {} after {} solicitations {} advertisements {} server bubbles {}",
                    p(&self.before),
                    p(&self.outbound),
                    self.solicitations_sent,
                    self.advertisements_received,
                    self.server_bubbles
                );
            }
            Variant::LossReorder => {
                let _ = write!(
                    s,
                    "RS {} retx {} lost {} reord {} ping {}",
                    self.rs_sent,
                    self.rs_retransmissions,
                    self.nat_lost,
                    self.reordered,
                    p(&self.outbound)
                );
            }
            _ => {}
        }
        s
    }

    /// As JSON.
    pub fn json(&self) -> serde_json::Value {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        json!({
            "fault_at_secs": self.fault_at.as_secs_f64(),
            "address_before": self.address_before.map(|a| a.to_string()),
            "address_after": self.address_after.map(|a| a.to_string()),
            "ras_after": self.ras_after,
            "failures_after": self.failures_after,
            "first_lost_rs_secs": secs(self.first_lost_rs),
            "offline_at_secs": secs(self.offline_at),
            "nat_mapping": self.nat_mapping.map(|m| m.to_string()),
            "rs_sent": self.rs_sent,
            "ra_accepted": self.ra_accepted,
            "rs_retransmissions": self.rs_retransmissions,
            "client_probes": self.client_probes,
            "nat_lost": self.nat_lost,
            "reordered": self.reordered,
            "relay_bubbles_after": self.relay_bubbles_after,
            "resumed_after_secs": secs(self.resumed_after),
            "before": self.before.as_ref().map(PathObserved::json),
            "inbound": self.inbound.as_ref().map(PathObserved::json),
            "outbound": self.outbound.as_ref().map(PathObserved::json),
            "lan_unicast": self.lan_unicast,
            "lan_multicast": self.lan_multicast,
            "hairpinned": self.hairpinned,
            "peer_local": self.peer_local.map(|a| a.to_string()),
            "peer_mapping": self.peer_mapping.map(|a| a.to_string()),
            "hairpin_peers_trusted": self.hairpin_peers_trusted,
            "hairpin_bubbles_sent": self.hairpin_bubbles_sent,
            "solicitations_sent": self.solicitations_sent,
            "advertisements_received": self.advertisements_received,
            "server_bubbles": self.server_bubbles,
        })
    }
}
