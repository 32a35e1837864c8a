-- wrk script: send pre-built HTTP/1.1 requests, each once, from a file written by
-- bench/harness/wrk.py's write_requests (per request: its length in decimal, a newline, its
-- bytes). Thread i of n takes requests i, i+n, i+2n, ... in order, so no two threads send the
-- same one; a thread that has sent all of its share starts over (the summary's "sent" then
-- exceeds "pool": repeats).
--
--     wrk -t2 -c32 -d10s --latency -s replay_requests.lua http://127.0.0.1:8080 -- FILE THREADS
--
-- The last line printed: "replay: sent S ok K pool P", S requests sent, K answered 2xx, P in
-- the file.

local threads = {}

function setup(thread)
   thread:set("index", #threads)
   table.insert(threads, thread)
end

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local data = file:read("*a")
   file:close()
   local stride = tonumber(args[2])
   pool = {}
   local at, n = 1, 0
   while at <= #data do
      local newline = data:find("\n", at, true)
      local length = tonumber(data:sub(at, newline - 1))
      if n % stride == index then
         pool[#pool + 1] = data:sub(newline + 1, newline + length)
      end
      at = newline + 1 + length
      n = n + 1
   end
   size = #pool
   sent = 0
   ok = 0
end

function request()
   sent = sent + 1
   return pool[(sent - 1) % size + 1]
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      ok = ok + 1
   end
end

function done(summary, latency, requests)
   local s, k, p = 0, 0, 0
   for _, thread in ipairs(threads) do
      s = s + thread:get("sent")
      k = k + thread:get("ok")
      p = p + thread:get("size")
   end
   io.write(string.format("replay: sent %d ok %d pool %d\n", s, k, p))
end
