// SPDX-License-Identifier: MIT OR Apache-2.0
//
// The Teredo relay's fast path (work in progress: passes everything for now).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "teredo_relay.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rl_config);
} rl_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct rl_peer_key);
	__type(value, struct rl_peer);
} rl_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RL_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} rl_counters SEC(".maps");

static __always_inline int count(__u32 idx, int action)
{
	__u64 *v = bpf_map_lookup_elem(&rl_counters, &idx);

	if (v)
		*v += 1;
	return action;
}

SEC("xdp")
int teredo_relay(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct rl_config *cfg = bpf_map_lookup_elem(&rl_config, &zero);

	if (!cfg || !cfg->enabled)
		return count(RL_PASS_DISABLED, XDP_PASS);
	return count(RL_PASS_NOT_FOR_RELAY, XDP_PASS);
}
