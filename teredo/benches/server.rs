//! Server hot paths: RS → RA (`handle_udp` + `poll_output` into a reused buffer), bubble
//! forwarding with an origin indication, and `TeredoPacket::parse` alone.
//!
//! `cargo bench -p teredo --bench server -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use teredo::addr::{TeredoAddr, LL_WINDOWS_RESTRICTED};
use teredo::io::Local;
use teredo::server::{Server, ServerConfig};
use teredo::wire::ipv6::emit_bubble;
use teredo::wire::ndp::emit_rs;
use teredo::wire::packet::MAX_UDP_PAYLOAD;
use teredo::wire::{Auth, TeredoPacket};

const PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// The one clock read: the server ignores `now`, but the API takes one.
#[allow(clippy::disallowed_methods)]
fn start() -> Instant {
    Instant::now()
}

/// Windows' restricted RS with a nonce-only auth header: 61 bytes.
fn rs() -> Vec<u8> {
    let mut buf = vec![0u8; 128];
    let n = emit_rs(
        &mut buf,
        Some(&Auth::nonce_only([1, 2, 3, 4, 5, 6, 7, 8])),
        LL_WINDOWS_RESTRICTED,
        false,
    )
    .unwrap();
    buf.truncate(n);
    assert_eq!(n, 61);
    buf
}

fn client(mapped: SocketAddrV4) -> std::net::Ipv6Addr {
    TeredoAddr {
        server: PRIMARY,
        flags: 0,
        mapped,
    }
    .to_ipv6()
}

/// An indirect bubble from client A to client B of this server, with a nonce trailer.
fn bubble(a: SocketAddrV4, b: SocketAddrV4) -> Vec<u8> {
    let mut v = vec![0u8; 40];
    emit_bubble(&mut v, client(a), client(b), 0).unwrap();
    v.extend_from_slice(&[0x01, 4, 0xde, 0xad, 0xbe, 0xef]);
    v
}

fn server(c: &mut Criterion) {
    let now = start();
    let from: SocketAddrV4 = "203.0.113.5:40000".parse().unwrap();
    let peer: SocketAddrV4 = "192.0.2.77:51000".parse().unwrap();
    let rs = rs();
    let bubble = bubble(from, peer);
    let mut s = Server::new(ServerConfig::new(PRIMARY));
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD];

    let mut g = c.benchmark_group("server");
    g.throughput(Throughput::Elements(1));
    g.bench_function("rs_to_ra", |bench| {
        bench.iter(|| {
            s.handle_udp(now, Local::Primary, black_box(from), black_box(&rs))
                .unwrap();
            black_box(s.poll_output(&mut buf).unwrap())
        })
    });
    g.bench_function("bubble_forward_with_oi", |bench| {
        bench.iter(|| {
            s.handle_udp(now, Local::Primary, black_box(from), black_box(&bubble))
                .unwrap();
            black_box(s.poll_output(&mut buf).unwrap())
        })
    });
    g.bench_function("parse_rs", |bench| {
        bench.iter(|| black_box(TeredoPacket::parse(black_box(&rs)).unwrap()))
    });
    g.bench_function("parse_bubble", |bench| {
        bench.iter(|| black_box(TeredoPacket::parse(black_box(&bubble)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, server);
criterion_main!(benches);
