//! RFC 6081 Figure 1 cells behind real NATs: two real-socket Teredo clients, each in its own
//! namespace behind its own nftables NAT router (`NatKind`), our `teredo-server` on the
//! "Internet"; the receiver (`client-sim respond`) stays qualified and answers echo requests
//! to its Teredo address, the sender (`client-sim ping <receiver's address>`) pings it as the
//! lab does (3 requests, 1 s apart, 10 s of wait). Each cell also runs in process
//! (`client_sim::connectivity::run_row`, the same profiles and NAT presets, the NAT model on
//! virtual time), and the test prints one table and fails on any cell where the two differ
//! in outcome — works (an answer came back) or not, and when not, whether a client refused
//! the peer's datagrams for want of symmetric NAT support (`spoofed_source`) — or where the
//! lab misses the cell's expectation.
//!
//! No relay: Teredo-to-Teredo traffic never crosses one (the lab's relay is idle in these
//! rows). The kernel NATs have no UPnP gateway, so every end has `upnp` off.
//!
//! Topology of one cell (all cells at once, each with its own Internet):
//! ```text
//! [srv 198.51.100.1+.2] --br0-- [nat wan0 198.51.100.20 | 10.0.0.1] -- [sender 10.0.0.2]
//!                       --br0-- [nat wan0 198.51.100.21 | 10.0.0.1] -- [receiver 10.0.0.2]
//! ```

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use client_sim::connectivity::{run_row, End, Reach, Row};
use client_sim::scenario::PINGS;
use netsim::{NatDrop, NatPreset};
use teredo::client::Profile;
use teredo_tests::client_ping::{ping, PingSpec};
use teredo_tests::client_respond::spawn_respond;
use teredo_tests::nft::NatKind;
use teredo_tests::servers::start_ours;
use teredo_tests::topo::{
    self, NatSite, LAN_GATEWAY, LAN_PREFIX_LEN, NAT_WAN, SERVER_PRIMARY, SERVER_SECONDARY,
};
use teredo_tests::{function_name, require_root, Internet, TestDir};

/// The receiver's router (the sender's is [`NAT_WAN`]).
const RECEIVER_WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 21);

/// The lab's seed (`client-sim lab` default).
const LAB_SEED: u64 = 1;

/// How long the receiver answers at most (the test stops it once the sender is done).
const ANSWER_FOR: Duration = Duration::from_secs(90);

const fn end(profile: Profile, nat: NatPreset) -> End {
    End {
        profile,
        nat,
        upnp: false,
    }
}

use NatPreset as N;
use Profile as P;

/// The cells: Figure 1 entries whose NATs have a kernel ruleset, with the lab's reasoning.
const CELLS: &[Row] = &[
    Row {
        from: end(P::Win7, N::PortRestricted),
        to: end(P::Win7, N::PortRestricted),
        figure: "port restricted -> port restricted: Yes",
        expect: Reach::Works("RFC 4380"),
        why: "both mappings are endpoint-independent: the bubbles open both filters",
    },
    Row {
        from: end(P::Miredo, N::PortRestricted),
        to: end(P::Win7, N::PortRestricted),
        figure: "port restricted -> port restricted: Yes",
        expect: Reach::Works("RFC 4380"),
        why: "plain RFC 4380 on both ends: no extension needed",
    },
    Row {
        from: end(P::Win7, N::FullCone),
        to: end(P::Win7, N::Symmetric),
        figure: "cone -> port symmetric: SNS",
        expect: Reach::Works("SNS"),
        why: "the receiver answers the indirect bubble from a fresh mapping, which the cone \
              lets in; the sender trusts it by its nonce and sends there",
    },
    Row {
        from: end(P::Win7, N::Restricted),
        to: end(P::Win7, N::Symmetric),
        figure: "address restricted -> port symmetric: SNS",
        expect: Reach::Works("SNS"),
        why: "the sender's direct bubble to the receiver's address opened its filter for \
              that address, whatever port the receiver's fresh mapping has",
    },
    Row {
        from: end(P::Win7, N::Symmetric),
        to: end(P::Win7, N::PortRestricted),
        figure: "port symmetric -> port restricted: No",
        expect: Reach::No(NatDrop::Filtered),
        why: "the receiver's NAT admits only the sender's mapping it sent to (the embedded \
              one); the sender's datagrams leave from fresh ports",
    },
    Row {
        from: end(P::Miredo, N::FullCone),
        to: end(P::Win7, N::Symmetric),
        figure: "cone -> port symmetric: SNS",
        expect: Reach::NoSns,
        why: "win7's answers leave from a fresh mapping; miredo, without symmetric NAT \
              support, drops them",
    },
];

/// What a cell showed: works or not, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Class {
    /// At least one echo reply came back.
    Works,
    /// None did, and a client refused the peer's datagrams as `spoofed_source`.
    NoSns,
    /// None did, and no client refused anything as `spoofed_source` (the NATs filtered).
    No,
}

impl Class {
    fn of(received: u64, spoofed: u64) -> Self {
        match (received, spoofed) {
            (1.., _) => Self::Works,
            (0, 1..) => Self::NoSns,
            (0, 0) => Self::No,
        }
    }

    fn as_str(&self) -> &'static str {
        match self {
            Self::Works => "works",
            Self::NoSns => "no (spoofed_source)",
            Self::No => "no",
        }
    }
}

/// One side's result: the class and a detail line.
type Side = Result<(Class, String)>;

fn kind_of(preset: NatPreset) -> Result<NatKind> {
    NatKind::ALL
        .into_iter()
        .find(|k| k.preset() == preset.as_str())
        .with_context(|| format!("no kernel ruleset for preset {preset}"))
}

/// The cell in process: `run_row`.
fn lab_cell(row: &Row) -> (Side, Vec<String>) {
    match run_row(row, LAB_SEED) {
        Err(e) => (Err(e.into()), Vec::new()),
        Ok(r) => {
            let side = match &r.ping {
                None => Err(anyhow::anyhow!("not qualified: {:?}", r.qualified)),
                Some(o) => {
                    let drops: Vec<String> = o
                        .nat_drops
                        .iter()
                        .map(|(k, v)| format!("nat {k}={v}"))
                        .chain((r.spoofed > 0).then(|| format!("spoofed={}", r.spoofed)))
                        .collect();
                    Ok((
                        Class::of(u64::from(o.received), r.spoofed),
                        format!("{}/{} {}", o.received, o.sent, drops.join(",")),
                    ))
                }
            };
            (side, r.mismatches)
        }
    }
}

/// The cell in namespaces, in a topology of its own.
fn kernel_cell(test: &str, i: usize, row: &Row) -> Side {
    let tag = format!("{test}-{i}");
    let dir = TestDir::new(&tag)?;
    let internet = Internet::new(&tag)?;
    let srv = topo::public_host(&internet, &tag, "srv", &[SERVER_PRIMARY, SERVER_SECONDARY])?;
    let lan = format!("{LAN_GATEWAY}/{LAN_PREFIX_LEN}");
    let site = |wan, preset| -> Result<NatSite> {
        let rules = kind_of(preset)?.ruleset("wan0", "lan0", &lan);
        NatSite::new(&internet, &tag, wan, &rules)
    };
    let sender = site(NAT_WAN, row.from.nat)?;
    let receiver = site(RECEIVER_WAN, row.to.nat)?;
    // Declared last: stops first, before the namespaces go.
    let _server = start_ours(&srv, &dir, "none")?;
    let to = row.to.profile.as_str();
    let responder = spawn_respond(
        &receiver.host,
        &dir,
        "receiver",
        SERVER_PRIMARY,
        to,
        ANSWER_FOR,
    )?;
    let Some(address) = responder.qualify.teredo_address else {
        bail!(
            "the receiver did not qualify: {} {:?}",
            responder.qualify.outcome,
            responder.qualify.error
        );
    };
    let spec = PingSpec {
        server: SERVER_PRIMARY,
        destination: address,
        count: PINGS,
        profile: row.from.profile.as_str(),
    };
    let run = ping(&sender.host, &dir, "sender", spec, &[])?;
    let answered = responder.finish()?;
    let p = &run.report;
    if p.qualify.outcome != "qualified" {
        bail!(
            "the sender did not qualify: {} {:?}",
            p.qualify.outcome,
            p.qualify.error
        );
    }
    let spoofed = p.client_drops.get("spoofed_source").copied().unwrap_or(0)
        + answered
            .client_drops
            .get("spoofed_source")
            .copied()
            .unwrap_or(0);
    let detail = format!(
        "{}/{} receiver {}/{} answered{}",
        p.received,
        p.transmitted,
        answered.answered,
        answered.requests,
        if spoofed > 0 {
            format!(", spoofed={spoofed}")
        } else {
            String::new()
        }
    );
    Ok((Class::of(u64::from(p.received), spoofed), detail))
}

fn describe(side: &Side) -> String {
    match side {
        Ok((c, d)) => format!("{} ({})", c.as_str(), d.trim_end()),
        Err(e) => format!("error: {e:#}"),
    }
}

fn table(rows: &[[String; 6]]) -> String {
    let header = [
        "cell (sender -> receiver)",
        "RFC 6081 Fig. 1",
        "expected",
        "in process",
        "kernel NATs",
        "equal?",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[test]
fn fig1_cells_behind_kernel_nats_agree_with_the_lab() {
    require_root!("nft", "conntrack", "sysctl");
    let test = function_name!();
    let started = Instant::now();
    let kernel: Vec<Side> = std::thread::scope(|scope| {
        let handles: Vec<_> = CELLS
            .iter()
            .enumerate()
            .map(|(i, row)| scope.spawn(move || kernel_cell(test, i, row)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("kernel cell thread panicked"))
            .collect()
    });
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for (row, kernel) in CELLS.iter().zip(&kernel) {
        let (lab, lab_mismatches) = lab_cell(row);
        let cell = format!("{} -> {}", row.from.label(), row.to.label());
        let expected = match row.expect {
            Reach::Works(ext) => format!("works ({ext})"),
            Reach::No(d) => format!("no (nat {})", d.as_str()),
            Reach::NoSns => "no (no SNS)".to_owned(),
            // The cells here all name their expectation.
            Reach::Observed => "(observed)".to_owned(),
        };
        let equal = matches!((&lab, kernel), (Ok((a, _)), Ok((b, _))) if a == b);
        if !equal {
            failures.push(format!(
                "{cell}: in process {}, kernel {}",
                describe(&lab),
                describe(kernel)
            ));
        }
        if !lab_mismatches.is_empty() {
            failures.push(format!(
                "{cell}: the lab misses the expectation: {}",
                lab_mismatches.join("; ")
            ));
        }
        rows.push([
            cell,
            row.figure.to_owned(),
            expected,
            describe(&lab),
            describe(kernel),
            if equal { "yes" } else { "NO" }.to_owned(),
        ]);
    }
    let table = table(&rows);
    eprintln!(
        "{test}:\n{table}\n{} cells, {} failures ({:.1} s)",
        CELLS.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}\n{table}", failures.join("\n"));
}
