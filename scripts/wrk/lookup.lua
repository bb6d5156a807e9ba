-- wrk script: random ids from the file named by $KEYS_FILE (one id a line).
-- Without $BATCH: GET /items/<id>. With BATCH=N: POST /items/batch with N ids, from
-- $BODIES (default 1000) requests of random ids made before the run starts: making 1000
-- ids a request while it runs cost wrk as much CPU as the server, on the same cores.
local keys = {}
for line in io.lines(os.getenv("KEYS_FILE")) do keys[#keys + 1] = line end
local batch = tonumber(os.getenv("BATCH") or "0")
local bodies = tonumber(os.getenv("BODIES") or "1000")
local headers = {["Content-Type"] = "application/json"}
local requests = {}

-- setup() runs in the main state once per thread; init() in each thread's own state.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  math.randomseed(os.time() * 100 + id)
  for r = 1, (batch > 0 and bodies or 0) do
    local ids = {}
    for i = 1, batch do ids[i] = '"' .. keys[math.random(#keys)] .. '"' end
    requests[r] = wrk.format("POST", "/items/batch", headers, '{"ids":[' .. table.concat(ids, ",") .. ']}')
  end
end

request = function()
  if batch == 0 then
    return wrk.format("GET", "/items/" .. keys[math.random(#keys)])
  end
  return requests[math.random(#requests)]
end
