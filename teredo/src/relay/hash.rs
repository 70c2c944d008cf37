//! SipHash-2-4.

#[allow(clippy::wildcard_imports)]
use super::*;

/// SipHash-2-4 (Aumasson & Bernstein), keyed: the peer table's hasher and the per-peer
/// link-local derivation.
#[derive(Clone, Debug)]
pub(super) struct SipHasher24 {
    pub(super) v: [u64; 4],
    pub(super) tail: u64,
    pub(super) ntail: usize,
    pub(super) length: usize,
}

impl SipHasher24 {
    pub(super) fn new_with_keys(k0: u64, k1: u64) -> Self {
        Self {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            length: 0,
        }
    }

    pub(super) fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[2] = v[2].wrapping_add(v[3]);
        v[1] = v[1].rotate_left(13);
        v[3] = v[3].rotate_left(16);
        v[1] ^= v[0];
        v[3] ^= v[2];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[1]);
        v[0] = v[0].wrapping_add(v[3]);
        v[1] = v[1].rotate_left(17);
        v[3] = v[3].rotate_left(21);
        v[1] ^= v[2];
        v[3] ^= v[0];
        v[2] = v[2].rotate_left(32);
    }

    /// SipHash-2-4 of exactly 16 bytes (an IPv6 address): the same value as
    /// [`Hasher::write`] then [`Hasher::finish`], without the buffering.
    pub(super) fn hash_16(k0: u64, k1: u64, bytes: &[u8; 16]) -> u64 {
        let m = u128::from_le_bytes(*bytes);
        let mut s = Self::new_with_keys(k0, k1);
        s.compress(m as u64);
        s.compress((m >> 64) as u64);
        s.length = 16;
        s.finish()
    }

    pub(super) fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        Self::round(&mut self.v);
        Self::round(&mut self.v);
        self.v[0] ^= m;
    }
}

impl Hasher for SipHasher24 {
    fn write(&mut self, mut bytes: &[u8]) {
        self.length = self.length.wrapping_add(bytes.len());
        while self.ntail != 0 {
            let Some((&b, rest)) = bytes.split_first() else {
                return;
            };
            self.tail |= u64::from(b) << (8 * self.ntail);
            self.ntail += 1;
            bytes = rest;
            if self.ntail == 8 {
                let m = self.tail;
                self.compress(m);
                self.tail = 0;
                self.ntail = 0;
            }
        }
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.compress(u64::from_le_bytes(w));
        }
        for (i, &b) in chunks.remainder().iter().enumerate() {
            self.tail |= u64::from(b) << (8 * i);
        }
        self.ntail = chunks.remainder().len();
    }

    fn finish(&self) -> u64 {
        let mut s = self.clone();
        let b = ((self.length as u64 & 0xff) << 56) | self.tail;
        s.compress(b);
        s.v[2] ^= 0xff;
        for _ in 0..4 {
            Self::round(&mut s.v);
        }
        s.v[0] ^ s.v[1] ^ s.v[2] ^ s.v[3]
    }
}
