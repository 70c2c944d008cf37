// SPDX-License-Identifier: MIT OR Apache-2.0
//
// The Teredo relay's fast path (RFC 4380 §5.4), for the peers the core trusts only:
//   Teredo -> native: a client's datagram to the relay is decapsulated and its IPv6 packet
//                     routed out natively (hop limit - 1), as the kernel forwards what the
//                     relay writes to its TUN;
//   native -> Teredo: an IPv6 packet for 2001:0::/32 is encapsulated in IPv4/UDP from the
//                     relay's address and port to the peer's mapping (hop limit - 1), as the
//                     kernel forwards it into the TUN and the relay sends it from its socket.
// Everything else (bubbles, untrusted or expired peers, ICMPv6 errors, every drop rule) goes
// on untouched (XDP_PASS) to the kernel and the user-space relay (teredo::relay::Relay),
// which stays the reference: the program forwards nothing that path would not, and drops
// nothing. fastpath/tests/relay_differential.rs compares the two on the same frames.
//
// The peer map is filled by the relay from the core's trust events; the program moves the
// entries' last_rx_ns / last_used_ns, which the relay feeds back to the core.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
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

/* max_entries is set by the loader (the relay's max_peers) before loading. */
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

#define CHUNK 512 /* bpf_csum_diff sums at most 512 bytes, a multiple of 4, per call */
#define MAX_CHUNKS (RL_MAX_SUM_LEN / CHUNK)
#define MAX_SUM_LEN RL_MAX_SUM_LEN

/* The last (len % CHUNK) bytes of a checksummed span, copied out and zero-padded to a
 * multiple of 4 (a variable-length span of the packet cannot be handed to bpf_csum_diff). */
struct rl_tail {
	__u8 b[CHUNK + 4];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rl_tail);
} rl_tail SEC(".maps");

#define AF_INET 2
#define AF_INET6 10
#define ETH_LEN 14
#define IPV4_LEN 20
#define UDP_LEN 8
#define ENCAP_LEN (IPV4_LEN + UDP_LEN)
#define IPV6_LEN 40
#define NH_HOP_BY_HOP 0
#define NH_NONE 59 /* a bubble: no next header, no payload */
#define UDP_OFF (ETH_LEN + IPV4_LEN)

static __always_inline int count(__u32 idx, int action)
{
	__u64 *v = bpf_map_lookup_elem(&rl_counters, &idx);

	if (v)
		*v += 1;
	return action;
}

#define PASS(reason) count(RL_PASS_##reason, XDP_PASS)

/* Checksums are summed in memory order (as the kernel's csum_partial, which bpf_csum_diff
 * is): 16-bit words read as they lie in memory. The one's complement sum commutes with the
 * byte swap, so fields in network order are added as they are and the folded result is
 * stored as it is. */
static __always_inline __u32 fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u32)sum;
}

static __always_inline __u32 sum_be32(__be32 v)
{
	return (v & 0xffff) + (v >> 16);
}

/* The UDP pseudo-header sum (RFC 768) of a datagram of udp_len bytes, not folded. */
static __always_inline __u32 pseudo_sum(__be32 saddr, __be32 daddr, __u32 udp_len)
{
	return sum_be32(saddr) + sum_be32(daddr) + bpf_htons(IPPROTO_UDP) + bpf_htons(udp_len);
}

/* One's complement sum (not folded) of the `len` bytes at offset `off` of the frame (a
 * constant), an odd last byte padded with zero (RFC 768). Whole CHUNKs are summed in the
 * packet; the remainder is copied to the per-CPU tail buffer, zero-padded to a multiple of 4
 * and summed there. Returns -1 when the span is not all in the frame or is longer than
 * MAX_SUM_LEN. */
static __always_inline __s64 sum_span(struct xdp_md *ctx, __u32 off, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 done = 0;
	__s64 s = 0;

	if (len > MAX_SUM_LEN)
		return -1;
	for (int i = 0; i < MAX_CHUNKS; i++) {
		if (len - done < CHUNK)
			break;
		void *p = data + off + done;
		if (p + CHUNK > end)
			return -1;
		s = bpf_csum_diff(0, 0, p, CHUNK, (__u32)s);
		if (s < 0)
			return -1;
		done += CHUNK;
	}
	__u32 rem = len - done;
	if (rem >= CHUNK)
		return -1;
	if (rem == 0)
		return s;
	/* 1..CHUNK-1, in a form the verifier sees bounded whatever the compiler made of it. */
	rem = ((rem - 1) & (CHUNK - 1)) + 1;
	__u32 zero = 0;
	struct rl_tail *t = bpf_map_lookup_elem(&rl_tail, &zero);
	if (!t)
		return -1;
	if (bpf_xdp_load_bytes(ctx, off + done, t->b, rem))
		return -1;
	t->b[rem] = 0;
	t->b[rem + 1] = 0;
	t->b[rem + 2] = 0;
	__u32 rounded = (rem + 3) & ~3u;
	if (rounded > CHUNK)
		return -1;
	return bpf_csum_diff(0, 0, (__be32 *)t->b, rounded, (__u32)s);
}

/* RFC 4380 §5.2.4 as teredo::addr::is_ipv4_global_unicast. `a` in network order. */
static __always_inline int ipv4_global_unicast(__be32 a)
{
	__u32 h = bpf_ntohl(a);
	__u8 o0 = h >> 24, o1 = (h >> 16) & 0xff, o2 = (h >> 8) & 0xff;

	return !(o0 == 0 || o0 == 10 || o0 == 127 || (o0 == 169 && o1 == 254) ||
		 (o0 == 172 && (o1 & 0xf0) == 16) || (o0 == 192 && o1 == 168) ||
		 (o0 == 192 && o1 == 88 && o2 == 99) || (o0 & 0xf0) == 224 || h == 0xffffffff);
}

static __always_inline int is_teredo(const __u8 *a)
{
	return a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0;
}

/* teredo::addr::is_ipv6_non_global: unspecified, loopback, multicast, link-local,
 * IPv4-mapped and IPv4-compatible (::/96). */
static __always_inline int ipv6_non_global(const __u8 *a)
{
	if (a[0] == 0xff || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80))
		return 1;
#pragma unroll
	for (int i = 0; i < 10; i++)
		if (a[i])
			return 0;
	return (a[10] == 0 && a[11] == 0) || (a[10] == 0xff && a[11] == 0xff);
}

/* The core's validity test (teredo::peer::is_valid): a reception "in the future" counts as
 * now. */
static __always_inline int is_valid(__u64 now, const struct rl_peer *p,
				    const struct rl_config *cfg)
{
	__u64 age = now > p->last_rx_ns ? now - p->last_rx_ns : 0;

	return age < cfg->validity_ns;
}

/* XDP_TX out of the interface it came in on, else a redirect to the route's interface. */
static __always_inline int send(struct xdp_md *ctx, __u32 ifindex)
{
	if (ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(ifindex, 0);
}

/* Teredo -> native: a datagram to the relay's address and port. */
static __always_inline int to_native(struct xdp_md *ctx, const struct rl_config *cfg)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + ETH_LEN;

	if ((void *)(ip + 1) > end || ip->version != 4 || ip->protocol != IPPROTO_UDP ||
	    ip->daddr != cfg->relay_addr)
		return PASS(NOT_FOR_RELAY);
	if (ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
		return PASS(IPV4_UNCHECKED);
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return PASS(IPV4_UNCHECKED);
	if (udp->dest != cfg->relay_port)
		return PASS(NOT_FOR_RELAY);
	/* What the kernel checks before the socket sees it: header checksum, lengths, UDP
	 * checksum (valid, zero, or a local veth peer's CHECKSUM_PARTIAL pseudo-header sum). */
	if (fold(bpf_csum_diff(0, 0, (__be32 *)ip, IPV4_LEN, 0)) != 0xffff)
		return PASS(IPV4_UNCHECKED);
	__u32 tot_len = bpf_ntohs(ip->tot_len);
	__u32 udp_len = bpf_ntohs(udp->len);
	if (tot_len < ENCAP_LEN || (void *)ip + tot_len > end || udp_len != tot_len - IPV4_LEN)
		return PASS(IPV4_UNCHECKED);
	__be32 peer_addr = ip->saddr;
	__be16 peer_port = udp->source;
	__u16 udp_check = udp->check;

	/* Teredo: the IPv6 packet alone, exactly the UDP payload. */
	__u32 plen = udp_len - UDP_LEN;
	__u8 *ip6 = (void *)(udp + 1);
	if (plen < IPV6_LEN || (void *)(ip6 + IPV6_LEN) > end)
		return PASS(REFUSED); /* truncated */
	if (ip6[0] == 0 && (ip6[1] == 0 || ip6[1] == 1))
		return PASS(UNHANDLED_FORM); /* origin indication, auth header */
	if ((ip6[0] >> 4) != 6)
		return PASS(REFUSED);
	__u32 len6 = IPV6_LEN + (((__u32)ip6[4] << 8) | ip6[5]);
	if (len6 > plen)
		return PASS(REFUSED);
	if (len6 < plen)
		return PASS(UNHANDLED_FORM); /* trailers */
	if (ip6[6] == NH_NONE && len6 == IPV6_LEN)
		return PASS(BUBBLE);
	/* The core's checks, in its order: a Teredo source, a trusted peer from its mapping. */
	__u8 *src6 = ip6 + 8, *dst6 = ip6 + 24;
	if (!is_teredo(src6))
		return PASS(REFUSED);
	struct rl_peer_key key;
	__builtin_memcpy(key.addr, src6, 16);
	struct rl_peer *peer = bpf_map_lookup_elem(&rl_peers, &key);
	if (!peer || peer->mapping_addr != peer_addr || peer->mapping_port != peer_port)
		return PASS(NOT_TRUSTED);
	__u64 now = bpf_ktime_get_ns();
	if (!is_valid(now, peer, cfg))
		return PASS(EXPIRED);
	if (is_teredo(dst6) || ipv6_non_global(dst6))
		return PASS(REFUSED);
	/* The kernel's forwarding step: hop-by-hop options are its to process. */
	if (ip6[6] == NH_HOP_BY_HOP)
		return PASS(REFUSED);
	if (ip6[7] <= 1)
		return PASS(HOP_LIMIT);

	/* Checked last (the most expensive): the UDP checksum over the whole datagram. */
	__u32 pseudo = pseudo_sum(peer_addr, cfg->relay_addr, udp_len);
	if (udp_check && udp_check != fold(pseudo)) {
		__s64 sum = sum_span(ctx, UDP_OFF, udp_len);
		if (sum < 0 || fold((__u64)sum + pseudo) != 0xffff)
			return PASS(IPV4_UNCHECKED);
	}

	struct bpf_fib_lookup fib;
	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family = AF_INET6;
	fib.l4_protocol = ip6[6];
	fib.tot_len = len6;
	fib.ifindex = ctx->ingress_ifindex;
	__builtin_memcpy(&fib.flowinfo, ip6, 4);
	fib.flowinfo &= bpf_htonl(0x0fffffff);
	__builtin_memcpy(fib.ipv6_src, src6, 16);
	__builtin_memcpy(fib.ipv6_dst, dst6, 16);
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return PASS(NO_ROUTE);

	/* Forward: the outer IPv4 and UDP headers give way to Ethernet from the route, padding
	 * is trimmed, hop limit - 1 (nothing else to recompute: IPv6 has no header checksum and
	 * the hop limit is in no upper-layer checksum). The frame is written only once both
	 * resizes succeeded (a failed one is undone), so a passed frame is always untouched. */
	__u32 pad = (__u32)(end - (void *)ip6) - len6;
	if (bpf_xdp_adjust_head(ctx, ENCAP_LEN))
		return PASS(NO_ROOM);
	if (pad && bpf_xdp_adjust_tail(ctx, -(int)pad)) {
		if (bpf_xdp_adjust_head(ctx, -ENCAP_LEN))
			return XDP_ABORTED; /* cannot happen: the bytes given back are still there */
		return PASS(NO_ROOM);
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	ip6 = data + ETH_LEN;
	if ((void *)(ip6 + IPV6_LEN) > end)
		return XDP_ABORTED; /* cannot happen: checked before the resize */
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	ip6[7] -= 1;
	peer->last_rx_ns = now;
	peer->last_used_ns = now;
	count(RL_TO_NATIVE, 0);
	return send(ctx, fib.ifindex);
}

/* native -> Teredo: an IPv6 packet for 2001:0::/32. */
static __always_inline int to_teredo(struct xdp_md *ctx, const struct rl_config *cfg)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *ip6 = data + ETH_LEN;

	if ((void *)(ip6 + IPV6_LEN) > end)
		return PASS(NOT_FOR_RELAY);
	__u8 *src6 = ip6 + 8, *dst6 = ip6 + 24;
	if (!is_teredo(dst6))
		return PASS(NOT_FOR_RELAY);
	if ((ip6[0] >> 4) != 6)
		return PASS(REFUSED);
	/* The kernel forwards only frames sent to this host's own (unicast) address. */
	if (((__u8 *)data)[0] & 1)
		return PASS(REFUSED);
	__u32 len6 = IPV6_LEN + (((__u32)ip6[4] << 8) | ip6[5]);
	if ((void *)ip6 + len6 > end)
		return PASS(REFUSED); /* truncated */
	/* The kernel's forwarding step into the TUN: hop-by-hop options, hop limit, MTU. */
	if (ip6[6] == NH_HOP_BY_HOP)
		return PASS(REFUSED);
	if (ip6[7] <= 1)
		return PASS(HOP_LIMIT);
	if (len6 > cfg->tun_mtu || len6 > MAX_SUM_LEN - UDP_LEN)
		return PASS(TOO_BIG);
	/* The core's checks: a destination it may send to (embedded mapping and server global,
	 * a port), a global source, a trusted peer. */
	__be32 server, mapped;
	__be16 mapped_port;
	__builtin_memcpy(&server, dst6 + 4, 4);
	__builtin_memcpy(&mapped_port, dst6 + 10, 2);
	__builtin_memcpy(&mapped, dst6 + 12, 4);
	if (!ipv4_global_unicast(~mapped) || mapped_port == 0xffff || !ipv4_global_unicast(server))
		return PASS(REFUSED);
	if (ipv6_non_global(src6))
		return PASS(REFUSED);
	struct rl_peer_key key;
	__builtin_memcpy(key.addr, dst6, 16);
	struct rl_peer *peer = bpf_map_lookup_elem(&rl_peers, &key);
	if (!peer)
		return PASS(NOT_TRUSTED);
	__u64 now = bpf_ktime_get_ns();
	if (!is_valid(now, peer, cfg))
		return PASS(EXPIRED);
	__be32 to_addr = peer->mapping_addr;
	__be16 to_port = peer->mapping_port;

	struct bpf_fib_lookup fib;
	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family = AF_INET;
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = cfg->relay_port;
	fib.dport = to_port;
	fib.tot_len = ENCAP_LEN + len6;
	fib.ifindex = ctx->ingress_ifindex;
	fib.ipv4_src = cfg->relay_addr;
	fib.ipv4_dst = to_addr;
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return PASS(NO_ROUTE);

	/* The UDP checksum (RFC 768, over the whole datagram): the IPv6 packet is summed where
	 * it lies, before anything moves, then the hop limit's change is added (RFC 1624), the
	 * UDP header and the pseudo-header. */
	__u16 hop_word;
	__builtin_memcpy(&hop_word, ip6 + 6, 2);
	__s64 sum6 = sum_span(ctx, ETH_LEN, len6);
	if (sum6 < 0)
		return PASS(NO_ROOM); /* cannot happen: len6 <= MAX_SUM_LEN, in the frame */
	__u16 new_hop_word = hop_word;
	((__u8 *)&new_hop_word)[1] -= 1; /* bytes 6, 7: next header, hop limit */
	__u32 udp_len = UDP_LEN + len6;
	__u64 sum = (__u64)sum6 + (__u16)~hop_word + new_hop_word + cfg->relay_port + to_port +
		    bpf_htons(udp_len) + pseudo_sum(cfg->relay_addr, to_addr, udp_len);
	__u16 check = ~fold(sum) & 0xffff;

	/* Encapsulate: padding trimmed, IPv4 and UDP pushed in front, hop limit - 1. As in the
	 * other direction, nothing is written before both resizes succeeded. */
	__u32 pad = (__u32)(end - (void *)ip6) - len6;
	if (bpf_xdp_adjust_head(ctx, -ENCAP_LEN))
		return PASS(NO_ROOM);
	if (pad && bpf_xdp_adjust_tail(ctx, -(int)pad)) {
		if (bpf_xdp_adjust_head(ctx, ENCAP_LEN))
			return XDP_ABORTED; /* cannot happen: undoes the push just made */
		return PASS(NO_ROOM);
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_LEN;
	struct udphdr *udp = data + UDP_OFF;
	ip6 = data + UDP_OFF + UDP_LEN;
	if ((void *)(ip6 + IPV6_LEN) > end)
		return XDP_ABORTED; /* cannot happen: checked before the resize */
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(IPV4_LEN + udp_len);
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000); /* DF, as the relay's socket sends */
	ip->ttl = 64;
	ip->protocol = IPPROTO_UDP;
	ip->check = 0;
	ip->saddr = cfg->relay_addr;
	ip->daddr = to_addr;
	ip->check = ~fold(bpf_csum_diff(0, 0, (__be32 *)ip, IPV4_LEN, 0)) & 0xffff;
	udp->source = cfg->relay_port;
	udp->dest = to_port;
	udp->len = bpf_htons(udp_len);
	udp->check = check ? check : 0xffff;
	ip6[7] -= 1;
	peer->last_used_ns = now;
	count(RL_TO_TEREDO, 0);
	return send(ctx, fib.ifindex);
}

SEC("xdp")
int teredo_relay(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct rl_config *cfg = bpf_map_lookup_elem(&rl_config, &zero);

	if (!cfg || !cfg->enabled)
		return PASS(DISABLED);
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return PASS(NOT_FOR_RELAY);
	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		return to_native(ctx, cfg);
	case bpf_htons(ETH_P_IPV6):
		return to_teredo(ctx, cfg);
	case bpf_htons(ETH_P_8021Q):
	case bpf_htons(ETH_P_8021AD): {
		__be16 *inner = (void *)(eth + 1) + 2;
		if ((void *)(inner + 1) <= end &&
		    (*inner == bpf_htons(ETH_P_IP) || *inner == bpf_htons(ETH_P_IPV6)))
			return PASS(UNHANDLED_FORM);
		return PASS(NOT_FOR_RELAY);
	}
	default:
		return PASS(NOT_FOR_RELAY);
	}
}
