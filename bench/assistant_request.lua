-- wrk script: cycle through pre-built, signed assistant-requests (one per user, written by bench/generate.py).
--   wrk -s bench/assistant_request.lua http://127.0.0.1:8080/vapi -- requests.tsv
-- Each thread starts at a different user. done() prints one JSON line (latencies in microseconds).

local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("id", counter)
   table.insert(threads, thread)
end

local requests = {}
local position = 1

function init(args)
   local path = wrk.path
   for line in io.lines(args[1]) do
      local split = string.find(line, "\t\t", 1, true)
      local headers = {}
      for header in string.gmatch(string.sub(line, 1, split - 1), "[^\t]+") do
         local colon = string.find(header, ": ", 1, true)
         headers[string.sub(header, 1, colon - 1)] = string.sub(header, colon + 2)
      end
      -- An agency tenant's path (bench/agency.py): a header line the request does not carry.
      local target = headers["X-Bench-Path"] or path
      headers["X-Bench-Path"] = nil
      table.insert(requests, wrk.format("POST", target, headers, string.sub(line, split + 2)))
   end
   position = ((id - 1) * 4999) % #requests + 1
end

function request()
   local r = requests[position]
   position = position % #requests + 1
   return r
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '{"duration_us": %d, "requests": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, ' ..
      '"write_errors": %d, "non_2xx_3xx": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
      '"max_us": %d, "mean_us": %.1f}\n',
      summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
