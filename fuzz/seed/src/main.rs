//! Builds the fuzz seed corpus (`fuzz/corpus/<target>/`) from real captures: the pcaps of
//! `client-sim lab --pcap DIR` (raw IPv4, every datagram outside the NATs) and the Miredo
//! router advertisement captured in TEREDO.md §4.3.
//!
//! Usage: `seed-corpus PCAP_DIR CORPUS_DIR`. Each target gets inputs in its harness format
//! (see `teredo::fuzzing` and `netsim::fuzzing`): the wire target raw datagrams of every
//! distinct shape, the state-machine targets one operation sequence per captured scenario,
//! replaying what that party received, with the clock steps in between.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use netsim::NatPreset;
use pcap_file::pcap::PcapReader;
use pcap_file::DataLink;
use teredo::client::Profile;
use teredo::fuzzing::encode;
use teredo::wire::TeredoPacket;

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const SERVER2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The lab's relay.
const RELAY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 20), 3545);
/// The addresses behind which the lab's client sits (NAT externals, or itself without NAT).
const CLIENT_SIDE: [Ipv4Addr; 3] = [
    Ipv4Addr::new(203, 0, 113, 1),
    Ipv4Addr::new(203, 0, 113, 2),
    Ipv4Addr::new(203, 0, 113, 10),
];
/// The namespace tests' relay (tests/src/relay.rs), any port: Miredo's relay picks its own.
const NETNS_RELAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);
/// The namespace tests' client addresses: public client, NAT WAN (tests/src/topo.rs).
const NETNS_CLIENT_SIDE: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 10),
    Ipv4Addr::new(198, 51, 100, 20),
];

/// Where the parties of a capture are: the lab's addresses, or the namespace tests' for a
/// capture whose name contains `__netns`.
#[derive(Clone, Copy)]
struct Site {
    netns: bool,
}

impl Site {
    fn is_relay(self, a: SocketAddrV4) -> bool {
        if self.netns {
            *a.ip() == NETNS_RELAY
        } else {
            a == RELAY
        }
    }

    fn is_client_side(self, ip: Ipv4Addr) -> bool {
        if self.netns {
            NETNS_CLIENT_SIDE.contains(&ip)
        } else {
            CLIENT_SIDE.contains(&ip)
        }
    }
}
/// Operations per sequence kept from one capture (keeps files at a few KB).
const MAX_EVENTS: usize = 48;
/// Wire seeds kept.
const MAX_WIRE: usize = 48;

/// The RA Debian's miredo-server 1.2.6 sent (TEREDO.md §4.3), nonce 0x11..0x88.
const MIREDO_RA: &str = "0001 0000 1122334455667788 00
    0000 63bf 39cc9bf5
    6000 0000 0038 3a ff
    fe80 0000 0000 0000 8000 f227 39cc 9bfe
    fe80 0000 0000 0000 0000 ffff ffff fffe
    86 00 954d 00 00 0000 00000000 000007d0
    03 04 40 40 ffffffff ffffffff 00000000 2001 0000 c633 6401 0000 0000 0000 0000
    05 01 0000 00000500";

struct Datagram {
    at: Duration,
    from: SocketAddrV4,
    to: SocketAddrV4,
    payload: Vec<u8>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: seed-corpus PCAP_DIR CORPUS_DIR");
        std::process::exit(2);
    }
    let (pcaps, out) = (Path::new(&args[1]), PathBuf::from(&args[2]));
    let mut files: Vec<PathBuf> = fs::read_dir(pcaps)
        .expect("read the pcap directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    files.sort();
    let mut wire = BTreeMap::new();
    let miredo_ra = hex(MIREDO_RA);
    wire.insert("miredo-ra".to_owned(), miredo_ra.clone());
    let mut n = 0;
    for f in &files {
        let name = f.file_stem().expect("name").to_string_lossy().into_owned();
        let dgs = read_pcap(f);
        let site = Site {
            netns: name.contains("__netns"),
        };
        for d in &dgs {
            let site_tag = if site.netns { "netns-" } else { "" };
            wire.entry(format!("{site_tag}{}", shape(&d.payload)))
                .or_insert_with(|| d.payload.clone());
        }
        write(&out, "server", &name, server(&dgs));
        write(&out, "relay_udp", &name, relay(&dgs, site, false));
        write(&out, "relay_ipv6", &name, relay(&dgs, site, true));
        write(&out, "client", &name, client(&name, site, &dgs, &miredo_ra));
        n += 1;
    }
    for (i, (k, v)) in wire.into_iter().take(MAX_WIRE).enumerate() {
        let k: String = k
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        write(&out, "wire", &format!("{i:02}-{k}"), Some(v));
    }
    for (i, p) in NatPreset::ALL.iter().enumerate() {
        let ips = vec![CLIENT_SIDE[0], CLIENT_SIDE[1]];
        let spec = match p.config(ips, i as u64) {
            Ok(Some(c)) => c.to_spec(),
            _ => String::new(),
        };
        let capture = files
            .iter()
            .find(|f| f.to_string_lossy().contains(&format!("__{}", p.as_str())))
            .map(|f| read_pcap(f))
            .unwrap_or_default();
        write(&out, "nat", p.as_str(), Some(nat(&spec, i as u8, &capture)));
    }
    eprintln!("seed-corpus: {n} captures");
}

fn write(out: &Path, target: &str, name: &str, data: Option<Vec<u8>>) {
    let Some(data) = data else { return };
    let dir = out.join(target);
    fs::create_dir_all(&dir).expect("create the corpus directory");
    fs::write(dir.join(name), data).expect("write a corpus file");
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// UDP datagrams of a capture: raw IPv4 (link type 101, the lab's) or Ethernet (tshark's in
/// the namespace tests, converted to pcap with `editcap -F pcap`).
fn read_pcap(path: &Path) -> Vec<Datagram> {
    let mut r = PcapReader::new(fs::File::open(path).expect("open pcap")).expect("pcap header");
    // Ethernet captures (tshark on a bridge) carry a 14-byte header before IPv4.
    let skip = match r.header().datalink {
        DataLink::ETHERNET => 14,
        _ => 0,
    };
    let mut v = Vec::new();
    let mut first = None;
    while let Some(p) = r.next_packet() {
        let p = p.expect("pcap record");
        let at = *first.get_or_insert(p.timestamp);
        let Some(d) = p.data.get(skip..) else {
            continue;
        };
        if d.len() < 28 || d[0] >> 4 != 4 || d[9] != 17 {
            continue;
        }
        let ihl = usize::from(d[0] & 15) * 4;
        let ip = |o: usize| Ipv4Addr::new(d[o], d[o + 1], d[o + 2], d[o + 3]);
        let port = |o: usize| u16::from_be_bytes([d[o], d[o + 1]]);
        v.push(Datagram {
            at: p.timestamp.saturating_sub(at),
            from: SocketAddrV4::new(ip(12), port(ihl)),
            to: SocketAddrV4::new(ip(16), port(ihl + 2)),
            payload: d[ihl + 8..].to_vec(),
        });
    }
    v
}

/// A name for the kind of datagram: headers present, next header, ICMPv6 type, trailers.
fn shape(d: &[u8]) -> String {
    match TeredoPacket::parse(d) {
        Ok(p) => format!(
            "{}{}nh{}-t{}{}",
            if p.auth.is_some() { "auth-" } else { "" },
            if p.origin.is_some() { "origin-" } else { "" },
            p.next_header(),
            p.ipv6_payload().first().copied().unwrap_or(0),
            if p.trailers.is_empty() {
                ""
            } else {
                "-trailers"
            },
        ),
        Err(e) => format!("invalid-{e}"),
    }
}

fn step(out: &mut Vec<u8>, op: u8, last: &mut Duration, at: Duration) {
    if at > *last {
        out.push(op);
        encode::step(out, at - *last);
        *last = at;
    }
}

/// What the server received: `[flags][local][from][chunk]...`.
fn server(dgs: &[Datagram]) -> Option<Vec<u8>> {
    let mut out = vec![0u8];
    let mut n = 0;
    for d in dgs.iter().filter(|d| d.to.port() == 3544) {
        let local = match *d.to.ip() {
            SERVER => 0,
            SERVER2 => 1,
            _ => continue,
        };
        out.push(local);
        encode::addr(&mut out, d.from);
        encode::chunk(&mut out, &d.payload);
        n += 1;
        if n == MAX_EVENTS {
            break;
        }
    }
    (n > 0).then_some(out)
}

/// What the relay received: datagrams to it, and (as native input) the IPv6 packets it sent
/// on to clients, with the clock steps in between.
fn relay(dgs: &[Datagram], site: Site, ipv6_side: bool) -> Option<Vec<u8>> {
    let (udp_op, ipv6_op) = if ipv6_side { (7, 0) } else { (0, 7) };
    // Lenient, 8 peers, per-peer bubble sources, ICMPv6 errors; 8-packet queues, 32 outputs;
    // trusted peers evicted when full, no bubble rate limit.
    let mut out = vec![14u8, 0xff, 0];
    let mut last = Duration::ZERO;
    let mut n = 0;
    for d in dgs {
        if site.is_relay(d.to) {
            step(&mut out, 6, &mut last, d.at);
            out.push(udp_op);
            encode::addr(&mut out, d.from);
            encode::chunk(&mut out, &d.payload);
        } else if site.is_relay(d.from) {
            let Ok(p) = TeredoPacket::parse(&d.payload) else {
                continue;
            };
            if p.is_bubble() {
                continue;
            }
            step(&mut out, 6, &mut last, d.at);
            out.push(ipv6_op);
            encode::chunk(&mut out, p.ipv6);
        } else {
            continue;
        }
        n += 1;
        if n == MAX_EVENTS {
            break;
        }
    }
    (n > 0).then_some(out)
}

/// What the client received, after qualifying through the harness's own server (op 0),
/// with the clock steps in between; then the Miredo RA as if from the server.
fn client(name: &str, site: Site, dgs: &[Datagram], miredo_ra: &[u8]) -> Option<Vec<u8>> {
    let profile = Profile::ALL
        .iter()
        .position(|p| name.starts_with(&format!("{}__", p.as_str())))?;
    // Byte 0: profile index mod 5, peer cap 4 (bits 4-5), 4-packet queues (bits 6-7).
    let c = (0u8..=255)
        .find(|c| usize::from(*c) % Profile::ALL.len() == profile && c >> 4 == 0xf)
        .unwrap_or(profile as u8);
    let mut out = vec![c, 0];
    let mut last = Duration::ZERO;
    let mut n = 0;
    let servers: BTreeSet<SocketAddrV4> = [SERVER, SERVER2]
        .iter()
        .map(|ip| SocketAddrV4::new(*ip, 3544))
        .collect();
    for d in dgs.iter().filter(|d| site.is_client_side(*d.to.ip())) {
        step(&mut out, 6, &mut last, d.at);
        if servers.contains(&d.from) {
            // From the server, destination patched to the harness client's address.
            out.push(2);
            out.push(u8::from(*d.from.ip() == SERVER2) | 2);
        } else {
            out.push(1);
            encode::addr(&mut out, d.from);
        }
        encode::chunk(&mut out, &d.payload);
        out.push(0);
        n += 1;
        if n == MAX_EVENTS {
            break;
        }
    }
    out.push(7);
    encode::chunk(&mut out, miredo_ra);
    (n > 0).then_some(out)
}

/// A NAT sequence: the preset's spec string, config bytes, then what crossed the client's
/// NAT in the capture (outbound from its external addresses, inbound to them).
fn nat(spec: &str, i: u8, dgs: &[Datagram]) -> Vec<u8> {
    let mut out = vec![spec.len().min(255) as u8];
    out.extend_from_slice(&spec.as_bytes()[..spec.len().min(255)]);
    // Behaviours by preset index, 2 external addresses and 16 mappings, 32 ports, 120 s.
    out.extend_from_slice(&[i.wrapping_mul(37), 0x3d, 0x1f, 120, i]);
    let remote = |a: SocketAddrV4| -> u8 {
        (a.ip().octets()[3] & 7) | (((a.port().wrapping_sub(3544)) as u8 & 3) << 3)
    };
    let mut last = Duration::ZERO;
    for d in dgs.iter().take(MAX_EVENTS) {
        if CLIENT_SIDE[..2].contains(d.from.ip()) {
            step(&mut out, 2, &mut last, d.at);
            out.extend_from_slice(&[0, 0, remote(d.to)]);
        } else if CLIENT_SIDE[..2].contains(d.to.ip()) {
            step(&mut out, 2, &mut last, d.at);
            out.extend_from_slice(&[1, u8::from(d.to.ip().octets()[3] == 2), 0, remote(d.from)]);
        }
    }
    out.extend_from_slice(&[3, 4, 5, 0, 0]);
    out
}
