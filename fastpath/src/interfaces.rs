//! Which interface holds an IPv4 address (getifaddrs(3)): where the program must be attached
//! to see the datagrams sent to the server.

use std::ffi::CStr;
use std::net::Ipv4Addr;

use crate::Error;

/// The name of the interface `addr` is configured on.
pub fn interface_of(addr: Ipv4Addr) -> Result<String, Error> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(Error::NoInterface {
            addr,
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null ifa_addr points at a sockaddr of its family.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET addresses are sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                if Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == addr {
                    // SAFETY: ifa_name is a NUL-terminated string owned by the list.
                    let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
                    found = Some(name.to_string_lossy().into_owned());
                    break;
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found.ok_or_else(|| Error::NoInterface {
        addr,
        reason: "no interface has it".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_holds_127_0_0_1() {
        assert_eq!(interface_of(Ipv4Addr::LOCALHOST).unwrap(), "lo");
        let e = interface_of(Ipv4Addr::new(0, 0, 0, 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("0.0.0.1"), "{e}");
    }
}
