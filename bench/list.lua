-- wrk script for bench/run: one `opportunity.list` page, the same request every time (a first
-- page, or a deep page when the params carry a cursor that bench/run obtained beforehand).
--
-- Environment: BENCH_TOKEN, BENCH_RUN (see common.lua), BENCH_LUA_DIR (this folder),
-- BENCH_LIST_PARAMS (the params object, JSON).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local params = os.getenv("BENCH_LIST_PARAMS")
if params == nil or params == "" then error("BENCH_LIST_PARAMS is not set") end
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"opportunity.list","params":' .. params .. '}'
