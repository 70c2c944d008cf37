//! The tshark checker on hand-made captures: a clean Miredo RS and RA, an RS with a bad ICMPv6
//! checksum and a truncated one. Needs tshark, not root.

use std::net::{Ipv4Addr, SocketAddrV4};

use teredo_tests::tshark::tshark_check;
use teredo_tests::{check, function_name, require_tools, TestDir};

/// A nonce-only authentication header (nonce aedb67c27dc8c735, confirmation 0) + IPv6 header
/// (fe80::ffff:ffff:ffff → ff02::2, hop limit 255) + RS: what Miredo 1.2.6 sends.
const MIREDO_RS: &str = "0001 0000 aedb67c27dc8c735 00 \
    6000 0000 0008 3a ff fe80 0000 0000 0000 0000 ffff ffff ffff ff02 0000 0000 0000 0000 0000 0000 0002 \
    85 00 7d37 00000000";

/// miredo-server 1.2.6's answer to [`MIREDO_RS`] from 198.51.100.10:51172: auth (nonce
/// echoed) + origin indication + RA with PIO 2001:0:c633:6401::/64 and MTU 1280 (117 bytes).
const MIREDO_RA: &str = "0001 0000 aedb67c27dc8c735 00 \
    0000 381b 39cc9bf5 \
    6000 0000 0038 3a ff fe80 0000 0000 0000 8000 f227 39cc 9bfe fe80 0000 0000 0000 0000 ffff ffff ffff \
    86 00 954c 00 00 0000 00000000 000007d0 \
    03 04 40 40 ffffffff ffffffff 00000000 2001 0000 c633 6401 0000 0000 0000 0000 \
    05 01 0000 00000500";

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 (valid header checksum) + UDP (checksum 0 = none) around `payload`.
fn ipv4_udp(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + 8 + payload.len()).unwrap();
    let mut p = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&from.ip().octets());
    p.extend_from_slice(&to.ip().octets());
    let csum = ones_complement_sum(&p);
    p[10..12].copy_from_slice(&csum.to_be_bytes());
    p.extend_from_slice(&from.port().to_be_bytes());
    p.extend_from_slice(&to.port().to_be_bytes());
    p.extend_from_slice(&(total - 20).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// A classic pcap file, link type 101 (raw IP).
fn pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut f = Vec::new();
    for field in [
        0xa1b2_c3d4_u32.to_le_bytes().as_slice(),
        &2u16.to_le_bytes(),
        &4u16.to_le_bytes(),
    ] {
        f.extend_from_slice(field);
    }
    for word in [0u32, 0, 65_535, 101] {
        f.extend_from_slice(&word.to_le_bytes());
    }
    for (i, p) in packets.iter().enumerate() {
        let len = u32::try_from(p.len()).unwrap();
        for word in [1_800_000_000 + u32::try_from(i).unwrap(), 0, len, len] {
            f.extend_from_slice(&word.to_le_bytes());
        }
        f.extend_from_slice(p);
    }
    f
}

#[test]
fn tshark_check_flags_bad_checksums_and_truncation() {
    require_tools!("tshark");
    let dir = check(TestDir::new(function_name!()));
    let client = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 10), 51_172);
    let server = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 3544);
    let rs = hex(MIREDO_RS);
    let mut bad_checksum = rs.clone();
    let at = bad_checksum.len() - 6; // ICMPv6 checksum, low byte
    bad_checksum[at] ^= 0x01;
    let truncated = &rs[..rs.len() - 4]; // IPv6 payload length says 8, 4 bytes left
    let file = dir.join("handmade.pcap");
    std::fs::write(
        &file,
        pcap(&[
            ipv4_udp(client, server, &rs),
            ipv4_udp(server, client, &hex(MIREDO_RA)),
            ipv4_udp(client, server, &bad_checksum),
            ipv4_udp(client, server, truncated),
        ]),
    )
    .unwrap();

    let report = check(tshark_check(&file));
    assert_eq!(report.frames.len(), 4, "{report:#?}");
    let (rs, ra) = (&report.frames[0], &report.frames[1]);
    assert!(rs.is_teredo_rs(), "{rs:#?}");
    assert!(ra.is_teredo_ra(), "{ra:#?}");
    assert!(
        rs.protocols.ends_with("udp:teredo:ipv6:icmpv6"),
        "{}",
        rs.protocols
    );
    assert_eq!(rs.ipv4_src, Some(*client.ip()));
    assert_eq!(rs.udp_dst, Some(3544));
    assert_eq!(rs.teredo_nonce.as_deref(), Some("aedb67c27dc8c735"));
    assert_eq!(rs.teredo_origin, None);
    assert_eq!(ra.teredo_nonce, rs.teredo_nonce);
    assert_eq!(ra.teredo_confirmation.as_deref(), Some("00"));
    assert_eq!(
        ra.teredo_origin,
        Some(client),
        "origin indication de-obfuscated"
    );
    assert_eq!(ra.ipv6_dst, rs.ipv6_src);

    let flagged: Vec<u32> = report.problems().iter().map(|(f, _)| f.number).collect();
    assert_eq!(flagged, vec![3, 4], "{:#?}", report.problems());
    let problems = report.problems();
    assert!(
        problems[0].1.iter().any(|p| p.contains("Bad checksum")),
        "{problems:#?}"
    );
    let err = report.ensure_clean().expect_err("two frames are broken");
    assert!(format!("{err:#}").contains("2 frame(s)"), "{err:#}");
}
