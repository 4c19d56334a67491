// Privilege proofs on a running daemon: the root helper holds no listening
// socket and reads nothing the service user could write; the front holds the
// sockets. (The front cannot read a root-only file: serve.test.ts; it cannot
// run quota(1) for another user: uml.test.ts, on real quotas.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, readlinkSync, statSync, lstatSync, mkdtempSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import userid from 'userid';
import { REPO, startDaemon, fakeQuota, writeConfig, freePort, type Daemon } from './support/daemon.js';

const svc = userid.ids('quotapolicy');
let d: Daemon;
let configPath: string;
let quotaPath: string;

before(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-priv-'));
  chmodSync(dir, 0o755);
  const fq = fakeQuota();
  quotaPath = fq.path;
  configPath = writeConfig(
    dir,
    `quota_path: ${fq.path}\nsocket_group: quotapolicy\nlisten: ["unix:${join(dir, 'p.sock')}", "inet:127.0.0.1:${await freePort()}"]\n`,
  );
  d = startDaemon(['--config', configPath]);
  await d.waitFor((l) => l.msg === 'front ready');
});

after(async () => {
  await d.stop();
});

function socketInodes(pid: number): Set<string> {
  const out = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.add(m[1]!);
    } catch {
      /* closed meanwhile */
    }
  }
  return out;
}

function listeningInodes(): Set<string> {
  const out = new Set<string>();
  for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 7 && (parseInt(f[3]!, 16) & 0x10000) !== 0) out.add(f[6]!); // __SO_ACCEPTCON
  }
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length >= 10 && f[3] === '0A') out.add(f[9]!); // TCP_LISTEN
    }
  }
  return out;
}

test('the helper holds no listening socket; the front holds them', () => {
  const listening = listeningInodes();
  const helper = [...socketInodes(d.proc.pid!)].filter((i) => listening.has(i));
  const front = [...socketInodes(d.frontPid())].filter((i) => listening.has(i));
  assert.deepEqual(helper, []);
  assert.equal(front.length, 2, 'the check sees listening sockets where they are');
});

/** Could the service user change this file, or swap it (a writable directory on its path)? */
function writableByService(path: string): string | undefined {
  const can = (p: string): boolean => {
    const st = lstatSync(p);
    if (st.isSymbolicLink()) return false; // a link's own mode means nothing; its target and directory are checked
    return (
      (st.uid === svc.uid && (st.mode & 0o200) !== 0) ||
      (st.gid === svc.gid && (st.mode & 0o020) !== 0) ||
      ((st.mode & 0o002) !== 0 && !(st.isDirectory() && st.mode & 0o1000))
    );
  };
  for (let p = path; ; p = dirname(p)) {
    if (can(p)) return p;
    if (p === '/') return undefined;
  }
}

function walk(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else out.push(p);
  }
  return out;
}

test('the helper reads no file the service user can write: its open files, its code, quota(1), the config', () => {
  const open = readdirSync(`/proc/${d.proc.pid}/fd`)
    .map((fd) => {
      try {
        return readlinkSync(`/proc/${d.proc.pid}/fd/${fd}`);
      } catch {
        return '';
      }
    })
    .filter((p) => p.startsWith('/') && !p.startsWith('/dev/') && !p.startsWith('/proc/'));
  const code = [
    ...walk(join(REPO, 'dist/src/helper')),
    ...walk(join(REPO, 'dist/src/shared')),
    ...walk(join(REPO, 'dist/src/cli')),
    ...walk(join(REPO, 'node_modules')),
  ];
  const checked = [...open, ...code, quotaPath, configPath, process.execPath, join(REPO, 'bin/quotapolicy.js')];
  const bad = checked.map((p) => [p, writableByService(p)]).filter(([, w]) => w !== undefined);
  console.log(`privilege: ${checked.length} files checked (${open.length} open by the helper)`);
  assert.deepEqual(bad.slice(0, 5), []);
  assert.ok(statSync(configPath).uid === 0);
});
