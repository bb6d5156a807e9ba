-- wrk script: random ids from the file named by $KEYS_FILE (one id a line).
-- Without $BATCH: GET /items/<id>. With BATCH=N: POST /items/batch with N ids.
local keys = {}
for line in io.lines(os.getenv("KEYS_FILE")) do keys[#keys + 1] = line end
local batch = tonumber(os.getenv("BATCH") or "0")
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
  if batch == 0 then
    return wrk.format("GET", "/items/" .. keys[math.random(#keys)])
  end
  local ids = {}
  for i = 1, batch do ids[i] = '"' .. keys[math.random(#keys)] .. '"' end
  return wrk.format("POST", "/items/batch", headers, '{"ids":[' .. table.concat(ids, ",") .. ']}')
end
