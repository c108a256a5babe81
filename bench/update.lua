-- wrk script for bench/run: `opportunity.update` of distinct opportunities, each at version 1:
-- every request changes the title of an opportunity no request changed before, so every one
-- writes (a new version and a change-feed event) and none meets a version conflict.
--
-- Environment: BENCH_TOKEN, BENCH_RUN (see common.lua), BENCH_LUA_DIR (this folder), BENCH_IDS
-- (ids of seeded opportunities at version 1, one a line), BENCH_FIRST and BENCH_COUNT (the lines
-- this run may use: 1-based first line, how many), BENCH_THREADS (wrk's -t). Each thread walks
-- its own slice of those lines, one id per request; a thread that runs out starts its slice
-- again, and those requests fail with version_mismatch (counted as errors: seed more rows).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local ids

function init(args)
  seed_random()
  local first = tonumber(os.getenv("BENCH_FIRST"))
  local count = tonumber(os.getenv("BENCH_COUNT"))
  local nthreads = tonumber(os.getenv("BENCH_THREADS"))
  local per = math.floor(count / nthreads)
  local from = first + (thread_id - 1) * per
  ids = read_lines(os.getenv("BENCH_IDS"), from, from + per - 1)
  if #ids == 0 then error("no ids for thread " .. thread_id) end
end

function request()
  counter = counter + 1
  local id = ids[(counter - 1) % #ids + 1]
  return wrk.format(nil, nil, nil, '{"jsonrpc":"2.0","id":' .. counter ..
    ',"method":"opportunity.update","params":{"id":"' .. id ..
    '","expectedVersion":1,"title":"Bench update ' .. run_tag .. '-' .. thread_id .. '-' .. counter .. '"}}')
end
