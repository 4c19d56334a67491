// Starts `quotapolicy serve` (as root) for tests, with a stand-in quota(1) in a
// temp dir, and gives access to its log lines and processes.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, copyFileSync, chmodSync, mkdirSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';

export const REPO = new URL('../../../', import.meta.url).pathname;
export const BIN = join(REPO, 'bin/quotapolicy.js');

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface FakeQuota {
  path: string;
  dir: string;
  setOutput(uid: number, text: string): void;
  setMode(m: string): void;
  argv(): string[];
}

/** A root-owned copy of test/support/fake-quota.sh in a fresh directory. */
export function fakeQuota(): FakeQuota {
  const base = mkdtempSync(join(tmpdir(), 'qp-fakequota-'));
  chmodSync(base, 0o755);
  const path = join(base, 'quota');
  copyFileSync(join(REPO, 'test/support/fake-quota.sh'), path);
  chmodSync(path, 0o755);
  const dir = join(base, 'fake-quota.d');
  mkdirSync(dir);
  return {
    path,
    dir,
    setOutput: (uid, text) => writeFileSync(join(dir, `${uid}.out`), text),
    setMode: (m) => writeFileSync(join(dir, 'mode'), m),
    argv: () =>
      existsSync(join(dir, 'argv.log'))
        ? readFileSync(join(dir, 'argv.log'), 'utf8')
            .split('\n')
            .filter((l) => l)
        : [],
  };
}

/** quota(1) output for one user on /home, in the real format. */
export function quotaBlock(
  uid: number,
  blocks: string,
  soft: number,
  hard: number,
  grace = 0,
  files = '2',
  fsoft = 0,
  fhard = 0,
): string {
  return (
    `Disk quotas for user u${uid} (uid ${uid}): \n     Filesystem  blocks   quota   limit   grace   files   quota   limit   grace\n` +
    `          /home ${blocks.padStart(7)} ${String(soft).padStart(7)} ${String(hard).padStart(7)} ${String(grace).padStart(7)} ${files.padStart(7)} ${String(fsoft).padStart(7)} ${String(fhard).padStart(7)}       0\n`
  );
}

export class Daemon {
  lines: Record<string, unknown>[] = [];
  stderr = '';
  exit: Promise<number | null>;
  constructor(readonly proc: ChildProcess) {
    let buf = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          this.lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          this.lines.push({ raw: line });
        }
      }
    });
    proc.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
      for (const line of d
        .toString()
        .split('\n')
        .filter((l) => l.startsWith('{'))) {
        try {
          this.lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          /* not JSON */
        }
      }
    });
    this.exit = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
  }

  async waitFor(pred: (l: Record<string, unknown>) => boolean, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find(pred);
      if (hit) return hit;
      if (Date.now() > end)
        throw new Error(`log line not seen; stderr: ${this.stderr}; lines: ${JSON.stringify(this.lines.slice(-5))}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** pid of the front process (the helper's only child). */
  frontPid(): number {
    const kids = readFileSync(`/proc/${this.proc.pid}/task/${this.proc.pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .map(Number);
    if (kids.length !== 1 || !kids[0]) throw new Error(`expected one child, got ${kids.join(',')}`);
    return kids[0];
  }

  async stop(): Promise<number | null> {
    if (this.proc.exitCode === null) this.proc.kill('SIGTERM');
    return this.exit;
  }
}

export function startDaemon(args: string[], env: NodeJS.ProcessEnv = {}): Daemon {
  return new Daemon(
    spawn(process.execPath, [BIN, 'serve', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH, ...env },
    }),
  );
}

export function writeConfig(dir: string, yaml: string): string {
  const p = join(dir, 'quotapolicy.yaml');
  writeFileSync(p, yaml, { mode: 0o644 });
  chmodSync(p, 0o644);
  return p;
}
