// SPDX-License-Identifier: MIT OR Apache-2.0
//
// XDP_TX and nothing else: the benches' generator. Run with BPF_PROG_TEST_RUN in live-frames
// mode (BPF_F_TEST_XDP_LIVE_FRAMES) on a frame "received" on the generator's veth, every
// copy of the frame goes out of that veth (the kernel turns XDP_TX into a redirect there).

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	return XDP_TX;
}
