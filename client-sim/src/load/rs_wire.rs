//! The datagrams of `--phase rs` (the RS storm): each client's router solicitation, built
//! once with the core's builder ([`emit_rs`]) as a qualifying client sends it (nonce-only
//! authentication header, the profile's restricted link-local source, cone flag off), then
//! stamped in place; and the checks an answer passes before it counts.
//!
//! **The nonce** (8 bytes, the only field a server echoes) says whose RS an answer is, which
//! one and when it left, as one big-endian 64-bit number XOR a random per-run key:
//!
//! ```text
//! bits 63..40  client index        (24 bits: at most 16 777 216 clients)
//! bits 39..14  sequence number     (the low 26 bits of the client's count of RSs sent)
//! bits 13..0   sending pass        (the low 14 bits of the pass number)
//! ```
//!
//! The send time is not in the nonce: every RS of one sending pass (passes are 1–5 ms
//! apart) shares the pass's send time, kept with its trial in a ring of [`PASSES`] passes
//! ([`Passes`], 384 KiB; at least 16 s of sending). An answer is matched when its client
//! exists, the sequence number is one that client sent (the full number is rebuilt from its
//! low bits and the client's count) and its pass slot has been used; anything else is
//! `unexpected` (a nonce we did not send), never an answer. (An answer more than
//! [`PASSES`] passes late, 16 s of sending or more, would be timed against a later pass;
//! the drain after a trial is far shorter.)

use std::net::Ipv6Addr;

use teredo::wire::auth::Auth;
use teredo::wire::ndp::{emit_rs, RouterAdvertisement, RouterSolicitation};
use teredo::wire::{TeredoPacket, WireError};

/// Bits of the client index in the nonce.
pub const CLIENT_BITS: u32 = 24;
/// Bits of the sequence number.
pub const SEQ_BITS: u32 = 26;
/// Bits of the pass number.
pub const PASS_BITS: u32 = 14;
/// Most clients an RS storm can tell apart.
pub const MAX_CLIENTS: u32 = 1 << CLIENT_BITS;
/// Passes whose send time is kept.
pub const PASSES: usize = 1 << PASS_BITS;

const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
const PASS_MASK: u64 = (1 << PASS_BITS) - 1;

/// The nonce and the confirmation byte end a nonce-only authentication header.
const NONCE_TO_AUTH_END: usize = 8 + 1;

/// Packs and unpacks nonces (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonceKey(pub u64);

/// What a nonce says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonceFields {
    /// Client index.
    pub client: u32,
    /// Low [`SEQ_BITS`] of the sequence number.
    pub seq_low: u32,
    /// Slot of the pass in [`Passes`].
    pub pass_slot: usize,
}

impl NonceKey {
    /// The nonce of client `client`'s RS number `seq`, sent in pass `pass`.
    pub fn encode(self, client: u32, seq: u32, pass: u64) -> [u8; 8] {
        let v = (u64::from(client) << (SEQ_BITS + PASS_BITS))
            | ((u64::from(seq) & SEQ_MASK) << PASS_BITS)
            | (pass & PASS_MASK);
        (v ^ self.0).to_be_bytes()
    }

    /// The fields of `nonce`.
    pub fn decode(self, nonce: [u8; 8]) -> NonceFields {
        let v = u64::from_be_bytes(nonce) ^ self.0;
        NonceFields {
            client: (v >> (SEQ_BITS + PASS_BITS)) as u32,
            seq_low: ((v >> PASS_BITS) & SEQ_MASK) as u32,
            pass_slot: (v & PASS_MASK) as usize,
        }
    }
}

/// The full sequence number whose low [`SEQ_BITS`] are `low`, of a client that has sent
/// `sent` RSs (numbers `0..sent`): the most recent such number, `None` when it has not sent
/// one.
pub fn full_seq(low: u32, sent: u32) -> Option<u32> {
    let last = sent.checked_sub(1)?;
    let back = (u64::from(last).wrapping_sub(u64::from(low)) & SEQ_MASK) as u32;
    last.checked_sub(back)
}

#[derive(Clone, Copy, Debug, Default)]
struct Pass {
    /// Pass number (from 1; 0: slot unused).
    no: u64,
    sent_ns: u64,
    trial: u32,
}

/// The send time and trial of the last [`PASSES`] sending passes.
#[derive(Debug)]
pub struct Passes {
    ring: Vec<Pass>,
    last: u64,
}

impl Default for Passes {
    fn default() -> Self {
        Self {
            ring: vec![Pass::default(); PASSES],
            last: 0,
        }
    }
}

impl Passes {
    /// Starts a pass sending at `sent_ns` for `trial`; its number.
    pub fn begin(&mut self, sent_ns: u64, trial: u32) -> u64 {
        self.last += 1;
        let no = self.last;
        self.ring[(no & PASS_MASK) as usize] = Pass { no, sent_ns, trial };
        no
    }

    /// (send time, trial) of the pass in `slot`, `None` when no pass used it yet.
    pub fn get(&self, slot: usize) -> Option<(u64, u32)> {
        self.ring
            .get(slot)
            .filter(|p| p.no != 0)
            .map(|p| (p.sent_ns, p.trial))
    }
}

/// An RS an answer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matched {
    /// Client index.
    pub client: u32,
    /// Full sequence number.
    pub seq: u32,
    /// Send time (ns since the run's origin).
    pub sent_ns: u64,
    /// Trial it was sent in.
    pub trial: u32,
}

/// Matches an answer's nonce to the RS it answers; `None` when we did not send it (or it
/// is too old to tell). `sent(client)`: how many RSs that client sent, `None` when there
/// is no such client.
pub fn match_nonce(
    key: NonceKey,
    nonce: [u8; 8],
    passes: &Passes,
    sent: impl Fn(u32) -> Option<u32>,
) -> Option<Matched> {
    let f = key.decode(nonce);
    let seq = full_seq(f.seq_low, sent(f.client)?)?;
    let (sent_ns, trial) = passes.get(f.pass_slot)?;
    Some(Matched {
        client: f.client,
        seq,
        sent_ns,
        trial,
    })
}

/// One client's RS datagram (UDP payload), stamped in place.
#[derive(Clone, Debug)]
pub struct RsTemplate {
    bytes: Vec<u8>,
    nonce_at: usize,
    src: Ipv6Addr,
}

impl RsTemplate {
    /// The RS from `src` (the profile's restricted link-local address), with the 16-byte
    /// source link-layer option when `xp_slla`, as [`emit_rs`] writes it.
    pub fn new(src: Ipv6Addr, xp_slla: bool) -> Result<Self, WireError> {
        let auth = Auth::nonce_only([0; 8]);
        let mut bytes = vec![0u8; auth.buffer_len() + 40 + 8 + 16];
        let len = emit_rs(&mut bytes, Some(&auth), src, xp_slla)?;
        bytes.truncate(len);
        let nonce_at = auth.buffer_len() - NONCE_TO_AUTH_END;
        let mut t = Self {
            bytes,
            nonce_at,
            src,
        };
        // The nonce is where the parser finds it, and the RS stays valid when stamped.
        let probe = [1, 2, 3, 4, 5, 6, 7, 8];
        let pkt = TeredoPacket::parse(t.stamp(probe))?;
        if pkt.auth.map(|a| a.nonce) != Some(probe) {
            return Err(WireError::Invalid("nonce position in the RS template"));
        }
        RouterSolicitation::parse(pkt.ipv6)?;
        Ok(t)
    }

    /// Writes `nonce` into the datagram; the datagram.
    pub fn stamp(&mut self, nonce: [u8; 8]) -> &[u8] {
        self.bytes[self.nonce_at..self.nonce_at + 8].copy_from_slice(&nonce);
        &self.bytes
    }

    /// The datagram as last stamped.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The RS's IPv6 source (an RA must be addressed to it).
    pub fn src(&self) -> Ipv6Addr {
        self.src
    }
}

/// What counts as the answer to an RS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A Teredo server's router advertisement: auth header and origin indication, a valid
    /// RA (checksum, one prefix option) addressed to the RS's source.
    Advertisement {
        /// The RS's IPv6 source.
        to: Ipv6Addr,
    },
    /// `--ceiling`: the reflector's echo of the RS itself (auth header, a valid RS).
    EchoedSolicitation,
}

/// An answer that is not what [`Expect`] asks for, with the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// The nonce of a valid answer.
pub fn answer_nonce(data: &[u8], expect: Expect) -> Result<[u8; 8], Malformed> {
    let pkt = TeredoPacket::parse(data).map_err(|_| Malformed("not a Teredo packet"))?;
    let auth = pkt.auth.ok_or(Malformed("no authentication header"))?;
    match expect {
        Expect::Advertisement { to } => {
            if pkt.origin.is_none() {
                return Err(Malformed("no origin indication"));
            }
            let ra = RouterAdvertisement::parse(pkt.ipv6)
                .map_err(|_| Malformed("not a router advertisement"))?;
            if ra.dst != to {
                return Err(Malformed("router advertisement to another address"));
            }
        }
        Expect::EchoedSolicitation => {
            RouterSolicitation::parse(pkt.ipv6)
                .map_err(|_| Malformed("not a router solicitation"))?;
        }
    }
    Ok(auth.nonce)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use teredo::addr::{server_link_local, LL_WINDOWS_RESTRICTED, LL_XP_RESTRICTED};
    use teredo::wire::ndp::RaParams;

    use super::*;

    const KEY: NonceKey = NonceKey(0x0123_4567_89ab_cdef);

    #[test]
    fn nonces_round_trip_and_look_keyed() {
        for (client, seq, pass) in [
            (0, 0, 1),
            (MAX_CLIENTS - 1, u32::MAX, u64::MAX),
            (99, 70_000_000, 16_385),
        ] {
            let n = KEY.encode(client, seq, pass);
            assert_eq!(
                KEY.decode(n),
                NonceFields {
                    client,
                    seq_low: seq & ((1 << SEQ_BITS) - 1),
                    pass_slot: (pass % PASSES as u64) as usize,
                }
            );
            assert_ne!(NonceKey(0).decode(n), KEY.decode(n), "the key matters");
        }
        assert_eq!(CLIENT_BITS + SEQ_BITS + PASS_BITS, 64);
    }

    #[test]
    fn full_sequence_numbers_are_rebuilt_from_their_low_bits() {
        let wrap = 1u32 << SEQ_BITS;
        assert_eq!(full_seq(0, 0), None, "nothing sent");
        assert_eq!(full_seq(0, 1), Some(0));
        assert_eq!(full_seq(5, 10), Some(5));
        assert_eq!(full_seq(10, 10), None, "not sent yet");
        // Past the wrap of the low bits: the most recent number with those bits.
        assert_eq!(full_seq(3, wrap + 10), Some(wrap + 3));
        assert_eq!(full_seq(wrap - 2, wrap + 10), Some(wrap - 2));
    }

    #[test]
    fn template_is_the_cores_rs_and_stamps_in_place() {
        for (src, slla) in [(LL_WINDOWS_RESTRICTED, false), (LL_XP_RESTRICTED, true)] {
            let mut t = RsTemplate::new(src, slla).unwrap();
            let mut core = vec![0u8; 200];
            let nonce = KEY.encode(7, 3, 2);
            let len = emit_rs(&mut core, Some(&Auth::nonce_only(nonce)), src, slla).unwrap();
            assert_eq!(t.stamp(nonce), &core[..len], "byte for byte the core's RS");
            assert_eq!(
                t.bytes().len(),
                if slla { 13 + 40 + 24 } else { 13 + 40 + 8 }
            );
            let rs = RouterSolicitation::parse(TeredoPacket::parse(t.bytes()).unwrap().ipv6);
            assert_eq!(rs.unwrap(), RouterSolicitation { src, cone: false });
            assert_eq!(t.src(), src);
        }
    }

    fn ra(nonce: Option<[u8; 8]>, to: Ipv6Addr) -> Vec<u8> {
        let p = RaParams {
            auth: nonce.map(Auth::nonce_only),
            origin: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 10), 40_000),
            src: server_link_local(Ipv4Addr::new(198, 51, 100, 1)),
            dst: to,
            primary: Ipv4Addr::new(198, 51, 100, 1),
            mtu: Some(1280),
        };
        let mut b = vec![0u8; p.buffer_len()];
        p.emit(&mut b).unwrap();
        b
    }

    #[test]
    fn answers_are_validated_with_the_cores_parsers() {
        let to = LL_WINDOWS_RESTRICTED;
        let ra_expect = Expect::Advertisement { to };
        let nonce = KEY.encode(1, 2, 3);
        assert_eq!(answer_nonce(&ra(Some(nonce), to), ra_expect), Ok(nonce));
        let bad = |data: &[u8], expect| answer_nonce(data, expect).unwrap_err().0;
        assert_eq!(bad(&ra(None, to), ra_expect), "no authentication header");
        assert_eq!(
            bad(&ra(Some(nonce), LL_XP_RESTRICTED), ra_expect),
            "router advertisement to another address"
        );
        let mut corrupt = ra(Some(nonce), to);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert_eq!(bad(&corrupt, ra_expect), "not a router advertisement");
        assert_eq!(bad(&[0x60, 0, 0], ra_expect), "not a Teredo packet");
        // An RS is not an RA, nor an RA an RS.
        let mut t = RsTemplate::new(to, false).unwrap();
        let rs = t.stamp(nonce).to_vec();
        assert_eq!(bad(&rs, ra_expect), "no origin indication");
        assert_eq!(answer_nonce(&rs, Expect::EchoedSolicitation), Ok(nonce));
        assert_eq!(
            bad(&ra(Some(nonce), to), Expect::EchoedSolicitation),
            "not a router solicitation"
        );
    }

    #[test]
    fn only_nonces_we_sent_match() {
        let mut passes = Passes::default();
        assert_eq!(passes.get(1), None);
        let p1 = passes.begin(1_000, 1);
        let p2 = passes.begin(2_000, 2);
        // Client 0 sent 5 RSs, client 1 none, there is no client 2.
        let sent = |c: u32| [5, 0].get(c as usize).copied();
        assert_eq!(
            match_nonce(KEY, KEY.encode(0, 4, p2), &passes, sent),
            Some(Matched {
                client: 0,
                seq: 4,
                sent_ns: 2_000,
                trial: 2
            })
        );
        assert_eq!(
            match_nonce(KEY, KEY.encode(0, 0, p1), &passes, sent).map(|m| m.sent_ns),
            Some(1_000)
        );
        for (client, seq, pass) in [(0, 5, p1), (1, 0, p1), (2, 0, p1), (0, 1, p2 + 1)] {
            assert_eq!(
                match_nonce(KEY, KEY.encode(client, seq, pass), &passes, sent),
                None,
                "client {client} seq {seq} pass {pass}"
            );
        }
        // Another run's key: another client, sequence or pass.
        assert_eq!(
            match_nonce(NonceKey(!KEY.0), KEY.encode(0, 4, p2), &passes, sent),
            None
        );
        // The ring forgets a pass PASSES passes later.
        for _ in 0..PASSES {
            passes.begin(3_000, 3);
        }
        assert_eq!(
            match_nonce(KEY, KEY.encode(0, 0, p1), &passes, sent).map(|m| m.sent_ns),
            Some(3_000),
            "the slot now holds a later pass"
        );
    }
}
