//! `--generator afxdp` really transmits: the frames written to the AF_XDP socket's TX ring
//! arrive on the device's end of the veth, exactly as many as the generator says it sent
//! (frames the veth refused, when the receiving CPU's backlog is full, are neither sent nor
//! received), paced and unpaced, with no XDP program on either end.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use teredo_bench::afpacket::FrameRing;
use teredo_bench::afxdp::AfXdpSender;
use teredo_bench::procfs::{dev_counters, DevCounters};
use teredo_bench::rs::{rs_frames, RsKind};
use teredo_bench::topo::{Topology, INET_IF};
use testkit::{function_name, root_or_skip};

/// The device side's counters of the Internet link.
fn device_rx(topo: &Topology) -> DevCounters {
    topo.relay.run_in(|| Ok(dev_counters(INET_IF))).unwrap()
}

/// What arrived on the device's end during `f` (which says what it sent), once the
/// counter stops moving.
fn arrived(topo: &Topology, f: impl FnOnce() -> u64) -> (u64, u64) {
    let before = device_rx(topo);
    let sent = f();
    let mut last = device_rx(topo);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(20));
        let now = device_rx(topo);
        if now == last {
            break;
        }
        last = now;
    }
    let d = last.since(&before);
    (sent, d.rx_packets)
}

#[test]
fn afxdp_generator_frames_reach_the_device() {
    if !root_or_skip(function_name!()) {
        return;
    }
    let topo = Topology::build_server().unwrap();
    let x = topo.gen.run_in(AfXdpSender::open).unwrap();
    let send = |rate: Option<f64>, secs: f64| {
        topo.gen
            .run_in(|| {
                // 1500 frames: more than the sockets' first UMEM (1024), so it grows once.
                let mut ring = FrameRing::new(
                    rs_frames(250, RsKind::Mix)
                        .iter()
                        .cycle()
                        .take(1500)
                        .cloned()
                        .collect(),
                );
                let o = x.blast(
                    INET_IF,
                    &mut ring,
                    rate,
                    Duration::from_secs_f64(secs),
                    &AtomicBool::new(false),
                )?;
                assert_eq!(o.errors, 0, "failed kicks: {o:?}");
                Ok(o.sent)
            })
            .unwrap()
    };
    let (sent, got) = arrived(&topo, || send(Some(100_000.0), 0.3));
    assert!(
        (25_000..=35_000).contains(&sent),
        "paced at 100 k/s for 0.3 s, sent {sent}"
    );
    assert_eq!(
        got, sent,
        "paced: the device's veth counted {got} of {sent}"
    );
    let (sent, got) = arrived(&topo, || send(None, 0.3));
    assert!(sent > 30_000, "unpaced for 0.3 s, sent only {sent}");
    assert_eq!(
        got, sent,
        "unpaced: the device's veth counted {got} of {sent}"
    );
}
