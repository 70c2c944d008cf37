//! `--generator xdp` really transmits: the live-frames test runs' copies arrive on the
//! device's end of the veth, as many as the generator says it sent, paced and unpaced; and
//! a veth without NAPI takes none of them (why `enable_napi` exists).

use std::io::Write as _;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use teredo_bench::afpacket::FrameRing;
use teredo_bench::procfs::{dev_counters, DevCounters};
use teredo_bench::rs::{rs_frames, RsKind};
use teredo_bench::topo::{Topology, INET_IF};
use teredo_bench::xdpgen::{enable_napi, XdpSender};
use testkit::{function_name, in_ci, requirements_met};

/// The device side's counters of the Internet link.
fn device_rx(topo: &Topology) -> DevCounters {
    topo.relay.run_in(|| Ok(dev_counters(INET_IF))).unwrap()
}

/// Sends with the XDP generator from the generator's namespace (unpaced when `rate` is
/// `None`) for `secs`; what it says it sent.
fn send(topo: &Topology, rate: Option<f64>, secs: f64) -> u64 {
    topo.gen
        .run_in(|| {
            let x = XdpSender::open()?;
            let mut ring = FrameRing::new(rs_frames(10, RsKind::Mix));
            let o = x.blast(
                x.link(INET_IF),
                &mut ring,
                rate,
                Duration::from_secs_f64(secs),
                &AtomicBool::new(false),
            );
            assert_eq!(o.errors, 0, "failed live-frames test runs: {o:?}");
            Ok(o.sent)
        })
        .unwrap()
}

/// What arrived on the device's end during `f`, once the counter stops moving.
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
    (sent, d.rx_packets + d.rx_dropped)
}

#[test]
fn xdp_generator_frames_reach_the_device() {
    if !requirements_met(function_name!(), true, &["ethtool"]) {
        return;
    }
    let topo = Topology::build_server().unwrap();
    // Not built (no clang), or a kernel that refuses live frames (EPERM on hardened
    // kernels): a missing requirement like root.
    let loaded = topo
        .gen
        .run_in(|| Ok(teredo_fastpath::XdpGen::load().map(|_| ())))
        .unwrap();
    if let Err(e) = loaded {
        assert!(!in_ci(), "{e}; CI is set, and CI must never skip");
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: {} needs the XDP generator: {e} ***",
            function_name!()
        );
        return;
    }

    // No program and no GRO on the device's veth: no NAPI, every copy dropped.
    let (sent, got) = arrived(&topo, || send(&topo, Some(20_000.0), 0.1));
    assert!(sent > 1000, "sent only {sent}");
    assert_eq!(got, 0, "a veth without NAPI took XDP frames");

    enable_napi(&topo).unwrap();
    let (sent, got) = arrived(&topo, || send(&topo, Some(100_000.0), 0.3));
    assert!(
        (25_000..=35_000).contains(&sent),
        "paced at 100 k/s for 0.3 s, sent {sent}"
    );
    assert_eq!(
        got, sent,
        "paced: the device's veth counted {got} of {sent}"
    );
    let (sent, got) = arrived(&topo, || send(&topo, None, 0.3));
    assert!(sent > 30_000, "unpaced for 0.3 s, sent only {sent}");
    assert_eq!(
        got, sent,
        "unpaced: the device's veth counted {got} of {sent}"
    );
}
