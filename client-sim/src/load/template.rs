//! A captured data packet: what a client's Teredo state machine emitted for one of its
//! load packets (a warm-up probe), as it went on the wire after the NAT model, kept so that
//! the `mmsg` engine can send that client's trial packets without the state machine.
//!
//! The driver does not parse what the core emitted: it built the inner IPv6 packet itself
//! (IPv6 header, ICMPv6 echo or UDP header, then the load [`Stamp`] at [`INNER_PAYLOAD`])
//! and finds it as the tail of the datagram the core output ([`Template::capture`]); the
//! payload offset follows from where that tail starts. Stamping rewrites the 24-byte load
//! header in place and fixes the ICMPv6/UDP checksum incrementally (RFC 1624, [`csum`]):
//! the pseudo-header and everything else are unchanged, so nothing else needs touching.
//! (The ICMPv6 echo sequence field keeps the probe's value: the stamp inside the data is
//! what identifies a packet.)
//!
//! Answers are recognised by [`Template::answer_stamp`]: an IPv6 packet in UDP from the
//! address and port the template goes to (the relay's mapping for this client), an echo
//! reply or UDP datagram, whose load header at the same offset carries the run tag and this
//! client's number. A client behind a NAT model would accept such a datagram: it comes from
//! the very address and port the client sent to, which every filtering behaviour of the
//! model allows by construction (RFC 4787 endpoint-, address- and address-and-port-dependent
//! filtering all pass it). Anything else is handed back to the client's task, which puts it
//! through the NAT model and the state machine as always.

use std::net::SocketAddrV4;

use super::csum;
use super::payload::{Stamp, HEADER_LEN};

/// Offset of the load header in the inner IPv6 packet: IPv6 header (40) + the ICMPv6
/// echo or UDP header (8).
pub const INNER_PAYLOAD: usize = 48;

/// IPv6 next header: ICMPv6.
const ICMPV6: u8 = 58;
/// IPv6 next header: UDP.
const UDP: u8 = 17;
/// ICMPv6 echo reply.
const ECHO_REPLY: u8 = 129;

/// One client's captured data packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// The datagram as the client sent it (UDP payload: the Teredo-encapsulated packet).
    pub datagram: Vec<u8>,
    /// Where it went (the relay's address and port for this client).
    pub to: SocketAddrV4,
    /// The external (post-NAT) address of the mapping socket it went out on.
    pub from: SocketAddrV4,
    /// Offset of the load header in `datagram`.
    payload_at: usize,
    /// Offset of the ICMPv6 / UDP checksum in `datagram`.
    checksum_at: usize,
    /// UDP (a computed 0 goes out as 0xffff) rather than ICMPv6.
    udp: bool,
}

impl Template {
    /// The template for `datagram` (sent from `from` to `to`) when it carries `inner`, the
    /// IPv6 packet this driver built (ICMPv6 echo or UDP, load header at
    /// [`INNER_PAYLOAD`]), as its tail; `None` when it does not.
    pub fn capture(
        datagram: &[u8],
        inner: &[u8],
        from: SocketAddrV4,
        to: SocketAddrV4,
    ) -> Option<Self> {
        if inner.len() < INNER_PAYLOAD + HEADER_LEN || !datagram.ends_with(inner) {
            return None;
        }
        let at = datagram.len() - inner.len();
        let udp = match *inner.get(6)? {
            UDP => true,
            ICMPV6 => false,
            _ => return None,
        };
        Some(Self {
            datagram: datagram.to_vec(),
            to,
            from,
            payload_at: at + INNER_PAYLOAD,
            checksum_at: at + 40 + if udp { 6 } else { 2 },
            udp,
        })
    }

    /// Offset of the load header in the datagram.
    pub fn payload_at(&self) -> usize {
        self.payload_at
    }

    /// Writes `stamp` into the datagram and fixes its checksum (RFC 1624).
    pub fn stamp(&mut self, stamp: Stamp) {
        let (p, c) = (self.payload_at, self.checksum_at);
        let mut old = [0u8; HEADER_LEN];
        old.copy_from_slice(&self.datagram[p..p + HEADER_LEN]);
        stamp.write(&mut self.datagram[p..]);
        let hc = u16::from_be_bytes([self.datagram[c], self.datagram[c + 1]]);
        let mut new = csum::update(hc, &old, &self.datagram[p..p + HEADER_LEN]);
        if self.udp {
            new = csum::udp_wire(new);
        }
        self.datagram[c..c + 2].copy_from_slice(&new.to_be_bytes());
    }

    /// The load header of `data`, received from `from`, when it is an answer to this
    /// client's packets of run `run`: IPv6 in UDP from where the template goes, an ICMPv6
    /// echo reply or a UDP datagram, the run tag and client number at the usual offset.
    /// `None` for anything else (bubbles, router advertisements, ICMPv6 errors, strays).
    pub fn answer_stamp(
        &self,
        from: SocketAddrV4,
        data: &[u8],
        run: u32,
        client: u32,
    ) -> Option<Stamp> {
        if from != self.to || data.first()? >> 4 != 6 {
            return None;
        }
        let inner_ok = match (*data.get(6)?, self.udp) {
            (ICMPV6, false) => *data.get(40)? == ECHO_REPLY,
            (UDP, true) => true,
            _ => false,
        };
        if !inner_ok {
            return None;
        }
        let s = Stamp::read(data.get(INNER_PAYLOAD..)?)?;
        (s.run == run && s.client == client).then_some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netsim::packets::{self, Parsed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    use crate::load::payload::filler;

    const SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0, 0x4136, 0xe378, 0x8000, 0x63bf, 0x3fff, 0xfdd2);
    const DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100);

    /// The ICMPv6 / UDP checksum over the pseudo-header and the upper layer verifies (and
    /// a UDP one is not the "no checksum" 0).
    fn checksum_ok(pkt: &[u8]) -> bool {
        let mut pseudo = pkt[8..40].to_vec();
        pseudo.extend_from_slice(&[0, 0, pkt[4], pkt[5], 0, 0, 0, pkt[6]]);
        let s = u32::from(csum::ones_sum(0, &pseudo));
        let zero = pkt[6] == UDP && pkt[46..48] == [0, 0];
        csum::ones_sum(s, &pkt[40..]) == 0xffff && !zero
    }

    fn ends() -> (SocketAddrV4, SocketAddrV4) {
        (
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 40_000),
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 99), 3544),
        )
    }

    fn stamp(seq: u32) -> Stamp {
        Stamp {
            run: 0xfeed,
            client: 7,
            trial: 2,
            seq,
            sent_ns: 1_000_000 + u64::from(seq),
        }
    }

    fn probe(udp: bool) -> Vec<u8> {
        let mut payload = filler(100);
        stamp(0).write(&mut payload);
        if udp {
            packets::udp_datagram(
                SocketAddrV6::new(SRC, 40_000, 0, 0),
                SocketAddrV6::new(DST, 7, 0, 0),
                &payload,
            )
        } else {
            packets::echo_request(SRC, DST, 7, 0, &payload)
        }
        .unwrap()
    }

    #[test]
    fn stamped_packets_parse_with_valid_checksums() {
        for udp in [false, true] {
            let inner = probe(udp);
            let (from, to) = ends();
            // A prefix before the IPv6 packet (an origin indication, say) is skipped.
            let mut datagram = vec![0u8, 0, 1, 2, 3, 4, 5, 6];
            datagram.extend_from_slice(&inner);
            let mut t = Template::capture(&datagram, &inner, from, to).unwrap();
            assert_eq!(t.payload_at(), 8 + INNER_PAYLOAD);
            for seq in [1, 2, 0xffff_fffe, 3] {
                t.stamp(stamp(seq));
                // etherparse (through netsim) checks the checksum over the whole packet.
                let pkt = &t.datagram[8..];
                let data = match packets::parse(pkt) {
                    Some(Parsed::Echo { data, .. }) => data,
                    Some(Parsed::Udp { payload, .. }) => payload,
                    other => panic!("{other:?}"),
                };
                assert_eq!(Stamp::read(data), Some(stamp(seq)));
                assert!(checksum_ok(pkt), "udp {udp} seq {seq}");
                assert_eq!(&data[HEADER_LEN..], &filler(100)[HEADER_LEN..]);
            }
        }
    }

    #[test]
    fn capture_needs_our_packet_as_the_tail() {
        let inner = probe(false);
        let (from, to) = ends();
        let mut other = inner.clone();
        other[60] ^= 1;
        assert!(Template::capture(&other, &inner, from, to).is_none());
        assert!(Template::capture(&inner[1..], &inner, from, to).is_none());
        assert!(Template::capture(&inner[..40], &inner[..40], from, to).is_none());
        let mut bubble = inner.clone();
        bubble[6] = 59;
        assert!(Template::capture(&bubble, &bubble, from, to).is_none());
    }

    #[test]
    fn answers_are_recognised_by_source_kind_and_tag() {
        let (from, to) = ends();
        let icmp = Template::capture(&probe(false), &probe(false), from, to).unwrap();
        let reply = packets::answer(&icmp.datagram, false).unwrap();
        assert_eq!(icmp.answer_stamp(to, &reply, 0xfeed, 7), Some(stamp(0)));
        // Another source, run or client; the request itself; a bubble.
        let elsewhere = SocketAddrV4::new(*to.ip(), 3545);
        assert_eq!(icmp.answer_stamp(elsewhere, &reply, 0xfeed, 7), None);
        assert_eq!(icmp.answer_stamp(to, &reply, 0xbeef, 7), None);
        assert_eq!(icmp.answer_stamp(to, &reply, 0xfeed, 8), None);
        assert_eq!(icmp.answer_stamp(to, &icmp.datagram, 0xfeed, 7), None);
        let mut bubble = vec![0x60u8, 0, 0, 0, 0, 0, 59, 64];
        bubble.resize(40, 0);
        assert_eq!(icmp.answer_stamp(to, &bubble, 0xfeed, 7), None);
        assert_eq!(icmp.answer_stamp(to, &reply[..60], 0xfeed, 7), None);
        let udp = Template::capture(&probe(true), &probe(true), from, to).unwrap();
        let echoed = packets::answer(&udp.datagram, true).unwrap();
        assert_eq!(udp.answer_stamp(to, &echoed, 0xfeed, 7), Some(stamp(0)));
        assert_eq!(
            udp.answer_stamp(to, &reply, 0xfeed, 7),
            None,
            "ICMPv6 to a UDP client"
        );
    }
}
