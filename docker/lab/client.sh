#!/bin/bash
# A client container: runs its rows of /lab/matrix.tsv in parallel (per row `client-sim
# qualify` on the row's internal port and `client-sim ping` on that port + 100), writes
# /results/ID.json per row, then stays up.
#
#   client.sh CONTAINER      (env GATEWAY: the NAT router's LAN address, the default route;
#                             env EXTRA_ADDRS: more IPv4s to put on the interface, model NAT)
set -uo pipefail
container=${1:?usage: client.sh CONTAINER}
LAB_ROLE=$container
# shellcheck source=common.sh
. /lab/common.sh

drop_default_routes
if [ -n "${GATEWAY:-}" ]; then
  # The LAN network's gateway is Docker's bridge: replace it with the NAT router.
  ip route replace default via "$GATEWAY" || die "cannot route via $GATEWAY"
fi
for a in ${EXTRA_ADDRS:-}; do
  dev=$(iface_of "$INTERNET_PREFIX")
  ip addr add "$a/24" dev "$dev" || die "cannot add $a"
done
log "routes: $(ip -4 route | tr '\n' ';')"

# ping6 through the relay: `client-sim ping` qualifies a second client of the same profile
# behind the same NAT (internal port + 100, in parallel with `qualify`) and pings the native
# host 2001:db8:1::100: out through the server (the direct IPv6 connectivity test), back
# through the relay. Older client-sim builds have no `ping`: the column is then n/a.
have_ping=false
client-sim ping --help >/dev/null 2>&1 && have_ping=true

ping_row() { # id profile port args... -> /tmp/ID.ping6 (JSON)
  local id=$1 profile=$2 port=$3; shift 3
  local out=/tmp/$id.ping.json err=/tmp/$id.ping.err rc
  if [ "$have_ping" != true ]; then
    echo '{"status":"n/a","detail":"this client-sim has no ping subcommand"}' >"/tmp/$id.ping6"
    return
  fi
  # shellcheck disable=SC2068 # the matrix's args are words
  client-sim ping "$V6HOST" --server "$SERVER" --profile "$profile" --port $((port + 100)) \
    --timeout "${QUALIFY_TIMEOUT:-45s}" -c 3 -i 500ms -W 10s --json $@ >"$out" 2>"$err"
  rc=$?
  jq -c -n --argjson rc "$rc" --arg stderr "$(tail -n 3 "$err")" \
    --argjson r "$(jq -c . "$out" 2>/dev/null || echo null)" '
    ($r // {}) as $r
    | {exit_code: $rc, transmitted: $r.transmitted, received: $r.received, via: $r.via,
       status: (if $rc == 0 then "ok" elif $rc == 7 then "no_reply"
                elif $rc >= 3 and $rc <= 6 then "not_qualified" else "error" end),
       detail: (if $r.transmitted != null
                then "\($r.received)/\($r.transmitted) replies" + (if $r.via then " via \($r.via)" else "" end)
                     + (if ($r.client_drops // {}) != {} then ", client drops \($r.client_drops | tostring)" else "" end)
                else "exit \($rc): \($stderr)" end)}' >"/tmp/$id.ping6"
}

run_row() { # id profile nat router port mapped args...
  local id=$1 profile=$2 nat=$3 router=$4 port=$5 mapped=$6; shift 6
  local out=/tmp/$id.json err=/tmp/$id.err rc report
  ping_row "$id" "$profile" "$port" "$@" &
  # shellcheck disable=SC2068 # the matrix's args are words
  client-sim qualify --server "$SERVER" --profile "$profile" --port "$port" \
    --timeout "${QUALIFY_TIMEOUT:-45s}" --json $@ >"$out" 2>"$err"
  rc=$?
  wait
  report=$(jq -c . "$out" 2>/dev/null) || report=null
  [ -n "$report" ] || report=null
  log "$id: exit $rc $(jq -r '"\(.state) / \(.nat) / \(.teredo_address)"' "$out" 2>/dev/null);" \
    "ping6 $(jq -r '"\(.status) \(.detail)"' "/tmp/$id.ping6")"
  write_result "$id" "$(jq -n -c --arg id "$id" --arg container "$container" \
    --arg profile "$profile" --arg nat "$nat" --arg router "$router" --arg mapped "$mapped" \
    --argjson exit_code "$rc" --argjson report "$report" \
    --argjson ping6 "$(cat "/tmp/$id.ping6")" --arg stderr "$(tail -n 5 "$err")" \
    '{id: $id, container: $container, profile: $profile, nat: $nat, router: $router,
      mapped: $mapped, exit_code: $exit_code, report: $report, ping6: $ping6,
      stderr: $stderr}')"
}

n=0
while IFS=$'\t' read -r id cont profile nat router port mapped args; do
  case "$id" in ''|'#'*) continue ;; esac
  [ "$cont" = "$container" ] || continue
  # shellcheck disable=SC2086
  run_row "$id" "$profile" "$nat" "$router" "$port" "$mapped" $args &
  n=$((n + 1))
done </lab/matrix.tsv
[ "$n" -gt 0 ] || die "no rows for $container in /lab/matrix.tsv"
wait
log "$n result(s) written"
idle
