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

/** Ports this file owns (given to it: 6390-6399 for Redis, 26390-26399 for sentinels). */
const MASTER_PORT = 6390;
const REPLICA_PORT = 6391;
const SENTINEL_PORT = 26390;
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

async function waitUntil(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`not in ${timeoutMs} ms: ${what}`);
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
    const master = await server('redis-server', redisArgs(MASTER_PORT), /Ready to accept connections/, procs);
    await server(
      'redis-server',
      [...redisArgs(REPLICA_PORT), '--replicaof', '127.0.0.1', String(MASTER_PORT)],
      /Ready to accept connections/,
      procs,
    );
    await waitUntil(
      'the replica is in sync',
      () => /master_link_status:up/.test(redisCli(REPLICA_PORT, 'info', 'replication')),
      10_000,
    );
    const sconf = join(dir, 'sentinel.conf');
    writeFileSync(
      sconf,
      `port ${SENTINEL_PORT}\nbind 127.0.0.1\ndir ${dir}\n` +
        `sentinel monitor ${NAME} 127.0.0.1 ${MASTER_PORT} 1\n` +
        `sentinel down-after-milliseconds ${NAME} ${DOWN_AFTER_MS}\nsentinel failover-timeout ${NAME} ${FAILOVER_TIMEOUT_MS}\n`,
    );
    await server('redis-sentinel', [sconf], /\+monitor master/, procs);
    await waitUntil(
      'the sentinel knows the replica',
      () => redisCli(SENTINEL_PORT, 'sentinel', 'replicas', NAME).includes(String(REPLICA_PORT)),
      15_000,
    );
    const masterAddr = () => redisCli(SENTINEL_PORT, 'sentinel', 'get-master-addr-by-name', NAME).split('\n')[1];
    assert.equal(masterAddr(), String(MASTER_PORT));

    const sock = join(dir, 'p.sock');
    const config = (at: string, timeoutMs: number): string => {
      mkdirSync(at, { recursive: true, mode: 0o755 });
      return writeConfig(
        at,
        `checks: [rate_limit]\nquota_path: ${fakeQuota().path}\nsocket_group: quotapolicy\nlisten: ["unix:${sock}"]\n` +
          `rate_limit:\n  backend: redis\n  url: "redis://${NAME}/0"\n  redis_sentinels: ["127.0.0.1:${SENTINEL_PORT}"]\n` +
          `  limits: [[1000000, 86400]]\n  limits_by_id: {limited: [[${LIMIT}, 86400]]}\n` +
          `  store_timeout_ms: ${timeoutMs}\n  db_error_action: "${DOWN}"\n`,
      );
    };
    const cfg = config(dir, STORE_TIMEOUT_MS);
    // check-config's probe finds the master through the sentinel: no warning. (Its deadline
    // includes loading the driver, so it gets more time than the daemon's calls on a busy machine.)
    const checked = cli('check-config', '--config', config(join(dir, 'check'), 5000));
    assert.equal(checked.status, 0, checked.stderr);
    assert.equal(checked.stderr, '');

    d = startDaemon(['--config', cfg]);
    await d.waitFor((l) => l.msg === 'front ready');
    // The store is opened on first use: once it answers, every reply until the stop is counted.
    for (let i = 0; ; i++) {
      const r = await exchange({ path: sock }, [rcpt('someone@example.test', { sasl_username: 'warmup' })], {
        replies: 1,
      });
      if (r.text === 'action=DUNNO\n\n') break;
      assert.ok(i < 50, `the store never answered: ${r.text}`);
      await sleep(100);
    }
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
    for (const id of ['limited', ...others]) {
      const shown = cli('ratelimit', 'show', `sasl:${id}`, '--config', cfg);
      assert.equal(shown.status, 0, shown.stderr);
      const used = /in 86400 s: (\d+) used/.exec(shown.stdout);
      assert.ok(used, shown.stdout);
      assert.equal(Number(used[1]), count(replies, id, 'DUNNO'), `${id}: the store holds what was accepted`);
    }
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
    err('  redis_sentinels: ["127.0.0.1:26379"]\n'),
    /^rate_limit\.redis_sentinels \(f\.yaml\): needs backend redis \(backend is sqlite\)$/,
  );
  assert.match(
    err(`${ok}  redis_sentinels: []\n`),
    /^rate_limit\.redis_sentinels \(f\.yaml line 4\): must list at least one sentinel "host:port" \(or be null: no Sentinel\)$/,
  );
  for (const bad of ['"127.0.0.1"', '"h:0"', '"h:65536"', '":26379"', '"::1:26379"', '"h :1"', '26379', '"h:port"'])
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
