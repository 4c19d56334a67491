// Policy-protocol load generator: N connections, requests one after another
// on each (as smtpd sends them) or pipelined, attribute templates giving
// distinct users/ids/IPs per request. Reports req/s, p50/p99/max latency, errors.
import { encodeRequest } from '../src/frontend/protocol/request.js';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { netOptions } from '../src/shared/config/checks.js';

export interface LoadOptions {
  to: string;
  connections: number;
  seconds: number;
  pipeline: number;
  /** Attributes of request number i (vary users, ids and IPs through i). */
  template: (i: number) => Record<string, string>;
  /** Distinct requests, encoded once before the clock starts and sent in turn (default POOL). */
  pool?: number;
  /** How long replies still out are waited for after the measured time (default DRAIN_MS). */
  drainMs?: number;
}

/** Requests encoded up front: the generator's own cost per request stays small and constant. */
export const POOL = 4096;
/** After the measured time, replies still out get this long; then they count as errors and the
 * connections are closed, so a system that stops answering shows as errors, never as a hung bench. */
export const DRAIN_MS = 10_000;

export interface LoadResult {
  requests: number;
  errors: number;
  seconds: number;
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export const encode = (a: Record<string, string>): string => encodeRequest(a);

/**
 * In a template's value, replaced when the request is sent by the number of
 * such requests this process sent before it (over every runLoad): an id no
 * other request has ("new id per request"), which a pool of encoded requests
 * cannot give.
 */
export const REQUEST_SEQ = '{seq}';
let seq = 0;

/** A RCPT request as Postfix 3.7 sends it (29 attributes, captured: test/fixtures/postfix-request.txt). */
const CAPTURED = Object.fromEntries(
  readFileSync(new URL('../../test/fixtures/postfix-request.txt', import.meta.url), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
);

/** Request number i: the captured one with its sender, client address, port and instance varied. */
export const postfixRequest = (i: number): Record<string, string> => ({
  ...CAPTURED,
  sender: `s${i % 1000}@example.org`,
  client_address: `192.0.2.${i % 250}`,
  client_port: String(1024 + (i % 60000)),
  instance: `${i.toString(16)}.6b0273e1.4ce38.0`,
});

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  // Each request as the bytes around its REQUEST_SEQ (one part if it has none).
  const pool = Array.from({ length: o.pool ?? POOL }, (_, i) =>
    encode(o.template(i))
      .split(REQUEST_SEQ)
      .map((part) => Buffer.from(part, 'utf8')),
  );
  const bytes = (parts: Buffer[]): Buffer => {
    if (parts.length === 1) return parts[0]!;
    const n = Buffer.from(String(seq++), 'latin1');
    return Buffer.concat(parts.flatMap((p, i) => (i === 0 ? [p] : [n, p])));
  };
  const latencies: number[] = [];
  let errors = 0;
  let next = 0;
  const started = performance.now();
  const end = started + o.seconds * 1000;
  /** Per open connection: give up on the replies still out. */
  const abandon = new Set<() => void>();
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const s = net.connect(netOptions(o.to));
      const sentAt: number[] = [];
      let buf = '';
      let done = false;
      const finish = (): void => {
        if (!done) {
          done = true;
          abandon.delete(giveUp);
          s.destroy();
          resolve();
        }
      };
      // Replies still out are errors; so is a connection that never got through.
      const giveUp = (): void => {
        if (!done) errors += Math.max(sentAt.length, s.connecting ? 1 : 0);
        sentAt.length = 0;
        finish();
      };
      abandon.add(giveUp);
      const send = (): void => {
        if (performance.now() >= end) return;
        sentAt.push(performance.now());
        s.write(bytes(pool[next++ % pool.length]!));
      };
      s.on('connect', () => {
        for (let i = 0; i < o.pipeline; i++) send();
      });
      s.on('data', (d) => {
        buf += d.toString('latin1');
        let i;
        while ((i = buf.indexOf('\n\n')) !== -1) {
          const reply = buf.slice(0, i);
          buf = buf.slice(i + 2);
          latencies.push(performance.now() - sentAt.shift()!);
          if (!reply.startsWith('action=')) errors++;
          send();
        }
        if (sentAt.length === 0) finish();
      });
      s.on('error', () => {
        if (!done) errors += Math.max(1, sentAt.length);
        sentAt.length = 0;
        finish();
      });
      s.on('close', giveUp);
    });
  const deadline = setTimeout(
    () => {
      for (const f of abandon) f();
    },
    o.seconds * 1000 + (o.drainMs ?? DRAIN_MS),
  );
  await Promise.all(Array.from({ length: o.connections }, one));
  clearTimeout(deadline);
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const q = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  return {
    requests: latencies.length,
    errors,
    seconds,
    reqPerSec: latencies.length / seconds,
    p50Ms: q(0.5),
    p99Ms: q(0.99),
    maxMs: latencies.at(-1) ?? NaN,
  };
}
