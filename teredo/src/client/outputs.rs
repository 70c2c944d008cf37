//! The queues of datagrams to send and packets to deliver, and their caps.

use std::net::SocketAddrV4;
use std::time::Instant;

use crate::addr::TEREDO_PORT;
use crate::wire::auth::Auth;
use crate::wire::ndp::emit_rs;
use crate::DropReason;

use super::*;

impl Client {
    /// Writes the next datagram to send into `buf`: the pending RS first, then bubbles, echo
    /// tests and data in the order they were produced. `None` when there is nothing to send.
    /// A buffer of [`MAX_UDP_PAYLOAD`] bytes always suffices ([`MAX_RS_LEN`] for RSs alone).
    /// An RS that does not fit is lost (it will be retransmitted) and `None` is returned;
    /// another datagram that does not fit is discarded and counted
    /// (`output_buffer_too_small`), and the next one is tried.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(rs) = self.pending.take() {
            let auth = Auth::nonce_only(rs.nonce);
            return match emit_rs(buf, Some(&auth), rs.src, self.cfg.xp_slla) {
                Ok(len) => {
                    self.counters.rs_sent += 1;
                    Some(Transmit {
                        to: SocketAddrV4::new(rs.to, TEREDO_PORT),
                        len,
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "poll_transmit buffer too small; RS discarded");
                    None
                }
            };
        }
        while let Some((to, bytes)) = self.outputs.pop_front() {
            self.output_bytes = self.output_bytes.saturating_sub(bytes.len());
            if let Some(dst) = buf.get_mut(..bytes.len()) {
                dst.copy_from_slice(&bytes);
                return Some(Transmit {
                    to,
                    len: bytes.len(),
                });
            }
            self.counters
                .count_drop(DropReason::OutputBufferTooSmall, 1);
            tracing::warn!(
                need = bytes.len(),
                have = buf.len(),
                "poll_transmit buffer too small; datagram discarded"
            );
        }
        None
    }

    /// Writes the next packet for the application (an IPv6 packet to our Teredo address,
    /// trailers stripped) into `buf`; returns its length. `None` when there is none. A
    /// packet larger than `buf` is discarded and counted (`output_buffer_too_small`);
    /// [`MAX_UDP_PAYLOAD`] bytes always suffice.
    pub fn poll_ipv6(&mut self, buf: &mut [u8]) -> Option<usize> {
        while let Some(p) = self.deliveries.pop_front() {
            self.delivery_bytes = self.delivery_bytes.saturating_sub(p.len());
            if let Some(dst) = buf.get_mut(..p.len()) {
                dst.copy_from_slice(&p);
                return Some(p.len());
            }
            self.counters
                .count_drop(DropReason::OutputBufferTooSmall, 1);
        }
        None
    }

    pub(super) fn push_output(
        &mut self,
        to: SocketAddrV4,
        bytes: Vec<u8>,
    ) -> Result<(), DropReason> {
        if self.outputs.len() >= MAX_OUTPUTS
            || self.output_bytes.saturating_add(bytes.len()) > MAX_OUTPUT_BYTES
        {
            return Err(DropReason::OutputQueueFull);
        }
        self.output_bytes += bytes.len();
        self.outputs.push_back((to, bytes));
        Ok(())
    }

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
