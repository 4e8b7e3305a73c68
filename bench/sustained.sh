#!/usr/bin/env bash
# Sustained runs: one gateway process, RUNS wrk runs of the unique workload
# in a row, at each connection count, so a slowdown that builds up over a
# run (plans, caches, a growing table) shows as falling numbers. Used for
# PostgreSQL's group commit against one statement per request
# (docs/benchmarks.md).
#
# Usage: bash bench/sustained.sh 'STORE' [LABEL]
#   STORE: the gateway's --store; for postgres:// it gets a fresh
#          schema=… of its own per gateway, dropped afterwards.
# Env:   CONNECTIONS="1 8 32 128" RUNS=3 DURATION=5s
#        (release binaries from `cargo build --release -p idem -p idem-bench`)
# Prints one line per connection count: LABEL c=N: req/s of each run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STORE="${1:?usage: bash bench/sustained.sh STORE [LABEL]}"
LABEL="${2:-$STORE}"
CONNECTIONS="${CONNECTIONS:-1 8 32 128}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-5s}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
UPSTREAM_PORT=18080
PORT=18084

for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "sustained: $tool is not installed" >&2; exit 1; }
done
for bin in idem bench-upstream; do
  [[ -x "$BIN/$bin" ]] || { echo "sustained: $BIN/$bin missing: cargo build --release -p idem -p idem-bench" >&2; exit 1; }
done

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN/bench-upstream" --listen "127.0.0.1:$UPSTREAM_PORT" >/dev/null 2>&1 &
pids+=($!)

for c in $CONNECTIONS; do
  store="$STORE" schema=""
  if [[ "$STORE" == postgres://* || "$STORE" == postgresql://* ]]; then
    schema="idem_sustained_$$_$c"
    sep='?'; [[ "$STORE" == *\?* ]] && sep='&'
    store="$STORE${sep}schema=$schema"
  fi
  "$BIN/idem" gateway --listen "127.0.0.1:$PORT" --upstream "http://127.0.0.1:$UPSTREAM_PORT" \
    --store "$store" >/dev/null 2>&1 &
  gw=$!
  ready=0
  for _ in $(seq 300); do
    if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then ready=1; break; fi
    sleep 0.1
  done
  ((ready)) || { echo "sustained: the gateway did not start on --store $store" >&2; exit 1; }
  line="$LABEL c=$c:"
  for r in $(seq "$RUNS"); do
    rps=$(IDEM_BENCH_NONCE="s$$c$c-$r" wrk -t1 -c"$c" -d"$DURATION" -s bench/unique.lua \
      "http://127.0.0.1:$PORT/" | awk '/Requests\/sec/ { printf "%.0f", $2 }')
    line="$line ${rps:-?}"
  done
  echo "$line"
  kill "$gw"; wait "$gw" 2>/dev/null || true
  if [[ -n "$schema" ]]; then
    psql -q "${STORE%%\?*}" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  fi
done
