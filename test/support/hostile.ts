// Hostile policy clients for load tests. They run in a process of their own
// (startHostile), so they never share an event loop with the well-behaved
// client whose latency a test measures. Kinds:
// - non-readers: pipeline `a=b\n\n` as fast as the socket takes it, never read;
// - drippers: send a 32 KiB request one byte per write, read the replies;
// - garbage: mutated and random input (support/fuzz.ts), one connection each;
// - floods: every flood.everyMs open flood.count connections at once, send
//   nothing, close them after flood.holdMs.
// Every kind reconnects when the server closes it, until `seconds` are over.
// Only loopback: a unix socket path or 127.0.0.1.
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { prng, mutate, split } from './fuzz.js';

export interface HostileSpec {
  /** Where the daemon listens: a unix socket path. */
  path: string;
  seconds: number;
  nonReaders?: number;
  drippers?: number;
  garbage?: number;
  flood?: { everyMs: number; count: number; holdMs: number };
}

export interface HostileStats {
  nonReaderConnections: number;
  nonReaderBytesSent: number;
  dripperConnections: number;
  drippedBytes: number;
  dripperReplies: number;
  garbageInputs: number;
  floodConnections: number;
  /** Flood connections the server closed before the flood did (closed to admit others, or refused). */
  floodClosedByServer: number;
}

/** One request of `a=b` pipelined 13,107 times: 64 KiB per write. */
const PIPELINE = Buffer.from('a=b\n\n'.repeat(13_107));
/** A well-formed request of ~32 KiB, attribute lines of 100 bytes: under every parser limit, completed only after 32 KiB of one-byte writes. */
export const DRIP_REQUEST = Buffer.from(
  'request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=nobody@example.test\n' +
    Array.from({ length: 320 }, (_, i) => `x${String(i).padStart(3, '0')}=${'y'.repeat(95)}\n`).join('') +
    '\n',
);
/** Drippers write one byte each per tick of this timer. */
const DRIP_TICK_MS = 1;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function connect(path: string): net.Socket {
  const s = net.connect(path);
  s.on('error', () => {});
  return s;
}

async function nonReader(path: string, until: number, st: HostileStats): Promise<void> {
  while (Date.now() < until) {
    await new Promise<void>((resolve) => {
      const s = connect(path);
      // Paused before it connects: not one byte of the replies is ever read.
      s.pause();
      st.nonReaderConnections++;
      const stop = setTimeout(() => s.destroy(), Math.max(0, until - Date.now()));
      // As fast as the socket takes it: until write() says wait, then again on 'drain'.
      const write = (): void => {
        while (!s.destroyed) {
          st.nonReaderBytesSent += PIPELINE.length;
          if (!s.write(PIPELINE)) return;
        }
      };
      s.on('connect', write);
      s.on('drain', write);
      s.on('close', () => {
        clearTimeout(stop);
        resolve();
      });
    });
    if (Date.now() < until) await sleep(100);
  }
}

function drippers(path: string, n: number, until: number, st: HostileStats): Promise<void> {
  interface Drip {
    s: net.Socket;
    at: number;
  }
  const open = (): Drip => {
    const d: Drip = { s: connect(path), at: 0 };
    st.dripperConnections++;
    d.s.on('data', (b) => {
      st.dripperReplies += b.toString().split('\n\n').length - 1;
    });
    return d;
  };
  const all = Array.from({ length: n }, open);
  return new Promise((resolve) => {
    const tick = setInterval(() => {
      if (Date.now() >= until) {
        clearInterval(tick);
        for (const d of all) d.s.destroy();
        resolve();
        return;
      }
      for (let i = 0; i < all.length; i++) {
        const d = all[i]!;
        if (d.s.destroyed) all[i] = open();
        else if (!d.s.connecting && d.s.writableLength === 0) {
          d.s.write(DRIP_REQUEST.subarray(d.at, d.at + 1));
          st.drippedBytes++;
          d.at = (d.at + 1) % DRIP_REQUEST.length;
        }
      }
    }, DRIP_TICK_MS);
  });
}

async function garbage(path: string, seed: number, until: number, st: HostileStats): Promise<void> {
  const rand = prng(seed);
  while (Date.now() < until) {
    const chunks = split(rand, mutate(rand).bytes);
    await new Promise<void>((resolve) => {
      const s = connect(path);
      s.resume();
      const stop = setTimeout(() => s.destroy(), 5000);
      s.on('connect', () => {
        for (const c of chunks) s.write(c);
        s.end();
      });
      s.on('close', () => {
        clearTimeout(stop);
        resolve();
      });
    });
    st.garbageInputs++;
  }
}

async function floods(
  path: string,
  f: NonNullable<HostileSpec['flood']>,
  until: number,
  st: HostileStats,
): Promise<void> {
  while (Date.now() + f.holdMs < until) {
    const held = Array.from({ length: f.count }, () => {
      const s = connect(path);
      const c = { s, mine: false };
      s.on('close', () => {
        if (!c.mine) st.floodClosedByServer++;
      });
      return c;
    });
    st.floodConnections += f.count;
    await sleep(f.holdMs);
    for (const c of held) {
      c.mine = !c.s.destroyed;
      c.s.destroy();
    }
    await sleep(Math.max(0, f.everyMs - f.holdMs));
  }
}

export async function runHostile(spec: HostileSpec): Promise<HostileStats> {
  const st: HostileStats = {
    nonReaderConnections: 0,
    nonReaderBytesSent: 0,
    dripperConnections: 0,
    drippedBytes: 0,
    dripperReplies: 0,
    garbageInputs: 0,
    floodConnections: 0,
    floodClosedByServer: 0,
  };
  const until = Date.now() + spec.seconds * 1000;
  const jobs: Promise<void>[] = [];
  for (let i = 0; i < (spec.nonReaders ?? 0); i++) jobs.push(nonReader(spec.path, until, st));
  if (spec.drippers) jobs.push(drippers(spec.path, spec.drippers, until, st));
  for (let i = 0; i < (spec.garbage ?? 0); i++) jobs.push(garbage(spec.path, 20261122 + i, until, st));
  if (spec.flood) jobs.push(floods(spec.path, spec.flood, until, st));
  await Promise.all(jobs);
  return st;
}

/** Runs runHostile in a child process; resolves with its counts when it is done. */
export function startHostile(spec: HostileSpec): { proc: ChildProcess; done: Promise<HostileStats> } {
  const proc = spawn(process.execPath, [fileURLToPath(import.meta.url), JSON.stringify(spec)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  proc.stdout.on('data', (b: Buffer) => {
    out += b.toString();
  });
  const done = new Promise<HostileStats>((resolve, reject) => {
    proc.on('exit', (code) => {
      if (code === 0) resolve(JSON.parse(out) as HostileStats);
      else reject(new Error(`hostile clients exited with ${code}: ${out}`));
    });
  });
  return { proc, done };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const st = await runHostile(JSON.parse(process.argv[2]!) as HostileSpec);
  process.stdout.write(JSON.stringify(st));
  process.exit(0);
}
