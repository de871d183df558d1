-- wrk script for `make bench`: GET PATH with `Authorization: Bearer <token>`, one token per
-- request, read lazily from a file (one token a line), starting at a byte offset and wrapping
-- at the end. Token file "-" sends no Authorization header at all.
--
--   wrk -t1 -c4 -d4s -s bench/wrk_tokens.lua http://127.0.0.1:PORT -- TOKENS PATH BYTE_OFFSET \
--       [METHOD [BODY [HEADER ...]]]
--
-- Optional: METHOD instead of GET, BODY sent with every request ("-": none; wrk adds its
-- Content-Length), and each HEADER ("Name: value") added to every request (the tools_list
-- scenario: POST, a JSON-RPC body, content-type and accept). Without them, GET as before.
--
-- Reading lazily keeps memory flat for a million-token file; the cost per request (one
-- f:read) is the same for every variant, so it cancels out of the ratios.
-- done() prints one machine-readable line: BENCH_JSON {...}.

local file, path, offset = nil, "/mcp", 0
local method, body, extra = "GET", nil, nil
local wrapped = 0

function init(args)
  local name = args[1] or "-"
  path = args[2] or "/mcp"
  offset = tonumber(args[3] or "0") or 0
  method = args[4] or "GET"
  if args[5] ~= nil and args[5] ~= "-" then
    body = args[5]
  end
  for i = 6, #args do
    local k, v = args[i]:match("^([^:]+):%s*(.*)$")
    assert(k, "header argument must be 'Name: value': " .. args[i])
    extra = extra or {}
    extra[k] = v
  end
  if name ~= "-" then
    file = assert(io.open(name, "rb"))
    file:seek("set", offset)
  end
end

-- The request's headers: the extra ones (copied: wrk.format adds Host and Content-Length to
-- the table it is given), plus `authorization` when there is a token.
local function headers(token)
  if extra == nil then
    return token and { ["Authorization"] = "Bearer " .. token } or nil
  end
  local h = {}
  for k, v in pairs(extra) do
    h[k] = v
  end
  if token then
    h["Authorization"] = "Bearer " .. token
  end
  return h
end

function request()
  if file == nil then
    return wrk.format(method, path, headers(nil), body)
  end
  local token = file:read("*l")
  if token == nil or token == "" then
    wrapped = wrapped + 1
    file:seek("set", 0)
    token = file:read("*l")
  end
  return wrk.format(method, path, headers(token), body)
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
