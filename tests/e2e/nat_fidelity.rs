//! The NAT model against kernel NATs, cell by cell: every client profile behind every NAT
//! preset, once in process (`client-sim lab`, the NAT model on virtual time) and once behind
//! the Linux router the preset says it matches (`client-sim qualify` in a namespace behind the
//! nftables ruleset of `NatKind::preset`, against our `teredo-server`). Prints the comparison
//! table and fails on any cell where the two disagree on what the user reads: the client's
//! state, NAT type, error and cone flag. A preset without a kernel ruleset is listed as such;
//! a preset the lab has and this test does not know fails the test.
//!
//! Every kernel cell has its own topology (Internet bridge, server, NAT router, client host:
//! own conntrack table), all cells run at once in threads; the slowest ones are the cone
//! probes that time out (3 × 4 s) before the restricted phase, so the test takes ≈ 20 s.
//!
//! A second test holds the data path to the lab where the NAT kinds part ways: every profile
//! that qualifies behind a bare masquerade pings the native host through our relay (strict and
//! lenient) in namespaces, and must get as many replies as the lab's `ping (strict)` and
//! `ping (lenient)` cells — behind R1 the cone-probing profiles' later flows leave from the
//! secondary check's new port, so a strict relay refuses them.
//!
//! Topology of one cell (as `client_interop`):
//! ```text
//! [srv 198.51.100.1+.2] --br0-- [nat wan0 198.51.100.20 | lan0 10.0.0.1] -- [cli 10.0.0.2]
//! [srv 198.51.100.1+.2] --br0-- [cli 198.51.100.10]                       (preset none)
//! ```

use std::fmt;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;
use teredo_tests::client_ping::{ping, PingSpec};
use teredo_tests::client_sim::{self, TeredoFields};
use teredo_tests::nft::NatKind;
use teredo_tests::relay::{RelayTopology, NATIVE_HOST};
use teredo_tests::servers::start_ours;
use teredo_tests::topo::{
    self, NatSite, LAN_GATEWAY, LAN_PREFIX_LEN, NAT_WAN, PUBLIC_CLIENT, SERVER_PRIMARY,
    SERVER_SECONDARY,
};
use teredo_tests::{bin_path, check, function_name, require_root, Internet, TestDir};

/// Where the kernel side runs a preset's client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// On the Internet segment, no NAT (preset `none`).
    Public,
    /// Behind a router with this ruleset.
    Nat(NatKind),
}

impl Kernel {
    /// The kernel equivalent of a lab preset; `None` when there is none.
    fn of(preset: &str) -> Option<Self> {
        if preset == "none" {
            return Some(Self::Public);
        }
        NatKind::ALL
            .iter()
            .find(|k| k.preset() == preset)
            .map(|k| Self::Nat(*k))
    }

    fn describe(self) -> String {
        match self {
            Self::Public => "public host".to_owned(),
            Self::Nat(kind) => format!("{kind} ({})", kind.recipe()),
        }
    }
}

/// Presets with no kernel ruleset, and why.
const NO_KERNEL: &[(&str, &str)] =
    &[("symmetric-address", "needs a router with two WAN addresses")];

/// What the user reads at the end of a qualification.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    state: String,
    nat: String,
    error: Option<String>,
    /// The address's cone flag; `None` without an address.
    cone: Option<bool>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.state, self.nat)?;
        if let Some(c) = self.cone {
            write!(f, " C={}", u8::from(c))?;
        }
        if let Some(e) = &self.error {
            write!(f, " ({e})")?;
        }
        Ok(())
    }
}

/// One matrix cell of the lab.
struct LabCell {
    profile: String,
    preset: String,
    outcome: Outcome,
    /// The data-path runs (`data.observed` of the lab's JSON).
    data: Value,
}

/// `client-sim lab --json`: the plain profile × preset cells (not the named scenarios).
fn lab_cells() -> Result<Vec<LabCell>> {
    let bin = bin_path("client-sim")?;
    let out = Command::new(&bin)
        .args(["lab", "--json"])
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let json: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "client-sim lab printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let mut cells = Vec::new();
    for s in json["scenarios"].as_array().context("no scenarios")? {
        if s["variant"] != "-" {
            continue;
        }
        let o = &s["observed"];
        cells.push(LabCell {
            profile: text(&s["profile"]).context("profile")?,
            preset: text(&s["nat"]).context("nat")?,
            outcome: Outcome {
                state: text(&o["state"]).context("state")?,
                nat: text(&o["nat"]).context("nat type")?,
                error: text(&o["error"]),
                cone: o["cone_bit"].as_bool(),
            },
            data: s["data"]["observed"].clone(),
        });
    }
    ensure!(!cells.is_empty(), "the lab has no matrix cells");
    Ok(cells)
}

/// `client-sim qualify --profile <profile>` behind the kernel equivalent, in a topology of its
/// own.
fn kernel_cell(test: &str, preset: &str, profile: &str, kernel: Kernel) -> Result<Outcome> {
    let tag = format!("{test}-{preset}-{profile}");
    let dir = TestDir::new(&tag)?;
    let internet = Internet::new(&tag)?;
    let srv = topo::public_host(&internet, &tag, "srv", &[SERVER_PRIMARY, SERVER_SECONDARY])?;
    let (_router, client) = match kernel {
        Kernel::Public => (
            None,
            topo::public_host(&internet, &tag, "cli", &[PUBLIC_CLIENT])?,
        ),
        Kernel::Nat(kind) => {
            let lan = format!("{LAN_GATEWAY}/{LAN_PREFIX_LEN}");
            let site = NatSite::new(
                &internet,
                &tag,
                NAT_WAN,
                &kind.ruleset("wan0", "lan0", &lan),
            )?;
            (Some(site.router), site.host)
        }
    };
    // Declared last: stops first, before the namespaces go.
    let _server = start_ours(&srv, &dir, "none")?;
    let run = client_sim::qualify(&client, &dir, "client-sim", SERVER_PRIMARY, profile, &[])?;
    let r = run.report;
    if run.exit_code != Some(r.exit_code) {
        bail!(
            "exit status {:?}, but the report says {}",
            run.exit_code,
            r.exit_code
        );
    }
    let cone = match r.teredo_address {
        None => None,
        Some(a) => Some(
            TeredoFields::decode(a)
                .with_context(|| format!("{a} is not a Teredo address"))?
                .flags
                & 0x8000
                != 0,
        ),
    };
    Ok(Outcome {
        state: r.state,
        nat: r.nat,
        error: r.error,
        cone,
    })
}

/// One row of the comparison.
struct Row {
    profile: String,
    preset: String,
    kernel: String,
    lab: Outcome,
    /// The kernel's outcome; `None` without a kernel equivalent.
    real: Option<Result<Outcome>>,
}

impl Row {
    fn verdict(&self) -> &'static str {
        match &self.real {
            None => "no kernel equivalent",
            Some(Ok(k)) if *k == self.lab => "same",
            Some(_) => "DIFFERENT",
        }
    }
}

fn table(rows: &[Row]) -> String {
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.profile.clone(),
                r.preset.clone(),
                r.kernel.clone(),
                r.lab.to_string(),
                match &r.real {
                    None => "-".to_owned(),
                    Some(Ok(k)) => k.to_string(),
                    Some(Err(e)) => format!("error: {e:#}"),
                },
                r.verdict().to_owned(),
            ]
        })
        .collect();
    let header = [
        "profile",
        "preset",
        "kernel NAT",
        "in process (lab)",
        "kernel",
        "verdict",
    ];
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |row: &[String]| {
        let l: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(l.join("  ").trim_end());
        out.push('\n');
    };
    line(&header.map(str::to_owned));
    line(&widths.map(|w| "-".repeat(w)));
    for row in &cells {
        line(row);
    }
    out
}

#[test]
fn lab_agrees_with_kernel_nats_cell_by_cell() {
    require_root!("nft", "conntrack", "sysctl");
    let test = function_name!();
    let started = Instant::now();
    let lab = check(lab_cells());
    for c in &lab {
        assert!(
            Kernel::of(&c.preset).is_some() || NO_KERNEL.iter().any(|(p, _)| *p == c.preset),
            "preset {} has neither a kernel ruleset (NatKind::preset) nor a NO_KERNEL entry",
            c.preset
        );
    }
    let rows: Vec<Row> = std::thread::scope(|scope| {
        let handles: Vec<_> = lab
            .iter()
            .map(|c| {
                let kernel = Kernel::of(&c.preset);
                let handle = kernel
                    .map(|k| scope.spawn(move || kernel_cell(test, &c.preset, &c.profile, k)));
                (c, kernel, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(c, kernel, handle)| Row {
                profile: c.profile.clone(),
                preset: c.preset.clone(),
                kernel: kernel.map_or_else(
                    || {
                        let why = NO_KERNEL.iter().find(|(p, _)| *p == c.preset);
                        format!("none ({})", why.map_or("", |(_, w)| *w))
                    },
                    Kernel::describe,
                ),
                lab: c.outcome.clone(),
                real: handle.map(|h| h.join().expect("kernel cell thread panicked")),
            })
            .collect()
    });
    let table = table(&rows);
    let compared = rows.iter().filter(|r| r.real.is_some()).count();
    let different: Vec<&Row> = rows.iter().filter(|r| r.verdict() == "DIFFERENT").collect();
    eprintln!(
        "{test}:\n{table}\n{compared} cells compared, {} different, {} without a kernel \
         equivalent ({:.1} s)",
        different.len(),
        rows.len() - compared,
        started.elapsed().as_secs_f64()
    );
    assert!(
        different.is_empty(),
        "{} cell(s) where the NAT model and the kernel disagree:\n{table}",
        different.len()
    );
}

/// Echo requests per data-path run: the lab's `PINGS`.
const PINGS: u16 = 3;

/// `client-sim ping` (`PINGS` requests to the native host) behind a bare masquerade, through
/// our relay with `--trust <trust>`; returns (received, transmitted).
fn kernel_ping(test: &str, profile: &str, trust: &str) -> Result<(u64, u64)> {
    let tag = format!("{test}-{profile}-{trust}");
    let dir = TestDir::new(&tag)?;
    let topo = RelayTopology::new(&tag)?;
    let lan = format!("{LAN_GATEWAY}/{LAN_PREFIX_LEN}");
    let ruleset = NatKind::BareMasquerade.ruleset("wan0", "lan0", &lan);
    let site = NatSite::new(&topo.internet, &tag, NAT_WAN, &ruleset)?;
    let _server = topo.start_server(&dir)?;
    let _relay = topo.start_relay(&dir, &["--trust", trust])?;
    let spec = PingSpec {
        server: SERVER_PRIMARY,
        destination: NATIVE_HOST,
        count: PINGS,
        profile,
    };
    let run = ping(&site.host, &dir, "client-sim", spec, &[])?;
    Ok((
        u64::from(run.report.received),
        u64::from(run.report.transmitted),
    ))
}

#[test]
fn masquerade_data_path_agrees_with_the_lab() {
    require_root!("nft", "conntrack", "sysctl");
    let test = function_name!();
    let lab = check(lab_cells());
    let cells: Vec<(&LabCell, &str)> = lab
        .iter()
        .filter(|c| c.preset == "masquerade" && c.outcome.state == "qualified")
        .flat_map(|c| [(c, "strict"), (c, "lenient")])
        .collect();
    assert!(cells.len() >= 2, "no qualified masquerade cell in the lab");
    let results: Vec<Result<(u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = cells
            .iter()
            .map(|(c, trust)| scope.spawn(move || kernel_ping(test, &c.profile, trust)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ping thread panicked"))
            .collect()
    });
    let mut bad = Vec::new();
    let mut lines = vec![format!(
        "{:<8} {:<8} {:<12} kernel",
        "profile", "relay", "in process"
    )];
    for ((c, trust), kernel) in cells.iter().zip(results) {
        let run = &c.data[format!("ping_{trust}")];
        let lab = (run["received"].as_u64(), run["sent"].as_u64());
        let lab_text = match lab {
            (Some(r), Some(s)) => format!("{r}/{s}"),
            _ => "not run".to_owned(),
        };
        let kernel_text = match &kernel {
            Ok((r, t)) => format!("{r}/{t}"),
            Err(e) => format!("error: {e:#}"),
        };
        let same =
            matches!((&kernel, lab), (Ok((r, t)), (Some(lr), Some(ls))) if *r == lr && *t == ls);
        if !same {
            bad.push(format!(
                "{} / {trust}: lab {lab_text}, kernel {kernel_text}",
                c.profile
            ));
        }
        lines.push(format!(
            "{:<8} {:<8} {:<12} {:<12} {}",
            c.profile,
            trust,
            lab_text,
            kernel_text,
            if same { "same" } else { "DIFFERENT" }
        ));
    }
    eprintln!(
        "{test}: ping {NATIVE_HOST} behind bare masquerade (R1)\n{}",
        lines.join("\n")
    );
    assert!(bad.is_empty(), "data path differs:\n{}", bad.join("\n"));
}
