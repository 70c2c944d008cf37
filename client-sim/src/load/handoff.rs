//! What a Teredo client's task lends the `mmsg` engine for the trials ([`Handoff`]), and
//! what the engine hands back to the task meanwhile ([`Inbound`]).
//!
//! Qualification and the warm-up run in the client's task as always (state machine, NAT
//! model, bubbles, the relay's trust). When the trials begin, a client that was answered in
//! the warm-up lends the engine a duplicate of the socket its warm-up probe went out on,
//! the datagram its state machine emitted for that probe ([`Template`]) and its next
//! sequence number. From then on the engine owns the socket's receive side: it recognises
//! the answers itself and sends everything else that arrives (bubbles, router
//! advertisements of a refresh, ICMPv6 errors, strays the NAT model would filter) to the
//! task over a bounded channel of [`INBOX`] datagrams — a full one drops and counts — so
//! the state machine and the NAT model keep running. The task stops reading that socket
//! while it is lent (it keeps sending on it: bubbles, refreshes) and reads it again once
//! the engine closes the channel, after the last trial.

use std::net::SocketAddrV4;
use std::os::fd::OwnedFd;

use super::template::Template;

/// Datagrams that may wait for a client's task; more are dropped (and counted).
pub const INBOX: usize = 64;

/// A client's socket and captured packet, lent to the `mmsg` engine.
#[derive(Debug)]
pub struct Handoff {
    /// The client's number (the stamp's `client`).
    pub client: u32,
    /// A duplicate of the mapping socket the template went out on.
    pub fd: OwnedFd,
    /// The datagram to send, stamped in place.
    pub template: Template,
    /// The client's next sequence number.
    pub seq: u32,
    /// Where the engine sends what is not an answer.
    pub inbox: tokio::sync::mpsc::Sender<Inbound>,
}

/// A datagram the engine read on a lent socket that is not an answer.
#[derive(Debug)]
pub struct Inbound {
    /// The socket's (external, post-NAT) address.
    pub at: SocketAddrV4,
    /// Its source.
    pub from: SocketAddrV4,
    /// Its bytes.
    pub data: Vec<u8>,
}
