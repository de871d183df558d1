-- wrk script for `make soak`: cycles through pre-minted request kinds (one a line in the file
-- given as the first script argument) and counts response statuses per thread.
--
--   wrk -t2 -c16 -d60s -s soak/mix.lua http://127.0.0.1:PORT -- KINDS_FILE
--
-- KINDS_FILE lines: kind|METHOD|path|Header-Name: value|Header-Name: value ...
-- done() prints one machine-readable line:
--   SOAK_WRK requests=N duration_us=N errors_connect=N ... p50_us=N p99_us=N statuses=200:N,401:N,...

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local requests = {}
local index = 0
statuses = {}

local function split(text, sep)
  local out, start = {}, 1
  while true do
    local i = string.find(text, sep, start, true)
    if not i then
      table.insert(out, string.sub(text, start))
      return out
    end
    table.insert(out, string.sub(text, start, i - 1))
    start = i + #sep
  end
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  for line in file:lines() do
    if line ~= "" then
      local fields = split(line, "|")
      local headers = {}
      for i = 4, #fields do
        local colon = string.find(fields[i], ":", 1, true)
        headers[string.sub(fields[i], 1, colon - 1)] = string.gsub(string.sub(fields[i], colon + 1), "^%s+", "")
      end
      table.insert(requests, wrk.format(fields[2], fields[3], headers, nil))
    end
  end
  file:close()
  assert(#requests > 0, "no request kinds in " .. args[1])
  -- Threads start at different kinds so the mix is even across threads from the start.
  index = math.random(0, #requests - 1)
end

function request()
  index = index + 1
  return requests[(index % #requests) + 1]
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests_)
  local total = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    for status, n in pairs(counts) do
      total[status] = (total[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do
    table.insert(parts, status .. ":" .. n)
  end
  table.sort(parts)
  local e = summary.errors
  io.write(string.format(
    "SOAK_WRK requests=%d duration_us=%d errors_connect=%d errors_read=%d errors_write=%d "
      .. "errors_status=%d errors_timeout=%d p50_us=%d p99_us=%d max_us=%d statuses=%s\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, table.concat(parts, ",")))
end
