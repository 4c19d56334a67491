// The Redis check-and-record script of the release before running totals
// (quotapolicy with store layout qp:rl2:, one HGETALL per check), verbatim,
// so that tests can run an instance of that release beside this one on the
// same server, as a rolling upgrade does. Never change it: it is history.
// KEYS: every bucket's hash, then every bucket's version-1 sorted set.
// ARGV: now, n, commit, then per bucket: window count, then count/seconds pairs.
export const PREVIOUS_RELEASE_CONSUME = `
local now, n, commit = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local buckets = #KEYS / 2
local a, longest, stale = 4, {}, {}
for k = 1, buckets do
  local w = {}
  longest[k] = 0
  for i = 1, tonumber(ARGV[a]) do
    w[i] = {tonumber(ARGV[a + 2 * i - 1]), tonumber(ARGV[a + 2 * i]), 0}
    if w[i][2] > longest[k] then longest[k] = w[i][2] end
  end
  a = a + 1 + 2 * #w
  local counts, old = redis.call('HGETALL', KEYS[k]), {}
  for i = 1, #counts, 2 do
    local sec, c = tonumber(counts[i]), tonumber(counts[i + 1])
    if sec < now - longest[k] then old[#old + 1] = counts[i] end
    for _, lim in ipairs(w) do
      if sec >= now - lim[2] then lim[3] = lim[3] + c end
    end
  end
  stale[k] = old
  if redis.call('EXISTS', KEYS[buckets + k]) == 1 then
    for _, lim in ipairs(w) do
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[buckets + k], now - lim[2], '+inf')) do
        lim[3] = lim[3] + tonumber(string.match(m, '^(%d+):'))
      end
    end
  end
  for _, lim in ipairs(w) do
    if lim[3] + n > lim[1] then return {k, lim[1], lim[2], lim[3]} end
  end
end
if commit then
  for k = 1, buckets do
    redis.call('HINCRBY', KEYS[k], ARGV[1], n)
    for i = 1, #stale[k], 1000 do
      redis.call('HDEL', KEYS[k], unpack(stale[k], i, math.min(i + 1000 - 1, #stale[k])))
    end
    redis.call('EXPIRE', KEYS[k], longest[k] + 1)
  end
end
return {}
`;
