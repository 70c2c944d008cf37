//! The header every load packet carries at the start of its ICMPv6 data or UDP payload, so
//! that the answer alone tells which run, client, trial and sequence number it echoes and
//! when the request left.

/// Bytes of the header; `--size` must be at least this.
pub const HEADER_LEN: usize = 24;

/// What a load packet says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Random tag of the run: answers to another run (or stray packets) are ignored.
    pub run: u32,
    /// Sending client's index.
    pub client: u32,
    /// Trial number (0: the warm-up probes of the data phase).
    pub trial: u32,
    /// Per-client sequence number, from 0, increasing across trials.
    pub seq: u32,
    /// Send time, nanoseconds since the run's epoch.
    pub sent_ns: u64,
}

impl Stamp {
    /// Writes the header into the start of `buf`; `false` (nothing written) when `buf` is
    /// shorter than [`HEADER_LEN`].
    pub fn write(&self, buf: &mut [u8]) -> bool {
        let Some(h) = buf.get_mut(..HEADER_LEN) else {
            return false;
        };
        h[0..4].copy_from_slice(&self.run.to_be_bytes());
        h[4..8].copy_from_slice(&self.client.to_be_bytes());
        h[8..12].copy_from_slice(&self.trial.to_be_bytes());
        h[12..16].copy_from_slice(&self.seq.to_be_bytes());
        h[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
        true
    }

    /// Reads the header at the start of `data`; `None` when it is too short.
    pub fn read(data: &[u8]) -> Option<Self> {
        let h = data.get(..HEADER_LEN)?;
        let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let mut ns = [0u8; 8];
        ns.copy_from_slice(&h[16..24]);
        Some(Self {
            run: u32_at(0),
            client: u32_at(4),
            trial: u32_at(8),
            seq: u32_at(12),
            sent_ns: u64::from_be_bytes(ns),
        })
    }
}

/// A payload of `size` bytes (at least [`HEADER_LEN`]) with a fixed filler after the header.
pub fn filler(size: usize) -> Vec<u8> {
    (0..size.max(HEADER_LEN)).map(|i| (i % 251) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short_buffers() {
        let s = Stamp {
            run: 0xdead_beef,
            client: 9_999,
            trial: 3,
            seq: u32::MAX,
            sent_ns: 1_234_567_890_123,
        };
        let mut b = filler(100);
        assert!(s.write(&mut b));
        assert_eq!(Stamp::read(&b), Some(s));
        assert_eq!(b[HEADER_LEN], (HEADER_LEN % 251) as u8, "filler kept");
        assert_eq!(Stamp::read(&b[..HEADER_LEN - 1]), None);
        let mut short = [0u8; HEADER_LEN - 1];
        assert!(!s.write(&mut short));
        assert_eq!(short, [0u8; HEADER_LEN - 1]);
        assert_eq!(filler(3).len(), HEADER_LEN);
    }
}
