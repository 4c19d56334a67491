// store_tls against real servers started here with TLS only (never the shared
// ones): a CA and a server certificate (for 127.0.0.1 and localhost) made
// with openssl, and a second CA that signs nothing of theirs. For PostgreSQL,
// MariaDB and Redis: the store counts and refuses at the limit with the right
// CA; with the other CA, with a host name the certificate is not for
// (PostgreSQL and Redis: 127.0.0.2, where they listen too; MariaDB, reached
// by name: a certificate for another name, swapped in with FLUSH SSL) and
// without store_tls, the
// daemon's rate check answers db_error_action and check-config / the start-up
// probe say why in one line. Also every config refusal, the CA file the
// service user cannot read, and a client certificate (Redis asking for one).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import userid from 'userid';
import { parseConfig, ConfigError } from '../src/shared/config/load.js';
import type { Config } from '../src/shared/config/schema.js';
import { PolicyService } from '../src/frontend/policy/service.js';
import { storeWarning } from '../src/frontend/startup/store-probe.js';
import { BIN, fakeQuota, quotaBlock, startDaemon, writeConfig } from './support/daemon.js';

const run = promisify(execFile);
const silent = pino({ level: 'silent' });
/** The ports this file's servers listen on (the task's own range: nothing else uses them). */
const PORT = { redis: 6400, redisClientCert: 6401, postgresql: 5440, mysql: 3310 } as const;
/** The newest PostgreSQL installed (Debian: /usr/lib/postgresql/VERSION/bin); missing, initdb fails loudly. */
const PG_BIN = join(
  '/usr/lib/postgresql',
  (existsSync('/usr/lib/postgresql') ? readdirSync('/usr/lib/postgresql') : []).sort(
    (a, b) => Number(b) - Number(a),
  )[0] ?? 'not-installed',
  'bin',
);
const DOWN = '451 4.3.0 rate store down';
const BACKENDS = ['postgresql', 'mysql', 'redis'] as const;
type Backend = (typeof BACKENDS)[number];

let dir: string;
const children: ChildProcess[] = [];
let pgData: string | undefined;
let mysqlSock: string;

/** MariaDB's certificate from now on: `file` (same key), read again by FLUSH SSL. */
function mariadbCertificate(file: string): void {
  copyFileSync(join(dir, file), join(dir, 'my', 'srv.pem'));
  const r = spawnSync('mariadb', ['-S', mysqlSock, '-u', 'root', '-e', 'FLUSH SSL'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}
const ca = (): string => join(dir, 'ca.pem');
const otherCa = (): string => join(dir, 'other-ca.pem');

function url(b: Backend, host = '127.0.0.1'): string {
  if (b === 'postgresql') return `postgresql://postgres@${host}:${PORT.postgresql}/postgres`;
  // mysql: by name (store_tls refuses an IP address there: mysql2 cannot check one).
  if (b === 'mysql') return `mysql://qp@${host === '127.0.0.1' ? 'localhost' : host}:${PORT.mysql}/qp`;
  return `redis://${host}:${PORT.redis}/0`;
}

/** Stops every server this file started, by pid; also on a crash of the test process. */
function stopAll(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (pgData !== undefined && existsSync(join(pgData, 'postmaster.pid'))) {
    const pid = Number(readFileSync(join(pgData, 'postmaster.pid'), 'utf8').split('\n')[0]);
    try {
      process.kill(pid, 'SIGQUIT');
    } catch {
      /* already gone */
    }
  }
}
process.on('exit', stopAll);

async function openssl(...args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir });
}

async function waitUntil(what: string, ok: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end)
      throw new Error(`${what}: not up in ${ms} ms: ${[...stderrOf].map(([k, v]) => `${k}: ${v}`).join('; ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Each server's stderr, said when it does not come up. */
const stderrOf = new Map<string, string>();

function serve(cmd: string, args: string[], name: string): ChildProcess {
  const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  stderrOf.set(name, '');
  c.stderr.on('data', (d: Buffer) => void stderrOf.set(name, (stderrOf.get(name)! + d.toString()).slice(-4000)));
  children.push(c);
  return c;
}

async function startRedis(port: number, authClients: boolean): Promise<void> {
  serve(
    'redis-server',
    [
      ...['--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '127.0.0.2'],
      ...['--tls-cert-file', join(dir, 'srv.pem'), '--tls-key-file', join(dir, 'srv.key')],
      ...['--tls-ca-cert-file', ca(), '--tls-auth-clients', authClients ? 'yes' : 'no'],
      ...['--save', '', '--appendonly', 'no', '--dir', dir],
    ],
    `redis-${port}`,
  );
  await waitUntil(`redis on ${port}`, () =>
    spawnSync(
      'redis-cli',
      [
        '--tls',
        '--cacert',
        ca(),
        '--cert',
        join(dir, 'client.pem'),
        '--key',
        join(dir, 'client.key'),
        '-p',
        String(port),
        'ping',
      ],
      {
        encoding: 'utf8',
      },
    ).stdout.includes('PONG'),
  );
}

async function startPostgres(): Promise<void> {
  const pg = join(dir, 'pg');
  mkdirSync(pg, { mode: 0o700 });
  const pgUser = userid.ids('postgres');
  chownSync(pg, pgUser.uid, pgUser.gid);
  for (const f of ['srv.pem', 'srv.key']) {
    copyFileSync(join(dir, f), join(pg, f));
    chownSync(join(pg, f), pgUser.uid, pgUser.gid);
    chmodSync(join(pg, f), 0o600);
  }
  pgData = join(pg, 'data');
  await run('runuser', [
    '-u',
    'postgres',
    '--',
    join(PG_BIN, 'initdb'),
    '-D',
    pgData,
    '-A',
    'trust',
    '-U',
    'postgres',
    '-E',
    'UTF8',
    '--no-sync',
  ]);
  // TLS only: no host line, so a connection without TLS has no pg_hba.conf entry.
  writeFileSync(
    join(pgData, 'pg_hba.conf'),
    'hostssl all all 127.0.0.1/32 trust\nhostssl all all 127.0.0.2/32 trust\n',
  );
  serve(
    'runuser',
    [
      ...['-u', 'postgres', '--', join(PG_BIN, 'postgres'), '-D', pgData, '-c', `port=${PORT.postgresql}`],
      ...['-c', 'listen_addresses=127.0.0.1,127.0.0.2', '-c', `unix_socket_directories=${pg}`, '-c', 'fsync=off'],
      ...['-c', 'ssl=on', '-c', `ssl_cert_file=${join(pg, 'srv.pem')}`, '-c', `ssl_key_file=${join(pg, 'srv.key')}`],
    ],
    'postgresql',
  );
  await waitUntil(
    'postgresql',
    () => spawnSync(join(PG_BIN, 'pg_isready'), ['-h', pg, '-p', String(PORT.postgresql)]).status === 0,
  );
}

async function startMariadb(): Promise<void> {
  const my = join(dir, 'my');
  mkdirSync(my, { mode: 0o700 });
  const mysqlUser = userid.ids('mysql');
  chownSync(my, mysqlUser.uid, mysqlUser.gid);
  for (const f of ['srv.pem', 'srv.key', 'ca.pem']) {
    copyFileSync(join(dir, f), join(my, f));
    chownSync(join(my, f), mysqlUser.uid, mysqlUser.gid);
  }
  const data = join(my, 'data');
  await run('mariadb-install-db', [
    '--no-defaults',
    `--datadir=${data}`,
    '--user=mysql',
    '--skip-test-db',
    '--auth-root-authentication-method=socket',
  ]);
  mysqlSock = join(my, 'sock');
  const sock = mysqlSock;
  serve(
    'mariadbd',
    [
      ...[
        '--no-defaults',
        `--datadir=${data}`,
        '--user=mysql',
        `--port=${PORT.mysql}`,
        '--bind-address=127.0.0.1,127.0.0.2',
      ],
      ...[`--socket=${sock}`, `--pid-file=${join(my, 'pid')}`, '--skip-name-resolve', '--skip-log-bin'],
      ...[`--ssl-ca=${join(my, 'ca.pem')}`, `--ssl-cert=${join(my, 'srv.pem')}`, `--ssl-key=${join(my, 'srv.key')}`],
      ...['--require-secure-transport=ON', '--innodb-buffer-pool-size=16M', `--log-error=${join(my, 'err.log')}`],
    ],
    'mariadb',
  );
  await waitUntil('mariadb', () => existsSync(sock));
  await waitUntil('mariadb', () => spawnSync('mariadb', ['-S', sock, '-u', 'root', '-e', 'SELECT 1']).status === 0);
  const r = spawnSync(
    'mariadb',
    ['-S', sock, '-u', 'root', '-e', "CREATE DATABASE qp; CREATE USER 'qp'@'%'; GRANT ALL ON qp.* TO 'qp'@'%';"],
    {
      encoding: 'utf8',
    },
  );
  assert.equal(r.status, 0, r.stderr);
}

before(async () => {
  assert.equal(process.getuid?.(), 0, 'run as root (CI does): the servers run as postgres and mysql');
  dir = mkdtempSync(join(tmpdir(), 'qp-tls-'));
  chmodSync(dir, 0o755);
  // The test CA, a server certificate it signs for 127.0.0.1 and localhost, a client certificate; an unrelated CA.
  const days = ['-days', '2'];
  await openssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    ...days,
    '-subj',
    '/CN=qp test CA',
  );
  await openssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'other-ca.key',
    '-out',
    'other-ca.pem',
    ...days,
    '-subj',
    '/CN=qp other CA',
  );
  writeFileSync(join(dir, 'srv.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  writeFileSync(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const [name, cn] of [
    ['srv', 'localhost'],
    ['client', 'qp client'],
  ] as const) {
    await openssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
      '-subj',
      `/CN=${cn}`,
    );
    await openssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.pem`,
      ...days,
      '-extfile',
      `${name}.ext`,
    );
  }
  // The same key's certificate for another name only: MariaDB is switched to it (FLUSH SSL) for the name test.
  writeFileSync(join(dir, 'elsewhere.ext'), 'subjectAltName=DNS:db.elsewhere.invalid\n');
  await openssl(
    'x509',
    '-req',
    '-in',
    'srv.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'elsewhere.pem',
    ...days,
    '-extfile',
    'elsewhere.ext',
  );
  for (const f of ['ca.pem', 'other-ca.pem', 'srv.pem', 'client.pem', 'elsewhere.pem']) chmodSync(join(dir, f), 0o644);
  // The client key as an admin would leave it: the service user's own.
  const svc = userid.ids('quotapolicy');
  chownSync(join(dir, 'client.key'), svc.uid, svc.gid);
  chmodSync(join(dir, 'client.key'), 0o600);
  await Promise.all([
    startRedis(PORT.redis, false),
    startRedis(PORT.redisClientCert, true),
    startPostgres(),
    startMariadb(),
  ]);
});

after(async () => {
  // PostgreSQL's postmaster (runuser, its parent, then exits), then the others; each waited for before the files go.
  stopAll();
  await Promise.all(
    children.map((c) =>
      c.exitCode !== null || c.signalCode !== null
        ? Promise.resolve()
        : new Promise((resolve) => c.once('exit', resolve)),
    ),
  );
  if (pgData !== undefined)
    await waitUntil('postgresql stopped', () => !existsSync(join(pgData!, 'postmaster.pid')), 15_000);
  rmSync(dir, { recursive: true, force: true });
});

/** The rate_limit section for backend b, as YAML. */
function section(b: Backend, extra: Record<string, string | boolean | null>, host?: string): string {
  const kv = {
    backend: b,
    url: url(b, host),
    limits: '[[2, 60]]',
    db_error_action: DOWN,
    store_timeout_ms: 3000,
    ...extra,
  };
  return `checks: [rate_limit]\nrate_limit:\n${Object.entries(kv)
    .map(([k, v]) => `  ${k}: ${typeof v === 'string' && k !== 'limits' ? JSON.stringify(v) : String(v)}`)
    .join('\n')}\n`;
}

/** The daemon's policy service (its own store opening, through openStore): no quota check here. */
function service(cfg: Config): PolicyService {
  return new PolicyService(
    cfg,
    '+',
    1000,
    { queryQuota: () => Promise.reject(new Error('no quota check here')) },
    silent,
  );
}

const req = (user: string) =>
  new Map([
    ['request', 'smtpd_access_policy'],
    ['protocol_state', 'RCPT'],
    ['recipient', 'ok@example.test'],
    ['sender', 'a@example.org'],
    ['client_address', '192.0.2.1'],
    ['sasl_username', user],
  ]);

const fresh = (b: string) => `tls-${b}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

for (const b of BACKENDS) {
  test(`${b}: with store_tls and the right CA the store counts, and refuses at the limit; the probe is silent`, async () => {
    const cfg = parseConfig(section(b, { store_tls: true, store_tls_ca_file: ca() }), 't');
    assert.equal(await storeWarning(cfg), undefined);
    const svc = service(cfg);
    try {
      const user = fresh(b);
      const got = [];
      for (let i = 0; i < 3; i++) got.push((await svc.decide(req(user))).action);
      assert.deepEqual(got, ['DUNNO', 'DUNNO', 'DEFER_IF_PERMIT Rate limit reach, retry later']);
    } finally {
      await svc.rateLimit?.close();
    }
  });

  const failures: [string, string, Record<string, string | boolean | null>, string | undefined, RegExp][] = [
    [
      'an unrelated CA',
      '',
      { store_tls: true, store_tls_ca_file: otherCa() },
      undefined,
      /(postgresql|mysql|redis): TLS: .*certificate is not trusted/,
    ],
    // PostgreSQL and Redis by an address the certificate is not for; MariaDB by name, with a certificate for another name.
    b === 'mysql'
      ? [
          'a host name the certificate is not for',
          'elsewhere.pem',
          { store_tls: true, store_tls_ca_file: ca() },
          undefined,
          /mysql: TLS: the server's certificate is not for the host in url .*localhost/,
        ]
      : [
          'a host name the certificate is not for',
          '',
          { store_tls: true, store_tls_ca_file: ca() },
          '127.0.0.2',
          /(postgresql|mysql|redis): TLS: the server's certificate is not for the host in url .*127\.0\.0\.2/,
        ],
    // What each server says to a client without TLS: no pg_hba.conf line, MariaDB's refusal, Redis's silence.
    [
      'no store_tls, against a server that takes TLS only',
      '',
      {},
      undefined,
      {
        postgresql: /no pg_hba\.conf entry .*no encryption/,
        mysql: /Access denied|insecure transport/,
        redis: /answer in 3000 ms/,
      }[b],
    ],
  ];
  for (const [what, certificate, extra, host, why] of failures) {
    test(`${b}: ${what}: db_error_action from the daemon's check, one line from the probe`, async () => {
      const cfg = parseConfig(section(b, extra, host), 't');
      const svc = service(cfg);
      if (certificate !== '') mariadbCertificate(certificate);
      try {
        const r = await svc.decide(req(fresh(b)));
        assert.equal(r.action, DOWN, r.reason);
        assert.match(r.reason, why);
        const w = await storeWarning(cfg);
        assert.ok(w !== undefined, 'the probe warns');
        assert.match(w, new RegExp(`^rate-limit store ${b} .* cannot be used: .*: serve keeps running`));
        assert.match(w, why);
        assert.doesNotMatch(w, /\n| {4}at /, 'one line, no stack');
        console.log(`${b}, ${what}: ${w}`);
      } finally {
        await svc.rateLimit?.close();
        if (certificate !== '') mariadbCertificate('srv.pem');
      }
    });
  }
}

function checkConfig(cfgPath: string) {
  return spawnSync(process.execPath, [BIN, 'check-config', '--config', cfgPath], { encoding: 'utf8', timeout: 30_000 });
}

function daemonConfig(sub: string, rateSection: string): string {
  const d = join(dir, sub);
  mkdirSync(d, { mode: 0o755 });
  const svc = userid.ids('quotapolicy');
  const fq = fakeQuota();
  fq.setOutput(svc.uid, quotaBlock(svc.uid, '10', 100, 200));
  mkdirSync(join(d, 'private'), { mode: 0o755 });
  return writeConfig(
    d,
    `user: quotapolicy\nquota_path: ${fq.path}\nmin_uid: 100\nsocket_group: quotapolicy\n` +
      `listen: ["unix:${join(d, 'private', 'p.sock')}"]\n${rateSection}`,
  );
}

test('check-config, as the service user: OK with the right CA, a one-line warning with the unrelated one', () => {
  for (const b of BACKENDS) {
    const good = checkConfig(daemonConfig(`cc-good-${b}`, section(b, { store_tls: true, store_tls_ca_file: ca() })));
    assert.equal(good.status, 0, good.stderr);
    assert.equal(good.stderr, '', `${b}: no warning with the right CA`);
    const bad = checkConfig(daemonConfig(`cc-bad-${b}`, section(b, { store_tls: true, store_tls_ca_file: otherCa() })));
    assert.equal(bad.status, 0, bad.stderr);
    assert.match(
      bad.stderr,
      new RegExp(`^quotapolicy: warning: rate-limit store ${b} .*cannot be used: .*certificate.*\n$`),
    );
  }
});

test('a CA file the service user cannot read, or that holds no certificate: check-config and serve refuse, in one line', async () => {
  const unreadable = join(dir, 'root-only-ca.pem');
  copyFileSync(ca(), unreadable);
  chmodSync(unreadable, 0o600);
  const empty = join(dir, 'not-a-ca.pem');
  writeFileSync(empty, 'this is no certificate\n', { mode: 0o644 });
  for (const [file, why] of [
    [
      unreadable,
      /^quotapolicy: rate_limit\.store_tls_ca_file .*root-only-ca\.pem: quotapolicy cannot read it \(EACCES\)/,
    ],
    [empty, /^quotapolicy: rate_limit\.store_tls_ca_file .*not-a-ca\.pem: holds no PEM certificate/],
  ] as const) {
    const cfg = daemonConfig(
      `cc-file-${file.endsWith('not-a-ca.pem') ? 'empty' : 'unreadable'}`,
      section('redis', { store_tls: true, store_tls_ca_file: file }),
    );
    const r = checkConfig(cfg);
    assert.equal(r.status, 78, r.stderr);
    assert.match(r.stderr, why);
    assert.equal(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
    const d = startDaemon(['--config', cfg]);
    const code = await d.exit;
    assert.notEqual(code, 0, 'serve refuses to start');
    const fatal = d.lines.find((l) => l.level === 60 && typeof l.err === 'string');
    assert.ok(fatal, JSON.stringify(d.lines));
    assert.match(`quotapolicy: ${String(fatal.err)}`, why);
  }
});

test('a client certificate: a server that asks for one refuses the store without it, takes it with it', async () => {
  const base = { store_tls: true, store_tls_ca_file: ca() };
  const u = `redis://127.0.0.1:${PORT.redisClientCert}/0`;
  const without = parseConfig(section('redis', { ...base, url: u }), 't');
  assert.match((await storeWarning(without)) ?? 'no warning', /cannot be used/);
  const withCert = parseConfig(
    section('redis', {
      ...base,
      url: u,
      store_tls_cert_file: join(dir, 'client.pem'),
      store_tls_key_file: join(dir, 'client.key'),
    }),
    't',
  );
  assert.equal(await storeWarning(withCert), undefined);
  const svc = service(withCert);
  try {
    const user = fresh('client-cert');
    assert.equal((await svc.decide(req(user))).action, 'DUNNO');
  } finally {
    await svc.rateLimit?.close();
  }
});

test('config: every TLS setting in url is refused, naming store_tls; store_tls where no name can be verified too', () => {
  const refused: [string, RegExp][] = [
    [
      'backend: sqlite\n  store_tls: true',
      /^rate_limit\.store_tls \(t\): TLS is for the postgresql, mysql and redis backends/,
    ],
    [
      'backend: sqlite\n  store_tls_ca_file: /etc/ssl/ca.pem',
      /^rate_limit\.store_tls_ca_file \(t\): needs store_tls: true/,
    ],
    [
      'backend: redis\n  url: redis://127.0.0.1\n  store_tls_ca_file: /etc/ssl/ca.pem',
      /^rate_limit\.store_tls_ca_file \(t\): needs store_tls: true$/,
    ],
    [
      'backend: redis\n  url: redis://127.0.0.1\n  store_tls: true\n  store_tls_cert_file: /c.pem',
      /^rate_limit\.store_tls_cert_file \(t\): store_tls_cert_file and store_tls_key_file go together/,
    ],
    [
      'backend: redis\n  url: redis://127.0.0.1\n  store_tls: true\n  store_tls_key_file: /k.pem',
      /^rate_limit\.store_tls_key_file \(t\): store_tls_cert_file and store_tls_key_file go together/,
    ],
    [
      'backend: redis\n  url: rediss://127.0.0.1',
      /^rate_limit\.url \(t\): rediss:\/\/ is not taken: write redis:\/\/ and set store_tls: true/,
    ],
    [
      'backend: redis\n  url: rediss://127.0.0.1\n  store_tls: true',
      /^rate_limit\.url \(t\): rediss:\/\/ is not taken/,
    ],
    [
      'backend: redis\n  url: redis://127.0.0.1/0?tls=RedisCloudFixed',
      /^rate_limit\.url \(t\): TLS parameter tls is not taken in the URL: remove it and set store_tls: true/,
    ],
    [
      'backend: redis\n  url: redis://127.0.0.1/0?path=/run/redis.sock\n  store_tls: true',
      /^rate_limit\.url \(t\): with store_tls, the URL names a unix socket/,
    ],
    ...[
      'sslmode=verify-full',
      'sslmode=require',
      'ssl=true',
      'sslrootcert=/ca.pem',
      'sslcert=/c.pem',
      'sslkey=/k.pem',
      'sslcrl=/crl.pem',
      'SSLMODE=disable',
    ].map((p): [string, RegExp] => [
      `backend: postgresql\n  url: postgresql://qp@db.example.org/qp?${p}`,
      new RegExp(
        `^rate_limit\\.url \\(t\\): TLS parameter ${p.split('=')[0]} is not taken in the URL: remove it and set store_tls: true`,
      ),
    ]),
    [
      'backend: postgresql\n  url: postgresql://qp@%2Fvar%2Frun%2Fpostgresql/qp\n  store_tls: true',
      /^rate_limit\.url \(t\): with store_tls, the URL names a unix socket/,
    ],
    [
      'backend: postgresql\n  url: postgresql://qp@db.example.org/qp?host=/var/run/postgresql\n  store_tls: true',
      /^rate_limit\.url \(t\): with store_tls, the URL names a unix socket \(host=\)/,
    ],
    [
      'backend: postgresql\n  url: postgresql:///qp\n  store_tls: true',
      /^rate_limit\.url \(t\): with store_tls, the URL has no host/,
    ],
    ...['ssl={"rejectUnauthorized":false}', 'ssl=Amazon%20RDS', 'sslmode=REQUIRED'].map((p): [string, RegExp] => [
      `backend: mysql\n  url: mysql://qp@db.example.org/qp?${p}`,
      new RegExp(`^rate_limit\\.url \\(t\\): TLS parameter ${p.split('=')[0]} is not taken in the URL`),
    ]),
    [
      'backend: mysql\n  url: mysql://qp@192.0.2.7/qp\n  store_tls: true',
      /^rate_limit\.url \(t\): with store_tls, a mysql URL needs the host name the certificate is for, not an IP address \(192\.0\.2\.7\)/,
    ],
    [
      'backend: mysql\n  url: mysql://qp@localhost/qp?socketPath=/run/mysqld/mysqld.sock\n  store_tls: true',
      /^rate_limit\.url \(t\): with store_tls, the URL names a unix socket \(socketPath=\)/,
    ],
  ];
  for (const [yaml, why] of refused) {
    assert.throws(
      () => parseConfig(`rate_limit:\n  ${yaml}\n`, 't'),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.match(e.message, why, yaml);
        assert.doesNotMatch(e.message, /\n/);
        return true;
      },
      yaml,
    );
  }
  // What is taken: store_tls with a host, with or without a CA file; a plain URL without it.
  for (const yaml of [
    'backend: postgresql\n  url: postgresql://qp:secret@db.example.org:5432/qp?application_name=qp\n  store_tls: true\n  store_tls_ca_file: /etc/ssl/ca.pem',
    'backend: mysql\n  url: mysql://qp@db.example.org/qp\n  store_tls: true',
    'backend: redis\n  url: redis://[::1]:6379/0\n  store_tls: true\n  store_tls_cert_file: /c.pem\n  store_tls_key_file: /k.pem',
    'backend: redis\n  url: redis://127.0.0.1:6379/0',
  ])
    assert.doesNotThrow(() => parseConfig(`rate_limit:\n  ${yaml}\n`, 't'), yaml);
});
