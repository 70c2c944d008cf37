//! Which mappings a peer may be reached at (RFC 4380 §5.2.4 cases 4 and 5, §5.4.1, §7.4.3;
//! CVE-2006-6264): never send to, nor record, a non-global IPv4 address or port 0, so that a
//! forged address cannot aim the cores at a private network or the local host.

use std::net::SocketAddrV4;

use crate::addr::{is_ipv4_global_unicast, TeredoAddr};
use crate::DropReason;

/// A mapping packets may go to, or a peer may be trusted at: a global unicast IPv4 address
/// and a port other than 0.
pub fn is_usable_mapping(m: SocketAddrV4) -> bool {
    is_ipv4_global_unicast(*m.ip()) && m.port() != 0
}

/// A Teredo destination may be sent to: its embedded mapping is usable
/// (`non_global_mapped_address`) and its server is global (`non_global_server`).
pub fn check_teredo_destination(t: &TeredoAddr) -> Result<(), DropReason> {
    if !is_usable_mapping(t.mapped) {
        return Err(DropReason::NonGlobalMappedAddress);
    }
    if !is_ipv4_global_unicast(t.server) {
        return Err(DropReason::NonGlobalServer);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn global_address_and_a_port() {
        let global = Ipv4Addr::new(203, 0, 114, 1);
        assert!(is_usable_mapping(SocketAddrV4::new(global, 1)));
        assert!(!is_usable_mapping(SocketAddrV4::new(global, 0)));
        assert!(!is_usable_mapping(SocketAddrV4::new(
            Ipv4Addr::new(10, 0, 0, 1),
            1
        )));
        let t = |server, mapped| TeredoAddr {
            server,
            flags: 0,
            mapped,
        };
        let ok = SocketAddrV4::new(global, 40_000);
        assert_eq!(check_teredo_destination(&t(global, ok)), Ok(()));
        assert_eq!(
            check_teredo_destination(&t(global, SocketAddrV4::new(global, 0))),
            Err(DropReason::NonGlobalMappedAddress)
        );
        assert_eq!(
            check_teredo_destination(&t(Ipv4Addr::LOCALHOST, ok)),
            Err(DropReason::NonGlobalServer)
        );
        // Both wrong: the mapping is reported.
        assert_eq!(
            check_teredo_destination(&t(Ipv4Addr::LOCALHOST, SocketAddrV4::new(global, 0))),
            Err(DropReason::NonGlobalMappedAddress)
        );
    }
}
