//! The lab's pcap files as tshark sees them: every datagram dissected as Teredo carrying
//! ICMPv6 (RS, RA, echo) or a bubble, every native IPv6 packet as ICMPv6 (echo, or the
//! relay's destination unreachable), every checksum `[correct]` (IPv4 header, UDP, ICMPv6;
//! the one quoted inside an ICMPv6 error is only "unverified"), nothing malformed, no warning
//! or error expert items — except the spoofed-RA scenario's deliberately truncated
//! forgeries, which must be exactly those. Needs tshark (not root); without it the test
//! prints SKIPPED, or fails when CI is set.
//!
//! One Wireshark limitation: its Teredo heuristic wants the IPv6 packet to fill the
//! datagram exactly, so a bubble followed by RFC 6081 trailers (a nonce, or the Neighbor
//! Discovery Option of Server Load Reduction) sent to a port that is neither 3544 nor the
//! relay's 3545 (a direct bubble between two clients) shows as plain UDP data. Those frames
//! must have a correct UDP checksum, and their data must parse (with our parser) as exactly
//! that: a bubble with well-formed nonce or ND Option trailers.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use client_sim::lab::{run_lab, LabOptions, RELAY_ADDR};
use teredo::wire::trailer::{
    AlternateAddress, NdOption, RandomPort, TYPE_ALTERNATE_ADDRESS, TYPE_ND_OPTION, TYPE_NONCE,
    TYPE_RANDOM_PORT,
};
use teredo::wire::{TeredoPacket, Trailers};

/// Wireshark maps UDP 3544 to Teredo already; saying it keeps that true whatever the local
/// preferences. The relay's port (3545, [`RELAY_ADDR`]) is Teredo too. The heuristic
/// catches the forged RAs sent from port 3545 and the datagrams between clients. Checksums
/// of all layers are ours (nothing is offloaded in a synthetic capture), so all are checked.
const DISSECT: &[&str] = &[
    "-n",
    "-d",
    "udp.port==3544,teredo",
    "-d",
    "udp.port==3545,teredo",
    "--enable-heuristic",
    "teredo_udp",
    "-o",
    "ip.check_checksum:TRUE",
    "-o",
    "udp.check_checksum:TRUE",
];

fn tshark_or_skip(test: &str) -> bool {
    let ok = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    assert!(
        !testkit::require::in_ci(),
        "{test} needs tshark on PATH, and CI is set"
    );
    let _ = writeln!(
        std::io::stderr(),
        "\n*** {test}: SKIPPED (tshark is not on PATH) ***\n"
    );
    false
}

fn tshark(pcap: &Path, extra: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(DISSECT)
        .args(extra)
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark {}: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tshark output is UTF-8")
}

/// What `tshark -V` says about one frame.
#[derive(Debug, Default)]
struct FrameInfo {
    /// `[Protocols in frame: …]`.
    stack: String,
    /// Teredo layers.
    teredo: usize,
    /// `Checksum: 0x… [correct]` lines.
    correct: usize,
    /// Malformed markers, bad checksums, warning/error expert items.
    problems: Vec<String>,
    /// An IPv6 header with next header 59 (a bubble).
    no_next_header: bool,
}

fn dissect(pcap: &Path) -> Vec<FrameInfo> {
    let text = tshark(pcap, &["-V"]);
    let mut frames: Vec<FrameInfo> = Vec::new();
    for l in text.lines() {
        if l.starts_with("Frame ") {
            frames.push(FrameInfo::default());
        }
        let Some(f) = frames.last_mut() else {
            continue;
        };
        if let Some(stack) = l.trim().strip_prefix("[Protocols in frame: ") {
            f.stack = stack.trim_end_matches(']').to_owned();
        }
        if l == "Teredo IPv6 over UDP tunneling" {
            f.teredo += 1;
        }
        if l.contains("Checksum: 0x") && l.ends_with("[correct]") {
            f.correct += 1;
        }
        if l.trim() == "Next Header: No Next Header for IPv6 (59)" {
            f.no_next_header = true;
        }
        let lower = l.to_ascii_lowercase();
        if l.contains("[Malformed")
            || lower.contains("bad checksum")
            || lower.contains("incorrect")
            || l.contains("Expert Info (Warning")
            || l.contains("Expert Info (Error")
        {
            f.problems.push(l.trim().to_owned());
        }
    }
    frames
}

/// The frames tshark shows as plain UDP data whose data is a bubble with RFC 6081 nonce, ND
/// Option, Random Port or Alternate Address trailers (see the module documentation).
fn trailer_bubbles(pcap: &Path) -> Vec<usize> {
    let text = tshark(
        pcap,
        &[
            "-Y",
            "frame.protocols == \"raw:ip:udp:data\"",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "data.data",
        ],
    );
    text.lines()
        .filter_map(|l| {
            let (n, hex) = l.split_once('\t')?;
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                .collect::<Option<_>>()?;
            let p = TeredoPacket::parse(&bytes).ok()?;
            let known = Trailers::new(p.trailers).all(|t| match t.ty {
                TYPE_NONCE => t.nonce().is_some(),
                TYPE_ND_OPTION => NdOption::parse(&t).is_ok(),
                TYPE_RANDOM_PORT => RandomPort::parse(&t).is_ok(),
                TYPE_ALTERNATE_ADDRESS => AlternateAddress::parse(&t).is_ok(),
                _ => false,
            });
            let whole = Trailers::new(p.trailers)
                .map(|t| 2 + t.value.len())
                .sum::<usize>()
                == p.trailers.len();
            (p.is_bubble() && !p.trailers.is_empty() && known && whole).then(|| n.parse().ok())?
        })
        .collect()
}

/// Everything wrong with a capture: frames that are not one of the expected kinds with all
/// their checksums correct (see the module documentation). The spoofed-RA scenario sends one
/// deliberately truncated RA per RS; those (and only those) must show up as malformed IPv6
/// inside Teredo.
fn check(pcap: &Path, packets: u64) -> Vec<String> {
    let frames = dissect(pcap);
    let trailer_bubbles = if frames.iter().any(|f| f.stack == "raw:ip:udp:data") {
        trailer_bubbles(pcap)
    } else {
        Vec::new()
    };
    let mut bad = Vec::new();
    if frames.len() as u64 != packets {
        bad.push(format!(
            "{} frames, {packets} datagrams and native packets simulated",
            frames.len()
        ));
    }
    let forged = pcap.to_string_lossy().contains("spoofed-ra");
    let mut truncated = 0;
    assert_eq!(RELAY_ADDR.port(), 3545, "DISSECT decodes the relay's port");
    for (i, f) in frames.iter().enumerate() {
        let n = i + 1;
        if forged
            && f.stack == "raw:ip:udp:teredo:ipv6"
            && f.correct == 2
            && f.teredo == 1
            && f.problems
                .iter()
                .any(|p| p.contains("IPv6 header must be exactly 40 bytes"))
        {
            truncated += 1;
            continue;
        }
        // (stack, Teredo layers, correct checksums, a bubble)
        let want: Option<(usize, usize, bool)> = match f.stack.as_str() {
            "raw:ip:udp:teredo:ipv6:icmpv6" | "raw:ip:udp:teredo:ipv6:icmpv6:data" => {
                Some((1, 3, false))
            }
            "raw:ip:udp:teredo:ipv6" => Some((1, 2, true)),
            "raw:ip:udp:data" if trailer_bubbles.contains(&n) => Some((0, 2, false)),
            // Native: echo, and the relay's destination unreachable (the quoted packet's
            // checksum is not verified).
            "raw:ipv6:icmpv6" | "raw:ipv6:icmpv6:data" | "raw:ipv6:icmpv6:ipv6:icmpv6:data" => {
                Some((0, 1, false))
            }
            _ => None,
        };
        match want {
            None => bad.push(format!(
                "frame {n}: stack {} ({} Teredo layers)",
                f.stack, f.teredo
            )),
            Some((teredo, correct, bubble)) => {
                if f.teredo != teredo || f.correct != correct || f.no_next_header != bubble {
                    bad.push(format!(
                        "frame {n}: stack {}: {} Teredo layers, {} [correct] checksums, \
                         bubble {} (want {teredo}, {correct}, {bubble})",
                        f.stack, f.teredo, f.correct, f.no_next_header
                    ));
                }
            }
        }
        for p in &f.problems {
            bad.push(format!("frame {n}: {p}"));
        }
    }
    if forged && truncated != 3 {
        bad.push(format!("{truncated} truncated forgeries, want 3"));
    }
    bad
}

#[test]
fn lab_pcaps_dissect_as_teredo_without_warnings() {
    if !tshark_or_skip("lab_pcaps_dissect_as_teredo_without_warnings") {
        return;
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("client-sim-pcap-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let report = run_lab(&LabOptions {
        seed: 1,
        pcap_dir: Some(dir.clone()),
        ..LabOptions::default()
    })
    .unwrap();
    assert!(report.ok(), "{}", report.table());
    let jobs: Vec<(PathBuf, u64)> = report
        .results
        .iter()
        .map(|r| {
            (
                dir.join(format!("{}.pcap", r.scenario.name())),
                r.observed.net.datagrams + r.observed.net.native_packets,
            )
        })
        .collect();
    // tshark takes a few hundred ms to start: run four at a time.
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(jobs.len().div_ceil(4))
            .map(|chunk| {
                s.spawn(move || {
                    let mut bad = Vec::new();
                    for (path, datagrams) in chunk {
                        assert!(path.exists(), "{} missing", path.display());
                        for p in check(path, *datagrams) {
                            bad.push(format!("{}: {p}", path.display()));
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("checker thread"))
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // tshark decodes the origin indications: behind a symmetric NAT the primary's and the
    // secondary's RAs name different mappings (M1 != M2).
    let fields = tshark(
        &dir.join("vista__symmetric.pcap"),
        &[
            "-Y",
            // The scenario's client (the second client's NAT is 203.0.113.20).
            "icmpv6.type == 134 && ip.dst == 203.0.113.1",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "teredo.orig.addr",
            "-e",
            "teredo.orig.port",
        ],
    );
    let ras: Vec<Vec<&str>> = fields.lines().map(|l| l.split('\t').collect()).collect();
    assert!(ras.len() >= 2, "{fields}");
    assert!(
        ras.iter().all(|r| r.len() == 3 && r[1] == "203.0.113.1"),
        "{fields}"
    );
    let port_from = |server: &str| {
        ras.iter()
            .filter(|r| r[0] == server)
            .map(|r| r[2])
            .next_back()
            .expect("an RA from each server address")
    };
    // The last RA from each address answers the restricted RSs of the symmetric check.
    assert_ne!(
        port_from("198.51.100.1"),
        port_from("198.51.100.2"),
        "{fields}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
