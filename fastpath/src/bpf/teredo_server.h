// SPDX-License-Identifier: MIT OR Apache-2.0
//
// What the XDP program shares with its loader (fastpath/src/abi.rs mirrors it; a unit test
// there checks the sizes against the object's BTF-free layout by hand).
#ifndef TEREDO_SERVER_H
#define TEREDO_SERVER_H

/* Largest RS ICMPv6 message answered here (8 bytes and options: XP's is 24). */
#define MAX_RS_ICMP 64
/* Checksummed spans are at most one UDP datagram of an answered RS or its RA (125 bytes). */
#define MAX_SUM_WORDS 64

/* The one entry of the `fp_config` array map. Addresses and port in network order. */
struct fp_config {
	__u32 enabled;
	__be32 primary;
	__be32 secondary;
	__be16 port;
	__u16 pad;
	__u32 mtu; /* host order; 0 = no MTU option */
	__u8 link_local[16];
};

/* Indices of the `fp_counters` per-CPU array. */
enum fp_counter {
	/* RSs answered, at FP_ANSWERED + 2 * local (0 primary, 1 secondary) + cone. */
	FP_ANSWERED = 0,
	FP_PASS_DISABLED = 4,
	FP_PASS_NOT_FOR_SERVER = 5,
	FP_PASS_IPV4_UNCHECKED = 6,
	FP_PASS_NOT_ROUTER_SOLICITATION = 7,
	FP_PASS_UNHANDLED_FORM = 8,
	FP_PASS_INVALID = 9,
	FP_PASS_NO_ROOM = 10,
	FP_COUNTERS = 11,
};

#endif
