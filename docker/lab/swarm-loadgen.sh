#!/bin/bash
# One replica of the load generator of the Docker Swarm stack (docker/swarm/stack.yml):
# `client-sim load` as in the compose `load` profile (docker/lab/loadgen.sh), with the
# replica's own client range: CLIENT_SIM_REPLICA_INDEX comes from the stack file's
# {{.Task.Slot}} (1, 2, 3...), so replica N simulates global clients (N-1) x LOAD_CLIENTS
# onwards with the shared LOAD_SEED. Its address is the one Docker gave it on the
# `internet` overlay (no fixed address: replicas come and go). Writes
# /results/load-N.json (its report), load-N.txt (the text) and load-N.rc (its exit status)
# for docker/swarm/up.sh, and keeps /metrics up LOAD_LINGER after the run so that
# Prometheus (dns_sd_configs on tasks.loadgen) scrapes the final counters. Exit status 0
# once the status file is written, whatever the run's verdict (a failing task would be
# restarted by the stack's restart policy and run again); 1 when it could not run at all.
#
#   env LOAD_CLIENTS=2000 LOAD_QUALIFY_RATE=500 LOAD_RATE=1000 LOAD_SIZE=100
#       LOAD_DURATION=10s LOAD_SEED=1 LOAD_LINGER=6s LOAD_ARGS="..."
set -uo pipefail
LAB_ROLE=loadgen-${CLIENT_SIM_REPLICA_INDEX:-?}
# shellcheck source=common.sh
. /lab/common.sh

slot=${CLIENT_SIM_REPLICA_INDEX:-}
case $slot in '' | *[!0-9]*) die "CLIENT_SIM_REPLICA_INDEX=$slot: expected a task slot" ;; esac
drop_default_routes
dev=$(iface_of "$INTERNET_PREFIX") || true
[ -n "$dev" ] || die "no interface on the internet network"
me=$(addr_of "$dev")
me=${me%/*}
rm -f "$RESULTS/load-$slot".*

# The server and the relay answer on their fixed addresses once their metrics do.
for _ in $(seq 1 60); do
  http_get "$SERVER" 9101 /metrics >/dev/null && http_get "$RELAY4" 9102 /metrics >/dev/null && break
  sleep 1
done
log "replica $slot on $me: server and relay $(http_get "$SERVER" 9101 /metrics >/dev/null && echo up || echo NOT up)"

# shellcheck disable=SC2206 # LOAD_ARGS is split on purpose
args=(load --server "$SERVER" --bind "$me" --clients "${LOAD_CLIENTS:-2000}"
  --qualify-rate "${LOAD_QUALIFY_RATE:-500}" --phase all --target "$V6HOST"
  --rate "${LOAD_RATE:-1000}" --size "${LOAD_SIZE:-100}" --duration "${LOAD_DURATION:-10s}"
  --seed "${LOAD_SEED:-1}" --replica-index "$slot" --quiet
  --metrics-addr 0.0.0.0:9103 --metrics-linger "${LOAD_LINGER:-6s}"
  --json "$RESULTS/.load-$slot.json" ${LOAD_ARGS:-})
log "client-sim ${args[*]}"
client-sim "${args[@]}" >"$RESULTS/.load-$slot.txt"
rc=$?
cat "$RESULTS/.load-$slot.txt"
[ -s "$RESULTS/.load-$slot.json" ] && mv "$RESULTS/.load-$slot.json" "$RESULTS/load-$slot.json"
mv "$RESULTS/.load-$slot.txt" "$RESULTS/load-$slot.txt"
printf '%s\n' "$rc" >"$RESULTS/load-$slot.rc"
log "client-sim load exited $rc"
exit 0
