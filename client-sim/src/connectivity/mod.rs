//! RFC 6081 §3 Figure 1 ("Matrix of Connectivity Improvements") as lab rows: two clients,
//! each behind a NAT of its own on the simulated network, the first pings the second's
//! Teredo address; each row names the figure's entry and the extension that makes it work
//! or the reason it cannot.
//!
//! The rows are the cells the client core can answer today: those of the UPnP-enabled
//! Symmetric NAT extension (§3.2, §5.3), of the Port-Preserving (§3.3, §5.4) and Sequential
//! Port-Symmetric (§3.4, §5.5) NAT extensions (behind `port-preserving-symmetric` and
//! `sequential-symmetric` NATs), their controls, and the same cells with a Miredo, XP or
//! Vista end, where the figure's entry does not hold because that end lacks the extension.
//! A "+PP" row also asserts that one end reached the other through a random port, a "+SS"
//! row that an echo test predicted a port. The Hairpinning extension (two clients behind one
//! NAT) is asserted by the lab's `same-lan` rows. The whole figure, 81 cells with win7 on
//! both ends, is [`grid`], from the data of [`figure`].

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use netsim::sim::{EchoHost, Sim, SimError, DEFAULT_LATENCY};
use netsim::{Nat, NatConfigError, NatDrop, NatPreset};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use teredo::client::{Client, ClientConfig, Profile, State};
use teredo::relay::TrustPolicy;
use teredo::server::ServerConfig;
use teredo::{DropReason, TeredoAddr};

use crate::labnet::{lab_relay, ping_run};
use crate::scenario::{scenario_seed, PathObserved, ECHO_HOST, PINGS, RELAY_ADDR, SERVER};

/// Time both clients get to qualify (the slowest path, cone probe timing out then the
/// secondary check, is 12 s + 2 RTT).
pub const QUALIFY_TIME: Duration = Duration::from_secs(30);

/// One end of a row: a profile behind a NAT preset, with or without a UPnP gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct End {
    /// The client profile.
    pub profile: Profile,
    /// Its NAT.
    pub nat: NatPreset,
    /// The NAT runs a UPnP IGD (spec key `upnp=on`).
    pub upnp: bool,
}

impl End {
    pub(crate) const fn new(profile: Profile, nat: NatPreset, upnp: bool) -> Self {
        Self { profile, nat, upnp }
    }

    /// `win7/symmetric+upnp`.
    pub fn label(&self) -> String {
        let upnp = if self.upnp { "+upnp" } else { "" };
        format!("{}/{}{upnp}", self.profile, self.nat)
    }
}

/// What a row must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Every echo request after the first is answered (the first may be spent while the
    /// receiver learns to trust the sender), by this extension.
    Works(&'static str),
    /// No echo request is answered, and a NAT dropped datagrams for this reason.
    No(NatDrop),
    /// No echo request is answered: one end lacks Symmetric NAT Support (the figure's "SNS"
    /// assumes both have it) and drops the other's datagrams from a mapping its address does
    /// not embed (`spoofed_source`, counted by either client).
    NoSns,
    /// Whatever happens: the caller judges the outcome (the Figure 1 grid, [`grid`]).
    Observed,
}

/// One row: sender, receiver, the figure's entry, the expectation, why.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    /// The pinging client.
    pub from: End,
    /// The pinged client.
    pub to: End,
    /// The entry of RFC 6081 Figure 1 for this pair of NAT kinds.
    pub figure: &'static str,
    /// What must happen here.
    pub expect: Reach,
    /// The reasoning.
    pub why: &'static str,
}

pub mod figure;
pub mod grid;
mod rows;

pub use rows::ROWS;

/// What one row did.
#[derive(Clone, Debug)]
pub struct RowResult {
    /// The row.
    pub row: Row,
    /// Both clients qualified.
    pub qualified: [bool; 2],
    /// Each client's status says `UPNP: Yes`.
    pub upnp_used: [bool; 2],
    /// Each client sends to the other from a random port (RFC 6081 §5.4.4.5) after the run.
    pub random_port: [bool; 2],
    /// Echo tests that predicted a port, per client (RFC 6081 §5.5.4.4).
    pub predictions: [u64; 2],
    /// The ping run, if the sender qualified.
    pub ping: Option<PathObserved>,
    /// Datagrams both clients refused as `spoofed_source` during the ping run.
    pub spoofed: u64,
    /// Each client sends to the other at a mapping other than the one the other's address
    /// embeds, after the run: symmetric NAT support at work (RFC 6081 §5.2).
    pub off_embedded: [bool; 2],
    /// Datagrams each client's NAT let in through a UPnP lease during the ping run.
    pub upnp_inbound: [u64; 2],
    /// How it differs from the expectation (empty: as expected).
    pub mismatches: Vec<String>,
}

/// The network of a row: the sender (client 0) and the receiver (client 1, answering
/// pings), each behind its NAT, the server, a relay and the echo host.
pub fn build(row: &Row, lab_seed: u64) -> Result<Sim, NatConfigError> {
    let name = format!("{}__{}", row.from.label(), row.to.label());
    let mut rng = ChaCha8Rng::seed_from_u64(scenario_seed(lab_seed, &name));
    let t0 = Instant::now();
    let mut sim = Sim::new(t0, ServerConfig::new(SERVER), DEFAULT_LATENCY);
    sim.add_native(
        lab_relay(TrustPolicy::Strict, rng.next_u64(), t0),
        RELAY_ADDR,
        EchoHost::new(ECHO_HOST),
    );
    // Two external addresses each, for `symmetric-address` (the others take the first).
    let ends = [
        (
            row.from,
            [
                Ipv4Addr::new(203, 0, 113, 31),
                Ipv4Addr::new(203, 0, 113, 41),
            ],
            Ipv4Addr::new(10, 0, 0, 2),
        ),
        (
            row.to,
            [
                Ipv4Addr::new(203, 0, 113, 32),
                Ipv4Addr::new(203, 0, 113, 42),
            ],
            Ipv4Addr::new(10, 0, 1, 2),
        ),
    ];
    for (end, external, internal) in ends {
        let ips = external[..end.nat.min_external_ips().min(external.len())].to_vec();
        let mut nat = end.nat.config(ips, rng.next_u64())?.expect("rows use NATs");
        nat.upnp = end.upnp;
        let port = 49_152 + (rng.next_u32() % 16_384) as u16;
        let client = Client::new(
            ClientConfig::profile(end.profile, SERVER),
            ChaCha8Rng::seed_from_u64(rng.next_u64()),
            SocketAddrV4::new(internal, port),
            t0,
        );
        sim.add_client(client, Some(Nat::new(nat)));
    }
    if let Some(n) = sim.client_mut(1) {
        n.echo_responder = true;
    }
    Ok(sim)
}

/// Runs one row.
pub fn run_row(row: &Row, lab_seed: u64) -> Result<RowResult, NatConfigError> {
    let mut sim = build(row, lab_seed)?;
    let mut error = None;
    let mut ping = None;
    let spoofed_now = |sim: &Sim| -> u64 {
        sim.clients()
            .iter()
            .map(|n| n.client.counters().rejected(DropReason::SpoofedSource))
            .sum()
    };
    let upnp_now = |sim: &Sim| -> [u64; 2] {
        [0, 1].map(|i| {
            sim.client(i)
                .and_then(|n| n.nat.as_ref())
                .map_or(0, |nat| nat.counters().upnp_inbound)
        })
    };
    let mut spoofed_before = 0;
    let mut upnp_before = [0; 2];
    let mut run = |sim: &mut Sim| -> Result<Option<PathObserved>, SimError> {
        sim.run_for(QUALIFY_TIME)?;
        spoofed_before = spoofed_now(sim);
        upnp_before = upnp_now(sim);
        match sim.client(1).and_then(|n| n.client.address()) {
            Some(peer) => ping_run(sim, peer, PINGS),
            None => Ok(None),
        }
    };
    match run(&mut sim) {
        Ok(p) => ping = p,
        Err(e) => error = Some(e.to_string()),
    }
    let spoofed = spoofed_now(&sim).saturating_sub(spoofed_before);
    let upnp_after = upnp_now(&sim);
    let upnp_inbound = [0, 1].map(|i| upnp_after[i].saturating_sub(upnp_before[i]));
    let state = |i: usize| sim.client(i).map(|n| n.client.status());
    let qualified = [0, 1].map(|i| state(i).is_some_and(|s| s.state == State::Qualified));
    let upnp_used = [0, 1].map(|i| state(i).is_some_and(|s| s.upnp));
    let now = sim.now();
    let random_port = [0, 1].map(|i| {
        let peer = sim.client(1 - i).and_then(|n| n.client.address());
        let node = sim.client(i);
        match (node, peer) {
            (Some(n), Some(peer)) => n.client.peer(&peer, now).is_some_and(|p| p.via_random_port),
            _ => false,
        }
    });
    let off_embedded = [0, 1].map(|i| {
        let peer = sim.client(1 - i).and_then(|n| n.client.address());
        let embedded = peer
            .and_then(|p| TeredoAddr::from_ipv6(&p))
            .map(|t| t.mapped);
        let used = sim
            .client(i)
            .zip(peer)
            .and_then(|(n, p)| n.client.peer(&p, now))
            .and_then(|p| p.mapping);
        used.is_some() && embedded.is_some() && used != embedded
    });
    let predictions = [0, 1].map(|i| {
        sim.client(i)
            .map_or(0, |n| n.client.counters().echo_test_predictions)
    });
    let mut mismatches: Vec<String> = error.into_iter().collect();
    if !qualified.iter().all(|q| *q) {
        mismatches.push(format!("qualified: {qualified:?}"));
    }
    for (i, end) in [row.from, row.to].iter().enumerate() {
        let asks = end.upnp && ClientConfig::profile(end.profile, SERVER).upnp;
        if upnp_used[i] != asks {
            mismatches.push(format!(
                "{}: UPnP used {} (expected {asks})",
                end.label(),
                upnp_used[i]
            ));
        }
    }
    if let Reach::Works(ext) = row.expect {
        let via = random_port.iter().any(|v| *v);
        if (ext.contains("+PP") || ext.contains("+SS")) && !via {
            mismatches.push("no end reached the other through a random port".to_owned());
        }
        if ext.contains("+SS") && predictions.iter().all(|n| *n == 0) {
            mismatches.push("no echo test predicted a port".to_owned());
        }
    }
    match (row.expect, &ping) {
        (_, None) => mismatches.push("no ping run".to_owned()),
        (Reach::Works(_), Some(o)) if o.received + 1 < o.sent || o.received == 0 => {
            mismatches.push(format!(
                "{}/{} replies (expected all but the first at least)",
                o.received, o.sent
            ));
        }
        (Reach::No(drop), Some(o)) => {
            if o.received != 0 {
                mismatches.push(format!("{}/{} replies (expected none)", o.received, o.sent));
            }
            if o.nat_drops.get(drop.as_str()).copied().unwrap_or(0) == 0 {
                mismatches.push(format!("no nat {} drop", drop.as_str()));
            }
        }
        (Reach::NoSns, Some(o)) => {
            if o.received != 0 {
                mismatches.push(format!("{}/{} replies (expected none)", o.received, o.sent));
            }
            if spoofed == 0 {
                mismatches.push("no spoofed_source refusal".to_owned());
            }
        }
        _ => {}
    }
    Ok(RowResult {
        row: *row,
        qualified,
        upnp_used,
        random_port,
        predictions,
        ping,
        spoofed,
        off_embedded,
        upnp_inbound,
        mismatches,
    })
}

/// Runs every row.
pub fn run_all(lab_seed: u64) -> Result<Vec<RowResult>, NatConfigError> {
    ROWS.iter().map(|r| run_row(r, lab_seed)).collect()
}

/// The rows as a table: sender, receiver, figure entry, expected, UPnP used, replies, result.
pub fn table(results: &[RowResult]) -> String {
    let mut s = String::from("RFC 6081 Fig. 1, Teredo <-> Teredo (sender pings receiver):\n");
    let _ = writeln!(
        s,
        "{:<30} {:<30} {:<64} {:<18} {:<9} {:<9} {:<16} result",
        "sender", "receiver", "RFC 6081 Fig. 1", "expected", "UPnP", "rnd.port", "replies"
    );
    for r in results {
        let expected = match r.row.expect {
            Reach::Works(ext) => format!("works ({ext})"),
            Reach::No(d) => format!("no (nat {})", d.as_str()),
            Reach::NoSns => "no (no SNS)".to_owned(),
            Reach::Observed => "observed".to_owned(),
        };
        let upnp = format!("{}/{}", yes_no(r.upnp_used[0]), yes_no(r.upnp_used[1]));
        let port = |i: usize| match (r.random_port[i], r.predictions[i]) {
            (false, _) => "no",
            (true, 0) => "pp",
            (true, _) => "ss",
        };
        let rnd = format!("{}/{}", port(0), port(1));
        let replies = r.ping.as_ref().map_or("-".to_owned(), |o| {
            let mut drops: Vec<String> = o
                .nat_drops
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if r.spoofed > 0 {
                drops.push(format!("spoofed={}", r.spoofed));
            }
            format!("{}/{} {}", o.received, o.sent, drops.join(","))
        });
        let result = if r.mismatches.is_empty() {
            "ok".to_owned()
        } else {
            format!("MISMATCH: {}", r.mismatches.join("; "))
        };
        let _ = writeln!(
            s,
            "{:<30} {:<30} {:<64} {:<18} {:<9} {:<9} {:<16} {result}",
            r.row.from.label(),
            r.row.to.label(),
            r.row.figure,
            expected,
            upnp,
            rnd,
            replies
        );
    }
    let ok = results.iter().filter(|r| r.mismatches.is_empty()).count();
    let _ = writeln!(
        s,
        "\n{} rows, {ok} ok, {} mismatches",
        results.len(),
        results.len() - ok
    );
    s
}

/// The rows as JSON: one object per row.
pub fn json(results: &[RowResult]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            let (expected, extension) = match r.row.expect {
                Reach::Works(ext) => ("works".to_owned(), Some(ext)),
                Reach::No(d) => (format!("no: nat {}", d.as_str()), None),
                Reach::NoSns => ("no: no symmetric NAT support".to_owned(), None),
                Reach::Observed => ("observed".to_owned(), None),
            };
            serde_json::json!({
                "sender": r.row.from.label(),
                "receiver": r.row.to.label(),
                "figure": r.row.figure,
                "expected": expected,
                "extension": extension,
                "why": r.row.why,
                "qualified": r.qualified,
                "upnp_used": r.upnp_used,
                "random_port": r.random_port,
                "echo_test_predictions": r.predictions,
                "replies": r.ping.as_ref().map(|o| o.received),
                "sent": r.ping.as_ref().map(|o| o.sent),
                "nat_drops": r.ping.as_ref().map(|o| o.nat_drops.clone()),
                "spoofed_source": r.spoofed,
                "ok": r.mismatches.is_empty(),
                "mismatches": r.mismatches,
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Win7 behind a symmetric NAT with UPnP on: qualified as symmetric, UPNP: Yes, and its
    /// address embeds the leased port, which a stranger reaches.
    #[test]
    fn win7_behind_upnp_symmetric_nat_is_reachable_by_anyone() {
        let mut sim = build(&ROWS[0], 7).unwrap();
        sim.run_for(QUALIFY_TIME).unwrap();
        let now = sim.now();
        let node = sim.client_mut(0).unwrap();
        let st = node.client.status();
        assert_eq!(st.state, State::Qualified);
        assert_eq!(st.nat, teredo::client::NatType::SymmetricPort);
        assert!(st.upnp);
        let mapping = st.external_mapping.unwrap();
        assert_eq!(
            mapping.port(),
            node.client.local().port(),
            "the leased port"
        );
        let nat = node.nat.as_mut().unwrap();
        assert_eq!(nat.leases(now).len(), 1);
        assert_eq!(nat.leases(now)[0].external, mapping);
        let stranger: SocketAddrV4 = "198.51.100.200:9999".parse().unwrap();
        assert_eq!(
            nat.inbound(now, mapping, stranger).map(|t| t.internal),
            Ok(node.client.local())
        );
        assert!(nat.counters().upnp_inbound > 0);
    }

    #[test]
    fn every_row_as_expected() {
        let results = run_all(1).unwrap();
        let t = table(&results);
        for r in &results {
            assert!(r.mismatches.is_empty(), "{t}");
        }
    }
}
