#!/bin/bash
# Docker Swarm cannot give a service task a fixed address (no `ipv4_address` in a stack
# file), so on the stack's networks this wrapper adds the lab's fixed addresses itself
# before it runs the role's own entrypoint (docker/swarm/stack.yml):
#
#   env PLACE_V4=198.51.100.10   added on the interface of the `internet` network
#       PLACE_V6=2001:db8:1::20  added on the interface of the `native` network (nodad), the
#                                one holding a 192.0.2.x address: Docker gives that overlay
#                                no IPv6 (a dual-stack overlay makes Swarm hand out clashing
#                                addresses: docker/swarm/up.sh), so these are its only ones
#       PLACE_TUN=1              creates /dev/net/tun (a service cannot map devices; the
#                                default device rules allow the TUN character device 10:200)
#   swarm-place.sh /lab/relay.sh
#
# Neighbours find these addresses by ARP / neighbour discovery, which works between the
# tasks of one node (one bridge inside the overlay). Across nodes the overlay answers only
# for the addresses Docker assigned: see README "Docker Swarm" for what that limits.
set -euo pipefail
LAB_ROLE=place
# shellcheck source=common.sh
. /lab/common.sh
NATIVE4_PREFIX=192.0.2.

if [ -n "${PLACE_V4:-}" ]; then
  dev=$(iface_of "$INTERNET_PREFIX") || true
  [ -n "$dev" ] || die "no interface on the internet network ($INTERNET_PREFIX*)"
  ip addr add "$PLACE_V4/24" dev "$dev"
  log "$dev: added $PLACE_V4 (Docker gave $(addr_of "$dev"))"
fi
if [ -n "${PLACE_V6:-}" ]; then
  dev6=$(iface_of "$NATIVE4_PREFIX") || true
  [ -n "$dev6" ] || die "no interface on the native network ($NATIVE4_PREFIX*)"
  if [ "$(cat "/proc/sys/net/ipv6/conf/$dev6/disable_ipv6" 2>/dev/null)" != 0 ]; then
    die "$dev6: IPv6 is disabled (the stack sets net.ipv6.conf.all.disable_ipv6=0)"
  fi
  ip -6 addr add "$PLACE_V6/64" dev "$dev6" nodad
  log "$dev6: added $PLACE_V6"
fi
if [ "${PLACE_TUN:-0}" = 1 ] && [ ! -c /dev/net/tun ]; then
  mkdir -p /dev/net
  mknod /dev/net/tun c 10 200
fi
exec "$@"
