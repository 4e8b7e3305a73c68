-- wrk script: POST /charges where every request carries a new Idempotency-Key.
--
-- Keys are "u-<nonce>-<thread>-<counter>": the nonce (env IDEM_BENCH_NONCE,
-- else os.time()) separates runs, the thread id (assigned in setup) separates
-- wrk threads, and the counter separates requests within a thread.
--
-- Env NO_KEY=1 sends the same requests without a key: the gateway's
-- pass-through path, for comparing it with the keyed one (bench/README.md).
--
-- Env BODY_SIZE (bytes, at least 40) replaces the body with
-- {"amount":100,"currency":"eur","pad":"xx…x"} padded to exactly that size,
-- built once per thread in init(); unset or empty keeps the body below.
--
-- done() prints one machine-readable line starting with "IDEM_BENCH " that
-- bench/run.sh parses.

local body = '{"amount":100,"currency":"eur"}'
-- A tenant credential: keyed requests without one are refused (401).
local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer bench" }
local counter = 0
local prefix = "u-"
local send_key = true

local next_tid = 0

-- Runs in the main Lua state, once per wrk thread, before init().
function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
end

-- Runs in each thread's own Lua state.
function init(args)
  local nonce = os.getenv("IDEM_BENCH_NONCE") or tostring(os.time())
  prefix = "u-" .. nonce .. "-" .. tostring(tid or 0) .. "-"
  send_key = os.getenv("NO_KEY") ~= "1"
  local size = os.getenv("BODY_SIZE")
  if size ~= nil and size ~= "" then
    local n = tonumber(size)
    local head, tail = '{"amount":100,"currency":"eur","pad":"', '"}'
    if n == nil or n ~= math.floor(n) or n < #head + #tail then
      error("BODY_SIZE must be a whole number of bytes >= " .. (#head + #tail) .. ", got " .. size)
    end
    body = head .. string.rep("x", n - #head - #tail) .. tail
  end
end

function request()
  counter = counter + 1
  if send_key then
    headers["Idempotency-Key"] = prefix .. counter
  end
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
