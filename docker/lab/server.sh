#!/bin/bash
# The Teredo server: primary 198.51.100.10 (assigned by compose) and secondary
# 198.51.100.11, which compose cannot put on the same interface (shared/NAT.md section 5):
# added here before teredo-server binds both. Native IPv6 (--native raw) leaves through the
# `native` network.
set -euo pipefail
LAB_ROLE=server
# shellcheck source=common.sh
. /lab/common.sh

wan=$(iface_of "$SERVER") || true
[ -n "$wan" ] || die "no interface holds $SERVER"
drop_default_routes
ip addr add "$SERVER_SECONDARY/24" dev "$wan"
log "$wan: $(ip -o -4 addr show dev "$wan" | awk '{ printf "%s ", $4 }')"
exec teredo-server --primary "$SERVER" --secondary "$SERVER_SECONDARY" \
  --native "${SERVER_NATIVE:-raw}" --metrics-addr 0.0.0.0:9101 "$@"
