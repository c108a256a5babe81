-- wrk script for bench/run: `opportunity.create` over HTTP keep-alive with varied, valid bodies.
--
-- Environment: BENCH_TOKEN (bearer token, required), BENCH_RUN (a tag, different for every wrk
-- run, that keeps titles distinct across runs and seeds the random bodies). Every request has a distinct title and JSON-RPC id; the other fields come from a
-- pool of 512 bodies per thread with mixed enums, optional fields, money, dates and solution
-- families. Errors are counted in the `response` hook: non-2xx statuses, and 2xx answers that
-- carry a JSON-RPC error. `done` prints one machine-readable line starting with `WRK `.

local token = os.getenv("BENCH_TOKEN")
if token == nil or token == "" then
  error("BENCH_TOKEN is not set")
end
local run_tag = os.getenv("BENCH_RUN") or tostring(os.time())

wrk.method = "POST"
wrk.path = "/"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token

-- ---------------------------------------------------------------------------------------------
-- main state: one table per thread, to sum the counters in `done`

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
  table.insert(threads, thread)
end

-- ---------------------------------------------------------------------------------------------
-- thread state

local TITLES = {
  "Chiller retrofit, Building C", "Access control, east wing", "Fire alarm upgrade \226\128\147 Terminal 2",
  "BMS integration for the new lab", "Service agreement HVAC controls 2027",
  "K\195\164ltezentrale Erweiterung Halle 4", "CCTV and intrusion, distribution centre",
  "Smoke extraction, underground car park", "VAV box replacement, floors 3-9",
  "Badge readers for the data hall",
}
local STAGES = { "lead", "lead", "qualified", "survey", "proposal", "negotiation", "won", "lost" }
local PIPELINES = { "new_construction", "retrofit", "service_agreement", "expansion", "other" }
local SOURCES = { "referral", "website", "cold_call", "existing_customer", "partner", "trade_show",
                  "portal_request", "other" }
local PRIORITIES = { "low", "medium", "high", "urgent" }
local LOST = { "price", "timing", "competitor", "scope_mismatch", "no_decision", "relationship", "other" }
local FAMILIES = { "HVAC controls", "Access control", "Fire alarm", "CCTV", "BMS", "Intrusion",
                   "Smoke control", "Energy metering" }
local OFFSETS = { "Z", "+00:00", "+01:00", "+02:00", "-05:00", "+05:30", "-08:00" }
local TEXT = "Replace the pneumatic controls of three air handlers with DDC, integrate the chillers into the "
          .. "existing BMS over BACnet/IP, and commission the new sequences before the cooling season."

local function pick(list)
  return list[math.random(#list)]
end

local function chance(p)
  return math.random() < p
end

local function uuid()
  -- a random version-4 UUID, mixed case as callers may send them
  local t = {}
  for i = 1, 32 do
    t[i] = string.format("%x", math.random(0, 15))
  end
  t[13] = "4"
  t[17] = string.format("%x", 8 + math.random(0, 3))
  local s = table.concat(t)
  s = s:sub(1, 8) .. "-" .. s:sub(9, 12) .. "-" .. s:sub(13, 16) .. "-" .. s:sub(17, 20) .. "-" .. s:sub(21, 32)
  if chance(0.1) then
    s = s:upper()
  end
  return s
end

local function instant()
  -- RFC 3339 with an offset, 2026-2028, sometimes with a fraction
  local s = string.format("%04d-%02d-%02dT%02d:%02d:%02d", math.random(2026, 2028), math.random(1, 12),
    math.random(1, 28), math.random(0, 23), math.random(0, 59), math.random(0, 59))
  if chance(0.2) then
    s = s .. string.format(".%03d", math.random(0, 999))
  end
  return s .. pick(OFFSETS)
end

local function money()
  local r = math.random()
  if r < 0.3 then
    return tostring(math.random(1000, 2000000))                                 -- whole
  elseif r < 0.8 then
    return string.format("%d.%02d", math.random(0, 5000000), math.random(1, 99)) -- cents
  else
    return string.format("%d.%d", math.random(0, 900000), math.random(1, 9))     -- one place
  end
end

-- One body pool entry: the JSON before the id, between id and title serial, and after it.
local function body_parts()
  local stage = pick(STAGES)
  local f = {}
  local function add(name, json)
    f[#f + 1] = '"' .. name .. '":' .. json
  end
  add("customerId", '"' .. uuid() .. '"')
  if chance(0.5) then add("primaryContactId", '"' .. uuid() .. '"') end
  if chance(0.3) then add("siteId", '"' .. uuid() .. '"') end
  if not (stage == "lead" and chance(0.5)) then add("stage", '"' .. stage .. '"') end
  add("pipelineType", '"' .. pick(PIPELINES) .. '"')
  if chance(0.6) then add("source", '"' .. pick(SOURCES) .. '"') end
  if chance(0.6) then add("estimatedValue", money()) end
  if chance(0.6) then add("expectedCloseDate", '"' .. instant() .. '"') end
  if chance(0.5) then
    local p = math.random(0, 100)
    if stage == "won" then p = 100 elseif stage == "lost" then p = 0 end
    add("probability", tostring(p))
  end
  if chance(0.7) then
    local n, start, items = math.random(0, 3), math.random(#FAMILIES), {}
    for i = 1, n do
      items[i] = '"' .. FAMILIES[(start + i - 2) % #FAMILIES + 1] .. '"'
    end
    add("solutionFamilies", "[" .. table.concat(items, ",") .. "]")
  end
  if chance(0.5) then add("scopeSummary", '"' .. TEXT .. '"') end
  if chance(0.2) then add("competitorNotes", '"Incumbent integrator, strong on price"') end
  if chance(0.4) then
    add("nextStepDescription", '"Site survey with the facility manager"')
    add("nextStepDate", '"' .. instant() .. '"')
  end
  if chance(0.3) then add("bidDueDate", '"' .. instant() .. '"') end
  if chance(0.5) then add("budgetConfirmed", chance(0.5) and "true" or "false") end
  if chance(0.6) then add("priority", '"' .. pick(PRIORITIES) .. '"') end
  if stage == "lost" and chance(0.7) then add("lostReasonCategory", '"' .. pick(LOST) .. '"') end
  if chance(0.3) then add("technicalRequirements", '"BACnet/IP, EN 54 certified devices"') end
  if chance(0.1) then add("primaryContactId", "null") end
  if chance(0.3) then add("visibilityMode", chance(0.7) and '"workspace_local"' or '"shared"') end
  -- shuffle the field order a little, as different clients would
  for i = #f, 2, -1 do
    if chance(0.3) then
      local j = math.random(i)
      f[i], f[j] = f[j], f[i]
    end
  end
  -- drop a duplicate primaryContactId (the service refuses duplicate members)
  local seen, out = {}, {}
  for _, kv in ipairs(f) do
    local name = kv:match('^"(%w+)"')
    if not seen[name] then
      seen[name] = true
      out[#out + 1] = kv
    end
  end
  return {
    '{"jsonrpc":"2.0","id":',
    ',"method":"opportunity.create","params":{"title":"' .. pick(TITLES) .. ' #' .. run_tag .. "-" .. thread_id .. "-",
    '",' .. table.concat(out, ",") .. "}}",
  }
end

-- globals, so that `done` can read them with thread:get
local pool, counter = {}, 0
non2xx, rpc_errors, first_error = 0, 0, ""

function init(args)
  local h = 0
  for i = 1, #run_tag do
    h = (h * 31 + run_tag:byte(i)) % 2147483647
  end
  math.randomseed((h + thread_id * 7919) % 2147483647)
  for i = 1, 512 do
    pool[i] = body_parts()
  end
end

function request()
  counter = counter + 1
  local p = pool[counter % 512 + 1]
  return wrk.format(nil, nil, nil, p[1] .. counter .. p[2] .. counter .. p[3])
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

-- ---------------------------------------------------------------------------------------------
-- main state again: the summary

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
