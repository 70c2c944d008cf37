#!/bin/bash
# A native IPv6 host: answers ping (the kernel) and UDP echo on port 7 (socat), and reaches
# Teredo addresses (2001::/32) through the relay.
set -euo pipefail
LAB_ROLE=v6host
# shellcheck source=common.sh
. /lab/common.sh

drop_default_routes
ip -6 route replace 2001::/32 via "$RELAY6"
log "$(ip -6 route show 2001::/32)"
touch /run/lab-ready
trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM INT
socat -T 10 UDP6-LISTEN:7,fork,reuseaddr PIPE &
wait
