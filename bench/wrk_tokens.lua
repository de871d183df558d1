-- wrk script for `make bench`: GET PATH with `Authorization: Bearer <token>`, one token per
-- request, read lazily from a file (one token a line), starting at a byte offset and wrapping
-- at the end. Token file "-" sends no Authorization header at all.
--
--   wrk -t1 -c4 -d4s -s bench/wrk_tokens.lua http://127.0.0.1:PORT -- TOKENS PATH BYTE_OFFSET
--
-- Reading lazily keeps memory flat for a million-token file; the cost per request (one
-- f:read) is the same for every variant, so it cancels out of the ratios.
-- done() prints one machine-readable line: BENCH_JSON {...}.

local file, path, offset = nil, "/mcp", 0
local wrapped = 0

function init(args)
  local name = args[1] or "-"
  path = args[2] or "/mcp"
  offset = tonumber(args[3] or "0") or 0
  if name ~= "-" then
    file = assert(io.open(name, "rb"))
    file:seek("set", offset)
  end
end

function request()
  if file == nil then
    return wrk.format("GET", path)
  end
  local token = file:read("*l")
  if token == nil or token == "" then
    wrapped = wrapped + 1
    file:seek("set", 0)
    token = file:read("*l")
  end
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors_connect":%d,"errors_read":%d,'
      .. '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"p50_us":%d,"p90_us":%d,'
      .. '"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
