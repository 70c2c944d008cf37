//! `relay-bench --memory N`: fills a relay's peer table with `N` trusted peers through the
//! real path and reads the relay's resident memory before and after.
//!
//! Each [`Peer::wide`] peer (distinct global mapping, matching Teredo address) is made
//! trusted the way [`crate::runner::establish_trust`] does it, but streamed (frames are
//! built as they are sent, one bit of state per peer): the native host sends one packet to
//! the peer's Teredo address, the relay queues it and sends an indirect bubble to the
//! server (played here), the peer answers with a direct bubble from its mapping, and the
//! relay releases the queued packet to the mapping, which confirms the peer.
//!
//! Trigger packets are paced (`rate` per second) so that the whole table fills well within
//! the relay's idle timeout (60 s): a million peers at 25 k/s take 40 s.

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::afpacket::PacketSocket;
use crate::frames::{
    direct_bubble_frame, n2t_frame, Peer, NATIVE_HOST, SERVER_V4, TEREDO_PORT, WIDE_NET,
};
use crate::runner::{check_stop, drain_teredo, Generator};
use crate::topo::INET_IF;

/// What filling the table took.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FillReport {
    /// Peers asked for.
    pub peers: u32,
    /// Native packets sent (one per peer).
    pub triggers: u64,
    /// Indirect bubbles the relay sent (and the generator answered).
    pub indirect_bubbles: u64,
    /// Peers whose queued packet came out: trusted.
    pub confirmed: u64,
    /// Seconds it took.
    pub secs: f64,
}

/// Makes peers `0..n` ([`Peer::wide`]) trusted at `rate` native packets per second; waits
/// up to 5 s after the last one for the answers. Call inside the generator's namespace.
pub fn fill(gen: &Generator, n: u32, rate: f64) -> Result<FillReport> {
    const SLICE: Duration = Duration::from_millis(2);
    let per_slice = ((rate * SLICE.as_secs_f64()) as u32).max(1);
    let rx = PacketSocket::receiver(INET_IF, 256 << 20)?;
    let start = Instant::now();
    let mut confirmed = vec![false; n as usize];
    let mut report = FillReport {
        peers: n,
        ..FillReport::default()
    };
    let server = SocketAddrV4::new(SERVER_V4, TEREDO_PORT);
    let mut next_peer = 0u32;
    let mut replies: VecDeque<Vec<u8>> = VecDeque::new();
    let mut next_slice = Instant::now();
    let mut end: Option<Instant> = None;
    let mut buf = vec![0u8; 2048];
    let mut last_progress = Instant::now();
    loop {
        check_stop()?;
        let now = Instant::now();
        if now >= next_slice {
            next_slice = now + SLICE;
            let to = (next_peer + per_slice).min(n);
            let triggers: Vec<Vec<u8>> =
                (next_peer..to).map(|i| n2t_frame(&Peer::wide(i))).collect();
            let refs: Vec<&[u8]> = triggers.iter().map(Vec::as_slice).collect();
            gen.native.send_frames(&refs);
            report.triggers += u64::from(to - next_peer);
            next_peer = to;
            let k = replies.len().min(2 * per_slice as usize + 64);
            let batch: Vec<Vec<u8>> = replies.drain(..k).collect();
            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            gen.inet.send_frames(&refs);
            if next_peer == n && end.is_none() {
                end = Some(now + Duration::from_secs(5));
            }
            if now.duration_since(last_progress) >= Duration::from_secs(5) {
                last_progress = now;
                eprintln!(
                    "relay-bench: memory: {} of {n} native packets sent, {} bubbles answered, {} \
                     peers trusted ({:.0} s)",
                    next_peer,
                    report.indirect_bubbles,
                    report.confirmed,
                    start.elapsed().as_secs_f64()
                );
            }
        }
        let finished = report.confirmed == u64::from(n) || end.is_some_and(|e| now >= e);
        if finished && replies.is_empty() {
            break;
        }
        drain_teredo(&rx, &mut buf, next_slice, 1024, |u, src6, dst6| {
            if u.dst == server {
                if let Some(p) = Peer::wide_from_addr(&dst6).filter(|p| p.index < n) {
                    report.indirect_bubbles += 1;
                    replies.push_back(direct_bubble_frame(&p, u.src, src6));
                }
            } else if u.dst.ip().octets()[..3] == WIDE_NET.octets()[..3] && src6 == NATIVE_HOST {
                if let Some(p) = Peer::wide_from_addr(&dst6).filter(|p| u.dst == p.mapped) {
                    if let Some(c) = confirmed.get_mut(p.index as usize) {
                        if !*c {
                            *c = true;
                            report.confirmed += 1;
                        }
                    }
                }
            }
        })?;
    }
    report.secs = start.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use testkit::metrics::value as metric_value;

    #[test]
    fn metric_values() {
        let text = "# HELP teredo_relay_peers Peer table entries\n\
                    teredo_relay_peers{state=\"trusted\"} 999998\n\
                    teredo_relay_peers{state=\"untrusted\"} 2\n";
        assert_eq!(
            metric_value(text, "teredo_relay_peers{state=\"trusted\"}"),
            Some(999_998.0)
        );
        assert_eq!(
            metric_value(text, "teredo_relay_peers{state=\"untrusted\"}"),
            Some(2.0)
        );
        assert_eq!(metric_value(text, "teredo_relay_peers"), None);
    }
}
