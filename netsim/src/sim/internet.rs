//! Routing on the simulated IPv4 Internet: a datagram that arrives reaches the server, the
//! relay, or a client (through its NAT's filtering); what a client sends leaves through its
//! NAT's mapping (or hairpins back inside).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use teredo::io::{Local, Output};

use super::journal::Via;
use super::{
    upnp, Datagram, Delivery, Hop, Node, Sender, Sim, LAN_LATENCY, MAX_DELIVERED_LOG, MAX_DRAIN,
};
use crate::packets;
use crate::pcap::MAX_UDP_PAYLOAD;
use crate::Outbound;
use teredo::client::DISCOVERY_GROUP;

impl Sim {
    fn server_local(&self, ip: Ipv4Addr) -> Option<Local> {
        let cfg = self.server.config();
        if ip == cfg.primary {
            Some(Local::Primary)
        } else if ip == cfg.secondary {
            Some(Local::Secondary)
        } else {
            None
        }
    }

    pub(super) fn arrive(&mut self, d: Datagram, index: Option<usize>) {
        let now = self.now;
        if let Some(local) = self.server_local(*d.to.ip()) {
            let node = self.server_node(*d.to.ip());
            if !self.server_up || d.to.port() != self.server.config().port {
                self.counters.server_unreachable += 1;
                let why = if self.server_up {
                    "port unreachable"
                } else {
                    "server down"
                };
                self.journal_fate(index, self.dropped(node, why));
                return;
            }
            match self.server.handle_udp(now, local, d.from, &d.payload) {
                Ok(handled) => {
                    if let teredo::server::Handled::ForwardedToClient { bubble: true, .. } = handled
                    {
                        self.counters.server_bubbles_relayed += 1;
                    }
                    self.journal_fate(index, self.delivered(node, None));
                    let port = self.server.config().port;
                    let mut buf = std::mem::take(&mut self.server_buf);
                    while let Some(out) = self.server.poll_output(&mut buf) {
                        match out {
                            Output::Udp {
                                local: from_local,
                                to,
                                len,
                                ..
                            } => {
                                let from = SocketAddrV4::new(self.server.address(from_local), port);
                                let payload = buf[..len].to_vec();
                                self.launch(
                                    Sender::Server,
                                    Datagram { from, to, payload },
                                    Via::default(),
                                );
                            }
                            Output::Ipv6 { len, .. } if self.relay.is_some() => {
                                self.native_send(node, buf[..len].to_vec());
                            }
                            Output::Ipv6 { .. } => self.counters.native_discarded += 1,
                            // The server emits no other output.
                            _ => {}
                        }
                    }
                    self.server_buf = buf;
                }
                Err(reason) => {
                    self.journal_fate(index, self.dropped(node, reason));
                    *self
                        .counters
                        .server_dropped
                        .entry(reason.as_str())
                        .or_default() += 1;
                }
            }
            return;
        }
        if let Some(r) = self.relay.as_mut().filter(|r| r.addr == d.to) {
            // Refusals are counted by the relay (`RelayCounters::dropped`).
            let r = r.relay.handle_udp(now, Local::Primary, d.from, &d.payload);
            let fate = match &r {
                Ok(_) => self.delivered(Node::Relay, None),
                Err(reason) => self.dropped(Node::Relay, reason),
            };
            self.journal_fate(index, fate);
            self.drain_relay();
            self.relay_in_place(r, &d.payload);
            return;
        }
        let ip = *d.to.ip();
        let target = self.clients.iter().position(|c| match &c.nat {
            Some(nat) => nat.is_external(ip),
            None => c.lan_of.is_none() && *c.local().ip() == ip,
        });
        let Some(i) = target else {
            self.counters.no_route += 1;
            self.journal_fate(index, self.dropped(Node::Nowhere, "no route"));
            return;
        };
        let inbound = match self.clients[i].nat.as_mut() {
            None => {
                return match self.clients[i].socket(d.to.port()) {
                    Some(local) => self.deliver_inside(i, local, d.from, &d.payload, index),
                    None => {
                        self.counters.no_listener += 1;
                        let fate = self.dropped(Node::Client(i), "port not listening");
                        self.journal_fate(index, fate);
                    }
                };
            }
            Some(nat) => nat.inbound(now, d.to, d.from),
        };
        match inbound {
            // The host behind the mapping: the NAT's owner or another client on its LAN, on
            // its primary socket or one of its extra ports.
            Ok(t) => match self.lan_socket(i, t.internal) {
                Some(Ok((j, local))) if t.delay.is_zero() => {
                    self.deliver_inside(j, local, d.from, &d.payload, index)
                }
                Some(Ok((j, local))) => self.push(
                    now + t.delay,
                    Delivery::Inside {
                        node: j,
                        local,
                        from: d.from,
                        payload: d.payload,
                        journal: index,
                    },
                ),
                Some(Err(j)) => {
                    self.counters.no_listener += 1;
                    let fate = self.dropped(Node::Client(j), "port not listening");
                    self.journal_fate(index, fate);
                }
                None => {
                    self.counters.no_route += 1;
                    let fate = self.dropped(Node::Nat(i), "no host behind the mapping");
                    self.journal_fate(index, fate);
                }
            },
            // Counted by the NAT.
            Err(e) => self.journal_fate(index, self.dropped(Node::Nat(i), e)),
        }
    }

    /// A datagram on the LAN behind a NAT reaches client `j`: a discovery datagram goes to
    /// [`teredo::client::Client::handle_discovery`], a unicast one to `handle_udp`.
    pub(super) fn lan_arrive(
        &mut self,
        j: usize,
        local: Local,
        from: SocketAddrV4,
        payload: &[u8],
        multicast: bool,
    ) {
        let now = self.now;
        let Some(node) = self.clients.get_mut(j) else {
            return;
        };
        // Refusals are counted by the client.
        let _ = if multicast {
            node.client.handle_discovery(now, from, payload)
        } else {
            node.client.handle_udp(now, local, from, payload)
        };
        self.pump_client(j);
    }

    pub(super) fn deliver_inside(
        &mut self,
        i: usize,
        local: Local,
        from: SocketAddrV4,
        payload: &[u8],
        index: Option<usize>,
    ) {
        let now = self.now;
        let Some(node) = self.clients.get_mut(i) else {
            return;
        };
        // Refusals are counted by the client (`ClientCounters::rejected`).
        let r = node.client.handle_udp(now, local, from, payload);
        if index.is_some() {
            let inner = node.nat.is_some().then(|| node.source(local));
            let fate = match r {
                Ok(_) => self.delivered(Node::Client(i), inner),
                Err(reason) => self.dropped(Node::Client(i), reason),
            };
            self.journal_fate(index, fate);
        }
        self.pump_client(i);
    }

    /// Sends whatever client `i` queued, hands its deliveries to the application (which
    /// answers echo requests when it is an echo responder), and collects its events.
    pub(super) fn pump_client(&mut self, i: usize) {
        let now = self.now;
        let elapsed = self.elapsed();
        let mut out: Vec<(Instant, Datagram, Via)> = Vec::new();
        let mut lost: Vec<(SocketAddrV4, SocketAddrV4, Vec<u8>, String)> = Vec::new();
        let mut inside: Vec<(usize, Local, Instant, SocketAddrV4, Vec<u8>)> = Vec::new();
        let mut transmits = Vec::new();
        {
            let Some(node) = self.clients.get_mut(i) else {
                return;
            };
            let mut buf = std::mem::take(&mut self.server_buf);
            buf.resize(MAX_UDP_PAYLOAD, 0);
            // Answers to deliveries may queue more datagrams: drain both until quiet.
            // The client hands out its datagrams before its deliveries, so an answer is
            // sent before the next delivery is read.
            for _ in 0..MAX_DRAIN {
                let n = match node.client.poll_output(&mut buf) {
                    Some(Output::Udp { local, to, len, .. }) => {
                        let bytes = buf.get(..len).unwrap_or_default().to_vec();
                        transmits.push((node.source(local), to, bytes));
                        continue;
                    }
                    Some(Output::Ipv6 { len, .. }) => len,
                    // Performed before this batch's datagrams cross the NAT, so the first
                    // RS already finds the port mapping.
                    Some(Output::Upnp(request)) => {
                        if let Some(answer) = upnp::perform(node.nat.as_mut(), now, request) {
                            node.client.handle_upnp(now, answer);
                        }
                        continue;
                    }
                    Some(_) => continue,
                    None => break,
                };
                let packet = buf.get(..n).unwrap_or_default().to_vec();
                if node.echo_responder {
                    if let Some(answer) = packets::answer(&packet, false) {
                        // Refusals are counted by the client.
                        let _ = node.client.handle_ipv6(now, &answer);
                    }
                }
                if node.delivered.len() < MAX_DELIVERED_LOG {
                    node.delivered.push((elapsed, packet));
                } else {
                    node.delivered_unlogged += 1;
                }
            }
            self.server_buf = buf;
            while let Some(e) = node.client.poll_event() {
                node.events.push((elapsed, e));
            }
        }
        self.route_transmits(i, transmits, &mut out, &mut lost, &mut inside);
        for (inner, to, payload, reason) in lost {
            let fate = self.dropped(Node::Nat(i), reason);
            self.journal_hop(Hop {
                at: elapsed,
                from_node: Node::Client(i),
                inner_from: Some(inner),
                from: None,
                to: Some(to),
                new_mapping: false,
                native: false,
                payload,
                fate,
            });
        }
        for (at, d, via) in out {
            self.send_at(at, Sender::Client(i), d, via);
        }
        for (node, local, at, from, payload) in inside {
            self.push(
                at,
                Delivery::Inside {
                    node,
                    local,
                    from,
                    payload,
                    journal: None,
                },
            );
        }
    }

    /// Routes what client `i` sent (each from its local address: the primary socket's or an
    /// extra port's): to the discovery group, a copy to every other client on its LAN (never
    /// through the NAT); to another client on its LAN, straight there; anything else out
    /// through its NAT (or onto the Internet without one).
    fn route_transmits(
        &mut self,
        i: usize,
        transmits: Vec<(SocketAddrV4, SocketAddrV4, Vec<u8>)>,
        out: &mut Vec<(Instant, Datagram, Via)>,
        lost: &mut Vec<(SocketAddrV4, SocketAddrV4, Vec<u8>, String)>,
        inside: &mut Vec<(usize, Local, Instant, SocketAddrV4, Vec<u8>)>,
    ) {
        let now = self.now;
        let owner = self.nat_owner(i);
        for (local, to, payload) in transmits {
            if *to.ip() == DISCOVERY_GROUP {
                let members = owner.map(|o| self.lan_members(o, i)).unwrap_or_default();
                if members.is_empty() {
                    self.counters.multicast_dropped += 1;
                }
                for j in members {
                    self.counters.lan_multicast += 1;
                    let payload = payload.clone();
                    let lan = Delivery::Lan {
                        node: j,
                        local: Local::Primary,
                        from: local,
                        payload,
                        multicast: true,
                    };
                    self.push(now + LAN_LATENCY, lan);
                }
                continue;
            }
            if let Some((j, sock)) = owner
                .and_then(|o| self.lan_socket(o, to))
                .and_then(Result::ok)
                .filter(|&(j, _)| j != i)
            {
                self.counters.lan_unicast += 1;
                let lan = Delivery::Lan {
                    node: j,
                    local: sock,
                    from: local,
                    payload,
                    multicast: false,
                };
                self.push(now + LAN_LATENCY, lan);
                continue;
            }
            let Some(nat) = owner.and_then(|o| self.clients[o].nat.as_mut()) else {
                let d = Datagram {
                    from: local,
                    to,
                    payload,
                };
                out.push((now, d, Via::default()));
                continue;
            };
            let created = nat.counters().mappings_created;
            let r = nat.outbound(now, local, to);
            let via = Via {
                inner: Some(local),
                new_mapping: nat.counters().mappings_created > created,
            };
            // No `_` arm: `Outbound` is non-exhaustive for other crates only, so a new
            // outcome must be routed here before this crate builds.
            match r {
                Ok(Outbound::Forward(tr)) => {
                    let d = Datagram {
                        from: tr.external,
                        to,
                        payload,
                    };
                    out.push((now + tr.delay, d, via));
                }
                Ok(Outbound::Hairpin(h)) => match owner.and_then(|o| self.lan_socket(o, h.to)) {
                    Some(Ok((j, sock))) => {
                        if j != i {
                            self.counters.hairpinned += 1;
                        }
                        inside.push((j, sock, now + h.delay, h.from, payload));
                    }
                    Some(Err(_)) => self.counters.no_listener += 1,
                    None => {}
                },
                // Counted by the NAT.
                Err(e) => lost.push((local, to, payload, e.to_string())),
            }
        }
    }
}
