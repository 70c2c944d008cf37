// SPDX-License-Identifier: MIT OR Apache-2.0
//
// The Teredo server's fast path (RFC 4380 §5.3.1 case 4, §5.3.2): a valid router
// solicitation arriving on one of the server's addresses is answered in place with its router
// advertisement (XDP_TX). Everything else, and any RS this program does not fully validate,
// goes on to the user-space server (XDP_PASS), which stays the reference implementation.
//
// This is a second implementation of the core's RS -> RA rewrite (teredo::server and
// teredo::wire::ndp); the differential tests in fastpath/tests/ run both on the same packets
// and compare the output bytes and counters. Keep the two in step.
//
// Layout answered: Ethernet | IPv4 (no options, not fragmented, valid header checksum) |
// UDP to <primary or secondary>:<port> (checksum valid or zero, lengths exact) |
// [nonce-only auth header] | IPv6 (ff02::2 from a link-local source, hop limit 255) |
// ICMPv6 RS (code 0, 8..MAX_RS_ICMP bytes, valid checksum), nothing after it.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "teredo_server.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp_config);
} fp_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FP_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} fp_counters SEC(".maps");

#define AUTH_LEN 13
#define ORIGIN_LEN 8
#define IPV6_LEN 40
#define RA_ICMP_LEN 48 /* RA fixed part 16 + prefix information 32 */
#define MTU_OPT_LEN 8
#define NH_ICMPV6 58
#define RS_TYPE 133
#define RA_TYPE 134
#define RA_RETRANS_MS 2000
/* The smallest RA frame: Ethernet, IPv4, UDP, origin indication, IPv6, RA without MTU. */
#define MIN_OUT_FRAME (14 + 20 + 8 + ORIGIN_LEN + IPV6_LEN + RA_ICMP_LEN)

static __always_inline int count(__u32 idx, int action)
{
	__u64 *v = bpf_map_lookup_elem(&fp_counters, &idx);

	if (v)
		*v += 1;
	return action;
}

#define PASS(reason) count(reason, XDP_PASS)

/* Big-endian 16-bit word at p (any alignment). */
static __always_inline __u32 be16_at(const __u8 *p)
{
	return ((__u32)p[0] << 8) | p[1];
}

static __always_inline void put_be16(__u8 *p, __u16 v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static __always_inline void put_be32(__u8 *p, __u32 v)
{
	put_be16(p, v >> 16);
	put_be16(p + 2, v & 0xffff);
}

static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* One's complement sum (not folded) of `len` bytes from `p` as big-endian words, an odd last
 * byte padded with zero. Returns (__u32)-1 when the bytes are not all inside the packet. */
static __always_inline __u32 sum_bytes(const __u8 *p, __u32 len, const void *end)
{
	__u32 sum = 0;

	for (__u32 i = 0; i < MAX_SUM_WORDS; i++) {
		const __u8 *q = p + 2 * i;

		if (2 * i + 1 < len) {
			if ((const void *)(q + 2) > end)
				return (__u32)-1;
			sum += be16_at(q);
		} else {
			if (2 * i < len) {
				if ((const void *)(q + 1) > end)
					return (__u32)-1;
				sum += (__u32)q[0] << 8;
			}
			break;
		}
	}
	return sum;
}

static __always_inline __u32 sum_addr6(const __u8 *a)
{
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 16; i += 2)
		sum += be16_at(a + i);
	return sum;
}

/* RFC 4380 §5.2.4 as teredo::addr::is_ipv4_global_unicast (Miredo's variant: the
 * documentation ranges, 100.64/10 and 240/4 count as global). `a` in network order. */
static __always_inline int ipv4_global_unicast(__be32 a)
{
	__u32 h = bpf_ntohl(a);
	__u8 o0 = h >> 24, o1 = (h >> 16) & 0xff, o2 = (h >> 8) & 0xff;

	return !(o0 == 0 || o0 == 10 || o0 == 127 || (o0 == 169 && o1 == 254) ||
		 (o0 == 172 && (o1 & 0xf0) == 16) || (o0 == 192 && o1 == 168) ||
		 (o0 == 192 && o1 == 88 && o2 == 99) || (o0 & 0xf0) == 224 || h == 0xffffffff);
}

SEC("xdp")
int teredo_server(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct fp_config *cfg = bpf_map_lookup_elem(&fp_config, &zero);

	if (!cfg || !cfg->enabled)
		return PASS(FP_PASS_DISABLED);

	/* Ethernet, IPv4, UDP to one of our addresses and our port. */
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return PASS(FP_PASS_NOT_FOR_SERVER);
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->version != 4 || ip->protocol != IPPROTO_UDP)
		return PASS(FP_PASS_NOT_FOR_SERVER);
	__u32 local;
	if (ip->daddr == cfg->primary)
		local = 0;
	else if (ip->daddr == cfg->secondary)
		local = 1;
	else
		return PASS(FP_PASS_NOT_FOR_SERVER);
	if (ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
		return PASS(FP_PASS_IPV4_UNCHECKED);
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return PASS(FP_PASS_IPV4_UNCHECKED);
	if (udp->dest != cfg->port)
		return PASS(FP_PASS_NOT_FOR_SERVER);
	/* What the kernel checks before a socket sees it: header checksum, lengths. */
	if (fold(sum_bytes((const __u8 *)ip, 20, end)) != 0xffff)
		return PASS(FP_PASS_IPV4_UNCHECKED);
	__u32 tot_len = bpf_ntohs(ip->tot_len);
	__u32 udp_len = bpf_ntohs(udp->len);
	if (tot_len < 28 || (void *)ip + tot_len > end || udp_len != tot_len - 20)
		return PASS(FP_PASS_IPV4_UNCHECKED);
	/* Checks the core makes before looking at the packet: loop guard, global source. */
	if (udp->source == cfg->port && (ip->saddr == cfg->primary || ip->saddr == cfg->secondary))
		return PASS(FP_PASS_INVALID);
	if (!ipv4_global_unicast(ip->saddr))
		return PASS(FP_PASS_INVALID);

	/* Teredo: [auth, nonce only] IPv6. */
	__u8 *pl = (void *)(udp + 1);
	__u32 plen = udp_len - 8;
	__u32 auth = 0;
	__u8 nonce[8];
	if ((void *)(pl + 2) > end)
		return PASS(FP_PASS_INVALID);
	if (pl[0] == 0 && pl[1] == 1) {
		if ((void *)(pl + AUTH_LEN) > end)
			return PASS(FP_PASS_INVALID);
		if (pl[2] != 0 || pl[3] != 0)
			return PASS(FP_PASS_UNHANDLED_FORM);
		__builtin_memcpy(nonce, pl + 4, 8);
		auth = AUTH_LEN;
	}
	__u8 *ip6 = pl + auth;
	if ((void *)(ip6 + IPV6_LEN) > end)
		return PASS(FP_PASS_INVALID);
	if (ip6[0] == 0 && ip6[1] == 0)
		return PASS(FP_PASS_INVALID); /* origin indication: only servers insert them */
	if ((ip6[0] >> 4) != 6)
		return PASS(FP_PASS_INVALID);
	/* Destination ff02::2 or it is not an RS (bubbles, ICMPv6 to forward, ...). */
	__u8 *src6 = ip6 + 8, *dst6 = ip6 + 24;
	if (dst6[0] != 0xff || dst6[1] != 0x02 || dst6[15] != 0x02)
		return PASS(FP_PASS_NOT_ROUTER_SOLICITATION);
#pragma unroll
	for (int i = 2; i < 15; i++)
		if (dst6[i] != 0)
			return PASS(FP_PASS_NOT_ROUTER_SOLICITATION);
	__u32 icmp_len = be16_at(ip6 + 4);
	if (auth + IPV6_LEN + icmp_len < plen)
		return PASS(FP_PASS_UNHANDLED_FORM); /* trailers */
	if (auth + IPV6_LEN + icmp_len > plen)
		return PASS(FP_PASS_INVALID);
	if (icmp_len > MAX_RS_ICMP)
		return PASS(FP_PASS_UNHANDLED_FORM);
	__u8 *icmp = ip6 + IPV6_LEN;
	if (icmp_len < 8 || (void *)(icmp + 8) > end)
		return PASS(FP_PASS_INVALID);
	if (ip6[6] != NH_ICMPV6 || ip6[7] != 255 || src6[0] != 0xfe || (src6[1] & 0xc0) != 0x80 ||
	    icmp[0] != RS_TYPE || icmp[1] != 0)
		return PASS(FP_PASS_INVALID);
	{
		__u32 s = sum_bytes(icmp, icmp_len, end);
		if (s == (__u32)-1)
			return PASS(FP_PASS_INVALID);
		s += sum_addr6(src6) + sum_addr6(dst6) + icmp_len + NH_ICMPV6;
		if (fold(s) != 0xffff)
			return PASS(FP_PASS_INVALID);
	}

	/* The UDP checksum the kernel would verify (answered RSs are small: bounded loop). A
	 * datagram from a local veth peer may carry only the pseudo-header sum (CHECKSUM_PARTIAL,
	 * the kernel trusts it and XDP cannot see that mark): that value is accepted too; the
	 * ICMPv6 checksum still covers the whole RS. */
	if (udp->check) {
		__u32 ps = be16_at((const __u8 *)&ip->saddr) + be16_at((const __u8 *)&ip->saddr + 2);
		ps += be16_at((const __u8 *)&ip->daddr) + be16_at((const __u8 *)&ip->daddr + 2);
		ps += IPPROTO_UDP + udp_len;
		if (bpf_ntohs(udp->check) != fold(ps)) {
			__u32 s = sum_bytes((const __u8 *)udp, udp_len, end);
			if (s == (__u32)-1 || fold(s + ps) != 0xffff)
				return PASS(FP_PASS_IPV4_UNCHECKED);
		}
	}

	/* A valid RS: keep what the RA needs, then rewrite the frame in place. */
	__u32 cone = (src6[8] & 0x80) != 0;
	__u32 reply_local = cone ? 1 - local : local;
	__u8 mac_src[ETH_ALEN], mac_dst[ETH_ALEN], client6[16];
	__builtin_memcpy(mac_src, eth->h_source, ETH_ALEN);
	__builtin_memcpy(mac_dst, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(client6, src6, 16);
	__be32 client_ip = ip->saddr;
	__be16 client_port = udp->source;
	__be32 reply_ip = reply_local ? cfg->secondary : cfg->primary;
	__u32 mtu_len = cfg->mtu ? MTU_OPT_LEN : 0;
	__u32 ra_icmp_len = RA_ICMP_LEN + mtu_len;
	__u32 out_pl = auth + ORIGIN_LEN + IPV6_LEN + ra_icmp_len;
	__u32 out_len = sizeof(struct ethhdr) + 20 + 8 + out_pl;
	__u32 cur_len = end - data;

	if (out_len > cur_len) {
		if (bpf_xdp_adjust_head(ctx, (int)cur_len - (int)out_len))
			return PASS(FP_PASS_NO_ROOM);
	} else if (out_len < cur_len) {
		if (bpf_xdp_adjust_tail(ctx, (int)out_len - (int)cur_len))
			return PASS(FP_PASS_NO_ROOM);
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + MIN_OUT_FRAME > end || data + out_len != end)
		return PASS(FP_PASS_NO_ROOM);

	eth = data;
	__builtin_memcpy(eth->h_dest, mac_src, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac_dst, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);

	ip = (void *)(eth + 1);
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(out_len - sizeof(struct ethhdr));
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000); /* DF, as Linux sends small UDP datagrams */
	ip->ttl = 64;
	ip->protocol = IPPROTO_UDP;
	ip->check = 0;
	ip->saddr = reply_ip;
	ip->daddr = client_ip;
	ip->check = bpf_htons(~fold(sum_bytes((const __u8 *)ip, 20, end)) & 0xffff);

	udp = (void *)(ip + 1);
	udp->source = cfg->port;
	udp->dest = client_port;
	udp->len = bpf_htons(8 + out_pl);
	udp->check = 0;

	__u8 *p = (void *)(udp + 1);
	if (auth) {
		p[0] = 0;
		p[1] = 1;
		p[2] = 0;
		p[3] = 0;
		__builtin_memcpy(p + 4, nonce, 8);
		p[12] = 0; /* confirmation: the key is still valid */
	}
	p += auth;
	if ((void *)(p + ORIGIN_LEN + IPV6_LEN + RA_ICMP_LEN) > end)
		return PASS(FP_PASS_NO_ROOM);
	/* Origin indication: the client's mapping, obfuscated. */
	p[0] = 0;
	p[1] = 0;
	put_be16(p + 2, ~bpf_ntohs(client_port));
	put_be32(p + 4, ~bpf_ntohl(client_ip));
	p += ORIGIN_LEN;

	/* IPv6: server link-local -> the RS's source, hop limit 255. */
	__u8 *o6 = p;
	o6[0] = 0x60;
	o6[1] = 0;
	o6[2] = 0;
	o6[3] = 0;
	o6[4] = 0;
	o6[5] = ra_icmp_len;
	o6[6] = NH_ICMPV6;
	o6[7] = 255;
	__builtin_memcpy(o6 + 8, cfg->link_local, 16);
	__builtin_memcpy(o6 + 24, client6, 16);

	/* RA: hop limit 0, no flags, lifetime 0, reachable 0, retrans 2000 ms. */
	__u8 *ra = o6 + IPV6_LEN;
	__builtin_memset(ra, 0, RA_ICMP_LEN);
	ra[0] = RA_TYPE;
	put_be32(ra + 12, RA_RETRANS_MS);
	/* Prefix information: 2001:0:<primary>::/64, autonomous, infinite lifetimes. */
	__u8 *pio = ra + 16;
	pio[0] = 3;
	pio[1] = 4;
	pio[2] = 64;
	pio[3] = 0x40;
	__builtin_memset(pio + 4, 0xff, 8);
	pio[16] = 0x20;
	pio[17] = 0x01;
	put_be32(pio + 20, bpf_ntohl(cfg->primary));
	if (mtu_len) {
		__u8 *m = ra + RA_ICMP_LEN;
		if ((void *)(m + MTU_OPT_LEN) > end)
			return PASS(FP_PASS_NO_ROOM);
		m[0] = 5;
		m[1] = 1;
		m[2] = 0;
		m[3] = 0;
		put_be32(m + 4, cfg->mtu);
	}
	{
		__u32 s = sum_bytes(ra, ra_icmp_len, end);
		if (s == (__u32)-1)
			return PASS(FP_PASS_NO_ROOM);
		s += sum_addr6(o6 + 8) + sum_addr6(o6 + 24) + ra_icmp_len + NH_ICMPV6;
		__u16 c = ~fold(s);
		ra[2] = c >> 8;
		ra[3] = c & 0xff;
	}
	{
		__u32 s = sum_bytes((const __u8 *)udp, 8 + out_pl, end);
		if (s == (__u32)-1)
			return PASS(FP_PASS_NO_ROOM);
		s += be16_at((const __u8 *)&ip->saddr) + be16_at((const __u8 *)&ip->saddr + 2);
		s += be16_at((const __u8 *)&ip->daddr) + be16_at((const __u8 *)&ip->daddr + 2);
		s += IPPROTO_UDP + 8 + out_pl;
		__u16 c = ~fold(s);
		udp->check = bpf_htons(c ? c : 0xffff);
	}
	return count(FP_ANSWERED + local * 2 + cone, XDP_TX);
}
