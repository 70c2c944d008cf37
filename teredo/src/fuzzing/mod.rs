//! Fuzzing harnesses: one function per input kind, each fed arbitrary bytes, each checking
//! invariants beyond "no panic" (what is emitted re-parses, tables and queues stay under
//! their caps, internal consistency of the relay's peer table).
//!
//! The cargo-fuzz targets in `fuzz/` call these functions, and so do the corpus replay
//! tests (`teredo/tests/corpus.rs`), so a corpus file or a regression file means the same
//! thing in both places. Structured harnesses decode their input with [`Input`] as a
//! sequence of operations; [`encode`] writes that format, for seed corpora made from
//! captures. Not a stable API: hidden from the documentation.

pub mod client;
pub mod encode;
pub mod relay;
pub mod server;
pub mod wire;

pub use client::client_udp;
pub use relay::{relay_ipv6, relay_udp};
pub use server::server_datagram;
pub use wire::wire;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::wire::packet::IPV6_HEADER_LEN;

/// A cursor over a fuzz input. Reading past the end yields zeros and empty slices, so every
/// input decodes to some operation sequence (libFuzzer's mutations stay meaningful).
#[derive(Clone, Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Wraps the fuzz input.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Nothing left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// One byte, 0 past the end.
    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    /// A big-endian u16, zero-padded past the end.
    pub fn u16(&mut self) -> u16 {
        let mut o = [0u8; 2];
        let b = self.bytes(2);
        o[..b.len()].copy_from_slice(b);
        u16::from_be_bytes(o)
    }

    /// A big-endian u32, zero-padded past the end.
    pub fn u32(&mut self) -> u32 {
        let mut o = [0u8; 4];
        let b = self.bytes(4);
        o[..b.len()].copy_from_slice(b);
        u32::from_be_bytes(o)
    }

    /// An IPv4 socket address: 4 address bytes, 2 port bytes.
    pub fn addr(&mut self) -> SocketAddrV4 {
        let ip = Ipv4Addr::from(self.u32());
        SocketAddrV4::new(ip, self.u16())
    }

    /// A chunk: a big-endian u16 length, then that many bytes (fewer at the end).
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.bytes(n)
    }

    /// A time step: a u16 scaled by one of four units (1 ms, 100 ms, 1 s, 1 min) picked by
    /// the two high bits of a byte.
    pub fn step(&mut self) -> Duration {
        let unit = self.u8() >> 6;
        let n = u64::from(self.u16());
        match unit {
            0 => Duration::from_millis(n),
            1 => Duration::from_millis(100 * n),
            2 => Duration::from_secs(n),
            _ => Duration::from_secs(60 * n),
        }
    }
}

/// Upper bound on operations per input, so that one input is bounded in time.
pub const MAX_OPS: usize = 512;

/// Advances `now` by `step`, saturating (an `Instant` cannot hold every sum).
pub fn advance(now: Instant, step: Duration) -> Instant {
    now.checked_add(step).unwrap_or(now)
}

/// Asserts that `ipv6` is a complete IPv6 packet: version 6, exactly 40 + payload length
/// bytes.
pub fn assert_complete_ipv6(ipv6: &[u8], what: &str) {
    assert!(ipv6.len() >= IPV6_HEADER_LEN, "{what}: short IPv6 packet");
    assert_eq!(ipv6[0] >> 4, 6, "{what}: not IPv6");
    let payload = usize::from(u16::from_be_bytes([ipv6[4], ipv6[5]]));
    assert_eq!(
        IPV6_HEADER_LEN + payload,
        ipv6.len(),
        "{what}: IPv6 payload length does not match"
    );
}

/// Writes `addr` over bytes `at..at + 16` of a packet that is long enough.
pub(crate) fn patch_addr(pkt: &mut [u8], at: usize, addr: std::net::Ipv6Addr) {
    if let Some(dst) = pkt.get_mut(at..at + 16) {
        dst.copy_from_slice(&addr.octets());
    }
}

/// Sets the IPv6 payload length of a packet that starts with an IPv6 header so that the
/// packet ends at the end of the slice.
pub(crate) fn fix_payload_len(pkt: &mut [u8]) {
    if pkt.len() >= IPV6_HEADER_LEN {
        let n = u16::try_from(pkt.len() - IPV6_HEADER_LEN).unwrap_or(u16::MAX);
        pkt[4..6].copy_from_slice(&n.to_be_bytes());
        pkt[0] = 0x60 | (pkt[0] & 0x0f);
    }
}

/// A deterministic RNG (SplitMix64) for the harnesses: same input, same run.
#[derive(Clone, Debug)]
pub struct FuzzRng(u64);

impl FuzzRng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
}

impl rand::RngCore for FuzzRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The start of an input's virtual time. The harness is the driver, so it reads the clock
/// once; every later instant is this plus steps decoded from the input.
#[allow(clippy::disallowed_methods)]
pub fn epoch() -> Instant {
    Instant::now()
}
