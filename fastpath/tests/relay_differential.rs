//! smoke
use std::net::SocketAddrV4;
use std::time::Duration;
use teredo_fastpath::{RelayFastPathConfig, XdpRelay};

#[test]
fn loads() {
    let cfg = RelayFastPathConfig {
        relay: SocketAddrV4::new("192.0.2.1".parse().unwrap(), 3544),
        tun_mtu: 1280,
        validity: Duration::from_secs(30),
        max_peers: 1024,
    };
    let x = XdpRelay::load(&cfg).unwrap();
    let (a, out) = x.test_run(&[0u8; 60], 1).unwrap();
    eprintln!("{a:?} {}", out.len());
    eprintln!("{:?}", x.counters().unwrap());
}
