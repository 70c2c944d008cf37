#!/usr/bin/env bash
# The load run on Docker Swarm, once: 3 replicas of the load generator (stack.yml) against
# our server and relay, one Prometheus discovering every replica, one merged report.
# Build the images first (docker/build.sh); nothing is pulled.
#
#   docker/swarm/up.sh     exit status 0 when the merged run met its loss threshold, its
#                          totals equal the sums of the 3 replicas' own reports, and
#                          Prometheus scraped the server, the relay and every replica
#
# Steps: wait (TEREDO_SWARM_WAIT_S, 180 s) while a network of the engine uses the lab's
# subnets (e.g. a compose lab, whose bridges the overlays would overlap);
# `docker swarm init --advertise-addr 127.0.0.1` unless this engine is already in a
# swarm (then the stack runs there, and the swarm is left alone); the two overlay networks
# (attachable, internal, IPv4 only: `native` carries IPv6 with the addresses its tasks add
# themselves, see below); `docker stack deploy --resolve-image never`;
# wait until every replica wrote its exit status (TEREDO_SWARM_TIMEOUT_S, default 300);
# docker/lab/swarm-check.sh in a one-shot container on the `internet` overlay (the merge with
# `client-sim load-report`, the sums, Prometheus' HTTP API); the stack, the networks and
# (if this script made it) the swarm removed again, whatever happened.
#
# Environment: TEREDO_LAB_IMAGE (default teredo-lab/lab:latest), TEREDO_LAB_PROMETHEUS_IMAGE,
# TEREDO_SWARM_RESULTS (default docker/swarm/results), TEREDO_SWARM_STACK (teredo-swarm),
# per replica TEREDO_SWARM_CLIENTS (2000), _QUALIFY_RATE (500/s), _RATE (1000 pps),
# _SIZE (100 B), _DURATION (10s), _SEED (1), _LOAD_ARGS (more `client-sim load` flags);
# TEREDO_SWARM_KEEP=1 leaves the stack up after the verdict (tear down by hand:
# `docker stack rm teredo-swarm`, `docker network rm teredo-swarm-internet teredo-swarm-native`,
# `docker swarm leave --force`).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STACK=${TEREDO_SWARM_STACK:-teredo-swarm}
export TEREDO_SWARM_NET=$STACK
export TEREDO_LAB_IMAGE=${TEREDO_LAB_IMAGE:-teredo-lab/lab:latest}
export TEREDO_LAB_PROMETHEUS_IMAGE=${TEREDO_LAB_PROMETHEUS_IMAGE:-teredo-lab/prometheus:latest}
export TEREDO_SWARM_RESULTS=${TEREDO_SWARM_RESULTS:-$here/results}
REPLICAS=3
TIMEOUT_S=${TEREDO_SWARM_TIMEOUT_S:-300}
NET4=$STACK-internet NET6=$STACK-native
case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0" >&2; exit 2 ;;
esac
fail() { echo "swarm/up.sh: $*" >&2; exit 1; }

for image in "$TEREDO_LAB_IMAGE" "$TEREDO_LAB_PROMETHEUS_IMAGE"; do
  docker image inspect "$image" >/dev/null 2>&1 ||
    fail "image $image not found: run docker/build.sh first (no registry to pull from)"
done
mkdir -p "$TEREDO_SWARM_RESULTS"
find "$TEREDO_SWARM_RESULTS" -mindepth 1 -delete
# The overlays take the compose lab's subnets; Docker refuses a task whose overlay overlaps a
# network of the node ("Pool overlaps"), e.g. a compose lab still up: wait for it to go.
clash() {
  docker network ls -q | xargs -r docker network inspect \
    --format '{{.Name}} {{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null |
    grep -v "^$STACK-" | grep -E ' (198\.51\.100\.0/24|192\.0\.2\.0/24|2001:db8:1::/64) ' | cut -d' ' -f1 | xargs
}
for i in $(seq 1 "${TEREDO_SWARM_WAIT_S:-180}"); do
  busy=$(clash)
  [ -z "$busy" ] && break
  [ "$i" = 1 ] && echo "waiting for network(s) $busy to go (they use the lab's subnets)"
  sleep 1
done
busy=$(clash)
[ -z "$busy" ] || fail "network(s) $busy use the lab's subnets (a compose lab still up?): the overlays would overlap"
start=$(date +%s)

initialised=0
# `swarm init` creates the bridge docker_gwbridge, which `swarm leave` keeps: ours to remove.
had_gwbridge=$(docker network inspect docker_gwbridge >/dev/null 2>&1 && echo 1 || echo 0)
state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)
case $state in
  active) echo "swarm: this engine is already in a swarm; using it (left as it is afterwards)" ;;
  inactive)
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null || fail "docker swarm init failed"
    initialised=1
    echo "swarm: initialised a single-node swarm (advertise 127.0.0.1); left again at the end"
    ;;
  *) fail "the engine's swarm state is '$state' (expected inactive or active)" ;;
esac

teardown() {
  if [ "${TEREDO_SWARM_KEEP:-0}" = 1 ]; then
    echo "TEREDO_SWARM_KEEP=1: stack $STACK left up"
    return 0
  fi
  docker stack rm "$STACK" >/dev/null 2>&1
  # Task containers go asynchronously; the networks can go only after them.
  for _ in $(seq 1 60); do
    [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ] && break
    sleep 1
  done
  for _ in $(seq 1 30); do
    docker network rm "$NET4" "$NET6" >/dev/null 2>&1
    docker network inspect "$NET4" >/dev/null 2>&1 || docker network inspect "$NET6" >/dev/null 2>&1 || break
    sleep 1
  done
  if [ "$initialised" = 1 ]; then
    docker swarm leave --force >/dev/null
    [ "$had_gwbridge" = 1 ] || docker network rm docker_gwbridge >/dev/null 2>&1
  fi
  local left
  left=$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK"
    docker service ls -q --filter "label=com.docker.stack.namespace=$STACK" 2>/dev/null
    docker network ls -q --filter "name=$STACK-")
  [ -z "$left" ] || { echo "swarm/up.sh: teardown left containers, services or networks: $left" >&2; return 1; }
  echo "torn down: no service, container or network of $STACK left$([ "$initialised" = 1 ] && echo ", swarm left")"
}
trap 'echo "swarm/up.sh: interrupted, tearing down" >&2; teardown; exit 130' INT TERM

rc=1 reason=
# Both overlays have ONE address pool each. Swarm (Docker 20.10's allocator) gives a task a
# single address per network, from whichever pool of a dual-stack network it tries first
# (a Go map: IPv4 or IPv6 at random); the node then takes the other family's address from its
# own copy of the pools, which the manager knows nothing of and hands out again to the next
# task: "starting container failed: Address already in use" (the task retried, often
# failing again), or, for the node's load-balancer address, "Invalid address 2001:db8:1::…:
# It does not belong to any of this network's subnets". So `native` is an IPv4 overlay
# (192.0.2.0/24, which nothing uses) and its IPv6 addresses are the fixed ones the server,
# the relay and the native host add on it (docker/lab/swarm-place.sh); no generator is on it.
if ! docker network create -d overlay --attachable --internal \
  --subnet 198.51.100.0/24 --ip-range 198.51.100.128/25 --gateway 198.51.100.254 "$NET4" >/dev/null ||
  ! docker network create -d overlay --attachable --internal \
    --subnet 192.0.2.0/24 --gateway 192.0.2.254 "$NET6" >/dev/null; then
  reason="cannot create the overlay networks"
fi
if [ -z "$reason" ]; then
  (cd "$here" && docker stack deploy --resolve-image never -c stack.yml "$STACK") ||
    reason="docker stack deploy failed"
fi
if [ -z "$reason" ]; then
  echo "deployed $STACK: $REPLICAS generator replicas; waiting for their reports (up to $TIMEOUT_S s)"
  deadline=$((start + TIMEOUT_S))
  declare -A idle=()
  while :; do
    done_n=$(find "$TEREDO_SWARM_RESULTS" -maxdepth 1 -name 'load-*.rc' | wc -l)
    [ "$done_n" -ge "$REPLICAS" ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then
      reason="only $done_n of $REPLICAS replicas finished within $TIMEOUT_S s"
      break
    fi
    # A service with no task left to run (each tried max_attempts times; a restarted task
    # waits 2 s), for 10 s in a row: the servers for good, the generators before every report.
    sleep 2
    for s in server relay v6host prometheus loadgen; do
      if [ -z "$(docker service ps -q --filter desired-state=running "${STACK}_$s" 2>/dev/null)" ] &&
        { [ "$s" != loadgen ] ||
          [ "$(find "$TEREDO_SWARM_RESULTS" -maxdepth 1 -name 'load-*.rc' | wc -l)" -lt "$REPLICAS" ]; }; then
        idle[$s]=$((${idle[$s]:-0} + 1))
      else
        idle[$s]=0
      fi
      if [ "${idle[$s]}" -ge 5 ]; then
        failed=$(docker service ps --no-trunc --format '{{.Name}} {{.CurrentState}} {{.Error}}' \
          "${STACK}_$s" 2>/dev/null | grep -i 'rejected\|failed' | head -n 1)
        reason="service $s has no task left to run: ${failed:-no task}"
        break 2
      fi
    done
  done
fi
if [ -z "$reason" ]; then
  for i in $(seq 1 "$REPLICAS"); do
    echo "---- replica $i: exit $(cat "$TEREDO_SWARM_RESULTS/load-$i.rc")"
    cat "$TEREDO_SWARM_RESULTS/load-$i.txt" 2>/dev/null
  done
  echo "---- merged, checked against the replicas and Prometheus"
  timeout 120 docker run --rm --network "$NET4" -v "$TEREDO_SWARM_RESULTS:/results" -e PROMETHEUS="${STACK}_prometheus" \
    --name "$STACK-check" "$TEREDO_LAB_IMAGE" /lab/swarm-check.sh "$REPLICAS"
  check_rc=$?
  if [ -s "$TEREDO_SWARM_RESULTS/verdict.txt" ]; then
    reason=$(cat "$TEREDO_SWARM_RESULTS/verdict.txt")
    [ "$check_rc" = 0 ] && rc=0
  else
    reason="the check wrote no verdict (exit $check_rc)"
  fi
fi
# Every task that Docker had to try again (none expected: the allocator clash above is gone);
# listed on success too, so that a run that passed only thanks to the restart policy shows.
retried=$(docker stack ps --no-trunc --format '{{.Name}} {{.CurrentState}} {{.Error}}' "$STACK" 2>/dev/null |
  grep -E '^[^ ]+ (Failed|Rejected) ')
if [ -n "$retried" ]; then
  echo "tasks that failed to start or run ($(wc -l <<<"$retried"), each retried by the restart policy):"
  sed 's/^/  /' <<<"$retried"
else
  echo "tasks: every one started at the first attempt"
fi
if [ "$rc" != 0 ]; then
  echo "==== tasks and service logs (failure) ===="
  docker stack ps --no-trunc --format '{{.Name}} {{.CurrentState}} {{.Error}}' "$STACK" 2>&1
  for s in server relay v6host prometheus loadgen; do
    docker service logs --raw --timestamps "${STACK}_$s" 2>&1 | tail -n 40 | sed "s/^/$s: /"
  done
fi
elapsed=$(($(date +%s) - start))
teardown || rc=1
echo "verdict (swarm): $reason; $elapsed s"
echo "results in $TEREDO_SWARM_RESULTS"
exit "$rc"
