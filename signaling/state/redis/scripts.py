"""Lua scripts for the state changes that must be atomic in Redis.

Each touches keys of one hash tag only (see :mod:`signaling.state.redis.keys`), so they run
on Redis Cluster too. Times are epoch milliseconds passed in by the caller, so every node
agrees on them.
"""

from __future__ import annotations

# Number, keep and publish one recorded room event (signaling.state.history) in one call:
# the epoch (created if the history is new or expired) and the next offset fill the
# envelope's fixed-width places; the entry is kept (bounded, expiring) and the message
# (bus header + WebSocket frame header + envelope) is published to the room's channel.
# KEYS: history meta hash, history list. ARGV: channel, message prefix, envelope head,
# middle, tail, entry prefix (excluded user), size, ttl_ms, a new epoch, and PUBLISH or
# (on Redis Cluster, where the channel shares the room's hash tag) SPUBLISH.
HISTORY_PUBLISH = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[9]
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local envelope = ARGV[3] .. epoch .. ARGV[4] .. string.format('%20d', offset) .. ARGV[5]
redis.call('RPUSH', KEYS[2], ARGV[6] .. envelope)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[7]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
return redis.call(ARGV[10], ARGV[1], ARGV[2] .. envelope)
"""

# Set (or with an empty value remove) one device's status and return the user's visible
# status and last_seen before and after. Precedence matches models.STATUS_PRECEDENCE:
# invisible (shown as offline) > dnd > online > away. The hash is read once: the status
# after is the best of the other devices' and the new value.
# KEYS: presence hash. ARGV: field, value ('' removes), now_ms.
SET_DEVICE = """
local ranks = {invisible = 1, dnd = 2, online = 3, away = 4}
local shown = {'offline', 'dnd', 'online', 'away', 'offline'}
local function rank(value)
  return ranks[string.match(value, '^[^|]*')] or 5
end
local all = redis.call('HGETALL', KEYS[1])
local seen = ''
local before, others = 5, 5
for i = 1, #all, 2 do
  local field = all[i]
  if field == 'seen' then
    seen = all[i + 1]
  elseif string.sub(field, 1, 2) == 'd:' then
    local r = rank(all[i + 1])
    if r < before then before = r end
    if field ~= ARGV[1] and r < others then others = r end
  end
end
local after = others
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  local r = rank(ARGV[2])
  if r < after then after = r end
end
before, after = shown[before], shown[after]
local new_seen = seen
if before ~= 'offline' or after ~= 'offline' then
  new_seen = ARGV[3]
  redis.call('HSET', KEYS[1], 'seen', new_seen)
end
return {before, seen, after, new_seen}
"""

# KEYS: room members hash, the user's device set in the room. ARGV: user, name, conn,
# capacity ('' for none). Returns 1 if this is the user's first device in the room, -1 if
# the user is not a member and the room already has ``capacity`` members.
JOIN_ROOM = """
if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
    and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return -1
end
local added = redis.call('SADD', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if added == 1 and redis.call('SCARD', KEYS[2]) == 1 then return 1 end
return 0
"""

# KEYS: as JOIN_ROOM. ARGV: user, conn. Returns 1 if it was the user's last device.
LEAVE_ROOM = """
if redis.call('SREM', KEYS[2], ARGV[2]) == 0 then return 0 end
if redis.call('SCARD', KEYS[2]) > 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

# A typing state is the string ``expires_ms|conn|name`` (the name last: it may hold '|'),
# written by plain HSETs (signaling.state.redis.typing_indicators). One that does not parse
# (written by another version) counts as ended.
#
# KEYS: room typing hash. ARGV: user, owner conn ('' = any), and the announcement: the
# room's channel ('' for none), the bus message, PUBLISH or SPUBLISH. Ends the state (if
# the owner matches) and publishes the announcement. Returns the name, or nil.
TYPING_STOP = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local _, conn, name = string.match(raw, '^(%d+)|([^|]*)|(.*)$')
if ARGV[2] ~= '' and conn ~= ARGV[2] then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
if not name then return false end
if ARGV[3] ~= '' then redis.call(ARGV[5], ARGV[3], ARGV[4]) end
return name
"""

# KEYS: room typing hash. ARGV: user, now_ms.
# Returns {0} gone, {1, name} expired (removed), {2, ms_left} still fresh.
TYPING_EXPIRE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {0} end
local expires, _, name = string.match(raw, '^(%d+)|([^|]*)|(.*)$')
if not expires then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return {0}
end
local left = tonumber(expires) - tonumber(ARGV[2])
if left > 0 then return {2, tostring(left)} end
redis.call('HDEL', KEYS[1], ARGV[1])
return {1, name}
"""

# KEYS: timers sorted set. ARGV: now_ms, limit. Removes and returns due timers, so each
# is claimed by exactly one node.
CLAIM_TIMERS = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""

# Lease up to ARGV[4] ordering keys among the oldest ARGV[5] with pending webhooks.
# KEYS: ready zset. ARGV: lease key prefix, owner, lease_ms, limit, scan.
WEBHOOK_CLAIM = """
local out = {}
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[5]) - 1)) do
  if redis.call('SET', ARGV[1] .. key, ARGV[2], 'NX', 'PX', ARGV[3]) then
    out[#out + 1] = key
    if #out >= tonumber(ARGV[4]) then break end
  end
end
return out
"""

# Drop the delivered head, only while still holding the lease; an emptied key is no
# longer ready. KEYS: queue, ready, lease. ARGV: key, owner. Returns 1, or 0 (lease lost).
WEBHOOK_ACK = """
if redis.call('GET', KEYS[3]) ~= ARGV[2] then return 0 end
redis.call('LPOP', KEYS[1])
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[3])
end
return 1
"""

# KEYS: lease. ARGV: owner, lease_ms. Returns 1 if the lease was extended.
WEBHOOK_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: queue, ready, lease. ARGV: key, owner.
WEBHOOK_RELEASE = """
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1
"""

# Write a call copy unless Redis holds one at least as new (re-publishing after a restart:
# each node offers the last version it wrote). KEYS: call. ARGV: json, version.
PUT_NEWER_CALL = """
local current = redis.call('GET', KEYS[1])
if current and (cjson.decode(current).version or 0) >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

# Delete a key only if it still holds the caller's value (a lock's token, a room's media
# node). KEYS: key. ARGV: expected value.
DELETE_IF = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# Compare-and-set of a record: write it only if the key still holds what the caller read
# (RedisLink.update_json). KEYS: key. ARGV: the bytes read, the new value.
SET_IF_UNCHANGED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"""
