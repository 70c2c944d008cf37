//! TUN GSO: writing a run of same-flow IPv6/UDP packets to the TUN as one packet.
//!
//! Teredo→native costs the relay one TUN write and one trip through IPv6 forwarding per
//! packet. A TUN opened with `IFF_VNET_HDR` accepts a `virtio_net_hdr` in front of each
//! write; with `gso_type = VIRTIO_NET_HDR_GSO_UDP_L4` (USO) the packet is a "super-packet"
//! the kernel forwards once and splits into `gso_size`-byte UDP segments on the way out
//! (or hands as is to a device that segments itself), recomputing each segment's checksum.
//!
//! A [`Run`] is packets that the split gives back byte for byte: same IPv6 header fields
//! (version, traffic class, flow label, hop limit, addresses), UDP directly after it, same
//! ports, payloads all of the first one's length except a shorter last one. Since the
//! kernel recomputes the UDP checksums, only packets whose checksum verifies are merged; any
//! other packet is written alone, unchanged, so a corrupt packet still arrives corrupt.
//!
//! The super-packet is never copied: the write is a `writev` of the virtio-net header, the
//! first packet's 48 header bytes (payload length, UDP length and checksum rewritten:
//! the checksum field holds the pseudo-header sum, as `VIRTIO_NET_HDR_F_NEEDS_CSUM` wants),
//! then each packet's payload in place.

use teredo::wire::packet::IPV6_HEADER_LEN;
use teredo::wire::view::{udp_field, Ipv6Udp, IPV6_UDP_HEADERS_LEN};

/// Bytes of `struct virtio_net_hdr` (no `num_buffers`: the TUN default).
pub(crate) const VNET_HDR_LEN: usize = 10;
/// Most packets merged into one write (the kernel accepts up to 128 UDP segments).
pub(crate) const MAX_RUN: usize = 64;
/// IPv6 + UDP header bytes.
const HEAD: usize = IPV6_UDP_HEADERS_LEN;
/// Largest IPv6 payload (UDP header included) of a super-packet.
const MAX_PAYLOAD: usize = 65_535;

/// Fields of `struct virtio_net_hdr` (native endianness: the legacy header).
mod vnet {
    use std::ops::Range;
    /// `flags`.
    pub(super) const FLAGS: usize = 0;
    /// `gso_type`.
    pub(super) const GSO_TYPE: usize = 1;
    /// `hdr_len`: bytes of headers in front of the segmented payload.
    pub(super) const HDR_LEN: Range<usize> = 2..4;
    /// `gso_size`: payload bytes per segment.
    pub(super) const GSO_SIZE: Range<usize> = 4..6;
    /// `csum_start`: where the checksummed part starts.
    pub(super) const CSUM_START: Range<usize> = 6..8;
    /// `csum_offset`: where the checksum field is, from `csum_start`.
    pub(super) const CSUM_OFFSET: Range<usize> = 8..10;
}

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP_L4`.
const GSO_UDP_L4: u8 = 5;
/// IPv6 next header: UDP.
const UDP: u8 = 17;

/// One's-complement sum of `data` as big-endian 16-bit words (odd byte padded).
fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Sum of the IPv6 pseudo-header of `packet` for an upper-layer length `len`, protocol UDP.
fn pseudo_sum<T: AsRef<[u8]>>(packet: &Ipv6Udp<T>, len: usize) -> u64 {
    let acc = sum16(packet.addresses(), 0);
    acc + (len as u64 >> 16) + (len as u64 & 0xffff) + u64::from(UDP)
}

/// An IPv6 packet with UDP right after the header, consistent lengths and a non-empty
/// payload: the kind of packet a run may contain (if its checksum verifies, [`csum_ok`]).
fn shaped(p: &[u8]) -> bool {
    let Ok(v) = Ipv6Udp::new_checked(p) else {
        return false;
    };
    if p.len() <= HEAD || p.len() - IPV6_HEADER_LEN > MAX_PAYLOAD || !v.is_udp() {
        return false;
    }
    let len = p.len() - IPV6_HEADER_LEN;
    usize::from(v.ipv6().payload_len()) == len && usize::from(v.udp_len()) == len
}

/// The UDP checksum of a [`shaped`] packet is present and verifies.
fn csum_ok(p: &[u8]) -> bool {
    let Ok(v) = Ipv6Udp::new_checked(p) else {
        return false;
    };
    let len = p.len() - IPV6_HEADER_LEN;
    v.checksum() != 0 && fold(sum16(v.udp_segment(), pseudo_sum(&v, len))) == 0xffff
}

/// `b` belongs to the same flow as `a` (both [`shaped`]): the split of a super-packet
/// made from `a`'s header gives `b`'s header back.
fn same_flow(a: &[u8], b: &[u8]) -> bool {
    match (Ipv6Udp::new_checked(a), Ipv6Udp::new_checked(b)) {
        (Ok(a), Ok(b)) => a.same_flow(&b),
        _ => false,
    }
}

/// Packets written with one `writev`: one packet as is, or a GSO super-packet.
#[derive(Debug)]
pub(crate) struct Run<'a> {
    packets: [&'a [u8]; MAX_RUN],
    len: usize,
    vnet: [u8; VNET_HDR_LEN],
    head: [u8; HEAD],
}

impl<'a> Run<'a> {
    /// One packet, written unchanged behind an empty virtio-net header.
    pub(crate) fn single(p: &'a [u8]) -> Self {
        let mut packets: [&'a [u8]; MAX_RUN] = [&[]; MAX_RUN];
        packets[0] = p;
        Self {
            packets,
            len: 1,
            vnet: [0; VNET_HDR_LEN],
            head: [0; HEAD],
        }
    }

    /// Packets in the run.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The packets, in order.
    pub(crate) fn packets(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.packets[..self.len].iter().copied()
    }

    /// Fills the super-packet's headers once all packets are in (two or more).
    fn seal(&mut self) {
        let first = self.packets[0];
        let seg = first.len() - HEAD;
        let udp_len: usize =
            udp_field::HEADER_LEN + self.packets().map(|p| p.len() - HEAD).sum::<usize>();
        self.head.copy_from_slice(&first[..HEAD]);
        // `head` is exactly the two headers, so the view cannot fail.
        if let Ok(mut h) = Ipv6Udp::new_checked(&mut self.head[..]) {
            h.set_lengths(udp_len as u16);
            let pseudo = fold(pseudo_sum(&h, udp_len));
            h.set_checksum(pseudo);
        }
        // Native endianness: the legacy virtio header (no TUNSETVNETLE/BE).
        let v = &mut self.vnet;
        v[vnet::FLAGS] = F_NEEDS_CSUM;
        v[vnet::GSO_TYPE] = GSO_UDP_L4;
        v[vnet::HDR_LEN].copy_from_slice(&(HEAD as u16).to_ne_bytes());
        v[vnet::GSO_SIZE].copy_from_slice(&(seg as u16).to_ne_bytes());
        // The UDP header, and its checksum field.
        v[vnet::CSUM_START].copy_from_slice(&(IPV6_HEADER_LEN as u16).to_ne_bytes());
        v[vnet::CSUM_OFFSET].copy_from_slice(&(udp_field::CHECKSUM.start as u16).to_ne_bytes());
    }

    /// The `writev` vector of this run; returns its total length.
    pub(crate) fn iovecs(&self, v: &mut IoVecs) -> usize {
        v.len = 0;
        v.push(&self.vnet);
        if self.len == 1 {
            v.push(self.packets[0]);
        } else {
            v.push(&self.head);
            for p in self.packets() {
                v.push(&p[HEAD..]);
            }
        }
        v.total
    }
}

/// Splits a sequence of packets into [`Run`]s, keeping their order.
pub(crate) struct Runs<'a, I: Iterator<Item = &'a [u8]>> {
    packets: I,
    pending: Option<&'a [u8]>,
    merge: bool,
}

impl<'a, I: Iterator<Item = &'a [u8]>> Runs<'a, I> {
    /// Runs over `packets`; with `merge` false every packet is a run of its own.
    pub(crate) fn new(packets: I, merge: bool) -> Self {
        Self {
            packets,
            pending: None,
            merge,
        }
    }

    /// The next run: the longest mergeable prefix of what is left. Checksums are only
    /// verified when a second packet could join, so lone packets cost a few comparisons.
    pub(crate) fn next_run(&mut self) -> Option<Run<'a>> {
        let first = self.pending.take().or_else(|| self.packets.next())?;
        let mut run = Run::single(first);
        if !self.merge || !shaped(first) {
            return Some(run);
        }
        let seg = first.len() - HEAD;
        let mut total = first.len() - IPV6_HEADER_LEN;
        let mut first_ok = None;
        while run.len < MAX_RUN {
            let Some(p) = self.packets.next() else { break };
            let fits = p.len() > HEAD
                && p.len() - HEAD <= seg
                && total + p.len() - HEAD <= MAX_PAYLOAD
                && same_flow(first, p)
                && shaped(p)
                && *first_ok.get_or_insert_with(|| csum_ok(first))
                && csum_ok(p);
            if !fits {
                self.pending = Some(p);
                break;
            }
            run.packets[run.len] = p;
            run.len += 1;
            total += p.len() - HEAD;
            if p.len() - HEAD < seg {
                break;
            }
        }
        if run.len > 1 {
            run.seal();
        }
        Some(run)
    }
}

/// The iovec array of one [`Run`] (virtio-net header, header, up to [`MAX_RUN`] payloads).
pub(crate) struct IoVecs {
    iov: [libc::iovec; MAX_RUN + 2],
    len: usize,
    total: usize,
}

// SAFETY: the iovecs only point to the bytes of a `Run` (and the packets it borrows), which
// the writer keeps alive and unchanged while it uses them; nothing is shared.
unsafe impl Send for IoVecs {}
// SAFETY: `&IoVecs` only reads (no interior mutability).
unsafe impl Sync for IoVecs {}

impl Default for IoVecs {
    fn default() -> Self {
        Self {
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_RUN + 2],
            len: 0,
            total: 0,
        }
    }
}

impl IoVecs {
    fn push(&mut self, b: &[u8]) {
        if self.len == 0 {
            self.total = 0;
        }
        self.iov[self.len] = libc::iovec {
            iov_base: b.as_ptr().cast_mut().cast(),
            iov_len: b.len(),
        };
        self.len += 1;
        self.total += b.len();
    }

    /// The filled part.
    pub(crate) fn as_slice(&self) -> &[libc::iovec] {
        &self.iov[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp6(src: [u8; 16], dst: [u8; 16], sport: u16, hop: u8, payload: &[u8]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv6(src, dst, hop).udp(sport, 7777);
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    const A: [u8; 16] = [
        0x20, 0x01, 0, 0, 0xc6, 0x33, 0x64, 0x01, 0, 0, 0xff, 0xff, 1, 2, 3, 4,
    ];
    const B: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99,
    ];

    fn shapes(packets: &[Vec<u8>]) -> Vec<usize> {
        let mut runs = Runs::new(packets.iter().map(Vec::as_slice), true);
        let mut out = Vec::new();
        while let Some(r) = runs.next_run() {
            out.push(r.len());
        }
        out
    }

    /// Splits a super-packet the way the kernel's UDP GSO does, for the round trip below.
    fn split(bytes: &[u8]) -> Vec<Vec<u8>> {
        let (vnet, pkt) = bytes.split_at(VNET_HDR_LEN);
        if vnet[1] == 0 {
            return vec![pkt.to_vec()];
        }
        assert_eq!(vnet[0], F_NEEDS_CSUM);
        let seg = usize::from(u16::from_ne_bytes([vnet[4], vnet[5]]));
        assert_eq!(u16::from_ne_bytes([vnet[6], vnet[7]]), 40);
        assert_eq!(u16::from_ne_bytes([vnet[8], vnet[9]]), 6);
        // The pseudo-header sum in the checksum field covers the super-packet's length.
        let total = pkt.len() - 40;
        assert_eq!(
            u16::from_be_bytes([pkt[46], pkt[47]]),
            fold(pseudo_sum(&Ipv6Udp::new_checked(pkt).unwrap(), total))
        );
        pkt[HEAD..]
            .chunks(seg)
            .map(|payload| {
                let mut p = pkt[..HEAD].to_vec();
                let l = ((payload.len() + 8) as u16).to_be_bytes();
                p[4..6].copy_from_slice(&l);
                p[44..46].copy_from_slice(&l);
                p[46..48].copy_from_slice(&[0, 0]);
                p.extend_from_slice(payload);
                let c = !fold(sum16(
                    &p[40..],
                    pseudo_sum(&Ipv6Udp::new_checked(&p[..]).unwrap(), payload.len() + 8),
                ));
                p[46..48].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
                p
            })
            .collect()
    }

    fn gather(run: &Run<'_>) -> Vec<u8> {
        let mut v = IoVecs::default();
        let total = run.iovecs(&mut v);
        let mut out = Vec::new();
        for iov in v.as_slice() {
            // SAFETY: the iovecs point into `run` and its packets, alive here.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts(iov.iov_base.cast::<u8>(), iov.iov_len)
            });
        }
        assert_eq!(out.len(), total);
        out
    }

    #[test]
    fn runs_merge_same_flow_equal_payloads_and_split_back_byte_for_byte() {
        let mut packets: Vec<Vec<u8>> = (0..5u8).map(|i| udp6(A, B, 1000, 64, &[i; 52])).collect();
        packets.push(udp6(A, B, 1000, 64, &[9; 20])); // shorter: closes the run
        packets.push(udp6(A, B, 1000, 64, &[10; 52]));
        packets.push(udp6(A, B, 1001, 64, &[11; 52])); // another port
        packets.push(udp6(A, B, 1001, 63, &[12; 52])); // another hop limit
        packets.push(udp6(A, B, 1001, 63, &[13; 60])); // longer than the first
        assert_eq!(shapes(&packets), [6, 1, 1, 1, 1]);

        let mut runs = Runs::new(packets.iter().map(Vec::as_slice), true);
        let mut back = Vec::new();
        while let Some(r) = runs.next_run() {
            back.extend(split(&gather(&r)));
        }
        assert_eq!(back, packets);
    }

    #[test]
    fn bad_checksums_and_other_packets_are_written_alone_and_unchanged() {
        let good = udp6(A, B, 1000, 64, &[1; 30]);
        let mut bad = good.clone();
        bad[60] ^= 1;
        let mut zero = good.clone();
        zero[46..48].copy_from_slice(&[0, 0]);
        let mut icmp = good.clone();
        icmp[6] = 58;
        let mut trailer = good.clone();
        trailer.push(0); // length fields no longer match
        let packets = vec![
            good.clone(),
            bad.clone(),
            good.clone(),
            zero,
            icmp,
            trailer,
            good.clone(),
            good.clone(),
            vec![0x60; 10],
        ];
        assert_eq!(shapes(&packets), [1, 1, 1, 1, 1, 1, 2, 1]);
        let mut runs = Runs::new(packets.iter().map(Vec::as_slice), true);
        let mut back = Vec::new();
        while let Some(r) = runs.next_run() {
            back.extend(split(&gather(&r)));
        }
        assert_eq!(back, packets, "the corrupt packet still arrives corrupt");
    }

    #[test]
    fn runs_stop_at_the_segment_and_size_limits() {
        let small: Vec<Vec<u8>> = (0..MAX_RUN + 3)
            .map(|_| udp6(A, B, 1, 64, &[7; 10]))
            .collect();
        assert_eq!(shapes(&small), [MAX_RUN, 3]);
        let big: Vec<Vec<u8>> = (0..60).map(|_| udp6(A, B, 1, 64, &[7; 1232])).collect();
        // 53 × 1232 payload bytes + 8 fit in 65,535; 54 do not.
        assert_eq!(shapes(&big), [53, 7]);
        let mut runs = Runs::new(small.iter().map(Vec::as_slice), false);
        let mut n = 0;
        while let Some(r) = runs.next_run() {
            assert_eq!(r.len(), 1, "merging off");
            n += 1;
        }
        assert_eq!(n, MAX_RUN + 3);
    }
}
