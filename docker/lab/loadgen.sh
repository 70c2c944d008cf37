#!/bin/bash
# The `load` profile's load generator and verdict: `client-sim load` with LOAD_CLIENTS
# simulated clients (one UDP socket each, on 198.51.100.60 of the `internet` network)
# qualifying through the server, then sending ICMPv6 echo requests to the native host
# 2001:db8:1::100 through the relay (the host's kernel answers) at LOAD_RATE packets/s for
# LOAD_DURATION, while Prometheus scrapes the server, the relay and this generator every
# second. At the end: the generator's report, then Prometheus' view of the run
# (prom-report.sh), the recorded series over the run (prom-rules-check.sh), the console
# page with every file it loads and every expression on it and on the Grafana dashboard
# over the run (`client-sim prom-check`: console-check.json, allow-list
# console-check-allow.json), and the verdict files docker/up.sh reads (verdict.json,
# summary.txt, exit_code). Exit status 0 when the load run met its loss threshold
# (client-sim's own exit status), Prometheus scraped all three jobs, recorded every rule's
# series, served the console page and its files, and every expression had data (the
# summary names the first one that did not).
#
#   env LOAD_CLIENTS=10000 LOAD_QUALIFY_RATE=1000 LOAD_RATE=2000 LOAD_SIZE=100
#       LOAD_DURATION=10s LOAD_ARGS="..." (more client-sim load flags)
set -uo pipefail
LAB_ROLE=loadgen
# shellcheck source=common.sh
. /lab/common.sh

drop_default_routes
start=$(date +%s)
clients=${LOAD_CLIENTS:-10000}

# Scraping must work before the run starts: Prometheus sees the server and the relay.
for _ in $(seq 1 30); do
  up=$(http_get "$PROMETHEUS4" 9090 '/api/v1/query?query=sum(up%7Bjob%3D~%22teredo-server%7Cteredo-relay%22%7D)' |
    jq -r '.data.result[0].value[1] // 0' 2>/dev/null)
  [ "${up:-0}" = 2 ] && break
  sleep 1
done
log "Prometheus scrapes ${up:-0} of 2 targets (server, relay) before the run"

# shellcheck disable=SC2206 # LOAD_ARGS is split on purpose
args=(load --server "$SERVER" --bind "$LOADGEN4" --clients "$clients"
  --qualify-rate "${LOAD_QUALIFY_RATE:-1000}" --phase all --target "$V6HOST"
  --rate "${LOAD_RATE:-2000}" --size "${LOAD_SIZE:-100}" --duration "${LOAD_DURATION:-10s}"
  --metrics-addr 0.0.0.0:9103 --metrics-linger 3s --json "$RESULTS/load.json" ${LOAD_ARGS:-})
log "client-sim ${args[*]}"
t0=$(date +%s)
client-sim "${args[@]}"
load_rc=$?
load_s=$(($(date +%s) - t0))
log "client-sim load exited $load_rc after $load_s s"

# (--metrics-linger: Prometheus scraped the generator's final counters before it exited.)
EXPECT_JOBS="teredo-server teredo-relay loadgen" /lab/prom-report.sh "$PROMETHEUS4:9090"
prom_rc=$?
START=$t0 /lab/prom-rules-check.sh "$PROMETHEUS4:9090"
rules_rc=$?
# The console page, every file it loads and every expression on it and on the Grafana
# dashboard (mounted at /grafana), over the run (client-sim prom-check).
client-sim prom-check --prometheus "$PROMETHEUS4:9090" --start "$t0" \
  --console /lab/consoles/teredo-load.html --grafana /grafana/teredo-lab.json \
  --allow /lab/console-check-allow.json --json "$RESULTS/console-check.json" \
  2>"$RESULTS/console-check.err"
console_rc=$?
cat "$RESULTS/console-check.err" >&2
console_why=$(sed -n 's/^client-sim: error: //p' "$RESULTS/console-check.err" | tail -n 1)
[ -s "$RESULTS/console-check.err" ] || rm -f "$RESULTS/console-check.err"

# The report's headline figures.
figures=$(jq -c '{clients,
    qualified: .qualify.qualified, qualify_offered_per_s: .qualify.offered_rate,
    qualified_per_s: .qualify.qualified_rate, qualify_p99_ms: .qualify.latency_ms.p99,
    senders: .data.senders, offered_pps: .data.offered_pps, sent_pps: .data.sent_pps,
    received_pps: .data.received_pps, sent: .data.sent, received: .data.received,
    lost: .data.lost, loss_percent: .data.loss_percent, duplicates: .data.duplicates,
    out_of_order: .data.out_of_order, rtt_p50_ms: .data.rtt_ms.p50,
    rtt_p99_ms: .data.rtt_ms.p99, rtt_max_ms: .data.rtt_ms.max, elapsed_s}' \
  "$RESULTS/load.json" 2>/dev/null) || figures=null

rc=0
problems=()
[ "$load_rc" = 0 ] || { rc=1; problems+=("client-sim load exited $load_rc"); }
[ -s "$RESULTS/load.json" ] || { rc=1; problems+=("no load report"); }
[ "$prom_rc" = 0 ] || { rc=1; problems+=("Prometheus did not scrape every job"); }
[ "$rules_rc" = 0 ] || { rc=1; problems+=("recording rules unhealthy or recorded series missing"); }
[ "$console_rc" = 0 ] || { rc=1; problems+=("${console_why:-console check exited $console_rc}"); }
headline=$(jq -r '"\(.qualified)/\(.clients) clients qualified (\(.qualified_per_s | floor)/s), "
    + "\(.senders) sending \(.sent_pps * 10 | round / 10) pps: lost \(.lost)/\(.sent) "
    + "(\(.loss_percent) %), RTT p50 \(.rtt_p50_ms) ms p99 \(.rtt_p99_ms) ms"' \
  <<<"$figures" 2>/dev/null) || headline="no figures"
if [ "$rc" = 0 ]; then
  summary="load ok: $headline; Prometheus scraped server, relay and loadgen, recorded series, console page and its expressions ok"
else
  summary="load FAILED: $(IFS=';'; echo "${problems[*]}"); $headline"
fi
jq -n --argjson ok "$([ "$rc" = 0 ] && echo true || echo false)" --arg summary "$summary" \
  --argjson figures "${figures:-null}" --argjson load_rc "$load_rc" --argjson prom_rc "$prom_rc" \
  --argjson rules_rc "$rules_rc" --argjson console_rc "$console_rc" \
  --argjson wall_s "$(($(date +%s) - start))" --argjson load_s "$load_s" \
  '{ok: $ok, summary: $summary, figures: $figures, load_exit: $load_rc,
    prometheus_exit: $prom_rc, recording_rules_exit: $rules_rc,
    console_check_exit: $console_rc, load_seconds: $load_s, wall_seconds: $wall_s}' \
  >"$RESULTS/.verdict.json.tmp"
mv "$RESULTS/.verdict.json.tmp" "$RESULTS/verdict.json"
printf '%s\n' "$summary" >"$RESULTS/summary.txt"
printf '%s\n' "$rc" >"$RESULTS/exit_code"
log "$summary"
exit "$rc"
