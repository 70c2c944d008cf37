#!/bin/bash
# After a load run: does the Prometheus of the lab record what docker/lab/ ships for it? Every
# recording rule of teredo.rules.yml must be loaded and healthy, and each recorded series must
# have data over the run (a range query from START to now). (The console page and the
# expressions on it: `client-sim prom-check`, run by loadgen.sh after this.) Prints, per recorded series, its number of
# series and samples and the peak of each series (those that never left zero only counted),
# and writes $RESULTS/recording-rules.json.
#
#   prom-rules-check.sh [HOST:PORT]   default $PROMETHEUS4:9090
#   env START=EPOCH                   start of the run (default: 15 minutes ago)
#
# Exit status: 0 when every rule is healthy and every recorded series had data; 1 otherwise.
set -uo pipefail
LAB_ROLE=prom-rules
# shellcheck source=common.sh
. /lab/common.sh

PROM=${1:-$PROMETHEUS4:9090}
host=${PROM%:*} port=${PROM##*:}
now=$(date +%s)
START=${START:-$((now - 900))}
rc=0

# The recording rules Prometheus loaded, with their health.
rules=$(http_get "$host" "$port" '/api/v1/rules?type=record' |
  jq -ce '[.data.groups[].rules[] | {name, health, lastError}]') || rules='[]'
if [ "$(jq length <<<"$rules")" = 0 ]; then
  log "no recording rules loaded"
  rc=1
fi
jq -r '.[] | select(.health != "ok") | "rule \(.name): health \(.health): \(.lastError)"' \
  <<<"$rules" | while read -r line; do log "$line"; done
[ "$(jq '[.[] | select(.health != "ok")] | length' <<<"$rules")" = 0 ] || rc=1

report='[]'
printf '== recorded series from %s to %s (range queries, step 1 s)\n' \
  "$(date -u -d "@$START" +%T)" "$(date -u -d "@$now" +%T)"
for name in $(jq -r '.[].name' <<<"$rules"); do
  enc=$(jq -rn --arg q "$name" '$q | @uri')
  result=$(http_get "$host" "$port" \
    "/api/v1/query_range?query=$enc&start=$START&end=$now&step=1" |
    jq -ce 'select(.status == "success") | .data.result') || result=null
  # Per series: its labels (job and __name__ left out), samples, peak and last finite value.
  summary=$(jq -c '[(. // [])[] | {
      labels: (.metric | del(.__name__, .job) | to_entries | map("\(.key)=\(.value)") | join(" ")),
      job: .metric.job,
      samples: (.values | length),
      finite: [.values[][1] | select(test("^[-+]?[0-9.e+-]+$")) | tonumber]
    } | {labels, job, samples, peak: (.finite | max), last: (.finite | last)}]' <<<"$result")
  series=$(jq length <<<"$summary")
  samples=$(jq '[.[].samples] | add // 0' <<<"$summary")
  if [ "$result" = null ] || [ "$samples" = 0 ]; then
    printf '%s: NO DATA\n' "$name"
    rc=1
  else
    printf '%s: %s series, %s samples\n' "$name" "$series" "$samples"
    jq -r '.[] | select((.peak // 0) != 0)
      | "    \(.job) \(.labels): peak \(.peak) last \(.last)"' <<<"$summary"
    zero=$(jq '[.[] | select((.peak // 0) == 0)] | length' <<<"$summary")
    [ "$zero" = 0 ] || printf '    (%s series zero or NaN throughout)\n' "$zero"
  fi
  report=$(jq -c --arg n "$name" --argjson s "$summary" '. + [{name: $n, series: $s}]' \
    <<<"$report")
done
jq --argjson ok "$([ "$rc" = 0 ] && echo true || echo false)" \
  --argjson rules "$rules" '{ok: $ok, rules: $rules, recorded: .}' \
  <<<"$report" >"$RESULTS/recording-rules.json"
log "recording rules: $(jq length <<<"$rules") loaded; $([ "$rc" = 0 ] && echo ok || echo FAILED)"
exit "$rc"
