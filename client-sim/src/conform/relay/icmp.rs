//! Watching for the ICMPv6 Destination Unreachable errors a relay may send the native host
//! when it gives up on a client. Ctx's UDP sockets do not set IPV6_RECVERR, so the errors
//! are read from a raw ICMPv6 socket bound to the native address (root or CAP_NET_RAW);
//! without one they are reported as not observed.

use std::io::Read as _;
use std::net::{Ipv6Addr, SocketAddrV6};

use socket2::{Domain, Protocol, Socket, Type};

/// A raw ICMPv6 socket on the native address.
#[derive(Debug)]
pub struct IcmpWatch {
    sock: Socket,
}

/// One Destination Unreachable about a packet to the watched destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreachable {
    /// The ICMPv6 code (3: address unreachable).
    pub code: u8,
}

impl IcmpWatch {
    /// Opens the socket, or says why not.
    pub fn open(native: Ipv6Addr) -> Result<Self, String> {
        let sock = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
            .map_err(|e| format!("no raw ICMPv6 socket ({e})"))?;
        sock.bind(&SocketAddrV6::new(native, 0, 0, 0).into())
            .map_err(|e| format!("cannot bind raw ICMPv6 to {native}: {e}"))?;
        sock.set_nonblocking(true)
            .map_err(|e| format!("raw ICMPv6: {e}"))?;
        Ok(Self { sock })
    }

    /// Drains what arrived: the Destination Unreachable errors quoting a packet to `about`.
    pub fn drain(&mut self, about: Ipv6Addr) -> Vec<Unreachable> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = self.sock.read(&mut buf) {
            if let Some(u) = parse_unreachable(&buf[..n], about) {
                out.push(u);
            }
        }
        out
    }
}

/// Reads an ICMPv6 message (no IPv6 header, as a raw socket delivers it) as a Destination
/// Unreachable (type 1) quoting a packet whose destination is `about`.
pub fn parse_unreachable(msg: &[u8], about: Ipv6Addr) -> Option<Unreachable> {
    if msg.first() != Some(&1) {
        return None;
    }
    let quoted_dst: [u8; 16] = msg.get(8 + 24..8 + 40)?.try_into().ok()?;
    (Ipv6Addr::from(quoted_dst) == about).then_some(Unreachable { code: msg[1] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_quoted_destination() {
        let about: Ipv6Addr = "2001:0:c633:640a::1".parse().unwrap();
        let mut msg = vec![1, 3, 0, 0, 0, 0, 0, 0];
        let mut quoted = [0u8; 40];
        quoted[0] = 0x60;
        quoted[24..40].copy_from_slice(&about.octets());
        msg.extend_from_slice(&quoted);
        assert_eq!(
            parse_unreachable(&msg, about),
            Some(Unreachable { code: 3 })
        );
        assert_eq!(parse_unreachable(&msg, Ipv6Addr::LOCALHOST), None);
        msg[0] = 129;
        assert_eq!(parse_unreachable(&msg, about), None);
        assert_eq!(parse_unreachable(&[1, 3, 0, 0], about), None);
    }
}
