#!/usr/bin/env bash
# Throughput/latency benchmark for the idem gateway. See bench/README.md.
#
# Measures, with wrk, on 127.0.0.1:
#   upstream     bench-upstream directly (no proxy)
#   passthrough  bench-passthrough, a bare hyper reverse proxy (the ceiling)
#   nginx        nginx as a reverse proxy (worker_processes auto, upstream
#                keepalive 64), the reference a deployment would put there
#   memory       idem gateway --store memory
#   sqlite       idem gateway --store sqlite:<tmp>/bench.db
#   sqlite-sealed  the same with [storage] encryption_key_env (responses encrypted)
#   sqlite-normal  sqlite:<tmp>/bench-normal.db?synchronous=normal (skipped when
#                the gateway does not know the option)
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
# Sweeps, only when asked (SWEEP="connections body records"): the unique
# workload over SWEEP_TARGETS at several wrk connection counts, request body
# sizes, or numbers of records stored beforehand (sqlite, postgres), each
# point on a fresh target; results as CSV in $SWEEP_OUT, tables in the
# report, PNG charts drawn by bench-plot. A run without SWEEP keeps the
# sweeps section already in $OUT, marked with the run that measured it.
#
# Usage: bash bench/run.sh
# Env:   DURATION=10s CONNECTIONS=32 THREADS=1 BUILD=1 WARMUP=2s
#        REPLAY_KEYS=100 BASE_PORT=18080 OUT=docs/benchmarks.md
#        TARGETS="upstream passthrough nginx memory sqlite sqlite-sealed sqlite-normal postgres redis
#                 passthrough-tls memory-tls sqlite-tls
#                 passthrough-https-upstream memory-https-upstream sqlite-https-upstream"
#                (TARGETS=none: no main tables, only the sweeps)
#        SWEEP="" SWEEP_TARGETS="passthrough nginx memory sqlite redis postgres"
#        SWEEP_DURATION=5s SWEEP_WARMUP=1s SWEEP_OUT=docs/bench
#        SWEEP_CONNECTIONS="1 8 32 128 512" SWEEP_BODIES="100 10240 1048576"
#        RECORDS="0 1000000 10000000"
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
TARGETS="${TARGETS:-upstream passthrough nginx memory sqlite sqlite-sealed sqlite-normal postgres redis $TLS_TARGETS}"
SWEEP="${SWEEP:-}"
SWEEP_TARGETS="${SWEEP_TARGETS:-passthrough nginx memory sqlite redis postgres}"
SWEEP_DURATION="${SWEEP_DURATION:-5s}"
SWEEP_WARMUP="${SWEEP_WARMUP:-1s}"
SWEEP_OUT="${SWEEP_OUT:-docs/bench}"
SWEEP_CONNECTIONS="${SWEEP_CONNECTIONS:-1 8 32 128 512}"
SWEEP_BODIES="${SWEEP_BODIES:-100 10240 1048576}"
RECORDS="${RECORDS:-0 1000000 10000000}"
BENCH_POSTGRES_URL="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
BENCH_REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/}"
READY_TIMEOUT_S=30
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/release"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# in_list WORD LIST: whether WORD is one of the space-separated LIST.
in_list() { [[ " $2 " == *" $1 "* ]]; }

for sweep in $SWEEP; do
  case "$sweep" in
    connections | body | records) ;;
    *) die "unknown sweep '$sweep' in SWEEP (expected connections, body and/or records)" ;;
  esac
done
for x in $SWEEP_CONNECTIONS; do
  [[ "$x" =~ ^[1-9][0-9]*$ ]] || die "SWEEP_CONNECTIONS must be counts >= 1, got '$x'"
done
for x in $SWEEP_BODIES; do
  if ! [[ "$x" =~ ^[0-9]+$ ]] || ((x < 40)); then
    die "SWEEP_BODIES must be byte counts >= 40 (the JSON envelope), got '$x'"
  fi
done
for x in $RECORDS; do
  [[ "$x" =~ ^[0-9]+$ ]] || die "RECORDS must be counts >= 0, got '$x'"
done
# Every target, in the order of the tables.
# shellcheck disable=SC2206 # TLS_TARGETS is split on purpose
ALL_TARGETS=(upstream passthrough nginx memory sqlite sqlite-sealed sqlite-normal postgres redis $TLS_TARGETS)
MAIN=1
[[ "$TARGETS" != none ]] || MAIN=0
for t in $SWEEP_TARGETS; do
  in_list "$t" "${ALL_TARGETS[*]}" || die "unknown target '$t' in SWEEP_TARGETS (known: ${ALL_TARGETS[*]})"
done

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
  # Emptied here, not only by the child's redirection: a previous run's
  # "listening on" must not pass for this one's.
  : >"$WORK/$name.out"
  : >"$WORK/$name.err"
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
# taken after the warm-up so the gateway's connections exist), or to
# nginx's workers (children of the master, $PROXY_PID): their CPU is part
# of the target's cost, not "other CPU".
STORE_PIDS=()
store_pids() {
  local name
  STORE_PIDS=()
  case "$1" in
    postgres) name=postgres ;;
    redis) name=redis-server ;;
    nginx)
      [[ -z "$PROXY_PID" ]] || mapfile -t STORE_PIDS < <(pgrep -P "$PROXY_PID" || true)
      return 0
      ;;
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

# nginx (Debian's, at /usr/sbin/nginx), only when a run needs it: installed
# with apt-get when missing and we are root; otherwise its rows are skipped.
NGINX_BIN=""
NGINX_SKIP=""
find_nginx() {
  NGINX_BIN="$(command -v nginx 2>/dev/null || true)"
  [[ -n "$NGINX_BIN" || ! -x /usr/sbin/nginx ]] || NGINX_BIN=/usr/sbin/nginx
  [[ -z "$NGINX_BIN" ]] || return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "nginx not found; installing it with apt-get"
    apt-get install -y nginx >&2 || { apt-get update >&2 && apt-get install -y nginx >&2; } || true
    NGINX_BIN="$(command -v nginx 2>/dev/null || true)"
    [[ -n "$NGINX_BIN" || ! -x /usr/sbin/nginx ]] || NGINX_BIN=/usr/sbin/nginx
  fi
  if [[ -z "$NGINX_BIN" ]]; then
    NGINX_SKIP="nginx not installed (as root: apt-get install -y nginx)"
    log "warning: $NGINX_SKIP; skipping the nginx rows"
  fi
}
if in_list nginx "$TARGETS" || { [[ -n "$SWEEP" ]] && in_list nginx "$SWEEP_TARGETS"; }; then
  find_nginx
fi
# 512 wrk connections need as many sockets in the proxy, and again towards
# the upstream.
NOFILE="$(ulimit -n)"
if in_list connections "$SWEEP" && [[ "$NOFILE" != unlimited ]] && ((NOFILE < 4096)); then
  ulimit -n 4096 2>/dev/null || log "warning: could not raise the open-file limit to 4096 ($NOFILE); the 512-connection points may fail"
fi

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
  [nginx]=$((BASE_PORT + 14))
  [sqlite-normal]=$((BASE_PORT + 15))
)
TLS_UP_PORT=$((BASE_PORT + 13))
TLS_UP_URL="https://127.0.0.1:$TLS_UP_PORT"
declare -A LABEL=(
  [upstream]="upstream (direct, no proxy)"
  [passthrough]="bench-passthrough (bare hyper proxy)"
  [nginx]="nginx (reverse proxy, \`worker_processes auto\`)"
  [memory]="idem gateway, \`--store memory\`"
  [sqlite]="idem gateway, \`--store sqlite\`"
  [postgres]="idem gateway, \`--store postgres\`"
  [redis]="idem gateway, \`--store redis\`"
  [sqlite-sealed]="idem gateway, \`--store sqlite\`, responses encrypted"
  [sqlite-normal]="idem gateway, \`--store sqlite:…?synchronous=normal\`"
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
# The idem gateway targets (skipped when target/release/idem is missing).
is_idem() { [[ "$1" != upstream && "$1" != passthrough* && "$1" != nginx ]]; }
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
NORMAL_DB="$WORK/bench-normal.db"
# What a gateway that does not know the store option would create instead.
NORMAL_MISREAD="$NORMAL_DB?synchronous=normal"
SEALED_CONFIG="$WORK/sealed.toml"
printf '[storage]\nencryption_key_env = "IDEM_BENCH_KEY"\n' >"$SEALED_CONFIG"
BENCH_KEY="$(head -c 32 /dev/urandom | base64)"

# nginx as users deploy it in front of an HTTP/1.1 upstream: one worker per
# core, a keep-alive pool to the upstream, the request body buffered (its
# default). Every path inside $WORK, so it runs as any user; as root the
# workers run as root too (they must reach $WORK, which is private).
NGINX_DIR="$WORK/nginx"
write_nginx_conf() {
  mkdir -p "$NGINX_DIR"
  local user_line=""
  [[ $(id -u) -ne 0 ]] || user_line="user $(id -un);"
  cat >"$NGINX_DIR/nginx.conf" <<EOF
$user_line
worker_processes auto;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $NGINX_DIR/client_body;
    proxy_temp_path $NGINX_DIR/proxy;
    fastcgi_temp_path $NGINX_DIR/fastcgi;
    uwsgi_temp_path $NGINX_DIR/uwsgi;
    scgi_temp_path $NGINX_DIR/scgi;
    client_max_body_size 8m;
    upstream bench_upstream {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]};
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$remote_addr;
        }
    }
}
EOF
}
write_nginx_conf
# Command lines as shown in the report (paths relative to the repo).
declare -A SHOWN=(
  [upstream]="target/release/bench-upstream --listen 127.0.0.1:${PORT[upstream]}"
  [passthrough]="target/release/bench-passthrough --listen 127.0.0.1:${PORT[passthrough]} --upstream $UP_URL"
  [nginx]="nginx -p \$TMPDIR/nginx -e \$TMPDIR/nginx/error.log -c \$TMPDIR/nginx/nginx.conf -g 'daemon off;' # the config in bench/README.md, listen 127.0.0.1:${PORT[nginx]}"
  [memory]="target/release/idem gateway --listen 127.0.0.1:${PORT[memory]} --upstream $UP_URL --store memory"
  [sqlite]="target/release/idem gateway --listen 127.0.0.1:${PORT[sqlite]} --upstream $UP_URL --store sqlite:\$TMPDIR/bench.db"
  [postgres]="target/release/idem gateway --listen 127.0.0.1:${PORT[postgres]} --upstream $UP_URL --store $(url_with "$BENCH_POSTGRES_URL" schema "idem_bench_\$NONCE")"
  [redis]="target/release/idem gateway --listen 127.0.0.1:${PORT[redis]} --upstream $UP_URL --store $(url_with "$BENCH_REDIS_URL" prefix "idem_bench_\$NONCE")"
  [sqlite-normal]="target/release/idem gateway --listen 127.0.0.1:${PORT[sqlite-normal]} --upstream $UP_URL --store 'sqlite:\$TMPDIR/bench-normal.db?synchronous=normal'"
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
    nginx) CMD=("$NGINX_BIN" -p "$NGINX_DIR" -e "$NGINX_DIR/error.log" -c "$NGINX_DIR/nginx.conf" -g 'daemon off;') ;;
    sqlite-normal) CMD=("$BIN/idem" gateway --listen "127.0.0.1:${PORT[sqlite-normal]}" --upstream "$UP_URL" --store "sqlite:$NORMAL_DB?synchronous=normal") ;;
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
# stderr, and leaves the IDEM_BENCH result line in $WORK/last. A sweep sets
# WRK_T, WRK_C (threads, connections; default THREADS, CONNECTIONS) and
# WRK_BODY (unique.lua's BODY_SIZE; empty: the default body) around it.
run_wrk() {
  local workload="$1" target="$2" nonce="$3" duration="$4"
  IDEM_BENCH_NONCE="$nonce" IDEM_BENCH_REPLAY_KEYS="$REPLAY_KEYS" BODY_SIZE="${WRK_BODY:-}" \
    wrk -t"${WRK_T:-$THREADS}" -c"${WRK_C:-$CONNECTIONS}" -d"$duration" --timeout 5s \
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

# measure WORKLOAD TARGET NONCE [KEY [DURATION]]: one measured wrk run,
# results stored under KEY (default WORKLOAD:TARGET).
measure() {
  local workload="$1" target="$2" nonce="$3" before after
  local k="${4:-$workload:$target}" duration="${5:-$DURATION}"
  before="$(upstream_count "$target")"
  log "measuring $workload on $target for $duration${WRK_C:+ with $WRK_C connections}${WRK_BODY:+ with $WRK_BODY-byte bodies}"
  local pids=("$UP_PID") m0 p0 t0 m1 p1 t1 ours
  [[ -n "$PROXY_PID" ]] && pids+=("$PROXY_PID")
  [[ -n "$TLS_UP_PID" ]] && pids+=("$TLS_UP_PID")
  pids+=("${STORE_PIDS[@]}")
  times >"$WORK/times0"
  m0="$(machine_ticks)"
  p0="$(pids_ticks "${pids[@]}")"
  t0="$(date +%s%N)"
  if ! run_wrk "$workload" "$target" "$nonce" "$duration"; then
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
PREFILL_FAILED=()

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

# launch TARGET [keep]: a fresh store for TARGET (SQLite files removed; the
# PostgreSQL schema or Redis prefix made by `idem migrate`), unless `keep`,
# then starts the target (not the upstream, which runs throughout) and sets
# PROXY_PID. Returns 1 when the target cannot run, with the reason for the
# table in LAUNCH_WHY, and LAUNCH_FAILED=1 when that is a failure (a
# target that should have started) rather than a skip (records_point sets
# 2 for a failed pre-fill).
LAUNCH_WHY=""
LAUNCH_FAILED=0
launch() {
  local target="$1" keep="${2:-}" why
  LAUNCH_WHY=""
  LAUNCH_FAILED=0
  PROXY_PID=""
  if is_idem "$target" && [[ -n "$IDEM_SKIP_REASON" ]]; then
    LAUNCH_WHY="skipped: $IDEM_SKIP_REASON"
    return 1
  fi
  if [[ "$target" == nginx && -n "$NGINX_SKIP" ]]; then
    LAUNCH_WHY="skipped: $NGINX_SKIP"
    return 1
  fi
  if [[ -z "$keep" ]]; then
    if ! store_ready "$target"; then
      why="$(cat "$WORK/$target.why" 2>/dev/null || true)"
      log "warning: the $target server does not answer (${why:-no detail}); skipping $target"
      LAUNCH_WHY="skipped: server not reachable${why:+: \`$why\`}"
      drop_store_data
      return 1
    fi
    rm -f "$DB" "$DB-wal" "$DB-shm" "$SEALED_DB" "$SEALED_DB-wal" "$SEALED_DB-shm" \
      "$NORMAL_DB" "$NORMAL_DB-wal" "$NORMAL_DB-shm" "$NORMAL_MISREAD"*
  fi
  [[ "$target" != upstream ]] || return 0
  target_cmd "$target"
  if ! start "$target" "${PORT[$target]}" "${CMD[@]}"; then
    why="$(grep -v '^[[:space:]]*$' "$WORK/$target.err" 2>/dev/null | tail -n 1 | tr -d '|`' | cut -c1-160 || true)"
    if [[ "$target" == sqlite-normal ]]; then
      log "warning: the gateway refused the store option synchronous=normal; skipping $target"
      LAUNCH_WHY="skipped: the gateway refused \`?synchronous=normal\`${why:+: \`$why\`}"
    else
      LAUNCH_WHY="**FAIL: did not start**${why:+: \`$why\`}"
      LAUNCH_FAILED=1
    fi
    return 1
  fi
  PROXY_PID="$START_PID"
  if [[ "$target" == sqlite-normal && -e "$NORMAL_MISREAD" ]]; then
    log "warning: the gateway took ?synchronous=normal as part of the file name; skipping $target"
    finish
    LAUNCH_WHY="skipped: this gateway does not know the store option \`synchronous\` (it took \`?synchronous=normal\` as part of the file name)"
    return 1
  fi
}

# finish [keep]: stops the running target, and drops its store data unless
# `keep`.
finish() {
  [[ -z "$PROXY_PID" ]] || stop "$PROXY_PID"
  PROXY_PID=""
  [[ -n "${1:-}" ]] || drop_store_data
}

warmup_on() { [[ "$1" != "0" && "$1" != "0s" ]]; }

# bench_target TARGET: start (unless upstream), warm up, measure both.
bench_target() {
  local target="$1"
  if ! launch "$target"; then
    SKIP[$target]="$LAUNCH_WHY"
    if ((LAUNCH_FAILED)); then START_FAILED+=("$target"); fi
    return 0
  fi
  local nonce="$RUN_NONCE-$target"
  if warmup_on "$WARMUP"; then
    log "warming up $target for $WARMUP (not recorded)"
    run_wrk unique "$target" "$nonce-warm" "$WARMUP" || true
  fi
  store_pids "$target"
  measure unique "$target" "$nonce"
  if ! prime "$target" "$nonce"; then
    log "warning: priming was incomplete on $target; replay numbers include first-time keys"
  fi
  measure replay "$target" "$nonce"
  finish
  return 0
}

# ---------------------------------------------------------------- sweeps
# Each point: the unique workload on a freshly started target with a fresh
# store, after an unrecorded warm-up at the same settings. Results are in
# the same arrays as the main tables, keyed "sweep:SWEEP:TARGET:X".
declare -A SW_SKIP    # "SWEEP:TARGET" -> why the target is missing from a sweep
declare -A SW_SKIP_AT # "SWEEP:TARGET" -> the first x it is missing at
declare -A SW_FILL    # "sweep:records:TARGET:X" -> how long the pre-fill took
SWEEPS_RUN=()

sweep_xs() {
  case "$1" in
    connections) echo "$SWEEP_CONNECTIONS" ;;
    body) echo "$SWEEP_BODIES" ;;
    records) echo "$RECORDS" ;;
  esac
}

# sweep_targets SWEEP: the SWEEP_TARGETS a sweep runs on (the records sweep:
# those with a store to pre-fill, and passthrough as the ratios' base).
sweep_targets() {
  local t out=()
  for t in $SWEEP_TARGETS; do
    if [[ "$1" == records ]]; then
      case "$t" in passthrough | sqlite | sqlite-normal | postgres) ;; *) continue ;; esac
    fi
    out+=("$t")
  done
  echo "${out[*]}"
}

# sweep_point SWEEP TARGET X: warm-up and one measurement (target running).
sweep_point() {
  local sweep="$1" target="$2" x="$3"
  local WRK_T="" WRK_C="" WRK_BODY=""
  case "$sweep" in
    connections) WRK_T=1 WRK_C="$x" ;;
    body) WRK_BODY="$x" ;;
  esac
  local nonce="$RUN_NONCE-$sweep-$target-$x"
  if warmup_on "$SWEEP_WARMUP"; then
    log "warming up $target for $SWEEP_WARMUP (not recorded)"
    run_wrk unique "$target" "$nonce-warm" "$SWEEP_WARMUP" || true
  fi
  store_pids "$target"
  measure unique "$target" "$nonce" "sweep:$sweep:$target:$x" "$SWEEP_DURATION"
}

# prefill TARGET N: N completed records into the (stopped) target's store,
# with bench-prefill; the time it took goes to SW_FILL.
PREFILL_WHY=""
prefill() {
  local target="$1" n="$2" args=()
  PREFILL_WHY=""
  case "$target" in
    sqlite) args=(sqlite --path "$DB") ;;
    sqlite-normal) args=(sqlite --path "$NORMAL_DB") ;;
    postgres) args=(postgres --url "$BENCH_POSTGRES_URL" --schema "$PG_SCHEMA") ;;
  esac
  log "pre-filling $target with $n records"
  # RUST_LIB_BACKTRACE=0: the error alone, without anyhow's backtrace.
  if ! RUST_LIB_BACKTRACE=0 "$BIN/bench-prefill" "${args[@]}" --records "$n" 2>&1 >"$WORK/prefill.out" \
    | tee "$WORK/prefill.err" | sed 's/^/    /' >&2; then
    PREFILL_WHY="$({ grep '^Error: ' "$WORK/prefill.err" || grep -v '^[[:space:]]*$' "$WORK/prefill.err"; } | tail -n 1 | sed 's/^Error: //' | tr -d '|`' | cut -c1-160 || true)"
    return 1
  fi
  log "$(cat "$WORK/prefill.out")"
  SW_FILL["sweep:records:$target:$n"]="$(sed -n 's/.* in \([0-9.]* s\)$/\1/p' "$WORK/prefill.out")"
}

# records_point TARGET N: the gateway makes the schema on a fresh store, is
# stopped, the store is pre-filled with N records, the gateway restarted
# on it and measured. (passthrough has no store: just measured.)
records_point() {
  local target="$1" n="$2"
  if [[ "$target" != passthrough ]]; then
    launch "$target" || return 1
    finish keep
    if ! prefill "$target" "$n"; then
      drop_store_data
      LAUNCH_WHY="**FAIL: pre-fill failed**${PREFILL_WHY:+: \`$PREFILL_WHY\`}"
      LAUNCH_FAILED=2
      return 1
    fi
    launch "$target" keep || { drop_store_data; return 1; }
  else
    launch "$target" || return 1
  fi
  sweep_point records "$target" "$n"
  finish
}

run_sweep() {
  local sweep="$1" t x
  SWEEPS_RUN+=("$sweep")
  if [[ "$sweep" == records && ! -x "$BIN/bench-prefill" ]]; then
    for t in $(sweep_targets records); do
      [[ "$t" == passthrough ]] || SW_SKIP["records:$t"]="skipped: \`target/release/bench-prefill\` not found (BUILD=1)"
    done
  fi
  if [[ "$sweep" == records ]]; then
    local others=()
    for t in $SWEEP_TARGETS; do
      in_list "$t" "$(sweep_targets records)" || others+=("$t")
    done
    ((${#others[@]} == 0)) || log "sweep records: no store to pre-fill in ${others[*]}; not measured"
  fi
  for t in $(sweep_targets "$sweep"); do
    [[ -z "${SW_SKIP[$sweep:$t]:-}" ]] || continue
    for x in $(sweep_xs "$sweep"); do
      log "sweep $sweep: $t at $x"
      if [[ "$sweep" == records ]]; then
        records_point "$t" "$x" && continue
      elif launch "$t"; then
        sweep_point "$sweep" "$t" "$x"
        finish
        continue
      fi
      SW_SKIP["$sweep:$t"]="$LAUNCH_WHY"
      SW_SKIP_AT["$sweep:$t"]="$x"
      case "$LAUNCH_FAILED" in
        1) START_FAILED+=("$t") ;;
        2) PREFILL_FAILED+=("$t") ;;
      esac
      break
    done
  done
}

log "starting bench-upstream on $UP_URL"
start upstream "$UP_PORT" "$BIN/bench-upstream" --listen "127.0.0.1:$UP_PORT" \
  || die "bench-upstream did not start"
UP_PID="$START_PID"
PROXY_PID=""
TLS_UP_PID=""
if [[ " $TARGETS " == *"-https-upstream "* ]] || { [[ -n "$SWEEP" ]] && [[ " $SWEEP_TARGETS " == *"-https-upstream "* ]]; }; then
  log "starting bench-upstream over TLS on $TLS_UP_URL"
  start upstream-tls "$TLS_UP_PORT" "$BIN/bench-upstream" --listen "127.0.0.1:$TLS_UP_PORT" \
    --tls-cert "$TLS_DIR/server.crt" --tls-key "$TLS_DIR/server.key" \
    || die "bench-upstream over TLS did not start"
  TLS_UP_PID="$START_PID"
fi

BUSY_BEFORE="$(cpu_busy_pct)"
log "CPU busy before measuring: $BUSY_BEFORE"

for t in "${ALL_TARGETS[@]}"; do
  if ((!MAIN)) || ! in_list "$t" "$TARGETS"; then
    SKIP[$t]="skipped: not in TARGETS"
    continue
  fi
  bench_target "$t"
done
for sweep in $SWEEP; do
  run_sweep "$sweep"
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
  local workload="$1" t k base nginx
  echo "| target | requests/s | p50 (ms) | p99 (ms) | vs passthrough | vs nginx | errors | upstream hits | other CPU |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for t in "${ALL_TARGETS[@]}"; do
    k="$workload:$t"
    if [[ -n "${SKIP[$t]:-}" || -n "${SKIP_ROW[$k]:-}" ]]; then
      echo "| ${LABEL[$t]} | ${SKIP[$t]:-${SKIP_ROW[$k]}} | | | | | | | |"
      continue
    fi
    base="${RPS[$workload:$(base_of "$t")]:-}"
    # nginx proxies plain HTTP: no reference for the TLS rows.
    nginx=""
    [[ "$(base_of "$t")" != passthrough ]] || nginx="${RPS[$workload:nginx]:-}"
    local errs="${ERRS[$k]}"
    if ((errs > 0)); then
      errs="${errs} (${ERRDETAIL[$k]})"
      if [[ "$workload" == unique ]]; then
        errs="**FAIL: $errs**"
        UNIQUE_FAILED+=("$t")
      fi
    fi
    echo "| ${LABEL[$t]} | $(fmt_int "${RPS[$k]}") | ${P50[$k]} | ${P99[$k]} | $(ratio "${RPS[$k]}" "$base") | $(ratio "${RPS[$k]}" "$nginx") | $errs | ${HITS[$k]} / ${REQS[$k]} | ${OTHER[$k]} |"
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

# ---- sweeps: CSV files, plots, report section
ratio_csv() { # ratio A B -> A/B with 2 decimals, or empty
  if [[ -n "${1:-}" && -n "${2:-}" ]]; then
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b }'
  fi
}
# fmt_x SWEEP X: a sweep's x as shown in its table.
fmt_x() {
  case "$1" in
    body) awk -v x="$2" 'BEGIN {
        if (x >= 1048576 && x % 1048576 == 0) printf "%d MiB", x / 1048576
        else if (x >= 1024 && x % 1024 == 0) printf "%d KiB", x / 1024
        else printf "%d B", x }' ;;
    records) LC_ALL=C awk -v x="$2" 'BEGIN { s = sprintf("%d", x); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s); print s }' ;;
    *) echo "$2" ;;
  esac
}
sweep_title() {
  case "$1" in
    connections) echo "connections: \`wrk -t1 -cN\`, N = $SWEEP_CONNECTIONS" ;;
    body) echo "body: request body of N bytes (unique.lua's \`BODY_SIZE\`), at \`-t$THREADS -c$CONNECTIONS\`" ;;
    records) echo "records: N completed, unexpired records stored before the run (\`bench-prefill\`), at \`-t$THREADS -c$CONNECTIONS\`" ;;
  esac
}
sweep_x_name() {
  case "$1" in connections) echo connections ;; body) echo "body" ;; records) echo "records stored" ;; esac
}

SWEEP_CSVS=()
write_sweep_csv() {
  local sweep="$1" t x k base file="$SWEEP_OUT/$1.csv"
  {
    echo "sweep,target,x,requests_per_s,p50_ms,p99_ms,errors,passthrough_requests_per_s_at_same_x,ratio"
    for t in $(sweep_targets "$sweep"); do
      for x in $(sweep_xs "$sweep"); do
        k="sweep:$sweep:$t:$x"
        [[ -n "${RPS[$k]:-}" ]] || continue
        base="${RPS[sweep:$sweep:passthrough:$x]:-}"
        echo "$sweep,$t,$x,${RPS[$k]},${P50[$k]},${P99[$k]},${ERRS[$k]},$base,$(ratio_csv "${RPS[$k]}" "$base")"
      done
    done
  } >"$file"
  SWEEP_CSVS+=("$file")
  log "wrote $file"
}

PLOTTED=0
if ((${#SWEEPS_RUN[@]} > 0)); then
  mkdir -p "$SWEEP_OUT"
  for sweep in "${SWEEPS_RUN[@]}"; do
    write_sweep_csv "$sweep"
  done
  if [[ -x "$BIN/bench-plot" ]]; then
    if RUST_LIB_BACKTRACE=0 "$BIN/bench-plot" --out "$SWEEP_OUT" "${SWEEP_CSVS[@]}" >&2; then
      PLOTTED=1
    else
      log "warning: bench-plot failed; the sweeps have no charts"
    fi
  else
    log "warning: $BIN/bench-plot not found (BUILD=1 builds it); the sweeps have no charts"
  fi
fi

# sweep_report: the markdown of the sweeps that ran (nothing if none).
sweep_report() {
  ((${#SWEEPS_RUN[@]} > 0)) || return 0
  local sweep t x k base errs fill rel csvs="" f
  for f in "${SWEEP_CSVS[@]}"; do csvs+="${csvs:+, }\`$f\`"; done
  rel="$(realpath -m --relative-to="$(dirname "$OUT")" "$SWEEP_OUT" 2>/dev/null || echo "$SWEEP_OUT")"
  echo
  echo "### Sweeps: how cost grows"
  echo
  echo "The \`unique\` workload only. Each point runs on a freshly started target with a fresh store,"
  echo "after an unrecorded $SWEEP_WARMUP warm-up at the same settings, measured for $SWEEP_DURATION."
  echo "**vs passthrough**: requests/s divided by the passthrough's at the same x, in this run."
  echo "Errors under load are reported, not failures. Data: $csvs."
  for sweep in "${SWEEPS_RUN[@]}"; do
    echo
    echo "#### $(sweep_title "$sweep")"
    echo
    if [[ "$sweep" == records ]]; then
      echo "| target | $(sweep_x_name "$sweep") | requests/s | p50 (ms) | p99 (ms) | vs passthrough | errors | pre-fill | other CPU |"
      echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    else
      echo "| target | $(sweep_x_name "$sweep") | requests/s | p50 (ms) | p99 (ms) | vs passthrough | errors | other CPU |"
      echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    fi
    for t in $(sweep_targets "$sweep"); do
      for x in $(sweep_xs "$sweep"); do
        k="sweep:$sweep:$t:$x"
        if [[ -z "${RPS[$k]:-}" ]]; then
          if [[ -n "${SW_SKIP[$sweep:$t]:-}" && "${SW_SKIP_AT[$sweep:$t]}" == "$x" ]]; then
            echo "| ${LABEL[$t]} | $(fmt_x "$sweep" "$x") | ${SW_SKIP[$sweep:$t]} | | | | |$([[ "$sweep" != records ]] || echo ' |') |"
          elif [[ -n "${SKIP_ROW[$k]:-}" ]]; then
            echo "| ${LABEL[$t]} | $(fmt_x "$sweep" "$x") | ${SKIP_ROW[$k]} | | | | |$([[ "$sweep" != records ]] || echo ' |') |"
          fi
          continue
        fi
        base="${RPS[sweep:$sweep:passthrough:$x]:-}"
        errs="${ERRS[$k]}"
        ((errs == 0)) || errs="$errs (${ERRDETAIL[$k]})"
        fill=""
        [[ "$sweep" != records ]] || fill=" ${SW_FILL[$k]:-–} |"
        [[ "$t" != passthrough ]] || fill="${fill:+ – |}"
        echo "| ${LABEL[$t]} | $(fmt_x "$sweep" "$x") | $(fmt_int "${RPS[$k]}") | ${P50[$k]} | ${P99[$k]} | $(ratio "${RPS[$k]}" "$base") | $errs |$fill ${OTHER[$k]} |"
      done
    done
    if ((PLOTTED)); then
      echo
      echo "![$sweep: requests/s]($rel/$sweep-throughput.png)"
      echo "![$sweep: p99 latency]($rel/$sweep-p99.png)"
    fi
  done
  echo
  echo "Sweep commands: each target as in the main tables; \`wrk -t$THREADS -c$CONNECTIONS -d$SWEEP_DURATION --timeout 5s -s bench/unique.lua http://127.0.0.1:PORT/\`,"
  echo "with \`-t1 -cN\` (connections) or \`BODY_SIZE=N\` in its environment (body)."
  if in_list records "${SWEEPS_RUN[*]}"; then
    echo "The records sweep starts the gateway once on the fresh store (it creates the schema), stops it, runs"
    echo "\`bench-prefill {sqlite --path FILE | postgres --url $BENCH_POSTGRES_URL --schema idem_bench_\$NONCE} --records N\`, and starts the gateway again."
  fi
}

# kept_sweeps: when this run measured no sweeps, the sweeps section of the
# report in $OUT as it is, so a run of the main tables alone does not erase
# them; marked with the date and commit of the run that measured them.
kept_sweeps() {
  ((${#SWEEPS_RUN[@]} == 0)) && [[ -f "$OUT" ]] || return 0
  awk '
    /^<!-- bench:begin -->/ { inside = 1; next }
    /^<!-- bench:end -->/   { inside = 0; next }
    !inside                 { next }
    /^- Date: / && date == ""     { date = substr($0, 9) }
    /^- Commit: / && commit == "" { commit = substr($0, 11) }
    /^### Sweeps: how cost grows/ { sweeps = 1 }
    sweeps                  { lines[n++] = $0; if ($0 ~ /^Kept from the run of /) kept = 1 }
    END {
      if (n == 0) exit
      print ""
      print lines[0]
      print ""
      if (!kept) {
        print "Kept from the run of " date " (commit " commit "): the run above measured no sweeps (`SWEEP=\"connections body records\"` measures them)."
        print ""
      }
      for (i = 1; i < n; i++) if (!(i == 1 && lines[i] == "")) print lines[i]
    }
  ' "$OUT"
}

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
  if ((MAIN)); then
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
    echo "- **vs nginx**: requests/s divided by nginx's in the same workload and run (– when nginx was not measured, and for the TLS rows: nginx proxies plain HTTP here)."
    echo "- **errors**: responses with HTTP status >= 400 plus socket errors (connect/read/write/timeout), as counted by wrk."
    echo "  In \`unique\` every key is new, so any error is a failure."
    echo "- **upstream hits**: POSTs that reached bench-upstream during the measured run / requests wrk completed"
    echo "  (hits can exceed requests by up to the connection count: requests still in flight when wrk stops are not counted)."
    echo "  A proxy that replays should show almost no upstream hits in \`replay\`."
    echo "- **other CPU**: share of the machine's CPU used by programs outside this benchmark during the run"
    echo "  (the PostgreSQL and Redis servers count as part of the benchmark for their targets)."
    echo "  About 0-5% on an idle machine; above 10% (the script warns) something else competed for the cores and that row is unreliable."
    echo
  else
    echo "The main tables were not measured in this run (\`TARGETS=none\`)."
    echo
  fi
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
  sweep_report
  kept_sweeps
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
if ((${#PREFILL_FAILED[@]} > 0)); then
  log "FAIL: the records sweep could not pre-fill: ${PREFILL_FAILED[*]}"
  status=1
fi
if ((${#UNIQUE_FAILED[@]} > 0)); then
  log "FAIL: the unique workload had errors on: ${UNIQUE_FAILED[*]}"
  status=1
fi
exit "$status"
