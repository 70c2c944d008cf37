# shellcheck shell=bash
# Shared helpers of the lab's entrypoints (sourced, not executed).
# Addresses are fixed by docker/compose.yml; entrypoints find their interfaces by subnet
# because Docker numbers eth0, eth1, ... in an order it does not promise.

# Used by the scripts that source this file.
# shellcheck disable=SC2034
{
  INTERNET_PREFIX=198.51.100.
  SERVER=198.51.100.10
  SERVER_SECONDARY=198.51.100.11
  RELAY4=198.51.100.20
  RELAY6=2001:db8:1::20
  V6HOST=2001:db8:1::100
  PROMETHEUS4=198.51.100.50
  LOADGEN4=198.51.100.60
  CONFORM4=198.51.100.70
  # Non-global addresses the conformance container also holds (RS sources a server must
  # ignore, client mappings a relay must never send to), routed to it from server and relay.
  CONFORM_NON_GLOBAL="10.99.0.70 192.168.99.70"
  RESULTS=${RESULTS:-/results}
}

log() { printf '%s %s: %s\n' "$(date +%T)" "${LAB_ROLE:-lab}" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# iface_of IPV4_PREFIX: the interface holding an IPv4 address that starts with the prefix.
iface_of() {
  ip -o -4 addr show | awk -v p="$1" 'index($4, p) == 1 { print $2; exit }'
}

# addr_of IFACE: its first IPv4 address with the prefix length.
addr_of() {
  ip -o -4 addr show dev "$1" | awk '{ print $4; exit }'
}

# Nothing in the lab may leave its compose networks: Docker gives a container a default
# route via the host's bridge on a non-internal network (and an IPv6 default route even on
# internal ones). Entrypoints with NET_ADMIN drop both, then add only what the role needs.
drop_default_routes() {
  ip -4 route del default 2>/dev/null || true
  ip -6 route del default 2>/dev/null || true
}

# route_non_global_to_conform: routes to the conformance container's non-global addresses
# (via its Internet address; harmless when it does not run), so that anything the device
# under test sends there reaches the tool and can be seen.
route_non_global_to_conform() {
  local a
  for a in $CONFORM_NON_GLOBAL; do
    ip route replace "$a/32" via "$CONFORM4" 2>/dev/null ||
      log "no route to $a via $CONFORM4"
  done
}

# write_result NAME JSON: atomically publish one result file for the runner.
write_result() {
  local name=$1 json=$2
  printf '%s\n' "$json" >"$RESULTS/.$name.tmp"
  mv "$RESULTS/.$name.tmp" "$RESULTS/$name.json"
}

# Keep the container up (a service that exits would stop the whole `up
# --abort-on-container-exit`) until compose stops it; `init: true` forwards SIGTERM.
idle() {
  trap 'exit 0' TERM INT
  while :; do sleep 3600 & wait $!; done
}

# http_get HOST PORT PATH: the body of an HTTP/1.0 GET (bash's /dev/tcp: no HTTP client in
# the image); fails when unreachable or the status is not 200.
http_get() {
  local host=$1 port=$2 path=$3 raw
  # shellcheck disable=SC2016 # expanded by the inner bash
  raw=$(timeout 5 bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$3" "$1" >&3
    cat <&3' _ "$host" "$port" "$path" 2>/dev/null) || return 1
  [[ $raw == "HTTP/1."[01]" 200"* ]] || return 1
  # Everything after the first empty line (headers end with CRLF CRLF).
  printf '%s\n' "${raw#*$'\r\n\r\n'}"
}

# metric HOST PORT NAME{LABELS}: one sample of a /metrics endpoint, empty when unreachable or
# absent.
metric() {
  local host=$1 port=$2 name=$3 body
  body=$(http_get "$host" "$port" /metrics) || return 0
  awk -v n="$name" '$1 == n { print $2; exit }' <<<"$body"
}
