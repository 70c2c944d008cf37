//! The `client-sim` command line (clap derive) and its dispatch. `src/main.rs` parses
//! [`Cli`], sets up tracing and calls [`run`]; everything else is here so that tests can run
//! a command in-process.

use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use netsim::{NatPreset, SPEC_KEYS};
use teredo::client::{ClientType, Profile};
use teredo_rt::{LogFormat, Shutdown};

use crate::connectivity;
use crate::lab::{run_lab, LabOptions};
use crate::load::{run_load, LoadOptions, Phase, Target, EXIT_LOSS, EXIT_NOT_ALL_CLIENTS};
use crate::ping::{ping, PingOptions, Probe, MAX_SIZE};
use crate::qualify::{qualify, NatChoice, QualifyOptions, QualifyReport};
use crate::respond::respond;
use crate::run_files::RunFiles;

const PROFILES_HELP: &str = "\
Client profiles (--profile):
  xp-sp2   Windows XP SP2, RFC 4380 as written: cone probe (C=1 behind a cone NAT), secondary
           check, offline behind a symmetric NAT (\"client behind symmetric NAT\")
  rfc5991  RFC 4380 + RFC 5991: no cone probe, random flag bits, secondary check, offline
           behind a symmetric NAT
  vista    Windows Vista SP1: cone probe for reporting only (C=0), random flags, RFC 6081
           symmetric NAT support (qualifies as \"symmetric (port)\")
  win7     Windows 7: as vista, plus dormant after 60 idle minutes unless --default-qualified;
           offline on a managed network unless --client-type enterpriseclient
  miredo   Miredo 1.2: restricted RS to the primary only (no cone probe, no secondary check),
           fixed 30 s refresh; never notices a symmetric NAT";

const NATS_HELP: &str = "\
NAT presets (--nat), RFC 4787 behaviours, 120 s mapping timeout, hairpinning on; in
brackets the Linux router (nftables, NAT.md §9) each one matches:
  none               no NAT: the client's socket is on the network (NAT type \"none\")
  full-cone          endpoint-independent mapping and filtering, port preserving
                     [R4: masquerade + dynamic map + DNAT]
  restricted         endpoint-independent mapping, address-dependent filtering
                     [R5: R4 + permit set]
  port-restricted    endpoint-independent mapping, address-and-port-dependent filtering
                     [R1 masquerade + stateful WAN input firewall, as home routers]
  masquerade         port-restricted, plus conntrack's trap: a refused inbound datagram
                     reserves its port toward its sender for 30 s, so the next datagram
                     there leaves from another port; cone-probing clients (xp-sp2, vista,
                     win7) see \"symmetric (port)\" [R1: bare masquerade, no firewall]
  symmetric          address-and-port-dependent mapping and filtering, random ports
                     [R3: masquerade random,fully-random]
  symmetric-address  address-dependent mapping over two or more external addresses
                     (arbitrary pooling), address-and-port-dependent filtering [none]";

const QUALIFY_AFTER: &str = "\
Exit status:
  0  qualified (or dormant)
  1  any other error (bad address, socket error, interrupted)
  2  usage error
  3  offline: client behind symmetric NAT
  4  offline: the primary (or secondary) server address did not answer
  5  offline: client is in a managed network
  6  --timeout elapsed while still probing";

const PING_AFTER: &str = "\
The client qualifies first (as `qualify`: same flags), then sends the requests through the
Teredo data path: to a native address, the first one waits for the direct IPv6 connectivity
test (an echo request through the server, answered through the relay nearest the
destination) and the relay's bubble exchange; to a Teredo address, for the bubbles. Give it
--wait.

Exit status:
  0  at least one answer (packet loss below 100 %)
  1  any other error (bad address, socket error, interrupted while qualifying)
  2  usage error
  3  offline: client behind symmetric NAT (nothing sent)
  4  offline: the primary (or secondary) server address did not answer
  5  offline: client is in a managed network
  6  --timeout elapsed while still probing
  7  no answer at all (100 % packet loss)";

const RESPOND_AFTER: &str = "\
Output: the status block as soon as qualification ends (with --json: the `qualify --json`
report on one line), a line per echo request while answering, then the session report
(with --json: on a second line). SIGINT / SIGTERM end the session early with its report.

Exit status:
  0  qualified (whatever it then received)
  1  any other error (bad address, socket error, interrupted while qualifying)
  2  usage error
  3  offline: client behind symmetric NAT
  4  offline: the primary (or secondary) server address did not answer
  5  offline: client is in a managed network
  6  --timeout elapsed while still probing";

/// `client-sim`: Teredo client profiles (Windows XP SP2, Vista, 7, RFC 5991, Miredo) behind a
/// simulated NAT (RFC 4787), over real sockets or in the in-process lab.
#[derive(Debug, Parser)]
#[command(name = "client-sim", version, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr. The filter comes from RUST_LOG (default: info).
    #[arg(
        long,
        value_enum,
        default_value_t = LogFormat::Text,
        global = true,
        env = "CLIENT_SIM_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Qualify one client against a real Teredo server over UDP, optionally behind the NAT
    /// model (one real socket per NAT mapping), and print its state like
    /// `netsh interface teredo show state`.
    #[command(after_help = format!("{PROFILES_HELP}\n\n{NATS_HELP}\n\n{QUALIFY_AFTER}"))]
    Qualify(QualifyArgs),
    /// Run every client profile behind every NAT preset (plus named scenarios: Windows 7
    /// dormant / default-qualified, managed network, short NAT mapping timeout, server down,
    /// spoofed router advertisements, two clients on one LAN with and without local
    /// discovery) on a simulated network in this process, in virtual
    /// time, and compare each outcome with the expected one. Exit status 0 when all match,
    /// 1 otherwise.
    #[command(after_help = format!("{PROFILES_HELP}\n\n{NATS_HELP}"))]
    Lab(LabArgs),
    /// Qualify one client against a real Teredo server over UDP (as `qualify`), then ping
    /// an IPv6 address through the Teredo data path (server, relay, peers) and print the
    /// answers and statistics like ping(8).
    #[command(after_help = format!("{PING_AFTER}\n\n{PROFILES_HELP}\n\n{NATS_HELP}"))]
    Ping(PingArgs),
    /// As `ping`, with UDP datagrams to an echo service (RFC 862, port 7) at
    /// `[IPv6]:port`, expecting each one back.
    #[command(name = "udp-echo", after_help = format!("{PING_AFTER}\n\n{PROFILES_HELP}\n\n{NATS_HELP}"))]
    UdpEcho(UdpEchoArgs),
    /// Qualify one client against a real Teredo server over UDP (as `qualify`), print the
    /// status at once, then stay qualified for --for, answering the ICMPv6 echo requests
    /// sent to its Teredo address (the other end of a Teredo-to-Teredo `ping`), and print
    /// what it answered.
    #[command(after_help = format!("{RESPOND_AFTER}\n\n{PROFILES_HELP}\n\n{NATS_HELP}"))]
    Respond(RespondArgs),
    /// Load generator: many simulated clients from one process, each with its own Teredo
    /// client state machine, NAT model and UDP sockets. Phases: `qualify` (clients start at
    /// --qualify-rate and qualify: an RS/RA storm), then `data` (a warm-up through the relay
    /// or the peers, then paced echo traffic with sequence numbers and timestamps). A
    /// progress line every second on stderr, a report at the end (text, or JSON with
    /// --json), loadgen_* metrics on --metrics-addr.
    #[command(after_help = format!("{LOAD_AFTER}\n\n{PROFILES_HELP}\n\n{NATS_HELP}"))]
    Load(LoadArgs),
    /// Conformance: run a catalogue of checks (RFC 4380, 5991, 6081 clauses, what Windows and
    /// Miredo clients need) against any Teredo server and/or relay over real sockets, and
    /// report each as pass, fail, skipped or not applicable, with the datagrams as evidence.
    #[command(after_help = crate::conform::cli::CONFORM_AFTER)]
    Conform(crate::conform::ConformArgs),
    /// Merge the JSON reports of several `load` generators (e.g. Docker Swarm replicas,
    /// each with its own --replica-index) into one: counters and rates summed, percentiles
    /// from the merged histograms, the union of their time spans, one line per generator.
    /// Text, --json, --html, --junit as `load`; exit status as `load`'s (3 or 4 when a
    /// generator or the merged totals failed), 1 for an unreadable or incompatible file.
    LoadReport(crate::load::merge::LoadReportArgs),

    /// Render the container lab's verdict (docker/lab/runner.sh's /results/verdict.json) as a
    /// page (--html: a profile x NAT grid and one row per container scenario) and as JUnit XML
    /// (--junit: one test case per scenario). Exit status 0 unless a file cannot be read or
    /// written.
    ContainerReport(crate::container_report::ContainerReportArgs),

    /// Check a Prometheus' console page after a load run: the page and every script and
    /// stylesheet it loads answer 200, and every PromQL expression of its template (and of a
    /// Grafana dashboard) returns a series with data over the run (range queries), unless an
    /// allow-list names it with its reason. Prints a table, --json writes the report. Exit
    /// status 0 when all passed, 1 with one line naming the first failure.
    PromCheck(crate::prom_check::PromCheckArgs),
}

const LOAD_AFTER: &str = "\
Examples:
  client-sim load --server 198.51.100.1 --bind 198.51.100.10 --clients 10000 --phase qualify
  client-sim load --server 198.51.100.1 --target 2001:db8::99 --clients 1000 --rate 5000
  client-sim load --server 198.51.100.1 --udp-echo '[2001:db8::99]:7' --find-max
  client-sim load --ceiling --clients 100 --find-max
  client-sim load --phase rs --server 198.51.100.1 --clients 1000 --rate 100k --duration 5s
  client-sim load --phase rs --ceiling --cpu 0 --clients 100 --find-max --duration 3s

Data phase: every qualified client first sends warm-up probes (one a second, client i
starting i/--qualify-rate seconds in) until one is answered: that runs the direct IPv6
connectivity test and the relay's bubbles (or the peers' bubbles with --pairs). Clients
without an answer after --warmup-timeout do not send. Then a trial: --rate packets per
second in total, spread evenly over the sending clients (a token bucket each), for
--duration, then --drain to collect the last answers. Each packet carries the run, client,
trial, sequence number and send time in its first 24 bytes; answers are tracked per client
(loss, duplicates, reordering within a 128-packet window, RFC 3550 jitter) and their RTT
goes into an HDR histogram. --size counts ICMPv6 data or UDP payload bytes; Mbit/s count
inner IPv6 packets (size + 48; with --ceiling, IPv4 packets: size + 28).

--find-max: trials of --duration from --rate, doubling until one fails or --max-rate,
then a binary search to within 2 % (RFC 2544 style, at most 24 trials). A trial passes when
its loss is within --loss-threshold (default 0.1 % here, 0 for a fixed rate) and at least
90 % of the offered rate was really sent.

--ceiling: the same sockets, pacing and accounting as plain UDP between 127.0.0.1 sockets
and a reflector thread in this process (no Teredo, no server): the generator's own
ceiling on this machine.

--phase rs: an RS storm, no client state machine. Each client (its own source port: one
socket per client up to 1024, then shared) sends the router solicitation a qualifying
client of --profile sends (nonce-only authentication header, cone flag off) to the
server's primary address, port 3544, each with a fresh nonce that names the client, the
RS's sequence number and its sending pass (whose send time is kept): trials of --rate RS/s
(--find-max, --duration, --drain, --loss-threshold as for data trials). Router
advertisements are read with recvmmsg and kernel timestamps, checked with the core's
parsers and matched by nonce; one with a nonce we did not send counts as unexpected, a
datagram that is no valid RA as malformed, neither as an answer. Loss = RSs sent - distinct
answers after the drain; RTT = kernel arrival - send time. With --ceiling the in-process
reflector echoes each RS and the echoed RS is the answer: the generator's own RS/s. The
mmsg engine only (--engine tokio is an error); --size, --nat and data destinations do
not apply.

--engine: tokio (a task per client, a system call per packet, RTT from user space) or mmsg
(--ceiling and --phase rs only so far, their default: one thread, --cpu to pin it, runs per client sent with
sendmmsg/UDP GSO, answers read with recvmmsg and UDP_GRO, RTT from the kernel's receive
timestamps; --no-gro reads every datagram on its own). The report names the engine, the
timestamp source, socket drops, descriptors per client and what limited a failing trial
(the generator, or the device: the reflector).

--html FILE: one self-contained page (inline SVG charts, nothing loaded from the network)
with the run over time, one sample a second: offered/sent/received pps, loss, RTT
p50/p99/p99.9, qualifications per second, open NAT mappings; each trial's RTT distribution;
the --find-max steps. --junit FILE: the run as JUnit XML (every client qualified, warm-up
answered, loss within the threshold; --find-max: one case per trial and one that a rate
passed).

Metrics (--metrics-addr): loadgen_packets_{sent,received,lost,out_of_order,duplicated}_total
(lost: added when a trial ends), loadgen_send_errors_total, loadgen_rtt_seconds,
loadgen_qualifications_total{result}, loadgen_qualification_duration_seconds,
loadgen_clients{state}, loadgen_offered_packets_per_second, loadgen_build_info, natsim_*
(summed over every simulated NAT), process_*.

Several generators (machines, containers, Swarm replicas): give each --replica-index N
(or CLIENT_SIM_REPLICA_INDEX, e.g. from {{.Task.Slot}}) or --client-offset, so that their
clients are distinct (client i of generator N is global client (N-1) x --clients + i, with
seed --seed + that number; sockets take kernel-chosen ports on each generator's own address),
then merge their --json reports with `client-sim load-report FILE...`.

One socket per client (plus one per extra NAT mapping): the open-file limit is raised toward
3 per client behind a NAT, 1 without, as far as the hard limit allows (an error if not even
one per client is possible; the mmsg engine opens at most 1024 sockets, neighbouring clients
sharing one). The report ends with the process's peak RSS.

Exit status:
  0  completed: every client qualified (phases qualify and all), every qualified client
     answered in the warm-up, and loss within the threshold (--find-max: a rate passed)
  1  any other error (bad address, sockets, open-file limit, interrupted)
  2  usage error
  3  some client did not qualify, or got no answer in the warm-up
  4  loss above the threshold (--find-max: no rate passed)";

/// A client profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// Windows XP SP2: cone probe, C=1, offline behind a symmetric NAT.
    #[value(name = "xp-sp2")]
    XpSp2,
    /// RFC 4380 + RFC 5991: no cone probe, random flags, offline behind a symmetric NAT.
    Rfc5991,
    /// Windows Vista SP1: cone probe reported only, RFC 6081 symmetric NAT support.
    Vista,
    /// Windows 7: as Vista, dormant after 60 idle minutes, managed-network rule.
    Win7,
    /// Miredo 1.2: primary only, no secondary check, fixed 30 s refresh.
    Miredo,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Self {
        match p {
            ProfileArg::XpSp2 => Self::XpSp2,
            ProfileArg::Rfc5991 => Self::Rfc5991,
            ProfileArg::Vista => Self::Vista,
            ProfileArg::Win7 => Self::Win7,
            ProfileArg::Miredo => Self::Miredo,
        }
    }
}

/// A NAT preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NatArg {
    /// No NAT.
    None,
    /// Full cone: endpoint-independent mapping and filtering.
    FullCone,
    /// Restricted cone: address-dependent filtering.
    Restricted,
    /// Port-restricted cone: address-and-port-dependent filtering (masquerade + WAN firewall).
    PortRestricted,
    /// Bare Linux masquerade: port-restricted, but refused inbound datagrams reserve ports.
    Masquerade,
    /// Symmetric: a new random port per destination.
    Symmetric,
    /// Symmetric (address): another external address per destination (needs 2 addresses).
    SymmetricAddress,
}

impl From<NatArg> for NatPreset {
    fn from(n: NatArg) -> Self {
        match n {
            NatArg::None => Self::None,
            NatArg::FullCone => Self::FullCone,
            NatArg::Restricted => Self::Restricted,
            NatArg::PortRestricted => Self::PortRestricted,
            NatArg::Masquerade => Self::Masquerade,
            NatArg::Symmetric => Self::Symmetric,
            NatArg::SymmetricAddress => Self::SymmetricAddress,
        }
    }
}

/// Windows client type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientTypeArg {
    /// `client`: disabled on a managed network.
    Client,
    /// `enterpriseclient`: runs on managed networks too.
    Enterpriseclient,
}

impl From<ClientTypeArg> for ClientType {
    fn from(c: ClientTypeArg) -> Self {
        match c {
            ClientTypeArg::Client => Self::Client,
            ClientTypeArg::Enterpriseclient => Self::EnterpriseClient,
        }
    }
}

/// `client-sim qualify` flags.
#[derive(Debug, Args)]
pub struct QualifyArgs {
    /// The client and where it runs.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Print the status as JSON (same fields) instead of the netsh-like block.
    #[arg(long)]
    pub json: bool,

    /// `--html FILE`, `--junit FILE`.
    #[command(flatten)]
    pub files: RunFiles,
}

/// `client-sim ping` flags.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// The IPv6 address to ping (native, e.g. 2001:db8::99, or Teredo).
    pub destination: Ipv6Addr,

    /// Requests, spacing, size.
    #[command(flatten)]
    pub session: SessionArgs,

    /// The client and where it runs.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Print the report (qualification status, every answer, statistics) as JSON instead
    /// of ping's lines.
    #[arg(long)]
    pub json: bool,

    /// `--html FILE`, `--junit FILE`.
    #[command(flatten)]
    pub files: RunFiles,
}

/// `client-sim respond` flags.
#[derive(Debug, Args)]
pub struct RespondArgs {
    /// How long to answer after qualifying, e.g. 60s.
    #[arg(long = "for", value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,

    /// The client and where it runs.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Print the qualification report and the session report as two lines of JSON.
    #[arg(long)]
    pub json: bool,
}

/// `client-sim udp-echo` flags.
#[derive(Debug, Args)]
pub struct UdpEchoArgs {
    /// The echo service, `[IPv6]:port`, e.g. `[2001:db8::99]:7`.
    pub destination: SocketAddrV6,

    /// Requests, spacing, size.
    #[command(flatten)]
    pub session: SessionArgs,

    /// The client and where it runs.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Print the report (qualification status, every answer, statistics) as JSON instead
    /// of ping-like lines.
    #[arg(long)]
    pub json: bool,

    /// `--html FILE`, `--junit FILE`.
    #[command(flatten)]
    pub files: RunFiles,
}

/// `--phase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PhaseArg {
    /// Qualification only.
    Qualify,
    /// Qualify (not part of the verdict), then data.
    Data,
    /// Qualification and data, both part of the verdict.
    All,
    /// An RS storm on the mmsg engine: trials of router solicitations (each client its own
    /// source port and nonces), every one to be answered by a router advertisement.
    Rs,
}

/// `client-sim load` flags.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The Teredo server's primary IPv4 address (not with --ceiling).
    #[arg(long, env = "CLIENT_SIM_SERVER", required_unless_present = "ceiling")]
    pub server: Option<Ipv4Addr>,

    /// The server's secondary IPv4 address (default: primary + 1).
    #[arg(long)]
    pub secondary: Option<Ipv4Addr>,

    /// Simulated clients.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: u32,

    /// Clients starting (sending their first RS) per second, e.g. 1000 or 1000/s.
    #[arg(long, default_value = "1000", value_parser = parse_rate)]
    pub qualify_rate: f64,

    /// Phases to run.
    #[arg(long, value_enum, default_value = "all")]
    pub phase: PhaseArg,

    /// Data: ICMPv6 echo requests to this IPv6 host (e.g. a native host behind the relay).
    #[arg(long, conflicts_with_all = ["udp_echo", "pairs"])]
    pub target: Option<Ipv6Addr>,

    /// Data: UDP datagrams to this echo service, `[IPv6]:port`.
    #[arg(long, value_name = "[IPv6]:PORT", conflicts_with = "pairs")]
    pub udp_echo: Option<SocketAddrV6>,

    /// Data: Teredo to Teredo, client i pings client i+1 (the last the first); every
    /// client answers.
    #[arg(long)]
    pub pairs: bool,

    /// Total packets per second of a trial (the first trial's with --find-max).
    #[arg(long, default_value = "1000", value_parser = parse_rate)]
    pub rate: f64,

    /// ICMPv6 data or UDP payload bytes per packet (24 to 1232).
    #[arg(long, default_value_t = 100, value_parser = parse_size)]
    pub size: usize,

    /// Length of a trial, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Wait for the last answers after each trial.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,

    /// Search the highest rate whose loss stays within --loss-threshold.
    #[arg(long)]
    pub find_max: bool,

    /// Loss allowed, percent, e.g. 0.1% or 0 (default: 0, or 0.1 % with --find-max).
    #[arg(long, value_parser = parse_percent)]
    pub loss_threshold: Option<f64>,

    /// Highest rate --find-max tries, packets per second.
    #[arg(long, default_value = "1000000", value_parser = parse_rate)]
    pub max_rate: f64,

    /// Local IPv4 address of every client socket (behind a NAT: the NAT's external
    /// address). 0.0.0.0 = the address of the route toward the server.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: Ipv4Addr,

    /// NAT preset in front of each client, each its own NAT (see below).
    #[arg(long, value_enum, default_value = "none", hide_possible_values = true)]
    pub nat: NatArg,

    /// Client profile (see below).
    #[arg(
        long,
        value_enum,
        default_value = "vista",
        env = "CLIENT_SIM_PROFILE",
        hide_possible_values = true
    )]
    pub profile: ProfileArg,

    /// A client still probing after this long counts as `timeout`.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// A client without an answer to its warm-up probes after this long does not send.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub warmup_timeout: Duration,

    /// Serve loadgen_* metrics on http://IP:PORT/metrics during the run.
    #[arg(long, value_name = "IP:PORT", env = "CLIENT_SIM_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Keep serving /metrics this long after the run (for a last scrape), e.g. 30s.
    #[arg(long, value_parser = parse_duration)]
    pub metrics_linger: Option<Duration>,

    /// Write the report as JSON: to FILE (the text report still goes to stdout), or
    /// without FILE to stdout instead of the text.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub json: Option<Option<PathBuf>>,

    /// Seed of the clients and NATs (client i uses seed + client offset + i; default random).
    #[arg(long)]
    pub seed: Option<u64>,

    /// This generator's index among several (e.g. a Swarm task slot, from 1): its clients
    /// are global numbers (N-1) x --clients onwards unless --client-offset says otherwise,
    /// so that replicas sharing --seed still simulate distinct clients; in the report and
    /// in loadgen_generator_info.
    #[arg(long, env = "CLIENT_SIM_REPLICA_INDEX", value_parser = clap::value_parser!(u32).range(1..))]
    pub replica_index: Option<u32>,

    /// Global number of this generator's first client (default 0, or (replica index - 1)
    /// x --clients).
    #[arg(long, env = "CLIENT_SIM_CLIENT_OFFSET")]
    pub client_offset: Option<u64>,

    /// Write one self-contained HTML page with the run's charts over time (rates, loss,
    /// RTT percentiles, qualifications, NAT mappings), the RTT distributions and the
    /// --find-max steps.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Also read these Prometheus endpoints once a second during the run (e.g. the server's
    /// and the relay's, http://HOST:PORT[/PATH], default path /metrics); --html charts the
    /// per-second rates of the counters that grew most.
    #[arg(long, value_name = "URL", num_args = 1.., action = clap::ArgAction::Append)]
    pub scrape: Vec<crate::load::scrape::Endpoint>,

    /// Write the run as JUnit XML (every client qualified, warm-up, loss within the
    /// threshold).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// No progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Measure the generator itself: plain UDP against an in-process echo on loopback.
    #[arg(long, conflicts_with_all = ["target", "udp_echo", "pairs", "nat"])]
    pub ceiling: bool,

    /// Data-path engine: `mmsg` (one batched thread, kernel receive timestamps; --ceiling
    /// and --phase rs only so far) or `tokio` (a task per client). Default: the fastest
    /// available (mmsg for --phase rs, the only one that runs it).
    #[arg(long, value_enum)]
    pub engine: Option<crate::load::engine::Engine>,

    /// Pin the mmsg engine's thread to this CPU.
    #[arg(long, value_name = "N")]
    pub cpu: Option<usize>,

    /// mmsg engine: no UDP_GRO on the reflector's and the clients' sockets, so that each
    /// datagram is received on its own (as by a device without GRO).
    #[arg(long)]
    pub no_gro: bool,
}

impl LoadArgs {
    /// The options of [`run_load`].
    pub fn load_options(&self) -> LoadOptions {
        let mut o = LoadOptions::new(self.server);
        o.secondary = self.secondary;
        o.clients = self.clients;
        o.qualify_rate = self.qualify_rate;
        o.phase = match self.phase {
            PhaseArg::Qualify => Phase::Qualify,
            PhaseArg::Data => Phase::Data,
            PhaseArg::All => Phase::All,
            PhaseArg::Rs => Phase::Rs,
        };
        o.target = match (self.target, self.udp_echo, self.pairs) {
            (Some(a), _, _) => Some(Target::Icmp(a)),
            (None, Some(u), _) => Some(Target::Udp(u)),
            (None, None, true) => Some(Target::Pairs),
            (None, None, false) => None,
        };
        o.rate = self.rate;
        o.size = self.size;
        o.duration = self.duration;
        o.drain = self.drain;
        o.find_max = self.find_max;
        o.loss_threshold = self.loss_threshold;
        o.max_rate = self.max_rate;
        o.bind = self.bind;
        o.nat = match self.nat {
            NatArg::None => NatChoice::None,
            n => NatChoice::Preset(n.into()),
        };
        o.profile = self.profile.into();
        o.qualify_timeout = self.timeout;
        o.warmup_timeout = self.warmup_timeout;
        o.metrics_addr = self.metrics_addr;
        o.metrics_linger = self.metrics_linger.unwrap_or_default();
        o.seed = self.seed;
        o.replica = self.replica_index;
        o.client_offset = self.client_offset.unwrap_or_else(|| {
            u64::from(self.replica_index.unwrap_or(1) - 1) * u64::from(self.clients)
        });
        o.engine = self.engine;
        o.cpu = self.cpu;
        o.gro = !self.no_gro;
        o.scrape = self.scrape.clone();
        o.quiet = self.quiet;
        o.ceiling = self.ceiling;
        o
    }
}

/// A rate: `1000`, `1000/s`, `2.5k`, `1M` (per second, more than 0).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let t = t.strip_suffix("pps").unwrap_or(t).trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('M') => (&t[..t.len() - 1], 1e6),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a rate like 1000, 1000/s or 2.5k"))?;
    let v = v * mult;
    if !(v > 0.0 && v.is_finite()) {
        return Err("the rate must be more than 0".to_owned());
    }
    Ok(v)
}

/// A percentage: `0.1%`, `0.1` or `0`, between 0 and 100.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v: f64 = t
        .strip_suffix('%')
        .unwrap_or(t)
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a percentage like 0.1%"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err("the percentage must be between 0 and 100".to_owned());
    }
    Ok(v)
}

/// The data session of `ping` and `udp-echo`.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Requests to send.
    #[arg(long, short = 'c', default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub count: u16,

    /// Bytes of ICMPv6 data, or of UDP payload (at least 2 for UDP), at most 1232 (the
    /// 1280-byte Teredo MTU).
    #[arg(long, short = 's', default_value_t = 56, value_parser = parse_size)]
    pub size: usize,

    /// Time between requests, e.g. 1s, 200ms.
    #[arg(long, short = 'i', default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// How long to wait for answers after the last request (a first contact can take up to
    /// 8 s of echo tests and bubbles before the client gives up).
    #[arg(long, short = 'W', default_value = "10s", value_parser = parse_duration)]
    pub wait: Duration,
}

/// The client of `qualify`, `ping` and `udp-echo`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The Teredo server's primary IPv4 address.
    #[arg(long, env = "CLIENT_SIM_SERVER")]
    pub server: Ipv4Addr,

    /// The server's secondary IPv4 address (default: primary + 1).
    #[arg(long)]
    pub secondary: Option<Ipv4Addr>,

    /// Client profile (see below).
    #[arg(
        long,
        value_enum,
        default_value = "vista",
        env = "CLIENT_SIM_PROFILE",
        hide_possible_values = true
    )]
    pub profile: ProfileArg,

    /// NAT preset in front of the client (see below).
    #[arg(
        long,
        value_enum,
        default_value = "none",
        conflicts_with = "nat_spec",
        hide_possible_values = true
    )]
    pub nat: NatArg,

    /// Free NAT combination instead of a preset, on top of port-restricted, e.g.
    /// `mapping=apd,filtering=ei,ports=random,timeout=20s` or
    /// `preset=symmetric-address,ips=A+B` (A, B: local addresses). Keys: see the long help.
    #[arg(long, value_name = "SPEC", long_help = nat_spec_help())]
    pub nat_spec: Option<String>,

    /// Local IPv4 address to bind; behind a NAT, the NAT's external address.
    /// 0.0.0.0 = the address of the route toward the server.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: Ipv4Addr,

    /// Local UDP port (0: any); behind a NAT, the client's internal port.
    #[arg(long, default_value_t = 0)]
    pub port: u16,

    /// Give up after this long while still probing (exit 6), e.g. 30s, 500ms, 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Pretend the host is on a managed (domain) network: Windows profiles of type `client`
    /// stay offline (exit 5).
    #[arg(long)]
    pub managed_network: bool,

    /// Windows client type.
    #[arg(long, value_enum, default_value = "client")]
    pub client_type: ClientTypeArg,

    /// Windows' DefaultQualified: never go dormant.
    #[arg(long)]
    pub default_qualified: bool,

    /// Seed of the client's nonces and random flags and of the NAT model (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
}

fn nat_spec_help() -> String {
    format!(
        "Free NAT combination instead of a preset: comma-separated key=value on top of \
         port-restricted (on the --bind address), e.g. \
         `mapping=apd,filtering=ei,ports=random,timeout=20s` or \
         `preset=symmetric-address,ips=A+B` (A, B: local addresses of this host, where the \
         mapping sockets are bound). `delay=50ms` and `jitter=500ms` hold each datagram \
         for delay + a random 0..jitter, so that datagrams overtake each other over the \
         real sockets (the report counts them: `held`, `reordered`). Keys: {}.",
        SPEC_KEYS.join(", ")
    )
}

/// `client-sim lab` flags.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Seed of every scenario's RNG (nonces, flags, ports): same seed, same output.
    #[arg(long, default_value_t = 1, env = "CLIENT_SIM_SEED")]
    pub seed: u64,

    /// Print the results as JSON (with NAT drops and counters per scenario).
    #[arg(long)]
    pub json: bool,

    /// Write one pcap per scenario (`<profile>__<nat>[__<variant>].pcap`, raw IPv4, every
    /// datagram outside the NATs) into this directory.
    #[arg(long, value_name = "DIR")]
    pub pcap: Option<PathBuf>,

    /// Write `DIR/report.html`: one self-contained page with the matrix as a grid, a filter,
    /// and a ladder diagram (message sequence chart) per scenario.
    #[arg(long, value_name = "DIR")]
    pub html: Option<PathBuf>,

    /// Write a JUnit XML file: one test case per scenario, a failure per mismatch.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Only these profiles (repeat or comma-separate; default: all).
    #[arg(
        long = "profile",
        value_enum,
        value_delimiter = ',',
        hide_possible_values = true
    )]
    pub profiles: Vec<ProfileArg>,

    /// Only these NAT presets (repeat or comma-separate; default: all).
    #[arg(
        long = "nat",
        value_enum,
        value_delimiter = ',',
        hide_possible_values = true
    )]
    pub nats: Vec<NatArg>,
}

/// A `--size`: 0..=1232 bytes.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of bytes"))?;
    if n > MAX_SIZE {
        return Err(format!(
            "{n} bytes do not fit in the 1280-byte Teredo MTU (at most {MAX_SIZE})"
        ));
    }
    Ok(n)
}

/// `30s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s, 500ms or 2m"))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => return Err(format!("unknown duration unit `{other}` (ms, s, m, h)")),
    };
    if d.is_zero() {
        return Err("the duration must be more than 0".to_owned());
    }
    Ok(d)
}

/// Runs a parsed command; returns the process exit status. Errors are for `main` to print
/// as one line (exit status 1).
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Qualify(args) => run_qualify(args),
        Command::Lab(args) => run_lab_command(&args),
        Command::Ping(args) => run_ping(
            &args.client,
            &args.session,
            Probe::Icmp(args.destination),
            args.json,
            &args.files,
        ),
        Command::UdpEcho(args) => run_ping(
            &args.client,
            &args.session,
            Probe::Udp(args.destination),
            args.json,
            &args.files,
        ),
        Command::Respond(args) => run_respond(&args),
        Command::Load(args) => run_load_command(&args),
        Command::Conform(args) => crate::conform::run_conform(&args),
        Command::LoadReport(args) => crate::load::merge::run(&args),
        Command::ContainerReport(args) => crate::container_report::run(&args),
        Command::PromCheck(args) => crate::prom_check::run(&args),
    }
}

fn run_load_command(args: &LoadArgs) -> anyhow::Result<u8> {
    let opts = args.load_options();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let linger = opts.metrics_linger;
    let _guard = rt.enter();
    let shutdown = Shutdown::on_signals();
    let (report, metrics) = rt.block_on(run_load(opts, shutdown.clone()))?;
    let json = || -> anyhow::Result<String> {
        let mut j = serde_json::to_string_pretty(&report).context("cannot encode JSON")?;
        j.push('\n');
        Ok(j)
    };
    match &args.json {
        Some(None) => write_stdout(&json()?)?,
        Some(Some(path)) => {
            std::fs::write(path, json()?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            write_stdout(&report.to_string())?;
        }
        None => write_stdout(&report.to_string())?,
    }
    if let Some(path) = &args.html {
        crate::load::html::write(&report, path)?;
    }
    if let Some(path) = &args.junit {
        let xml = crate::load::junit::junit(&report)?;
        std::fs::write(path, xml).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(m) = metrics {
        rt.block_on(m.linger(linger, &shutdown));
    }
    debug_assert!(matches!(
        report.exit_code,
        0 | EXIT_NOT_ALL_CLIENTS | EXIT_LOSS
    ));
    Ok(report.exit_code)
}

impl ClientArgs {
    /// The options of [`qualify`].
    pub fn qualify_options(&self) -> QualifyOptions {
        let nat = match (&self.nat_spec, self.nat) {
            (Some(spec), _) => NatChoice::Spec(spec.clone()),
            (None, NatArg::None) => NatChoice::None,
            (None, n) => NatChoice::Preset(n.into()),
        };
        QualifyOptions {
            server: self.server,
            secondary: self.secondary,
            profile: self.profile.into(),
            nat,
            bind: self.bind,
            port: self.port,
            timeout: self.timeout,
            managed_network: self.managed_network,
            client_type: self.client_type.into(),
            default_qualified: self.default_qualified,
            seed: self.seed,
        }
    }
}

impl SessionArgs {
    /// The options of [`ping`] for `probe`.
    pub fn ping_options(&self, probe: Probe) -> PingOptions {
        PingOptions {
            probe,
            count: self.count,
            size: self.size,
            interval: self.interval,
            wait: self.wait,
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

fn run_ping(
    client: &ClientArgs,
    session: &SessionArgs,
    probe: Probe,
    json: bool,
    files: &RunFiles,
) -> anyhow::Result<u8> {
    let qopts = client.qualify_options();
    let popts = session.ping_options(probe);
    let rt = runtime()?;
    let mut print = |line: &str| {
        if !json {
            let _ = write_stdout(&format!("{line}\n"));
        }
    };
    let report = rt
        .block_on(async { ping(qopts.clone(), popts, Shutdown::on_signals(), &mut print).await })?;
    files.write_ping(&qopts, &report)?;
    let text = if json {
        let mut j = serde_json::to_string_pretty(&report).context("cannot encode JSON")?;
        j.push('\n');
        j
    } else if report.transmitted == 0 {
        // Never qualified: the status block says why.
        report.qualify.to_string()
    } else {
        report.summary()
    };
    write_stdout(&text)?;
    Ok(report.exit_code)
}

fn run_respond(args: &RespondArgs) -> anyhow::Result<u8> {
    let opts = args.client.qualify_options();
    let json = args.json;
    let rt = runtime()?;
    // Each line is flushed at once: a test reads the address while the client runs.
    let mut on_qualified = |q: &QualifyReport| {
        let text = if json {
            serde_json::to_string(q).map(|j| format!("{j}\n"))
        } else {
            let mut t = q.to_string();
            if let Some(a) = &q.status.teredo_address {
                t.push_str(&format!("\nanswering echo requests to {a}\n"));
            }
            Ok(t)
        };
        if let Ok(t) = text {
            let _ = write_stdout(&t);
        }
    };
    let mut on_line = |line: &str| {
        if !json {
            let _ = write_stdout(&format!("{line}\n"));
        }
    };
    let report = rt.block_on(async {
        respond(
            opts,
            args.duration,
            Shutdown::on_signals(),
            &mut on_qualified,
            &mut on_line,
        )
        .await
    })?;
    let text = if json {
        let mut j = serde_json::to_string(&report).context("cannot encode JSON")?;
        j.push('\n');
        j
    } else if report.qualify.outcome == crate::report::Outcome::Qualified {
        report.to_string()
    } else {
        String::new()
    };
    write_stdout(&text)?;
    Ok(report.exit_code)
}

fn run_qualify(args: QualifyArgs) -> anyhow::Result<u8> {
    let opts = args.client.qualify_options();
    let rt = runtime()?;
    let report = rt.block_on(async { qualify(opts.clone(), Shutdown::on_signals()).await })?;
    args.files.write_qualify(&opts, &report)?;
    let text = if args.json {
        let mut j = serde_json::to_string_pretty(&report).context("cannot encode JSON")?;
        j.push('\n');
        j
    } else {
        report.to_string()
    };
    write_stdout(&text)?;
    Ok(report.exit_code)
}

fn run_lab_command(args: &LabArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let opts = LabOptions {
        seed: args.seed,
        profiles: args.profiles.iter().map(|p| (*p).into()).collect(),
        nats: args.nats.iter().map(|n| (*n).into()).collect(),
        pcap_dir: args.pcap.clone(),
        journal: args.html.is_some(),
    };
    let report = run_lab(&opts)?;
    if let Some(dir) = &args.html {
        let path = crate::html::write_report(&report, dir)?;
        let _ = writeln!(std::io::stderr(), "lab: wrote {}", path.display());
    }
    if let Some(path) = &args.junit {
        let xml = crate::lab_junit::junit(&report)?;
        std::fs::write(path, xml).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // The RFC 6081 connectivity rows and the Figure 1 grid are pairs of profiles and NATs:
    // run with the whole lab only, not with a --profile/--nat selection.
    let whole = opts.profiles.is_empty() && opts.nats.is_empty();
    let rows = if whole {
        connectivity::run_all(opts.seed).context("cannot configure a connectivity row's NAT")?
    } else {
        Vec::new()
    };
    let grid_started = Instant::now();
    let grid = if whole {
        connectivity::grid::run_grid(opts.seed).context("cannot configure a Figure 1 cell's NAT")?
    } else {
        Vec::new()
    };
    let grid_time = grid_started.elapsed();
    let rows_ok = rows.iter().all(|r| r.mismatches.is_empty()) && grid.iter().all(|c| c.ok());
    let text = if args.json {
        let mut json = report.json();
        if let Some(o) = json.as_object_mut() {
            o.insert("rfc6081_connectivity".to_owned(), connectivity::json(&rows));
            o.insert(
                "rfc6081_figure1_grid".to_owned(),
                connectivity::grid::json(&grid),
            );
        }
        let mut j = serde_json::to_string_pretty(&json).context("cannot encode JSON")?;
        j.push('\n');
        j
    } else if rows.is_empty() {
        report.table()
    } else {
        format!(
            "{}\n{}\n{}",
            report.table(),
            connectivity::table(&rows),
            connectivity::grid::matrix(&grid)
        )
    };
    write_stdout(&text)?;
    // On stderr, so that stdout is a pure function of the seed.
    let _ = writeln!(
        std::io::stderr(),
        "lab: {} scenarios, {} Fig. 1 rows, {} grid cells ({:.3} s) in {:.3} s wall time",
        report.results.len(),
        rows.len(),
        grid.len(),
        grid_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(if report.ok() && rows_ok { 0 } else { 1 })
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // `client-sim lab | head` is fine.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn value_enums_match_the_core_names() {
        for p in ProfileArg::value_variants() {
            let name = p.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(Profile::from(*p).as_str(), name);
        }
        for n in NatArg::value_variants() {
            let name = n.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(NatPreset::from(*n).as_str(), name);
        }
        assert_eq!(ProfileArg::value_variants().len(), Profile::ALL.len());
        assert_eq!(NatArg::value_variants().len(), NatPreset::ALL.len());
    }

    #[test]
    fn load_arguments() {
        use clap::Parser as _;
        let parse = |args: &[&str]| {
            let mut all = vec!["client-sim", "load"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map(|c| match c.command {
                Command::Load(a) => a,
                other => panic!("not load: {other:?}"),
            })
        };
        let a = parse(&[
            "--server",
            "198.51.100.1",
            "--clients",
            "10000",
            "--qualify-rate",
            "2k/s",
            "--target",
            "2001:db8::99",
            "--rate",
            "5000pps",
            "--find-max",
            "--loss-threshold",
            "0.5%",
            "--json",
        ])
        .unwrap();
        let o = a.load_options();
        assert_eq!(o.clients, 10_000);
        assert_eq!(o.qualify_rate, 2000.0);
        assert_eq!(o.rate, 5000.0);
        assert_eq!(o.loss_threshold, Some(0.5));
        assert_eq!(o.phase, Phase::All);
        assert_eq!(
            o.target,
            Some(Target::Icmp("2001:db8::99".parse().unwrap()))
        );
        assert!(o.find_max);
        assert_eq!(a.json, Some(None));
        let a = parse(&["--ceiling", "--json", "/tmp/x.json", "--html", "r.html"]).unwrap();
        assert!(a.load_options().ceiling);
        assert_eq!(a.html, Some(PathBuf::from("r.html")));
        assert_eq!(a.junit, None);
        assert_eq!(a.json, Some(Some(PathBuf::from("/tmp/x.json"))));
        let a = parse(&["--server", "198.51.100.1", "--pairs", "--phase", "data"]).unwrap();
        assert_eq!(a.load_options().target, Some(Target::Pairs));
        // Usage errors.
        assert!(parse(&[]).is_err(), "--server or --ceiling");
        assert!(parse(&["--server", "198.51.100.1", "--target", "::1", "--pairs"]).is_err());
        assert!(parse(&["--ceiling", "--target", "::1"]).is_err());
        assert!(parse(&["--server", "198.51.100.1", "--clients", "0"]).is_err());
        assert!(parse(&["--server", "198.51.100.1", "--rate", "0"]).is_err());
        assert!(parse(&["--server", "198.51.100.1", "--size", "2000"]).is_err());
        assert!(parse(&["--server", "198.51.100.1", "--loss-threshold", "120%"]).is_err());
    }

    #[test]
    fn rates_and_percentages() {
        assert_eq!(parse_rate("1000"), Ok(1000.0));
        assert_eq!(parse_rate("1000/s"), Ok(1000.0));
        assert_eq!(parse_rate("2.5k"), Ok(2500.0));
        assert_eq!(parse_rate("1M"), Ok(1e6));
        assert_eq!(parse_rate("300pps"), Ok(300.0));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("inf").is_err());
        assert_eq!(parse_percent("0.1%"), Ok(0.1));
        assert_eq!(parse_percent("0"), Ok(0.0));
        assert!(parse_percent("101").is_err());
        assert!(parse_percent("x%").is_err());
    }

    #[test]
    fn ping_and_udp_echo_arguments() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from([
            "client-sim",
            "ping",
            "--server",
            "198.51.100.1",
            "2001:db8::99",
            "--count",
            "5",
            "--size",
            "100",
            "--profile",
            "miredo",
            "--nat",
            "symmetric",
            "--interval",
            "500ms",
            "--json",
        ])
        .unwrap();
        let Command::Ping(a) = cli.command else {
            panic!("not ping: {:?}", cli.command);
        };
        let dst: Ipv6Addr = "2001:db8::99".parse().unwrap();
        assert_eq!(a.destination, dst);
        assert!(a.json);
        let p = a.session.ping_options(Probe::Icmp(dst));
        assert_eq!(
            p,
            PingOptions {
                probe: Probe::Icmp(dst),
                count: 5,
                size: 100,
                interval: Duration::from_millis(500),
                wait: Duration::from_secs(10),
            }
        );
        let q = a.client.qualify_options();
        assert_eq!(q.server, Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(q.profile, Profile::Miredo);
        assert_eq!(q.nat, NatChoice::Preset(NatPreset::Symmetric));

        // udp-echo: [IPv6]:port, defaults as ping's, short flags.
        let cli = Cli::try_parse_from([
            "client-sim",
            "udp-echo",
            "--server",
            "198.51.100.1",
            "[2001:db8::99]:7",
            "-c",
            "2",
            "-W",
            "3s",
        ])
        .unwrap();
        let Command::UdpEcho(a) = cli.command else {
            panic!("not udp-echo");
        };
        assert_eq!(a.destination, SocketAddrV6::new(dst, 7, 0, 0));
        assert!(!a.json);
        assert_eq!(
            (
                a.session.count,
                a.session.size,
                a.session.interval,
                a.session.wait
            ),
            (2, 56, Duration::from_secs(1), Duration::from_secs(3))
        );
        let q = a.client.qualify_options();
        assert_eq!((q.profile, q.nat), (Profile::Vista, NatChoice::None));

        for bad in [
            &["ping", "--server", "198.51.100.1"][..],
            &["ping", "--server", "198.51.100.1", "192.0.2.1"],
            &["ping", "--server", "nope", "2001:db8::99"],
            &[
                "ping",
                "--server",
                "198.51.100.1",
                "2001:db8::99",
                "--size",
                "1233",
            ],
            &[
                "ping",
                "--server",
                "198.51.100.1",
                "2001:db8::99",
                "--count",
                "0",
            ],
            &[
                "ping",
                "--server",
                "198.51.100.1",
                "2001:db8::99",
                "-i",
                "0s",
            ],
            &["udp-echo", "--server", "198.51.100.1", "2001:db8::99"],
        ] {
            let args = std::iter::once("client-sim").chain(bad.iter().copied());
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
        assert_eq!(parse_size("1232"), Ok(1232));
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn respond_arguments() {
        use clap::Parser as _;
        let parse = |args: &[&str]| {
            let mut all = vec!["client-sim", "respond", "--server", "198.51.100.1"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map(|c| match c.command {
                Command::Respond(a) => a,
                other => panic!("not respond: {other:?}"),
            })
        };
        let a = parse(&["--for", "90s", "--profile", "win7", "--json"]).unwrap();
        assert_eq!(a.duration, Duration::from_secs(90));
        assert!(a.json);
        assert_eq!(a.client.qualify_options().profile, Profile::Win7);
        assert_eq!(parse(&[]).unwrap().duration, Duration::from_secs(60));
        assert!(parse(&["--for", "0s"]).is_err());
        assert!(parse(&["2001:db8::1"]).is_err(), "no destination");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
    }
}
