//! The `--ceiling` reflector: a UDP echo on loopback in its own thread, on the same engine
//! as the generator (`tokio`: one `recvfrom`/`sendto` per datagram, as before; `mmsg`:
//! `recvmmsg`/`sendmmsg` batches of 64), its socket buffers the default 4 MiB (8 MiB granted):
//! room for a burst, not for seconds of queueing that would show as RTT. Also the kernel's per-socket drop counters
//! (`/proc/net/udp`), which tell whether the generator or the reflector lost a packet.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use teredo_rt::batch::{enable_udp_gro, RecvBatch, SendBatch};
use teredo_rt::MAX_DATAGRAM;

use super::engine::Engine;

/// Datagrams per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 64;

/// What the reflector did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoCounts {
    /// Datagrams read.
    pub received: u64,
    /// Datagrams sent back.
    pub echoed: u64,
}

/// A running reflector.
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddrV4,
    /// Its socket's inode (to find its drop counter).
    pub inode: Option<u64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<EchoCounts>>,
}

impl Echo {
    /// Starts the reflector on 127.0.0.1, an ephemeral port; `gro`: the `mmsg` reflector
    /// reads a client's run as one buffer where the kernel merged it.
    pub fn start(engine: Engine, gro: bool) -> anyhow::Result<Self> {
        let opts = teredo_rt::UdpOptions::default();
        let socket: UdpSocket =
            teredo_rt::bind_udp_std(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), &opts)
                .context("cannot open the echo socket")?;
        let addr = match socket.local_addr()? {
            SocketAddr::V4(a) => a,
            other => bail!("echo socket bound to {other}"),
        };
        let inode = socket_inode(&socket);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let body: Box<dyn FnOnce() -> EchoCounts + Send> = match engine {
            Engine::Tokio => {
                socket
                    .set_nonblocking(false)
                    .context("cannot configure the echo socket")?;
                socket
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .context("cannot configure the echo socket")?;
                Box::new(move || one_by_one(&socket, &flag))
            }
            Engine::Mmsg => Box::new(move || batched(&socket, &flag, gro)),
        };
        let thread = std::thread::Builder::new()
            .name("load-echo".into())
            .spawn(body)
            .context("cannot start the echo thread")?;
        Ok(Self {
            addr,
            inode,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the reflector; what it did.
    pub fn finish(mut self) -> EchoCounts {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `tokio` engine's reflector: one system call per datagram each way.
fn one_by_one(socket: &UdpSocket, stop: &AtomicBool) -> EchoCounts {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut c = EchoCounts::default();
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            c.received += 1;
            if n < buf.len() && socket.send_to(&buf[..n], from).is_ok() {
                c.echoed += 1;
            }
        }
    }
    c
}

/// The `mmsg` engine's reflector: batches of [`BATCH`] each way.
fn batched(socket: &UdpSocket, stop: &AtomicBool, gro: bool) -> EchoCounts {
    let fd = socket.as_raw_fd();
    // Runs from one client arrive as one buffer (where the kernel merges them).
    let gro = gro && enable_udp_gro(fd).is_ok();
    let mut rb = RecvBatch::new(BATCH, MAX_DATAGRAM + 1);
    if gro {
        rb = rb.with_control();
    }
    let mut sb = SendBatch::new(BATCH, BATCH * (MAX_DATAGRAM + 1), true);
    let mut c = EchoCounts::default();
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = rb.recv(fd, BATCH) else {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd we own.
            let _ = unsafe { libc::poll(&raw mut p, 1, 50) };
            continue;
        };
        for i in 0..n {
            let d = rb.get(i);
            let (false, Some(from)) = (d.truncated, d.from) else {
                continue;
            };
            let seg = d.segment_size.unwrap_or(d.data.len()).max(1);
            for one in d.data.chunks(seg) {
                c.received += 1;
                if !sb.push(one, from, 0) {
                    flush(fd, &mut sb, &mut c);
                    sb.push(one, from, 0);
                }
            }
        }
        flush(fd, &mut sb, &mut c);
    }
    c
}

/// Sends what `sb` holds back, counting it.
fn flush(fd: std::os::fd::RawFd, sb: &mut SendBatch, c: &mut EchoCounts) {
    let mut echoed = 0;
    if sb
        .send(fd, |s| {
            if s.error.is_none() {
                echoed += s.datagrams as u64;
            }
        })
        .is_err()
    {
        // Send buffer full: what is left is lost (the generator counts it).
        sb.clear();
    }
    c.echoed += echoed;
}

/// The inode of a socket (its name in `/proc/net/udp`).
pub fn socket_inode(socket: &impl std::os::fd::AsRawFd) -> Option<u64> {
    // SAFETY: `stat` is plain data; fstat writes into the one we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a stat buffer.
    (unsafe { libc::fstat(socket.as_raw_fd(), &raw mut st) } == 0).then_some(st.st_ino)
}

/// Datagrams the kernel dropped at full receive buffers since the sockets were opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketDrops {
    /// At this process's sockets other than the reflector's (the generator's).
    pub generator: u64,
    /// At the reflector's socket.
    pub reflector: u64,
}

/// Sums the `drops` column of `/proc/net/udp` text over `ours` (inodes), the `reflector`
/// inode apart.
pub fn parse_udp_drops(text: &str, ours: &HashSet<u64>, reflector: Option<u64>) -> SocketDrops {
    let mut d = SocketDrops::default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(inode), Some(drops)) = (
            f.get(9).and_then(|v| v.parse::<u64>().ok()),
            f.get(12).and_then(|v| v.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if Some(inode) == reflector {
            d.reflector += drops;
        } else if ours.contains(&inode) {
            d.generator += drops;
        }
    }
    d
}

/// The drop counters of this process's UDP sockets; `None` when `/proc` is unreadable.
pub fn udp_drops(reflector: Option<u64>) -> Option<SocketDrops> {
    let mut ours = HashSet::new();
    for e in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                if let Ok(n) = n.parse() {
                    ours.insert(n);
                }
            }
        }
    }
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    Some(parse_udp_drops(&text, &ours, reflector))
}

/// Open descriptors of this process.
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UDP: &str = "\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 0100007F:A1B2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 111 2 0000000000000000 5
  2: 0100007F:A1B3 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 222 2 0000000000000000 7
  3: 0100007F:A1B4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 333 2 0000000000000000 11
  garbage
";

    #[test]
    fn drops_split_between_generator_and_reflector() {
        let ours: HashSet<u64> = [111, 222].into();
        assert_eq!(
            parse_udp_drops(UDP, &ours, Some(222)),
            SocketDrops {
                generator: 5,
                reflector: 7
            }
        );
        assert_eq!(
            parse_udp_drops(UDP, &HashSet::new(), None),
            SocketDrops::default(),
            "other processes' sockets do not count"
        );
    }

    #[test]
    fn both_engines_echo_and_count() {
        for (engine, gro) in [
            (Engine::Mmsg, true),
            (Engine::Mmsg, false),
            (Engine::Tokio, false),
        ] {
            let echo = Echo::start(engine, gro).unwrap();
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            for i in 0..5u8 {
                s.send_to(&[i; 30], echo.addr).unwrap();
            }
            let mut buf = [0u8; 64];
            for i in 0..5u8 {
                let (n, from) = s.recv_from(&mut buf).unwrap();
                assert_eq!((&buf[..n], from), (&[i; 30][..], SocketAddr::V4(echo.addr)));
            }
            let inode = echo.inode;
            assert!(inode.is_some());
            let drops = udp_drops(inode).unwrap();
            assert_eq!(drops, SocketDrops::default(), "{engine}");
            let c = echo.finish();
            assert_eq!(
                c,
                EchoCounts {
                    received: 5,
                    echoed: 5
                },
                "{engine}"
            );
        }
        assert!(open_fds().is_some_and(|n| n >= 3));
    }
}
