// Policy-protocol load generator: N connections, requests one after another
// on each (as smtpd sends them) or pipelined, attribute templates giving
// distinct users/ids/IPs per request. Reports req/s, p50/p99/max latency, errors.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { socketAddress } from '../src/frontend/config/schema.js';

export interface LoadOptions {
  to: string;
  connections: number;
  seconds: number;
  pipeline: number;
  /** Attributes of request number i (vary users, ids and IPs through i). */
  template: (i: number) => Record<string, string>;
}

export interface LoadResult { requests: number; errors: number; seconds: number; reqPerSec: number; p50Ms: number; p99Ms: number; maxMs: number }

export function address(to: string): net.NetConnectOpts {
  const a = socketAddress(to);
  return 'path' in a ? { path: a.path } : { host: a.host, port: a.port };
}

const encode = (a: Record<string, string>): string => Object.entries(a).map(([k, v]) => `${k}=${v}\n`).join('') + '\n';

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const latencies: number[] = [];
  let errors = 0;
  let next = 0;
  const started = performance.now();
  const end = started + o.seconds * 1000;
  const one = (): Promise<void> => new Promise((resolve) => {
    const s = net.connect(address(o.to));
    const sentAt: number[] = [];
    let buf = '';
    let done = false;
    const finish = (): void => { if (!done) { done = true; s.destroy(); resolve(); } };
    const send = (): void => {
      if (performance.now() >= end) return;
      sentAt.push(performance.now());
      s.write(encode(o.template(next++)));
    };
    s.on('connect', () => { for (let i = 0; i < o.pipeline; i++) send(); });
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
    s.on('error', () => { errors++; finish(); });
    s.on('close', () => { errors += sentAt.length; finish(); });
  });
  await Promise.all(Array.from({ length: o.connections }, one));
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const q = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  return { requests: latencies.length, errors, seconds, reqPerSec: latencies.length / seconds, p50Ms: q(0.5), p99Ms: q(0.99), maxMs: latencies.at(-1) ?? NaN };
}
