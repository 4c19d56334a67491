// The real root helper (dist/src/helper/main.js) as a child process on
// stdin/stdout, as sudo mode runs it, for tests that attack it over the channel.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { REPO } from './daemon.js';

export const HELPER = join(REPO, 'dist/src/helper/main.js');

export interface HelperProc {
  p: ChildProcessWithoutNullStreams;
  exit: Promise<number | null>;
  stderr(): string;
  /** stdout + stdin as one duplex, as the front's HelperClient gets it in sudo mode. */
  channel(): Duplex;
  /** For t.after: a failed assertion must not leave the helper (and the test run) hanging. */
  kill(): void;
}

export function startHelper(quotaPath: string, timeoutMs: number, minUid = 1000): HelperProc {
  const p = spawn(
    process.execPath,
    [HELPER, '--quota-path', quotaPath, '--timeout-ms', String(timeoutMs), '--min-uid', String(minUid)],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  p.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exit = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
  return {
    p,
    exit,
    stderr: () => stderr,
    channel: () => Duplex.from({ readable: p.stdout, writable: p.stdin }),
    kill: () => {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    },
  };
}

/** Resident set size of a live process, in bytes (/proc/PID/status VmRSS). */
export function vmRssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}: not running`);
  return Number(m[1]) * 1024;
}

/** The uids of each quota(1) run a fake quota logged (the arguments after `--`). */
export function runUids(argvLines: string[]): number[][] {
  return argvLines.map((l) =>
    l
      .split(' ')
      .slice(l.split(' ').indexOf('--') + 1)
      .map(Number),
  );
}

export const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
