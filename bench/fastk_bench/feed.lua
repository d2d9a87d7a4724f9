-- The `feed` workload's load generator (feeds.py): every request POSTs ONE 1m bar of
-- one kline series to FastK's single-series write, POST /v1/kline/{symbol}/1m/records.
--
--   wrk -t2 -c8 -d10s --latency -s feed.lua http://HOST:PORT -- N BASE_TS THREADS PREFIX
--
-- Series are named PREFIX..%04d (0 .. N-1). wrk thread t owns the series i with
-- i % THREADS == t and cycles through them with a counter c of its own: request c
-- writes series mine[c % #mine] at minute c // #mine, ts = BASE_TS + minute * 60000.
-- A series' next minute is asked #mine requests later, long after the previous one
-- was answered (a thread has at most its own connections in flight), so each series
-- sees strictly increasing minutes. The bar values are a pure function of (i, minute),
-- mirrored by feeds.bar() in Python, which reads the bars back and checks them.
-- done() prints each thread's counter (requests generated, FEED_THREAD tid count).
-- wrk 4.1 calls request() once on thread 0's state after init() to check the script,
-- and never sends that request: thread 0's counter 0 (series 0, minute 0 of the run)
-- is generated but not written, which the Python check allows for.

local threads = {}
local headers = {["Content-Type"] = "application/json"}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

function init(args)
   local n = tonumber(args[1])
   base = tonumber(args[2])
   local nt = tonumber(args[3])
   local prefix = args[4]
   mine = {}
   paths = {}
   for i = tid, n - 1, nt do
      mine[#mine + 1] = i
      paths[#paths + 1] = string.format("/v1/kline/%s%04d/1m/records", prefix, i)
   end
   per = #mine
   counter = 0
end

function request()
   if per == nil then
      -- older wrk versions check the script by calling request() in the main Lua
      -- state (no setup/init there); that request is never sent.
      return wrk.format("POST", "/", headers, "{}")
   end
   local j = counter % per
   local m = math.floor(counter / per)
   counter = counter + 1
   local i = mine[j + 1]
   local open = 100000 + i * 10 + (m % 100)
   local close = open + (m % 7) - 3
   local high = math.max(open, close) + 5
   local low = math.min(open, close) - 5
   local volume = (i + m) % 1000
   local body = string.format(
      '{"records":[{"ts":%.0f,"open":%d,"high":%d,"low":%d,"close":%d,"volume":%d}]}',
      base + m * 60000, open, high, low, close, volume)
   return wrk.format("POST", paths[j + 1], headers, body)
end

function done(summary, latency, requests)
   for _, t in ipairs(threads) do
      io.write(string.format("FEED_THREAD %d %d\n", t:get("tid"), t:get("counter")))
   end
end
