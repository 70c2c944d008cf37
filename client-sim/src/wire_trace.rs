//! What a real-socket run (`qualify`, `ping`) exchanged: every datagram the driver sent or
//! read, with its time, direction, the remote address and its fate inside the host (sent,
//! filtered by the in-process NAT model, refused by the client), and the client's events.
//! `--html` draws it as a ladder diagram; the sim's journal cannot, since nothing here is
//! simulated but the NAT.
//!
//! Bounded: past [`MAX_TRACE`] datagrams (and as many events) the rest is only counted.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use netsim::sim::{Fate, Hop, JournalEntry, Node};
use teredo::addr::TEREDO_PORT;
use teredo::client::Event;

use crate::lab::ScenarioJournal;

/// Most datagrams (and events) kept; later ones are counted in [`WireTrace::unrecorded`].
pub const MAX_TRACE: usize = 4096;

/// Which way a datagram went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to `remote`.
    Out,
    /// From `remote` to the client.
    In,
}

/// One datagram on a real socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireDatagram {
    /// Since the trace started.
    pub at: Duration,
    /// Which way.
    pub direction: Direction,
    /// The client's own address (virtual behind the NAT model).
    pub client: SocketAddrV4,
    /// The real socket's address (the NAT mapping's external address behind the model).
    pub socket: SocketAddrV4,
    /// The other end.
    pub remote: SocketAddrV4,
    /// Behind the model: this datagram opened a new mapping (and its socket).
    pub new_mapping: bool,
    /// Why it went no further inside this host (NAT filter, client refusal); `None`: it was
    /// sent, or handed to the client and accepted.
    pub dropped: Option<(DropSite, String)>,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// Where inside the host a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropSite {
    /// The in-process NAT model.
    Nat,
    /// The client state machine.
    Client,
}

/// The trace of one run; see the module documentation.
#[derive(Clone, Debug)]
pub struct WireTrace {
    start: Instant,
    /// The datagrams, in order.
    pub datagrams: Vec<WireDatagram>,
    /// The client's events with their times.
    pub events: Vec<(Duration, Event)>,
    /// Datagrams and events past [`MAX_TRACE`], not kept.
    pub unrecorded: u64,
    /// The client sits behind the in-process NAT model.
    pub behind_nat: bool,
}

impl WireTrace {
    /// An empty trace starting at `start`.
    pub fn new(start: Instant, behind_nat: bool) -> Self {
        Self {
            start,
            datagrams: Vec::new(),
            events: Vec::new(),
            unrecorded: 0,
            behind_nat,
        }
    }

    fn since(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.start)
    }

    /// Records a datagram seen at `now` (`at` is overwritten).
    pub fn datagram(&mut self, now: Instant, mut d: WireDatagram) {
        if self.datagrams.len() >= MAX_TRACE {
            self.unrecorded += 1;
            return;
        }
        d.at = self.since(now);
        self.datagrams.push(d);
    }

    /// Records a datagram the client sent to `remote` (or that the NAT model dropped).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sent(
        &mut self,
        now: Instant,
        client: SocketAddrV4,
        socket: SocketAddrV4,
        remote: SocketAddrV4,
        new_mapping: bool,
        dropped: Option<(DropSite, String)>,
        payload: &[u8],
    ) {
        self.record(
            now,
            Direction::Out,
            client,
            socket,
            remote,
            new_mapping,
            dropped,
            payload,
        );
    }

    /// Records a datagram from `remote` read on `socket`, and what became of it.
    pub(crate) fn received(
        &mut self,
        now: Instant,
        client: SocketAddrV4,
        socket: SocketAddrV4,
        remote: SocketAddrV4,
        dropped: Option<(DropSite, String)>,
        payload: &[u8],
    ) {
        self.record(
            now,
            Direction::In,
            client,
            socket,
            remote,
            false,
            dropped,
            payload,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        now: Instant,
        direction: Direction,
        client: SocketAddrV4,
        socket: SocketAddrV4,
        remote: SocketAddrV4,
        new_mapping: bool,
        dropped: Option<(DropSite, String)>,
        payload: &[u8],
    ) {
        if self.datagrams.len() >= MAX_TRACE {
            self.unrecorded += 1;
            return;
        }
        self.datagram(
            now,
            WireDatagram {
                at: Duration::ZERO,
                direction,
                client,
                socket,
                remote,
                new_mapping,
                dropped,
                payload: payload.to_vec(),
            },
        );
    }

    /// Records a client event seen at `now`.
    pub fn event(&mut self, now: Instant, e: Event) {
        if self.events.len() >= MAX_TRACE {
            self.unrecorded += 1;
            return;
        }
        let at = self.since(now);
        self.events.push((at, e));
    }

    /// The trace as a ladder's journal, with its lanes: the client, the NAT model if any,
    /// the server's primary and secondary address (port 3544), then one lane per other
    /// remote address in order of appearance; `roles` names known ones (the relay, a peer).
    pub fn journal(
        &self,
        server: Ipv4Addr,
        secondary: Ipv4Addr,
        roles: &[(SocketAddrV4, Role)],
    ) -> (ScenarioJournal, Vec<(Node, String)>) {
        let primary = SocketAddrV4::new(server, TEREDO_PORT);
        let secondary = SocketAddrV4::new(secondary, TEREDO_PORT);
        let mut lanes = vec![(Node::Client(0), "client".to_owned())];
        if self.behind_nat {
            lanes.push((Node::Nat(0), "NAT\n(in-process model)".to_owned()));
        }
        lanes.push((Node::ServerPrimary, format!("server primary\n{primary}")));
        lanes.push((
            Node::ServerSecondary,
            format!("server secondary\n{secondary}"),
        ));
        let mut others: Vec<(SocketAddrV4, Node)> = Vec::new();
        let mut node_of = |a: SocketAddrV4, lanes: &mut Vec<(Node, String)>| -> Node {
            if a == primary {
                return Node::ServerPrimary;
            }
            if a == secondary {
                return Node::ServerSecondary;
            }
            if let Some((_, n)) = others.iter().find(|(o, _)| *o == a) {
                return *n;
            }
            let role = roles.iter().find(|(r, _)| *r == a).map(|(_, r)| *r);
            // The relay has a lane of its own; every other host is a numbered "client"
            // lane of the ladder (drawn like the lab's peer).
            let node = match role {
                Some(Role::Relay) if !others.iter().any(|(_, n)| *n == Node::Relay) => Node::Relay,
                _ => Node::Client(others.len() + 1),
            };
            let name = match role {
                Some(Role::Relay) => format!("relay\n{a}"),
                Some(Role::Peer) => format!("peer\n{a}"),
                None => format!("host\n{a}"),
            };
            others.push((a, node));
            lanes.push((node, name));
            node
        };
        let mut entries = Vec::with_capacity(self.datagrams.len());
        for d in &self.datagrams {
            let remote = node_of(d.remote, &mut lanes);
            let inner = self.behind_nat.then_some(d.client);
            let dropped = |site: DropSite, reason: &str| Fate::Dropped {
                at: d.at,
                node: match site {
                    DropSite::Nat => Node::Nat(0),
                    DropSite::Client => Node::Client(0),
                },
                reason: reason.to_owned(),
            };
            let hop = match d.direction {
                Direction::Out => Hop {
                    at: d.at,
                    from_node: Node::Client(0),
                    inner_from: inner,
                    from: Some(d.socket),
                    to: Some(d.remote),
                    new_mapping: d.new_mapping,
                    native: false,
                    payload: d.payload.clone(),
                    fate: match &d.dropped {
                        Some((site, reason)) => dropped(*site, reason),
                        // Sent on the wire: what the remote did with it is not seen here.
                        None => Fate::Delivered {
                            at: d.at,
                            node: remote,
                            inner_to: None,
                        },
                    },
                },
                Direction::In => Hop {
                    at: d.at,
                    from_node: remote,
                    inner_from: None,
                    from: Some(d.remote),
                    to: Some(d.socket),
                    new_mapping: false,
                    native: false,
                    payload: d.payload.clone(),
                    fate: match &d.dropped {
                        Some((site, reason)) => dropped(*site, reason),
                        None => Fate::Delivered {
                            at: d.at,
                            node: Node::Client(0),
                            inner_to: inner,
                        },
                    },
                },
            };
            entries.push(JournalEntry::Hop(hop));
        }
        let mut behind_nat = vec![self.behind_nat];
        behind_nat.resize(others.len() + 1, false);
        let mut events = vec![self.events.clone()];
        events.resize(others.len() + 1, Vec::new());
        let journal = ScenarioJournal {
            entries,
            events,
            behind_nat,
        };
        (journal, lanes)
    }
}

/// What a remote address is, when the run knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The relay that answered the direct connectivity test.
    Relay,
    /// A Teredo peer's mapping.
    Peer,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn dg(direction: Direction, remote: &str, dropped: Option<(DropSite, String)>) -> WireDatagram {
        WireDatagram {
            at: Duration::ZERO,
            direction,
            client: sa("10.0.0.2:5000"),
            socket: sa("198.51.100.10:5000"),
            remote: sa(remote),
            new_mapping: false,
            dropped,
            payload: vec![0; 4],
        }
    }

    #[test]
    fn lanes_and_fates() {
        let t0 = Instant::now();
        let mut t = WireTrace::new(t0, true);
        t.datagram(t0, dg(Direction::Out, "198.51.100.1:3544", None));
        let filtered = Some((DropSite::Nat, "filtered by the NAT".to_owned()));
        t.datagram(
            t0 + Duration::from_millis(5),
            dg(Direction::In, "198.51.100.2:3544", filtered),
        );
        t.datagram(t0, dg(Direction::In, "192.0.2.9:3544", None));
        t.datagram(t0, dg(Direction::In, "192.0.2.7:40000", None));
        let roles = [(sa("192.0.2.9:3544"), Role::Relay)];
        let (j, lanes) = t.journal(
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv4Addr::new(198, 51, 100, 2),
            &roles,
        );
        let names: Vec<&str> = lanes.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "client",
                "NAT\n(in-process model)",
                "server primary\n198.51.100.1:3544",
                "server secondary\n198.51.100.2:3544",
                "relay\n192.0.2.9:3544",
                "host\n192.0.2.7:40000",
            ]
        );
        assert_eq!(j.behind_nat, [true, false, false]);
        let JournalEntry::Hop(h) = &j.entries[1] else {
            panic!()
        };
        assert_eq!(h.from_node, Node::ServerSecondary);
        assert_eq!(h.at, Duration::from_millis(5));
        assert!(
            matches!(&h.fate, Fate::Dropped { node: Node::Nat(0), reason, .. } if reason == "filtered by the NAT")
        );
        let JournalEntry::Hop(h) = &j.entries[0] else {
            panic!()
        };
        assert_eq!(h.inner_from, Some(sa("10.0.0.2:5000")));
        assert!(matches!(
            h.fate,
            Fate::Delivered {
                node: Node::ServerPrimary,
                ..
            }
        ));
    }

    #[test]
    fn bounded() {
        let t0 = Instant::now();
        let mut t = WireTrace::new(t0, false);
        for _ in 0..MAX_TRACE + 3 {
            t.datagram(t0, dg(Direction::Out, "198.51.100.1:3544", None));
        }
        assert_eq!((t.datagrams.len(), t.unrecorded), (MAX_TRACE, 3));
    }
}
