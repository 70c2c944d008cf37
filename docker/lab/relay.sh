#!/bin/bash
# The Teredo relay: UDP on the `internet` network, a TUN device for native IPv6 (it installs
# 2001::/32 via fe80::1 itself); the `native` network's hosts route 2001::/32 via this
# container's native address, and the kernel forwards between them
# (net.ipv6.conf.all.forwarding=1 from compose).
set -euo pipefail
LAB_ROLE=relay
# shellcheck source=common.sh
. /lab/common.sh

drop_default_routes
exec teredo-relay --bind "$RELAY4:3545" --native tun:teredo0 --trust "${RELAY_TRUST:-strict}" \
  --icmp-source "$RELAY6" --metrics-addr 0.0.0.0:9102 "$@"
