//! The scene every relay check plays in: the tool is Teredo client X (a UDP socket on its
//! own address), X's Teredo server SX (`<local>:3544`, where the relay's indirect bubbles
//! for X arrive) and the native host (a UDP/IPv6 socket on `--native-local`, whose packets
//! to X's Teredo address are routed to the relay's native side).
//!
//! X's address is `2001:0:<local>:<flags>:~port:~local`: X has no NAT, so its mapping is
//! its socket's own address, and the relay can check it against the outer source.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use teredo::wire::TeredoPacket;

use crate::conform::ctx::{Ctx, Ep, Rx};
use crate::conform::packets::{self, ANSWER};

/// Teredo's UDP port (where SX listens).
pub const TEREDO_PORT: u16 = 3544;
/// The UDP port of the native host's traffic inside X (X's "application" port).
pub const X_APP_PORT: u16 = 4380;
/// Random flags allowed by RFC 5991 §3.1 (the cone bit stays 0).
const RANDOM_FLAGS: u16 = 0x3cff;

/// One Teredo client the tool plays: its socket, mapping and Teredo address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// Its UDP socket (its mapping: no NAT in between).
    pub ep: Ep,
    /// Its mapped address as the relay sees it.
    pub map: SocketAddrV4,
    /// Its Teredo address (server = the tool's own address).
    pub addr: Ipv6Addr,
}

/// The relay under test and the sockets that surround it.
#[derive(Clone, Copy, Debug)]
pub struct Lab {
    /// The relay's Teredo UDP address.
    pub relay: SocketAddrV4,
    /// SX: the fake Teredo server of every client of the lab.
    pub sx: Ep,
    /// Client X.
    pub x: Client,
    /// The native host's socket.
    pub native: Ep,
    /// Its address.
    pub native_addr: SocketAddrV6,
}

/// What a received datagram is, seen from the lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A bubble at SX for `dst` (an indirect bubble).
    Indirect(BubbleView),
    /// A bubble at a client's socket (a direct bubble).
    Direct(BubbleView),
    /// An encapsulated IPv6/UDP packet at a client's socket: the UDP payload.
    Data(Vec<u8>),
    /// A UDP datagram on the native socket: its payload.
    Native(Vec<u8>),
    /// Anything else, described.
    Other(String),
}

/// A bubble as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BubbleView {
    /// Outer source.
    pub from: SocketAddr,
    /// IPv6 source.
    pub src: Ipv6Addr,
    /// IPv6 destination.
    pub dst: Ipv6Addr,
    /// Hop limit.
    pub hop_limit: u8,
    /// Bytes after the IPv6 header (RFC 6081 trailers), hex.
    pub trailers: String,
}

impl Lab {
    /// Opens SX, X and the native socket, or says what is missing (a skip reason).
    pub fn open(ctx: &mut Ctx<'_>) -> anyhow::Result<Result<Self, String>> {
        let relay = match ctx.target.need_relay() {
            Ok(r) => r.addr,
            Err(why) => return Ok(Err(why)),
        };
        let native_ip = match ctx.target.need_native() {
            Ok(a) => a,
            Err(why) => return Ok(Err(why)),
        };
        let local = ctx.target.local;
        let sx = ctx.udp_at(SocketAddrV4::new(local, TEREDO_PORT).into())?;
        let x = new_client(ctx)?;
        let native = ctx.udp_at(SocketAddrV6::new(native_ip, 0, 0, 0).into())?;
        let native_addr = match ctx.addr(native) {
            SocketAddr::V6(a) => a,
            SocketAddr::V4(a) => anyhow::bail!("native socket bound to IPv4 {a}"),
        };
        Ok(Ok(Self {
            relay,
            sx,
            x,
            native,
            native_addr,
        }))
    }

    /// Sends `payload` from the native host to `to`'s application port (routed to the
    /// relay).
    pub fn native_to(
        &self,
        ctx: &mut Ctx<'_>,
        to: Ipv6Addr,
        payload: &[u8],
        note: &str,
    ) -> anyhow::Result<()> {
        ctx.send(
            self.native,
            SocketAddrV6::new(to, X_APP_PORT, 0, 0),
            payload,
            note,
        )
    }

    /// Sends, from client `c`'s socket to the relay, an IPv6/UDP packet from `src` to the
    /// native host carrying `payload`, followed by `trailers`.
    pub fn client_data(
        &self,
        ctx: &mut Ctx<'_>,
        c: Client,
        src: Ipv6Addr,
        payload: &[u8],
        trailers: &[u8],
        note: &str,
    ) -> anyhow::Result<()> {
        let pkt = packets::udp6(
            SocketAddrV6::new(src, X_APP_PORT, 0, 0),
            self.native_addr,
            payload,
        );
        ctx.send(c.ep, self.relay, &packets::concat(&[&pkt, trailers]), note)
    }

    /// Sends client `c`'s direct bubble (src = its address) to `dst` (the source of the
    /// relay's bubble), from its socket to the relay.
    pub fn client_bubble(
        &self,
        ctx: &mut Ctx<'_>,
        c: Client,
        dst: Ipv6Addr,
        note: &str,
    ) -> anyhow::Result<()> {
        ctx.send(c.ep, self.relay, &packets::bubble(c.addr, dst, 255), note)
    }

    /// What `rx` is, for client `c` (the one whose address bubbles and data are for).
    pub fn classify(&self, c: Client, rx: &Rx) -> Seen {
        if rx.ep == self.native {
            return Seen::Native(rx.bytes.clone());
        }
        let pkt = match TeredoPacket::parse(&rx.bytes) {
            Ok(p) => p,
            Err(e) => return Seen::Other(format!("unreadable datagram from {}: {e}", rx.from)),
        };
        if pkt.is_bubble() {
            let view = BubbleView {
                from: rx.from,
                src: pkt.src(),
                dst: pkt.dst(),
                hop_limit: pkt.hop_limit(),
                trailers: crate::conform::ctx::hex(pkt.trailers),
            };
            return if rx.ep == self.sx {
                Seen::Indirect(view)
            } else {
                Seen::Direct(view)
            };
        }
        if rx.ep != self.sx && pkt.next_header() == 17 && pkt.dst() == c.addr {
            return match pkt.ipv6_payload().get(8..) {
                Some(p) => Seen::Data(p.to_vec()),
                None => Seen::Other("truncated UDP".to_owned()),
            };
        }
        Seen::Other(format!(
            "{} B from {} (nh {}, {} -> {})",
            rx.bytes.len(),
            rx.from,
            pkt.next_header(),
            pkt.src(),
            pkt.dst()
        ))
    }

    /// Collects for `window` and classifies for client `c`, annotating the trace.
    pub fn watch(&self, ctx: &mut Ctx<'_>, c: Client, window: Duration) -> Vec<(Rx, Seen)> {
        let got = ctx.collect(window);
        self.label(ctx, c, got)
    }

    /// Classifies and annotates datagrams already received.
    pub fn label(&self, ctx: &mut Ctx<'_>, c: Client, got: Vec<Rx>) -> Vec<(Rx, Seen)> {
        got.into_iter()
            .map(|rx| {
                let seen = self.classify(c, &rx);
                ctx.annotate(&rx, seen.label());
                (rx, seen)
            })
            .collect()
    }

    /// The first-contact exchange for client `c`: a native packet with `payload`, the
    /// relay's indirect bubble at SX, `c`'s direct bubble back, and the queued packet at
    /// `c`'s socket. Ok(the indirect bubble) or why the exchange broke down.
    pub fn trust(
        &self,
        ctx: &mut Ctx<'_>,
        c: Client,
        payload: &[u8],
    ) -> anyhow::Result<Result<BubbleView, String>> {
        self.native_to(ctx, c.addr, payload, "native packet (first contact)")?;
        let got = ctx.recv_until(ANSWER, |rx| rx.ep == self.sx);
        let seen = self.label(ctx, c, got);
        let Some(b) = seen.iter().find_map(|(_, s)| match s {
            Seen::Indirect(b) if b.dst == c.addr => Some(b.clone()),
            _ => None,
        }) else {
            return Ok(Err(format!("no indirect bubble for {} at SX", c.addr)));
        };
        self.client_bubble(ctx, c, b.src, "direct bubble (answer)")?;
        let want = payload.to_vec();
        let got = ctx.recv_until(ANSWER, |rx| {
            rx.ep == c.ep && self.classify(c, rx) == Seen::Data(want.clone())
        });
        let seen = self.label(ctx, c, got);
        if seen.iter().any(|(_, s)| *s == Seen::Data(payload.to_vec())) {
            Ok(Ok(b))
        } else {
            Ok(Err(format!(
                "queued packet not delivered to {} after the direct bubble",
                c.map
            )))
        }
    }
}

impl Seen {
    /// A short trace note.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Indirect(_) => "indirect bubble (at SX)",
            Self::Direct(_) => "direct bubble",
            Self::Data(_) => "data for the client",
            Self::Native(_) => "delivered natively",
            Self::Other(_) => "unexpected",
        }
    }
}

/// A new client socket with random flags (cone bit 0) and its Teredo address.
pub fn new_client(ctx: &mut Ctx<'_>) -> anyhow::Result<Client> {
    let ep = ctx.udp()?;
    let map = ctx.addr4(ep);
    let flags = (ctx.random_u32() as u16) & RANDOM_FLAGS;
    Ok(Client {
        ep,
        map,
        addr: packets::teredo_addr(ctx.target.local, map, flags),
    })
}

/// A Teredo address for `server` and `mapped` with random flags (no socket behind it).
pub fn teredo_for(ctx: &mut Ctx<'_>, server: Ipv4Addr, mapped: SocketAddrV4) -> Ipv6Addr {
    let flags = (ctx.random_u32() as u16) & RANDOM_FLAGS;
    packets::teredo_addr(server, mapped, flags)
}

/// A payload tagged with `tag` and `seq`, padded with zeros to `len` bytes.
pub fn payload(tag: &str, seq: u8, len: usize) -> Vec<u8> {
    let mut p = format!("conform {tag} #{seq:03}").into_bytes();
    p.resize(len.max(p.len()), 0);
    p
}

/// The sequence number [`payload`] wrote, if `p` is one of `tag`'s.
pub fn payload_seq(tag: &str, p: &[u8]) -> Option<u8> {
    let head = format!("conform {tag} #");
    let rest = p.strip_prefix(head.as_bytes())?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}

/// Milliseconds of `d`, for details.
pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_its_sequence() {
        let p = payload("R21", 7, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(payload_seq("R21", &p), Some(7));
        assert_eq!(payload_seq("R16", &p), None);
        assert_eq!(payload_seq("R21", b"conform R21 #x"), None);
    }
}
