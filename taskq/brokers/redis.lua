-- The Lua scripts of the Redis broker (taskq/brokers/redis.py), one "--@ name" section each;
-- the "common" section is prepended to every script.
--
-- Every script is called with the same 15 KEYS: the keys of one queue Q. They all carry the
-- hash tag {Q}, so a script touches a single Redis Cluster slot. P is the key prefix.
--
--   KEYS[1..10]  P{Q}:s0 .. P{Q}:s9  stream  messages of priority 0..9 (KEYS[b + 1] is band b).
--                                            Fields: b = the envelope, d = deliveries before
--                                            this entry (absent: 0). One consumer group; each
--                                            consume() call is a consumer of it.
--   KEYS[11]     P{Q}:delayed         zset    messages not due yet. Score: due time (epoch ms,
--                                            the producer's clock); member:
--                                            "<band><d>:<unique token>:<envelope>".
--   KEYS[12]     P{Q}:leases          zset    delivered, unsettled entries. Member:
--                                            "<band><stream id>"; score: lease end (Redis TIME, ms).
--   KEYS[13]     P{Q}:dead            stream  dead letters. Fields: r = reason, b = the envelope
--                                            as it came, t = failed at (epoch s).
--   KEYS[14]     P{Q}:idle            string  set while some consumer sleeps on this queue:
--                                            only then do producers PUBLISH a wake-up.
--   KEYS[15]     P{Q}:offers          zset    consumers ready to be handed the next message
--                                            (see "publish"). Member: "<lease ms>:<group>:
--                                            <consumer>"; score: the offer's end (Redis TIME, ms).
--
-- The "chord" script also takes, after those 15, three keys per chord whose callback goes to
-- Q ("chord_add_member" the last one):
--   P{Q}:chord:<group id>:results  hash    member index -> 's' .. result JSON, or
--                                            'f' .. failure JSON; expires CHORD_RETENTION
--                                            after the last member recorded.
--   P{Q}:chord:<group id>:done     string  set (for CHORD_RETENTION) once the callback is
--                                            published, so late duplicates publish nothing.
--   P{Q}:chord:<group id>:added    hash    members added to the chord (Task.add_to_chord):
--                                            the addition's token -> "<position>:<task id>";
--                                            the chord's size is the members' plus HLEN.
--
-- A delivery is (band, stream id, consumer, times delivered to the group). Settling checks
-- the entry's record in the group's pending list: if another consumer has taken it over, or
-- the same consumer got it again, the settle is stale and does nothing.
--
-- Nothing a script reads is trusted to have the shape above: an entry that has not (written
-- by hand, or by another program) goes to the dead letters with its raw fields and the
-- reason, so that one bad entry cannot stop every consumer of the queue.

--@ common
local DELAYED, LEASES, DEAD, IDLE, OFFERS = KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15]

local function stream(band)
  return KEYS[tonumber(band) + 1]
end

local function server_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

-- The pending-list record {id, consumer, idle ms, times delivered} of an entry, or nil.
local function pending(band, group, id)
  local found = redis.pcall('XPENDING', stream(band), group, id, id, 1)
  if found.err or #found == 0 then return nil end
  return found[1]
end

local function held(band, group, consumer, id, count)
  local record = pending(band, group, id)
  return record ~= nil and record[2] == consumer and tonumber(record[4]) == tonumber(count)
end

local function append(band, deliveries, body)
  if tonumber(deliveries) > 0 then
    redis.call('XADD', stream(band), '*', 'b', body, 'd', deliveries)
  else
    redis.call('XADD', stream(band), '*', 'b', body)
  end
end

-- Ids per call of a command that takes many (Lua's stack holds about 8000 unpacked values).
local CHUNK = 1000

local function in_chunks(items, call)
  for first = 1, #items, CHUNK do call(unpack(items, first, math.min(first + CHUNK - 1, #items))) end
end

-- Entries are settled at the end of a script, all of them in one XACK and one XDEL per band
-- and one ZREM: a batch of a hundred acks costs a few calls, not three hundred.
-- settle() is false for an entry gathered already (a delivery twice in one call).
local settling, settling_leases, gathered = {}, {}, {}

local function settle(band, id)
  local member = band .. id
  if gathered[member] then return false end
  gathered[member] = true
  local key = stream(band)
  local ids = settling[key] or {}
  settling[key] = ids
  ids[#ids + 1] = id
  settling_leases[#settling_leases + 1] = member
  return true
end

local function settle_gathered(group)
  for key, ids in pairs(settling) do
    in_chunks(ids, function(...) redis.call('XACK', key, group, ...) end)
    in_chunks(ids, function(...) redis.call('XDEL', key, ...) end)
  end
  in_chunks(settling_leases, function(...) redis.call('ZREM', LEASES, ...) end)
end

local function body_of(band, id)
  local entry = redis.call('XRANGE', stream(band), id, id)[1]
  return entry and field(entry[2], 'b') or ''
end

-- Keeps something that is not a well-formed entry as a dead letter, with why.
local function bury_malformed(what, raw)
  local reason = 'malformed broker entry: ' .. what
  redis.call('XADD', DEAD, '*', 'r', reason, 'b', raw, 't', tostring(server_ms() / 1000))
end

-- The envelope and the deliveries before it of a stream entry; nil, and the entry kept as a
-- dead letter, for one that is not well-formed.
local function entry_parts(id, fields)
  local body, earlier = field(fields, 'b'), field(fields, 'd') or '0'
  if body ~= nil and string.match(earlier, '^%d+$') then return body, tonumber(earlier) end
  local what = body == nil and 'without its envelope (field b)' or 'with a bad field d'
  bury_malformed('stream entry ' .. id .. ' ' .. what, body or cjson.encode(fields))
  return nil
end

-- A lease member "<band><stream id>", split; nil for anything else.
local function lease_parts(member)
  return string.match(member, '^(%d)(%d+%-%d+)$')
end

-- A new message: at the tail of its band's stream, or into the delayed set when `due` > 0.
local function enqueue(band, due, token, body)
  if tonumber(due) > 0 then
    redis.call('ZADD', DELAYED, due, band .. '0:' .. token .. ':' .. body)
  else
    append(band, 0, body)
  end
end

-- Up to `count` entries of `band` never delivered to `group`, now delivered to `consumer`.
local function read_new(band, group, consumer, count)
  local key = stream(band)
  local found = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', key, '>')
  if type(found) == 'table' and found.err then
    if not string.find(found.err, 'NOGROUP', 1, true) then error(found.err) end
    -- A new stream, or a Redis that lost its groups: everything in the stream is new.
    redis.call('XGROUP', 'CREATE', key, group, '0')
    found = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', key, '>')
  end
  return found and found[1][2] or {}
end

local function wake(channel)
  if redis.call('EXISTS', IDLE) == 1 then
    redis.call('DEL', IDLE)
    redis.call('PUBLISH', channel, '1')
  end
end

--@ claim
-- Moves due delayed messages into their streams, takes over expired leases, then reads new
-- entries, highest band first, up to `limit` in all. A lease of this very consumer that has
-- expired is only taken back once the caller confirms it (it has stayed expired for a while
-- of live event loop), so a consumer whose loop was blocked does not redeliver the tasks it
-- is running to itself before it had the chance to renew their leases. Malformed entries met
-- on the way are dead-lettered; they count against `limit` like the entries taken.
--
-- The consumer's offer to be handed the next message (see "publish") holds a place of its
-- prefetch. A caller that made one counts that place in `limit` (expected = 1): the offer is
-- withdrawn here and its place used, unless a publisher has taken it up already, in which case
-- the message handed over is on its way and `limit` is one less. Drained (fewer than `limit`,
-- or a hand-over on its way), the queue gets the idle marker and, if the caller asks (offer
-- ms > 0) and none is on its way, a new offer, which keeps a place of what was not taken.
-- ARGV: group, consumer, limit, lease ms, now (epoch ms), idle marker ms, offer ms, offer
-- member, expected, confirmed leases...
-- Returns {next due time or false, own expired leases not confirmed, entries, buried, offer}
-- with entries flat: band, id, envelope, deliveries in all, times delivered to the group;
-- buried: how many malformed entries the reads met; offer: 0 none, 1 made, 2 a hand-over on
-- its way.
local group, consumer, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = server_ms()
local deadline = now + tonumber(ARGV[4])
local entries, suspects, confirmed, buried = {}, {}, {}, 0
local leases = {} -- deadline, member, ...: one ZADD at the end
for i = 10, #ARGV do confirmed[ARGV[i]] = true end
local handed = redis.call('ZREM', OFFERS, ARGV[8]) == 0 and ARGV[9] == '1'
if handed then limit = limit - 1 end

local function take(band, id, fields, count)
  local body, earlier = entry_parts(id, fields)
  if body == nil then
    settle(band, id)
    buried = buried + 1
    return
  end
  leases[#leases + 1] = deadline
  leases[#leases + 1] = band .. id
  local at = #entries
  entries[at + 1], entries[at + 2], entries[at + 3] = band, id, body
  entries[at + 4], entries[at + 5] = earlier + count, count
end

local function promote()
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', ARGV[5], 'LIMIT', 0, 1000)
  for _, member in ipairs(due) do
    local band, deliveries, body = string.match(member, '^(%d)(%d+):[^:]*:(.*)$')
    if band then
      append(band, deliveries, body)
    else
      bury_malformed('delayed message without "<band><deliveries>:<token>:"', member)
    end
    redis.call('ZREM', DELAYED, member)
  end
end

local function forget_if_empty(band, holder)
  if #redis.call('XPENDING', stream(band), group, '-', '+', 1, holder) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', stream(band), group, holder)
  end
end

local function reclaim()
  local expired = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, limit)
  for _, member in ipairs(expired) do
    local band, id = lease_parts(member)
    local record = band and pending(band, group, id)
    if band == nil then
      bury_malformed('lease without "<band><stream id>"', member)
      redis.call('ZREM', LEASES, member)
    elseif record == nil then
      redis.call('ZREM', LEASES, member)
    elseif record[2] == consumer and not confirmed[member] then
      suspects[#suspects + 1] = member
    else
      local claimed = redis.call('XCLAIM', stream(band), group, consumer, 0, id)[1]
      if claimed and claimed[2] then
        take(band, id, claimed[2], tonumber(record[4]) + 1)
        if record[2] ~= consumer then forget_if_empty(band, record[2]) end
      else
        redis.call('ZREM', LEASES, member)
      end
    end
  end
end

local function read(band, count)
  for _, entry in ipairs(read_new(band, group, consumer, count)) do
    take(tostring(band), entry[1], entry[2], 1)
  end
end

promote()
reclaim()
for band = 9, 0, -1 do
  local wanted = limit - #entries / 5 - buried
  if wanted <= 0 then break end
  if redis.call('XLEN', stream(band)) > 0 then read(band, wanted) end
end
in_chunks(leases, function(...) redis.call('ZADD', LEASES, ...) end)
settle_gathered(group)
-- Fewer than asked: the queue is drained, so the caller may sleep on it.
local offered = handed and 2 or 0
if handed or #entries / 5 + buried < limit then
  redis.call('SET', IDLE, '1', 'PX', ARGV[6])
  if not handed and tonumber(ARGV[7]) > 0 then
    redis.call('ZADD', OFFERS, now + tonumber(ARGV[7]), ARGV[8])
    offered = 1
  end
end
local next_due = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')[2]
return {next_due or false, suspects, entries, buried, offered}

--@ publish
-- Enqueues messages, ready ones at the tail of their band's stream, the others into the
-- delayed set. Then each consumer that offered to take the next message (and is still
-- subscribed to its hand-over channel, "<wake-up channel>:<consumer>") is handed one, as a
-- claim of one would give it: leased, and published whole on that channel, so it need not
-- claim. If any message is left, or delayed, sleeping consumers are woken. ARGV: the wake-up
-- channel, then band, due time (epoch ms; 0: ready now), unique token (for a delayed one)
-- and envelope of each message.
local channel, ready, delayed = ARGV[1], 0, false
for i = 2, #ARGV, 4 do
  enqueue(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
  if tonumber(ARGV[i + 1]) > 0 then delayed = true else ready = ready + 1 end
end

-- The oldest entry of the highest band that `consumer` may be handed, leased to it.
local function hand_to(group, consumer, lease, now)
  for band = 9, 0, -1 do
    if redis.call('XLEN', stream(band)) > 0 then
      local found = read_new(band, group, consumer, 1)[1]
      if found then
        local id = found[1]
        local body, earlier = entry_parts(id, found[2])
        if body then
          redis.call('ZADD', LEASES, now + lease, band .. id)
          return band .. ':' .. id .. ':' .. (earlier + 1) .. ':1:' .. body
        end
        redis.call('XACK', stream(band), group, id)
        redis.call('XDEL', stream(band), id)
        return hand_to(group, consumer, lease, now)
      end
    end
  end
  return nil
end

local handed = 0
if ready > 0 and redis.call('EXISTS', OFFERS) == 1 then
  local now = server_ms()
  redis.call('ZREMRANGEBYSCORE', OFFERS, '-inf', now)
  while handed < ready do
    local oldest = redis.call('ZRANGE', OFFERS, 0, 0, 'WITHSCORES')
    local member = oldest[1]
    if not member then break end
    redis.call('ZREM', OFFERS, member)
    local lease, group, consumer = string.match(member, '^(%d+):([^:]+):(.+)$')
    local hand = lease and channel .. ':' .. consumer
    if hand and redis.call('PUBSUB', 'NUMSUB', hand)[2] > 0 then
      local delivery = hand_to(group, consumer, tonumber(lease), now)
      if not delivery then  -- nothing left to hand over: the offer stands
        redis.call('ZADD', OFFERS, oldest[2], member)
        break
      end
      redis.call('PUBLISH', hand, delivery)
      handed = handed + 1
    end
  end
end
if delayed or handed < ready then wake(channel) end
return 0

--@ chord
-- Records finished chord members and, with the last member of a chord, publishes its
-- callback in the same step: the callback's envelope with the results, in index order,
-- spliced in; or, if a member failed, the failure envelope with the description of the
-- lowest failed member spliced in. A member is recorded once (HSETNX), so a redelivered one
-- does not count twice; the done marker keeps a late duplicate from publishing again. The
-- chord's size is the one its members carry plus the members added to it (indices from
-- that size on), read here, in the step that counts.
-- ARGV: the wake-up channel, retention ms, then of each chord (in the order of its keys):
-- size, band, due, token (as "publish"), splice (1: the results go between head and tail;
-- 0: the callback ignores them and head is all of it), head, tail, failure head, failure
-- tail, member count, then index and outcome ('s' or 'f' .. JSON) of each member.
-- Returns, per chord, 1 if this call published its callback, else 0.
local retention, published, any = ARGV[2], {}, false

-- The results as a JSON list in index order, or nil and the first failed member's outcome.
local function results_of(results, size)
  local entries, values, first, failure = redis.call('HGETALL', results), {}, size, nil
  for i = 1, #entries, 2 do
    local index, value = tonumber(entries[i]), entries[i + 1]
    if string.sub(value, 1, 1) == 'f' then
      if index < first then first, failure = index, string.sub(value, 2) end
    else
      values[index + 1] = string.sub(value, 2)
    end
  end
  if failure then return nil, failure end
  return '[' .. table.concat(values, ',', 1, size) .. ']'
end

local function callback(results, size, at)
  local list, failure = results_of(results, size)
  if failure then return ARGV[at + 7] .. failure .. ARGV[at + 8] end
  if ARGV[at + 4] == '1' then return ARGV[at + 5] .. list .. ARGV[at + 6] end
  return ARGV[at + 5]
end

local at, chord = 3, 0
while at <= #ARGV do
  chord = chord + 1
  local results, done, added = KEYS[13 + 3 * chord], KEYS[14 + 3 * chord], KEYS[15 + 3 * chord]
  local members = tonumber(ARGV[at + 9])
  published[chord] = 0
  if redis.call('EXISTS', done) == 0 then
    local size = tonumber(ARGV[at]) + redis.call('HLEN', added)
    for i = at + 10, at + 9 + 2 * members, 2 do
      if tonumber(ARGV[i]) < size then redis.call('HSETNX', results, ARGV[i], ARGV[i + 1]) end
    end
    if redis.call('HLEN', results) >= size then
      enqueue(ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], callback(results, size, at))
      redis.call('DEL', results)
      redis.call('SET', done, '1', 'PX', retention)
      published[chord], any = 1, true
    else
      redis.call('PEXPIRE', results, retention)
      redis.call('PEXPIRE', added, retention)
    end
  end
  at = at + 10 + 2 * members
end
if any then wake(ARGV[1]) end
return published

--@ chord_add_member
-- Adds a member to a chord whose callback goes to Q, once per token; returns
-- "<position>:<task id>", the first one recorded for the token. KEYS: after the 15, the
-- chord's added members. ARGV: token, task id, retention ms.
local added = KEYS[16]
local found = redis.call('HGET', added, ARGV[1])
if not found then
  found = redis.call('HLEN', added) .. ':' .. ARGV[2]
  redis.call('HSET', added, ARGV[1], found)
end
redis.call('PEXPIRE', added, ARGV[3])
return found

--@ ack
-- ARGV: group, consumer, offer ms (> 0: the consumer, holding nothing after these, offers to be
-- handed the next message, see "publish"), offer member, then band, id, times delivered of
-- each delivery.
for i = 5, #ARGV, 3 do
  if held(ARGV[i], ARGV[1], ARGV[2], ARGV[i + 1], ARGV[i + 2]) then settle(ARGV[i], ARGV[i + 1]) end
end
settle_gathered(ARGV[1])
if tonumber(ARGV[3]) > 0 then redis.call('ZADD', OFFERS, server_ms() + tonumber(ARGV[3]), ARGV[4]) end
return 0

--@ requeue
-- Gives deliveries back: at the tail of their band, or into the delayed set when `due` > 0.
-- ARGV: group, consumer, channel, due (epoch ms or 0), then band, id, times delivered,
-- deliveries so far (what the new entry starts from) of each delivery.
local group, consumer, due = ARGV[1], ARGV[2], tonumber(ARGV[4])
for i = 5, #ARGV, 4 do
  local band, id, deliveries = ARGV[i], ARGV[i + 1], ARGV[i + 3]
  if held(band, group, consumer, id, ARGV[i + 2]) and settle(band, id) then
    local body = body_of(band, id)
    if due > 0 then
      redis.call('ZADD', DELAYED, due, band .. deliveries .. ':r' .. id .. ':' .. body)
    else
      append(band, deliveries, body)
    end
  end
end
settle_gathered(group)
wake(ARGV[3])
return 0

--@ bury
-- Moves deliveries to the dead letters. ARGV: group, consumer, reason, failed at (epoch s),
-- then band, id, times delivered of each delivery.
for i = 5, #ARGV, 3 do
  local band, id = ARGV[i], ARGV[i + 1]
  if held(band, ARGV[1], ARGV[2], id, ARGV[i + 2]) and settle(band, id) then
    redis.call('XADD', DEAD, '*', 'r', ARGV[3], 'b', body_of(band, id), 't', ARGV[4])
  end
end
settle_gathered(ARGV[1])
return 0

--@ extend
-- ARGV: group, consumer, lease ms, then band, id, times delivered of each delivery.
local deadline = server_ms() + tonumber(ARGV[3])
for i = 4, #ARGV, 3 do
  if held(ARGV[i], ARGV[1], ARGV[2], ARGV[i + 1], ARGV[i + 2]) then
    redis.call('ZADD', LEASES, deadline, ARGV[i] .. ARGV[i + 1])
  end
end
return 0

--@ length
-- Messages waiting, leased or delayed.
local total = redis.call('ZCARD', DELAYED)
for band = 0, 9 do total = total + redis.call('XLEN', stream(band)) end
return total

--@ purge
-- Deletes delayed messages, messages whose lease has expired, and up to `limit` undelivered
-- entries per band. ARGV: group, limit. Returns {deleted, 1 if more may remain else 0}.
local group, limit = ARGV[1], tonumber(ARGV[2])
local deleted, more = redis.call('ZCARD', DELAYED), 0
redis.call('DEL', DELAYED)

local function last_delivered(key)
  local groups = redis.pcall('XINFO', 'GROUPS', key)
  if groups.err then return nil end
  for _, info in ipairs(groups) do
    if field(info, 'name') == group then return field(info, 'last-delivered-id') end
  end
  return nil
end

local expired = redis.call('ZRANGEBYSCORE', LEASES, '-inf', server_ms(), 'LIMIT', 0, limit)
for _, member in ipairs(expired) do
  local band, id = lease_parts(member)
  if band then
    deleted = deleted + redis.call('XDEL', stream(band), id)
    redis.call('XACK', stream(band), group, id)
  end
  redis.call('ZREM', LEASES, member)
end
if #expired == limit then more = 1 end
for band = 0, 9 do
  local key = stream(band)
  if redis.call('XLEN', key) > 0 then
    local after = last_delivered(key)
    local start = after and ('(' .. after) or '-'
    local waiting = redis.call('XRANGE', key, start, '+', 'COUNT', limit)
    for _, entry in ipairs(waiting) do deleted = deleted + redis.call('XDEL', key, entry[1]) end
    if #waiting == limit then more = 1 end
  end
end
return {deleted, more}

--@ purge_dead
local count = redis.call('XLEN', DEAD)
redis.call('DEL', DEAD)
return count

--@ forget
-- A consumer stops: drop it from each band's group where it holds nothing.
-- ARGV: group, consumer.
for band = 0, 9 do
  local key = stream(band)
  if redis.call('EXISTS', key) == 1 then
    local held_any = redis.pcall('XPENDING', key, ARGV[1], '-', '+', 1, ARGV[2])
    if not held_any.err and #held_any == 0 then
      redis.call('XGROUP', 'DELCONSUMER', key, ARGV[1], ARGV[2])
    end
  end
end
return 0

--@ withdraw
-- A consumer stops: its offer ends, and a last message on its hand-over channel tells it that
-- nothing more is handed to it after what came before. ARGV: offer member, hand-over channel.
redis.call('ZREM', OFFERS, ARGV[1])
redis.call('PUBLISH', ARGV[2], '')
return 0
