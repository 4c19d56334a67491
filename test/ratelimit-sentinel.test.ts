// Redis Sentinel (issue 13, "Real deployments"): a master, its replica and
// one sentinel of our own, on ports of our own. The daemon finds the master
// through the sentinel; under load the master is stopped (SIGTERM), the
// sentinel promotes the replica, and the same daemon answers db_error_action
// during the gap and counts on the new master after it, with no restart and
// exact counts. Also: each refusal of the config, and check-config's probe.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, fakeQuota, startDaemon, writeConfig, type Daemon } from './support/daemon.js';
import { exchange, rcpt } from './support/policy-client.js';
import { parseConfig, ConfigError } from '../src/shared/config/load.js';
import { openStore } from '../src/frontend/ratelimit/open-store.js';
import { NO_STORE_TLS } from '../src/frontend/ratelimit/store-tls.js';
import type { RateStore } from '../src/frontend/ratelimit/store.js';

/** Ports this file owns (given to it: 6390-6399 for Redis, 26390-26399 for sentinels). */
const PORTS = [
  { master: 6390, replica: 6391, sentinel: 26390 },
  { master: 6392, replica: 6393, sentinel: 26391 },
  { master: 6394, replica: 6395, sentinel: 26392 },
] as const;
/** A relay in front of the third sentinel, which can hold what new connections send. */
const RELAY_PORT = 26393;
const MASTER_PORT = PORTS[0].master;
const REPLICA_PORT = PORTS[0].replica;
const SENTINEL_PORT = PORTS[0].sentinel;
const NAME = 'qptest';
/** How long the sentinel waits before it calls the master down, and a failover's limit. */
const DOWN_AFTER_MS = 1000;
const FAILOVER_TIMEOUT_MS = 5000;
const LIMIT = 200;
const DOWN = '451 4.3.0 rate limit store in failover';
const FAIL = 'DEFER_IF_PERMIT Rate limit reach, retry later';
/** Connections sending for the limited id, and for ids of their own; the pause between two requests of one. */
const LIMITED_CONNECTIONS = 3;
const OTHER_CONNECTIONS = 3;
const PACE_MS = 15;
/** Accepted for the limited id before the master is stopped: well short of LIMIT, so it is reached on the new master. */
const BEFORE_KILL = 40;
/** The daemon's store calls: short, as the gap is answered at once anyway (no master: no call is sent). */
const STORE_TIMEOUT_MS = 500;
/** A reply slower than this is a hang. */
const REPLY_TIMEOUT_MS = 5000;

const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30_000 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const redisCli = (port: number, ...args: string[]): string => {
  const r = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8' });
  if (r.error) throw new Error(`redis-cli: ${r.error.message} (scripts/setup.sh --test installs redis-tools)`);
  return r.stdout;
};

/** Starts a server in the foreground; resolves once its log says `ready`. */
function server(cmd: string, args: string[], ready: RegExp, procs: ChildProcess[]): Promise<ChildProcess> {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(p);
  return new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`${cmd} not ready in 10 s: ${out}`)), 10_000);
    p.on('error', (e) =>
      reject(new Error(`${cmd}: ${e.message} (scripts/setup.sh --test installs redis-server and redis-sentinel)`)),
    );
    p.on('exit', (code) => reject(new Error(`${cmd} exited (${code}): ${out}`)));
    const seen = (d: Buffer): void => {
      out += d.toString();
      if (ready.test(out)) {
        clearTimeout(t);
        resolve(p);
      }
    };
    p.stdout.on('data', seen);
    p.stderr.on('data', seen);
  });
}

async function waitUntil(what: string, ok: () => boolean, timeoutMs: number, state = () => ''): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`not in ${timeoutMs} ms: ${what}${state()}`);
    await sleep(50);
  }
}

async function stopAll(procs: ChildProcess[]): Promise<void> {
  for (const p of procs) {
    if (p.exitCode !== null || p.signalCode !== null) continue;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(t);
  }
}

interface Reply {
  id: string;
  at: number;
  action: string;
}

/** One policy connection sending requests for `id` one after another until stop(); every reply, timed. */
function client(path: string, id: string, replies: Reply[], running: () => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path });
    let buf = '';
    let timer: NodeJS.Timeout | undefined;
    const send = (): void => {
      if (!running()) {
        s.end();
        resolve();
        return;
      }
      timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`no reply for ${id} in ${REPLY_TIMEOUT_MS} ms: the daemon hangs`));
      }, REPLY_TIMEOUT_MS);
      s.write(rcpt('someone@example.test', { sasl_username: id }));
    };
    s.on('connect', send);
    s.on('error', reject);
    s.on('close', () => (running() ? reject(new Error(`the daemon closed ${id}'s connection`)) : resolve()));
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      let end;
      while ((end = buf.indexOf('\n\n')) !== -1) {
        clearTimeout(timer);
        replies.push({ id, at: Date.now(), action: buf.slice(0, end).replace(/^action=/, '') });
        buf = buf.slice(end + 2);
        setTimeout(send, PACE_MS);
      }
    });
  });
}

/** Ports of one master, its replica and its sentinel. */
interface Ports {
  master: number;
  replica: number;
  sentinel: number;
}

/** A master, its replica (in sync) and a sentinel that knows both, started in `dir`. */
async function cluster(
  dir: string,
  ports: Ports,
  procs: ChildProcess[],
): Promise<{ master: ChildProcess; masterAddr: () => string | undefined }> {
  const redisArgs = (port: number) => [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    dir,
  ];
  const master = await server('redis-server', redisArgs(ports.master), /Ready to accept connections/, procs);
  await server(
    'redis-server',
    [...redisArgs(ports.replica), '--replicaof', '127.0.0.1', String(ports.master)],
    /Ready to accept connections/,
    procs,
  );
  await waitUntil(
    'the replica is in sync',
    () => /master_link_status:up/.test(redisCli(ports.replica, 'info', 'replication')),
    10_000,
  );
  const sconf = join(dir, `sentinel-${ports.sentinel}.conf`);
  writeFileSync(
    sconf,
    `port ${ports.sentinel}\nbind 127.0.0.1\ndir ${dir}\n` +
      `sentinel monitor ${NAME} 127.0.0.1 ${ports.master} 1\n` +
      `sentinel down-after-milliseconds ${NAME} ${DOWN_AFTER_MS}\nsentinel failover-timeout ${NAME} ${FAILOVER_TIMEOUT_MS}\n`,
  );
  await server('redis-sentinel', [sconf], /\+monitor master/, procs);
  await waitUntil(
    'the sentinel knows the replica',
    () => redisCli(ports.sentinel, 'sentinel', 'replicas', NAME).includes(String(ports.replica)),
    15_000,
  );
  return {
    master,
    masterAddr: () => redisCli(ports.sentinel, 'sentinel', 'get-master-addr-by-name', NAME).split('\n')[1],
  };
}

/** The daemon's config (a file in `at`): the limited id, the others, the sentinel. */
function daemonConfig(at: string, sock: string, sentinel: number, timeoutMs: number): string {
  mkdirSync(at, { recursive: true, mode: 0o755 });
  return writeConfig(
    at,
    `checks: [rate_limit]\nquota_path: ${fakeQuota().path}\nsocket_group: quotapolicy\nlisten: ["unix:${sock}"]\n` +
      `rate_limit:\n  backend: redis\n  url: "redis://${NAME}/0"\n  redis_sentinels: ["127.0.0.1:${sentinel}"]\n` +
      `  limits: [[1000000, 86400]]\n  limits_by_id: {limited: [[${LIMIT}, 86400]]}\n` +
      `  store_timeout_ms: ${timeoutMs}\n  db_error_action: "${DOWN}"\n`,
  );
}

/** Starts the daemon and waits until its store answers (it is opened on first use). */
async function readyDaemon(cfg: string, sock: string): Promise<Daemon> {
  const d = startDaemon(['--config', cfg]);
  await d.waitFor((l) => l.msg === 'front ready');
  for (let i = 0; ; i++) {
    const r = await exchange({ path: sock }, [rcpt('someone@example.test', { sasl_username: 'warmup' })], {
      replies: 1,
    });
    if (r.text === 'action=DUNNO\n\n') return d;
    assert.ok(i < 50, `the store never answered: ${r.text}`);
    await sleep(100);
  }
}

/** What the store (through the sentinels, so on the current master) holds for sasl:ID today. */
function held(cfg: string, id: string): number {
  const shown = cli('ratelimit', 'show', `sasl:${id}`, '--config', cfg);
  assert.equal(shown.status, 0, shown.stderr);
  const used = /in 86400 s: (\d+) used/.exec(shown.stdout);
  assert.ok(used, shown.stdout);
  return Number(used[1]);
}

const count = (rs: Reply[], id: string, action: string): number =>
  rs.filter((r) => r.id === id && r.action === action).length;

test(`Sentinel failover under load: ${DOWN} during the gap, exact counts on the new master`, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-sentinel-'));
  chmodSync(dir, 0o755);
  const procs: ChildProcess[] = [];
  let d: Daemon | undefined;
  let running = true;
  const clients: Promise<void>[] = [];
  try {
    const { master, masterAddr } = await cluster(dir, PORTS[0], procs);
    assert.equal(masterAddr(), String(MASTER_PORT));

    const sock = join(dir, 'p.sock');
    const cfg = daemonConfig(dir, sock, SENTINEL_PORT, STORE_TIMEOUT_MS);
    // check-config's probe finds the master through the sentinel: no warning. (Its deadline
    // includes loading the driver, so it gets more time than the daemon's calls on a busy machine.)
    const checked = cli('check-config', '--config', daemonConfig(join(dir, 'check'), sock, SENTINEL_PORT, 5000));
    assert.equal(checked.status, 0, checked.stderr);
    assert.equal(checked.stderr, '');

    // Once the store answers, every reply until the stop is counted.
    d = await readyDaemon(cfg, sock);
    const replies: Reply[] = [];
    const others = Array.from({ length: OTHER_CONNECTIONS }, (_, i) => `other${i}`);
    for (let i = 0; i < LIMITED_CONNECTIONS; i++) clients.push(client(sock, 'limited', replies, () => running));
    for (const id of others) clients.push(client(sock, id, replies, () => running));
    // Rejections are looked at when all have ended; a hang or a closed connection fails the test there.
    const ended = Promise.all(clients);
    ended.catch(() => {});

    await waitUntil(
      `${BEFORE_KILL} accepted before the stop`,
      () => count(replies, 'limited', 'DUNNO') >= BEFORE_KILL,
      20_000,
    );
    const killedAt = Date.now();
    const beforeKill = replies.length;
    master.kill('SIGTERM');
    await new Promise((r) => master.once('exit', r));
    const exitedAt = Date.now();
    // The gap is seen, then the new master answers: the limited id fills up, the others pass again.
    await waitUntil(
      'db_error_action during the gap',
      () => replies.slice(beforeKill).some((r) => r.action === DOWN),
      15_000,
    );
    await waitUntil(
      `the limit is reached on the new master and the others pass again`,
      () => {
        const after = replies.slice(beforeKill);
        const lastDown = after.map((r) => r.action).lastIndexOf(DOWN);
        return (
          count(replies, 'limited', FAIL) >= 10 &&
          others.every(
            (id) => after.slice(lastDown + 1).filter((r) => r.id === id && r.action === 'DUNNO').length >= 10,
          )
        );
      },
      30_000,
      () => {
        const last = replies.slice(-12).map((r) => `${r.id} ${r.action}`);
        return `; master ${masterAddr()}; last replies: ${last.join(' | ')}; daemon: ${JSON.stringify(d!.lines.filter((l) => l.level !== 'info').slice(-5))}`;
      },
    );
    running = false;
    await ended;
    assert.equal(d.proc.exitCode, null, 'the daemon is still running');
    assert.equal(masterAddr(), String(REPLICA_PORT), 'the sentinel promoted the replica');

    // Every reply is one of the three, and no id ever got anything else.
    const kinds = new Map<string, number>();
    for (const r of replies) kinds.set(r.action, (kinds.get(r.action) ?? 0) + 1);
    assert.deepEqual([...kinds.keys()].sort(), [DOWN, FAIL, 'DUNNO'].sort(), JSON.stringify([...kinds]));
    for (const id of others) assert.equal(count(replies, id, FAIL), 0, `${id} is never refused`);
    // db_error_action only after the stop (the warm-up made sure the store was open).
    assert.ok(
      replies.slice(0, beforeKill).every((r) => r.action !== DOWN),
      'no db_error_action before the stop',
    );
    const downs = replies.filter((r) => r.action === DOWN);
    const firstDown = downs[0]!.at;
    const lastDown = downs.at(-1)!.at;
    const firstBack = replies.find((r) => r.at > lastDown && r.action !== DOWN)!.at;
    // Exact: the limited id was accepted exactly LIMIT times (then refused), and the store
    // on the new master holds exactly what was accepted, for every id.
    assert.equal(count(replies, 'limited', 'DUNNO'), LIMIT);
    for (const id of ['limited', ...others])
      assert.equal(held(cfg, id), count(replies, id, 'DUNNO'), `${id}: the store holds what was accepted`);
    const summary = {
      replies: replies.length,
      kinds: Object.fromEntries(kinds),
      limited: {
        accepted: count(replies, 'limited', 'DUNNO'),
        refused: count(replies, 'limited', FAIL),
        down: count(replies, 'limited', DOWN),
      },
      stop_to_exit_ms: exitedAt - killedAt,
      stop_to_first_down_ms: firstDown - killedAt,
      first_to_last_down_ms: lastDown - firstDown,
      stop_to_answers_again_ms: firstBack - killedAt,
    };
    console.log(`sentinel failover: ${JSON.stringify(summary)}`);
    // The gap is about down-after-milliseconds plus the failover, not the failover timeout or more.
    assert.ok(firstBack - killedAt < DOWN_AFTER_MS + FAILOVER_TIMEOUT_MS, JSON.stringify(summary));
  } finally {
    running = false;
    await Promise.allSettled(clients);
    await d?.stop();
    await stopAll(procs);
    rmSync(dir, { recursive: true, force: true });
  }
});

/** How late after the switch a write may still reach the old master: the sentinel's message, the reconnect. */
const SWITCH_SLACK_MS = 250;

// A manual failover (SENTINEL FAILOVER) leaves the old master up and taking writes until the
// sentinel reconfigures it as a replica, seconds later. The store must leave it when the sentinel
// announces the switch (+switch-master), not when it stops answering. What Sentinel's own
// sequence loses is bounded: only counts written between the request and the switch (the
// replica is promoted first, so the old master's last writes never reach it).
test('SENTINEL FAILOVER, the old master still up: the store follows the switch at once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-sentinel-manual-'));
  chmodSync(dir, 0o755);
  const procs: ChildProcess[] = [];
  let d: Daemon | undefined;
  let running = true;
  const clients: Promise<void>[] = [];
  try {
    const ports = PORTS[1];
    const { masterAddr } = await cluster(dir, ports, procs);
    const sock = join(dir, 'p.sock');
    const cfg = daemonConfig(dir, sock, ports.sentinel, STORE_TIMEOUT_MS);
    d = await readyDaemon(cfg, sock);
    const replies: Reply[] = [];
    const ids = ['m0', 'm1', 'm2'];
    for (const id of ids) clients.push(client(sock, id, replies, () => running));
    const ended = Promise.all(clients);
    ended.catch(() => {});
    await waitUntil('traffic before the failover', () => replies.length >= 60, 20_000);
    const askedAt = Date.now();
    assert.match(redisCli(ports.sentinel, 'sentinel', 'failover', NAME), /^OK/);
    await waitUntil('the replica is promoted', () => masterAddr() === String(ports.replica), 15_000);
    const switchedAt = Date.now();
    assert.match(redisCli(ports.master, 'info', 'replication'), /role:master/, 'the old master still takes writes');
    await waitUntil(
      'counted after the switch',
      () => ids.every((id) => replies.filter((r) => r.at > switchedAt + SWITCH_SLACK_MS && r.id === id).length >= 30),
      15_000,
    );
    running = false;
    await ended;
    assert.equal(d.proc.exitCode, null, 'the daemon is still running');
    const kinds = new Map<string, number>();
    for (const r of replies) kinds.set(r.action, (kinds.get(r.action) ?? 0) + 1);
    assert.deepEqual(
      [...kinds.keys()].filter((k) => k !== DOWN),
      ['DUNNO'],
      JSON.stringify([...kinds]),
    );
    const lost: Record<string, [number, number, number]> = {};
    for (const id of ids) {
      const accepted = count(replies, id, 'DUNNO');
      const inWindow = replies.filter(
        (r) => r.id === id && r.action === 'DUNNO' && r.at >= askedAt && r.at <= switchedAt + SWITCH_SLACK_MS,
      ).length;
      const h = held(cfg, id);
      lost[id] = [accepted, h, inWindow];
      // Never counted twice; whatever is missing was written before the switch was known, not after.
      assert.ok(
        h <= accepted && h >= accepted - inWindow,
        `${id}: accepted, held, accepted in the window: ${lost[id].join(', ')}`,
      );
    }
    console.log(
      `sentinel manual failover: ${JSON.stringify({ kinds: Object.fromEntries(kinds), ask_to_switch_ms: switchedAt - askedAt, accepted_held_inwindow: lost })}`,
    );
  } finally {
    running = false;
    await Promise.allSettled(clients);
    await d?.stop();
    await stopAll(procs);
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * A TCP relay to a sentinel. While `hold` is on, what a new connection sends waits
 * (the connection is open, its question unanswered) until release().
 */
function relay(port: number, to: number): { hold: boolean; held: () => number; release: () => void; stop: () => void } {
  const sockets = new Set<net.Socket>();
  const waiting: (() => void)[] = [];
  const state = {
    hold: false,
    held: () => waiting.length,
    release: () => {
      for (const go of waiting.splice(0)) go();
    },
    stop: () => {
      for (const x of sockets) x.destroy();
      server.close();
    },
  };
  const server = net.createServer((down) => {
    const up = net.connect(to, '127.0.0.1');
    for (const x of [down, up]) {
      sockets.add(x);
      x.on('error', () => {});
      x.on('close', () => {
        down.destroy();
        up.destroy();
      });
    }
    up.pipe(down);
    if (!state.hold) {
      down.pipe(up);
      return;
    }
    const pending: Buffer[] = [];
    const keep = (d: Buffer): number => pending.push(d);
    down.on('data', keep);
    waiting.push(() => {
      down.off('data', keep);
      for (const d of pending) up.write(d);
      down.pipe(up);
    });
  });
  server.listen(port, '127.0.0.1');
  return state;
}

// ioredis gives a client up for good ('end') when its failover detector hears +switch-master
// while a reconnection is still asking a sentinel where the master is. Made to happen here: the
// store's connection to the master is killed, its question to the sentinel held by a relay, a
// failover made, the question let go. The store must start a new client and count again.
test('a failover heard of while asking the sentinel: the store starts again and counts on the new master', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-sentinel-race-'));
  const procs: ChildProcess[] = [];
  const ports = PORTS[2];
  let gate: ReturnType<typeof relay> | undefined;
  let store: RateStore | undefined;
  try {
    const { masterAddr } = await cluster(dir, ports, procs);
    gate = relay(RELAY_PORT, ports.sentinel);
    store = await openStore({
      ...NO_STORE_TLS,
      backend: 'redis',
      url: `redis://${NAME}`,
      redis_sentinels: [`127.0.0.1:${RELAY_PORT}`],
      sqlite_path: '',
      timeout_ms: 2000,
      sql_limits_by_id: '',
    });
    const key = `race:${process.pid}`;
    const consume = () =>
      store!.consume({
        buckets: [{ key, limits: [[1000, 3600]] }],
        n: 1,
        nowSec: Math.floor(Date.now() / 1000),
        commit: true,
      });
    assert.deepEqual(await consume(), { ok: true });
    await sleep(300); // the failover detector subscribes once connected
    gate.hold = true;
    const ours = /^id=(\d+) .* cmd=eval /m.exec(redisCli(ports.master, 'client', 'list'));
    assert.ok(ours, 'the store is connected to the master');
    assert.match(redisCli(ports.master, 'client', 'kill', 'id', ours[1]!), /^1/);
    await waitUntil('the reconnection asks the sentinel (held)', () => gate!.held() > 0, 5000);
    assert.match(redisCli(ports.sentinel, 'sentinel', 'failover', NAME), /^OK/);
    await waitUntil('the replica is promoted', () => masterAddr() === String(ports.replica), 15_000);
    await sleep(300); // +switch-master reaches the detector through the relay
    gate.hold = false;
    gate.release();
    const end = Date.now() + 10_000;
    let last: unknown;
    for (;;) {
      try {
        last = await consume();
        break;
      } catch (e) {
        last = e;
        assert.ok(Date.now() < end, `the store never counted again: ${String(last)}`);
        await sleep(100);
      }
    }
    assert.deepEqual(last, { ok: true });
    assert.equal(
      (await store.events(key, 0)).reduce((a, e) => a + e.n, 0),
      2,
      'both counted, on the new master',
    );
  } finally {
    await store?.close();
    gate?.stop();
    await stopAll(procs);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('redis_sentinels: each wrong setting is refused with its reason', () => {
  const err = (rate: string): string => {
    try {
      parseConfig(`rate_limit:\n${rate}`, 'f.yaml');
    } catch (e) {
      assert.ok(e instanceof ConfigError);
      return e.message;
    }
    assert.fail(`accepted: ${rate}`);
  };
  const ok = '  backend: redis\n  url: "redis://mymaster"\n';
  // What passes: a name, with a password and a database; several sentinels, IPv6 among them.
  for (const url of ['redis://mymaster', 'redis://:s3cret@mymaster/2', 'redis://qp:s3cret@my-master.1_x/0'])
    assert.equal(
      parseConfig(
        `rate_limit:\n  backend: redis\n  url: "${url}"\n  redis_sentinels: ["10.0.0.1:26379", "[::1]:26379", "s3.example.org:26380"]\n`,
        'f.yaml',
      ).rate_limit.redis_sentinels?.length,
      3,
    );
  assert.match(
    err('  backend: redis\n  url: "redis://mymaster:6379"\n  redis_sentinels: ["127.0.0.1:26379"]\n'),
    /^rate_limit\.url \(f\.yaml\): with redis_sentinels the url names the master as the sentinels know it: redis:\/\/\[\[user\]:password@\]NAME\[\/db\]: no port/,
  );
  assert.match(
    err('  backend: redis\n  url: "redis://:secret@127.0.0.1:6379/0"\n  redis_sentinels: ["127.0.0.1:26379"]\n'),
    /^rate_limit\.url \(f\.yaml\): .*: no port/,
  );
  assert.doesNotMatch(err('  backend: redis\n  url: "redis://:secret@m:1/0"\n  redis_sentinels: ["h:1"]\n'), /secret/);
  assert.match(
    err('  backend: redis\n  url: "redis://m?family=6"\n  redis_sentinels: ["h:1"]\n'),
    /url \(f\.yaml\): .*: no query or fragment/,
  );
  assert.match(err('  backend: redis\n  url: "redis://m/x"\n  redis_sentinels: ["h:1"]\n'), /db must be a number/);
  assert.match(
    err('  backend: postgresql\n  url: "postgresql://u@h/db"\n  redis_sentinels: ["127.0.0.1:26379"]\n'),
    /^rate_limit\.redis_sentinels \(f\.yaml\): needs backend redis \(backend is postgresql\)$/,
  );
  assert.match(
    err(`${ok}  redis_sentinels: ["127.0.0.1:26379"]\n  store_tls: true\n`),
    /^rate_limit\.store_tls \(f\.yaml\): not available with redis_sentinels/,
  );
  assert.match(
    err('  redis_sentinels: ["127.0.0.1:26379"]\n'),
    /^rate_limit\.redis_sentinels \(f\.yaml\): needs backend redis \(backend is sqlite\)$/,
  );
  assert.match(
    err(`${ok}  redis_sentinels: []\n`),
    /^rate_limit\.redis_sentinels \(f\.yaml line 4\): must list at least one sentinel "host:port" \(or be null: no Sentinel\)$/,
  );
  for (const bad of [
    '"127.0.0.1"',
    '"h:0"',
    '"h:65536"',
    '":26379"',
    '"::1:26379"',
    '"h :1"',
    '26379',
    '"h:port"',
    '"[1.2.3.4]:1"',
    '"[:]:1"',
  ])
    assert.match(
      err(`${ok}  redis_sentinels: [${bad}]\n`),
      /^rate_limit\.redis_sentinels \(f\.yaml line 4\): entry 1 must be "host:port" \(an IPv6 address in brackets: "\[::1\]:26379"\)$/,
      bad,
    );
  assert.match(
    err(`${ok}  redis_sentinels: "127.0.0.1:26379"\n`),
    /redis_sentinels \(f\.yaml line 4\): must be a list$/,
  );
  assert.match(
    err(`${ok}  redis_sentinels: [${Array(17).fill('"h:1"').join(', ')}]\n`),
    /redis_sentinels \(f\.yaml line 4\): must have at most 16 entries$/,
  );
});

test('check-config: sentinels that do not answer are named in the store warning', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-sentinel-cc-'));
  chmodSync(dir, 0o755);
  try {
    // A port nobody listens on: held open by nobody, so it refuses at once.
    const port = SENTINEL_PORT + 9;
    const cfg = writeConfig(
      dir,
      `checks: [rate_limit]\nquota_path: ${fakeQuota().path}\nsocket_group: quotapolicy\nlisten: ["unix:${join(dir, 'p.sock')}"]\n` +
        `rate_limit:\n  backend: redis\n  url: "redis://:hunter22@${NAME}"\n  redis_sentinels: ["127.0.0.1:${port}"]\n  store_timeout_ms: 500\n`,
    );
    const r = cli('check-config', '--config', cfg);
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `rate-limit store redis redis://:\\*\\*\\*@${NAME} via sentinels 127\\.0\\.0\\.1:${port} cannot be used: `,
      ),
    );
    assert.doesNotMatch(r.stderr, /hunter22/);
    // The store's own error, as the daemon logs it when it answers db_error_action.
    await assert.rejects(
      openStore({
        ...NO_STORE_TLS,
        backend: 'redis',
        url: `redis://:hunter22@${NAME}`,
        redis_sentinels: [`127.0.0.1:${port}`],
        sqlite_path: '',
        timeout_ms: 500,
        sql_limits_by_id: '',
      }),
      new RegExp(
        `^StoreError: redis: no connection to master ${NAME} via sentinels 127\\.0\\.0\\.1:${port} in 500 ms: All sentinels are unreachable`,
      ),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
