//! Qualification and maintenance (RFC 4380 §5.2.1, §5.2.2, §5.2.5; RFC 5991 §3; RFC 6081
//! §5.1.1): router solicitations, the probe phases, the checks of router advertisements,
//! refreshes, failures and the dormant state.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::addr::{TeredoAddr, FLAG_CONE, FLAG_RANDOM_MASK, TEREDO_PREFIX, TEREDO_PREFIX_OBSOLETE};
use crate::wire::ndp::RouterAdvertisement;
use crate::wire::TeredoPacket;
use crate::DropReason;

use super::*;

/// What an outstanding exchange is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Cone,
    Restricted,
    /// `cone`: the cone probe got through (UPnP: it may only have met the port mapping).
    Secondary {
        m1: SocketAddrV4,
        cone: bool,
    },
    Refresh,
}

/// RSs of one phase (or one refresh) and their retransmission timer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Exchange {
    pub(super) step: Step,
    /// The RS carries the cone link-local.
    pub(super) cone: bool,
    /// Server address the RSs go to.
    pub(super) to: Ipv4Addr,
    /// RSs sent so far.
    pub(super) sent: u8,
    /// When the latest RS was queued.
    pub(super) last_sent: Instant,
    /// When to resend or give up; `None` = never (timer overflow).
    pub(super) deadline: Option<Instant>,
    /// Nonces of the latest RSs (ring of [`NONCE_RING`]).
    pub(super) nonces: [[u8; 8]; NONCE_RING],
    /// Nonces recorded (the ring is full past [`NONCE_RING`]).
    pub(super) recorded: usize,
}

impl Exchange {
    pub(super) fn has_nonce(&self, n: &[u8; 8]) -> bool {
        self.nonces[..self.recorded.min(NONCE_RING)].contains(n)
    }
}

/// An RS waiting for [`Client::poll_output`].
#[derive(Clone, Copy, Debug)]
pub(super) struct PendingRs {
    pub(super) to: Ipv4Addr,
    pub(super) src: Ipv6Addr,
    pub(super) nonce: [u8; 8],
}

impl Client {
    pub(super) fn router_advertisement(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        pkt: &TeredoPacket<'_>,
    ) -> Result<(), DropReason> {
        if !self.is_server(from) {
            return Err(DropReason::UnexpectedSource);
        }
        let Some(auth) = pkt.auth else {
            return Err(DropReason::BadNonce);
        };
        // RFC 6081 §5.5.4.4: the answer to an echo test's RS (a restricted one).
        if let Some((peer, to)) = self.echo_test_of(&auth.nonce) {
            let mapped = self.check_ra(from, pkt, false, to)?;
            self.echo_test_port(now, peer, &auth.nonce, mapped.port());
            return Ok(());
        }
        let Some(ex) = self.exchange else {
            return Err(DropReason::BadNonce);
        };
        if !ex.has_nonce(&auth.nonce) {
            return Err(DropReason::BadNonce);
        }
        let mapped = self.check_ra(from, pkt, ex.cone, ex.to)?;
        // Accepted. An obsolete 3ffe:831f prefix needs no rewriting here: the address is
        // always built under 2001:0::/32 from the (checked) server field.
        self.exchange = None;
        self.on_ra(now, ex, mapped);
        Ok(())
    }

    /// The checks of an RA after its nonce (see [`Client::handle_udp`]) for an RS with the
    /// cone link-local or not, sent to `to`; the mapping of its origin indication.
    fn check_ra(
        &self,
        from: SocketAddrV4,
        pkt: &TeredoPacket<'_>,
        cone: bool,
        to: Ipv4Addr,
    ) -> Result<SocketAddrV4, DropReason> {
        let primary = self.cfg.server;
        let secondary = self.cfg.secondary_addr();
        let Some(auth) = pkt.auth else {
            return Err(DropReason::BadNonce);
        };
        if auth.confirmation != 0 {
            return Err(DropReason::BadConfirmation);
        }
        let Some(origin) = pkt.origin else {
            return Err(DropReason::MissingOrigin);
        };
        let ra = RouterAdvertisement::parse(pkt.ipv6)?;
        let ll = if cone {
            self.cfg.ll_cone
        } else {
            self.cfg.ll_restricted
        };
        if ra.dst != ll {
            return Err(DropReason::WrongDestination);
        }
        let (prefix, prefix_len) = ra.prefix;
        let p = prefix.octets();
        let known_prefix = p[..4] == TEREDO_PREFIX || p[..4] == TEREDO_PREFIX_OBSOLETE;
        if !known_prefix || prefix_len != 64 || p[4..8] != primary.octets() {
            return Err(DropReason::ForeignPrefix);
        }
        if ra
            .mtu
            .is_some_and(|m| !(MIN_RA_MTU..=MAX_RA_MTU).contains(&m))
        {
            return Err(DropReason::BadMtu);
        }
        let expected = match (cone, to == primary) {
            (false, _) => to,
            (true, true) => secondary,
            (true, false) => primary,
        };
        if *from.ip() != expected {
            return Err(DropReason::UnexpectedServerAddress);
        }
        Ok(origin.0)
    }

    pub(super) fn on_ra(&mut self, now: Instant, ex: Exchange, mapped: SocketAddrV4) {
        tracing::debug!(step = ?ex.step, %mapped, "teredo client accepted RA");
        match ex.step {
            // A UPnP port mapping lets the cone probe's answer in whatever the NAT's
            // filtering: only the secondary comparison RFC 6081 §5.3.3 asks for tells a
            // symmetric NAT, so a UPnP client makes it.
            Step::Cone if self.upnp.enabled && self.cfg.secondary_check => {
                self.mapping = Some(mapped);
                self.set_state(State::Probe(ProbePhase::Secondary));
                self.begin_exchange(
                    now,
                    Step::Secondary {
                        m1: mapped,
                        cone: true,
                    },
                );
            }
            Step::Cone => {
                let nat = self.none_or(mapped, NatType::Cone);
                self.qualify(now, ex, mapped, nat);
            }
            Step::Restricted => {
                self.mapping = Some(mapped);
                if self.cfg.secondary_check {
                    self.set_state(State::Probe(ProbePhase::Secondary));
                    self.begin_exchange(
                        now,
                        Step::Secondary {
                            m1: mapped,
                            cone: false,
                        },
                    );
                } else {
                    let nat = self.none_or(mapped, NatType::Restricted);
                    self.qualify(now, ex, mapped, nat);
                }
            }
            Step::Secondary { m1, cone } => {
                if mapped == m1 {
                    let kind = if cone {
                        NatType::Cone
                    } else {
                        NatType::Restricted
                    };
                    let nat = self.none_or(m1, kind);
                    self.qualify(now, ex, m1, nat);
                } else {
                    let nat = if mapped.ip() != m1.ip() {
                        NatType::SymmetricAddress
                    } else {
                        NatType::SymmetricPort
                    };
                    tracing::debug!(%m1, m2 = %mapped, %nat, "symmetric NAT detected");
                    self.mapping = Some(m1);
                    self.nat = nat;
                    if self.cfg.symmetric_support {
                        self.qualify(now, ex, m1, nat);
                    } else {
                        self.fail(now, ClientError::SymmetricNat);
                    }
                }
            }
            Step::Refresh => {
                if self.mapping != Some(mapped) {
                    let old = self.address;
                    self.mapping = Some(mapped);
                    if mapped == self.local {
                        self.nat = NatType::None;
                    } else if self.nat == NatType::None {
                        self.nat = NatType::Unknown;
                    }
                    let new = self.build_address(mapped, self.qualified_cone);
                    self.address = Some(new);
                    // Peers know the old address; start over with the new one.
                    self.reset_data_path();
                    self.upnp_qualified(mapped);
                    self.ports_qualified(mapped);
                    self.counters.address_changes += 1;
                    tracing::debug!(?old, %new, %mapped, "teredo mapping changed");
                    if let Some(old) = old {
                        self.push_event(Event::AddressChanged { old, new });
                    }
                }
                self.schedule_refresh(now, ex.last_sent);
            }
        }
    }

    pub(super) fn none_or(&self, mapped: SocketAddrV4, nat: NatType) -> NatType {
        if mapped == self.local {
            NatType::None
        } else {
            nat
        }
    }

    pub(super) fn qualify(
        &mut self,
        now: Instant,
        ex: Exchange,
        mapped: SocketAddrV4,
        nat: NatType,
    ) {
        self.mapping = Some(mapped);
        self.nat = nat;
        self.error = None;
        self.qualified_cone = ex.cone;
        self.upnp_qualified(mapped);
        self.ports_qualified(mapped);
        let address = self.build_address(mapped, ex.cone);
        self.address = Some(address);
        self.last_activity = self.last_activity.max(now);
        self.counters.qualifications += 1;
        self.set_state(State::Qualified);
        self.push_event(Event::Qualified { address, nat });
        self.schedule_refresh(now, ex.last_sent);
        self.start_discovery(now);
    }

    /// Address = 2001:0:<server>:<flags>:~port:~IPv4, flags = C (if detected and used) |
    /// random bits (kept while the mapping is unchanged).
    pub(super) fn build_address(&mut self, mapped: SocketAddrV4, cone: bool) -> Ipv6Addr {
        let random = if self.cfg.random_flags {
            match self.random_bits {
                Some((m, bits)) if m == mapped => bits,
                _ => {
                    let bits = (self.rng.next_u32() as u16) & FLAG_RANDOM_MASK;
                    self.random_bits = Some((mapped, bits));
                    bits
                }
            }
        } else {
            0
        };
        let c = if cone && self.cfg.use_cone_flag {
            FLAG_CONE
        } else {
            0
        };
        TeredoAddr {
            server: self.cfg.server,
            flags: c | random,
            mapped,
        }
        .to_ipv6()
    }

    pub(super) fn schedule_refresh(&mut self, now: Instant, rs_sent: Instant) {
        let interval = self.cfg.refresh_interval.max(MIN_TIMER);
        self.next_refresh = match self.cfg.refresh_jitter {
            None => after(rs_sent, interval),
            Some((lo, hi)) => {
                let u = f64::from(self.rng.next_u32()) / f64::from(u32::MAX);
                let (lo, hi) = (f64::from(lo), f64::from(hi));
                let factor = (lo + (hi - lo) * u).clamp(0.5, 1.5);
                let factor = if factor.is_nan() { 1.0 } else { factor };
                let d = Duration::try_from_secs_f64(interval.as_secs_f64() * factor)
                    .unwrap_or(interval);
                after(now, d.max(MIN_TIMER))
            }
        };
    }

    pub(super) fn start_qualification(&mut self, now: Instant) {
        self.reset_data_path();
        self.retry_at = None;
        self.error = None;
        self.nat = NatType::Unknown;
        self.mapping = None;
        self.address = None;
        self.exchange = None;
        self.next_refresh = None;
        self.pending = None;
        if self.cfg.blocked_by_managed_network() {
            self.fail(now, ClientError::ManagedNetwork);
            return;
        }
        let (phase, step) = if self.cfg.cone_probe {
            (ProbePhase::Cone, Step::Cone)
        } else {
            (ProbePhase::Restricted, Step::Restricted)
        };
        self.upnp_request();
        self.set_state(State::Probe(phase));
        self.begin_exchange(now, step);
    }

    pub(super) fn begin_exchange(&mut self, now: Instant, step: Step) {
        let (cone, to) = match step {
            Step::Cone => (true, self.cfg.server),
            Step::Restricted => (false, self.cfg.server),
            Step::Secondary { .. } => (false, self.cfg.secondary_addr()),
            Step::Refresh => (self.qualified_cone, self.cfg.server),
        };
        self.exchange = Some(Exchange {
            step,
            cone,
            to,
            sent: 0,
            last_sent: now,
            deadline: None,
            nonces: [[0; 8]; NONCE_RING],
            recorded: 0,
        });
        self.send_rs(now);
    }

    /// Queues the next RS of the current exchange with a fresh nonce.
    pub(super) fn send_rs(&mut self, now: Instant) {
        let mut nonce = [0u8; 8];
        self.rng.fill_bytes(&mut nonce);
        let retransmit = self.cfg.retransmit.max(MIN_TIMER);
        let (ll_cone, ll_restricted) = (self.cfg.ll_cone, self.cfg.ll_restricted);
        let Some(ex) = self.exchange.as_mut() else {
            return;
        };
        ex.nonces[ex.recorded % NONCE_RING] = nonce;
        ex.recorded = ex.recorded.saturating_add(1);
        ex.sent = ex.sent.saturating_add(1);
        ex.last_sent = now;
        ex.deadline = after(now, retransmit);
        self.pending = Some(PendingRs {
            to: ex.to,
            src: if ex.cone { ll_cone } else { ll_restricted },
            nonce,
        });
    }

    pub(super) fn exchange_failed(&mut self, now: Instant, step: Step) {
        tracing::debug!(?step, "teredo client: no RA after the retries");
        match step {
            Step::Cone => {
                self.set_state(State::Probe(ProbePhase::Restricted));
                self.begin_exchange(now, Step::Restricted);
            }
            Step::Restricted | Step::Refresh => {
                self.mapping = None;
                self.fail(now, ClientError::PrimaryUnreachable);
            }
            Step::Secondary { .. } => {
                self.mapping = None;
                self.fail(now, ClientError::SecondaryUnreachable);
            }
        }
    }

    pub(super) fn fail(&mut self, now: Instant, error: ClientError) {
        self.reset_data_path();
        self.exchange = None;
        self.next_refresh = None;
        self.pending = None;
        self.address = None;
        self.error = Some(error);
        self.counters.failures += 1;
        self.retry_at = match error {
            ClientError::ManagedNetwork => None,
            _ => after(now, self.cfg.offline_retry.max(MIN_TIMER)),
        };
        tracing::debug!(%error, "teredo client offline");
        self.set_state(State::Offline);
        self.push_event(Event::Failed { error });
    }

    pub(super) fn enter_dormant(&mut self) {
        tracing::debug!("teredo client idle: dormant");
        self.reset_data_path();
        self.exchange = None;
        self.next_refresh = None;
        self.pending = None;
        self.address = None;
        self.set_state(State::Dormant);
    }

    pub(super) fn set_state(&mut self, state: State) {
        if self.state != state {
            tracing::debug!(from = %self.state, to = %state, "teredo client state");
            self.state = state;
            self.push_event(Event::StateChanged(state));
        }
    }
}
