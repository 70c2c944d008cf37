#!/usr/bin/env bash
# Run the container lab once and tear it down: build first with docker/build.sh.
#
#   docker/up.sh            # exit status 0 when every row of the runner's table is ok
#
# Picks `docker compose` (v2) when present, else `docker-compose` (v1, Debian 12). Runs
# `up --abort-on-container-exit --exit-code-from runner`, prints every container's log on
# failure, always tears the project down (`down -v`), and exits with the runner's verdict,
# read from its result file (docker compose has returned 0 for an aborted run before:
# shared/NAT.md section 5), cross-checked with `docker inspect` of the runner's exit code.
#
# Environment: TEREDO_LAB_MIREDO=0 leaves out the Miredo client (compose profile `miredo`);
# TEREDO_LAB_RESULTS=DIR keeps the result files there (default docker/results);
# TEREDO_LAB_RELAY_TRUST=lenient; TEREDO_LAB_DEADLINE_S (runner, default 120);
# TEREDO_LAB_KEEP=1 starts the project detached and leaves it up after the runner's verdict,
# to look around or attach clients of your own (README "Containers"); tear down by hand with
# `docker-compose -f docker/compose.yml -p teredo-lab down -v`.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT=teredo-lab
FILE=$here/compose.yml
IMAGE=${TEREDO_LAB_IMAGE:-teredo-lab/lab:latest}
export TEREDO_LAB_MIREDO=${TEREDO_LAB_MIREDO:-1}
export TEREDO_LAB_RESULTS=${TEREDO_LAB_RESULTS:-$here/results}

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  echo "up.sh: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi
profiles=()
[ "$TEREDO_LAB_MIREDO" = 1 ] && profiles=(--profile miredo)
dc() { "${compose[@]}" -f "$FILE" -p "$PROJECT" "${profiles[@]}" "$@"; }

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "up.sh: image $IMAGE not found: run docker/build.sh first (no registry to pull from)" >&2
  exit 1
fi
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
    --filter "label=com.docker.compose.service=runner" | head -n 1
}

start=$(date +%s)
if [ "${TEREDO_LAB_KEEP:-0}" = 1 ]; then
  # Detached, so that the other containers stay up after the runner's verdict.
  timeout --foreground "${TEREDO_LAB_UP_TIMEOUT_S:-600}" \
    "${compose[@]}" -f "$FILE" -p "$PROJECT" "${profiles[@]}" up -d --no-build
  compose_rc=$?
  runner_id=$(runner_container)
  [ -n "$runner_id" ] && timeout "${TEREDO_LAB_UP_TIMEOUT_S:-600}" docker wait "$runner_id" >/dev/null
  [ -n "$runner_id" ] && docker logs "$runner_id"
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
[ "$runner_rc" = 0 ] || [ "$rc" != 0 ] || { rc=1; summary="$summary; but the runner exited $runner_rc"; }

if [ "$rc" != 0 ]; then
  echo "==== logs of every container (failure) ===="
  dc logs --no-color --timestamps
fi
printf '\nverdict: %s; runner exit %s, compose exit %s; up to verdict %s s\n' \
  "$summary" "$runner_rc" "$compose_rc" "$elapsed"
if [ "${TEREDO_LAB_KEEP:-0}" = 1 ]; then
  echo "TEREDO_LAB_KEEP=1: left up; tear down with: ${compose[*]} -f $FILE -p $PROJECT down -v"
else
  teardown || rc=1
fi
echo "results in $TEREDO_LAB_RESULTS"
exit "$rc"
