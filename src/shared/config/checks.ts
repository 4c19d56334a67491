// The pieces every settings table is built from: a check is a function that
// says what is wrong with a value (undefined when nothing is), typed with what
// it lets through; fieldTable() derives a table's value types from them. Also
// the listen-address and access(5) action checks shared by several tables.
import { isIP } from 'node:net';

declare const accepts: unique symbol;
/**
 * A value's check: undefined when v is a T, else what is wrong with it. T
 * lives in the type only (the property is never set): it is what the check
 * lets through, and the type a table derives for its field.
 */
export type Check<T> = ((v: unknown) => string | undefined) & { readonly [accepts]?: T };

export interface Field<T = unknown> {
  default: T;
  check: Check<T>;
  doc: string;
}
/** A table of fields for the values V. */
export type FieldsOf<V> = { readonly [K in keyof V]: Field<V[K]> };
/** The values a table's checks let through, key by key. */
export type ValuesOf<F> = { -readonly [K in keyof F]: F[K] extends Field<infer T> ? T : never };

/**
 * A table, each value's type taken from its check; a default the check's
 * type does not allow fails to compile (NoInfer: the default does not widen it).
 */
export const fieldTable = <V>(fields: {
  [K in keyof V]: { default: NoInfer<V[K]>; check: Check<V[K]>; doc: string };
}): FieldsOf<V> => fields;

/** c, then `more` on what c let through. */
export const refine =
  <T>(c: Check<T>, more: (v: T) => string | undefined): Check<T> =>
  (v) =>
    // Sound: c accepted v, so v is a T.
    c(v) ?? more(v as T);

export const CONTROL = /[\0-\x1f\x7f]/;
/** Postfix reads a policy reply line up to its line_length_limit (2048); keep actions well inside. */
export const MAX_ACTION_LENGTH = 512;

export const str: Check<string> = (v) =>
  typeof v === 'string' && v !== '' && !CONTROL.test(v)
    ? undefined
    : 'must be a non-empty string without control characters';
export const bool: Check<boolean> = (v) => (typeof v === 'boolean' ? undefined : 'must be true or false');
export const absPath: Check<string> = refine(str, (v) => (v.startsWith('/') ? undefined : 'must be an absolute path'));
export const int =
  (min: number, max: number): Check<number> =>
  (v) =>
    typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max
      ? undefined
      : `must be an integer from ${min} to ${max}`;
export const oneOf =
  <const A extends readonly string[]>(...allowed: A): Check<A[number]> =>
  (v) =>
    allowed.some((a) => a === v) ? undefined : `must be one of ${allowed.join(', ')}`;
export const nullable =
  <T>(c: Check<T>): Check<T | null> =>
  (v) =>
    v === null ? undefined : c(v);
export const listOf =
  <T>(c: Check<T>, max: number): Check<T[]> =>
  (v) => {
    if (!Array.isArray(v)) return 'must be a list';
    if (v.length > max) return `must have at most ${max} entries`;
    for (const [i, item] of v.entries()) {
      const bad = c(item);
      if (bad !== undefined) return `entry ${i + 1} ${bad}`;
    }
    return undefined;
  };

export type SocketAddress = { path: string } | { host: string; port: number; ipv6: boolean };

/** Where a listen spec points (the spec already checked by listenSpec). */
export function socketAddress(spec: string): SocketAddress {
  const m = /^inet:(?:\[(.+)\]|([^:]+)):(\d+)$/.exec(spec);
  return m
    ? { host: m[1] ?? m[2]!, port: Number(m[3]), ipv6: m[1] !== undefined }
    : { path: spec.replace(/^unix:/, '') };
}

/** A listen spec as Node's net.connect() and server.listen() take it. */
export function netOptions(spec: string): { path: string } | { host: string; port: number } {
  const a = socketAddress(spec);
  return 'path' in a ? { path: a.path } : { host: a.host, port: a.port };
}

/** unix:/abs/path, or inet:IPV4:PORT / inet:[IPV6]:PORT. */
export const listenSpec: Check<string> = (v) => {
  if (typeof v !== 'string') return 'must be a string';
  if (v.startsWith('unix:')) return absPath(v.slice(5)) === undefined ? undefined : 'unix: needs an absolute path';
  const m = /^inet:(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(v);
  if (!m) return 'must be unix:/path, inet:IPV4:PORT or inet:[IPV6]:PORT';
  const host = m[1] ?? m[2]!;
  if (isIP(host) !== (m[1] !== undefined ? 6 : 4)) return `${host} is not an IP address`;
  const port = Number(m[3]);
  return port >= 1 && port <= 65535 ? undefined : 'port must be from 1 to 65535';
};

const ACTION_WORDS = new Set([
  'OK',
  'DUNNO',
  'REJECT',
  'DEFER',
  'DEFER_IF_REJECT',
  'DEFER_IF_PERMIT',
  'BCC',
  'DISCARD',
  'FILTER',
  'HOLD',
  'PREPEND',
  'REDIRECT',
  'INFO',
  'WARN',
]);
/** An access(5) action: a known word, or "4NN"/"5NN" text with a matching enhanced status. */
export const action: Check<string> = (v) => {
  if (typeof v !== 'string' || v.trim() === '' || CONTROL.test(v))
    return 'must be a non-empty action without control characters';
  if (v.length > MAX_ACTION_LENGTH) return `must be at most ${MAX_ACTION_LENGTH} characters`;
  const code = /^([45])\d\d(?: +(\d)\.\d{1,3}\.\d{1,3})?(?: |$)/.exec(v);
  if (code)
    return code[2] === undefined || code[2] === code[1] ? undefined : 'enhanced status class must match the reply code';
  if (/^[1-9]/.test(v)) return 'a numeric reply must be 4NN or 5NN';
  const word = v.split(/[ :]/, 1)[0]!.toUpperCase();
  return ACTION_WORDS.has(word) ? undefined : `"${word}" is not a Postfix access(5) action`;
};
