//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624), for the `mmsg`
//! engine's Teredo data path: it rewrites the load header inside a captured ICMPv6 or UDP
//! packet and fixes that packet's checksum from the bytes it changed, without summing the
//! packet again.

/// Ones' complement sum of `data` as big-endian 16-bit words (an odd last byte padded
/// with zero), folded to 16 bits, starting from `sum`.
pub fn ones_sum(mut sum: u32, data: &[u8]) -> u16 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        // Fold often enough that 32 bits never overflow.
        if sum > 0xffff_0000 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    if let [last] = words.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// RFC 1624 eqn. 3: the checksum `hc` of a message after the 16-bit-aligned bytes `old`
/// were replaced by `new` (same length, even, starting at an even offset of the summed
/// data): `HC' = ~(~HC + ~m + m')`. For UDP, a result of 0 must be sent as `0xffff`
/// ([`udp_wire`]); both mean the same to a receiver that sums the whole packet.
pub fn update(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    debug_assert_eq!(old.len() % 2, 0);
    let mut sum = u32::from(!hc);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        sum += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        sum += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    !ones_sum(sum, &[])
}

/// A UDP checksum as it goes on the wire: 0 means "no checksum", so a computed 0 is sent
/// as `0xffff` (RFC 768; mandatory over IPv6, RFC 8200 §8.1).
pub fn udp_wire(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng as _, SeedableRng as _};

    /// The full checksum of an upper-layer packet over IPv6 (RFC 8200 §8.1), with its
    /// checksum field at `at` taken as zero.
    fn full(src: [u8; 16], dst: [u8; 16], next: u8, upper: &[u8], at: usize) -> u16 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        pseudo.extend_from_slice(&(upper.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, next]);
        let mut body = upper.to_vec();
        body[at..at + 2].copy_from_slice(&[0, 0]);
        let s = u32::from(ones_sum(0, &pseudo));
        !ones_sum(s, &body)
    }

    /// The same sum with the field in: a valid packet sums to 0xffff (negative zero).
    fn verifies(src: [u8; 16], dst: [u8; 16], next: u8, upper: &[u8]) -> bool {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        pseudo.extend_from_slice(&(upper.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, next]);
        let s = u32::from(ones_sum(0, &pseudo));
        ones_sum(s, upper) == 0xffff
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(
            ones_sum(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(ones_sum(0, &[0xff]), 0xff00, "odd byte padded");
        assert_eq!(ones_sum(0, &[]), 0);
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000.
        assert_eq!(update(0xdd2f, &[0x55, 0x55], &[0x32, 0x85]), 0x0000);
        assert_eq!(udp_wire(0), 0xffff);
        assert_eq!(udp_wire(0x1234), 0x1234);
    }

    #[test]
    fn incremental_matches_a_full_recompute() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1624);
        for round in 0..2000 {
            let (src, dst): ([u8; 16], [u8; 16]) = (rng.random(), rng.random());
            // ICMPv6 (checksum at 2) or UDP (at 6); payload from 24 to 1232 bytes, odd too.
            let (next, at) = if round % 2 == 0 { (58, 2) } else { (17, 6) };
            let len = 8 + rng.random_range(24..=1232);
            let mut pkt: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let c = full(src, dst, next, &pkt, at);
            pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
            assert!(verifies(src, dst, next, &pkt));
            // Rewrite the 24-byte header at offset 8 (even), a few times in a row.
            for _ in 0..3 {
                let new: [u8; 24] = rng.random();
                let old = pkt[8..32].to_vec();
                let hc = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
                pkt[8..32].copy_from_slice(&new);
                let inc = update(hc, &old, &new);
                let inc = if next == 17 { udp_wire(inc) } else { inc };
                pkt[at..at + 2].copy_from_slice(&inc.to_be_bytes());
                let want = full(src, dst, next, &pkt, at);
                // 0x0000 and 0xffff are the same number in ones' complement.
                assert!(
                    inc == want || (inc | want == 0xffff && (inc == 0 || want == 0)),
                    "round {round}: incremental {inc:#06x}, full {want:#06x}"
                );
                assert!(verifies(src, dst, next, &pkt), "round {round}");
            }
        }
    }

    #[test]
    fn unchanged_bytes_keep_the_checksum() {
        let b = [1u8, 2, 3, 4];
        for hc in [0x0001, 0x1234, 0xfffe, 0xffff] {
            let got = update(hc, &b, &b);
            assert!(
                got == hc || (hc == 0xffff && got == 0),
                "{hc:#06x} -> {got:#06x}"
            );
        }
    }
}
