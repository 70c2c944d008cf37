//! The simulated UPnP control channel: a client's [`UpnpRequest`] carried to its NAT's IGD
//! at once (a LAN round trip is negligible next to the Internet's), the answer handed back.

use std::net::SocketAddrV4;
use std::time::Instant;

use teredo::client::UpnpAnswer;
use teredo::io::UpnpRequest;

use crate::Nat;

/// Performs `request` on `nat`'s IGD (none without a NAT) and returns the answer the client
/// gets, if the request has one. An `AddPortMapping` is followed by `GetExternalIPAddress`
/// (RFC 6081 §5.3.3); if that fails the mapping is deleted again (its SHOULD).
pub fn perform(nat: Option<&mut Nat>, now: Instant, request: UpnpRequest) -> Option<UpnpAnswer> {
    match request {
        UpnpRequest::AddPortMapping { internal, lease } => {
            let Some(nat) = nat else {
                return Some(UpnpAnswer::Failed);
            };
            let Ok(external) = nat.add_port_mapping(now, internal.port(), internal, lease) else {
                return Some(UpnpAnswer::Failed);
            };
            match nat.get_external_ip_address(*internal.ip()) {
                Ok(ip) => Some(UpnpAnswer::Mapped(SocketAddrV4::new(ip, external.port()))),
                Err(_) => {
                    let _ = nat.delete_port_mapping(now, external.port(), *internal.ip());
                    Some(UpnpAnswer::Failed)
                }
            }
        }
        UpnpRequest::DeletePortMapping {
            external_port,
            internal,
        } => {
            if let Some(nat) = nat {
                // Refusals are counted by the NAT.
                let _ = nat.delete_port_mapping(now, external_port, *internal.ip());
            }
            None
        }
        // A call this model does not know: unanswered, as by a gateway without it.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NatPreset;
    use std::time::Duration;

    #[test]
    fn add_then_external_address_or_failed() {
        let now = Instant::now();
        let internal: SocketAddrV4 = "192.168.1.2:40000".parse().unwrap();
        let req = UpnpRequest::AddPortMapping {
            internal,
            lease: Duration::ZERO,
        };
        let cfg = |upnp| {
            let mut c = NatPreset::Symmetric
                .config(vec!["203.0.113.9".parse().unwrap()], 1)
                .unwrap()
                .unwrap();
            c.upnp = upnp;
            Nat::new(c)
        };
        let mut on = cfg(true);
        assert_eq!(
            perform(Some(&mut on), now, req),
            Some(UpnpAnswer::Mapped("203.0.113.9:40000".parse().unwrap()))
        );
        assert_eq!(on.leases(now).len(), 1);
        let mut off = cfg(false);
        assert_eq!(perform(Some(&mut off), now, req), Some(UpnpAnswer::Failed));
        assert_eq!(perform(None, now, req), Some(UpnpAnswer::Failed));
        let del = UpnpRequest::DeletePortMapping {
            external_port: 40000,
            internal,
        };
        assert_eq!(perform(Some(&mut on), now, del), None);
        assert!(on.leases(now).is_empty());
    }
}
