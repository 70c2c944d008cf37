#!/bin/bash
# The Teredo relay: UDP 198.51.100.20:3545 on the `internet` network, a TUN device for native
# IPv6 with the route 2001::/32; the `native` network's hosts route 2001::/32 via this
# container's native address, and the kernel forwards between them
# (net.ipv6.conf.all.forwarding=1 from compose).
#
#   env RELAY_IMPL=ours     teredo-relay --trust $RELAY_TRUST (strict by default)
#                 =miredo   Debian's miredo 1.2.6 as a relay: RelayType cone (it accepts any
#                           peer whose packets match its mapping: like --trust lenient)
#                 =plugged  only the network: the relay under test runs in the service
#                           `relay-plugged`, which shares this container's network
set -euo pipefail
LAB_ROLE=relay
# shellcheck source=common.sh
. /lab/common.sh

drop_default_routes
route_non_global_to_conform
log "relay: ${RELAY_IMPL:-ours}"
case "${RELAY_IMPL:-ours}" in
  ours)
    exec teredo-relay --bind "$RELAY4:3545" --native tun:teredo0 --trust "${RELAY_TRUST:-strict}" \
      --icmp-source "$RELAY6" --metrics-addr 0.0.0.0:9102 "$@"
    ;;
  miredo)
    # It creates the TUN teredo0 (MTU 1280, fe80::ffff:ffff:ffff/64) and the route
    # 2001::/32 itself, then drops to the `miredo` user.
    printf 'RelayType cone\nInterfaceName teredo0\nBindAddress %s\nBindPort 3545\n' "$RELAY4" \
      >/run/miredo-relay.conf
    exec miredo -f -c /run/miredo-relay.conf -p /run/miredo-relay.pid
    ;;
  plugged)
    log "waiting for the plugged-in relay (service relay-plugged) to bind $RELAY4:3545 and route 2001::/32"
    idle
    ;;
  *) die "RELAY_IMPL=$RELAY_IMPL: expected ours, miredo or plugged" ;;
esac
