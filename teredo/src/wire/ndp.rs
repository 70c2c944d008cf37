//! Router solicitation and router advertisement as Teredo uses them for qualification
//! (RFC 4380 §5.2.1, §5.3.2): the RS asks the server for the Teredo prefix, the RA answers
//! with it plus the origin indication that reveals the client's NAT mapping.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use etherparse::icmpv6::{NdpOptionSlice, NdpOptionsIterator};

use super::auth::Auth;
use super::ipv6::{emit_ipv6_header, finish_icmpv6, icmpv6_checksum_ok};
use super::origin::{OriginIndication, ORIGIN_LEN};
use super::packet::{
    check_ipv6_exact_len, ipv6_dst, ipv6_src, IPV6_HEADER_LEN, NEXT_HEADER_ICMPV6,
};
use super::{check_len, WireError};
use crate::addr::{is_link_local, link_local_is_cone, server_prefix, ALL_ROUTERS};

/// ICMPv6 type of a router solicitation.
pub const ICMPV6_ROUTER_SOLICITATION: u8 = 133;
/// ICMPv6 type of a router advertisement.
pub const ICMPV6_ROUTER_ADVERTISEMENT: u8 = 134;
/// Retransmission timer Miredo puts in its RAs (milliseconds).
pub const RA_RETRANS_TIMER_MS: u32 = 2000;
/// Size of the RA's ICMPv6 message without options.
const RA_FIXED_LEN: usize = 16;
/// Size of a prefix information option.
const PIO_LEN: usize = 32;
/// Size of an MTU option.
const MTU_OPT_LEN: usize = 8;

/// A router solicitation that passed the checks of RFC 4380 §5.3.1 case 4 and RFC 4861 §6.1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterSolicitation {
    /// The link-local source; its cone bit selects which server address answers.
    pub src: Ipv6Addr,
    /// True when the source carries the cone flag.
    pub cone: bool,
}

impl RouterSolicitation {
    /// Validates a complete IPv6 packet (exactly 40 + payload length bytes) as a Teredo RS:
    /// link-local source, destination ff02::2, hop limit 255, ICMPv6 type 133 code 0, at
    /// least 8 bytes, valid checksum.
    /// Options (XP's source link-layer address) are allowed and ignored.
    pub fn parse(ipv6: &[u8]) -> Result<Self, WireError> {
        check_len("router solicitation", ipv6, IPV6_HEADER_LEN + 8)?;
        check_ipv6_exact_len(ipv6)?;
        let (src, dst) = (ipv6_src(ipv6), ipv6_dst(ipv6));
        if ipv6[6] != NEXT_HEADER_ICMPV6 || ipv6[IPV6_HEADER_LEN] != ICMPV6_ROUTER_SOLICITATION {
            return Err(WireError::Invalid("router solicitation type"));
        }
        if ipv6[IPV6_HEADER_LEN + 1] != 0 {
            return Err(WireError::Invalid("router solicitation code"));
        }
        if dst != ALL_ROUTERS || !is_link_local(&src) {
            return Err(WireError::Invalid("router solicitation addresses"));
        }
        if ipv6[7] != 255 {
            return Err(WireError::Invalid("router solicitation hop limit"));
        }
        if !icmpv6_checksum_ok(ipv6) {
            return Err(WireError::BadChecksum);
        }
        Ok(Self {
            src,
            cone: link_local_is_cone(&src),
        })
    }
}

/// Writes a client's RS datagram (UDP payload): optional auth header, IPv6 from `src` to
/// ff02::2, RS with an optional 16-byte source link-layer address option (as Windows XP).
pub fn emit_rs(
    buf: &mut [u8],
    auth: Option<&Auth<'_>>,
    src: Ipv6Addr,
    xp_slla: bool,
) -> Result<usize, WireError> {
    let auth_len = auth.map_or(0, Auth::buffer_len);
    let icmp_len = if xp_slla { 8 + 16 } else { 8 };
    let total = auth_len + IPV6_HEADER_LEN + icmp_len;
    if buf.len() < total {
        return Err(WireError::BufferTooSmall { need: total });
    }
    if let Some(a) = auth {
        a.emit(buf)?;
    }
    let ip = &mut buf[auth_len..total];
    emit_ipv6_header(ip, src, ALL_ROUTERS, NEXT_HEADER_ICMPV6, 255, icmp_len)?;
    let icmp = &mut ip[IPV6_HEADER_LEN..];
    icmp.fill(0);
    icmp[0] = ICMPV6_ROUTER_SOLICITATION;
    if xp_slla {
        icmp[8] = 1; // source link-layer address
        icmp[9] = 2; // 16 bytes
    }
    finish_icmpv6(ip);
    Ok(total)
}

/// What a server puts in a router advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaParams<'a> {
    /// The RS's auth header to echo (nonce, ID, confirmation 0); `None` when the RS had none.
    pub auth: Option<Auth<'a>>,
    /// The RS's outer source: the client's mapping.
    pub origin: SocketAddrV4,
    /// IPv6 source: the server's link-local address.
    pub src: Ipv6Addr,
    /// IPv6 destination: the RS's link-local source.
    pub dst: Ipv6Addr,
    /// The server's primary IPv4, which the prefix embeds whichever address answers.
    pub primary: Ipv4Addr,
    /// MTU option value; `None` omits it (Microsoft servers do, giving a 109-byte RA).
    pub mtu: Option<u32>,
}

impl RaParams<'_> {
    /// Bytes [`Self::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        self.auth.as_ref().map_or(0, Auth::buffer_len)
            + ORIGIN_LEN
            + IPV6_HEADER_LEN
            + RA_FIXED_LEN
            + PIO_LEN
            + if self.mtu.is_some() { MTU_OPT_LEN } else { 0 }
    }

    /// Writes the RA datagram (UDP payload); the layout is Miredo's (TEREDO.md §4.3):
    /// hop limit 0, no flags, router lifetime 0, retrans 2000 ms, one PIO (/64, A, infinite),
    /// then the MTU option.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let total = self.buffer_len();
        if buf.len() < total {
            return Err(WireError::BufferTooSmall { need: total });
        }
        let mut pos = 0;
        if let Some(a) = &self.auth {
            pos += a.emit(buf)?;
        }
        pos += OriginIndication(self.origin).emit(&mut buf[pos..])?;
        let ip = &mut buf[pos..total];
        let icmp_len = ip.len() - IPV6_HEADER_LEN;
        emit_ipv6_header(ip, self.src, self.dst, NEXT_HEADER_ICMPV6, 255, icmp_len)?;
        let icmp = &mut ip[IPV6_HEADER_LEN..];
        icmp.fill(0);
        icmp[0] = ICMPV6_ROUTER_ADVERTISEMENT;
        icmp[12..16].copy_from_slice(&RA_RETRANS_TIMER_MS.to_be_bytes());
        let pio = &mut icmp[RA_FIXED_LEN..RA_FIXED_LEN + PIO_LEN];
        pio[0] = 3; // prefix information
        pio[1] = 4; // 32 bytes
        pio[2] = 64; // prefix length
        pio[3] = 0x40; // A (autonomous), not on-link
        pio[4..12].fill(0xff); // valid + preferred lifetime: infinite
        pio[16..32].copy_from_slice(&server_prefix(self.primary).octets());
        if let Some(mtu) = self.mtu {
            let o = &mut icmp[RA_FIXED_LEN + PIO_LEN..];
            o[0] = 5;
            o[1] = 1;
            o[4..8].copy_from_slice(&mtu.to_be_bytes());
        }
        finish_icmpv6(ip);
        Ok(total)
    }
}

/// The parts of a router advertisement a Teredo client checks (RFC 4380 §5.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterAdvertisement {
    /// IPv6 source (the server's link-local address).
    pub src: Ipv6Addr,
    /// IPv6 destination (must be the RS's source).
    pub dst: Ipv6Addr,
    /// The single prefix information option: prefix and length.
    pub prefix: (Ipv6Addr, u8),
    /// The MTU option, if any.
    pub mtu: Option<u32>,
}

impl RouterAdvertisement {
    /// Validates a complete IPv6 packet (exactly 40 + payload length bytes) as an RA with
    /// exactly one prefix information option.
    pub fn parse(ipv6: &[u8]) -> Result<Self, WireError> {
        check_len("router advertisement", ipv6, IPV6_HEADER_LEN + RA_FIXED_LEN)?;
        check_ipv6_exact_len(ipv6)?;
        if ipv6[6] != NEXT_HEADER_ICMPV6 || ipv6[IPV6_HEADER_LEN] != ICMPV6_ROUTER_ADVERTISEMENT {
            return Err(WireError::Invalid("router advertisement type"));
        }
        if ipv6[IPV6_HEADER_LEN + 1] != 0 {
            return Err(WireError::Invalid("router advertisement code"));
        }
        if !icmpv6_checksum_ok(ipv6) {
            return Err(WireError::BadChecksum);
        }
        let mut prefix = None;
        let mut mtu = None;
        let mut it = NdpOptionsIterator::from_slice(&ipv6[IPV6_HEADER_LEN + RA_FIXED_LEN..]);
        for opt in &mut it {
            match opt.map_err(|_| WireError::Invalid("NDP option"))? {
                NdpOptionSlice::PrefixInformation(p) => {
                    if prefix.is_some() {
                        return Err(WireError::Invalid("second prefix information option"));
                    }
                    prefix = Some((Ipv6Addr::from(p.prefix()), p.prefix_length()));
                }
                NdpOptionSlice::Mtu(m) => mtu = Some(m.mtu()),
                _ => {}
            }
        }
        let prefix = prefix.ok_or(WireError::Invalid("missing prefix information option"))?;
        Ok(Self {
            src: ipv6_src(ipv6),
            dst: ipv6_dst(ipv6),
            prefix,
            mtu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{
        server_link_local, LL_WINDOWS_CONE, LL_WINDOWS_RESTRICTED, LL_XP_RESTRICTED,
    };
    use crate::wire::TeredoPacket;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The RA Debian's miredo-server 1.2.6 sent (TEREDO.md §4.3): primary 198.51.100.1,
    /// client 198.51.100.10:40000, RS source fe80::ffff:ffff:fffe.
    fn miredo_ra(nonce: &str) -> Vec<u8> {
        hex(&format!(
            "0001 0000 {nonce} 00
             0000 63bf 39cc9bf5
             6000 0000 0038 3a ff
             fe80 0000 0000 0000 8000 f227 39cc 9bfe
             fe80 0000 0000 0000 0000 ffff ffff fffe
             86 00 954d 00 00 0000 00000000 000007d0
             03 04 40 40 ffffffff ffffffff 00000000 2001 0000 c633 6401 0000 0000 0000 0000
             05 01 0000 00000500"
        ))
    }

    #[test]
    fn ra_is_byte_identical_to_miredo() {
        let nonce = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
        let primary = Ipv4Addr::new(198, 51, 100, 1);
        let p = RaParams {
            auth: Some(Auth::nonce_only(nonce)),
            origin: "198.51.100.10:40000".parse().unwrap(),
            src: server_link_local(primary),
            dst: LL_WINDOWS_RESTRICTED,
            primary,
            mtu: Some(1280),
        };
        let mut buf = [0u8; 256];
        let n = p.emit(&mut buf).unwrap();
        let mut want = miredo_ra("1122334455667788");
        // The checksum in TEREDO.md was taken with an unknown nonce; the nonce is outside
        // the ICMPv6 message, so the checksum does not depend on it.
        assert_eq!(n, 117);
        assert_eq!(&buf[..n], &want[..]);
        want[21 + 40 + 2] ^= 0xff;
        assert_ne!(&buf[..n], &want[..]);
    }

    #[test]
    fn ra_without_mtu_is_microsofts_109_bytes() {
        let primary = Ipv4Addr::new(198, 51, 100, 1);
        let p = RaParams {
            auth: Some(Auth::nonce_only([0; 8])),
            origin: "198.51.100.10:40000".parse().unwrap(),
            src: server_link_local(primary),
            dst: LL_WINDOWS_RESTRICTED,
            primary,
            mtu: None,
        };
        let mut buf = [0u8; 256];
        assert_eq!(p.emit(&mut buf).unwrap(), 109);
    }

    #[test]
    fn ra_parses_back() {
        let v = miredo_ra("0102030405060708");
        let pkt = TeredoPacket::parse(&v).unwrap();
        assert_eq!(
            pkt.origin.unwrap().0,
            "198.51.100.10:40000".parse().unwrap()
        );
        let ra = RouterAdvertisement::parse(pkt.ipv6).unwrap();
        assert_eq!(ra.prefix, ("2001:0:c633:6401::".parse().unwrap(), 64));
        assert_eq!(ra.mtu, Some(1280));
        assert_eq!(ra.dst, LL_WINDOWS_RESTRICTED);
        for k in 0..pkt.ipv6.len() {
            assert!(
                RouterAdvertisement::parse(&pkt.ipv6[..k]).is_err(),
                "len {k}"
            );
        }
    }

    #[test]
    fn rs_round_trip_with_windows_checksums() {
        // TEREDO.md §4.1: Windows RS checksums 0x7d38 (restricted) and 0xfd37 (cone).
        for (src, sum, cone) in [
            (LL_WINDOWS_RESTRICTED, 0x7d38u16, false),
            (LL_WINDOWS_CONE, 0xfd37, true),
        ] {
            let mut buf = [0u8; 128];
            let n = emit_rs(&mut buf, Some(&Auth::nonce_only([7; 8])), src, false).unwrap();
            assert_eq!(n, 61);
            assert_eq!(u16::from_be_bytes([buf[13 + 42], buf[13 + 43]]), sum);
            let pkt = TeredoPacket::parse(&buf[..n]).unwrap();
            assert_eq!(
                RouterSolicitation::parse(pkt.ipv6).unwrap(),
                RouterSolicitation { src, cone }
            );
            for k in 0..pkt.ipv6.len() {
                assert!(RouterSolicitation::parse(&pkt.ipv6[..k]).is_err());
            }
        }
    }

    #[test]
    fn xp_rs_with_slla() {
        let mut buf = [0u8; 128];
        let n = emit_rs(&mut buf, None, LL_XP_RESTRICTED, true).unwrap();
        assert_eq!(n, 40 + 24);
        let rs = RouterSolicitation::parse(&buf[..n]).unwrap();
        assert!(!rs.cone);
    }

    #[test]
    fn rs_rejections() {
        let mut buf = [0u8; 128];
        let n = emit_rs(&mut buf, None, LL_WINDOWS_RESTRICTED, false).unwrap();
        let mut bad = buf;
        bad[7] = 64;
        assert!(RouterSolicitation::parse(&bad[..n]).is_err());
        let mut bad = buf;
        bad[45] ^= 1;
        assert_eq!(
            RouterSolicitation::parse(&bad[..n]),
            Err(WireError::BadChecksum)
        );
        let n2 = emit_rs(&mut buf, None, "2001:db8::1".parse().unwrap(), false).unwrap();
        assert!(RouterSolicitation::parse(&buf[..n2]).is_err());
    }

    /// Found by the `wire` fuzz target (fuzz/regressions/wire/echo-parse-accepted-ip-version-15):
    /// the echo, RS and RA parsers checked the length of "a complete IPv6 packet" but not its
    /// version, so an IPv4 or version-15 header with the right bytes behind it parsed as IPv6.
    #[test]
    fn fuzz_wire_parsers_accepted_a_non_ipv6_version() {
        use crate::wire::ipv6::Echo;
        let mut echo = [0u8; 56];
        let e = Echo {
            reply: true,
            id: 1,
            seq: 2,
            data: b"12345678",
        };
        let n = e
            .emit(
                &mut echo,
                "2001:db8::1".parse().unwrap(),
                "2001::1".parse().unwrap(),
                64,
            )
            .unwrap();
        let mut rs = [0u8; 48];
        emit_rs(&mut rs, None, LL_WINDOWS_RESTRICTED, false).unwrap();
        let mut ra = miredo_ra("1122334455667788");
        let ra = &mut ra[21..];
        assert!(Echo::parse(&echo[..n]).is_ok());
        assert!(RouterSolicitation::parse(&rs).is_ok());
        assert!(RouterAdvertisement::parse(ra).is_ok());
        for version in [0u8, 4, 15] {
            echo[0] = version << 4;
            rs[0] = version << 4;
            ra[0] = version << 4;
            let err = WireError::BadVersion(version);
            assert_eq!(Echo::parse(&echo[..n]), Err(err));
            assert_eq!(RouterSolicitation::parse(&rs), Err(err));
            assert_eq!(RouterAdvertisement::parse(ra), Err(err));
        }
    }
}
