#!/bin/bash
# The verdict of the Docker Swarm run (docker/swarm/up.sh runs it in a one-shot container on
# the stack's `internet` overlay, with the results folder): merges the replicas' reports
# with `client-sim load-report`, checks that the merged totals are the sums of the replicas'
# own, and asks Prometheus (PROMETHEUS, default the service name `prometheus`) whether it
# scraped the server, the relay and every replica (each replica's loadgen_generator_info
# and its final count of qualified clients, which must equal its report's).
#
#   swarm-check.sh REPLICAS
# Writes merged.{json,txt,html,xml}, prometheus.txt, verdict.txt (one line) in /results;
# exit status 0 when every check passed.
set -uo pipefail
LAB_ROLE=swarm-check
# shellcheck source=common.sh
. /lab/common.sh

n=${1:?usage: swarm-check.sh REPLICAS}
# The service's name on the overlay (Docker's DNS; a one-shot container attached to the
# network resolves the stack's services too).
prom=
for name in ${PROMETHEUS:-} prometheus tasks.prometheus; do
  getent hosts "$name" >/dev/null && { prom=$name; break; }
done
[ -n "$prom" ] || prom=${PROMETHEUS:-prometheus}
problems=()
files=()
for i in $(seq 1 "$n"); do
  f=$RESULTS/load-$i.json
  if [ -s "$f" ]; then files+=("$f"); else problems+=("replica $i wrote no report"); fi
done

merged_rc=none
if [ "${#files[@]}" -gt 0 ]; then
  client-sim load-report "${files[@]}" --json "$RESULTS/merged.json" --html "$RESULTS/merged.html" \
    --junit "$RESULTS/merged.xml" >"$RESULTS/merged.txt"
  merged_rc=$?
  cat "$RESULTS/merged.txt"
  [ "$merged_rc" = 0 ] || problems+=("load-report exited $merged_rc")
fi

# The merged totals against the sums of the replicas' own reports.
if [ -s "$RESULTS/merged.json" ]; then
  sums=$(jq -s -c '{clients: (map(.clients) | add), qualified: (map(.qualify.qualified) | add),
      sent: (map(.data.sent) | add), received: (map(.data.received) | add),
      lost: (map(.data.lost) | add), duplicates: (map(.data.duplicates) | add),
      rtt_samples: (map(.data.rtt_ms.count) | add),
      results: (map(.qualify.results | to_entries) | add | group_by(.key)
        | map({key: .[0].key, value: (map(.value) | add)}) | from_entries)}' "${files[@]}")
  merged=$(jq -c '{clients, qualified: .qualify.qualified, sent: .data.sent,
      received: .data.received, lost: .data.lost, duplicates: .data.duplicates,
      rtt_samples: .data.rtt_ms.count, results: .qualify.results}' "$RESULTS/merged.json")
  if [ "$sums" = "$merged" ]; then
    log "merged totals = sum of the $n reports: $merged"
  else
    problems+=("merged totals $merged differ from the sums $sums")
  fi
fi

# Prometheus: asked over its HTTP API from here (the host is not on the overlay).
query() {
  http_get "$prom" 9090 "/api/v1/query?query=$(jq -rn --arg q "$1" '$q | @uri')"
}
{
  echo "Prometheus at $prom:9090, series over the last 10 minutes:"
  for job in teredo-server teredo-relay; do
    up=$(query "max_over_time(up{job=\"$job\"}[10m])" | jq -r '.data.result[0].value[1] // "none"')
    echo "  $job up: $up"
    [ "$up" = 1 ] || echo "PROBLEM Prometheus never scraped $job"
  done
  info=$(query 'max by (instance, replica, first_client) (max_over_time(loadgen_generator_info[10m]))')
  qual=$(query 'max by (instance) (max_over_time(loadgen_qualifications_total{result="qualified"}[10m]))')
  recv=$(query 'max by (instance) (max_over_time(loadgen_packets_received_total[10m]))')
  for i in $(seq 1 "$n"); do
    inst=$(jq -r --arg r "$i" '[.data.result[] | select(.metric.replica == $r) | .metric.instance][0] // empty' <<<"$info")
    if [ -z "$inst" ]; then
      echo "PROBLEM no series of replica $i (loadgen_generator_info{replica=\"$i\"})"
      continue
    fi
    first=$(jq -r --arg r "$i" '[.data.result[] | select(.metric.replica == $r) | .metric.first_client][0]' <<<"$info")
    q=$(jq -r --arg i "$inst" '[.data.result[] | select(.metric.instance == $i) | .value[1]][0] // "none"' <<<"$qual")
    r=$(jq -r --arg i "$inst" '[.data.result[] | select(.metric.instance == $i) | .value[1]][0] // "none"' <<<"$recv")
    want=$(jq -r '.qualify.qualified // "none"' "$RESULTS/load-$i.json" 2>/dev/null)
    wantr=$(jq -r '.data.received // 0' "$RESULTS/load-$i.json" 2>/dev/null)
    echo "  replica $i: instance $inst, first client $first, qualified $q (report $want), answers $r (report's trial: $wantr, plus warm-up)"
    [ "$q" = "$want" ] || echo "PROBLEM replica $i: Prometheus saw $q qualified, its report $want"
    [ "$r" != none ] && [ "${r%.*}" -ge "${wantr:-0}" ] || echo "PROBLEM replica $i: Prometheus saw $r answers, its report $wantr"
  done
  echo "  replicas scraped: $(jq -r '[.data.result[].metric.replica] | sort | join(",")' <<<"$info")"
} >"$RESULTS/prometheus.txt" 2>&1
cat "$RESULTS/prometheus.txt"
while read -r line; do problems+=("${line#PROBLEM }"); done < <(grep '^PROBLEM' "$RESULTS/prometheus.txt")

headline=$(jq -r '"\(.clients) clients over \(.generators | length) replicas, \(.qualify.qualified) qualified; "
    + "sent \(.data.sent), lost \(.data.lost) (\(.data.loss_percent) %), "
    + "RTT p50 \(.data.rtt_ms.p50) ms p99 \(.data.rtt_ms.p99) ms"' "$RESULTS/merged.json" 2>/dev/null) ||
  headline="no merged report"
if [ "${#problems[@]}" = 0 ]; then
  verdict="swarm ok: $headline; merged totals = sum of the replicas'; Prometheus scraped server, relay and replicas 1..$n"
  rc=0
else
  verdict="swarm FAILED: $(IFS=';'; echo "${problems[*]}"); $headline"
  rc=1
fi
printf '%s\n' "$verdict" >"$RESULTS/verdict.txt"
log "$verdict"
exit "$rc"
