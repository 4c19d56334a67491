// Redis (ioredis): one Lua script per request, so check-and-record is atomic
// for every instance sharing the server. Each key is a hash of counts per
// second (field: the second, value: events in it), and beside it a hash of
// running totals, one per window length the key is checked against: the
// window's start and the events from that second on. A check moves each
// start to now - seconds and subtracts only the seconds it passes, so it
// costs the seconds elapsed since the key's last check, not the seconds of
// history it holds (a key with a day of busy seconds costs what a fresh one
// does). Seconds behind every start are dropped as they are passed, and keys
// expire after their longest window, so nothing needs cleaning. Scripts go
// as EVAL with their text on every call (no EVALSHA and script cache), so a
// new master after a Sentinel failover needs nothing loaded first.
import { isIP } from 'node:net';
import type { RateStore, ConsumeResult, EventRow } from '../store.js';
import { StoreError, storedKey } from '../store.js';
import { storeCall } from './wrap.js';
import { redactUrl } from '../../redact.js';
import { certificateFailure, type StoreTls } from '../store-tls.js';
import { storeHost } from '../../../shared/config/store-tls.js';
import { parseSentinelAddress, parseSentinelUrl, type SentinelMaster } from '../../../shared/config/redis-sentinel.js';
import { MAX_REDIS_SENTINELS } from '../../../shared/config/rate-schema.js';

/** The driver calls this backend makes. */
interface Redis {
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  hincrby(key: string, field: string, by: number): Promise<number>;
  hgetall(key: string): Promise<Record<string, string>>;
  del(key: string): Promise<number>;
  quit(): Promise<unknown>;
  on(ev: 'error' | 'sentinelError', f: (e: Error) => void): void;
  removeListener(ev: 'error', f: (e: Error) => void): void;
  once(ev: 'ready' | 'error' | 'end', f: (e?: Error) => void): void;
  disconnect(): void;
  ping(): Promise<string>;
}

/**
 * Counts per second (hashes), under this prefix and the key's storedKey()
 * (as are version 1 sets): at most STORE_KEY_MAX_BYTES however long the key.
 * Before storedKey(), a longer key was held as it came; such a hash or set is
 * no longer read and expires after its longest window. The layout is the one
 * quotapolicy has written since version 2 (plus SENTINEL), so an instance of
 * the previous release sharing the server during a rolling upgrade reads
 * every event this one records, and this one every event it records.
 */
const PREFIX = 'qp:rl2:';
/**
 * Running totals of a PREFIX hash, under this prefix and the same stored key:
 * field "e<seconds>" the first second of that window as last moved, field
 * "t<seconds>" the events the PREFIX hash holds from that second on.
 */
const TOTALS_PREFIX = 'qp:rl2w:';
/**
 * A field of every PREFIX hash whose totals are kept, second 0 with 0 events
 * (counted in no window). An instance of the previous release drops it as a
 * stale second whenever it records for the key, and its reset deletes the
 * hash: either way the totals no longer match, and the next check rebuilds
 * them from the hash (as costly, once, as that release's every check).
 */
const SENTINEL = '0';
/**
 * Version 1 kept a sorted set of events per key under this prefix. Such a key
 * is still read until it expires (after its longest window), so an upgrade
 * forgets no event; nothing writes it any more.
 */
const V1_PREFIX = 'qp:rl:';
const HITS = 'qp:rl-hits';
/** Fields per HMGET/HDEL call: Lua's unpack() has a stack limit of a few thousand values. */
const FIELD_CHUNK = 1000;
/**
 * KEYS: every bucket's hash, then every bucket's version-1 sorted set, then
 * every bucket's totals. ARGV: now, n, commit, then per bucket: window count,
 * then count/seconds pairs. A window [count, seconds] holds the events of
 * seconds now - seconds .. now (and any later: a clock ahead of this one).
 * Returns {} when accepted, else {bucket index, count, seconds, used}.
 *
 * Invariant, per tracked window s: t<s> = sum of the hash's fields >= e<s>.
 * Moving e<s> forward subtracts the seconds it passes; recording n at now
 * adds n to every total whose start is <= now. A range of seconds is read
 * field by field (HMGET) unless it is longer than the hash, then the hash is
 * read whole once (HGETALL): so a check costs at most what reading the whole
 * hash did before, and one second per window when the key is checked every
 * second.
 */
const CONSUME = `
local now, n, commit = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local buckets = #KEYS / 3
local chunk = ${FIELD_CHUNK}
local a, st = 4, {}
-- Writes a bucket's moved starts and totals (plus n recorded at now, when record).
local function save(b, record)
  if record then
    redis.call('HINCRBY', b.H, ARGV[1], n)
    for _, s in ipairs(b.lens) do
      if b.win[s][1] <= now then b.win[s][2] = b.win[s][2] + n end
    end
    b.changed = true
  end
  if b.changed and (b.exists or record) then
    local out = {}
    for _, s in ipairs(b.lens) do
      out[#out + 1] = 'e' .. s; out[#out + 1] = b.win[s][1]; out[#out + 1] = 't' .. s; out[#out + 1] = b.win[s][2]
    end
    redis.call('HSET', b.T, unpack(out))
    redis.call('HSET', b.H, '${SENTINEL}', 0)
    redis.call('EXPIRE', b.T, b.longest + 1)
    if record then redis.call('EXPIRE', b.H, b.longest + 1) end
  end
end
for k = 1, buckets do
  local H, V1, T = KEYS[k], KEYS[buckets + k], KEYS[2 * buckets + k]
  local w = {}
  for i = 1, tonumber(ARGV[a]) do w[i] = {tonumber(ARGV[a + 2 * i - 1]), tonumber(ARGV[a + 2 * i])} end
  a = a + 1 + 2 * #w
  local exists = redis.call('EXISTS', H) == 1
  if not (exists and redis.call('HEXISTS', H, '${SENTINEL}') == 1) then redis.call('DEL', T) end
  local all
  -- The whole hash, read once: {second, events, field}.
  local function scan()
    if all == nil then
      all = {}
      local f = redis.call('HGETALL', H)
      for i = 1, #f, 2 do
        if f[i] ~= '${SENTINEL}' then all[#all + 1] = {tonumber(f[i]), tonumber(f[i + 1]), f[i]} end
      end
    end
    return all
  end
  -- Events in seconds lo .. hi.
  local function sum(lo, hi)
    if hi < lo or not exists then return 0 end
    local c = 0
    if all ~= nil or hi - lo + 1 > redis.call('HLEN', H) then
      for _, f in ipairs(scan()) do if f[1] >= lo and f[1] <= hi then c = c + f[2] end end
      return c
    end
    for s = lo, hi, chunk do
      local names = {}
      for x = s, math.min(s + chunk - 1, hi) do names[#names + 1] = x end
      for _, v in ipairs(redis.call('HMGET', H, unpack(names))) do if v then c = c + tonumber(v) end end
    end
    return c
  end
  -- Tracked windows: seconds -> {start, total}.
  local win, lens, f = {}, {}, redis.call('HGETALL', T)
  for i = 1, #f, 2 do
    local s = tonumber(string.sub(f[i], 2))
    if win[s] == nil then win[s] = {0, 0}; lens[#lens + 1] = s end
    win[s][string.sub(f[i], 1, 1) == 'e' and 1 or 2] = tonumber(f[i + 1])
  end
  local oldLow = math.huge
  for _, s in ipairs(lens) do oldLow = math.min(oldLow, win[s][1]) end
  local changed = false
  for _, lim in ipairs(w) do
    local s = lim[2]
    if win[s] == nil then
      local c = 0
      if exists then for _, fl in ipairs(scan()) do if fl[1] >= now - s then c = c + fl[2] end end end
      win[s] = {now - s, c}; lens[#lens + 1] = s; changed = true
    end
  end
  local longest, low = 0, math.huge
  for _, s in ipairs(lens) do
    local e = win[s][1]
    if e < now - s then
      win[s] = {now - s, win[s][2] - sum(e, now - s - 1)}; changed = true
    end
    longest = math.max(longest, s)
    low = math.min(low, win[s][1])
  end
  -- Seconds behind every start are in no total: dropped.
  if exists and (low > oldLow or (oldLow == math.huge and all ~= nil)) then
    local stale = {}
    if all ~= nil then
      local kept = {}
      for _, fl in ipairs(all) do
        if fl[1] < low then stale[#stale + 1] = fl[3] else kept[#kept + 1] = fl end
      end
      all = kept
    else
      for x = oldLow, low - 1 do stale[#stale + 1] = x end
    end
    for i = 1, #stale, chunk do redis.call('HDEL', H, unpack(stale, i, math.min(i + chunk - 1, #stale))) end
  end
  local b = {H = H, T = T, win = win, lens = lens, longest = longest, exists = exists, changed = changed}
  st[k] = b
  local used = {}
  for i, lim in ipairs(w) do
    local ws = win[lim[2]]
    used[i] = ws[2] + sum(now - lim[2], ws[1] - 1)
  end
  if redis.call('EXISTS', V1) == 1 then
    for i, lim in ipairs(w) do
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', V1, now - lim[2], '+inf')) do
        used[i] = used[i] + tonumber(string.match(m, '^(%d+):'))
      end
    end
  end
  for i, lim in ipairs(w) do
    if used[i] + n > lim[1] then
      for j = 1, k do save(st[j], false) end
      return {k, lim[1], lim[2], used[i]}
    end
  end
end
for k = 1, buckets do save(st[k], commit) end
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
  if counts[i] ~= '${SENTINEL}' and tonumber(counts[i]) >= since then
    out[#out + 1] = tonumber(counts[i]); out[#out + 1] = tonumber(counts[i + 1])
  end
end
local old = redis.call('ZRANGEBYSCORE', KEYS[2], since, '+inf', 'WITHSCORES')
for i = 1, #old, 2 do
  out[#out + 1] = tonumber(old[i + 1]); out[#out + 1] = tonumber(string.match(old[i], '^(%d+):'))
end
return out
`;

/** KEYS: the hash, the version-1 sorted set, the totals. Deletes them; returns the events they held. */
const RESET = `
local n = 0
for _, c in ipairs(redis.call('HVALS', KEYS[1])) do n = n + tonumber(c) end
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do n = n + tonumber(string.match(m, '^(%d+):')) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return n
`;

/**
 * Longest wait between two attempts to reconnect (ioredis backs off 50 ms
 * more per attempt, up to this): its default, 2 s, would answer
 * db_error_action up to 2 s longer once the server, or with Sentinel the new
 * master, is back.
 */
const RECONNECT_MAX_MS = 500;
/** The same when no sentinel answered: how long before all are asked again (10 ms more per round). */
const SENTINEL_RETRY_MAX_MS = 500;
/**
 * How soon a lost subscription to a sentinel's +switch-master (how a
 * failover is heard of while the old master still answers) is made again;
 * ioredis's default is a minute.
 */
const SENTINEL_RESUBSCRIBE_MS = 5000;

/** Connects and answers PING: what check-config and the start-up warning try (see startup/store-probe.ts). */
export async function probeRedis(
  url: string,
  timeoutMs: number,
  tls: StoreTls | undefined,
  sentinels: readonly string[] | null,
): Promise<void> {
  const c = await connection(url, timeoutMs, tls, sentinels);
  const r = c.make();
  try {
    await ready(r, c.target, timeoutMs);
    await r.ping();
  } catch (e) {
    throw e instanceof StoreError ? e : new StoreError(`redis: ${(e as Error).message}`);
  } finally {
    r.disconnect();
  }
}

/**
 * ioredis's tls option: store_tls's files, the chain verified, and the name
 * too: Node checks the certificate against servername, else the host ioredis
 * connects to. A DNS name is sent as servername (SNI); an IP address never is
 * (RFC 6066), it is checked as the host.
 */
function redisTls(
  url: string,
  tls: StoreTls | undefined,
): { tls?: StoreTls & { rejectUnauthorized: true; servername?: string } } {
  if (tls === undefined) return {};
  const h = storeHost('redis', url);
  if ('why' in h) throw new StoreError(`redis: with store_tls, the URL ${h.why}`);
  return { tls: { ...tls, rejectUnauthorized: true, ...(isIP(h.host) === 0 ? { servername: h.host } : {}) } };
}

/** How to make a client (it connects at once, and reconnects by itself), and what it connects to, for messages. */
async function connection(
  url: string,
  timeoutMs: number,
  tls: StoreTls | undefined,
  sentinels: readonly string[] | null,
): Promise<{ make: () => Redis; target: string }> {
  // load.ts refuses store_tls with redis_sentinels: TLS to the sentinels is not built.
  if (tls !== undefined && sentinels !== null)
    throw new StoreError('redis: store_tls does not work with redis_sentinels');
  const { default: ioredis } = await import('ioredis');
  // No offline queue and no retry: while no server (or no master) is connected, calls fail at
  // once and db_error_action applies; nothing waits in a queue, and a call sent waits
  // commandTimeout at most. Reconnects by itself, at most RECONNECT_MAX_MS apart.
  const common = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    lazyConnect: false,
    retryStrategy: (attempt: number) => Math.min(attempt * 50, RECONNECT_MAX_MS),
  };
  const listen = (r: Redis): Redis => {
    // Failed calls say why, and a failed first connection says the last error (see ready()).
    const keep = (e: Error): void => {
      lastError.set(r, e);
    };
    r.on('error', keep);
    r.on('sentinelError', keep);
    return r;
  };
  if (sentinels === null) {
    const withTls = { ...common, ...redisTls(url, tls) };
    return { make: () => listen(new ioredis.Redis(url, withTls)), target: redactUrl(url) };
  }
  // load.ts refused any other url and address: these parse.
  const master = parseSentinelUrl(url) as SentinelMaster;
  // Every (re)connection asks the sentinels where the master is, and the ready check refuses
  // a server that is no master (a failover in between): a failover is followed by reconnecting.
  // The failover detector also hears +switch-master from the sentinels, for a demoted master
  // that still answers; a write refused as READONLY reconnects too.
  const options = {
    ...common,
    name: master.name,
    role: 'master' as const,
    username: master.username,
    password: master.password,
    db: master.db,
    // Only the listed sentinels are asked: the list an admin wrote is the whole list.
    updateSentinels: false,
    sentinelMaxConnections: MAX_REDIS_SENTINELS,
    sentinelCommandTimeout: timeoutMs,
    sentinelRetryStrategy: (round: number) => Math.min(round * 10, SENTINEL_RETRY_MAX_MS),
    sentinelReconnectStrategy: () => SENTINEL_RESUBSCRIBE_MS,
    failoverDetector: true,
    reconnectOnError: (e: Error) => e.message.startsWith('READONLY'),
  };
  return {
    // A list of its own each time: ioredis keeps the one it is given.
    make: () => listen(new ioredis.Redis({ ...options, sentinels: sentinels.map((s) => parseSentinelAddress(s)!) })),
    target: `master ${master.name} via sentinels ${sentinels.join(', ')}`,
  };
}

/** The last error a client reported, for the message when it does not connect. */
const lastError = new WeakMap<Redis, Error>();

/**
 * Waits until r is ready, timeoutMs at most (then disconnects it and says
 * why). A certificate store_tls refuses is refused again on every retry: said
 * at once, not after the timeout.
 */
function ready(r: Redis, target: string, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const refused = (e: Error): void => {
      const cert = certificateFailure(e);
      if (cert === undefined) return;
      clearTimeout(t);
      r.removeListener('error', refused);
      r.disconnect();
      reject(new StoreError(`redis: ${cert}`));
    };
    r.on('error', refused);
    const t = setTimeout(() => {
      r.removeListener('error', refused);
      r.disconnect();
      const last = lastError.get(r);
      const why = last === undefined ? '' : `: ${last.message}`;
      reject(new StoreError(`redis: no connection to ${target} in ${timeoutMs} ms${why}`));
    }, timeoutMs);
    r.once('ready', () => {
      clearTimeout(t);
      // Connected: a later failure is a reconnection's, which ioredis keeps trying (calls fail meanwhile).
      r.removeListener('error', refused);
      resolve();
    });
  });
}

export async function openRedis(
  url: string,
  timeoutMs: number,
  tls: StoreTls | undefined,
  sentinels: readonly string[] | null,
): Promise<RateStore> {
  const c = await connection(url, timeoutMs, tls, sentinels);
  let r = c.make();
  await ready(r, c.target, timeoutMs);
  // ioredis stops for good ('end') when a reconnection is cut short, as when its failover
  // detector hears +switch-master while it is still asking a sentinel where the master is:
  // then a new client takes its place, RECONNECT_MAX_MS later (calls fail meanwhile).
  let closed = false;
  let renewal: NodeJS.Timeout | undefined;
  const renewOnEnd = (client: Redis): void => {
    client.once('end', () => {
      if (closed) return;
      renewal = setTimeout(() => {
        client.disconnect();
        if (closed) return;
        r = c.make();
        renewOnEnd(r);
      }, RECONNECT_MAX_MS);
    });
  };
  renewOnEnd(r);
  const wrap = storeCall('redis');
  return {
    name: 'redis',
    consume: (req) =>
      wrap(async (): Promise<ConsumeResult> => {
        const args: (string | number)[] = [req.nowSec, req.n, req.commit ? '1' : '0'];
        for (const b of req.buckets) args.push(b.limits.length, ...b.limits.flat());
        const stored = req.buckets.map((b) => storedKey(b.key));
        const keys = [
          ...stored.map((k) => PREFIX + k),
          ...stored.map((k) => V1_PREFIX + k),
          ...stored.map((k) => TOTALS_PREFIX + k),
        ];
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
        return Number(await r.eval(RESET, 3, PREFIX + k, V1_PREFIX + k, TOTALS_PREFIX + k));
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
      closed = true;
      clearTimeout(renewal);
      await r.quit().catch(() => {});
      // quit() leaves the failover detector's connections to the sentinels open.
      r.disconnect();
    },
  };
}
