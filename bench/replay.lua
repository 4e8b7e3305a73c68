-- wrk script: POST /charges with Idempotency-Keys cycling over a small fixed
-- set, so that once the keys are primed (bench/run.sh sends each key once
-- before measuring) almost every request is a replay.
--
-- Keys are "r-<nonce>-<i>" for i in 0 .. IDEM_BENCH_REPLAY_KEYS-1 (default
-- 100); the nonce comes from env IDEM_BENCH_NONCE (else os.time()), and must
-- match the one used for priming. Every thread cycles over the same set,
-- starting at a different offset.
--
-- done() prints one machine-readable line starting with "IDEM_BENCH " that
-- bench/run.sh parses.

local body = '{"amount":100,"currency":"eur"}'
-- A tenant credential: keyed requests without one are refused (401).
local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer bench" }
local keys = {}
local nkeys = 100
local i = 0

local next_tid = 0

-- Runs in the main Lua state, once per wrk thread, before init().
function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
end

-- Runs in each thread's own Lua state.
function init(args)
  local nonce = os.getenv("IDEM_BENCH_NONCE") or tostring(os.time())
  nkeys = tonumber(os.getenv("IDEM_BENCH_REPLAY_KEYS") or "100")
  for k = 0, nkeys - 1 do
    keys[k] = "r-" .. nonce .. "-" .. k
  end
  i = ((tid or 0) * 37) % nkeys
end

function request()
  headers["Idempotency-Key"] = keys[i]
  i = (i + 1) % nkeys
  return wrk.format("POST", "/charges", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "IDEM_BENCH requests=%d duration_s=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f " ..
    "mean_ms=%.3f max_ms=%.3f status_errors=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.mean / 1000, latency.max / 1000,
    e.status, e.connect, e.read, e.write, e.timeout))
end
