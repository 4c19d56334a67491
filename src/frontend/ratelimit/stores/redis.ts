// Redis (ioredis): one Lua script per request, so check-and-record is atomic
// for every instance sharing the server. Each key is a hash of counts per
// second (field: the second, value: events in it), so a check reads at most
// one field per second of its longest window, however busy the key is; fields
// older than that window are dropped as the key is counted, and keys expire
// after their longest window, so nothing needs cleaning.
import type { RateStore, ConsumeResult, EventRow } from '../store.js';
import { StoreError, storedKey } from '../store.js';
import { storeCall } from './wrap.js';
import { redactUrl } from '../../redact.js';

/** The driver calls this backend makes. */
interface Redis {
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  hincrby(key: string, field: string, by: number): Promise<number>;
  hgetall(key: string): Promise<Record<string, string>>;
  del(key: string): Promise<number>;
  quit(): Promise<unknown>;
  on(ev: 'error', f: (e: Error) => void): void;
  once(ev: 'ready' | 'error', f: (e?: Error) => void): void;
  disconnect(): void;
  ping(): Promise<string>;
}

/**
 * Counts per second (hashes), under this prefix and the key's storedKey()
 * (as are version 1 sets): at most STORE_KEY_MAX_BYTES however long the key.
 * Before storedKey(), a longer key was held as it came; such a hash or set is
 * no longer read and expires after its longest window.
 */
const PREFIX = 'qp:rl2:';
/**
 * Version 1 kept a sorted set of events per key under this prefix. Such a key
 * is still read until it expires (after its longest window), so an upgrade
 * forgets no event; nothing writes it any more.
 */
const V1_PREFIX = 'qp:rl:';
const HITS = 'qp:rl-hits';
/** Fields per HDEL call: Lua's unpack() has a stack limit of a few thousand values. */
const HDEL_CHUNK = 1000;
/**
 * KEYS: every bucket's hash, then every bucket's version-1 sorted set.
 * ARGV: now, n, commit, then per bucket: window count, then count/seconds pairs.
 * A window [count, seconds] holds the events of seconds now - seconds .. now.
 * Returns {} when accepted, else {bucket index, count, seconds, used}.
 */
const CONSUME = `
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
    for i = 1, #stale[k], ${HDEL_CHUNK} do
      redis.call('HDEL', KEYS[k], unpack(stale[k], i, math.min(i + ${HDEL_CHUNK} - 1, #stale[k])))
    end
    redis.call('EXPIRE', KEYS[k], longest[k] + 1)
  end
end
return {}
`;

/**
 * KEYS: the hash, the version-1 sorted set. ARGV: since. Returns a flat
 * {second, events, ...} of both, unsorted (a second may come twice).
 */
const EVENTS = `
local since, out = tonumber(ARGV[1]), {}
local counts = redis.call('HGETALL', KEYS[1])
for i = 1, #counts, 2 do
  if tonumber(counts[i]) >= since then out[#out + 1] = tonumber(counts[i]); out[#out + 1] = tonumber(counts[i + 1]) end
end
local old = redis.call('ZRANGEBYSCORE', KEYS[2], since, '+inf', 'WITHSCORES')
for i = 1, #old, 2 do
  out[#out + 1] = tonumber(old[i + 1]); out[#out + 1] = tonumber(string.match(old[i], '^(%d+):'))
end
return out
`;

/** KEYS: the hash, the version-1 sorted set. Deletes both; returns the events they held. */
const RESET = `
local n = 0
for _, c in ipairs(redis.call('HVALS', KEYS[1])) do n = n + tonumber(c) end
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do n = n + tonumber(string.match(m, '^(%d+):')) end
redis.call('DEL', KEYS[1], KEYS[2])
return n
`;

/** Connects and answers PING: what check-config and the start-up warning try (see startup/store-probe.ts). */
export async function probeRedis(url: string, timeoutMs: number): Promise<void> {
  const r = await connect(url, timeoutMs);
  try {
    await r.ping();
  } catch (e) {
    throw new StoreError(`redis: ${(e as Error).message}`);
  } finally {
    r.disconnect();
  }
}

async function connect(url: string, timeoutMs: number): Promise<Redis> {
  const { default: ioredis } = await import('ioredis');
  // Typed as the calls this file makes; tsc checks ioredis's own types fit them.
  // No offline queue: while Redis is down, calls fail at once and db_error_action applies.
  const r: Redis = new ioredis.Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    lazyConnect: false,
  });
  // Reconnects by itself; failed calls say why, and a failed first connection says the last error.
  let last: Error | undefined;
  r.on('error', (e) => {
    last = e;
  });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      r.disconnect();
      const why = last === undefined ? '' : `: ${last.message}`;
      reject(new StoreError(`redis: no connection to ${redactUrl(url)} in ${timeoutMs} ms${why}`));
    }, timeoutMs);
    r.once('ready', () => {
      clearTimeout(t);
      resolve();
    });
  });
  return r;
}

export async function openRedis(url: string, timeoutMs: number): Promise<RateStore> {
  const r = await connect(url, timeoutMs);
  const wrap = storeCall('redis');
  return {
    name: 'redis',
    consume: (req) =>
      wrap(async (): Promise<ConsumeResult> => {
        const args: (string | number)[] = [req.nowSec, req.n, req.commit ? '1' : '0'];
        for (const b of req.buckets) args.push(b.limits.length, ...b.limits.flat());
        const stored = req.buckets.map((b) => storedKey(b.key));
        const keys = [...stored.map((k) => PREFIX + k), ...stored.map((k) => V1_PREFIX + k)];
        const out = (await r.eval(CONSUME, keys.length, ...keys, ...args)) as number[];
        if (out.length === 0) return { ok: true };
        return { ok: false, key: req.buckets[out[0]! - 1]!.key, limit: [out[1]!, out[2]!], used: out[3]! };
      }),
    events: (key, since) =>
      wrap(async (): Promise<EventRow[]> => {
        const k = storedKey(key);
        const flat = (await r.eval(EVENTS, 2, PREFIX + k, V1_PREFIX + k, since)) as number[];
        const per = new Map<number, number>();
        for (let i = 0; i < flat.length; i += 2) per.set(flat[i]!, (per.get(flat[i]!) ?? 0) + flat[i + 1]!);
        return [...per].sort((a, b) => a[0] - b[0]).map(([at, n]) => ({ at, n }));
      }),
    reset: (key) =>
      wrap(async () => {
        const k = storedKey(key);
        return Number(await r.eval(RESET, 2, PREFIX + k, V1_PREFIX + k));
      }),
    limitsFor: async () => undefined,
    recordHit: (key, seconds) =>
      wrap(async () => {
        await r.hincrby(HITS, `${seconds}\t${storedKey(key)}`, 1);
      }),
    hits: () =>
      wrap(async () =>
        Object.entries(await r.hgetall(HITS))
          .map(([f, v]) => {
            const tab = f.indexOf('\t');
            return { key: f.slice(tab + 1), seconds: Number(f.slice(0, tab)), hits: Number(v) };
          })
          .sort((a, b) => b.hits - a.hits || a.key.localeCompare(b.key)),
      ),
    clearHits: () =>
      wrap(async () => {
        await r.del(HITS);
      }),
    clean: async () => 0,
    close: async () => {
      await r.quit().catch(() => {});
    },
  };
}
