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
#                              # status 0 when the load run met its loss threshold,
#                              # Prometheus scraped server, relay and generator, recorded
#                              # every series of docker/lab/teredo.rules.yml
#                              # (prom-rules-check.sh), served the console page
#                              # /consoles/teredo-load.html with every script and stylesheet
#                              # it loads, and every expression on it and on the Grafana
#                              # dashboard had data over the run, but those the allow-list
#                              # docker/lab/console-check-allow.json names with a reason
#                              # (`client-sim prom-check`: console-check.json); then, with
#                              # chromium on the host, the page rendered without console
#                              # errors and a screenshot console.png (docker/console-shot.sh)
#   docker/up.sh --conformance # profile `conformance` instead of the lab: server, relay and
#                              # `client-sim conform` (docker/lab/conform.sh) on the internet
#                              # and native networks, one run against the server, one against
#                              # the relay; leaves conform.json, conform.xml (JUnit) and
#                              # conform.pcap in the results (and each run's conform-server.*,
#                              # conform-relay.*); exit status: conform's (0 when every MUST
#                              # passes, or with an expectations file: every verdict as expected)
#
# The devices under test (any mode but --monitoring and --load, which read our metrics):
#   TEREDO_LAB_SERVER=ours     teredo-server (default)
#                    =miredo   Debian's miredo-server 1.2.6 (in the lab image)
#   TEREDO_LAB_RELAY=ours      teredo-relay --trust $TEREDO_LAB_RELAY_TRUST (default strict)
#                   =miredo    Debian's miredo 1.2.6 as a relay, RelayType cone
#   Any other server or relay ("plugged"): TEREDO_LAB_SERVER_CMD='COMMAND LINE', and for an
#   image other than the lab's TEREDO_LAB_SERVER_IMAGE=IMAGE (it must exist locally: no
#   registry); likewise TEREDO_LAB_RELAY_CMD / TEREDO_LAB_RELAY_IMAGE. The command line is
#   split into words as a shell would (quotes work; for variables or pipes wrap it in
#   sh -c '...'). It runs as the service server-plugged / relay-plugged inside the network
#   namespace of the lab's `server` / `relay` container, which sets up addresses, routes and
#   sysctls, so the image needs nothing of the lab's; it gets CAP_NET_ADMIN, CAP_NET_RAW (and
#   /dev/net/tun for a relay) and the results folder at /results. A server must bind
#   198.51.100.10:3544 and 198.51.100.11:3544 (native side: 2001:db8:1::10 on the `native`
#   network, no default route); a relay must bind 198.51.100.20:3545 and route 2001::/32 into
#   its tunnel (native side 2001:db8:1::20, IPv6 forwarding on). The lab waits for exactly
#   that (the healthchecks of `server` / `relay`). Examples:
#     TEREDO_LAB_SERVER_CMD='teredo-server --primary 198.51.100.10 --secondary 198.51.100.11
#       --native raw' docker/up.sh                       # the lab image's own server, plugged
#     TEREDO_LAB_RELAY_IMAGE=myrelay:dev TEREDO_LAB_RELAY_CMD='myrelay --listen
#       198.51.100.20:3545 --tun teredo0' TEREDO_LAB_RELAY_TRUST=lenient docker/up.sh
#   The runner expects of a plugged-in server what ours does, of a plugged-in relay what ours
#   does with --trust $TEREDO_LAB_RELAY_TRUST (say lenient for a relay that accepts a client's
#   direct bubble from another mapping, as Miredo's does); --conformance compares with the
#   expectations file only when given the implementation's name in it
#   (TEREDO_LAB_SERVER_EXPECT=NAME, TEREDO_LAB_RELAY_EXPECT=NAME), else gives the plain
#   verdict. Anything else (more services, other networks, volumes): extra compose files,
#   merged over docker/compose.yml in order: TEREDO_LAB_OVERRIDE=FILE[:FILE...].
#
# Picks `docker compose` (v2) when present, else `docker-compose` (v1, Debian 12);
# TEREDO_LAB_COMPOSE=v1 or v2 forces one (docker/install-compose-v2.sh installs v2). Runs
# `up --abort-on-container-exit --exit-code-from runner` (conform with --conformance), prints
# every container's log on failure, always tears the project down (`down -v`), and exits with
# the runner's verdict, read from its result file (docker compose has returned 0 for an
# aborted run before: shared/NAT.md section 5), cross-checked with `docker inspect` of the
# runner's exit code.
#
# Environment: TEREDO_LAB_MIREDO=0 leaves out the Miredo client (compose profile `miredo`);
# TEREDO_LAB_RESULTS=DIR keeps the result files there (default docker/results);
# TEREDO_LAB_PROJECT=NAME the compose project name (default teredo-lab);
# TEREDO_LAB_RELAY_TRUST=lenient; TEREDO_LAB_DEADLINE_S (runner, default 120);
# --conformance: TEREDO_LAB_CONFORM_EXPECT=FILE (default conformance/expectations.json at the
# repository's root, used when it exists), TEREDO_LAB_CONFORM_ARGS (more `client-sim conform`
# flags, e.g. --strict, --quick, --only S01,S02).
# --load: TEREDO_LAB_LOAD_CLIENTS (10000), _QUALIFY_RATE (1000/s), _RATE (2000 packets/s),
# _SIZE (100 B), _DURATION (10s), _ARGS (more `client-sim load` flags).
# TEREDO_LAB_KEEP=1 starts the project detached and leaves it up after the runner's verdict,
# to look around or attach clients of your own (README "Containers"); tear down by hand with
# `docker-compose -f docker/compose.yml -p teredo-lab down -v`.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
PROJECT=${TEREDO_LAB_PROJECT:-teredo-lab}
FILE=$here/compose.yml
IMAGE=${TEREDO_LAB_IMAGE:-teredo-lab/lab:latest}
export TEREDO_LAB_MIREDO=${TEREDO_LAB_MIREDO:-1}
export TEREDO_LAB_RESULTS=${TEREDO_LAB_RESULTS:-$here/results}
usage="usage: $0 [--monitoring | --load | --conformance]"
mode=lab
case "${1:-}" in
  "") ;;
  --monitoring) mode=monitoring ;;
  --load) mode=load ;;
  --conformance) mode=conformance ;;
  -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "$usage" >&2; exit 2; }
# The service whose exit is the verdict, the services to start (empty: all of the profiles').
main=runner
services=()

case ${TEREDO_LAB_COMPOSE:-auto} in
  v2) compose=(docker compose) ;;
  v1) compose=(docker-compose) ;;
  auto)
    if docker compose version >/dev/null 2>&1; then
      compose=(docker compose)
    else
      compose=(docker-compose)
    fi
    ;;
  *) echo "up.sh: TEREDO_LAB_COMPOSE=$TEREDO_LAB_COMPOSE: expected v1, v2 or auto" >&2; exit 2 ;;
esac
if ! "${compose[@]}" version >/dev/null 2>&1; then
  echo "up.sh: '${compose[*]}' is not installed (TEREDO_LAB_COMPOSE=${TEREDO_LAB_COMPOSE:-auto};" \
    "v2: docker/install-compose-v2.sh, v1: apt-get install docker-compose)" >&2
  exit 1
fi

# The devices under test: a command line (and image) of one's own makes it `plugged`.
plugs=()
images=("$IMAGE")
for dev in SERVER RELAY; do
  impl_var=TEREDO_LAB_$dev cmd_var=TEREDO_LAB_${dev}_CMD image_var=TEREDO_LAB_${dev}_IMAGE
  lower=$(tr '[:upper:]' '[:lower:]' <<<"$dev")
  if [ -n "${!cmd_var:-}" ]; then
    export "$impl_var=plugged"
    plugs+=("$lower-plugged")
    [ -z "${!image_var:-}" ] || images+=("${!image_var}")
  elif [ -n "${!image_var:-}" ]; then
    echo "up.sh: $image_var without $cmd_var: give the command line to run in it" >&2
    exit 2
  fi
  case ${!impl_var:=ours} in
    ours | miredo | plugged) export "${impl_var?}" ;;
    *) echo "up.sh: $impl_var=${!impl_var}: expected ours or miredo (or set $cmd_var)" >&2; exit 2 ;;
  esac
done
if [ "$mode" = monitoring ] || [ "$mode" = load ]; then
  if [ "$TEREDO_LAB_SERVER" != ours ] || [ "$TEREDO_LAB_RELAY" != ours ]; then
    echo "up.sh: --$mode reads our server's and relay's metrics: only with TEREDO_LAB_SERVER=ours and TEREDO_LAB_RELAY=ours" >&2
    exit 2
  fi
fi

files=(-f "$FILE")
IFS=: read -r -a overrides <<<"${TEREDO_LAB_OVERRIDE:-}"
for f in "${overrides[@]}"; do
  [ -r "$f" ] || { echo "up.sh: TEREDO_LAB_OVERRIDE: cannot read $f" >&2; exit 2; }
  files+=(-f "$f")
done

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
  conformance)
    profiles=(--profile conformance)
    main=conform
    # compose starts conform's dependencies; the plugged-in devices are nobody's.
    services=(conform "${plugs[@]}")
    ;;
esac
for p in "${plugs[@]}"; do profiles+=(--profile "plug-${p%-plugged}"); done
dcmd=("${compose[@]}" "${files[@]}" -p "$PROJECT" "${profiles[@]}")
dc() { "${dcmd[@]}" "$@"; }

case $mode in monitoring | load) images+=("${TEREDO_LAB_PROMETHEUS_IMAGE:-teredo-lab/prometheus:latest}") ;; esac
for image in "${images[@]}"; do
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "up.sh: image $image not found: run docker/build.sh first (no registry to pull from)" >&2
    exit 1
  fi
done
echo "compose: ${compose[*]} ($("${compose[@]}" version --short 2>/dev/null || "${compose[@]}" version | head -n 1))"
echo "server: $TEREDO_LAB_SERVER; relay: $TEREDO_LAB_RELAY${TEREDO_LAB_RELAY_TRUST:+ (trust $TEREDO_LAB_RELAY_TRUST)}; mode: $mode"

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
if [ "$mode" = conformance ]; then
  # conform.sh compares with it when it knows the implementation's name there.
  expect=${TEREDO_LAB_CONFORM_EXPECT:-$root/conformance/expectations.json}
  if [ -s "$expect" ]; then
    cp "$expect" "$TEREDO_LAB_RESULTS/expectations.json"
    echo "expectations: $expect"
  else
    echo "expectations: none ($expect does not exist): the plain verdict"
  fi
fi

trap 'echo "up.sh: interrupted, tearing down" >&2; teardown; exit 130' INT TERM
runner_container() {
  docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$main" | head -n 1
}

start=$(date +%s)
prom_rc=0 shot_rc=0
if [ "${TEREDO_LAB_KEEP:-0}" = 1 ] || [ "$mode" = monitoring ] || [ "$mode" = load ]; then
  # Detached, so that the other containers stay up after the verdict (to look around, or
  # to ask Prometheus before the teardown).
  timeout --foreground "${TEREDO_LAB_UP_TIMEOUT_S:-600}" "${dcmd[@]}" up -d --no-build "${services[@]}"
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
  if [ "$mode" = load ]; then
    # The console page in the host's Chromium while Prometheus still holds the run.
    "$here/console-shot.sh" "$TEREDO_LAB_RESULTS" "$(($(date +%s) - start + 10))"
    shot_rc=$?
  fi
else
  timeout --foreground "${TEREDO_LAB_UP_TIMEOUT_S:-600}" \
    "${dcmd[@]}" up --no-build --no-color --abort-on-container-exit --exit-code-from "$main" "${services[@]}"
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
  rc=1 summary="no verdict (the $main did not finish)"
fi
[ "$runner_rc" = 0 ] || [ "$rc" != 0 ] || { rc=1; summary="$summary; but the $main exited $runner_rc"; }
[ "$prom_rc" = 0 ] || { rc=1; summary="$summary; Prometheus did not scrape server and relay"; }
[ "$shot_rc" = 0 ] || { rc=1; summary="$summary; the console page had errors in Chromium"; }

if [ "$rc" != 0 ]; then
  echo "==== logs of every container (failure) ===="
  dc logs --no-color --timestamps
fi
printf '\nverdict (%s): %s; %s exit %s, compose exit %s; up to verdict %s s\n' \
  "$mode" "$summary" "$main" "$runner_rc" "$compose_rc" "$elapsed"
if [ "${TEREDO_LAB_KEEP:-0}" = 1 ]; then
  echo "TEREDO_LAB_KEEP=1: left up; tear down with: ${dcmd[*]} down -v"
else
  teardown || rc=1
fi
echo "results in $TEREDO_LAB_RESULTS"
exit "$rc"
