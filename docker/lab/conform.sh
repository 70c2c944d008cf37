#!/bin/bash
# The conformance run (compose profile `conformance`, docker/up.sh --conformance):
# `client-sim conform` against whatever server and relay are plugged in, from the `internet`
# network (198.51.100.70, the client side) and the `native` network (2001:db8:1::70, where
# 2001::/32 is routed via the relay and the server's native forwarding arrives).
#
# One run per device, so that each is compared with its own implementation's expectations
# (conformance/expectations.json, copied to /results/expectations.json by up.sh):
#   server  ours -> "ours", miredo -> "miredo-server", plugged -> $SERVER_EXPECT (if set)
#   relay   ours -> "ours" ("ours-lenient" with RELAY_TRUST=lenient), miredo -> "miredo-relay",
#           plugged -> $RELAY_EXPECT (if set)
# Without the file or a name, a run gives the plain verdict (every MUST passes).
# Leaves conform-server.{json,xml,pcap} and conform-relay.{...} and, merged, conform.json (the
# same report format: checks of both runs, summed counts, both comparisons),
# conform.xml (JUnit: the server's and the relay's <testsuite>) and conform.pcap (the server
# run's datagrams, then the relay run's: each run's clock starts at 0), plus table.txt,
# summary.txt, exit_code and verdict.json for up.sh. Exit status: 0 when both runs exit 0.
#
#   env CONFORM_ARGS   more `client-sim conform` flags (e.g. --strict, --quick, --only S01)
set -uo pipefail
LAB_ROLE=conform
# shellcheck source=common.sh
. /lab/common.sh
ME4=$CONFORM4
ME6=2001:db8:1::70
EXPECT=$RESULTS/expectations.json

drop_default_routes
ip -6 route replace 2001::/32 via "$RELAY6" || die "cannot route 2001::/32 via $RELAY6"
# Non-global sources for S05 and R18 (server and relay route them back here).
wan=$(iface_of "$INTERNET_PREFIX") || true
[ -n "$wan" ] || die "no interface on the internet network"
non_global=()
for a in $CONFORM_NON_GLOBAL; do
  ip addr add "$a/32" dev "$wan" || die "cannot add $a"
  non_global+=(--non-global-source "$a")
done
# Docker's IPv6 address is usable only once duplicate address detection is over.
for _ in $(seq 50); do
  ip -6 addr show tentative | grep -q . || break
  sleep 0.1
done

impl_name() { # device impl -> the expectations' implementation name, or nothing
  case "$1:$2" in
    server:ours) echo ours ;;
    server:miredo) echo miredo-server ;;
    server:*) echo "${SERVER_EXPECT:-}" ;;
    relay:ours) if [ "${RELAY_TRUST:-strict}" = lenient ]; then echo ours-lenient; else echo ours; fi ;;
    relay:miredo) echo miredo-relay ;;
    relay:*) echo "${RELAY_EXPECT:-}" ;;
  esac
}

# run_device DEVICE IMPL TARGET-FLAGS... -> /results/conform-DEVICE.*, its exit status
run_device() {
  local device=$1 impl=$2 name expect=() rc; shift 2
  if ! client-sim conform --list | awk -v d="$device" '$2 == d { found = 1 } END { exit !found }'; then
    log "$device: this client-sim's catalogue has no $device check: not run"
    return 0
  fi
  ran+=("$device")
  name=$(impl_name "$device" "$impl")
  if [ -n "$name" ] && [ -s "$EXPECT" ]; then
    expect=(--expect "$EXPECT" --implementation "$name")
  fi
  if [ ${#expect[@]} -gt 0 ]; then
    log "$device: $impl, compared with the expectations of $name"
  elif [ -n "$name" ]; then
    log "$device: $impl, plain verdict (no expectations file $EXPECT)"
  else
    log "$device: $impl, plain verdict (no implementation name for the expectations)"
  fi
  # shellcheck disable=SC2086 # CONFORM_ARGS is words
  client-sim conform "$@" --bind "$ME4" --native-local "$ME6" "${non_global[@]}" "${expect[@]}" \
    --json --junit "$RESULTS/conform-$device.xml" --pcap "$RESULTS/conform-$device.pcap" \
    ${CONFORM_ARGS:-} >"$RESULTS/conform-$device.json" 2>"/tmp/conform-$device.err"
  rc=$?
  cat "/tmp/conform-$device.err" >&2
  log "$device: client-sim conform exit $rc"
  return "$rc"
}

ran=()
run_device server "${SERVER_IMPL:-ours}" --server "$SERVER" --secondary "$SERVER_SECONDARY"
server_rc=$?
run_device relay "${RELAY_IMPL:-ours}" --relay "$RELAY4:3545"
relay_rc=$?

[ ${#ran[@]} -gt 0 ] || die "the catalogue has no check for a server or a relay"
declare -A rcs=([server]=$server_rc [relay]=$relay_rc)
devices=$(for d in "${ran[@]}"; do
  impl_var=${d^^}_IMPL
  jq -n -c --arg d "$d" --arg i "${!impl_var:-ours}" --argjson rc "${rcs[$d]}" \
    --arg name "$(impl_name "$d" "${!impl_var:-ours}")" \
    '{device: $d, implementation: $i, expectations_name: $name, exit_code: $rc}'
done | jq -s -c .)
files() { local d; for d in "${ran[@]}"; do printf '%s\n' "$RESULTS/conform-$d.$1"; done; }
mapfile -t jsons < <(files json)
mapfile -t xmls < <(files xml)
mapfile -t pcaps < <(files pcap)

# The merged report has the same format as one run's, plus `devices`.
if jq -s -c --argjson devices "$devices" '
  def add_counts: reduce .[] as $s ({}; reduce ($s | to_entries[]) as $e (.; .[$e.key] += $e.value));
  {target: (reduce .[] as $r ({server: null, relay: null};
             . + ($r.target | with_entries(select(.value != null))))),
   strict: .[0].strict,
   summary: (map(.summary) | add_counts),
   checks: (map(.checks) | add),
   devices: $devices}
  + (map(.expectations // empty) | if length == 0 then {} else {expectations: {
      implementation: (map(.implementation) | join(" + ")),
      compared: (map(.compared) | add),
      known_deviations: (map(.known_deviations) | add),
      mismatches: (map(.mismatches) | add)}} end)' \
  "${jsons[@]}" >"$RESULTS/.conform.tmp"; then
  mv "$RESULTS/.conform.tmp" "$RESULTS/conform.json"
else
  log "cannot merge the JSON reports"
fi

# JUnit: one <testsuites> around every run's <testsuite> elements.
{
  echo '<?xml version="1.0" encoding="UTF-8"?>'
  echo '<testsuites name="teredo conformance">'
  sed -n '/<testsuite[ >]/,/<\/testsuite>/p' "${xmls[@]}" 2>/dev/null
  echo '</testsuites>'
} >"$RESULTS/conform.xml"

# pcap: the first file whole, the others without their 24-byte global header (same link
# type, raw IP; each run's clock starts at 0).
{
  cat "${pcaps[0]}"
  for f in "${pcaps[@]:1}"; do tail -c +25 "$f"; done
} >"$RESULTS/conform.pcap" 2>/dev/null

rc=0
[ "$server_rc" = 0 ] && [ "$relay_rc" = 0 ] || rc=1
{
  jq -r '.checks[] | [.id, .role, .level, .verdict, .title, .detail] | @tsv' "$RESULTS/conform.json" 2>/dev/null |
    awk -F'\t' '{ printf "%-4s %-6s %-15s %-14s %s: %s\n", $1, $2, $3, $4, $5, substr($6, 1, 160) }'
  jq -r '.expectations // empty | "expectations \(.implementation): \(.compared) compared, \(.known_deviations | length) known deviations, \(.mismatches | length) mismatches",
    (.known_deviations | to_entries[] | "  known \(.key): \(.value)"),
    (.mismatches[] | "  MISMATCH \(.id): expected \(.expected), got \(.actual): \(.detail)")' \
    "$RESULTS/conform.json" 2>/dev/null
  jq -r --arg have "$([ -s "$EXPECT" ] && echo yes)" '.[] | "\(.device): \(.implementation), \(if .expectations_name == "" or $have == "" then "plain verdict" else "expectations of \(.expectations_name)" end), client-sim conform exit \(.exit_code)"' <<<"$devices"
  [[ " ${ran[*]} " == *" relay "* ]] || echo "relay: not run (no relay check in the catalogue)"
  [[ " ${ran[*]} " == *" server "* ]] || echo "server: not run (no server check in the catalogue)"
} | tee "$RESULTS/table.txt" >&2
jq -r '"conformance: \(.summary | to_entries | map("\(.value) \(.key)") | join(", "))"
    + (.expectations // null | if . == null then "" else "; expectations \(.implementation): \(.mismatches | length) mismatches" end)
    + "; " + (.devices | map("\(.device) \(.implementation) exit \(.exit_code)") | join(", "))' \
  "$RESULTS/conform.json" >"$RESULTS/summary.txt" 2>/dev/null ||
  echo "conformance: no report (server exit $server_rc, relay exit $relay_rc)" >"$RESULTS/summary.txt"
echo "$rc" >"$RESULTS/exit_code"
jq -c --argjson rc "$rc" '{summary, devices, expectations, exit_code: $rc}' "$RESULTS/conform.json" \
  >"$RESULTS/verdict.json" 2>/dev/null || echo "{\"exit_code\": $rc}" >"$RESULTS/verdict.json"
exit "$rc"
