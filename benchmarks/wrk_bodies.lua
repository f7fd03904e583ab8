-- wrk script for load_test.py: POST /invocations with pre-encoded JSON bodies, and a JSON summary.
-- Usage: wrk -s wrk_bodies.lua URL -- BODIES_FILE   (one request body per line)
local bodies = {}
local headers = { ["Content-Type"] = "application/json" }
local next_body = 0

function init(args)
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = line
  end
  next_body = math.random(#bodies) -- each wrk thread starts somewhere else in the list
end

function request()
  next_body = next_body % #bodies + 1
  return wrk.format("POST", "/invocations", headers, bodies[next_body])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %.1f, "p99_us": %.1f, "max_us": %.1f, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
