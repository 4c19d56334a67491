// Deterministic input generators for the protocol fuzzer, seeded from a real
// Postfix request (test/fixtures/postfix-request.txt).
import { readFileSync } from 'node:fs';

export const CAPTURE = readFileSync(new URL('../../../test/fixtures/postfix-request.txt', import.meta.url));

/** mulberry32: small, fast, reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SPECIAL = [0x00, 0x0a, 0x0d, 0x3d, 0xff, 0xc3, 0xe2, 0x80];

export function mutate(rand: () => number, kind = Math.floor(rand() * 11)): { kind: string; bytes: Buffer } {
  const int = (n: number): number => Math.floor(rand() * n);
  const base = Buffer.from(CAPTURE);
  switch (kind) {
    case 0:
      return { kind: 'valid-pipelined', bytes: Buffer.concat(Array.from({ length: 1 + int(4) }, () => base)) };
    case 1: {
      const b = Buffer.from(base);
      for (let i = 0, n = 1 + int(8); i < n; i++) b[int(b.length)] = int(256);
      return { kind: 'byte-flips', bytes: b };
    }
    case 2: {
      const at = int(base.length);
      const ins = Buffer.from(
        Array.from({ length: 1 + int(20) }, () => (rand() < 0.5 ? SPECIAL[int(SPECIAL.length)]! : int(256))),
      );
      return { kind: 'insert', bytes: Buffer.concat([base.subarray(0, at), ins, base.subarray(at)]) };
    }
    case 3: {
      const a = int(base.length);
      return { kind: 'delete', bytes: Buffer.concat([base.subarray(0, a), base.subarray(a + 1 + int(40))]) };
    }
    case 4:
      return { kind: 'truncate', bytes: base.subarray(0, int(base.length)) };
    case 5: {
      const lines = base
        .toString('latin1')
        .split('\n')
        .filter((l) => l !== '');
      const out = Array.from({ length: 1 + int(lines.length * 2) }, () => lines[int(lines.length)]!);
      return { kind: 'lines-shuffled', bytes: Buffer.from(out.join('\n') + '\n\n', 'latin1') };
    }
    case 6:
      return { kind: 'random', bytes: Buffer.from(Array.from({ length: int(2000) }, () => int(256))) };
    case 7:
      return { kind: 'long-line', bytes: Buffer.from(`recipient=${'x'.repeat(8200 + int(10_000))}\n\n`) };
    case 8:
      return {
        kind: 'large-request',
        bytes: Buffer.from(Array.from({ length: 200 }, (_, i) => `a${i}=${'y'.repeat(400)}\n`).join('') + '\n'),
      };
    case 9:
      return {
        kind: '10000-attributes',
        bytes: Buffer.from(Array.from({ length: 10_000 }, (_, i) => `x${i}=1\n`).join('') + '\n'),
      };
    default: {
      const s = base
        .toString('latin1')
        .replace('recipient=root@example.test', `recipient=r${'\u0000\u00ff'.repeat(1 + int(3))}@example.test`);
      return { kind: 'nul-and-invalid-utf8', bytes: Buffer.from(s, 'latin1') };
    }
  }
}

/** Cuts bytes at random points (the server must parse any split the same). */
export function split(rand: () => number, bytes: Buffer): Buffer[] {
  const cuts = Array.from({ length: Math.floor(rand() * 4) }, () => Math.floor(rand() * (bytes.length + 1))).sort(
    (a, b) => a - b,
  );
  const out: Buffer[] = [];
  let at = 0;
  for (const c of cuts) {
    out.push(bytes.subarray(at, c));
    at = c;
  }
  out.push(bytes.subarray(at));
  return out.filter((b) => b.length > 0);
}
