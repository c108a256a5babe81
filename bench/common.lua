-- Shared by bench/get.lua, bench/list.lua and bench/update.lua (loaded with dofile): the bearer
-- token, the error counters and the machine-readable summary line of bench/run (`WRK ...`), as in
-- bench/create.lua.
--
-- Environment: BENCH_TOKEN (bearer token, required), BENCH_RUN (a tag, different for every wrk
-- run: seeds the random choices and keeps written titles distinct).

local token = os.getenv("BENCH_TOKEN")
if token == nil or token == "" then
  error("BENCH_TOKEN is not set")
end
run_tag = os.getenv("BENCH_RUN") or tostring(os.time())

wrk.method = "POST"
wrk.path = "/"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
  table.insert(threads, thread)
end

-- thread state (globals, so that `done` can read them with thread:get)
counter = 0
non2xx, rpc_errors, first_error = 0, 0, ""

function seed_random()
  local h = 0
  for i = 1, #run_tag do
    h = (h * 31 + run_tag:byte(i)) % 2147483647
  end
  math.randomseed((h + thread_id * 7919) % 2147483647)
end

-- The lines of a file, from `first` to `last` (1-based, inclusive).
function read_lines(path, first, last)
  local out, n = {}, 0
  for line in io.lines(path) do
    n = n + 1
    if n > last then break end
    if n >= first and line ~= "" then out[#out + 1] = line end
  end
  return out
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_error == "" then first_error = status .. " " .. (body or ""):sub(1, 300) end
  elseif body:find('"error":', 1, true) then
    rpc_errors = rpc_errors + 1
    if first_error == "" then first_error = body:sub(1, 300) end
  end
end

function done(summary, latency, requests)
  local bad_status, rpc, example = 0, 0, ""
  for _, t in ipairs(threads) do
    bad_status = bad_status + t:get("non2xx")
    rpc = rpc + t:get("rpc_errors")
    local e = t:get("first_error")
    if example == "" and e ~= nil then example = e end
  end
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "WRK requests=%d duration_s=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d non2xx=%d rpc_errors=%d " ..
    "socket_errors=%d connect=%d read=%d write=%d timeout=%d bytes=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    bad_status, rpc, e.connect + e.read + e.write + e.timeout, e.connect, e.read, e.write, e.timeout, summary.bytes))
  if example ~= "" then
    io.write("WRK_FIRST_ERROR " .. example:gsub("[\r\n]", " ") .. "\n")
  end
end
