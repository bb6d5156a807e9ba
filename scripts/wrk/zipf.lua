-- wrk script: GET /items/<id>, ids drawn from a Zipf distribution over the ids of $KEYS_FILE
-- (one id a line): the id on line r is asked with probability proportional to 1 / r^s,
-- s = $ZIPF_S (default 1). The file's order is the data's, random for uuid4 ids, so hot ids
-- are spread over the key space. Sampling: inverse of the exact cumulative distribution
-- (a binary search over n sums; n = 1M costs 8 MB and 20 comparisons a request).
local keys = {}
for line in io.lines(os.getenv("KEYS_FILE")) do keys[#keys + 1] = line end
local n, s = #keys, tonumber(os.getenv("ZIPF_S") or "1")
local cdf, total = {}, 0
for r = 1, n do
  total = total + r ^ -s
  cdf[r] = total
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  math.randomseed(os.time() * 100 + id)
end

local function rank()
  local u, lo, hi = math.random() * total, 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end

request = function()
  return wrk.format("GET", "/items/" .. keys[rank()])
end
