-- Confab's durable publish: one atomic step per room event.
-- KEYS: 1 sequence, 2 room stream, 3 global log, 4 hash room -> last seq,
--       5 dedup key (any key of the tag when ARGV[4] is 0).
-- ARGV: 1 room, 2 body, 3 live channel, 4 duplicate window in ms (0: none).
-- Returns {seq, duplicate (0/1)}.
local window = tonumber(ARGV[4])
if window > 0 then
  local first = redis.call('GET', KEYS[5])
  if first then
    return {tonumber(first), 1}
  end
end
-- Everything is validated before the first write: Redis does not roll a
-- script back, so a failure below must leave nothing half-written.
local want = {{KEYS[1], 'string'}, {KEYS[2], 'stream'}, {KEYS[3], 'stream'}, {KEYS[4], 'hash'}}
for _, kt in ipairs(want) do
  local t = redis.call('TYPE', kt[1])['ok']
  if t ~= 'none' and t ~= kt[2] then
    return redis.error_reply('ERR confab: key ' .. kt[1] .. ' holds a ' .. t .. ', not a ' .. kt[2])
  end
end
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if not last then
  return redis.error_reply('ERR confab: key ' .. KEYS[1] .. ' is not a sequence')
end
local seq = last + 1
local prev = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
if not prev or prev >= seq then
  return redis.error_reply('ERR confab: room ' .. ARGV[1] .. ' is ahead of the sequence (was ' .. KEYS[1] .. ' reset?)')
end
local top = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)[1]
if top and tonumber(string.match(top[1], '^(%d+)')) >= seq then
  return redis.error_reply('ERR confab: the log is ahead of the sequence (was ' .. KEYS[1] .. ' reset?)')
end
local now = redis.call('TIME')
local ms = string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local id = string.format('%d-0', seq)
local s = string.format('%d', seq)
redis.call('SET', KEYS[1], s)
if window > 0 then
  redis.call('SET', KEYS[5], s, 'NX', 'PX', window)
end
redis.call('XADD', KEYS[2], id, 'b', ARGV[2])
redis.call('XADD', KEYS[3], id, 'r', ARGV[1], 'b', ARGV[2], 't', ms)
redis.call('HSET', KEYS[4], ARGV[1], s)
redis.call('PUBLISH', ARGV[3], s .. ' ' .. string.format('%d', prev) .. '\n' .. ARGV[2])
return {seq, 0}
