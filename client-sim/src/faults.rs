//! The lab's fault scenarios ([`Variant::is_fault`]): what is done to the simulated network
//! and when, what is measured around the fault, and the fault-specific expectation.
//!
//! Each fault runs on the scenario's own network ([`crate::lab::build`]), in virtual time,
//! deterministic from the lab seed:
//! * `server-down`: the server never answers (from the start);
//! * `server-dies`: qualified, then the server stops answering at [`FAULT_AT`] for good;
//! * `server-restart`: at [`FAULT_AT`] the server is gone for [`RESTART_DOWNTIME`] and comes
//!   back as a fresh core; then pings through the relay;
//! * `nat-reboot`: at [`FAULT_AT`] the client's NAT forgets every mapping; then pings;
//! * `relay-restart`: qualified, pings (the relay trusts the client), the relay is replaced by
//!   a fresh core, the native host pings the client, the client pings the native host;
//! * `loss-10pct-reorder`: 10 % loss each way on the client's NAT link and up to 30 ms of
//!   jitter on the Internet from the start; once qualified (within [`LOSSY_TIME`](crate::lab::LOSSY_TIME)),
//!   [`LOSSY_PINGS`] pings 10 ms apart (so that they overtake each other).

use std::fmt::Write as _;
use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::Duration;

use netsim::NatDrop;
use serde_json::json;
use teredo::addr::{TeredoAddr, TEREDO_PORT};
use teredo::client::{Event, State};
use teredo::relay::{Relay, TrustPolicy};

use crate::lab::{
    lab_relay, ping_run, ping_run_every, scenario_seed, PathObserved, Scenario, Variant, ECHO_HOST,
    FAULT_AT, LOSSY_PINGS, LOSSY_PING_INTERVAL, PINGS, PING_DATA, PING_INTERVAL, PING_WAIT,
    RELAY_RESTART_AT, RESTART_DOWNTIME, SCENARIO_TIME, SERVER,
};
use crate::packets;
use crate::sim::{Sender, Sim, SimError};

/// Identifier of the native host's echo requests to the client.
pub const NATIVE_PING_ID: u16 = 0x7e1b;

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
    /// After the relay lost its peers: the relay bubbles again, every echo request of the
    /// native host reaches the client and is answered, and so are the client's.
    DataResumes,
    /// The client qualified despite loss and reordering, and at least this many of the
    /// [`LOSSY_PINGS`] pings were answered (losses and reorderings are reported; over a
    /// short run either may happen not to occur for some seed).
    Lossy {
        /// Replies required.
        min_replies: u16,
    },
}

impl FaultExpect {
    /// Compact text for the table's `expected` column (empty for [`Self::None`]).
    pub fn summary(self) -> String {
        match self {
            Self::None => String::new(),
            Self::OfflineAfter(d) => format!("offline {}s after 1st lost RS", d.as_secs()),
            Self::AddressKept => "same address, RA after fault".to_owned(),
            Self::AddressChanged => "new address = new mapping".to_owned(),
            Self::DataResumes => "relay bubbles again, pings n/n".to_owned(),
            Self::Lossy { min_replies } => {
                format!("ping>={min_replies}/{LOSSY_PINGS}")
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
            Self::DataResumes => {
                if o.relay_bubbles_after == 0 {
                    d.push("the restarted relay sent no bubble".to_owned());
                }
                all("ping before", &o.before, &mut d);
                all("native host -> client", &o.inbound, &mut d);
                all("client -> native host", &o.outbound, &mut d);
            }
            Self::Lossy { min_replies } => match &o.outbound {
                Some(p) if p.received >= min_replies => {}
                Some(p) => d.push(format!(
                    "ping {} (expected at least {min_replies} replies)",
                    p.cell(None)
                )),
                None => d.push("no ping (not qualified)".to_owned()),
            },
        }
        d
    }
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
    /// Pings before the fault ([`Variant::RelayRestart`]).
    pub before: Option<PathObserved>,
    /// The native host's pings to the client after the fault.
    pub inbound: Option<PathObserved>,
    /// The client's pings to the native host after the fault.
    pub outbound: Option<PathObserved>,
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
            Variant::RelayRestart => {
                let _ = write!(
                    s,
                    "before {} bubbles {} in {} out {}",
                    p(&self.before),
                    self.relay_bubbles_after,
                    p(&self.inbound),
                    p(&self.outbound)
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
            "before": self.before.as_ref().map(PathObserved::json),
            "inbound": self.inbound.as_ref().map(PathObserved::json),
            "outbound": self.outbound.as_ref().map(PathObserved::json),
        })
    }
}

/// Runs the fault of `s` on `sim` (built by [`crate::lab::build`]) and measures around it.
pub fn run_fault(s: &Scenario, lab_seed: u64, sim: &mut Sim) -> Result<FaultObserved, SimError> {
    let mut o = FaultObserved::default();
    let mut base = counts(sim);
    match s.variant {
        Variant::ServerDown => sim.run_for(SCENARIO_TIME)?,
        Variant::ServerDies => {
            sim.run_for(FAULT_AT)?;
            o.address_before = address(sim);
            base = counts(sim);
            sim.set_server_up(false);
            sim.run_for(SCENARIO_TIME.saturating_sub(FAULT_AT))?;
        }
        Variant::ServerRestart => {
            sim.run_for(FAULT_AT)?;
            o.address_before = address(sim);
            base = counts(sim);
            sim.set_server_up(false);
            sim.run_for(RESTART_DOWNTIME)?;
            sim.restart_server();
            sim.set_server_up(true);
            sim.run_for(SCENARIO_TIME.saturating_sub(FAULT_AT + RESTART_DOWNTIME))?;
            o.outbound = ping_run(sim, ECHO_HOST, PINGS)?;
        }
        Variant::NatReboot => {
            sim.run_for(FAULT_AT)?;
            o.address_before = address(sim);
            base = counts(sim);
            if let Some(nat) = sim.client_mut(0).and_then(|n| n.nat.as_mut()) {
                nat.reboot();
            }
            sim.run_for(SCENARIO_TIME.saturating_sub(FAULT_AT))?;
            o.outbound = ping_run(sim, ECHO_HOST, PINGS)?;
        }
        Variant::RelayRestart => {
            sim.run_for(RELAY_RESTART_AT)?;
            o.before = ping_run(sim, ECHO_HOST, PINGS)?;
            o.address_before = address(sim);
            base = counts(sim);
            let seed = scenario_seed(lab_seed, &format!("{}/restarted-relay", s.name()));
            let relay: Relay = lab_relay(TrustPolicy::Strict, seed, sim.now());
            sim.replace_relay(relay);
            if let Some(n) = sim.client_mut(0) {
                n.echo_responder = true;
            }
            o.inbound = native_ping_run(sim, PINGS)?;
            o.outbound = ping_run(sim, ECHO_HOST, PINGS)?;
            o.relay_bubbles_after = sim.relay().map_or(0, |r| r.counters().bubbles_sent);
        }
        Variant::LossReorder => {
            // Until qualified (a failed qualification is retried after 100 s), then ping
            // at once: over minutes of 10 % loss a refresh may fail too (0.7 % each).
            let end = sim.now() + s.variant.duration();
            while address(sim).is_none() && sim.now() < end {
                sim.run_for(Duration::from_secs(1))?;
            }
            o.outbound = ping_run_every(sim, ECHO_HOST, LOSSY_PINGS, LOSSY_PING_INTERVAL)?;
        }
        _ => sim.run_for(s.variant.duration())?,
    }
    let fault_at = match s.variant {
        Variant::ServerDown | Variant::LossReorder => Duration::ZERO,
        Variant::RelayRestart => RELAY_RESTART_AT,
        _ => FAULT_AT,
    };
    o.fault_at = fault_at;
    let (ras, fails) = counts(sim);
    o.ras_after = ras.saturating_sub(base.0);
    o.failures_after = fails.saturating_sub(base.1);
    o.address_after = address(sim);
    let Some(node) = sim.client(0) else {
        return Ok(o);
    };
    o.offline_at = node
        .events
        .iter()
        .find(|(t, e)| *t >= fault_at && matches!(e, Event::Failed { .. }))
        .map(|(t, _)| *t);
    o.first_lost_rs = first_lost_rs(sim, fault_at);
    let c = node.client.counters();
    o.rs_sent = c.rs_sent;
    o.ra_accepted = c.ra_accepted;
    o.rs_retransmissions = c.rs_sent.saturating_sub(c.ra_accepted);
    o.client_probes = c.bubbles_sent + c.echo_tests_sent;
    if let Some(nat) = node.nat.as_ref() {
        o.nat_lost = nat.counters().dropped(NatDrop::Lost);
        o.nat_mapping = nat.mapping_for(node.local(), SocketAddrV4::new(SERVER, TEREDO_PORT));
    }
    o.reordered = sim.counters().reordered;
    Ok(o)
}

/// (RAs accepted, failures) of client 0.
fn counts(sim: &Sim) -> (u64, u64) {
    sim.client(0).map_or((0, 0), |n| {
        let c = n.client.counters();
        (c.ra_accepted, c.failures)
    })
}

fn address(sim: &Sim) -> Option<Ipv6Addr> {
    sim.client(0)
        .filter(|n| n.client.state() == State::Qualified)
        .and_then(|n| n.client.address())
}

/// The first datagram client 0 sent to a server address at or after `from` that no
/// datagram from the server answered before the next one: the RS whose retransmissions
/// ended in failure.
fn first_lost_rs(sim: &Sim, from: Duration) -> Option<Duration> {
    let primary = SocketAddrV4::new(SERVER, TEREDO_PORT);
    let secondary = SocketAddrV4::new(
        std::net::Ipv4Addr::from(u32::from(SERVER).wrapping_add(1)),
        TEREDO_PORT,
    );
    let trace = sim.trace();
    let mut candidate: Option<Duration> = None;
    for e in trace.iter().filter(|e| e.at >= from) {
        match e.sender {
            Sender::Client(0) if e.to == primary || e.to == secondary => {
                candidate.get_or_insert(e.at);
            }
            // An answer: the RSs so far were not lost.
            Sender::Server if candidate.is_some() => candidate = None,
            _ => {}
        }
    }
    candidate
}

/// The native host sends `count` echo requests to client 0's Teredo address,
/// [`PING_INTERVAL`] apart, then waits [`PING_WAIT`]; replies are counted at the native
/// host. `None` when the client has no address.
fn native_ping_run(sim: &mut Sim, count: u16) -> Result<Option<PathObserved>, SimError> {
    let Some(dst) = address(sim) else {
        return Ok(None);
    };
    let replies0 = sim.echo_host().map_or(0, |h| h.echo_replies);
    let mut o = PathObserved::default();
    for seq in 0..count {
        if let Some(pkt) = packets::echo_request(ECHO_HOST, dst, NATIVE_PING_ID, seq, PING_DATA) {
            o.sent += 1;
            sim.send_native(pkt);
        }
        sim.run_for(PING_INTERVAL)?;
    }
    sim.run_for(PING_WAIT)?;
    let replies = sim.echo_host().map_or(0, |h| h.echo_replies) - replies0;
    o.received = u16::try_from(replies).unwrap_or(u16::MAX);
    Ok(Some(o))
}
