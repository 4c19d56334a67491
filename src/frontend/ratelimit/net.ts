// IP addresses and CIDR networks as bigints: membership, and grouping a
// client into its prefix (IPv6 clients get a /64 each, so one host cannot
// dodge a limit by walking its own subnet).
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
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
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

export function parseNetwork(cidr: string): Network | undefined {
  const [addr, bitsText] = cidr.split('/') as [string, string | undefined];
  const ip = parseIp(addr);
  if (!ip) return undefined;
  const width = ip.family === 4 ? 32 : 128;
  const bits = bitsText === undefined ? width : /^\d{1,3}$/.test(bitsText) ? Number(bitsText) : NaN;
  if (!(bits >= 0 && bits <= width)) return undefined;
  return { family: ip.family, base: mask(ip.value, bits, width), bits };
}

function mask(value: bigint, bits: number, width: number): bigint {
  return bits === 0 ? 0n : (value >> BigInt(width - bits)) << BigInt(width - bits);
}

export function inNetworks(ip: string, nets: readonly Network[]): boolean {
  const p = parseIp(ip);
  if (!p) return false;
  const width = p.family === 4 ? 32 : 128;
  return nets.some((n) => n.family === p.family && mask(p.value, n.bits, width) === n.base);
}

function format(family: 4 | 6, v: bigint): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 255n)).join('.');
  const groups = Array.from({ length: 8 }, (_, i) => ((v >> BigInt(112 - 16 * i)) & 0xffffn).toString(16));
  return groups
    .join(':')
    .replace(/(^|:)0(:0)+(:|$)/, '::')
    .replace(/:{3,}/, '::');
}

/** The client's group: its address masked to the prefix, as "addr/prefix" (or the bare address at full width). */
export function ipGroup(ip: string, v4Prefix: number, v6Prefix: number): string | undefined {
  const p = parseIp(ip);
  if (!p) return undefined;
  const [width, bits] = p.family === 4 ? [32, v4Prefix] : [128, v6Prefix];
  const base = format(p.family, mask(p.value, bits, width));
  return bits === width ? base : `${base}/${bits}`;
}
