// SPDX-License-Identifier: MIT OR Apache-2.0
//
// XDP_PASS and nothing else, for the far end of a veth pair: a veth takes the frames its
// peer's XDP program sends back (XDP_TX) only when it runs an XDP program itself. Labs and
// tests attach this one there (`ip link set dev PEER xdpdrv obj xdp_pass.bpf.o sec xdp`).

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
