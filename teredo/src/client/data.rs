//! The data path (RFC 4380 §5.2.3, §5.2.4, §5.2.9; RFC 6081 §5.2): application packets sent
//! to peers, and datagrams received from the server, peers and relays.

use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::Instant;

use crate::addr::{is_ipv6_non_global, is_link_local, TeredoAddr};
use crate::wire::ipv6::Echo;
use crate::wire::packet::{
    check_ipv6_exact_len, ipv6_dst, ipv6_src, IPV6_HEADER_LEN, MAX_UDP_PAYLOAD, NEXT_HEADER_ICMPV6,
};
use crate::wire::TeredoPacket;
use crate::DropReason;

use super::bubbles::{bubble_bytes, trailer_nonce};
use super::peers::EchoTest;
use super::*;
use crate::io::Kind;
use crate::peer::{self, Gate};

/// ICMPv6 echo reply type.
pub(super) const ICMPV6_ECHO_REPLY: u8 = 129;
/// IPv6 extension headers walked looking for a routing header.
pub(super) const MAX_EXTENSION_HEADERS: usize = 8;

/// True when the packet (or its extension header chain, as far as it can be read) carries
/// a routing header.
pub(super) fn has_routing_header(ipv6: &[u8]) -> bool {
    let Some(&first) = ipv6.get(6) else {
        return false;
    };
    let (mut nh, mut off) = (first, IPV6_HEADER_LEN);
    for _ in 0..MAX_EXTENSION_HEADERS {
        let len = match nh {
            43 => return true,
            // Hop-by-hop, destination options: (Hdr Ext Len + 1) × 8.
            0 | 60 => ipv6.get(off + 1).map(|l| (usize::from(*l) + 1) * 8),
            // Fragment header: 8 bytes.
            44 => Some(8),
            // Authentication header: (Payload Len + 2) × 4.
            51 => ipv6.get(off + 1).map(|l| (usize::from(*l) + 2) * 4),
            _ => return false,
        };
        let (Some(len), Some(&next)) = (len, ipv6.get(off)) else {
            return false;
        };
        nh = next;
        off += len;
    }
    false
}

/// True when `ipv6` is an ICMPv6 echo reply (valid checksum) whose data is the test's nonce.
pub(super) fn answers_echo_test(ipv6: &[u8], test: Option<EchoTest>) -> bool {
    let Some(test) = test else {
        return false;
    };
    ipv6.get(6) == Some(&NEXT_HEADER_ICMPV6)
        && ipv6.get(IPV6_HEADER_LEN) == Some(&ICMPV6_ECHO_REPLY)
        && Echo::parse(ipv6).is_ok_and(|e| e.reply && e.data == test.nonce)
}

impl Client {
    /// Sends an IPv6 packet of the application (RFC 4380 §5.2.4): `packet` is a complete
    /// IPv6 packet whose source is the client's Teredo address. `Ok(`[`Handled::Sent`]`)`
    /// when it was sent (waiting in [`Self::poll_output`]), `Ok(`[`Handled::Queued`]`)` when
    /// it was queued while its destination is being reached (see the module documentation);
    /// `Err` when it was dropped, with the counted reason:
    /// `not_qualified` (no address; a dormant client wakes up and qualifies again),
    /// wire reasons, `too_large`, `wrong_source`, `not_allowed` (to our own address),
    /// `non_global_destination`, `non_global_mapped_address` / `non_global_server` (a Teredo
    /// destination embedding a non-global IPv4, RFC 4380 §5.2.4), `peer_unreachable` (no
    /// answer to the probes, until the window ends), `queue_full`, `global_queue_full`,
    /// `peer_table_full`, `output_queue_full`. Counts as activity ([`Self::note_activity`]).
    pub fn handle_ipv6(&mut self, now: Instant, packet: &[u8]) -> Result<Handled, DropReason> {
        let r = self.transmit_ipv6(now, packet);
        if let Err(reason) = r {
            self.counters.count_drop(reason, 1);
            tracing::debug!(
                reason = reason.as_str(),
                len = packet.len(),
                "client send drop"
            );
        }
        r
    }

    fn transmit_ipv6(&mut self, now: Instant, packet: &[u8]) -> Result<Handled, DropReason> {
        self.note_activity(now);
        let (State::Qualified, Some(own)) = (self.state, self.address) else {
            return Err(DropReason::NotQualified);
        };
        if packet.len() < IPV6_HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let version = packet.first().map_or(0, |b| b >> 4);
        if version != 6 {
            return Err(DropReason::BadIpVersion);
        }
        check_ipv6_exact_len(packet)?;
        if packet.len() > MAX_UDP_PAYLOAD {
            return Err(DropReason::TooLarge);
        }
        let (src, dst) = (ipv6_src(packet), ipv6_dst(packet));
        if src != own {
            return Err(DropReason::WrongSource);
        }
        if dst == own {
            return Err(DropReason::NotAllowed);
        }
        if is_ipv6_non_global(&dst) {
            return Err(DropReason::NonGlobalDestination);
        }
        let teredo = TeredoAddr::from_ipv6(&dst);
        if let Some(t) = &teredo {
            // RFC 4380 §5.2.4 cases 4/5: never send to a non-global IPv4 (or port 0).
            peer::check_teredo_destination(t)?;
        }
        // Case 1: trusted and valid.
        let validity = self.cfg.peer_validity;
        let target = self.peers.get(&dst).and_then(|p| {
            let m = p.mapping.filter(|_| p.valid(now, validity))?;
            Some(self.send_target(&dst, p.symmetric, m))
        });
        if let Some(p) = self.peers.get_mut(&dst) {
            if let Some(to) = target {
                p.last_tx = Some(now);
                p.last_used = now;
                // RFC 6081 §5.4.4.1, §5.4.4.5: from the random port the peer was reached on.
                self.ports_data_sent(now, &dst);
                let sock = self.send_local(&dst);
                self.push_output_from(sock, to, Kind::Data, packet.to_vec())?;
                self.counters.ipv6_sent += 1;
                return Ok(Handled::Sent);
            }
        }
        // Cases 2 and 5: queue, and reach the peer first.
        self.hold(now, dst, teredo, packet)?;
        Ok(Handled::Queued)
    }

    /// A token of the budget of answers to relayed bubbles (the shared token bucket).
    pub(super) fn take_reply_token(&mut self, now: Instant) -> bool {
        peer::take_token(
            &mut self.reply_tokens,
            &mut self.reply_last,
            REPLY_BUBBLE_RATE,
            REPLY_BUBBLE_BURST,
            now,
        )
    }

    /// A datagram of the data path (the client is qualified).
    pub(super) fn data_packet(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        pkt: &TeredoPacket<'_>,
        from_server: bool,
    ) -> Result<Handled, DropReason> {
        let Some(own) = self.address else {
            return Err(DropReason::NotQualified);
        };
        if pkt.dst() != own {
            return Err(DropReason::NotOurAddress);
        }
        let bubble = pkt.is_bubble();
        if !bubble && is_link_local(&pkt.src()) {
            return Err(DropReason::LinkLocalSource);
        }
        if has_routing_header(pkt.ipv6) {
            return Err(DropReason::RoutingHeader);
        }
        if from_server {
            return self.relayed_by_server(now, pkt, own, bubble);
        }
        // Only servers insert origin indications.
        if pkt.origin.is_some() {
            return Err(DropReason::UnexpectedOrigin);
        }
        // RFC 6081 §5.4.4.5, second rule: a re-mapped peer is probed again.
        if bubble && self.ports_remapped(now, pkt.src(), from) {
            return Ok(Handled::Bubble);
        }
        let r = self.direct(now, from, pkt, bubble);
        if bubble && r.is_ok() {
            // RFC 6081 §5.4.4.5: reached on the primary port, the random port closes.
            self.ports_primary_rx(&pkt.src());
        }
        if r == Ok(Handled::Bubble) {
            // RFC 6081 §5.7.4.2: a solicitation is answered.
            self.nd_option_received(now, from, pkt);
        }
        r
    }

    /// A packet the server relayed (RFC 4380 §5.2.3, first part): answer bubbles with a
    /// direct bubble to the origin indication; deliver other packets only when the server
    /// vouches for their source.
    pub(super) fn relayed_by_server(
        &mut self,
        now: Instant,
        pkt: &TeredoPacket<'_>,
        own: Ipv6Addr,
        bubble: bool,
    ) -> Result<Handled, DropReason> {
        let src = pkt.src();
        let teredo = TeredoAddr::from_ipv6(&src);
        if !bubble {
            // The server checked that a Teredo source's embedded mapping is where the packet
            // came from (RFC 4380 §5.3.1 case 5) and told us where that was.
            return match (teredo, pkt.origin) {
                (Some(t), Some(o)) if t.mapped == o.0 => {
                    self.deliver(now, pkt.ipv6).map(|()| Handled::Delivered)
                }
                _ => Err(DropReason::UntrustedSource),
            };
        }
        let target = match (pkt.origin, teredo) {
            (Some(o), _) => o.0,
            (None, Some(t)) => t.mapped,
            (None, None) => return Err(DropReason::MissingOrigin),
        };
        if !peer::is_usable_mapping(target) {
            return Err(DropReason::NonGlobalMappedAddress);
        }
        let nonce = trailer_nonce(pkt.trailers);
        // RFC 6081 §5.6.4.2: a malformed Alternate Address trailer drops the bubble.
        let alternates = self.relayed_alternates(pkt.trailers)?;
        self.counters.bubbles_received += 1;
        let symmetric = self.cfg.symmetric_support;
        let validity = self.cfg.peer_validity;
        let mut reply_to = target;
        let mut answer_indirectly = false;
        let mut symmetric_peer = false;
        if let Some(t) = teredo {
            // RFC 6081 §5.2.4.3: remember (or clear) the peer's nonce.
            if self.ensure_peer(now, src, Some(t)).is_ok() {
                // RFC 6081 §5.4.4.4: its random port.
                self.ports_indirect_received(now, &src, pkt.trailers);
                if let Some(p) = self.peers.get_mut(&src) {
                    p.nonce_received = nonce;
                    p.last_used = now;
                    // A peer behind a symmetric NAT is reachable only at the mapping it
                    // proved to us, not at the one the server saw.
                    if let (true, Some(m)) = (p.trusted, p.mapping) {
                        reply_to = m;
                    }
                    symmetric_peer = p.symmetric;
                    // RFC 6081 §3.1, second case: a peer behind a symmetric NAT cannot
                    // receive our direct answer at its embedded mapping, so also answer
                    // with an indirect bubble (a probe exchange of our own, paced as usual,
                    // carrying our nonce) unless we trust it or already probe it.
                    answer_indirectly = symmetric
                        && !p.valid(now, validity)
                        && p.phase == PeerPhase::Idle
                        && p.local_seen.is_none();
                }
            }
        }
        if let (Some(_), Some(alt)) = (teredo, alternates) {
            self.bubble_alternates(now, src, &alt, nonce, reply_to);
        }
        if answer_indirectly {
            if let Some(p) = self.peers.get_mut(&src) {
                p.phase = PeerPhase::Probing;
                p.attempts = 0;
            }
            match self.gate(&src, now) {
                // The probe's direct bubble goes where the answer would, with the echo.
                Gate::Now => {
                    self.send_probe(now, src);
                    return Ok(Handled::RelayedBubble);
                }
                Gate::At(t) => self.set_deadline(src, Some(t)),
                Gate::Exhausted => {
                    if let Some(p) = self.peers.get_mut(&src) {
                        p.phase = PeerPhase::Idle;
                    }
                }
            }
        }
        // RFC 6081 §5.3.4.2: a symmetric peer at its embedded mapping, under UPnP.
        let reply_to = self.send_target(&src, symmetric_peer, reply_to);
        // RFC 4380 §5.2.4 case 3: a local peer is answered on the LAN, with a discovery
        // bubble so that it learns our LAN address too (its NAT may not hairpin).
        let local = self.fresh_local(&src, now);
        let reply_to = local.unwrap_or(reply_to);
        if !self.take_reply_token(now) {
            self.counters.reply_bubbles_suppressed += 1;
            return Ok(Handled::RelayedBubble);
        }
        if local.is_some() {
            self.send_discovery();
        }
        // RFC 6081 §5.2.4.2: the answer to an indirect bubble echoes its nonce.
        let echo = if self.cfg.symmetric_support {
            nonce
        } else {
            None
        };
        // RFC 6081 §5.4 (`random_port`): from the random port the peer is reached on, and
        // an answer from (or to) a random port while it is not trusted.
        let sock = self.send_local(&src);
        let extra = self.ports_answer(src, own, echo);
        if self
            .push_output_from(sock, reply_to, Kind::Bubble, bubble_bytes(own, src, echo))
            .is_ok()
        {
            self.counters.reply_bubbles_sent += 1;
        } else {
            self.counters.count_drop(DropReason::OutputQueueFull, 1);
        }
        if let Some(extra) = extra {
            self.push_extras(vec![extra]);
        }
        Ok(Handled::RelayedBubble)
    }

    /// A packet straight from a peer or a relay (RFC 4380 §5.2.3 cases 1–3, 6; RFC 6081
    /// §5.2.4.4).
    pub(super) fn direct(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        pkt: &TeredoPacket<'_>,
        bubble: bool,
    ) -> Result<Handled, DropReason> {
        let src = pkt.src();
        // RFC 6081 §5.3.4.1: a direct bubble from another mapping than its embedded one
        // comes from behind a symmetric NAT.
        if let (true, Some(t), Some(p)) = (
            bubble,
            TeredoAddr::from_ipv6(&src),
            self.peers.get_mut(&src),
        ) {
            // A LAN address reached by Hairpinning (§5.6) is no NAT mapping at all.
            let lan = self.cfg.hairpinning && !peer::is_usable_mapping(from);
            if t.mapped != from && p.local != Some(from) && !lan {
                p.symmetric = true;
            }
        }
        if let Some(p) = self.peers.get(&src) {
            // Case 1: trusted, from its mapping.
            if p.trusted && p.mapping == Some(from) {
                // A late answer to our own echo test is ours, not the application's.
                let swallow = bubble || answers_echo_test(pkt.ipv6, p.echo);
                self.trust(now, src, from);
                if bubble {
                    self.counters.bubbles_received += 1;
                }
                return if bubble {
                    Ok(Handled::Bubble)
                } else if swallow {
                    Ok(Handled::EchoReply)
                } else {
                    self.deliver(now, pkt.ipv6).map(|()| Handled::Delivered)
                };
            }
            // Case 2: the echo reply of our direct IPv6 connectivity test.
            if answers_echo_test(pkt.ipv6, p.echo) {
                if !peer::is_usable_mapping(from) {
                    return Err(DropReason::NonGlobalMappedAddress);
                }
                self.counters.echo_tests_ok += 1;
                self.trust(now, src, from);
                return Ok(Handled::EchoReply);
            }
        }
        let Some(t) = TeredoAddr::from_ipv6(&src) else {
            // Case 6: no echo test in answer to an unknown source (CVE-2006-6266).
            return Err(DropReason::UntrustedSource);
        };
        let accepted = if t.mapped == from {
            // Case 3 (CVE-2006-6264: never trust a non-global embedded IPv4).
            if !peer::is_usable_mapping(from) {
                return Err(DropReason::NonGlobalMappedAddress);
            }
            self.ensure_peer(now, src, Some(t))?;
            true
        } else if self.fresh_local(&src, now) == Some(from) {
            // RFC 4380 §5.2.3 case 5: from the local address of a local peer.
            true
        } else {
            // RFC 6081 §5.2.4.4, §5.6.4.3: a direct bubble echoing the nonce of our
            // indirect bubble.
            bubble && self.nonce_accepts(&src, from, pkt.trailers)
        };
        if !accepted {
            return Err(DropReason::SpoofedSource);
        }
        self.trust(now, src, from);
        if bubble {
            self.counters.bubbles_received += 1;
            return Ok(Handled::Bubble);
        }
        self.deliver(now, pkt.ipv6).map(|()| Handled::Delivered)
    }
}
