//! Captures of the simulated IPv4 Internet: every datagram as a full IPv4 + UDP packet in a
//! classic pcap file (link type 101, raw IP), with virtual timestamps.
//!
//! Headers come from etherparse (IPv4 header checksum and UDP checksum computed, so tshark
//! validates both); the file format from the `pcap-file` crate. The file is little-endian
//! whatever the host, and timestamps are [`EPOCH`] + virtual time, so the same run always
//! gives the same bytes.

use std::net::SocketAddrV4;
use std::time::Duration;

use etherparse::{IpNumber, Ipv4Header, UdpHeader};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

/// Wall-clock time of virtual time zero in the captures: 2024-01-01T00:00:00Z. Fixed, so
/// captures are reproducible.
pub const EPOCH: Duration = Duration::from_secs(1_704_067_200);

/// TTL of the simulated datagrams (as a Linux host sends them).
pub const TTL: u8 = 64;

/// Largest UDP payload an IPv4 packet can carry (65,535 − 20 − 8).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Why a datagram could not be written to a capture.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The payload does not fit in one IPv4 packet.
    #[error("UDP payload of {0} bytes does not fit in an IPv4 packet")]
    TooLarge(usize),
    /// The pcap writer failed.
    #[error("cannot write pcap record: {0}")]
    Write(#[from] pcap_file::PcapError),
}

/// The IPv4 + UDP packet carrying `payload` from `from` to `to`: IHL 5, DF clear (RFC 4380
/// §5.1.2: Teredo never sets DF), TTL [`TTL`], the given IP identification, valid IPv4 header
/// checksum and UDP checksum.
pub fn ipv4_udp(
    from: SocketAddrV4,
    to: SocketAddrV4,
    identification: u16,
    payload: &[u8],
) -> Result<Vec<u8>, PcapError> {
    if payload.len() > MAX_UDP_PAYLOAD {
        return Err(PcapError::TooLarge(payload.len()));
    }
    // Both fit: checked against the maximum above.
    let udp_len = u16::try_from(UdpHeader::LEN + payload.len())
        .map_err(|_| PcapError::TooLarge(payload.len()))?;
    let mut ip = Ipv4Header::new(
        udp_len,
        TTL,
        IpNumber::UDP,
        from.ip().octets(),
        to.ip().octets(),
    )
    .map_err(|_| PcapError::TooLarge(payload.len()))?;
    ip.dont_fragment = false;
    ip.identification = identification;
    ip.header_checksum = ip.calc_header_checksum();
    let udp = UdpHeader::with_ipv4_checksum(from.port(), to.port(), &ip, payload)
        .map_err(|_| PcapError::TooLarge(payload.len()))?;
    let mut out = Vec::with_capacity(Ipv4Header::MIN_LEN + UdpHeader::LEN + payload.len());
    out.extend_from_slice(&ip.to_bytes());
    out.extend_from_slice(&udp.to_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// An in-memory pcap capture (raw IPv4 link type).
#[derive(Debug)]
pub struct PcapLog {
    writer: PcapWriter<Vec<u8>>,
    next_id: u16,
    packets: u64,
    skipped: u64,
}

impl PcapLog {
    /// An empty capture (just the file header).
    pub fn new() -> Self {
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: 65_535,
            datalink: DataLink::RAW,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Little,
        };
        // Writing the header into a Vec cannot fail.
        let writer = match PcapWriter::with_header(Vec::new(), header) {
            Ok(w) => w,
            Err(e) => unreachable!("pcap header into a Vec: {e}"),
        };
        Self {
            writer,
            next_id: 1,
            packets: 0,
            skipped: 0,
        }
    }

    /// Appends one datagram sent at virtual time `at`. A datagram that cannot be represented
    /// (too large) is skipped and counted in [`Self::skipped`].
    pub fn record(&mut self, at: Duration, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let packet = match ipv4_udp(from, to, id, payload) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "datagram left out of the capture");
                self.skipped += 1;
                return;
            }
        };
        // At most 65,535 bytes: fits.
        let len = packet.len() as u32;
        match self
            .writer
            .write_packet(&PcapPacket::new(EPOCH + at, len, &packet))
        {
            Ok(_) => self.packets += 1,
            Err(e) => {
                tracing::debug!(error = %e, "datagram left out of the capture");
                self.skipped += 1;
            }
        }
    }

    /// Appends one native IPv6 packet seen at virtual time `at` (the raw link type carries
    /// IPv4 and IPv6 alike). A packet larger than 65,535 bytes is skipped and counted.
    pub fn record_ipv6(&mut self, at: Duration, packet: &[u8]) {
        let Ok(len) = u32::try_from(packet.len()) else {
            self.skipped += 1;
            return;
        };
        if packet.len() > 65_535 {
            self.skipped += 1;
            return;
        }
        match self
            .writer
            .write_packet(&PcapPacket::new(EPOCH + at, len, packet))
        {
            Ok(_) => self.packets += 1,
            Err(e) => {
                tracing::debug!(error = %e, "packet left out of the capture");
                self.skipped += 1;
            }
        }
    }

    /// Packets written.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Datagrams that could not be written.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The complete file.
    pub fn into_bytes(self) -> Vec<u8> {
        self.writer.into_writer()
    }
}

impl Default for PcapLog {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    #[test]
    fn packet_has_valid_checksums() {
        let from = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 40000);
        let to = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 3544);
        let payload = b"teredo";
        let p = ipv4_udp(from, to, 7, payload).unwrap();
        assert_eq!(p.len(), 20 + 8 + 6);
        let sliced = SlicedPacket::from_ip(&p).unwrap();
        let Some(NetSlice::Ipv4(ip)) = sliced.net else {
            panic!("not IPv4");
        };
        let h = ip.header().to_header();
        assert!(!h.dont_fragment);
        assert_eq!(h.identification, 7);
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let Some(TransportSlice::Udp(udp)) = sliced.transport else {
            panic!("not UDP");
        };
        let u = udp.to_header();
        assert_eq!(u.source_port, 40000);
        assert_eq!(u.destination_port, 3544);
        assert_eq!(
            u.checksum,
            u.calc_checksum_ipv4(&h, payload).unwrap(),
            "UDP checksum"
        );
        assert_eq!(udp.payload(), payload);
    }

    #[test]
    fn oversized_is_refused_and_skipped() {
        let a = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 1);
        assert!(matches!(
            ipv4_udp(a, a, 0, &vec![0; MAX_UDP_PAYLOAD + 1]),
            Err(PcapError::TooLarge(_))
        ));
        assert!(ipv4_udp(a, a, 0, &vec![0; MAX_UDP_PAYLOAD]).is_ok());
        let mut log = PcapLog::new();
        log.record(Duration::ZERO, a, a, &vec![0; MAX_UDP_PAYLOAD + 1]);
        log.record(Duration::from_millis(1500), a, a, b"x");
        assert_eq!((log.packets(), log.skipped()), (1, 1));
        let bytes = log.into_bytes();
        // Little-endian magic, version 2.4, link type 101.
        assert_eq!(&bytes[..4], &0xa1b2_c3d4_u32.to_le_bytes());
        assert_eq!(&bytes[20..24], &101u32.to_le_bytes());
        // One record: header 16 bytes + 29 bytes of packet; timestamp EPOCH + 1.5 s.
        assert_eq!(bytes.len(), 24 + 16 + 29);
        let secs = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
        let usecs = u32::from_le_bytes(bytes[28..32].try_into().unwrap());
        assert_eq!(u64::from(secs), EPOCH.as_secs() + 1);
        assert_eq!(usecs, 500_000);
    }
}
