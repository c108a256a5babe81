-- wrk script for bench/run: `opportunity.get` of random seeded opportunities.
--
-- Environment: BENCH_TOKEN, BENCH_RUN (see common.lua), BENCH_LUA_DIR (this folder), BENCH_IDS
-- (a file of ids, one a line; each request picks one at random).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local ids

function init(args)
  seed_random()
  ids = read_lines(os.getenv("BENCH_IDS"), 1, math.huge)
  if #ids == 0 then error("BENCH_IDS names no id") end
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"jsonrpc":"2.0","id":' .. counter ..
    ',"method":"opportunity.get","params":{"id":"' .. ids[math.random(#ids)] .. '"}}')
end
