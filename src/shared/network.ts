// IP addresses and CIDR networks parsed to bigints. Pure. The config check
// (rate_limit.limited_networks, exempt_networks) and the rate limiter that
// uses those networks parse with the same function, so a network the config
// accepts is one the rate limiter understands.
import { isIP } from 'node:net';

export interface Network {
  family: 4 | 6;
  base: bigint;
  bits: number;
}

function v4(ip: string): bigint {
  return ip.split('.').reduce((a, o) => (a << 8n) | BigInt(Number(o)), 0n);
}

function v6(ip: string): bigint {
  let s = ip;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    const n = v4(dotted[1]!);
    s = s.slice(0, -dotted[1]!.length) + `${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head, tail] = s.split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((a, g) => (a << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/** Parses an address; IPv4-mapped IPv6 (::ffff:a.b.c.d) counts as IPv4. */
export function parseIp(ip: string): { family: 4 | 6; value: bigint } | undefined {
  const fam = isIP(ip);
  if (fam === 4) return { family: 4, value: v4(ip) };
  if (fam !== 6) return undefined;
  const value = v6(ip);
  if (value >> 32n === 0xffffn) return { family: 4, value: value & 0xffffffffn };
  return { family: 6, value };
}

/** The top `bits` of a `width`-bit value, the rest zero. */
export function mask(value: bigint, bits: number, width: number): bigint {
  return bits === 0 ? 0n : (value >> BigInt(width - bits)) << BigInt(width - bits);
}

/**
 * "addr" or "addr/bits", IPv4 or IPv6 (no zone id). An IPv4-mapped address
 * is IPv4, so its prefix counts IPv4 bits (at most 32).
 */
export function parseNetwork(cidr: string): Network | undefined {
  const m = /^([0-9a-fA-F:.]+)(?:\/(\d{1,3}))?$/.exec(cidr);
  const ip = m ? parseIp(m[1]!) : undefined;
  if (!ip) return undefined;
  const width = ip.family === 4 ? 32 : 128;
  const bits = m![2] === undefined ? width : Number(m![2]);
  if (bits > width) return undefined;
  return { family: ip.family, base: mask(ip.value, bits, width), bits };
}
