// SPDX-License-Identifier: MIT OR Apache-2.0
//
// What the relay's XDP program shares with its loader (fastpath/src/relay/abi.rs mirrors it;
// a unit test there pins the sizes, offsets and counter indices).
#ifndef TEREDO_RELAY_H
#define TEREDO_RELAY_H

/* Longest span the program checksums (a UDP datagram it checks or builds): tun_mtu may be at
 * most this minus the UDP header. */
#define RL_MAX_SUM_LEN 2048

/* The one entry of the `rl_config` array map. Address and port in network order. */
struct rl_config {
	__u32 enabled;
	__be32 relay_addr;
	__be16 relay_port;
	__u16 pad;
	__u32 tun_mtu;	   /* host order: largest native packet encapsulated (the TUN's MTU) */
	__u64 validity_ns; /* a trusted peer is used while now - last_rx_ns < this */
};

/* Key of the `rl_peers` hash: the peer's Teredo IPv6 address. */
struct rl_peer_key {
	__u8 addr[16];
};

/* Value of the `rl_peers` hash: a peer the core trusts. Times are CLOCK_MONOTONIC ns
 * (bpf_ktime_get_ns). */
struct rl_peer {
	__be32 mapping_addr;
	__be16 mapping_port;
	__u16 pad;
	__u64 last_rx_ns;
	__u64 last_used_ns;
};

/* Indices of the `rl_counters` per-CPU array. */
enum rl_counter {
	RL_TO_NATIVE = 0,
	RL_TO_TEREDO = 1,
	RL_PASS_DISABLED = 2,
	RL_PASS_NOT_FOR_RELAY = 3,
	RL_PASS_IPV4_UNCHECKED = 4,
	RL_PASS_UNHANDLED_FORM = 5,
	RL_PASS_BUBBLE = 6,
	RL_PASS_NOT_TRUSTED = 7,
	RL_PASS_EXPIRED = 8,
	RL_PASS_HOP_LIMIT = 9,
	RL_PASS_TOO_BIG = 10,
	RL_PASS_REFUSED = 11,
	RL_PASS_NO_ROUTE = 12,
	RL_PASS_NO_ROOM = 13,
	RL_COUNTERS = 14,
};

#endif
