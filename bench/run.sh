#!/usr/bin/env bash
# Throughput/latency benchmark for the idem gateway. See bench/README.md.
#
# Measures, with wrk, on 127.0.0.1:
#   upstream     bench-upstream directly (no proxy)
#   passthrough  bench-passthrough, a bare hyper reverse proxy (the ceiling)
#   memory       idem gateway --store memory
#   sqlite       idem gateway --store sqlite:<tmp>/bench.db
#   sqlite-sealed  the same with [storage] encryption_key_env (responses encrypted)
#   postgres     idem gateway --store postgres://…?schema=idem_bench_<nonce>
#   redis        idem gateway --store redis://…/?prefix=idem_bench_<nonce>
#   TLS termination (wrk speaks https to the proxy; plain upstream), each
#   compared with passthrough-tls:
#     passthrough-tls, memory-tls, sqlite-tls
#   An https upstream (a second bench-upstream serving TLS), each compared
#   with passthrough-https-upstream:
#     passthrough-https-upstream, memory-https-upstream, sqlite-https-upstream
#   The certificates are made by openssl for 127.0.0.1 in the run's tmpdir.
# under two workloads (bench/unique.lua, bench/replay.lua) and writes a
# markdown table between the bench markers of docs/benchmarks.md (or $OUT).
#
# Usage: bash bench/run.sh
# Env:   DURATION=10s CONNECTIONS=32 THREADS=1 BUILD=1 WARMUP=2s
#        REPLAY_KEYS=100 BASE_PORT=18080 OUT=docs/benchmarks.md
#        TARGETS="upstream passthrough memory sqlite sqlite-sealed postgres redis
#                 passthrough-tls memory-tls sqlite-tls
#                 passthrough-https-upstream memory-https-upstream sqlite-https-upstream"
#        BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test
#        BENCH_REDIS_URL=redis://127.0.0.1:6379/
# The postgres and redis targets use the servers at those URLs, each run in
# a schema (key prefix) of its own that is dropped (deleted) afterwards;
# a server that does not answer skips its target.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-1}"
BUILD="${BUILD:-1}"
WARMUP="${WARMUP:-2s}"
REPLAY_KEYS="${REPLAY_KEYS:-100}"
BASE_PORT="${BASE_PORT:-18080}"
OUT="${OUT:-docs/benchmarks.md}"
TLS_TARGETS="passthrough-tls memory-tls sqlite-tls passthrough-https-upstream memory-https-upstream sqlite-https-upstream"
TARGETS="${TARGETS:-upstream passthrough memory sqlite sqlite-sealed postgres redis $TLS_TARGETS}"
BENCH_POSTGRES_URL="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
BENCH_REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/}"
READY_TIMEOUT_S=30
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/release"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes
PIDS=()
WORK="$(mktemp -d "${TMPDIR:-/tmp}/idem-bench.XXXXXX")"

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    stop "$pid"
  done
  drop_store_data
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME PORT CMD...: starts CMD in the background (stdout/stderr to
# $WORK/NAME.{out,err}) and waits until it prints "listening on" or accepts
# TCP on PORT, with a deadline. Sets START_PID. Returns 1 if it died or
# timed out.
START_PID=""
start() {
  local name="$1" port="$2"
  shift 2
  if port_open "$port"; then
    die "port $port is already in use (set BASE_PORT to move all ports)"
  fi
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  START_PID=$!
  PIDS+=("$START_PID")
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$START_PID" 2>/dev/null; then
      log "$name exited before it was ready; its stderr:"
      tail -n 20 "$WORK/$name.err" >&2 || true
      return 1
    fi
    if grep -q '^listening on' "$WORK/$name.out" 2>/dev/null || port_open "$port"; then
      return 0
    fi
    sleep 0.05 # poll interval, not a readiness guess
  done
  log "$name was not ready on port $port within ${READY_TIMEOUT_S}s; its stderr:"
  tail -n 20 "$WORK/$name.err" >&2 || true
  return 1
}

# stop PID: SIGTERM, then SIGKILL if it has not exited within 10 s.
stop() {
  local pid="$1" p rest=() deadline=$((SECONDS + 10))
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do
    [[ "$p" == "$pid" ]] || rest+=("$p")
  done
  PIDS=("${rest[@]}")
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ---------------------------------------------------------------- shared stores
# Each run uses a fresh PostgreSQL schema and Redis key prefix (letters,
# digits and `_`), removed after its target ran, and on exit.
STORE_NONCE="$(date +%s)_$$"
PG_SCHEMA="idem_bench_$STORE_NONCE"
REDIS_PREFIX="idem_bench_$STORE_NONCE"
PG_USED=""
REDIS_USED=""

# url_with URL NAME VALUE: URL with NAME=VALUE added to its query.
url_with() {
  case "$1" in *\?*) printf '%s&%s=%s' "$1" "$2" "$3" ;; *) printf '%s?%s=%s' "$1" "$2" "$3" ;; esac
}
PG_STORE="$(url_with "$BENCH_POSTGRES_URL" schema "$PG_SCHEMA")"
REDIS_STORE="$(url_with "$BENCH_REDIS_URL" prefix "$REDIS_PREFIX")"

# Drops the schema and deletes the keys this run created (idempotent).
drop_store_data() {
  if [[ -n "$PG_USED" ]]; then
    if command -v psql >/dev/null 2>&1; then
      PGCONNECT_TIMEOUT=5 psql -q -X "$BENCH_POSTGRES_URL" \
        -c "DROP SCHEMA IF EXISTS \"$PG_SCHEMA\" CASCADE" >/dev/null 2>&1 \
        || log "warning: could not drop schema $PG_SCHEMA; drop it by hand"
    else
      log "warning: psql not found; drop schema $PG_SCHEMA by hand"
    fi
    PG_USED=""
  fi
  if [[ -n "$REDIS_USED" ]]; then
    if command -v redis-cli >/dev/null 2>&1; then
      # Keys of the run, unlinked in batches (the prefix is unique to it).
      timeout 120 redis-cli -u "$BENCH_REDIS_URL" --scan --pattern "$REDIS_PREFIX:*" 2>/dev/null \
        | timeout 120 xargs -r -n 1000 redis-cli -u "$BENCH_REDIS_URL" UNLINK >/dev/null 2>&1 \
        || log "warning: could not delete the keys $REDIS_PREFIX:*; delete them by hand"
    else
      log "warning: redis-cli not found; delete the keys $REDIS_PREFIX:* by hand"
    fi
    REDIS_USED=""
  fi
}

# store_pids TARGET: sets STORE_PIDS to the processes of the store server a
# target uses (every `postgres` or `redis-server` process on the machine,
# taken after the warm-up so the gateway's connections exist): their CPU
# is part of the target's cost, not "other CPU".
STORE_PIDS=()
store_pids() {
  local name
  STORE_PIDS=()
  case "$1" in
    postgres) name=postgres ;;
    redis) name=redis-server ;;
    *) return 0 ;;
  esac
  mapfile -t STORE_PIDS < <(pgrep -x "$name" || true)
}

# store_ready TARGET: for postgres/redis, checks the server answers (and
# creates the schema) with `idem migrate`; returns 1 if not, with the
# reason in $WORK/TARGET.why.
store_ready() {
  local store
  case "$1" in
    postgres) store="$PG_STORE"; PG_USED=1 ;;
    redis) store="$REDIS_STORE"; REDIS_USED=1 ;;
    *) return 0 ;;
  esac
  if ! timeout 30 "$BIN/idem" migrate --store "$store" >"$WORK/$1.migrate" 2>&1; then
    grep -v '^[[:space:]]*$' "$WORK/$1.migrate" | tail -n 1 | tr -d '|`' | cut -c1-160 >"$WORK/$1.why" || true
    return 1
  fi
}

# ---------------------------------------------------------------- tools
ensure_tool() {
  local tool="$1"
  command -v "$tool" >/dev/null 2>&1 && return 0
  log "$tool not found; installing it with apt-get"
  command -v apt-get >/dev/null 2>&1 || die "$tool is missing and apt-get is not available"
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get install -y "$tool" >&2 || { $sudo apt-get update >&2 && $sudo apt-get install -y "$tool" >&2; }
  command -v "$tool" >/dev/null 2>&1 || die "could not install $tool"
}
ensure_tool wrk
ensure_tool curl
ensure_tool openssl

# ---------------------------------------------------------------- build
IDEM_SKIP_REASON=""
if [[ "$BUILD" == "1" ]]; then
  log "cargo build --release -p idem-bench"
  cargo build --release -p idem-bench >&2 || die "building idem-bench failed"
  log "cargo build --release -p idem"
  if ! cargo build --release -p idem >&2; then
    IDEM_SKIP_REASON="\`cargo build --release -p idem\` failed"
    log "warning: $IDEM_SKIP_REASON; skipping the idem gateway targets"
  fi
fi
[[ -x "$BIN/bench-upstream" && -x "$BIN/bench-passthrough" ]] \
  || die "$BIN/bench-upstream or bench-passthrough missing; run with BUILD=1"
if [[ -z "$IDEM_SKIP_REASON" && ! -x "$BIN/idem" ]]; then
  IDEM_SKIP_REASON="\`target/release/idem\` not found"
  log "warning: $IDEM_SKIP_REASON; skipping the idem gateway targets"
fi

# ---------------------------------------------------------------- targets
UP_PORT=$BASE_PORT
UP_URL="http://127.0.0.1:$UP_PORT"
declare -A PORT=(
  [upstream]=$UP_PORT
  [passthrough]=$((BASE_PORT + 1))
  [memory]=$((BASE_PORT + 2))
  [sqlite]=$((BASE_PORT + 3))
  [postgres]=$((BASE_PORT + 4))
  [redis]=$((BASE_PORT + 5))
  [sqlite-sealed]=$((BASE_PORT + 6))
  [passthrough-tls]=$((BASE_PORT + 7))
  [memory-tls]=$((BASE_PORT + 8))
  [sqlite-tls]=$((BASE_PORT + 9))
  [passthrough-https-upstream]=$((BASE_PORT + 10))
  [memory-https-upstream]=$((BASE_PORT + 11))
  [sqlite-https-upstream]=$((BASE_PORT + 12))
)
TLS_UP_PORT=$((BASE_PORT + 13))
TLS_UP_URL="https://127.0.0.1:$TLS_UP_PORT"
declare -A LABEL=(
  [upstream]="upstream (direct, no proxy)"
  [passthrough]="bench-passthrough (bare hyper proxy)"
  [memory]="idem gateway, \`--store memory\`"
  [sqlite]="idem gateway, \`--store sqlite\`"
  [postgres]="idem gateway, \`--store postgres\`"
  [redis]="idem gateway, \`--store redis\`"
  [sqlite-sealed]="idem gateway, \`--store sqlite\`, responses encrypted"
  [passthrough-tls]="TLS termination: bench-passthrough"
  [memory-tls]="TLS termination: idem gateway, \`--store memory\`"
  [sqlite-tls]="TLS termination: idem gateway, \`--store sqlite\`"
  [passthrough-https-upstream]="https upstream: bench-passthrough"
  [memory-https-upstream]="https upstream: idem gateway, \`--store memory\`"
  [sqlite-https-upstream]="https upstream: idem gateway, \`--store sqlite\`"
)
# The baseline of each row's "vs" column: the pass-through over the same
# TLS (and the same upstream).
declare -A BASE_OF=(
  [passthrough-tls]=passthrough-tls [memory-tls]=passthrough-tls [sqlite-tls]=passthrough-tls
  [passthrough-https-upstream]=passthrough-https-upstream
  [memory-https-upstream]=passthrough-https-upstream
  [sqlite-https-upstream]=passthrough-https-upstream
)
base_of() { echo "${BASE_OF[$1]:-passthrough}"; }
# How wrk and the priming curl reach a target, and whose side effects count.
scheme_of() { case "$1" in *-tls) echo https ;; *) echo http ;; esac; }
upstream_of() { case "$1" in *-https-upstream) echo "$TLS_UP_URL" ;; *) echo "$UP_URL" ;; esac; }

# Certificates for the TLS rows: one CA, one leaf for 127.0.0.1 used by the
# TLS listeners and the https upstream alike.
TLS_DIR="$WORK/tls"
make_certs() {
  mkdir -p "$TLS_DIR"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=idem bench CA" -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile ext.cnf -out server.crt 2>/dev/null
  )
}
make_certs || die "openssl could not make the benchmark certificates"
TLS_CONFIG="$WORK/tls.toml"
printf 'tls_cert = "%s"\ntls_key = "%s"\n' "$TLS_DIR/server.crt" "$TLS_DIR/server.key" >"$TLS_CONFIG"
UP_TLS_CONFIG="$WORK/upstream-tls.toml"
printf 'upstream_ca = "%s"\n' "$TLS_DIR/ca.crt" >"$UP_TLS_CONFIG"
DB="$WORK/bench.db"
SEALED_DB="$WORK/sealed.db"
SEALED_CONFIG="$WORK/sealed.toml"
printf '[storage]\nencryption_key_env = "IDEM_BENCH_KEY"\n' >"$SEALED_CONFIG"
BENCH_KEY="$(head -c 32 /dev/urandom | base64)"
# Command lines as shown in the report (paths relative to the repo).
declare -A SHOWN=(
  [upstream]="target/release/bench-upstream --listen 127.0.0.1:${PORT[upstream]}"
  [passthrough]="target/release/bench-passthrough --listen 127.0.0.1:${PORT[passthrough]} --upstream $UP_URL"
  [memory]="target/release/idem gateway --listen 127.0.0.1:${PORT[memory]} --upstream $UP_URL --store memory"
  [sqlite]="target/release/idem gateway --listen 127.0.0.1:${PORT[sqlite]} --upstream $UP_URL --store sqlite:\$TMPDIR/bench.db"
  [postgres]="target/release/idem gateway --listen 127.0.0.1:${PORT[postgres]} --upstream $UP_URL --store $(url_with "$BENCH_POSTGRES_URL" schema "idem_bench_\$NONCE")"
  [redis]="target/release/idem gateway --listen 127.0.0.1:${PORT[redis]} --upstream $UP_URL --store $(url_with "$BENCH_REDIS_URL" prefix "idem_bench_\$NONCE")"
  [sqlite-sealed]="IDEM_BENCH_KEY=\$(head -c 32 /dev/urandom | base64) target/release/idem gateway --listen 127.0.0.1:${PORT[sqlite-sealed]} --upstream $UP_URL --store sqlite:\$TMPDIR/sealed.db --config sealed.toml # [storage] encryption_key_env = \"IDEM_BENCH_KEY\""
  [passthrough-tls]="target/release/bench-passthrough --listen 127.0.0.1:${PORT[passthrough-tls]} --upstream $UP_URL --tls-cert server.crt --tls-key server.key"
  [memory-tls]="target/release/idem gateway --listen 127.0.0.1:${PORT[memory-tls]} --upstream $UP_URL --store memory --config tls.toml # tls_cert, tls_key"
  [sqlite-tls]="target/release/idem gateway --listen 127.0.0.1:${PORT[sqlite-tls]} --upstream $UP_URL --store sqlite:\$TMPDIR/bench.db --config tls.toml # tls_cert, tls_key"
  [passthrough-https-upstream]="target/release/bench-passthrough --listen 127.0.0.1:${PORT[passthrough-https-upstream]} --upstream $TLS_UP_URL --upstream-ca ca.crt"
  [memory-https-upstream]="target/release/idem gateway --listen 127.0.0.1:${PORT[memory-https-upstream]} --upstream $TLS_UP_URL --store memory --config upstream-tls.toml # upstream_ca"
  [sqlite-https-upstream]="target/release/idem gateway --listen 127.0.0.1:${PORT[sqlite-https-upstream]} --upstream $TLS_UP_URL --store sqlite:\$TMPDIR/bench.db --config upstream-tls.toml # upstream_ca"
)

# Sets CMD to the command line of a proxy target (not the upstream).
CMD=()
target_cmd() {
  case "$1" in
    passthrough) CMD=("$BIN/bench-passthrough" --listen "127.0.0.1:${PORT[passthrough]}" --upstream "$UP_URL") ;;
    memory) CMD=("$BIN/idem" gateway --listen "127.0.0.1:${PORT[memory]}" --upstream "$UP_URL" --store memory) ;;
    sqlite) CMD=("$BIN/idem" gateway --listen "127.0.0.1:${PORT[sqlite]}" --upstream "$UP_URL" --store "sqlite:$DB") ;;
    postgres) CMD=("$BIN/idem" gateway --listen "127.0.0.1:${PORT[postgres]}" --upstream "$UP_URL" --store "$PG_STORE") ;;
    redis) CMD=("$BIN/idem" gateway --listen "127.0.0.1:${PORT[redis]}" --upstream "$UP_URL" --store "$REDIS_STORE") ;;
    sqlite-sealed) CMD=(env "IDEM_BENCH_KEY=$BENCH_KEY" "$BIN/idem" gateway --listen "127.0.0.1:${PORT[sqlite-sealed]}" --upstream "$UP_URL" --store "sqlite:$SEALED_DB" --config "$SEALED_CONFIG") ;;
    passthrough-tls) CMD=("$BIN/bench-passthrough" --listen "127.0.0.1:${PORT[$1]}" --upstream "$UP_URL" --tls-cert "$TLS_DIR/server.crt" --tls-key "$TLS_DIR/server.key") ;;
    memory-tls) CMD=("$BIN/idem" gateway --listen "127.0.0.1:${PORT[$1]}" --upstream "$UP_URL" --store memory --config "$TLS_CONFIG") ;;
    sqlite-tls) CMD=("$BIN/idem" gateway --listen "127.0.0.1:${PORT[$1]}" --upstream "$UP_URL" --store "sqlite:$DB" --config "$TLS_CONFIG") ;;
    passthrough-https-upstream) CMD=("$BIN/bench-passthrough" --listen "127.0.0.1:${PORT[$1]}" --upstream "$TLS_UP_URL" --upstream-ca "$TLS_DIR/ca.crt") ;;
    memory-https-upstream) CMD=("$BIN/idem" gateway --listen "127.0.0.1:${PORT[$1]}" --upstream "$TLS_UP_URL" --store memory --config "$UP_TLS_CONFIG") ;;
    sqlite-https-upstream) CMD=("$BIN/idem" gateway --listen "127.0.0.1:${PORT[$1]}" --upstream "$TLS_UP_URL" --store "sqlite:$DB" --config "$UP_TLS_CONFIG") ;;
  esac
}

# Results, keyed "workload:target".
declare -A RPS P50 P99 REQS ERRS ERRDETAIL HITS OTHER
declare -A SKIP     # target -> reason the whole target was skipped
declare -A SKIP_ROW # workload:target -> reason one measurement is missing

# Upstream side-effect counter of TARGET's upstream: POSTs seen so far
# (this call adds one).
upstream_count() {
  curl -sS --cacert "$TLS_DIR/ca.crt" -X POST --max-time 5 "$(upstream_of "$1")/__count" \
    | sed -n 's/.*"id":\([0-9]*\).*/\1/p'
}

# run_wrk WORKLOAD TARGET NONCE DURATION: runs wrk, prints its output to
# stderr, and leaves the IDEM_BENCH result line in $WORK/last.
run_wrk() {
  local workload="$1" target="$2" nonce="$3" duration="$4"
  IDEM_BENCH_NONCE="$nonce" IDEM_BENCH_REPLAY_KEYS="$REPLAY_KEYS" \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --timeout 5s \
    -s "bench/$workload.lua" "$(scheme_of "$target")://127.0.0.1:${PORT[$target]}/" >"$WORK/wrk.out" 2>&1 \
    || { cat "$WORK/wrk.out" >&2; return 1; }
  sed 's/^/    /' "$WORK/wrk.out" >&2
  grep '^IDEM_BENCH ' "$WORK/wrk.out" | tail -n 1 >"$WORK/last"
  [[ -s "$WORK/last" ]]
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" "$WORK/last"; }

# ---- CPU used by other programs during a measurement (noise indicator).
# Machine-wide busy ticks (user, nice, system, irq, softirq from /proc/stat)
# minus the ticks of this benchmark's processes: upstream and proxy from
# /proc/PID/stat, wrk (and the curl probes) as waited-for children of this
# shell from the `times` builtin. Task times include the softirq work done in
# their context, hence irq and softirq on the machine side.
CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"
NCPU="$(nproc)"
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
pids_ticks() { # utime + stime of running processes (0 for those gone)
  local pid stat total=0
  for pid in "$@"; do
    stat="$(cat "/proc/$pid/stat" 2>/dev/null || true)"
    [[ -n "$stat" ]] || continue
    # Drop "pid (comm) " so that spaces in comm cannot shift the fields.
    total=$((total + $(awk '{ print $12 + $13 }' <<<"${stat##*) }")))
  done
  echo "$total"
}
# children_ticks FILE: CPU ticks of waited-for children, from `times` output
# saved to FILE. `times` must run in this shell, not in $(...), where it
# would only see the subshell's own children.
children_ticks() {
  awk -v hz="$CLK_TCK" 'NR == 2 {
    t = 0
    for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] }
    printf "%.0f", t * hz
  }' "$1"
}

# measure WORKLOAD TARGET NONCE: one measured wrk run, results stored.
measure() {
  local workload="$1" target="$2" nonce="$3" before after
  local k="$workload:$target"
  before="$(upstream_count "$target")"
  log "measuring $workload on $target for $DURATION"
  local pids=("$UP_PID") m0 p0 t0 m1 p1 t1 ours
  [[ -n "$PROXY_PID" ]] && pids+=("$PROXY_PID")
  [[ -n "$TLS_UP_PID" ]] && pids+=("$TLS_UP_PID")
  pids+=("${STORE_PIDS[@]}")
  times >"$WORK/times0"
  m0="$(machine_ticks)"
  p0="$(pids_ticks "${pids[@]}")"
  t0="$(date +%s%N)"
  if ! run_wrk "$workload" "$target" "$nonce" "$DURATION"; then
    SKIP_ROW[$k]="wrk failed"
    return 0
  fi
  m1="$(machine_ticks)"
  p1="$(pids_ticks "${pids[@]}")"
  t1="$(date +%s%N)"
  times >"$WORK/times1"
  ours=$((p1 - p0 + $(children_ticks "$WORK/times1") - $(children_ticks "$WORK/times0")))
  OTHER[$k]="$(awk -v m="$((m1 - m0))" -v o="$ours" -v ns="$((t1 - t0))" -v hz="$CLK_TCK" -v n="$NCPU" \
    'BEGIN { x = 100 * (m - o) / (n * hz * ns / 1e9); if (x < 0) x = 0; printf "%.0f%%", x }')"
  if ((${OTHER[$k]%\%} >= 10)); then
    log "warning: other programs used ${OTHER[$k]} of the CPU during this run; its numbers are unreliable"
  fi
  after="$(upstream_count "$target")"
  RPS[$k]="$(field rps)"
  P50[$k]="$(field p50_ms)"
  P99[$k]="$(field p99_ms)"
  REQS[$k]="$(field requests)"
  local status connect read write timeout
  status="$(field status_errors)"
  connect="$(field connect)"
  read="$(field read)"
  write="$(field write)"
  timeout="$(field timeout)"
  ERRS[$k]=$((status + connect + read + write + timeout))
  ERRDETAIL[$k]="http>=400: $status, connect: $connect, read: $read, write: $write, timeout: $timeout"
  # Requests that reached the upstream during the run (minus our own probe).
  if [[ -n "$before" && -n "$after" ]]; then
    HITS[$k]=$((after - before - 1))
  else
    HITS[$k]="?"
  fi
}

# prime TARGET NONCE: sends each replay key once; returns 1 unless all 2xx.
prime() {
  local target="$1" nonce="$2" i code ok=0
  for ((i = 0; i < REPLAY_KEYS; i++)); do
    code="$(curl -sS --cacert "$TLS_DIR/ca.crt" -o /dev/null -w '%{http_code}' --max-time 10 -X POST \
      -H 'Content-Type: application/json' -H 'Authorization: Bearer bench' -H "Idempotency-Key: r-$nonce-$i" \
      --data '{"amount":100,"currency":"eur"}' \
      "$(scheme_of "$target")://127.0.0.1:${PORT[$target]}/charges" || true)"
    [[ "$code" == 2* ]] && ok=$((ok + 1))
  done
  log "primed $ok/$REPLAY_KEYS replay keys on $target"
  ((ok == REPLAY_KEYS))
}

RUN_NONCE="$(date +%s)-$$"
START_FAILED=()

# Percentage of all CPU time that was busy over one second, from /proc/stat;
# taken before the first measurement to reveal other work on the machine.
cpu_busy_pct() {
  local a b
  a="$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit }' /proc/stat 2>/dev/null)" || true
  sleep 1
  b="$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit }' /proc/stat 2>/dev/null)" || true
  if [[ -z "$a" || -z "$b" ]]; then
    echo "unknown"
    return 0
  fi
  awk -v a="$a" -v b="$b" 'BEGIN {
    split(a, x, " "); split(b, y, " ")
    busy = y[1] - x[1]; idle = y[2] - x[2]
    if (busy + idle > 0) printf "%.0f%%", 100 * busy / (busy + idle); else print "unknown"
  }'
}

# bench_target TARGET: start (unless upstream), warm up, measure both.
bench_target() {
  local target="$1" pid=""
  if [[ "$target" != upstream && "$target" != passthrough* ]] && [[ -n "$IDEM_SKIP_REASON" ]]; then
    SKIP[$target]="skipped: $IDEM_SKIP_REASON"
    return 0
  fi
  local why_not
  if ! store_ready "$target"; then
    why_not="$(cat "$WORK/$target.why" 2>/dev/null || true)"
    log "warning: the $target server does not answer (${why_not:-no detail}); skipping $target"
    SKIP[$target]="skipped: server not reachable${why_not:+: \`$why_not\`}"
    drop_store_data
    return 0
  fi
  if [[ "$target" != upstream ]]; then
    rm -f "$DB" "$DB-wal" "$DB-shm"
    target_cmd "$target"
    if ! start "$target" "${PORT[$target]}" "${CMD[@]}"; then
      local why
      why="$(grep -v '^[[:space:]]*$' "$WORK/$target.err" 2>/dev/null | tail -n 1 | tr -d '|`' | cut -c1-120 || true)"
      SKIP[$target]="**FAIL: did not start**${why:+: \`$why\`}"
      START_FAILED+=("$target")
      return 0
    fi
    pid="$START_PID"
  fi
  PROXY_PID="$pid"
  local nonce="$RUN_NONCE-$target"
  if [[ "$WARMUP" != "0" && "$WARMUP" != "0s" ]]; then
    log "warming up $target for $WARMUP (not recorded)"
    run_wrk unique "$target" "$nonce-warm" "$WARMUP" || true
  fi
  store_pids "$target"
  measure unique "$target" "$nonce"
  if ! prime "$target" "$nonce"; then
    log "warning: priming was incomplete on $target; replay numbers include first-time keys"
  fi
  measure replay "$target" "$nonce"
  [[ -n "$pid" ]] && stop "$pid"
  drop_store_data
  return 0
}

log "starting bench-upstream on $UP_URL"
start upstream "$UP_PORT" "$BIN/bench-upstream" --listen "127.0.0.1:$UP_PORT" \
  || die "bench-upstream did not start"
UP_PID="$START_PID"
PROXY_PID=""
TLS_UP_PID=""
if [[ " $TARGETS " == *"-https-upstream "* ]]; then
  log "starting bench-upstream over TLS on $TLS_UP_URL"
  start upstream-tls "$TLS_UP_PORT" "$BIN/bench-upstream" --listen "127.0.0.1:$TLS_UP_PORT" \
    --tls-cert "$TLS_DIR/server.crt" --tls-key "$TLS_DIR/server.key" \
    || die "bench-upstream over TLS did not start"
  TLS_UP_PID="$START_PID"
fi

BUSY_BEFORE="$(cpu_busy_pct)"
log "CPU busy before measuring: $BUSY_BEFORE"

ALL_TARGETS=(upstream passthrough memory sqlite sqlite-sealed postgres redis $TLS_TARGETS)
for t in "${ALL_TARGETS[@]}"; do
  if [[ " $TARGETS " != *" $t "* ]]; then
    SKIP[$t]="skipped: not in TARGETS"
    continue
  fi
  bench_target "$t"
done

# ---------------------------------------------------------------- report
ratio() { # ratio A B -> A/B with 2 decimals, or "–"
  if [[ -n "${1:-}" && -n "${2:-}" ]]; then
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "–" }'
  else
    printf '–'
  fi
}
fmt_int() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }

UNIQUE_FAILED=()
table() {
  local workload="$1" t k base
  echo "| target | requests/s | p50 (ms) | p99 (ms) | vs passthrough | errors | upstream hits | other CPU |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for t in "${ALL_TARGETS[@]}"; do
    k="$workload:$t"
    if [[ -n "${SKIP[$t]:-}" || -n "${SKIP_ROW[$k]:-}" ]]; then
      echo "| ${LABEL[$t]} | ${SKIP[$t]:-${SKIP_ROW[$k]}} | | | | | | |"
      continue
    fi
    base="${RPS[$workload:$(base_of "$t")]:-}"
    local errs="${ERRS[$k]}"
    if ((errs > 0)); then
      errs="${errs} (${ERRDETAIL[$k]})"
      if [[ "$workload" == unique ]]; then
        errs="**FAIL: $errs**"
        UNIQUE_FAILED+=("$t")
      fi
    fi
    echo "| ${LABEL[$t]} | $(fmt_int "${RPS[$k]}") | ${P50[$k]} | ${P99[$k]} | $(ratio "${RPS[$k]}" "$base") | $errs | ${HITS[$k]} / ${REQS[$k]} | ${OTHER[$k]} |"
  done
}

commit="$(git rev-parse --verify --quiet --short=12 HEAD 2>/dev/null || true)"
commit="${commit:-none (no commit yet)}"
if [[ -n "$(git status --porcelain 2>/dev/null || true)" ]]; then
  commit="$commit, with uncommitted changes"
fi
cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
# `wrk -v` prints its version and then exits non-zero.
wrk_version="$(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }' || true)"

REPORT="$WORK/report.md"
{
  echo "<!-- bench:begin -->"
  echo "<!-- Generated by bench/run.sh: everything between the bench markers is replaced on each run. -->"
  echo
  echo "## Latest run"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Commit: \`$commit\`"
  echo "- Machine: \`nproc\` = $(nproc)${cpu:+, $cpu}"
  echo "- Reproduce: \`bash bench/run.sh\`"
  echo "- CPU busy in the second before measuring (upstream idle): $BUSY_BEFORE (well above 0% means other work competed for the cores)"
  echo "- Settings: \`DURATION=$DURATION CONNECTIONS=$CONNECTIONS THREADS=$THREADS WARMUP=$WARMUP REPLAY_KEYS=$REPLAY_KEYS\` ($wrk_version, keep-alive, 127.0.0.1)"
  echo
  echo "> All processes (wrk, the upstream and the proxy under test) share the same $(nproc) cores,"
  echo "> so absolute numbers are low and each proxy competes with its own load generator."
  echo "> Compare ratios within one run, not numbers across machines."
  echo
  echo "### unique: a new \`Idempotency-Key\` on every request"
  echo
  table unique
  echo
  echo "### replay: $REPLAY_KEYS keys, primed first, so (almost) every request is a replay"
  echo
  table replay
  echo
  echo "- **vs passthrough**: requests/s divided by the passthrough's requests/s in the same workload and run;"
  echo "  a TLS row is divided by the pass-through over the same TLS (\`TLS termination: bench-passthrough\` or \`https upstream: bench-passthrough\`)."
  echo "- **errors**: responses with HTTP status >= 400 plus socket errors (connect/read/write/timeout), as counted by wrk."
  echo "  In \`unique\` every key is new, so any error is a failure."
  echo "- **upstream hits**: POSTs that reached bench-upstream during the measured run / requests wrk completed"
  echo "  (hits can exceed requests by up to the connection count: requests still in flight when wrk stops are not counted)."
  echo "  A proxy that replays should show almost no upstream hits in \`replay\`."
  echo "- **other CPU**: share of the machine's CPU used by programs outside this benchmark during the run"
  echo "  (the PostgreSQL and Redis servers count as part of the benchmark for their targets)."
  echo "  About 0-5% on an idle machine; above 10% (the script warns) something else competed for the cores and that row is unreliable."
  echo
  if [[ "$WARMUP" == "0" || "$WARMUP" == "0s" ]]; then
    warm="no warm-up"
  else
    warm="after an unrecorded $WARMUP \`unique\` warm-up"
  fi
  echo "Commands (\`\$TMPDIR\` is a fresh temporary directory, \`\$NONCE\` a fresh name: each run gets its own schema and key prefix, removed afterwards; each proxy runs alone, $warm; the upstream runs throughout):"
  echo
  for t in "${ALL_TARGETS[@]}"; do
    echo "- ${LABEL[$t]}: \`${SHOWN[$t]}\`"
  done
  echo "- TLS rows: \`server.crt\`/\`server.key\` (P-256, for IP 127.0.0.1) and \`ca.crt\` are made by openssl in \`\$TMPDIR/tls\`; the https upstream is \`bench-upstream --listen 127.0.0.1:$TLS_UP_PORT --tls-cert server.crt --tls-key server.key\`; wrk speaks \`https://\` to the TLS-termination rows (HTTP/1.1)."
  echo "- wrk: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --timeout 5s -s bench/{unique,replay}.lua http://127.0.0.1:PORT/\`"
  echo "<!-- bench:end -->"
} >"$REPORT"

mkdir -p "$(dirname "$OUT")"
if [[ ! -f "$OUT" ]]; then
  cat >"$OUT" <<'EOF'
# Benchmarks

How much throughput and latency the idem gateway costs compared with a bare
reverse proxy on the same stack. See `bench/README.md` for what is measured
and how to read the numbers.

<!-- bench:begin -->
<!-- bench:end -->
EOF
fi
if grep -q '^<!-- bench:begin -->' "$OUT" && grep -q '^<!-- bench:end -->' "$OUT"; then
  awk -v report="$REPORT" '
    /^<!-- bench:begin -->/ { while ((getline line < report) > 0) print line; skip = 1; next }
    /^<!-- bench:end -->/   { skip = 0; next }
    !skip                   { print }
  ' "$OUT" >"$WORK/out.md"
else
  { cat "$OUT"; echo; cat "$REPORT"; } >"$WORK/out.md"
fi
cat "$WORK/out.md" >"$OUT"
log "wrote $OUT"
sed -n '/^### /,/^- \*\*vs/p' "$REPORT" >&2

status=0
if ((${#START_FAILED[@]} > 0)); then
  log "FAIL: did not start: ${START_FAILED[*]}"
  status=1
fi
if ((${#UNIQUE_FAILED[@]} > 0)); then
  log "FAIL: the unique workload had errors on: ${UNIQUE_FAILED[*]}"
  status=1
fi
exit "$status"
