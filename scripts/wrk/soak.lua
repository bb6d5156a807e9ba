-- wrk script for scripts/soak.py: GET random existing ids (from $PAIRS_FILE, "<id> <value>"
-- lines) and random missing ids ($MISSING_SHARE of requests), and check every answer:
-- 200 with exactly the file's value for an existing id, 404 naming a missing one.
-- Values are compared as JSON text: make_data.py values need no escaping.
local expected, keys = {}, {}
for line in io.lines(os.getenv("PAIRS_FILE")) do
  local id = line:sub(1, 36)
  expected[id] = line:sub(38)
  keys[#keys + 1] = id
end
local missing_share = tonumber(os.getenv("MISSING_SHARE") or "0.2")

local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
  thread:set("id", #threads)
end

function init(args)
  math.randomseed(os.time() * 100 + id)
  checked, wrong, bad_status = 0, 0, 0
end

request = function()
  local key
  if math.random() < missing_share then
    key = string.format("%08x-0000-4000-8000-0000%08x", math.random(0, 2147483647), math.random(0, 2147483647))
  else
    key = keys[math.random(#keys)]
  end
  return wrk.format("GET", "/items/" .. key)
end

response = function(status, headers, body)
  checked = checked + 1
  if status == 200 then
    local key, value = body:match('^{"id":"([%x%-]+)","value":"(.*)"}$')
    if key == nil or expected[key] ~= value then wrong = wrong + 1 end
  elseif status == 404 then
    local key = body:match("no item with id ([%x%-]+)")
    if key == nil or expected[key] ~= nil then wrong = wrong + 1 end
  else
    bad_status = bad_status + 1
  end
end

done = function(summary, latency, requests)
  local c, w, b = 0, 0, 0
  for _, thread in ipairs(threads) do
    c = c + thread:get("checked")
    w = w + thread:get("wrong")
    b = b + thread:get("bad_status")
  end
  local e = summary.errors
  io.write(string.format(
    "SOAK requests=%d checked=%d wrong=%d bad_status=%d socket_errors=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, c, w, b, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
