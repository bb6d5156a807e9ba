-- wrk script: GET /items/<id> for random ids from the file named by $KEYS_FILE
-- (one id a line). Each wrk thread loads the list and seeds its own generator.
local keys = {}
for line in io.lines(os.getenv("KEYS_FILE")) do keys[#keys + 1] = line end

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
  return wrk.format("GET", "/items/" .. keys[math.random(#keys)])
end
