//! Capturing Teredo traffic inside a namespace and checking tshark's dissection of it.
//!
//! Dissection options ([`DISSECT_ARGS`]):
//! * `-d udp.port==3544,teredo`: Wireshark already maps UDP port 3544 to Teredo; saying it
//!   again keeps that true whatever the user's preferences say.
//! * `--enable-heuristic teredo_udp`: the Teredo heuristic (off by default; its short name is
//!   `teredo_udp`, not `teredo`) catches client↔relay and client↔client packets, whose ports are
//!   not 3544. `udp.try_heuristic_first` stays FALSE: with it, every enabled UDP heuristic gets
//!   a go before the port table, which only invites misdissection of the 3544 traffic.
//! * `-o ip.check_checksum:TRUE`: the IPv4 header checksum is always computed in software, so
//!   it is valid in any capture.
//! * The **UDP** checksum is *not* validated: on veth the kernel leaves it to "hardware"
//!   (CHECKSUM_PARTIAL) and the capture holds only the pseudo-header sum, so tshark reports
//!   "Bad checksum" on every packet, in both directions. It is computed by the kernel, never by
//!   our code, so there is nothing to check there. The inner **ICMPv6** checksum, which Teredo
//!   implementations compute themselves, is validated by tshark by default (`[correct]`,
//!   expert "Bad checksum" otherwise) and counts as a problem.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::netns::Netns;
use crate::process::{run, tail, Proc};
use crate::wait::wait_for;

/// tshark options that make it dissect Teredo (see the module documentation).
pub const DISSECT_ARGS: &[&str] = &[
    "-n",
    "-d",
    "udp.port==3544,teredo",
    "--enable-heuristic",
    "teredo_udp",
    "-o",
    "ip.check_checksum:TRUE",
];

/// Capture filter for Teredo server traffic.
pub const TEREDO_FILTER: &str = "udp port 3544";

/// Expert-info severities (epan/proto.h) at or above which a frame counts as a problem.
const PI_WARN: u32 = 0x0060_0000;

/// A running `tshark -w` inside a namespace.
#[derive(Debug)]
pub struct Capture {
    proc: Proc,
    pcap: PathBuf,
}

impl Capture {
    /// Starts `tshark -i <iface> -f <filter> -w <dir>/<label>.pcapng` inside `ns` and waits
    /// (up to 10 s) until it captures.
    pub fn start(ns: &Netns, dir: &Path, label: &str, iface: &str, filter: &str) -> Result<Self> {
        let pcap = dir.join(format!("{label}.pcapng"));
        let pcap_arg = pcap.to_str().context("non-UTF-8 capture path")?;
        let mut proc = ns.spawn(
            label,
            dir,
            "tshark",
            &["-n", "-q", "-i", iface, "-f", filter, "-w", pcap_arg],
        )?;
        // tshark prints "Capturing on 'eth0'" once dumpcap has the interface open, and dumpcap
        // writes the pcapng section header as soon as it captures: wait for both.
        wait_for("tshark to start capturing", Duration::from_secs(10), || {
            proc.ensure_running()?;
            let started = proc.stderr().contains("Capturing on")
                && pcap.metadata().is_ok_and(|m| m.len() > 0);
            Ok(started.then_some(()))
        })
        .with_context(|| format!("tshark stderr:\n{}", tail(&proc.stderr(), 20)))?;
        Ok(Self { proc, pcap })
    }

    /// The capture file (being written: it holds what dumpcap has flushed so far).
    pub fn path(&self) -> &Path {
        &self.pcap
    }

    /// Waits until the capture file holds at least `min` frames matching the display filter
    /// `filter` (tshark `-Y`; "" for any frame).
    pub fn wait_frames(&mut self, min: usize, filter: &str, timeout: Duration) -> Result<usize> {
        let what = format!(
            "{min} frame(s) matching {filter:?} in {}",
            self.pcap.display()
        );
        let (n, _) = wait_for(&what, timeout, || {
            self.proc.ensure_running()?;
            let n = count_frames(&self.pcap, filter)?;
            Ok((n >= min).then_some(n))
        })?;
        Ok(n)
    }

    /// Stops the capture and returns the path of the pcapng file.
    ///
    /// dumpcap (tshark's capture child) reads the kernel's packet ring with a 250 ms timeout
    /// and **drops what is still in the ring when it is told to stop**: a SIGINT right after
    /// the last packet yields an empty file. So this first waits until the file has not grown
    /// for [`SETTLE`] (at most 5 s), then sends SIGINT, which makes tshark close the file
    /// cleanly. Tests that know what they expect should also use [`Capture::wait_frames`].
    pub fn stop(mut self) -> Result<PathBuf> {
        let size = |p: &Path| p.metadata().map_or(0, |m| m.len());
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut last, mut since) = (size(&self.pcap), Instant::now());
        while Instant::now() < deadline && since.elapsed() < SETTLE {
            std::thread::sleep(Duration::from_millis(50));
            let now = size(&self.pcap);
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
        self.proc.stop_with(libc::SIGINT, Duration::from_secs(10))?;
        if !self.pcap.is_file() {
            bail!(
                "tshark left no capture file; stderr:\n{}",
                tail(&self.proc.stderr(), 20)
            );
        }
        Ok(self.pcap.clone())
    }
}

/// How long a capture file must stay unchanged before [`Capture::stop`] stops tshark: more
/// than twice dumpcap's 250 ms ring-buffer timeout.
pub const SETTLE: Duration = Duration::from_millis(600);

/// Number of frames in `pcap` matching the display filter `filter` ("" = all). A capture that
/// is still being written is fine: tshark reads what is there.
pub fn count_frames(pcap: &Path, filter: &str) -> Result<usize> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap).args(DISSECT_ARGS);
    if !filter.is_empty() {
        cmd.args(["-Y", filter]);
    }
    cmd.args(["-T", "fields", "-e", "frame.number"]);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A half-written last block makes tshark complain ("… cut short in the middle of a
    // packet") and exit non-zero: count what it printed. Any other failure (a bad filter) is
    // an error.
    if !out.status.success() && !stderr.contains("cut short") {
        bail!("{cmd:?} failed ({}): {}", out.status, stderr.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count())
}

/// One expert-info item of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expert {
    /// Severity as tshark prints it (a number such as 8388608 = error, or a word).
    pub severity: String,
    /// Message, e.g. `Bad checksum [should be 0xb3fc]`.
    pub message: String,
}

impl Expert {
    /// Warning or error (not note/chat/comment).
    pub fn is_problem(&self) -> bool {
        match self.severity.trim().parse::<u32>() {
            Ok(level) => level >= PI_WARN,
            Err(_) => {
                let s = self.severity.to_ascii_lowercase();
                s.contains("warn") || s.contains("error")
            }
        }
    }
}

/// What tshark made of one frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// Frame number (1-based).
    pub number: u32,
    /// Protocol stack, e.g. `eth:ethertype:ip:udp:teredo:ipv6:icmpv6`.
    pub protocols: String,
    /// Outer IPv4 source.
    pub ipv4_src: Option<Ipv4Addr>,
    /// Outer IPv4 destination.
    pub ipv4_dst: Option<Ipv4Addr>,
    /// Outer UDP source port.
    pub udp_src: Option<u16>,
    /// Outer UDP destination port.
    pub udp_dst: Option<u16>,
    /// IPv6 sources (outermost first).
    pub ipv6_src: Vec<Ipv6Addr>,
    /// IPv6 destinations (outermost first).
    pub ipv6_dst: Vec<Ipv6Addr>,
    /// ICMPv6 types (133 = RS, 134 = RA, …).
    pub icmpv6_types: Vec<u8>,
    /// Teredo authentication nonce, as hex.
    pub teredo_nonce: Option<String>,
    /// Teredo origin indication (de-obfuscated by tshark).
    pub teredo_origin: Option<SocketAddrV4>,
    /// Teredo authentication confirmation byte, as hex (`00` = key still valid).
    pub teredo_confirmation: Option<String>,
    /// Expert-info items.
    pub expert: Vec<Expert>,
}

impl Frame {
    /// Dissected as Teredo carrying IPv6.
    pub fn is_teredo(&self) -> bool {
        self.protocols.contains(":teredo:ipv6")
    }

    /// A Teredo router solicitation.
    pub fn is_teredo_rs(&self) -> bool {
        self.is_teredo() && self.icmpv6_types.contains(&133)
    }

    /// A Teredo router advertisement.
    pub fn is_teredo_ra(&self) -> bool {
        self.is_teredo() && self.icmpv6_types.contains(&134)
    }

    /// Malformed-packet markers and warning/error expert items (bad checksums included).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.protocols.contains("_ws.malformed") || self.protocols.contains("malformed") {
            out.push(format!("malformed ({})", self.protocols));
        }
        for e in &self.expert {
            let m = e.message.to_ascii_lowercase();
            if e.is_problem()
                || m.contains("malformed")
                || m.contains("bad checksum")
                || m.contains("incorrect")
            {
                out.push(e.message.clone());
            }
        }
        out
    }

    fn parse(line: &str) -> Result<Self> {
        let cols: Vec<&str> = line.split('\t').collect();
        let col = |i: usize| cols.get(i).copied().unwrap_or("");
        let items = |i: usize| {
            col(i)
                .split(AGG)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        };
        let first = |i: usize| items(i).first().copied();
        let severities = items(13);
        let messages = items(14);
        let origin = match (first(10).and_then(|p| p.parse().ok()), first(11)) {
            (Some(port), Some(ip)) => ip.parse().ok().map(|ip| SocketAddrV4::new(ip, port)),
            _ => None,
        };
        Ok(Self {
            number: col(0)
                .parse()
                .with_context(|| format!("frame number in {line:?}"))?,
            protocols: col(1).to_owned(),
            ipv4_src: first(2).and_then(|s| s.parse().ok()),
            ipv4_dst: first(3).and_then(|s| s.parse().ok()),
            udp_src: first(4).and_then(|s| s.parse().ok()),
            udp_dst: first(5).and_then(|s| s.parse().ok()),
            ipv6_src: items(6).iter().filter_map(|s| s.parse().ok()).collect(),
            ipv6_dst: items(7).iter().filter_map(|s| s.parse().ok()).collect(),
            icmpv6_types: items(8).iter().filter_map(|s| s.parse().ok()).collect(),
            teredo_nonce: first(9).map(|s| s.replace(':', "")),
            teredo_origin: origin,
            teredo_confirmation: first(12).map(|s| s.replace(':', "")),
            expert: messages
                .iter()
                .enumerate()
                .map(|(i, m)| Expert {
                    severity: severities.get(i).copied().unwrap_or("").to_owned(),
                    message: (*m).to_owned(),
                })
                .collect(),
        })
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {}", self.number, self.protocols)?;
        if let (Some(s), Some(d)) = (self.ipv4_src, self.ipv4_dst) {
            write!(
                f,
                " {s}:{} -> {d}:{}",
                self.udp_src.unwrap_or(0),
                self.udp_dst.unwrap_or(0)
            )?;
        }
        if !self.icmpv6_types.is_empty() {
            write!(f, " icmpv6 {:?}", self.icmpv6_types)?;
        }
        Ok(())
    }
}

/// Aggregator between several occurrences of one field (ASCII unit separator: never part of a
/// tshark value).
const AGG: char = '\u{1f}';

/// The fields [`tshark_check`] asks for, in [`Frame::parse`]'s column order.
const FIELDS: &[&str] = &[
    "frame.number",        // 0
    "frame.protocols",     // 1
    "ip.src",              // 2
    "ip.dst",              // 3
    "udp.srcport",         // 4
    "udp.dstport",         // 5
    "ipv6.src",            // 6
    "ipv6.dst",            // 7
    "icmpv6.type",         // 8
    "teredo.auth.nonce",   // 9
    "teredo.orig.port",    // 10
    "teredo.orig.addr",    // 11
    "teredo.auth.conf",    // 12
    "_ws.expert.severity", // 13
    "_ws.expert.message",  // 14
];

/// tshark's view of a capture.
#[derive(Clone, Debug)]
pub struct TsharkReport {
    /// The capture file.
    pub pcap: PathBuf,
    /// Every frame, in order.
    pub frames: Vec<Frame>,
}

impl TsharkReport {
    /// Frames with problems ([`Frame::problems`]), with those problems.
    pub fn problems(&self) -> Vec<(&Frame, Vec<String>)> {
        self.frames
            .iter()
            .map(|f| (f, f.problems()))
            .filter(|(_, p)| !p.is_empty())
            .collect()
    }

    /// An error listing every problem frame (with tshark's verbose dissection of the capture)
    /// if there is any.
    pub fn ensure_clean(&self) -> Result<()> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = problems
            .iter()
            .map(|(f, p)| format!("{f}: {p:?}"))
            .collect();
        bail!(
            "tshark flags {} frame(s) in {}:\n{}\n{}",
            problems.len(),
            self.pcap.display(),
            list.join("\n"),
            tshark_verbose(&self.pcap).unwrap_or_else(|e| format!("{e:#}"))
        )
    }
}

/// Dissects `pcap` with [`DISSECT_ARGS`] and summarises every frame (protocol stack, addresses,
/// ICMPv6 types, Teredo nonce and origin indication, expert info). Use
/// [`TsharkReport::problems`] for frames with `[Malformed Packet]` or bad-checksum warnings.
pub fn tshark_check(pcap: &Path) -> Result<TsharkReport> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap).args(DISSECT_ARGS).args([
        "-T",
        "fields",
        "-E",
        "header=n",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        &format!("aggregator={AGG}"),
    ]);
    for field in FIELDS {
        cmd.args(["-e", field]);
    }
    let out = run(&mut cmd)?;
    let frames = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(Frame::parse)
        .collect::<Result<_>>()?;
    Ok(TsharkReport {
        pcap: pcap.to_owned(),
        frames,
    })
}

/// `tshark -V` of the capture (with [`DISSECT_ARGS`]), for failure messages.
pub fn tshark_verbose(pcap: &Path) -> Result<String> {
    run(Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(DISSECT_ARGS)
        .arg("-V"))
}
