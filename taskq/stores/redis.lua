-- The Lua scripts of the Redis result store (taskq/stores/redis.py), one "--@ name" section
-- each; the "common" section is prepended to every script. P is the key prefix. Each script
-- touches one key or keys of one hash tag, so it runs on Redis Cluster.
--
--   P meta:<task id>           string  the task's encoded TaskMeta, expiring with result_expires;
--                                      a ready state is also PUBLISHed on P ready:<task id>.
--                                      One call of "states" writes keys of one cluster slot.
--   P chord:{<group id>}:members  set  ids of the chord members recorded so far
--   P chord:{<group id>}:done  string  set once the chord's last member is recorded
--   P chord:{<group id>}:added   hash  members added to the chord (Task.add_to_chord): the
--                                      addition's token -> "<position>:<task id>"
--   P lease:<name>             string  the owner of the lease, expiring with it
--   P revoked                  zset    revoked task ids; score: end of the revocation (Redis TIME, ms)
--
-- Plain keys (P key:<key>: idempotency keys, rate-limit slots, beat's entries and state, saved
-- groups) are plain SET, SET NX PX, GET and DEL, and need no script.

--@ common
local function server_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

--@ states
-- Task states, each with its notification when it is ready, in one step. KEYS: P meta:<id>
-- of each. ARGV, three per key: the encoded meta, ttl ms (0: no expiry), the channel to
-- PUBLISH the meta on ("" for a state that is not ready).
for i, key in ipairs(KEYS) do
  local meta, ttl, channel = ARGV[3 * i - 2], tonumber(ARGV[3 * i - 1]), ARGV[3 * i]
  if ttl > 0 then
    redis.call('SET', key, meta, 'PX', ttl)
  else
    redis.call('SET', key, meta)
  end
  if channel ~= '' then redis.call('PUBLISH', channel, meta) end
end
return 0

--@ chord_part_done
-- Records a member; 1 exactly once per group, when its last distinct member is recorded
-- (of the group's size and the members added to it). KEYS: members, done, added.
-- ARGV: task id, group size, retention ms.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) + redis.call('HLEN', KEYS[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 1

--@ chord_add_member
-- Adds a member to a chord, once per token; returns "<position>:<task id>", the first one
-- recorded for the token. KEYS: added. ARGV: token, task id, retention ms.
local added = redis.call('HGET', KEYS[1], ARGV[1])
if not added then
  added = redis.call('HLEN', KEYS[1]) .. ':' .. ARGV[2]
  redis.call('HSET', KEYS[1], ARGV[1], added)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return added

--@ lease
-- Acquires the lease if it is free, renews it if ARGV[1] holds it. KEYS: the lease.
-- ARGV: owner, ttl ms. Returns 1 if the owner holds it now.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1

--@ revoke
-- KEYS: revoked. ARGV: ttl ms, task ids... Also drops the revocations that have ended.
local now = server_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) end
return 0

--@ revoked
-- KEYS: revoked. ARGV: task ids. Returns those revoked now.
local now, found = server_ms(), {}
for _, id in ipairs(ARGV) do
  local ends = redis.call('ZSCORE', KEYS[1], id)
  if ends and tonumber(ends) > now then found[#found + 1] = id end
end
return found

--@ all_revoked
-- KEYS: revoked. Returns every task id revoked now.
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. server_ms(), '+inf')
