#!/usr/bin/env bash
# The console page of the lab's Prometheus in the host's headless Chromium, after a load run
# (docker/up.sh --load calls it before the teardown): the page's console must show no errors
# (no script refused, no resource failed, no exception); a screenshot of the run's window is
# kept. The host reaches Prometheus on the `internet` network through Docker's bridge
# (198.51.100.254), although the network is internal.
#
#   docker/console-shot.sh RESULTS_DIR [SECONDS]   SECONDS: the graphs' window (default 120)
#
# Writes RESULTS_DIR/console.png, console-chromium.txt (Chromium's log, the page's console
# lines marked CONSOLE) and console-dom.html. Exit status 0 when the page rendered without a
# console error, or when there is nothing to do it with (no chromium, Prometheus not
# reachable from the host: said so); 1 otherwise.
set -uo pipefail
results=$1 window=${2:-120}
prom=198.51.100.50:9090
url="http://$prom/consoles/teredo-load.html"
# The graphs' window: the last SECONDS, ending now (prom_console.js reads it from the hash).
hash="#pctc%7B%22duration%22%3A$window%2C%22endTime%22%3A0%7D"
say() { echo "console page in Chromium: $*"; }

command -v chromium >/dev/null || { say "skipped (no chromium on the host)"; exit 0; }
timeout 3 bash -c "exec 3<>/dev/tcp/${prom%:*}/${prom#*:}" 2>/dev/null ||
  { say "skipped (Prometheus $prom not reachable from the host)"; exit 0; }

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
browse() { # ARGS...: headless Chromium, its log appended to console-chromium.txt
  timeout 120 chromium --headless --no-sandbox --disable-gpu --no-first-run \
    --enable-logging=stderr --v=0 --user-data-dir="$profile" \
    --virtual-time-budget=10000 "$@" 2>>"$results/console-chromium.txt"
}
: >"$results/console-chromium.txt"
browse --dump-dom "$url$hash" >"$results/console-dom.html" &&
  browse --window-size=1400,4200 --screenshot="$results/console.png" "$url$hash" >/dev/null
rc=$?
graphs=$(grep -o 'rickshaw_graph' "$results/console-dom.html" | wc -l)
charts=$(grep -o '<svg' "$results/console-dom.html" | wc -l)
errors=$(grep -cE 'CONSOLE|Uncaught|Refused to execute|Failed to load resource' \
  "$results/console-chromium.txt")
shot="$(stat -c %s "$results/console.png" 2>/dev/null || echo no) bytes"
if [ "$rc" != 0 ] || [ "$errors" != 0 ]; then
  say "FAILED: chromium exit $rc, $errors console errors (console-chromium.txt)"
  grep -E 'CONSOLE|Uncaught|Refused to execute|Failed to load resource' \
    "$results/console-chromium.txt" | head -n 5
  exit 1
fi
say "no console errors; $graphs graphs, $charts drew a chart (last $window s); screenshot console.png ($shot)"
