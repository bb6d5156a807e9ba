-- wrk script: POST /items/batch with $BATCH random ids from $KEYS_FILE per request.
local keys = {}
for line in io.lines(os.getenv("KEYS_FILE")) do keys[#keys + 1] = line end
local size = tonumber(os.getenv("BATCH") or "100")
local headers = {["Content-Type"] = "application/json"}

-- setup() runs in the main state once per thread; init() in each thread's own state.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  math.randomseed(os.time() * 100 + id)
end

request = function()
  local ids = {}
  for i = 1, size do ids[i] = '"' .. keys[math.random(#keys)] .. '"' end
  return wrk.format("POST", "/items/batch", headers, '{"ids":[' .. table.concat(ids, ",") .. ']}')
end
