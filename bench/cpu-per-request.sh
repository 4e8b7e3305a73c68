#!/usr/bin/env bash
# CPU per request: runs a proxy command in front of bench-upstream, loads
# it with wrk (the unique workload), and prints the proxy's and the
# upstream's CPU time per request, read from /proc/PID/stat before and
# after (docs/benchmarks.md, "Where the CPU goes, per request"); the
# proxy's memory growth per request; and, on the SQLite store, its writer
# thread's share.
#
# Usage: bash bench/cpu-per-request.sh PORT COMMAND...
#   e.g. bash bench/cpu-per-request.sh 18081 target/release/bench-passthrough \
#          --listen 127.0.0.1:18081 --upstream http://127.0.0.1:18080
#        bash bench/cpu-per-request.sh 18082 target/release/idem gateway \
#          --listen 127.0.0.1:18082 --upstream http://127.0.0.1:18080 --store memory
# Env:   DURATION=8 (seconds) CONNECTIONS=32 SCRIPT=bench/unique.lua (the wrk script)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${1:?usage: bash bench/cpu-per-request.sh PORT COMMAND...}"
shift
(($# > 0)) || { echo "cpu-per-request: no command given" >&2; exit 1; }
DURATION="${DURATION:-8}"
CONNECTIONS="${CONNECTIONS:-32}"
SCRIPT="${SCRIPT:-bench/unique.lua}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
TICKS="$(getconf CLK_TCK)"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN/bench-upstream" --listen 127.0.0.1:18080 >/dev/null 2>&1 &
upstream=$!
pids+=("$upstream")
"$@" >/dev/null 2>&1 &
proxy=$!
pids+=("$proxy")
ready=0
for _ in $(seq 300); do
  if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then ready=1; break; fi
  sleep 0.1
done
((ready)) || { echo "cpu-per-request: nothing answers on port $PORT" >&2; exit 1; }
# Warm-up, unrecorded.
wrk -t1 -c"$CONNECTIONS" -d2s -s "$SCRIPT" "http://127.0.0.1:$PORT/" >/dev/null

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
minor_faults() { awk '{ print $10 }' "/proc/$1/stat"; }
# The SQLite store's writer thread, when the proxy has one: its CPU and
# its write syscalls (WAL frames, plus the wake-ups of the replies).
writer=""
for task in /proc/"$proxy"/task/*; do
  if [[ "$(cat "$task/comm" 2>/dev/null)" == idem-sqlite-wri* ]]; then writer="$proxy/task/${task##*/}"; fi
done
writes() { awk '/^syscw/ { print $2 }' "/proc/$1/io"; }
p0=$(ticks "$proxy") u0=$(ticks "$upstream") m0=$(rss_kb "$proxy") f0=$(minor_faults "$proxy")
[[ -n "$writer" ]] && w0=$(ticks "$writer") s0=$(writes "$writer")
rps=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "$SCRIPT" "http://127.0.0.1:$PORT/" |
  awk '/Requests\/sec/ { print $2 }')
p1=$(ticks "$proxy") u1=$(ticks "$upstream") m1=$(rss_kb "$proxy") f1=$(minor_faults "$proxy")
awk -v r="$rps" -v p=$((p1 - p0)) -v u=$((u1 - u0)) -v d="$DURATION" -v hz="$TICKS" \
  -v m=$((m1 - m0)) -v f=$((f1 - f0)) 'BEGIN {
  n = r * d
  printf "requests/s %.0f; CPU per request: proxy %.1f us (%.0f%% of a core), upstream %.1f us\n",
    r, p / hz * 1e6 / n, 100 * p / hz / d, u / hz * 1e6 / n
  printf "proxy memory: RSS %+d bytes and %.3f minor faults per request\n", m * 1024 / n, f / n
}'
if [[ -n "$writer" ]]; then
  w1=$(ticks "$writer") s1=$(writes "$writer")
  awk -v r="$rps" -v w=$((w1 - w0)) -v s=$((s1 - s0)) -v d="$DURATION" -v hz="$TICKS" 'BEGIN {
    n = r * d
    printf "SQLite writer thread: %.1f us of CPU and %.2f write syscalls per request\n", w / hz * 1e6 / n, s / n
  }'
fi
