"""The Lua scripts of the Redis transport: what must happen in one step, on Redis's clock.

``MAINTAIN`` (a consumer runs it every polling interval)
    Moves the due delayed copies of its queue onto the queue's stream, and, when asked (about once a second),
    takes over entries whose consumer is gone (its alive key expired, or the released owner) and entries held
    longer than the visibility timeout, and tells whether the former transport's list of the queue has messages
    (a sender of an earlier version still pushes there). Returns ``{next XAUTOCLAIM cursor, {{id, {field, value,
    ...}}, ...}, 1 when that list has messages}``.
``DELAY``
    Adds a delayed copy, due ``delay`` ms from now by Redis's clock.
``LEAVE`` (a receiver that closes)
    Releases every entry the consumer still holds (they go to the released owner, so the next consumer takes them at
    once, in their place), deletes its alive key, and removes it from the group once it holds nothing.

A consumer is removed from the group only when it holds nothing: ``XGROUP DELCONSUMER`` forgets the pending entries
of the consumer it removes, which would leave them in the stream, never delivered again.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DELAY", "LEAVE", "MAINTAIN"]

_NOW: Final = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
"""

_HOLDS_NOTHING: Final = """
local function holds_nothing(stream, group, name)
  return #redis.call('XPENDING', stream, group, '-', '+', 1, name) == 0
end
"""

#: KEYS: stream, delayed set ('' for none), dead letter stream, the former transport's list. ARGV: group, me, alive
#: key prefix, lease (ms), room (entries to take at most), check ('1': look for entries of gone consumers and run-out
#: leases), XAUTOCLAIM cursor.
MAINTAIN: Final = (
    _NOW
    + _HOLDS_NOTHING
    + """
local stream, delayed, dead, legacy = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, me, alive = ARGV[1], ARGV[2], ARGV[3]
local lease, room, check, cursor = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1', ARGV[7]

-- a delayed copy: '<length>:<bytes>' parts, a nonce then field, value, field, value...; nil when it is not one
local function fields_of(member)
  local parts, position = {}, 1
  while position <= #member do
    local colon = string.find(member, ':', position, true)
    if not colon then return nil end
    local size = tonumber(string.sub(member, position, colon - 1))
    if not size or size < 0 or colon + size > #member then return nil end
    parts[#parts + 1] = string.sub(member, colon + 1, colon + size)
    position = colon + size + 1
  end
  if #parts < 3 or #parts % 2 == 0 then return nil end
  table.remove(parts, 1)
  return parts
end

-- no delayed set ('') for a stream read by several groups: its receivers' delayed copies go to a queue of their own
local due = delayed == '' and {} or redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 100)
for _, member in ipairs(due) do
  redis.call('ZREM', delayed, member)
  local fields = fields_of(member)
  if fields then
    redis.call('XADD', stream, '*', unpack(fields))
  else
    redis.call('XADD', dead, '*', 'delayed', member)  -- kept raw: the dead letter says it is malformed
  end
end

if not check or redis.call('EXISTS', stream) == 0 then return {cursor, {}, 0} end
local legacy_waiting = redis.call('TYPE', legacy)['ok'] == 'list' and 1 or 0

local function field(list, name)
  for i = 1, #list, 2 do
    if list[i] == name then return list[i + 1] end
  end
end

local claimed = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local name, pending = field(consumer, 'name'), field(consumer, 'pending')
  if name ~= me and redis.call('EXISTS', alive .. name) == 0 then
    if pending > 0 and #claimed < room then
      local ids = {}
      for _, entry in ipairs(redis.call('XPENDING', stream, group, '-', '+', room - #claimed, name)) do
        ids[#ids + 1] = entry[1]
      end
      if #ids > 0 then
        for _, entry in ipairs(redis.call('XCLAIM', stream, group, me, 0, unpack(ids))) do
          if entry then claimed[#claimed + 1] = entry end
        end
      end
    end
    if holds_nothing(stream, group, name) then redis.call('XGROUP', 'DELCONSUMER', stream, group, name) end
  end
end

if #claimed < room then
  local result = redis.call('XAUTOCLAIM', stream, group, me, lease, cursor, 'COUNT', room - #claimed)
  cursor = result[1]
  for _, entry in ipairs(result[2]) do
    if entry then claimed[#claimed + 1] = entry end
  end
end
return {cursor, claimed, legacy_waiting}
"""
)

#: KEYS: delayed set. ARGV: delay (ms), member.
DELAY: Final = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
"""
)

#: KEYS: stream, alive key. ARGV: group, me, the released owner.
LEAVE: Final = (
    _HOLDS_NOTHING
    + """
local stream, alive = KEYS[1], KEYS[2]
local group, me, released = ARGV[1], ARGV[2], ARGV[3]
redis.call('DEL', alive)
if redis.call('EXISTS', stream) == 0 then return 0 end
local held = redis.call('XPENDING', stream, group, '-', '+', 100000, me)
if #held > 0 then
  local command = {'XCLAIM', stream, group, released, 0}
  for _, entry in ipairs(held) do command[#command + 1] = entry[1] end
  command[#command + 1] = 'JUSTID'
  redis.call(unpack(command))
end
if holds_nothing(stream, group, me) then redis.call('XGROUP', 'DELCONSUMER', stream, group, me) end
return #held
"""
)
