#!/bin/bash
# Asks the lab's Prometheus (HTTP API, /api/v1/query) for the key series of a run and prints
# them, so that one sees that scraping worked and what the components did: RAs, relay
# packets by direction, drops by reason, peers, process RSS and CPU, the load generator's
# counters and RTT quantiles. Series of a target that is gone by now (the load generator
# exits at the end of its run) are read with last_over_time over the run. Also writes $RESULTS/prometheus.txt and prometheus.json.
#
#   prom-report.sh [HOST:PORT]      default $PROMETHEUS4:9090 (inside the prometheus
#                                   container: 127.0.0.1:9090)
#   env EXPECT_JOBS="teredo-server teredo-relay loadgen"
#                                   jobs that must have been scraped successfully at least
#                                   MIN_SCRAPES times (default 2) over the last RANGE (15m)
#
# Exit status: 0 when Prometheus answered and every expected job was scraped; 1 otherwise.
set -uo pipefail
LAB_ROLE=prom-report
# shellcheck source=common.sh
. /lab/common.sh

PROM=${1:-$PROMETHEUS4:9090}
RANGE=${RANGE:-15m}
EXPECT_JOBS=${EXPECT_JOBS:-teredo-server teredo-relay}
MIN_SCRAPES=${MIN_SCRAPES:-2}

# query EXPR: the `data.result` array of an instant query, as JSON.
query() {
  local enc body
  enc=$(jq -rn --arg q "$1" '$q | @uri')
  body=$(http_get "${PROM%:*}" "${PROM##*:}" "/api/v1/query?query=$enc") || return 1
  jq -ce 'select(.status == "success") | .data.result' <<<"$body"
}

# Title and PromQL of each printed block.
QUERIES=(
  "targets up (1 = last scrape worked)|up"
  "successful scrapes per target over the run|sum_over_time(up[$RANGE])"
  "server: router solicitations received, by cone flag|sum by (cone) (teredo_server_router_solicitations_total)"
  "server: router advertisements sent, by address|teredo_server_router_advertisements_total"
  "server: packets forwarded (non-zero)|teredo_server_packets_forwarded_total > 0"
  "server: drops by reason (non-zero)|teredo_server_packets_dropped_total > 0"
  "relay: packets received, by direction|teredo_relay_packets_received_total"
  "relay: packets relayed, by direction|teredo_relay_packets_total"
  "relay: peak relayed rate over 5 s windows (packets/s)|max_over_time(rate(teredo_relay_packets_total[5s])[$RANGE:1s])"
  "relay: drops by reason (non-zero)|teredo_relay_packets_dropped_total > 0"
  "relay: peers now, by state|teredo_relay_peers"
  "relay: peak peers, by state|max_over_time(teredo_relay_peers[$RANGE])"
  "relay: bubbles sent|teredo_relay_bubbles_sent_total"
  "relay: connectivity tests (count)|teredo_relay_connectivity_test_duration_seconds_count"
  "process: resident memory at the end (bytes)|last_over_time(process_resident_memory_bytes[$RANGE])"
  "process: peak resident memory (bytes)|max_over_time(process_resident_memory_bytes[$RANGE])"
  "process: CPU time (seconds)|last_over_time(process_cpu_seconds_total[$RANGE])"
  "loadgen: packets sent|last_over_time(loadgen_packets_sent_total[$RANGE])"
  "loadgen: packets received|last_over_time(loadgen_packets_received_total[$RANGE])"
  "loadgen: packets lost|last_over_time(loadgen_packets_lost_total[$RANGE])"
  "loadgen: peak rate received over 5 s windows (packets/s)|max_over_time(rate(loadgen_packets_received_total[5s])[$RANGE:1s])"
  "loadgen: qualifications, by result (non-zero)|last_over_time(loadgen_qualifications_total[$RANGE]) > 0"
  "loadgen: RTT p50 (seconds)|histogram_quantile(0.5, sum by (le) (last_over_time(loadgen_rtt_seconds_bucket[$RANGE])))"
  "loadgen: RTT p99 (seconds)|histogram_quantile(0.99, sum by (le) (last_over_time(loadgen_rtt_seconds_bucket[$RANGE])))"
)

ready=false
for _ in $(seq 1 30); do
  if http_get "${PROM%:*}" "${PROM##*:}" /-/ready >/dev/null; then ready=true; break; fi
  sleep 1
done
if [ "$ready" != true ]; then
  log "Prometheus at $PROM is not ready"
  exit 1
fi

out=$RESULTS/prometheus.txt
json='{}'
{
  printf '== Prometheus %s: key series (instant queries at %s)\n' "$PROM" "$(date -u +%T)"
  for entry in "${QUERIES[@]}"; do
    title=${entry%%|*} expr=${entry#*|}
    printf '%s\n    %s\n' "$title" "$expr"
    if ! result=$(query "$expr"); then
      printf '      (query failed)\n'
      continue
    fi
    json=$(jq -c --arg t "$title" --arg e "$expr" --argjson r "$result" \
      '. + {($t): {expr: $e, result: $r}}' <<<"$json")
    jq -r 'if length == 0 then "      (none)" else
        .[] | "      \(.metric | del(.__name__) | to_entries | map("\(.key)=\(.value)") | join(" ")) \(.value[1])"
      end' <<<"$result"
  done
} | tee "$out.tmp"
mv "$out.tmp" "$out"

rc=0
scrapes=$(query "sum_over_time(up[$RANGE])") || scrapes='[]'
for job in $EXPECT_JOBS; do
  n=$(jq -r --arg j "$job" '[.[] | select(.metric.job == $j) | .value[1] | tonumber] | add // 0' \
    <<<"$scrapes")
  if [ "${n%.*}" -lt "$MIN_SCRAPES" ]; then
    log "job $job: $n successful scrapes, fewer than $MIN_SCRAPES"
    rc=1
  else
    log "job $job: $n successful scrapes"
  fi
done
jq --argjson s "$scrapes" '. + {scrapes: $s}' <<<"$json" >"$RESULTS/prometheus.json"
exit "$rc"
