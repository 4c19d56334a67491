// Redis (ioredis): one Lua script per request, so check-and-record is atomic
// for every instance sharing the server. Each key is a sorted set of events
// scored by time; members are "n:unique". Keys expire after their longest
// window, so nothing needs cleaning.
import { randomBytes } from 'node:crypto';
import type { RateStore, ConsumeResult } from '../store.js';
import { StoreError } from '../store.js';

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
}

const PREFIX = 'qp:rl:';
const HITS = 'qp:rl-hits';
/**
 * KEYS: bucket keys. ARGV: now, n, commit, unique, then per key: window count,
 * then count/seconds pairs. Returns {} when accepted, else {key index, count, seconds, used}.
 */
const CONSUME = `
local now, n, commit, uniq = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
local a, windows = 5, {}
for k = 1, #KEYS do
  local w = {}
  for i = 1, tonumber(ARGV[a]) do w[i] = {tonumber(ARGV[a + 2 * i - 1]), tonumber(ARGV[a + 2 * i])} end
  a = a + 1 + 2 * #w
  windows[k] = w
  for _, lim in ipairs(w) do
    local used = 0
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[k], now - lim[2], '+inf')) do
      used = used + tonumber(string.match(m, '^(%d+):'))
    end
    if used + n > lim[1] then return {k, lim[1], lim[2], used} end
  end
end
if commit then
  for k = 1, #KEYS do
    local longest = 0
    for _, lim in ipairs(windows[k]) do if lim[2] > longest then longest = lim[2] end end
    redis.call('ZADD', KEYS[k], now, n .. ':' .. uniq)
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now - longest - 1)
    redis.call('EXPIRE', KEYS[k], longest + 1)
  end
end
return {}
`;

export async function openRedis(url: string, timeoutMs: number): Promise<RateStore> {
  const mod = (await import('ioredis')) as unknown as { default: new (url: string, o: object) => Redis };
  // No offline queue: while Redis is down, calls fail at once and db_error_action applies.
  const r = new mod.default(url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, connectTimeout: timeoutMs, commandTimeout: timeoutMs, lazyConnect: false });
  r.on('error', () => { /* reconnects by itself; failed calls say why */ });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => { r.disconnect(); reject(new StoreError(`redis: no connection to ${url} in ${timeoutMs} ms`)); }, timeoutMs);
    r.once('ready', () => { clearTimeout(t); resolve(); });
  });
  const wrap = async <T>(f: () => Promise<T>): Promise<T> => {
    try {
      return await f();
    } catch (e) {
      throw new StoreError(`redis: ${(e as Error).message}`);
    }
  };
  return {
    name: 'redis',
    consume: (req) => wrap(async (): Promise<ConsumeResult> => {
      const args: (string | number)[] = [req.nowSec, req.n, req.commit ? '1' : '0', randomBytes(9).toString('base64url')];
      for (const b of req.buckets) args.push(b.limits.length, ...b.limits.flat());
      const out = (await r.eval(CONSUME, req.buckets.length, ...req.buckets.map((b) => PREFIX + b.key), ...args)) as number[];
      if (out.length === 0) return { ok: true };
      return { ok: false, key: req.buckets[out[0]! - 1]!.key, limit: [out[1]!, out[2]!], used: out[3]! };
    }),
    limitsFor: async () => undefined,
    recordHit: (key, seconds) => wrap(async () => { await r.hincrby(HITS, `${seconds}\t${key}`, 1); }),
    hits: () => wrap(async () => Object.entries(await r.hgetall(HITS)).map(([f, v]) => {
      const tab = f.indexOf('\t');
      return { key: f.slice(tab + 1), seconds: Number(f.slice(0, tab)), hits: Number(v) };
    }).sort((a, b) => b.hits - a.hits || a.key.localeCompare(b.key))),
    clearHits: () => wrap(async () => { await r.del(HITS); }),
    clean: async () => 0,
    close: async () => { await r.quit().catch(() => {}); },
  };
}
