#!/usr/bin/env bash
# Run the container lab once and tear it down: build first with docker/build.sh.
#
#   docker/up.sh               # exit status 0 when every row of the runner's table is ok
#   docker/up.sh --monitoring  # the same lab with Prometheus (profile `monitoring`) scraping
#                              # the server and the relay; Prometheus' key series printed at
#                              # the end (docker/lab/prom-report.sh); fails if it scraped nothing
#   docker/up.sh --load        # profile `load` instead of the lab: server, relay, v6host,
#                              # Prometheus and the load generator (docker/lab/loadgen.sh:
#                              # 10 000 clients qualify, then echo through the relay); exit
#                              # status 0 when the load run met its loss threshold and
#                              # Prometheus scraped server, relay and generator
#
# Picks `docker compose` (v2) when present, else `docker-compose` (v1, Debian 12). Runs
# `up --abort-on-container-exit --exit-code-from runner`, prints every container's log on
# failure, always tears the project down (`down -v`), and exits with the runner's verdict,
# read from its result file (docker compose has returned 0 for an aborted run before:
# shared/NAT.md section 5), cross-checked with `docker inspect` of the runner's exit code.
#
# Environment: TEREDO_LAB_MIREDO=0 leaves out the Miredo client (compose profile `miredo`);
# TEREDO_LAB_RESULTS=DIR keeps the result files there (default docker/results);
# TEREDO_LAB_PROJECT=NAME the compose project name (default teredo-lab);
# TEREDO_LAB_RELAY_TRUST=lenient; TEREDO_LAB_DEADLINE_S (runner, default 120);
# --load: TEREDO_LAB_LOAD_CLIENTS (10000), _QUALIFY_RATE (1000/s), _RATE (2000 packets/s),
# _SIZE (100 B), _DURATION (10s), _ARGS (more `client-sim load` flags).
# TEREDO_LAB_KEEP=1 starts the project detached and leaves it up after the runner's verdict,
# to look around or attach clients of your own (README "Containers"); tear down by hand with
# `docker-compose -f docker/compose.yml -p teredo-lab down -v`.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT=${TEREDO_LAB_PROJECT:-teredo-lab}
FILE=$here/compose.yml
IMAGE=${TEREDO_LAB_IMAGE:-teredo-lab/lab:latest}
export TEREDO_LAB_MIREDO=${TEREDO_LAB_MIREDO:-1}
export TEREDO_LAB_RESULTS=${TEREDO_LAB_RESULTS:-$here/results}
mode=lab
case "${1:-}" in
  "") ;;
  --monitoring) mode=monitoring ;;
  --load) mode=load ;;
  -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--monitoring | --load]" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "usage: $0 [--monitoring | --load]" >&2; exit 2; }
# The service whose exit is the verdict, the services to start (empty: all of the profiles').
main=runner
services=()

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  echo "up.sh: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi
profiles=()
case $mode in
  lab | monitoring)
    [ "$TEREDO_LAB_MIREDO" = 1 ] && profiles=(--profile miredo)
    [ "$mode" = monitoring ] && profiles+=(--profile monitoring)
    ;;
  load)
    # Only what the load run needs (compose starts loadgen's dependencies too).
    profiles=(--profile load)
    main=loadgen
    services=(loadgen)
    ;;
esac
dc() { "${compose[@]}" -f "$FILE" -p "$PROJECT" "${profiles[@]}" "$@"; }

images=("$IMAGE")
[ "$mode" = lab ] || images+=("${TEREDO_LAB_PROMETHEUS_IMAGE:-teredo-lab/prometheus:latest}")
for image in "${images[@]}"; do
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "up.sh: image $image not found: run docker/build.sh first (no registry to pull from)" >&2
    exit 1
  fi
done
echo "compose: ${compose[*]} ($("${compose[@]}" version --short 2>/dev/null || "${compose[@]}" version | head -n 1))"

teardown() {
  dc down -v --remove-orphans --timeout 3 >/dev/null 2>&1 ||
    dc down -v --remove-orphans --timeout 3
  local left
  left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"; \
    docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")
  if [ -n "$left" ]; then
    echo "up.sh: teardown left containers or networks: $left" >&2
    return 1
  fi
  echo "torn down: no container or network of project $PROJECT left"
}

# A previous run that was killed may have left the project up.
teardown >/dev/null 2>&1 || true
mkdir -p "$TEREDO_LAB_RESULTS"
find "$TEREDO_LAB_RESULTS" -mindepth 1 -delete

trap 'echo "up.sh: interrupted, tearing down" >&2; teardown; exit 130' INT TERM
runner_container() {
  docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$main" | head -n 1
}

start=$(date +%s)
prom_rc=0
if [ "${TEREDO_LAB_KEEP:-0}" = 1 ] || [ "$mode" != lab ]; then
  # Detached, so that the other containers stay up after the verdict (to look around, or
  # to ask Prometheus before the teardown).
  timeout --foreground "${TEREDO_LAB_UP_TIMEOUT_S:-600}" \
    "${compose[@]}" -f "$FILE" -p "$PROJECT" "${profiles[@]}" up -d --no-build "${services[@]}"
  compose_rc=$?
  runner_id=$(runner_container)
  if [ -n "$runner_id" ]; then
    # Follow its log while it runs (the load generator's progress and report).
    timeout "${TEREDO_LAB_UP_TIMEOUT_S:-600}" docker logs -f "$runner_id"
    timeout 30 docker wait "$runner_id" >/dev/null
  fi
  if [ "$mode" = monitoring ]; then
    # The runner has no network: ask Prometheus from inside its own container.
    dc exec -T prometheus /lab/prom-report.sh 127.0.0.1:9090
    prom_rc=$?
  fi
else
  timeout --foreground "${TEREDO_LAB_UP_TIMEOUT_S:-600}" \
    "${compose[@]}" -f "$FILE" -p "$PROJECT" "${profiles[@]}" \
    up --no-build --no-color --abort-on-container-exit --exit-code-from runner
  compose_rc=$?
fi
elapsed=$(($(date +%s) - start))

runner_id=$(runner_container)
runner_rc=$( [ -n "$runner_id" ] && docker inspect -f '{{.State.ExitCode}}' "$runner_id" || echo none)
verdict_file=$TEREDO_LAB_RESULTS/verdict.json
# (no jq on the host: the runner writes the summary and the exit code as plain text too)
if [ -s "$verdict_file" ] && [ -s "$TEREDO_LAB_RESULTS/exit_code" ]; then
  rc=$(cat "$TEREDO_LAB_RESULTS/exit_code")
  summary=$(cat "$TEREDO_LAB_RESULTS/summary.txt")
else
  rc=1 summary="no verdict (the runner did not finish)"
fi
[ "$runner_rc" = 0 ] || [ "$rc" != 0 ] || { rc=1; summary="$summary; but the $main exited $runner_rc"; }
[ "$prom_rc" = 0 ] || { rc=1; summary="$summary; Prometheus did not scrape server and relay"; }

if [ "$rc" != 0 ]; then
  echo "==== logs of every container (failure) ===="
  dc logs --no-color --timestamps
fi
printf '\nverdict (%s): %s; %s exit %s, compose exit %s; up to verdict %s s\n' \
  "$mode" "$summary" "$main" "$runner_rc" "$compose_rc" "$elapsed"
if [ "${TEREDO_LAB_KEEP:-0}" = 1 ]; then
  echo "TEREDO_LAB_KEEP=1: left up; tear down with: ${compose[*]} -f $FILE -p $PROJECT down -v"
else
  teardown || rc=1
fi
echo "results in $TEREDO_LAB_RESULTS"
exit "$rc"
