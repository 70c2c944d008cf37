//! The queues of datagrams to send and packets to deliver, and their caps.

use std::net::SocketAddrV4;
use std::time::Instant;

use crate::addr::TEREDO_PORT;
use crate::io::{Kind, Local, Output};
use crate::wire::auth::Auth;
use crate::wire::ndp::emit_rs;
use crate::DropReason;

use super::*;

/// A datagram waiting in [`Client::poll_output`].
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) local: Local,
    pub(super) to: SocketAddrV4,
    pub(super) kind: Kind,
    pub(super) bytes: Vec<u8>,
}

impl Client {
    /// Writes the next output into `buf` and says what it is and where it goes. Order:
    /// a UPnP request first ([`Output::Upnp`], no bytes), then datagrams to send ([`Output::Udp`] from [`Local::Primary`], or from a random port
    /// ([`Local::Port`], RFC 6081 §5.4, §5.5): the pending RS, then
    /// bubbles, echo tests and data in the order they were produced), then packets for the
    /// host ([`Output::Ipv6`], IPv6 packets to our Teredo address, trailers stripped, in the
    /// order they arrived). `None` when there is nothing left. A buffer of
    /// [`MAX_UDP_PAYLOAD`] bytes always suffices ([`MAX_RS_LEN`] for RSs alone). An RS that
    /// does not fit is lost (it will be retransmitted); any other output that does not fit is
    /// discarded and counted (`output_buffer_too_small`); the next one is tried.
    pub fn poll_output(&mut self, buf: &mut [u8]) -> Option<Output> {
        if let Some(request) = self.upnp.pending.take() {
            return Some(Output::Upnp(request));
        }
        if let Some(rs) = self.pending.take() {
            let auth = Auth::nonce_only(rs.nonce);
            match emit_rs(buf, Some(&auth), rs.src, self.cfg.xp_slla) {
                Ok(len) => {
                    self.counters.rs_sent += 1;
                    return Some(Output::Udp {
                        local: Local::Primary,
                        to: SocketAddrV4::new(rs.to, TEREDO_PORT),
                        len,
                        kind: Kind::RouterSolicitation,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "poll_output buffer too small; RS discarded");
                }
            }
        }
        while let Some(o) = self.outputs.pop_front() {
            self.output_bytes = self.output_bytes.saturating_sub(o.bytes.len());
            if let Some(dst) = buf.get_mut(..o.bytes.len()) {
                dst.copy_from_slice(&o.bytes);
                return Some(Output::Udp {
                    local: o.local,
                    to: o.to,
                    len: o.bytes.len(),
                    kind: o.kind,
                });
            }
            self.counters
                .count_drop(DropReason::OutputBufferTooSmall, 1);
            tracing::warn!(
                need = o.bytes.len(),
                have = buf.len(),
                "poll_output buffer too small; datagram discarded"
            );
        }
        while let Some(p) = self.deliveries.pop_front() {
            self.delivery_bytes = self.delivery_bytes.saturating_sub(p.len());
            if let Some(dst) = buf.get_mut(..p.len()) {
                dst.copy_from_slice(&p);
                return Some(Output::Ipv6 {
                    len: p.len(),
                    kind: Kind::Data,
                });
            }
            self.counters
                .count_drop(DropReason::OutputBufferTooSmall, 1);
        }
        None
    }

    /// Queues a datagram from the primary socket for [`Self::poll_output`], within
    /// [`MAX_OUTPUTS`] and [`MAX_OUTPUT_BYTES`].
    pub(super) fn push_output(
        &mut self,
        to: SocketAddrV4,
        kind: Kind,
        bytes: Vec<u8>,
    ) -> Result<(), DropReason> {
        self.push_output_from(Local::Primary, to, kind, bytes)
    }

    /// [`Self::push_output`] from the socket `local`.
    pub(super) fn push_output_from(
        &mut self,
        local: Local,
        to: SocketAddrV4,
        kind: Kind,
        bytes: Vec<u8>,
    ) -> Result<(), DropReason> {
        if self.outputs.len() >= MAX_OUTPUTS
            || self.output_bytes.saturating_add(bytes.len()) > MAX_OUTPUT_BYTES
        {
            return Err(DropReason::OutputQueueFull);
        }
        self.output_bytes += bytes.len();
        self.outputs.push_back(Queued {
            local,
            to,
            kind,
            bytes,
        });
        Ok(())
    }

    /// Queues a packet for the host, within [`MAX_DELIVERIES`] and [`MAX_DELIVERY_BYTES`].
    pub(super) fn deliver(&mut self, now: Instant, ipv6: &[u8]) -> Result<(), DropReason> {
        if self.deliveries.len() >= MAX_DELIVERIES
            || self.delivery_bytes.saturating_add(ipv6.len()) > MAX_DELIVERY_BYTES
        {
            return Err(DropReason::OutputQueueFull);
        }
        self.delivery_bytes += ipv6.len();
        self.deliveries.push_back(ipv6.to_vec());
        self.counters.ipv6_delivered += 1;
        self.note_activity(now);
        Ok(())
    }
}
