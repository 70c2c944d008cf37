//! The Sequential Port-Symmetric NAT extension (RFC 6081 §3.4, §5.5), sans-IO: the echo
//! test. Enabled by [`ClientConfig::sequential`] (with `port_preserving`, the RFC's
//! dependency).
//!
//! Behind a symmetric NAT that is not port-preserving, the client assumes the NAT hands out
//! ports in sequence. When it would send an indirect bubble to a peer it does not trust and
//! has no random port for, it opens a random local port instead and sends three packets from
//! it (§5.5.4.1.1): an RS to the primary server address (nonce 1), a direct bubble to the
//! peer, an RS to the secondary address (nonce 2). The two RAs' origin indications give the
//! external ports before and after the bubble's (§5.5.4.4); the bubble's is predicted to be
//! their midpoint, `(Lower + Upper) / 2` rounded down (the RFC prints "EchoTestUpperPort +
//! EchoTestUpperPort", an erratum: the midpoint of §3.4 is meant), and the deferred indirect
//! bubble goes out with it in a Random Port trailer (§5.5.4.2). Without both RAs, the
//! Echo Test Failover Timer (1 s after the first test, 2 s after the second, §5.5.2.2)
//! starts a second test, then sends the indirect bubble without a trailer. The bubble's
//! destination is the peer's random port when it advertised one, else its embedded mapping.
//!
//! *Reading:* a finished test (both ports known) cancels its failover timer — the timer
//! "runs whenever an Echo Test is in progress" (§5.5.2); a failed test is not repeated on
//! the next probe, only after the Peer Refresh Timer reset its counter (§5.5.2.1), which
//! leaves a test in progress alone.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::addr::{TeredoAddr, TEREDO_PORT};
use crate::io::{Kind, Local};
use crate::wire::auth::Auth;
use crate::wire::ndp::emit_rs;

use super::bubbles::{bubble_bytes, bubble_with_port, Extra};
use super::*;

/// Echo tests per peer before the indirect bubble goes without a prediction (§5.5.2.2).
pub const ECHO_TEST_TRIES: u8 = 2;

/// The predicted external port of the echo test's bubble: the midpoint of the two RAs'
/// ports, rounded down (§5.5.4.4 with its erratum corrected).
pub fn predict_port(lower: u16, upper: u16) -> u16 {
    ((u32::from(lower) + u32::from(upper)) / 2) as u16
}

/// A peer's echo test (§5.5.1).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct EchoTest {
    /// "EchoTestNonce1": the RS to the primary address.
    pub(super) nonce1: Option<[u8; 8]>,
    /// "EchoTestNonce2": the RS to the secondary address.
    pub(super) nonce2: Option<[u8; 8]>,
    /// "EchoTestLowerPort"; 0 = no RA yet.
    pub(super) lower: u16,
    /// "EchoTestUpperPort"; 0 = no RA yet.
    pub(super) upper: u16,
    /// "EchoTestRetryCounter".
    pub(super) retries: u8,
    /// The Echo Test Failover Timer, while a test is in progress.
    pub(super) failover: Option<Instant>,
}

impl Client {
    /// The profile runs §5.5 (it depends on §5.4 and symmetric NAT support).
    pub(super) fn ss_active(&self) -> bool {
        self.pp_active() && self.cfg.sequential
    }

    /// §5.5.4.1.1: the three packets of an echo test from the local port `l`, then the
    /// counter and the failover timer. `echo` is the nonce the bubble echoes.
    pub(super) fn start_echo_test(
        &mut self,
        now: Instant,
        addr: Ipv6Addr,
        l: u16,
        own: Ipv6Addr,
        echo: Option<[u8; 4]>,
    ) -> Vec<Extra> {
        let (mut n1, mut n2) = ([0u8; 8], [0u8; 8]);
        self.rng.fill_bytes(&mut n1);
        self.rng.fill_bytes(&mut n2);
        let target = self
            .random_port_target(&addr)
            .or_else(|| TeredoAddr::from_ipv6(&addr).map(|t| t.mapped));
        let server = |ip: Ipv4Addr| SocketAddrV4::new(ip, TEREDO_PORT);
        let mut out = vec![(
            Local::Port(l),
            server(self.cfg.server),
            Kind::RouterSolicitation,
            self.echo_rs(n1),
        )];
        if let Some(to) = target {
            out.push((
                Local::Port(l),
                to,
                Kind::Bubble,
                bubble_bytes(own, addr, echo),
            ));
        }
        out.push((
            Local::Port(l),
            server(self.cfg.secondary_addr()),
            Kind::RouterSolicitation,
            self.echo_rs(n2),
        ));
        let Some(p) = self.peers.get_mut(&addr) else {
            return Vec::new();
        };
        let test = &mut p.ports.echo;
        test.nonce1 = Some(n1);
        test.nonce2 = Some(n2);
        test.lower = 0;
        test.upper = 0;
        test.retries = test.retries.saturating_add(1);
        let old = test.failover.take();
        test.failover = after(now, Duration::from_secs(u64::from(test.retries)));
        let new = test.failover;
        p.last_tx = Some(now);
        if let Some(t) = old {
            self.ports.failovers.remove(&(t, addr));
        }
        if let Some(t) = new {
            self.ports.failovers.insert((t, addr));
        }
        self.counters.echo_tests_started += 1;
        tracing::debug!(peer = %addr, port = l, "client echo test");
        out
    }

    /// An RS with the restricted link-local and an authentication header carrying `nonce`.
    fn echo_rs(&self, nonce: [u8; 8]) -> Vec<u8> {
        let mut b = vec![0u8; MAX_RS_LEN];
        let auth = Auth::nonce_only(nonce);
        let len = emit_rs(
            &mut b,
            Some(&auth),
            self.cfg.ll_restricted,
            self.cfg.xp_slla,
        )
        .unwrap_or(0);
        b.truncate(len);
        b
    }

    /// The peer whose echo test sent the RS with this nonce, and the server address that RS
    /// went to.
    pub(super) fn echo_test_of(&self, nonce: &[u8; 8]) -> Option<(Ipv6Addr, Ipv4Addr)> {
        self.ports.open.values().find_map(|a| {
            let t = self.peers.get(a)?.ports.echo;
            if t.nonce1 == Some(*nonce) {
                Some((*a, self.cfg.server))
            } else if t.nonce2 == Some(*nonce) {
                Some((*a, self.cfg.secondary_addr()))
            } else {
                None
            }
        })
    }

    /// §5.5.4.4: the accepted RA answering an echo test's RS reported external `port`; with
    /// both ports known, predict and send the deferred indirect bubble.
    pub(super) fn echo_test_port(
        &mut self,
        now: Instant,
        addr: Ipv6Addr,
        nonce: &[u8; 8],
        port: u16,
    ) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let test = &mut p.ports.echo;
        if test.nonce1 == Some(*nonce) && test.lower == 0 {
            test.lower = port;
        }
        if test.nonce2 == Some(*nonce) && test.upper == 0 {
            test.upper = port;
        }
        if test.lower == 0 || test.upper == 0 || p.ports.random != 0 {
            return;
        }
        p.ports.random = predict_port(test.lower, test.upper);
        if let Some(t) = test.failover.take() {
            self.ports.failovers.remove(&(t, addr));
        }
        self.counters.echo_test_predictions += 1;
        tracing::debug!(peer = %addr, port = p.ports.random, "client predicted its port");
        self.send_indirect(now, addr);
    }

    /// An indirect bubble on its own (§5.2.4.1 with a fresh nonce; §5.5.4.2: with the
    /// Random Port trailer when there is a prediction).
    pub(super) fn send_indirect(&mut self, now: Instant, addr: Ipv6Addr) {
        let Some(own) = self.address else {
            return;
        };
        let Some(t) = TeredoAddr::from_ipv6(&addr) else {
            return;
        };
        let fresh = self
            .cfg
            .symmetric_support
            .then(|| self.rng.next_u32().to_be_bytes());
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        if let Some(n) = fresh {
            p.nonce_sent = [Some(n), p.nonce_sent[0]];
        }
        p.last_tx = Some(now);
        let trailer = (p.ports.random != 0).then_some(p.ports.random);
        let bytes = bubble_with_port(own, addr, fresh, trailer);
        let to = SocketAddrV4::new(t.server, TEREDO_PORT);
        self.push_extras(vec![(Local::Primary, to, Kind::IndirectBubble, bytes)]);
    }

    /// §5.5.2.2: the due failover timers: a second test, or the indirect bubble.
    pub(super) fn fire_failovers(&mut self, now: Instant) {
        let symmetric = self.cfg.symmetric_support;
        while let Some(&(at, addr)) = self.ports.failovers.first() {
            if at > now {
                break;
            }
            self.ports.failovers.remove(&(at, addr));
            let Some(p) = self.peers.get_mut(&addr) else {
                continue;
            };
            if p.ports.echo.failover != Some(at) {
                continue;
            }
            p.ports.echo.failover = None;
            if p.trusted {
                continue;
            }
            let echo = p.nonce_received.filter(|_| symmetric);
            match (p.ports.echo.retries, p.ports.local, self.address) {
                (r, Some(l), Some(own)) if r < ECHO_TEST_TRIES => {
                    let extra = self.start_echo_test(now, addr, l, own, echo);
                    self.push_extras(extra);
                }
                _ => self.send_indirect(now, addr),
            }
        }
    }
}
