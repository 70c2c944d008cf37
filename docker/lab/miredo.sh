#!/bin/bash
# Debian's Miredo client behind a NAT router (compose profile `miredo`): qualifies against
# the lab's server, then pings the native host 2001:db8:1::100 through the server (the direct
# IPv6 connectivity test) and the relay (the reply path), and sends it a UDP echo.
# Writes /results/miredo-debian.json, then stays up with Miredo running.
#
#   env GATEWAY: the NAT router's LAN address
#   env RELAY_IMPL: ours (the default) also reads the relay's packet counters, the evidence
#                   that the replies came through it (other relays have no metrics endpoint)
set -uo pipefail
LAB_ROLE=miredo
# shellcheck source=common.sh
. /lab/common.sh
id=miredo-debian

drop_default_routes
ip route replace default via "${GATEWAY:?}" || die "cannot route via $GATEWAY"

cat >/run/miredo-lab.conf <<CONF
# teredo-lab container: Miredo as a Teredo client of our server
RelayType client
InterfaceName teredo
ServerAddress $SERVER
CONF
miredo -f -c /run/miredo-lab.conf -p /run/miredo.pid 2>/tmp/miredo.err &
miredo_pid=$!
trap 'kill $miredo_pid 2>/dev/null; exit 0' TERM INT

start=$(date +%s)
deadline=$((start + ${QUALIFY_TIMEOUT_S:-45}))
address=
while [ "$(date +%s)" -lt "$deadline" ]; do
  kill -0 "$miredo_pid" 2>/dev/null || break
  address=$(ip -6 -o addr show dev teredo scope global 2>/dev/null |
    awk '$4 ~ /^2001:0:/ { sub(/\/.*/, "", $4); print $4; exit }')
  [ -n "$address" ] && break
  sleep 0.2
done
elapsed=$(($(date +%s) - start))

ping_status=n/a ping_detail="not qualified" udp=n/a relay_out='' received=''
if [ -n "$address" ]; then
  log "qualified as $address after ${elapsed}s; pinging $V6HOST"
  # The first packet waits for Miredo's connectivity test and the relay's bubbles.
  ping -6 -n -c 1 -W 8 "$V6HOST" >/tmp/ping-warm.txt 2>&1 || true
  ping -6 -n -c 5 -i 0.2 -W 3 "$V6HOST" >/tmp/ping.txt 2>&1 || true
  cat /tmp/ping-warm.txt /tmp/ping.txt >&2
  received=$(awk '/packets transmitted/ { print $4 }' /tmp/ping.txt)
  received=${received:-0}
  rtt=$(awk -F'[ /]' '/^rtt|^round-trip/ { print $8 }' /tmp/ping.txt)
  if [ "$received" -gt 0 ]; then
    ping_status=ok ping_detail="$received/5 replies, avg ${rtt:-?} ms"
  else
    ping_status=failed ping_detail="0/5 replies"
  fi
  echo_reply=$(echo teredo-lab | timeout 5 socat -T 3 - "UDP6:[$V6HOST]:7" 2>&1) || true
  if [ "$echo_reply" = teredo-lab ]; then udp=ok; else udp="failed: ${echo_reply:-no reply}"; fi
  ping_detail="$ping_detail; UDP echo $udp"
  if [ "${RELAY_IMPL:-ours}" = ours ]; then
    # Evidence that the replies came through our relay (they are routed to it: 2001::/32).
    relay_out=$(metric "$RELAY4" 9102 'teredo_relay_packets_total{direction="ipv6_to_ipv4"}')
    relay_in=$(metric "$RELAY4" 9102 'teredo_relay_packets_total{direction="ipv4_to_ipv6"}')
    relay_trusted=$(metric "$RELAY4" 9102 'teredo_relay_peers{state="trusted"}')
    ping_detail="$ping_detail; relay: ${relay_out:-?} packets to Teredo, ${relay_in:-?} from Teredo, ${relay_trusted:-?} trusted peer(s)"
  fi
fi
log "ping6: $ping_status ($ping_detail)"

write_result "$id" "$(jq -n -c --arg id "$id" --arg address "$address" \
  --argjson elapsed "$elapsed" --arg ping_status "$ping_status" --arg ping_detail "$ping_detail" \
  --arg stderr "$(tail -n 5 /tmp/miredo.err)" --arg relay_out "${relay_out:-}" \
  --arg received "${received:-}" \
  '{id: $id, container: "miredo", profile: "miredo", nat: "port-restricted", router: "nft R1+fw",
    mapped: "198.51.100.33", exit_code: (if $address == "" then 6 else 0 end),
    report: {state: (if $address == "" then "probe" else "qualified" end),
             nat: null, error: null, elapsed_s: $elapsed,
             teredo_address: (if $address == "" then null else $address end)},
    ping6: {status: $ping_status, detail: $ping_detail,
            received: ($received | tonumber? // null), transmitted: 5},
    relay_packets_to_teredo: ($relay_out | tonumber? // null), stderr: $stderr}')"
wait "$miredo_pid"
log "miredo exited: $(tail -n 5 /tmp/miredo.err)"
idle
