//! The native IPv6 segment: what the server forwards natively, the echo host, and the relay
//! (2001::/32 on this side, its IPv4 address on the Internet).

use std::net::{Ipv6Addr, SocketAddrV4};

use teredo::addr::is_teredo;
use teredo::io::Output;
use teredo::relay::Handled as RelayHandled;
use teredo::DropReason;

use super::journal::Via;
use super::{Datagram, Delivery, Fate, Hop, Node, Sender, Sim};
use crate::packets;
use crate::pcap::MAX_UDP_PAYLOAD;

impl Sim {
    /// Puts a packet on the native segment: logged, captured, delivered a latency later.
    pub(super) fn native_send(&mut self, from_node: Node, packet: Vec<u8>) {
        self.counters.native_packets += 1;
        let at = self.elapsed();
        let index = if self.journal.is_some() {
            self.journal_hop(Hop {
                at,
                from_node,
                inner_from: None,
                from: None,
                to: None,
                new_mapping: false,
                native: true,
                payload: packet.clone(),
                fate: Fate::InFlight,
            })
        } else {
            None
        };
        if let Some(pcap) = self.pcap.as_mut() {
            pcap.record_ipv6(at, &packet);
        }
        let arrive = self.now + self.latency;
        self.push(arrive, Delivery::Native(packet, index));
    }

    /// A native packet reaches the echo host, the relay (2001::/32), or nobody.
    pub(super) fn native_arrive(&mut self, packet: &[u8], index: Option<usize>) {
        let Some(dst) = packet
            .get(24..40)
            .and_then(|d| <[u8; 16]>::try_from(d).ok())
            .map(Ipv6Addr::from)
        else {
            self.counters.native_no_route += 1;
            self.journal_fate(index, self.dropped(Node::Nowhere, "malformed"));
            return;
        };
        if let Some(h) = self.echo_host.as_mut().filter(|h| h.addr == dst) {
            match packets::parse(packet) {
                Some(packets::Parsed::Echo { reply: false, .. }) => h.echo_requests += 1,
                Some(packets::Parsed::Echo { reply: true, .. }) => h.echo_replies += 1,
                Some(packets::Parsed::Udp { .. }) => h.udp_datagrams += 1,
                _ => {}
            }
            let up = h.up;
            let answer = if up {
                packets::answer(packet, true)
            } else {
                None
            };
            if answer.is_some() {
                h.answered += 1;
            }
            let fate = if up {
                self.delivered(Node::NativeHost, None)
            } else {
                self.dropped(Node::NativeHost, "host down")
            };
            self.journal_fate(index, fate);
            if let Some(a) = answer {
                self.native_send(Node::NativeHost, a);
            }
            return;
        }
        let now = self.now;
        match self.relay.as_mut() {
            Some(r) if is_teredo(&dst) => {
                // Refusals are counted by the relay (`RelayCounters::dropped`).
                let r = r.relay.handle_ipv6(now, packet);
                let fate = match &r {
                    Ok(_) => self.delivered(Node::Relay, None),
                    Err(reason) => self.dropped(Node::Relay, reason),
                };
                self.journal_fate(index, fate);
                self.drain_relay();
                self.relay_in_place(r, packet);
            }
            _ => {
                self.counters.native_no_route += 1;
                self.journal_fate(index, self.dropped(Node::Nowhere, "no route"));
            }
        }
    }

    /// Sends what the relay produced: datagrams on the Internet, packets on the native side.
    pub(super) fn drain_relay(&mut self) {
        let mut buf = std::mem::take(&mut self.server_buf);
        buf.resize(MAX_UDP_PAYLOAD, 0);
        while let Some(r) = self.relay.as_mut() {
            let from = r.addr;
            let Some(out) = r.relay.poll_output(&mut buf) else {
                break;
            };
            let bytes = buf.get(..out.len()).unwrap_or_default().to_vec();
            self.relay_send(from, out, bytes);
        }
        self.server_buf = buf;
    }

    /// Sends what the relay forwards out of the input itself (zero copy in a driver; the
    /// contract of [`RelayHandled`]), after its queued outputs.
    pub(super) fn relay_in_place(&mut self, r: Result<RelayHandled, DropReason>, input: &[u8]) {
        let Some(ip) = r.ok().and_then(|h| h.in_place()) else {
            return;
        };
        if let Some(from) = self.relay.as_ref().map(|r| r.addr) {
            self.relay_send(from, ip.output, ip.bytes(input).to_vec());
        }
    }

    fn relay_send(&mut self, from: SocketAddrV4, out: Output, bytes: Vec<u8>) {
        match out {
            Output::Udp { to, .. } => {
                self.launch(
                    Sender::Relay,
                    Datagram {
                        from,
                        to,
                        payload: bytes,
                    },
                    Via::default(),
                );
            }
            _ => self.native_send(Node::Relay, bytes),
        }
    }
}
