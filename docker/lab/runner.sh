#!/bin/bash
# The lab's verdict: clears /results, says it is ready (its healthcheck, which every client
# waits for), takes each row's expected outcome from `client-sim lab` (the same profile x
# NAT kind, simulated in-process), waits for every row's result file until a deadline,
# prints the table and writes /results/verdict.json, report.html and junit.xml. Exit status
# 0 when every row matches, 1 otherwise. It needs no network (network_mode: none) and no
# access to Docker.
#
#   env MIREDO=1        also expect the `miredo` profile's row
#   env DEADLINE_S=120  seconds to wait for the result files
#   env SERVER_IMPL, RELAY_IMPL (ours | miredo | plugged), RELAY_TRUST (strict | lenient):
#       which implementations run; `client-sim lab` models ours, and the expectations are
#       adjusted per implementation (docker/lab/expect-impl.sh), with the reason in the
#       table's `why` column.
set -uo pipefail
LAB_ROLE=runner
# shellcheck source=common.sh
. /lab/common.sh

find "$RESULTS" -mindepth 1 -delete
touch "$RESULTS/.ready"
start=$(date +%s)

# The rows to expect, and what the matrix says of each.
rows=()
declare -A meta
while IFS=$'\t' read -r id cont profile nat router _port mapped _args; do
  case "$id" in ''|'#'*) continue ;; esac
  if [ "$cont" = miredo ] && [ "${MIREDO:-0}" != 1 ]; then continue; fi
  rows+=("$id")
  meta[$id]=$(jq -n -c --arg id "$id" --arg container "$cont" --arg profile "$profile" \
    --arg nat "$nat" --arg router "$router" --arg mapped "$mapped" \
    '{id: $id, container: $container, profile: $profile, nat: $nat, router: $router, mapped: $mapped}')
done </lab/matrix.tsv
log "expecting ${#rows[@]} result(s): ${rows[*]}"

# shellcheck source=expect-impl.sh
. /lab/expect-impl.sh
log "server: $(describe_impl server); relay: $(describe_impl relay)"

# Expected outcomes: client-sim's in-process lab for the same profile x NAT kind (a model of
# our server and relay), adjusted for the implementations that run (expect-impl.sh).
expected='{}'
while IFS=$'\t' read -r id _cont profile nat _router _port _mapped _args; do
  case "$id" in ''|'#'*) continue ;; esac
  e=$(client-sim lab --json --seed 1 --profile "$profile" --nat "$nat" 2>/dev/null |
    jq -c '[.scenarios[] | select(.variant == "-")][0]
      | {expected, why, ping_strict: .data.expected.ping_strict,
         ping_lenient: .data.expected.ping_lenient, notes: []}') || e=null
  [ "$e" = null ] || e=$(adjust_expectation "$e")
  expected=$(jq -c --arg id "$id" --argjson e "${e:-null}" '. + {($id): $e}' <<<"$expected")
done </lab/matrix.tsv

deadline=$((start + ${DEADLINE_S:-120}))
while :; do
  missing=()
  for id in "${rows[@]}"; do [ -s "$RESULTS/$id.json" ] || missing+=("$id"); done
  [ ${#missing[@]} -eq 0 ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "deadline: no result from ${missing[*]}"
    break
  fi
  sleep 0.5
done
elapsed=$(($(date +%s) - start))

results=$(for id in "${rows[@]}"; do
  if [ -s "$RESULTS/$id.json" ]; then
    jq -c --argjson meta "${meta[$id]}" '. + $meta' "$RESULTS/$id.json" ||
      jq -c -n --argjson meta "${meta[$id]}" '$meta + {missing: true}'
  else
    jq -c -n --argjson meta "${meta[$id]}" '$meta + {missing: true}'
  fi
done | jq -s -c .)

# Judge each row (jq has no XOR: for 16-bit groups, x XOR 0xffff = 65535 - x).
verdict=$(jq -c --argjson expected "$expected" --argjson elapsed "$elapsed" '
  def hex: ascii_downcase | explode | reduce .[] as $c (0; . * 16 + (if $c >= 97 then $c - 87 else $c - 48 end));
  def groups: (split("::") | if length == 2
      then (.[0] | if . == "" then [] else split(":") end) as $l
         | (.[1] | if . == "" then [] else split(":") end) as $r
         | $l + [range(8 - ($l | length) - ($r | length)) | "0"] + $r
      else .[0] | split(":") end) | map(hex);
  def mapped_ipv4: groups | [(65535 - .[6]), (65535 - .[7])]
      | "\((.[0] / 256 | floor)).\(.[0] % 256).\((.[1] / 256 | floor)).\(.[1] % 256)";
  def cone: groups | .[4] >= 32768;
  def show_exp: if . == null then "?" else
      .expected | if .state == "qualified"
        then "qualified/\(.nat)" + (if .cone_bit == null then "" elif .cone_bit then " C=1" else " C=0" end)
        else "\(.state)/\(.nat)" end end;
  map(. as $r | $expected[$r.id] as $e | ($r.report // {}) as $rep
    | ($rep.teredo_address // null) as $addr
    | {
        id: $r.id, container: ($r.container // "-"), profile: ($r.profile // "-"),
        nat: ($r.nat // "-"), router: ($r.router // "-"),
        expected: ($e | show_exp),
        state: (if $r.missing then "missing" else $rep.state // "exit \($r.exit_code)" end),
        nat_type: ($rep.nat // "-"),
        address: ($addr // "-"),
        error: ($rep.error // "-"),
        ping6_expected: ($e.ping // "?"),
        ping6: ($r.ping6 | if . == null then "-" elif .status == "n/a" then "n/a"
                 elif .status == "not_qualified" then "-"
                 elif .received != null then "\(.received)/\(.transmitted)" else .status end),
        ping6_detail: ($r.ping6.detail // ""),
        why: ($e.why // ""),
        notes: ($e.notes // []),
        problems: (
          if $r.missing then ["no result file before the deadline"]
          elif $e == null then ["client-sim lab gave no expectation"]
          else [
            (if $r.exit_code == 1 or $r.exit_code == 2 then "client-sim failed (exit \($r.exit_code)): \($r.stderr)" else empty end),
            (if $rep.state != $e.expected.state then "state \($rep.state) != \($e.expected.state)" else empty end),
            (if $r.container != "miredo" and $rep.nat != $e.expected.nat then "NAT \($rep.nat) != \($e.expected.nat)" else empty end),
            (if $rep.state == "qualified" and $e.expected.cone_bit != null and $addr != null
                and ($addr | cone) != $e.expected.cone_bit then "cone bit \($addr | cone) != \($e.expected.cone_bit)" else empty end),
            (if $r.container != "miredo" and ($rep.error // null) != ($e.expected.error // null) then "error \($rep.error) != \($e.expected.error)" else empty end),
            (if $addr != null and ($r.mapped // "-") != "-" and ($addr | mapped_ipv4) != $r.mapped
                then "address embeds \($addr | mapped_ipv4), not the NAT address \($r.mapped)" else empty end),
            (if $r.ping6.status == "failed" or $r.ping6.status == "error" then "ping6 failed: \($r.ping6.detail)" else empty end),
            # ping6 against the expectation of client-sim lab for the same relay trust policy:
            # "-" (never qualifies), "0/N <why>" (no reply), "N/N" (every reply).
            (($r.ping6 // {}) as $p | $e.ping as $x
              | if $x == null or $p.status == null or $p.status == "n/a" then empty
                elif $x == "-" then (if $p.status != "not_qualified" then "ping6 \($p.status), expected no qualification" else empty end)
                elif ($x | startswith("0/")) then (if ($p.received // 0) != 0 then "ping6 \($p.received) replies, expected \($x)" else empty end)
                elif ($p.received // 0) == 0 or $p.received != $p.transmitted then "ping6 \($p.detail), expected \($x)"
                else empty end),
            (if $r.container == "miredo" and $rep.state == "qualified" and $r.ping6.status != "ok"
                then "no ping6 through the relay" else empty end),
            (if $r.container == "miredo" and $r.ping6.status == "ok" and env.RELAY_IMPL == "ours"
                and ($r.relay_packets_to_teredo // 0) < 1
                then "the relay counted no packet toward Teredo clients" else empty end)
          ] end)
      } | .result = (if (.problems | length) == 0 then "ok" else "MISMATCH" end))
  | {server: env.SERVER_IMPL, relay: env.RELAY_IMPL, relay_trust: env.RELAY_TRUST,
     rows: ., total: length, ok: (map(select(.result == "ok")) | length),
     mismatches: (map(select(.result != "ok")) | length), elapsed_s: $elapsed}
  | .exit_code = (if .mismatches == 0 then 0 else 1 end)' <<<"$results")

table() {
  {
    printf 'container\tprofile\tNAT\trouter\texpected\tstate\tNAT type\tTeredo address\terror\tping6 expected\tping6\tresult\twhy differs\n'
    jq -r '.rows[] | [.container, .profile, .nat, .router, .expected, .state, .nat_type,
      .address, .error, .ping6_expected, .ping6, .result,
      (.notes | map(.tag) | join(",") | if . == "" then "-" else . end)] | @tsv' <<<"$verdict"
  } | awk -F'\t' '
    { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NF }
    END {
      for (r = 1; r <= NR; r++) {
        line = ""
        for (i = 1; i <= n; i++) line = line sprintf(i < n ? "%-" w[i] "s  " : "%s", cell[r, i])
        print line
        if (r == 1) { line = ""; for (i = 1; i <= n; i++) { d = sprintf("%" w[i] "s", ""); gsub(/ /, "-", d); line = line d (i < n ? "  " : "") } print line }
      }
    }'
  jq -r '.rows[] | select(.problems | length > 0) | "MISMATCH \(.id): \(.problems | join("; "))"' <<<"$verdict"
  jq -r '.rows[] | select(.ping6_detail != "" and .ping6 != "n/a" and .ping6 != "-") | "ping6 \(.id): \(.ping6_detail)"' <<<"$verdict"
  echo "server: $(describe_impl server); relay: $(describe_impl relay)"
  jq -r '[.rows[].notes[]] | unique_by(.tag)[] | "why differs \(.tag): \(.why)"' <<<"$verdict"
  jq -r '"ping6 = echo requests from a second client of the row to 2001:db8:1::100 (server out, relay back); expectations: client-sim lab (a model of our server and relay), adjusted per implementation (why differs)"' <<<"$verdict"
  jq -r '"\(.total) container scenarios, \(.ok) ok, \(.mismatches) mismatches (\(.elapsed_s) s)"' <<<"$verdict"
}
table | tee "$RESULTS/table.txt"
jq -r '"\(.total) scenarios, \(.ok) ok, \(.mismatches) mismatches"' <<<"$verdict" >"$RESULTS/summary.txt"
jq -r .exit_code <<<"$verdict" >"$RESULTS/exit_code"
printf '%s\n' "$verdict" >"$RESULTS/.verdict.tmp" && mv "$RESULTS/.verdict.tmp" "$RESULTS/verdict.json"
# The same verdict as a page (the matrix grid, a row per scenario) and as JUnit XML, rendered
# by client-sim from verdict.json.
client-sim container-report "$RESULTS/verdict.json" \
  --html "$RESULTS/report.html" --junit "$RESULTS/junit.xml" ||
  log "cannot write report.html / junit.xml"
exit "$(jq -r .exit_code <<<"$verdict")"
