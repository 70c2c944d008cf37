//! The UPnP-enabled Symmetric NAT extension (RFC 6081 §5.3), sans-IO: the client asks for a
//! port mapping through [`Output::Upnp`] before qualifying and learns the outcome from
//! [`Client::handle_upnp`]; behind a *single* UPnP-enabled symmetric NAT it sends bubbles
//! and data to a symmetric peer's embedded mapping (§5.3.4.2, §5.3.4.3), the only place a
//! peer behind another UPnP NAT is reachable.
//!
//! The client does not wait for the answer: a driver that reaches an IGD answers before it
//! sends the first RS (so the server reflects the leased port, §3.2); one that cannot just
//! never answers, and the client qualifies as without the extension.

use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::addr::TeredoAddr;
use crate::io::UpnpRequest;

use super::*;

/// NewLeaseDuration of the port mapping: 0, "until deleted" (RFC 6081 §5.3.3).
pub const UPNP_LEASE: Duration = Duration::ZERO;

/// What the IGD answered to [`UpnpRequest::AddPortMapping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UpnpAnswer {
    /// Both `AddPortMapping` and `GetExternalIPAddress` succeeded: the mapping's external
    /// address and port (the port is the client's own, as requested).
    Mapped(SocketAddrV4),
    /// No IGD, or either call failed: continue without the extension ("MUST continue
    /// without using this extension"). A driver whose `GetExternalIPAddress` failed after
    /// a successful `AddPortMapping` deletes the mapping itself (the SHOULD of §5.3.3).
    Failed,
}

/// The extension's state (RFC 6081 §5.3.1).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct UpnpState {
    /// The request waiting in [`Client::poll_output`].
    pub(super) pending: Option<UpnpRequest>,
    /// "UPnP-Enabled NAT flag".
    pub(super) enabled: bool,
    /// "UPnP-Mapped Address/Port" as the IGD gave it; kept for the status even when the
    /// RFC zeroes it (single NAT, see `single_nat`).
    pub(super) mapped: Option<SocketAddrV4>,
    /// The mapping the server reflected equals the UPnP mapping: one NAT only, the RFC's
    /// "UPnP-Mapped Address/Port MUST be zeroed out".
    pub(super) single_nat: bool,
}

impl Client {
    /// The IGD's answer to the last [`UpnpRequest::AddPortMapping`]. Before qualification
    /// has used it, a mapping sets the UPnP-Enabled NAT flag; an answer to no request, or
    /// one after qualification started over, is ignored (the next one is coming).
    pub fn handle_upnp(&mut self, now: Instant, answer: UpnpAnswer) {
        if !self.upnp_active() || self.upnp.enabled {
            return;
        }
        match answer {
            UpnpAnswer::Mapped(external) => {
                tracing::debug!(%external, "upnp port mapping granted");
                self.upnp.enabled = true;
                self.upnp.mapped = Some(external);
                self.counters.upnp_mappings += 1;
                // Qualified already (a late answer): compare now.
                if let (State::Qualified, Some(m)) = (self.state, self.mapping) {
                    self.upnp.single_nat = m == external;
                }
            }
            UpnpAnswer::Failed => {
                tracing::debug!("upnp port mapping refused");
                self.counters.upnp_failures += 1;
            }
        }
        let _ = now;
    }

    /// The UPnP mapping the IGD granted, if any (the RFC's UPnP-Mapped Address/Port, not
    /// zeroed).
    pub fn upnp_mapping(&self) -> Option<SocketAddrV4> {
        self.upnp.mapped.filter(|_| self.upnp.enabled)
    }

    /// Shutdown (RFC 6081 §5.3.5: uninitialization "MUST be performed"): queues a
    /// [`UpnpRequest::DeletePortMapping`] of the granted port, if any, and leaves the
    /// extension off until qualification starts over. Call it before dropping the client.
    pub fn release_upnp(&mut self) {
        if let (true, Some(m)) = (self.upnp.enabled, self.upnp.mapped) {
            self.upnp = UpnpState {
                pending: Some(UpnpRequest::DeletePortMapping {
                    external_port: m.port(),
                    internal: self.local,
                }),
                ..UpnpState::default()
            };
        }
    }

    /// Whether the profile runs the extension (it depends on symmetric NAT support).
    pub(super) fn upnp_active(&self) -> bool {
        self.cfg.upnp && self.cfg.symmetric_support
    }

    /// Called when qualification starts (over): forget the old answer and ask again (the
    /// IGD renews a client's own mapping).
    pub(super) fn upnp_request(&mut self) {
        self.upnp = UpnpState::default();
        if self.upnp_active() {
            self.upnp.pending = Some(UpnpRequest::AddPortMapping {
                internal: self.local,
                lease: UPNP_LEASE,
            });
        }
    }

    /// After qualifying (§5.3.3): the server reflected the UPnP mapping → a single NAT.
    pub(super) fn upnp_qualified(&mut self, mapped: SocketAddrV4) {
        self.upnp.single_nat = self.upnp.enabled && self.upnp.mapped == Some(mapped);
    }

    /// The §5.3.4.2/§5.3.4.3 condition on our side: Symmetric NAT flag, UPnP-Enabled NAT
    /// flag, UPnP-Mapped Address/Port zeroed (single NAT).
    pub(super) fn upnp_rule(&self) -> bool {
        self.upnp.enabled && self.upnp.single_nat && self.nat.is_symmetric()
    }

    /// Where direct bubbles and data for `addr` go: the peer's embedded mapping when the
    /// §5.3.4.2 rule applies (it is flagged symmetric), else `recorded` (the mapping it
    /// proved, or the embedded one before that).
    pub(super) fn send_target(
        &self,
        addr: &Ipv6Addr,
        symmetric_peer: bool,
        recorded: SocketAddrV4,
    ) -> SocketAddrV4 {
        if symmetric_peer && self.upnp_rule() {
            if let Some(t) = TeredoAddr::from_ipv6(addr) {
                return t.mapped;
            }
        }
        recorded
    }
}
