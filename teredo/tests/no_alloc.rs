//! Proves that the server's RS → RA path (and bubble forwarding) and the relay's trusted
//! path in both directions do not touch the heap: a counting global allocator around
//! `System` counts this thread's allocations while packets are handled, after a warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use teredo::addr::{LL_TEREDO_CONE, LL_WINDOWS_RESTRICTED};
use teredo::io::{Kind, Local, Output};
use teredo::server::{Server, ServerConfig};
use teredo::wire::ndp::emit_rs;
use teredo::wire::packet::MAX_UDP_PAYLOAD;
use teredo::wire::Auth;

/// `System`, counting allocations (and reallocations) per thread, so the test harness's
/// other threads cannot disturb the count.
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the slot may already be gone while a thread exits.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call to `System` unchanged; counting has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

fn rs(auth: Option<&Auth<'_>>, src: std::net::Ipv6Addr) -> Vec<u8> {
    let mut buf = vec![0u8; 128];
    let n = emit_rs(&mut buf, auth, src, false).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn rs_to_ra_and_bubble_forwarding_do_not_allocate() {
    #[allow(clippy::disallowed_methods)] // the server ignores `now`; the API takes one
    let now = Instant::now();
    let primary = Ipv4Addr::new(198, 51, 100, 1);
    let mut server = Server::new(ServerConfig::new(primary));
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD];
    // A nonce-only restricted RS (61 bytes), an auth-less cone RS, and one with a client ID.
    let id_auth = Auth {
        client_id: b"client",
        auth_value: b"value",
        nonce: [9; 8],
        confirmation: 1,
    };
    let inputs = [
        rs(
            Some(&Auth::nonce_only([1, 2, 3, 4, 5, 6, 7, 8])),
            LL_WINDOWS_RESTRICTED,
        ),
        rs(None, LL_TEREDO_CONE),
        rs(Some(&id_auth), LL_WINDOWS_RESTRICTED),
    ];
    let mut sent = 0usize;
    let mut round = |server: &mut Server, buf: &mut [u8], i: u16| {
        let from = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, (i % 250) as u8 + 1), 1024 + i);
        let data = &inputs[usize::from(i) % inputs.len()];
        server.handle_udp(now, Local::Primary, from, data).unwrap();
        match server.poll_output(buf) {
            Some(Output::Udp {
                to,
                len,
                kind: Kind::RouterAdvertisement,
                ..
            }) if to == from => sent += len,
            other => panic!("unexpected output {other:?}"),
        }
    };
    // Warm-up: lazily initialised statics (tracing callsites, …) may allocate once.
    for i in 0..10 {
        round(&mut server, &mut buf, i);
    }
    let before = allocations();
    for i in 0..1000 {
        round(&mut server, &mut buf, i);
    }
    let after = allocations();
    assert_eq!(after - before, 0, "allocations on the RS → RA path");
    assert!(sent > 1000 * 100);
    // Bubble forwarding with an origin indication does not allocate either.
    let client = |mapped| {
        teredo::TeredoAddr {
            server: primary,
            flags: 0,
            mapped,
        }
        .to_ipv6()
    };
    let a: SocketAddrV4 = "203.0.113.5:40000".parse().unwrap();
    let b: SocketAddrV4 = "192.0.2.77:51000".parse().unwrap();
    let mut bubble = vec![0u8; 40];
    teredo::wire::ipv6::emit_bubble(&mut bubble, client(a), client(b), 0).unwrap();
    bubble.extend_from_slice(&[0x01, 4, 0xde, 0xad, 0xbe, 0xef]);
    let before = allocations();
    for _ in 0..1000 {
        server
            .handle_udp(now, Local::Secondary, a, &bubble)
            .unwrap();
        assert!(matches!(
            server.poll_output(&mut buf),
            Some(Output::Udp { to, len: 54, kind: Kind::Bubble, .. }) if to == b
        ));
    }
    let after = allocations();
    assert_eq!(after - before, 0, "allocations on the bubble path");
    // The counter works: a Vec allocates.
    let v = std::hint::black_box(vec![0u8; 16]);
    assert_eq!(allocations(), after + 1);
    drop(v);
}

/// The relay's trusted path in both directions: a native packet for a trusted, valid peer
/// (sent in place as the UDP payload) and a datagram from it (its IPv6 part sent in place
/// to the native side), over 100 peers, with the outputs and events polled as a driver
/// does. Peers are trusted and every path is run once before counting.
#[test]
fn relay_trusted_path_does_not_allocate() {
    use rand::SeedableRng as _;
    use teredo::relay::{Handled, Relay, RelayConfig};
    use teredo::wire::ipv6::{emit_bubble, Echo};
    use teredo::{Local as IoLocal, TeredoAddr};

    #[allow(clippy::disallowed_methods)] // the relay's epoch; time is advanced by hand
    let t0 = Instant::now();
    let native: std::net::Ipv6Addr = "2001:db8::99".parse().unwrap();
    let server = Ipv4Addr::new(198, 51, 100, 1);
    let mut relay = Relay::new(
        RelayConfig::default(),
        rand_chacha::ChaCha8Rng::seed_from_u64(1),
        t0,
    );
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD];
    let data = [0x5au8; 100];
    let echo = |src, dst| {
        let mut v = vec![0u8; 48 + data.len()];
        Echo {
            reply: false,
            id: 1,
            seq: 1,
            data: &data,
        }
        .emit(&mut v, src, dst, 64)
        .unwrap();
        v
    };
    let peers: Vec<_> = (0..100u16)
        .map(|k| {
            let mapped = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 40_000 + k);
            let addr = TeredoAddr {
                server,
                flags: 0,
                mapped,
            }
            .to_ipv6();
            let mut bubble = [0u8; 40];
            emit_bubble(&mut bubble, addr, native, 255).unwrap();
            (mapped, echo(native, addr), echo(addr, native), bubble)
        })
        .collect();
    let drain = |relay: &mut Relay, buf: &mut [u8]| {
        let mut n = 0;
        while relay.poll_output(buf).is_some() {
            n += 1;
        }
        while relay.poll_event().is_some() {
            n += 1;
        }
        n
    };
    // Trust every peer: a native packet starts the exchange, the peer's bubble answers it.
    for (mapped, to_peer, _, bubble) in &peers {
        let r = relay.handle_ipv6(t0, to_peer);
        assert!(matches!(r, Ok(Handled::Queued { .. })), "{r:?}");
        let r = relay.handle_udp(t0, IoLocal::Primary, *mapped, bubble);
        assert!(matches!(r, Ok(Handled::Bubble { .. })), "{r:?}");
        drain(&mut relay, &mut buf);
    }
    let round = |relay: &mut Relay, buf: &mut [u8], now: Instant| {
        let mut sent = 0;
        for (mapped, to_peer, from_peer, _) in &peers {
            let h = relay.handle_ipv6(now, to_peer).unwrap();
            let ip = h.in_place().expect("trusted: in place");
            sent += ip.bytes(to_peer).len();
            let h = relay
                .handle_udp(now, IoLocal::Primary, *mapped, from_peer)
                .unwrap();
            let ip = h.in_place().expect("forwarded: in place");
            sent += ip.bytes(from_peer).len();
            assert_eq!(drain(relay, buf), 0);
        }
        sent
    };
    let now = t0 + std::time::Duration::from_millis(10);
    round(&mut relay, &mut buf, now);
    let before = allocations();
    let mut sent = 0;
    for i in 0..10u64 {
        sent += round(
            &mut relay,
            &mut buf,
            now + std::time::Duration::from_millis(i),
        );
    }
    let allocated = allocations() - before;
    assert_eq!(sent, 10 * 100 * 2 * 148);
    assert_eq!(
        allocated, 0,
        "relay trusted path allocated {allocated} times"
    );
    let c = relay.counters();
    assert_eq!((c.encapsulated, c.forwarded), (100 + 1100, 1100));
}
