-- wrk script used by bench_redirect.py for POST /v1/events: redirect.lua's status counts, clean
-- stop and pacing, plus a JSON body whose events each get a fresh event_id, and a count of the
-- events the collector says it accepted.
--
--   wrk -t1 -c32 -d13s -H 'Authorization: Bearer KEY' -H 'Content-Type: application/json' \
--       -s loadtest/events.lua URL -- <duration_s> <rate_per_thread> <body_file> <id_prefix>
--
-- * <body_file> holds the request body (one event or a JSON list of them) with the placeholder
--   __EVENT_ID__ where each event's id goes. Every request replaces each placeholder with a new
--   id, <id_prefix>-<n>, so no two events of a run share an event_id (the relay would drop the
--   repeats as duplicates; the collector itself would accept them).
-- * done() prints redirect.lua's "BENCH_JSON {...}" line, then "BENCH_EVENTS {"accepted": N}":
--   the sum of "accepted" over the 202 answers.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "redirect.lua")

wrk.method = "POST"

accepted = 0 -- per thread; done() reads it with thread:get()

local base_setup, base_init, base_response, base_done = setup, init, response, done
local threads = {}
local template, prefix
local serial = 0

local function next_id()
  serial = serial + 1
  return prefix .. "-" .. serial
end

function setup(thread)
  base_setup(thread)
  table.insert(threads, thread)
end

function init(args)
  base_init(args)
  local file = assert(io.open(args[3], "rb"))
  template = file:read("*a")
  file:close()
  prefix = args[4]
end

function request()
  local body = template:gsub("__EVENT_ID__", next_id)
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  base_response(status, headers, body)
  if status == 202 then
    accepted = accepted + tonumber(body:match('"accepted":%s*(%d+)') or 0)
  end
end

function done(summary, latency, requests)
  base_done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("accepted")
  end
  io.write(string.format('BENCH_EVENTS {"accepted": %d}\n', total))
end
