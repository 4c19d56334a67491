// Client addresses against networks, and grouping a client into its prefix
// (IPv6 clients get a /64 each, so one host cannot dodge a limit by walking
// its own subnet). Parsing is src/shared/network.ts, shared with the config
// check.
import { mask, parseIp, type Network } from '../../shared/network.js';

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
