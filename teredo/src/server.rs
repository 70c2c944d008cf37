//! The Teredo server state machine (RFC 4380 §5.3): answers router solicitations with
//! router advertisements that reveal the client's NAT mapping, and relays bubbles and ICMPv6
//! between Teredo clients and to native IPv6.
//!
//! The server is stateless per client: one input produces at most one output. The optional
//! per-source RS rate limit ([`ServerConfig::rs_rate_limit`]) keeps a fixed-size table of
//! token buckets allocated once, never state per client. Outputs are
//! described by a small pending record and written straight into the caller's buffer by
//! [`Server::poll_output`], so the RS → RA path does not allocate.
//!
//! It speaks the cores' one vocabulary ([`crate::io`]): [`Server::handle_udp`] in,
//! [`Server::poll_output`] out, an [`Output`] whose [`Kind`] says what it is (an RA, a
//! relayed bubble or ICMPv6 message), so the driver never parses what it sends. Of the rest of
//! that vocabulary it has only [`Server::poll_timeout`], always `None`: nothing the server
//! does waits for time (the RS rate limit refills its buckets from the `now` of the next
//! input), and it has no state whose changes a driver would want to hear of, so there is no
//! `handle_timeout` and no `poll_event`. Nor is there a `handle_ipv6`: the native side is
//! send-only (RFC 4380 §5.3 relays towards native IPv6; replies come back through relays).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use crate::addr::{
    is_ipv4_global_unicast, is_ipv6_non_global, is_link_local, server_link_local, TeredoAddr,
    ALL_ROUTERS, TEREDO_PORT,
};
use crate::io::{Kind, Local, Output};
use crate::rate_limit::RateLimiter;
use crate::wire::auth::Auth;
use crate::wire::ndp::{RaParams, RouterSolicitation, ICMPV6_ROUTER_SOLICITATION};
use crate::wire::origin::{OriginIndication, ORIGIN_LEN};
use crate::wire::packet::{MAX_UDP_PAYLOAD, NEXT_HEADER_ICMPV6, NEXT_HEADER_NONE};
use crate::wire::{TeredoPacket, Trailers};
use crate::DropReason;

/// Server settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Primary IPv4 address; the advertised prefix is `2001:0:<primary>::/64`.
    pub primary: Ipv4Addr,
    /// Secondary IPv4 address, answering cone RSs received on the primary and vice versa.
    pub secondary: Ipv4Addr,
    /// MTU option in RAs (`None` omits it, as Microsoft's servers do). Miredo sends 1280.
    pub mtu: Option<u32>,
    /// Largest ICMPv6 payload (bytes after the IPv6 header) the server relays; bubbles are
    /// exempt. Miredo uses 88 to avoid being an open relay; the RFC sets none. Default 1240
    /// (a 1280-byte IPv6 packet, the Teredo MTU).
    pub max_icmpv6_payload: usize,
    /// Whether packets to native (non-Teredo) IPv6 destinations are handed to the native side.
    pub native: bool,
    /// The UDP port both addresses listen on (3544); the loop guard compares against it.
    pub port: u16,
    /// Router solicitations answered per second per source IPv4 address, in bursts of up to
    /// as many; 0 = no limit (the default). Over the limit an RS is dropped as
    /// `rate_limited`. Each [`Server`] instance has its own table (the server binary runs one
    /// per address).
    pub rs_rate_limit: u32,
    /// Buckets of the rate-limit table (16 bytes each; sources hashing to the same bucket
    /// share it). Only allocated when the limit is on.
    pub rs_rate_buckets: usize,
    /// Key of the rate-limit table's hash; drivers draw it at random so that an attacker
    /// cannot aim at another source's bucket.
    pub rs_rate_key: u64,
}

impl ServerConfig {
    /// Defaults for the given primary address: secondary = primary + 1, MTU option 1280,
    /// ICMPv6 cap 1240, native forwarding on.
    pub fn new(primary: Ipv4Addr) -> Self {
        Self {
            primary,
            secondary: Ipv4Addr::from(u32::from(primary).wrapping_add(1)),
            mtu: Some(1280),
            max_icmpv6_payload: 1240,
            native: true,
            port: TEREDO_PORT,
            rs_rate_limit: 0,
            rs_rate_buckets: crate::rate_limit::DEFAULT_BUCKETS,
            rs_rate_key: 0,
        }
    }
}

/// What an accepted datagram was, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Handled {
    /// A router solicitation, answered with an RA from `reply_from`.
    RouterSolicitation {
        /// The RS carried the cone flag.
        cone: bool,
        /// Address the RA leaves from.
        reply_from: Local,
    },
    /// A bubble or ICMPv6 message relayed to a Teredo client.
    ForwardedToClient {
        /// A bubble rather than ICMPv6.
        bubble: bool,
        /// An origin indication was inserted (the destination is one of ours).
        with_origin: bool,
    },
    /// A packet handed to the native IPv6 side.
    ForwardedNative {
        /// A bubble rather than ICMPv6.
        bubble: bool,
    },
}

#[derive(Clone, Copy, Debug)]
enum Pending {
    None,
    Ra {
        reply_from: Local,
        to: SocketAddrV4,
        auth_len: usize,
        dst: std::net::Ipv6Addr,
    },
    Udp {
        to: SocketAddrV4,
        origin: Option<SocketAddrV4>,
        len: usize,
        kind: Kind,
    },
    Native {
        len: usize,
        kind: Kind,
    },
}

/// The server state machine. See the module documentation.
#[derive(Debug)]
pub struct Server {
    cfg: ServerConfig,
    link_local: std::net::Ipv6Addr,
    pending: Pending,
    /// Bytes kept between `handle_udp` and `poll_output`: the echoed auth header or the
    /// packet being relayed. Allocated once.
    scratch: Box<[u8]>,
    /// The per-source RS limit, when configured.
    rs_limit: Option<RateLimiter>,
}

impl Server {
    /// Creates a server.
    pub fn new(cfg: ServerConfig) -> Self {
        Self {
            link_local: server_link_local(cfg.primary),
            cfg,
            pending: Pending::None,
            scratch: vec![0u8; MAX_UDP_PAYLOAD].into_boxed_slice(),
            rs_limit: (cfg.rs_rate_limit > 0).then(|| {
                RateLimiter::new(
                    cfg.rs_rate_limit,
                    cfg.rs_rate_limit,
                    cfg.rs_rate_buckets,
                    cfg.rs_rate_key,
                )
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    fn local_addr(&self, l: Local) -> Ipv4Addr {
        match l {
            // A server has no extra ports (a client's `Port` never reaches it).
            Local::Primary | Local::Port(_) => self.cfg.primary,
            Local::Secondary => self.cfg.secondary,
        }
    }

    /// Handles one UDP datagram received on `local` from `from`. On success an output is
    /// waiting in [`Self::poll_output`]; on error nothing is sent and the reason is returned
    /// for counting. Any output not yet polled is discarded.
    pub fn handle_udp(
        &mut self,
        now: Instant,
        local: Local,
        from: SocketAddrV4,
        data: &[u8],
    ) -> Result<Handled, DropReason> {
        self.pending = Pending::None;
        let r = self.classify(now, local, from, data);
        if let Err(reason) = r {
            tracing::debug!(%from, local = local.as_str(), reason = reason.as_str(), len = data.len(), "server drop");
        }
        r
    }

    fn classify(
        &mut self,
        now: Instant,
        local: Local,
        from: SocketAddrV4,
        data: &[u8],
    ) -> Result<Handled, DropReason> {
        // Loop guard (Miredo MTFL-SA 0603): never process our own datagrams.
        if from.port() == self.cfg.port
            && (*from.ip() == self.cfg.primary || *from.ip() == self.cfg.secondary)
        {
            return Err(DropReason::Loop);
        }
        if data.len() > MAX_UDP_PAYLOAD {
            return Err(DropReason::Oversized);
        }
        // Case 1: well-formed Teredo IPv6 packet. Trailers are judged only where the server
        // processes the packet (an RS, the native side); to a client they pass untouched.
        let pkt = TeredoPacket::parse_keeping_trailers(data)?;
        if pkt.origin.is_some() {
            return Err(DropReason::UnexpectedOrigin);
        }
        // Case 3: global unicast source (also the RA's destination).
        if !is_ipv4_global_unicast(*from.ip()) {
            return Err(DropReason::NonGlobalSource);
        }
        let (src, dst) = (pkt.src(), pkt.dst());
        let nh = pkt.next_header();

        // Case 4: router solicitation.
        if dst == ALL_ROUTERS {
            if is_link_local(&src)
                && nh == NEXT_HEADER_ICMPV6
                && pkt.ipv6_payload().first() == Some(&ICMPV6_ROUTER_SOLICITATION)
            {
                return self.router_solicitation(now, local, from, &pkt);
            }
            return Err(DropReason::NotForUs);
        }
        // Our own link-local address: the server answers nothing sent there (as Miredo).
        if dst == self.link_local {
            return Err(DropReason::NotForUs);
        }

        // Case 2: only bubbles and ICMPv6.
        let bubble = pkt.is_bubble();
        let kind = if bubble { Kind::Bubble } else { Kind::Icmpv6 };
        if !bubble {
            if nh != NEXT_HEADER_ICMPV6 {
                return Err(DropReason::NotBubbleOrIcmpv6);
            }
            if pkt.ipv6_payload().len() > self.cfg.max_icmpv6_payload {
                return Err(DropReason::TooLarge);
            }
        } else if nh != NEXT_HEADER_NONE {
            return Err(DropReason::NotBubbleOrIcmpv6);
        }

        let dst_teredo = TeredoAddr::from_ipv6(&dst);
        // Cases 5 and 6.
        match TeredoAddr::from_ipv6(&src) {
            Some(s) if s.mapped == from => {}
            Some(_) => return Err(DropReason::SpoofedSource),
            None => match dst_teredo {
                Some(d) if d.server == self.cfg.primary => {}
                _ => return Err(DropReason::NotAllowed),
            },
        }

        if is_ipv6_non_global(&dst) {
            return Err(DropReason::NonGlobalDestination);
        }
        let relayed = pkt.ipv6_and_trailers(data);
        match dst_teredo {
            Some(d) => {
                if !is_ipv4_global_unicast(*d.mapped.ip()) {
                    return Err(DropReason::NonGlobalMappedAddress);
                }
                if d.mapped.port() == self.cfg.port
                    && (*d.mapped.ip() == self.cfg.primary || *d.mapped.ip() == self.cfg.secondary)
                {
                    return Err(DropReason::Loop);
                }
                let with_origin = d.server == self.cfg.primary;
                // The origin indication goes in front: the result must still fit in one
                // UDP datagram.
                let oi_len = if with_origin { ORIGIN_LEN } else { 0 };
                if oi_len + relayed.len() > MAX_UDP_PAYLOAD {
                    return Err(DropReason::TooLarge);
                }
                self.scratch[..relayed.len()].copy_from_slice(relayed);
                self.pending = Pending::Udp {
                    to: d.mapped,
                    origin: with_origin.then_some(from),
                    len: relayed.len(),
                    kind,
                };
                Ok(Handled::ForwardedToClient {
                    bubble,
                    with_origin,
                })
            }
            None => {
                if !self.cfg.native {
                    return Err(DropReason::NativeDisabled);
                }
                // Trailers belong to the Teredo link; the native packet is the IPv6 packet.
                Trailers::validate(pkt.trailers)?;
                self.scratch[..pkt.ipv6.len()].copy_from_slice(pkt.ipv6);
                self.pending = Pending::Native {
                    len: pkt.ipv6.len(),
                    kind,
                };
                Ok(Handled::ForwardedNative { bubble })
            }
        }
    }

    fn router_solicitation(
        &mut self,
        now: Instant,
        local: Local,
        from: SocketAddrV4,
        pkt: &TeredoPacket<'_>,
    ) -> Result<Handled, DropReason> {
        Trailers::validate(pkt.trailers)?;
        let rs = RouterSolicitation::parse(pkt.ipv6)?;
        // Only well-formed RSs take a token: junk is dropped for what it is.
        if let Some(limit) = &mut self.rs_limit {
            if !limit.allow(now, *from.ip()) {
                return Err(DropReason::RateLimited);
            }
        }
        let reply_from = if rs.cone { local.other() } else { local };
        // Echo the client's own auth header only; an RS without one gets an RA without one,
        // so no other client's nonce can ever leak (Miredo does leak it).
        let auth_len = match &pkt.auth {
            Some(a) => {
                let echo = Auth {
                    confirmation: 0,
                    ..*a
                };
                echo.emit(&mut self.scratch[..]).map_err(DropReason::from)?
            }
            None => 0,
        };
        self.pending = Pending::Ra {
            reply_from,
            to: from,
            auth_len,
            dst: rs.src,
        };
        Ok(Handled::RouterSolicitation {
            cone: rs.cone,
            reply_from,
        })
    }

    /// Writes the pending output, if any, into `buf` (which should hold [`MAX_UDP_PAYLOAD`]
    /// bytes). Returns `None` when there is nothing to send.
    pub fn poll_output(&mut self, buf: &mut [u8]) -> Option<Output> {
        let pending = std::mem::replace(&mut self.pending, Pending::None);
        let r = match pending {
            Pending::None => return None,
            Pending::Ra {
                reply_from,
                to,
                auth_len,
                dst,
            } => {
                let auth = if auth_len > 0 {
                    Auth::parse(&self.scratch[..auth_len]).ok().map(|(a, _)| a)
                } else {
                    None
                };
                let p = RaParams {
                    auth,
                    origin: to,
                    src: self.link_local,
                    dst,
                    primary: self.cfg.primary,
                    mtu: self.cfg.mtu,
                };
                p.emit(buf).map(|len| Output::Udp {
                    local: reply_from,
                    to,
                    len,
                    kind: Kind::RouterAdvertisement,
                })
            }
            Pending::Udp {
                to,
                origin,
                len,
                kind,
            } => {
                let oi = usize::from(origin.is_some()) * 8;
                if buf.len() < oi + len {
                    Err(crate::wire::WireError::BufferTooSmall { need: oi + len })
                } else {
                    if let Some(o) = origin {
                        let _ = OriginIndication(o).emit(buf);
                    }
                    buf[oi..oi + len].copy_from_slice(&self.scratch[..len]);
                    Ok(Output::Udp {
                        local: Local::Primary,
                        to,
                        len: oi + len,
                        kind,
                    })
                }
            }
            Pending::Native { len, kind } => {
                if buf.len() < len {
                    Err(crate::wire::WireError::BufferTooSmall { need: len })
                } else {
                    buf[..len].copy_from_slice(&self.scratch[..len]);
                    Ok(Output::Ipv6 { len, kind })
                }
            }
        };
        match r {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!(error = %e, "poll_output buffer too small; output discarded");
                None
            }
        }
    }

    /// When the server next wants to be woken without input: never, as it has no timers (see
    /// the module documentation). It is here so a driver can treat the three cores alike.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The address a [`Local`] stands for.
    pub fn address(&self, l: Local) -> Ipv4Addr {
        self.local_addr(l)
    }
}

#[cfg(test)]
mod tests;
