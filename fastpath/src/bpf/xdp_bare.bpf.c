// SPDX-License-Identifier: MIT OR Apache-2.0
//
// The bare XDP rates of an interface, for the benches: the fastest a fast path could go on
// it. No protocol work: every UDP datagram in IPv4 (no options) or IPv6 is either sent back
// out of the interface it came in on as an answer (`tx`: MAC and IP addresses and ports
// swapped, so that it reaches the sender like an answer would; the checksums stay valid as
// the sums do not change), or sent out of another interface unchanged but for fixed MAC
// addresses (`redirect`), or dropped (`drop`). Everything else passes (ARP, ND, ICMP). The
// loader (fastpath/src/bare.rs) sets `bare_cfg` before loading.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define BARE_TX 0
#define BARE_REDIRECT 1
#define BARE_DROP 2

struct bare_cfg {
	__u32 mode;
	__u32 out_ifindex;
	__u8 dst[ETH_ALEN];
	__u8 src[ETH_ALEN];
};

volatile const struct bare_cfg bare_cfg = {};

/* Swaps the UDP ports; the UDP checksum does not change. */
static __always_inline int swap_ports(struct udphdr *udp, void *data_end)
{
	__be16 port;

	if ((void *)(udp + 1) > data_end)
		return -1;
	port = udp->source;
	udp->source = udp->dest;
	udp->dest = port;
	return 0;
}

/* Turns a UDP frame into its answer; -1 when it is not a UDP frame. */
static __always_inline int reflect(struct ethhdr *eth, void *data_end)
{
	__u8 mac[ETH_ALEN];

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__be32 a;

		if ((void *)(ip + 1) > data_end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
			return -1;
		if (swap_ports((void *)(ip + 1), data_end))
			return -1;
		a = ip->saddr;
		ip->saddr = ip->daddr;
		ip->daddr = a;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		struct in6_addr a;

		if ((void *)(ip6 + 1) > data_end || ip6->nexthdr != IPPROTO_UDP)
			return -1;
		if (swap_ports((void *)(ip6 + 1), data_end))
			return -1;
		a = ip6->saddr;
		ip6->saddr = ip6->daddr;
		ip6->daddr = a;
	} else {
		return -1;
	}
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	return 0;
}

SEC("xdp")
int xdp_bare(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP) && eth->h_proto != bpf_htons(ETH_P_IPV6))
		return XDP_PASS;
	switch (bare_cfg.mode) {
	case BARE_TX:
		return reflect(eth, data_end) ? XDP_PASS : XDP_TX;
	case BARE_REDIRECT:
		__builtin_memcpy(eth->h_dest, (const void *)bare_cfg.dst, ETH_ALEN);
		__builtin_memcpy(eth->h_source, (const void *)bare_cfg.src, ETH_ALEN);
		return bpf_redirect(bare_cfg.out_ifindex, 0);
	default:
		return XDP_DROP;
	}
}
