#!/bin/bash
# The Teredo server: primary 198.51.100.10 (assigned by compose) and secondary
# 198.51.100.11, which compose cannot put on the same interface (shared/NAT.md section 5):
# added here before the server binds both. Native IPv6 leaves through the `native` network.
#
#   env SERVER_IMPL=ours     teredo-server (--native raw)
#                  =miredo   Debian's miredo-server 1.2.6 (ServerBindAddress/2)
#                  =plugged  only the network: the server under test runs in the service
#                            `server-plugged`, which shares this container's network
#                            (docker/up.sh: TEREDO_LAB_SERVER_IMAGE / _CMD)
set -euo pipefail
LAB_ROLE=server
# shellcheck source=common.sh
. /lab/common.sh

wan=$(iface_of "$SERVER") || true
[ -n "$wan" ] || die "no interface holds $SERVER"
drop_default_routes
ip addr add "$SERVER_SECONDARY/24" dev "$wan"
route_non_global_to_conform
log "$wan: $(ip -o -4 addr show dev "$wan" | awk '{ printf "%s ", $4 }'); server: ${SERVER_IMPL:-ours}"
case "${SERVER_IMPL:-ours}" in
  ours)
    exec teredo-server --primary "$SERVER" --secondary "$SERVER_SECONDARY" \
      --native "${SERVER_NATIVE:-raw}" --metrics-addr 0.0.0.0:9101 "$@"
    ;;
  miredo)
    # Root at start (raw IPv6 socket), then it drops to the `miredo` user; -f: foreground,
    # its syslog lines on stderr.
    printf 'ServerBindAddress %s\nServerBindAddress2 %s\n' "$SERVER" "$SERVER_SECONDARY" \
      >/run/miredo-server.conf
    exec miredo-server -f -c /run/miredo-server.conf -p /run/miredo-server.pid
    ;;
  plugged)
    log "waiting for the plugged-in server (service server-plugged) to bind $SERVER:3544 and $SERVER_SECONDARY:3544"
    idle
    ;;
  *) die "SERVER_IMPL=$SERVER_IMPL: expected ours, miredo or plugged" ;;
esac
