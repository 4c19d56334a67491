// The systems under test, each started on its own unix socket in a fresh
// directory, in its own process group, with its processes listed for peak RSS.
// Every one runs without per-request logging (quotapolicy: log_level warn;
// policyd-rate-limit: debug False; postfwd: -P; Dovecot logs no decisions).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import net from 'node:net';
import { performance } from 'node:perf_hooks';

export const REPO = new URL('../../', import.meta.url).pathname;
/**
 * A system that does not answer its first request in this long failed to start. quotapolicy took 4 s in
 * user-mode-linux (scenario b) on an idle machine, and over 20 s while other jobs shared its two cores.
 */
const START_TIMEOUT_MS = 60_000;
/** After SIGTERM (SIGUSR1 for policyd-rate-limit), a system gets this long before SIGKILL. */
const STOP_GRACE_MS = 3000;

export interface System {
  name: string;
  to: string;
  /** Spawn to first answer, ms. */
  startupMs: number;
  /** Every process of the system now (a process tree, or two for quotapolicy). */
  processes(): { pid: number; name: string }[];
  stop(): Promise<void>;
}

/** A file under /proc, or '' once the process is gone (it may go while we read). */
const procFile = (pid: number, name: string): string => {
  try {
    return readFileSync(`/proc/${pid}/${name}`, 'utf8');
  } catch {
    return '';
  }
};

export function children(pid: number): number[] {
  const kids = procFile(pid, `task/${pid}/children`).trim().split(/\s+/).filter(Boolean).map(Number);
  return kids.flatMap((k) => [k, ...children(k)]);
}

/** The program a process runs: its argv[0] (an interpreter's script), without the directory. */
export function processName(pid: number): string {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    const prog =
      /(^|\/)(python3?|perl|node)$/.test(argv[0] ?? '') && argv[1] !== undefined ? argv[1] : (argv[0] ?? '?');
    // Some rewrite their title into argv[0] ("/usr/sbin/postfwd -f ...", " postfwd2::policy::child").
    const first = prog.trim().split(/\s+/)[0] ?? '?';
    return first.startsWith('/') ? first.slice(first.lastIndexOf('/') + 1) : first;
  } catch {
    return '?';
  }
}

/** Peak resident set (VmHWM) of a process, bytes; NaN once it is gone. */
export function peakRss(pid: number): number {
  try {
    return Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
  } catch {
    return NaN;
  }
}

const PROBE =
  'request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=probe@example.test\nsender=s@example.org\nclient_address=192.0.2.1\nsasl_username=probe\nsize=0\n\n';

/** One request; resolves with the reply or rejects (not listening yet, closed, timeout). */
export function ask(path: string, text = PROBE, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    let got = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error('no answer'));
    }, timeoutMs);
    s.on('connect', () => s.write(text));
    s.on('data', (d) => {
      got += d.toString();
      if (got.endsWith('\n\n')) {
        clearTimeout(t);
        s.destroy();
        resolve(got);
      }
    });
    s.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    s.on('close', () => {
      clearTimeout(t);
      reject(new Error('closed'));
    });
  });
}

async function untilAnswers(
  p: ChildProcess,
  path: string,
  started: number,
  log: () => string,
  daemonizes: boolean,
): Promise<number> {
  const deadline = started + START_TIMEOUT_MS;
  while (performance.now() < deadline) {
    if (p.exitCode !== null && !(daemonizes && p.exitCode === 0))
      throw new Error(`exited with ${p.exitCode}: ${log().slice(-800)}`);
    try {
      const r = await ask(path, PROBE, 1000);
      if (r.startsWith('action=')) return performance.now() - started;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`no answer on ${path} within ${START_TIMEOUT_MS} ms: ${log().slice(-800)}`);
}

interface LaunchOptions {
  stopSignal?: NodeJS.Signals;
  /** Names processes for the RSS table. */
  names?: (pid: number) => string;
  /** The system daemonizes (postfwd2 always does): its process tree starts at the pid in this file. */
  pidFile?: string;
}

/** Running, not a zombie. */
const alive = (pid: number): boolean => /^State:\s+[^Z]/m.test(procFile(pid, 'status'));

function launch(name: string, cmd: string, args: string[], path: string, opts: LaunchOptions = {}): Promise<System> {
  const started = performance.now();
  const p = spawn(cmd, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer): void => {
    out = (out + d.toString()).slice(-20_000);
  };
  p.stdout.on('data', keep);
  p.stderr.on('data', keep);
  const root = (): number => (opts.pidFile ? Number(readFileSync(opts.pidFile, 'utf8').trim()) : p.pid!);
  const killAll = (pids: number[], sig: NodeJS.Signals): void => {
    for (const pid of pids)
      try {
        process.kill(pid, sig);
      } catch {
        /* gone */
      }
  };
  return untilAnswers(p, path, started, () => out, opts.pidFile !== undefined).then(
    (startupMs) => ({
      name,
      to: `unix:${path}`,
      startupMs,
      processes: () =>
        [root(), ...children(root())].map((pid) => ({ pid, name: opts.names?.(pid) ?? processName(pid) })),
      stop: async () => {
        const pids = [root(), ...children(root())];
        killAll([pids[0]!], opts.stopSignal ?? 'SIGTERM');
        const deadline = performance.now() + STOP_GRACE_MS;
        while (pids.some(alive) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        killAll(pids.filter(alive), 'SIGKILL');
      },
    }),
    (e: unknown) => {
      try {
        process.kill(-p.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
      throw new Error(`${name}: ${(e as Error).message}`);
    },
  );
}

/** (d) the ceiling of the harness: a Node server that answers DUNNO. */
export function trivial(dir: string): Promise<System> {
  const path = join(dir, 'trivial.sock');
  return launch(
    'trivial DUNNO server',
    process.execPath,
    [join(REPO, 'dist/bench/trivial-server.js'), `unix:${path}`],
    path,
  );
}

/** quotapolicy as root would run it, with extra config lines (YAML). */
export function quotapolicy(name: string, dir: string, config: string): Promise<System> {
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
  const path = join(dir, 'qp.sock');
  writeFileSync(
    join(dir, 'quotapolicy.yaml'),
    `listen: ["unix:${path}"]\nsocket_group: quotapolicy\nlog_level: warn\n${config}`,
  );
  chmodSync(join(dir, 'quotapolicy.yaml'), 0o644);
  return launch(
    name,
    process.execPath,
    [join(REPO, 'bin/quotapolicy.js'), 'serve', '--config', join(dir, 'quotapolicy.yaml')],
    path,
    {
      names: (pid) => {
        const title = procFile(pid, 'cmdline');
        return title.includes('front') ? 'front' : title.includes('helper') ? 'helper (root)' : processName(pid);
      },
    },
  );
}

/**
 * A stand-in quota(1) for the host scenarios, where quota is asked once and then
 * cached: every uid has 1000/2000 KiB limits with 10 KiB used. (b), cache miss,
 * runs the real quota(1) in user-mode-linux.
 */
export function standInQuota(dir: string): string {
  mkdirSync(join(dir, 'fake-quota.d'), { recursive: true });
  chmodSync(dir, 0o755);
  const path = join(dir, 'quota');
  copyFileSync(join(REPO, 'test/support/fake-quota.sh'), path);
  chmodSync(path, 0o755);
  const uid = 65534;
  writeFileSync(
    join(dir, 'fake-quota.d', `${uid}.out`),
    `Disk quotas for user nobody (uid ${uid}): \n     Filesystem  blocks   quota   limit   grace   files   quota   limit   grace\n` +
      '          /home      10    1000    2000       0       2       0       0       0\n',
  );
  return path;
}

/** Dovecot's quota-status policy service, with the count backend (a) or the fs backend (b). */
export function dovecotQuotaStatus(dir: string, backend: 'count' | 'fs', userdb: string): Promise<System> {
  mkdirSync(join(dir, 'run'), { recursive: true });
  chmodSync(dir, 0o755);
  const quota =
    backend === 'count'
      ? '  quota = count:User quota\n  quota_rule = *:storage=1G\n  quota_vsizes = yes\n'
      : // fs needs a non-zero rule, or it answers DUNNO for everyone; it then enforces the fs soft block limit.
        '  quota = fs:User quota:user\n  quota_rule = *:storage=1\n';
  writeFileSync(
    join(dir, 'dovecot.conf'),
    `base_dir = ${dir}/run
state_dir = ${dir}/run/state
protocols =
log_path = ${dir}/dovecot.log
ssl = no
mail_plugins = quota
mail_location = maildir:~/Maildir
passdb {
  driver = static
  args = nopassword=y
}
userdb {
${userdb}
}
auth_username_format = %Ln
plugin {
${quota}  quota_status_success = DUNNO
  quota_status_nouser = DUNNO
  quota_status_overquota = "552 5.2.2 Mailbox is full"
}
service quota-status {
  executable = quota-status -p postfix
  unix_listener qs.sock {
    mode = 0666
  }
  # As Dovecot's documentation configures it (one client per process); enough processes for 128 connections.
  client_limit = 1
  process_limit = 256
}
`,
  );
  return launch(
    `Dovecot quota-status (${backend})`,
    'dovecot',
    ['-F', '-c', join(dir, 'dovecot.conf')],
    join(dir, 'run', 'qs.sock'),
  );
}

/** policyd-rate-limit (Debian's), SQLite backend, on a unix socket. Stops on SIGUSR1. */
export function policydRateLimit(dir: string, limits: string, suffix = ''): Promise<System> {
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o777);
  const path = join(dir, 'prl.sock');
  writeFileSync(
    join(dir, 'prl.yaml'),
    `debug: False
user: "policyd-rate-limit"
group: "policyd-rate-limit"
pidfile: "${dir}/prl.pid"
sqlite_config:
    database: "${dir}/prl.sqlite3"
backend: 0
SOCKET: "${path}"
socket_permission: 0666
limits: ${limits}
limit_by_sasl: True
success_action: "dunno"
fail_action: "defer_if_permit Rate limit reach, retry later"
db_error_action: "dunno"
`,
  );
  return launch(`policyd-rate-limit (SQLite)${suffix}`, 'policyd-rate-limit', ['--file', join(dir, 'prl.yaml')], path, {
    stopSignal: 'SIGUSR1',
  });
}

/** postfwd (Debian's default, postfwd2: it always daemonizes), rate limit per SASL user in memory, request cache off. */
export function postfwd(dir: string, max: number, seconds: number, suffix = ''): Promise<System> {
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o777);
  const path = join(dir, 'postfwd.sock');
  writeFileSync(
    join(dir, 'postfwd.cf'),
    `id=RATE; sasl_username=~.; action=rate(sasl_username/${max}/${seconds}/450 4.7.1 rate limit exceeded)\nid=DEFAULT; action=DUNNO\n`,
  );
  return launch(
    `postfwd (rate, in memory)${suffix}`,
    'postfwd',
    [
      '-f',
      join(dir, 'postfwd.cf'),
      '--proto',
      'unix',
      '-p',
      path,
      '-u',
      'nobody',
      '-g',
      'nogroup',
      '-P',
      '--nodns',
      '-c',
      '0',
      '--pidfile',
      join(dir, 'postfwd.pid'),
    ],
    path,
    { pidFile: join(dir, 'postfwd.pid') },
  );
}

/** The service user's own directory for a SQLite store. */
export function serviceDir(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const u = spawnSync('id', ['-u', 'quotapolicy'], { encoding: 'utf8' }).stdout.trim();
  const g = spawnSync('id', ['-g', 'quotapolicy'], { encoding: 'utf8' }).stdout.trim();
  chownSync(dir, Number(u), Number(g));
  return dir;
}
