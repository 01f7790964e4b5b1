-- wrk script: Mozarto-shaped requests, each with a random seeded token and its user's id.
--   wrk -t2 -c32 -d8s --latency -s bench/wrk.lua URL -- TOKEN_FILE verify|livez|floor keep-alive|close
-- TOKEN_FILE has one "token<TAB>userId" line per session. "livez" sends the same headers to
-- GET /livez (the ceiling: the same stack answering a constant), so wrk does the same work for both;
-- "floor" sends verify's request to bench/floor.py (the least one round trip to Redis costs).
-- done() prints one line starting "WRK " that bench/run.py reads.

local tokens, users, count = {}, {}, 0
local target, close = "verify", false

function setup(thread)
  thread_number = (thread_number or 0) + 1
  thread:set("thread_number", thread_number)
end

function init(args)
  local path = args[1] or error("usage: wrk ... -s wrk.lua URL -- TOKEN_FILE [verify|livez|floor] [keep-alive|close]")
  target = args[2] or "verify"
  close = args[3] == "close"
  for line in io.lines(path) do
    local token, user = line:match("^([^\t]+)\t(.*)$")
    count = count + 1
    tokens[count], users[count] = token, user
  end
  math.randomseed(os.time() * 100 + (thread_number or 0))
end

function request()
  local i = math.random(count)
  local headers = {
    ["Authorization"] = "Bearer " .. tokens[i],
    ["Accept"] = "application/json",
  }
  if close then headers["Connection"] = "close" end
  if target == "livez" then
    return wrk.format("GET", "/livez", headers)
  end
  headers["Content-Type"] = "application/json"
  return wrk.format("POST", "/api/v1/mozarto/verify-user", headers, '{"userId": "' .. users[i] .. '"}')
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
