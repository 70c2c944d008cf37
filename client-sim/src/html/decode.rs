//! What a datagram means, read with the core's wire module: RS (with its cone bit), RA (with
//! the mapped address of its origin indication), bubble, indirect bubble, echo, data.

use netsim::sim::{Fate, Hop, Node};
use teredo::wire::ipv6::Echo;
use teredo::wire::ndp::{RouterAdvertisement, RouterSolicitation};
use teredo::wire::TeredoPacket;

/// The kind of a datagram: its colour in the ladder and the filter's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Rs,
    Ra,
    Bubble,
    IndirectBubble,
    Echo,
    Data,
    Malformed,
}

impl Kind {
    /// The CSS class suffix.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Rs => "rs",
            Self::Ra => "ra",
            Self::Bubble => "bubble",
            Self::IndirectBubble => "ibubble",
            Self::Echo => "echo",
            Self::Data => "data",
            Self::Malformed => "malformed",
        }
    }
}

/// A datagram's kind and its label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meaning {
    pub(crate) kind: Kind,
    pub(crate) label: String,
}

fn is_server(n: Node) -> bool {
    matches!(n, Node::ServerPrimary | Node::ServerSecondary)
}

/// The node a hop ended at, if it arrived anywhere.
pub(crate) fn end_node(h: &Hop) -> Option<Node> {
    match &h.fate {
        Fate::Delivered { node, .. } | Fate::Dropped { node, .. } => Some(*node),
        Fate::InFlight => None,
    }
}

/// The meaning of `h`.
pub(crate) fn meaning(h: &Hop) -> Meaning {
    let m = |kind, label: String| Meaning { kind, label };
    if h.native {
        return match Echo::parse(&h.payload) {
            Ok(e) => m(Kind::Echo, echo_label(&e)),
            Err(_) => m(Kind::Data, format!("IPv6 {} B", h.payload.len())),
        };
    }
    let Ok(pkt) = TeredoPacket::parse(&h.payload) else {
        return m(Kind::Malformed, format!("malformed {} B", h.payload.len()));
    };
    if pkt.is_bubble() {
        let via_server = is_server(h.from_node) || end_node(h).is_some_and(is_server);
        return match (pkt.origin, via_server) {
            (Some(o), _) => m(
                Kind::IndirectBubble,
                format!("indirect bubble (origin {})", o.0),
            ),
            (None, true) => m(Kind::IndirectBubble, "indirect bubble".to_owned()),
            (None, false) => m(Kind::Bubble, "bubble".to_owned()),
        };
    }
    if let Ok(rs) = RouterSolicitation::parse(pkt.ipv6) {
        return m(Kind::Rs, format!("RS cone={}", u8::from(rs.cone)));
    }
    if RouterAdvertisement::parse(pkt.ipv6).is_ok() {
        let mapped = pkt.origin.map_or("no origin indication".to_owned(), |o| {
            format!("mapped {}", o.0)
        });
        return m(Kind::Ra, format!("RA {mapped}"));
    }
    if let Ok(e) = Echo::parse(pkt.ipv6) {
        return m(Kind::Echo, echo_label(&e));
    }
    let proto = match pkt.next_header() {
        17 => "UDP",
        58 => "ICMPv6",
        _ => "IPv6",
    };
    m(Kind::Data, format!("data {proto} {} B", pkt.ipv6.len()))
}

fn echo_label(e: &Echo<'_>) -> String {
    let what = if e.reply {
        "echo reply"
    } else {
        "echo request"
    };
    format!("{what} #{}", e.seq)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
    use std::time::Duration;

    use teredo::addr::{server_link_local, LL_TEREDO_CONE};
    use teredo::wire::ipv6::emit_bubble;
    use teredo::wire::ndp::{emit_rs, RaParams};

    use super::*;

    fn hop(payload: Vec<u8>, from_node: Node, to: Node) -> Hop {
        Hop {
            at: Duration::ZERO,
            from_node,
            inner_from: None,
            from: Some(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1)),
            to: Some(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 2)),
            new_mapping: false,
            native: false,
            payload,
            fate: Fate::Delivered {
                at: Duration::ZERO,
                node: to,
                inner_to: None,
            },
        }
    }

    #[test]
    fn rs_ra_and_bubbles_are_named() {
        let mut buf = [0u8; 256];
        let n = emit_rs(&mut buf, None, LL_TEREDO_CONE, false).unwrap();
        let rs = meaning(&hop(
            buf[..n].to_vec(),
            Node::Client(0),
            Node::ServerPrimary,
        ));
        assert_eq!((rs.kind, rs.label.as_str()), (Kind::Rs, "RS cone=1"));

        let mapped = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 40000);
        let p = RaParams {
            auth: None,
            origin: mapped,
            src: server_link_local(Ipv4Addr::new(198, 51, 100, 1)),
            dst: LL_TEREDO_CONE,
            primary: Ipv4Addr::new(198, 51, 100, 1),
            mtu: None,
        };
        let n = p.emit(&mut buf).unwrap();
        let h = hop(buf[..n].to_vec(), Node::ServerSecondary, Node::Nat(0));
        assert_eq!(meaning(&h).label, "RA mapped 203.0.113.1:40000");

        let a: Ipv6Addr = "2001:0:c633:6401::1".parse().unwrap();
        let n = emit_bubble(&mut buf, a, a, 255).unwrap();
        let direct = meaning(&hop(buf[..n].to_vec(), Node::Relay, Node::Client(0)));
        assert_eq!(direct.kind, Kind::Bubble);
        let indirect = meaning(&hop(buf[..n].to_vec(), Node::Relay, Node::ServerPrimary));
        assert_eq!(indirect.kind, Kind::IndirectBubble);
        let junk = meaning(&hop(vec![1, 2, 3], Node::Injected, Node::Client(0)));
        assert_eq!(junk.label, "malformed 3 B");
    }
}
