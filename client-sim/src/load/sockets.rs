//! The real UDP sockets of one simulated client behind its NAT model: when they open, when
//! they close, and how many the process holds.
//!
//! Every client's NAT model has the one `--bind` address as its external address, and every
//! mapping it creates is a real socket bound on that address and the mapping's port. The
//! rules:
//!
//! * **Ports come from sockets that could be bound.** A new mapping's port is still chosen by
//!   the model (preserving, sequential, random: its preset's behaviour), but every endpoint
//!   the model would take is first bound ([`Binder::check`], through
//!   [`netsim::Nat::outbound_checked`]); one already bound by another client
//!   (`EADDRINUSE`) is skipped as a port in use, exactly as the model skips its own. At most
//!   [`MAX_BIND_TRIES`] binds per new mapping. A mapping that gets no socket is dropped by
//!   the model (no mapping, `no_port`) and counted in `loadgen_socket_errors_total{reason}`
//!   ([`SocketFailure`]); a client whose qualification then fails ends `error`, not
//!   `server_unreachable`.
//! * **A socket is open exactly while its mapping can receive** ([`netsim::Nat::receives_on`]):
//!   closed when the model expires the mapping (checked after every outbound datagram, timer
//!   and refused inbound datagram). The client's first socket, bound on a kernel-chosen port
//!   before any mapping exists, gives the client its internal port (so a port-preserving
//!   NAT maps it onto that very socket); if the first mapping lands elsewhere (random ports)
//!   it is closed.
//! * **A mapping the client can no longer use is ended in the model too**, so that a mapping
//!   the model keeps always has its socket: once qualified, the mapping toward the secondary
//!   server (the secondary check's M2, when it is not the client's own mapping M1 — under a
//!   dependent mapping behaviour) can only ever admit datagrams from the secondary server
//!   (its filtering holds that one permit), and all that server sends are RAs to RSs sent
//!   there; a qualified client has none outstanding (its refreshes go to the primary), so it
//!   would drop them (`bad_nonce`). The driver removes the mapping
//!   ([`netsim::Nat::remove_mapping`]) and closes its socket; if the client starts over, its
//!   next RS to the secondary gets a fresh mapping. (There is no separate cone-probe mapping:
//!   the cone RS goes to the primary server's address and port like the restricted RS, so
//!   every mapping behaviour gives them one mapping.)
//! * At most [`MAX_SOCKETS`](super::worker::MAX_SOCKETS) sockets a client; beyond, the oldest
//!   mapping other than the one toward the primary server is removed with its socket.
//!
//! So a client holds one socket (no NAT, an endpoint-independent NAT) or, behind a dependent
//! mapping, two while its secondary check runs and one once qualified (plus one per relay or
//! peer it then talks to, as a real symmetric NAT would map them).

use std::io;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use netsim::{NatConfig, PortCheck};
use teredo_rt::{bind_udp, UdpOptions};
use tokio::net::UdpSocket;

/// Binds tried for one new mapping before giving up (`ports_in_use`).
pub const MAX_BIND_TRIES: u32 = 1024;

/// Sockets the open-file limit is sized for, per client: one, two behind a NAT whose mapping
/// depends on the destination (the secondary check's second mapping), three when a data
/// phase follows there (the relay's or peer's mapping besides the server's).
pub fn sockets_per_client(nat: Option<&NatConfig>, data_phase: bool) -> u64 {
    let dependent = nat.is_some_and(|c| c.mapping != netsim::MappingBehavior::EndpointIndependent);
    match (dependent, data_phase) {
        (false, _) => 1,
        (true, false) => 2,
        (true, true) => 3,
    }
}

/// Client sockets the process holds now and at most so far.
#[derive(Debug, Default)]
pub struct SocketGauge {
    open: AtomicU64,
    peak: AtomicU64,
    /// Failures by [`SocketFailure`], in the order of [`SOCKET_FAILURES`].
    failures: [AtomicU64; 3],
}

impl SocketGauge {
    fn opened(&self) {
        let now = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// Sockets open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// The most sockets open at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Counts a failure.
    pub fn failed(&self, f: SocketFailure) {
        if let Some(c) = self.failures.get(f as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Failures so far, by reason (every reason, zeros included).
    pub fn failures(&self) -> Vec<(String, u64)> {
        SOCKET_FAILURES
            .iter()
            .zip(&self.failures)
            .map(|(r, c)| ((*r).to_owned(), c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Why a client socket could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketFailure {
    /// Every port tried was bound already ([`MAX_BIND_TRIES`], or the model ran out).
    PortsInUse = 0,
    /// The process or the system is out of descriptors (`EMFILE`, `ENFILE`).
    OpenFiles = 1,
    /// Anything else (`ENOBUFS`, …).
    Other = 2,
}

/// Labels of `loadgen_socket_errors_total{reason}`, in [`SocketFailure`]'s order.
pub const SOCKET_FAILURES: &[&str] = &["ports_in_use", "open_files", "other"];

impl SocketFailure {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        SOCKET_FAILURES
            .get(self as usize)
            .copied()
            .unwrap_or("other")
    }

    /// What a failed `socket`/`bind` means here (`None`: the port is taken, try another).
    /// `teredo_rt` keeps the error kind but not the OS code, so the descriptor errors are
    /// told by theirs in the message.
    pub fn of(e: &io::Error) -> Option<Self> {
        if e.kind() == io::ErrorKind::AddrInUse {
            return None;
        }
        let code = e.raw_os_error().or_else(|| {
            let msg = e.to_string();
            let at = msg.rfind("(os error ")?;
            msg.get(at + 10..)?.trim_end_matches(')').parse().ok()
        });
        Some(match code {
            Some(libc::EMFILE | libc::ENFILE) => Self::OpenFiles,
            _ => Self::Other,
        })
    }
}

/// One open client socket, counted in its [`SocketGauge`] until dropped.
#[derive(Debug)]
pub struct ClientSocket {
    /// The address it is bound to (a NAT mapping's external endpoint, or the client's own).
    pub addr: SocketAddrV4,
    /// The socket.
    pub socket: UdpSocket,
    gauge: Arc<SocketGauge>,
}

impl ClientSocket {
    /// Binds `addr` (port 0: the kernel's choice, `addr` then says which).
    pub fn bind(
        addr: SocketAddrV4,
        opts: &UdpOptions,
        gauge: &Arc<SocketGauge>,
    ) -> io::Result<Self> {
        let socket = bind_udp(addr, opts)?;
        let addr = match socket.local_addr()? {
            std::net::SocketAddr::V4(a) => a,
            other => return Err(io::Error::other(format!("bound to {other}"))),
        };
        gauge.opened();
        Ok(Self {
            addr,
            socket,
            gauge: Arc::clone(gauge),
        })
    }
}

impl Drop for ClientSocket {
    fn drop(&mut self) {
        self.gauge.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers the NAT model's [`PortCheck`]s for one outbound datagram by binding the offered
/// endpoints.
pub struct Binder<'a> {
    opts: &'a UdpOptions,
    gauge: &'a Arc<SocketGauge>,
    /// What the client holds already (its first socket, before any mapping sits on it).
    held: &'a [ClientSocket],
    /// Sockets bound for new mappings.
    pub opened: Vec<ClientSocket>,
    tries: u32,
    /// Why the last mapping got no socket, if it did not.
    pub failure: Option<SocketFailure>,
}

impl<'a> Binder<'a> {
    /// A binder for a client holding `held`.
    pub fn new(
        opts: &'a UdpOptions,
        gauge: &'a Arc<SocketGauge>,
        held: &'a [ClientSocket],
    ) -> Self {
        Self {
            opts,
            gauge,
            held,
            opened: Vec::new(),
            tries: 0,
            failure: None,
        }
    }

    /// The answer for `external`: usable when the client holds it or it could be bound now.
    pub fn check(&mut self, external: SocketAddrV4) -> PortCheck {
        if self
            .held
            .iter()
            .chain(&self.opened)
            .any(|s| s.addr == external)
        {
            return PortCheck::Usable;
        }
        if self.tries >= MAX_BIND_TRIES {
            self.failure = Some(SocketFailure::PortsInUse);
            return PortCheck::Stop;
        }
        self.tries += 1;
        match ClientSocket::bind(external, self.opts, self.gauge) {
            Ok(s) => {
                self.failure = None;
                self.opened.push(s);
                PortCheck::Usable
            }
            Err(e) => match SocketFailure::of(&e) {
                None => {
                    self.failure = Some(SocketFailure::PortsInUse);
                    PortCheck::Taken
                }
                Some(f) => {
                    tracing::debug!(%external, error = %e, "cannot open a NAT mapping's socket");
                    self.failure = Some(f);
                    PortCheck::Stop
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Instant;

    use netsim::{Nat, NatPreset, Outbound};

    use super::*;

    fn opts() -> UdpOptions {
        UdpOptions {
            recv_buffer_size: None,
            send_buffer_size: None,
            ..UdpOptions::default()
        }
    }

    #[test]
    fn failures_are_classified() {
        let taken = io::Error::new(io::ErrorKind::AddrInUse, "x");
        assert_eq!(SocketFailure::of(&taken), None);
        assert_eq!(
            SocketFailure::of(&io::Error::from_raw_os_error(libc::EMFILE)),
            Some(SocketFailure::OpenFiles)
        );
        // As teredo_rt annotates it: the kind survives, the code only in the message.
        let annotated = io::Error::other(
            "cannot create UDP socket for 1.2.3.4:5: Too many open files (os error 24)",
        );
        assert_eq!(
            SocketFailure::of(&annotated),
            Some(SocketFailure::OpenFiles)
        );
        assert_eq!(
            SocketFailure::of(&io::Error::from_raw_os_error(libc::ENOBUFS)),
            Some(SocketFailure::Other)
        );
        assert_eq!(SocketFailure::OpenFiles.as_str(), "open_files");
    }

    #[test]
    fn estimate_follows_the_mapping_behaviour() {
        let ip = vec![Ipv4Addr::LOCALHOST];
        let cfg = |p: NatPreset| p.config(ip.clone(), 1).ok().flatten();
        assert_eq!(sockets_per_client(None, true), 1);
        let cone = cfg(NatPreset::PortRestricted);
        assert_eq!(sockets_per_client(cone.as_ref(), true), 1);
        let sym = cfg(NatPreset::Symmetric);
        assert_eq!(sockets_per_client(sym.as_ref(), false), 2);
        assert_eq!(sockets_per_client(sym.as_ref(), true), 3);
    }

    /// Two clients' NATs on one address whose random draws collide: the second gets a port
    /// the kernel let it bind, the gauge counts both sockets and their closing.
    #[tokio::test]
    async fn a_port_bound_elsewhere_is_skipped_and_sockets_are_counted() {
        let lo = Ipv4Addr::LOCALHOST;
        let gauge = Arc::new(SocketGauge::default());
        let o = opts();
        let now = Instant::now();
        let server = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 3544);
        let internal = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 2), 40_000);
        // Twin NATs (one seed): the same draws, so the second one's first choice is taken.
        let cfg = NatPreset::Symmetric
            .config(vec![lo], 99)
            .ok()
            .flatten()
            .unwrap();
        let mut a = Nat::new(cfg.clone());
        let mut b = Nat::new(cfg);
        let mut first = Binder::new(&o, &gauge, &[]);
        let r = a.outbound_checked(now, internal, server, &mut |e| first.check(e));
        let Ok(Outbound::Forward(ta)) = r else {
            // The model's port happened to be bound by someone else on this host.
            return;
        };
        assert_eq!(first.opened.len(), 1);
        assert_eq!(first.opened[0].addr, ta.external);
        let mut second = Binder::new(&o, &gauge, &[]);
        let Ok(Outbound::Forward(tb)) =
            b.outbound_checked(now, internal, server, &mut |e| second.check(e))
        else {
            panic!("no mapping for the second client");
        };
        assert_ne!(tb.external, ta.external);
        assert_eq!(second.opened.last().map(|s| s.addr), Some(tb.external));
        assert_eq!(gauge.open(), 2);
        drop(first);
        drop(second);
        assert_eq!(gauge.open(), 0);
        assert_eq!(gauge.peak(), 2);
    }

    /// A socket the client holds is usable without a bind; an exhausted budget stops.
    #[tokio::test]
    async fn held_sockets_are_usable_and_tries_are_bounded() {
        let gauge = Arc::new(SocketGauge::default());
        let o = opts();
        let own =
            ClientSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), &o, &gauge).unwrap();
        let held = [own];
        let mut b = Binder::new(&o, &gauge, &held);
        assert_eq!(b.check(held[0].addr), PortCheck::Usable);
        assert!(b.opened.is_empty());
        // Its own port again from another binder that does not hold it: taken.
        let mut other = Binder::new(&o, &gauge, &[]);
        assert_eq!(other.check(held[0].addr), PortCheck::Taken);
        assert_eq!(other.failure, Some(SocketFailure::PortsInUse));
        other.tries = MAX_BIND_TRIES;
        assert_eq!(
            other.check(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1)),
            PortCheck::Stop
        );
        assert_eq!(gauge.open(), 1);
    }
}
