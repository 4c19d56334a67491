// TLS to the rate-limit store is said one way: store_tls and its files. A
// TLS setting inside url would be read by one driver and not another, or
// differently (pg takes sslmode=require as verify-full, libpq as no check at
// all), so it is refused with the key to use instead; so is a store_tls that
// cannot verify a host name (a unix socket, or no host in url).
import { isIP } from 'node:net';
import type { RateConfig } from './rate-schema.js';

type TlsKeys = Pick<
  RateConfig,
  'backend' | 'url' | 'store_tls' | 'store_tls_ca_file' | 'store_tls_cert_file' | 'store_tls_key_file'
>;

/** Query parameters each driver reads as TLS settings (pg-connection-string, mysql2's uri, ioredis's URL). */
const TLS_PARAM: Readonly<Record<'postgresql' | 'mysql' | 'redis', RegExp>> = {
  postgresql: /^(ssl.*|uselibpqcompat)$/i,
  mysql: /^ssl.*$/i,
  redis: /^(tls|ssl.*)$/i,
};
/** Query parameters naming a unix socket instead of the URL's host. */
const SOCKET_PARAM: Readonly<Record<'postgresql' | 'mysql' | 'redis', RegExp>> = {
  postgresql: /^host$/i,
  mysql: /^socketPath$/,
  redis: /^path$/,
};
const USE = 'set store_tls: true (and store_tls_ca_file for your own CA) instead';

/** The host a TLS connection to url verifies, or why there is none. */
export function storeHost(backend: 'postgresql' | 'mysql' | 'redis', url: string): { host: string } | { why: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return { why: 'is not a URL' };
  }
  for (const [k, v] of u.searchParams)
    if (SOCKET_PARAM[backend].test(k) && (backend !== 'postgresql' || v.startsWith('/') || v === ''))
      return { why: `names a unix socket (${k}=): store_tls needs a TCP host name or IP address to verify` };
  let host = u.hostname;
  try {
    host = decodeURIComponent(host);
  } catch {
    /* a stray %: kept as written */
  }
  if (backend === 'postgresql') {
    const param = u.searchParams.get('host');
    if (param !== null) host = param;
  }
  if (host === '') return { why: 'has no host: store_tls needs the host name or IP address the certificate is for' };
  if (host.startsWith('/')) return { why: 'names a unix socket: store_tls needs a TCP host name or IP address' };
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { host };
}

/** The key and what is wrong, for the first rule broken; undefined when none is. */
export function storeTlsProblem(r: TlsKeys): { key: string; why: string } | undefined {
  const files = (['store_tls_ca_file', 'store_tls_cert_file', 'store_tls_key_file'] as const).filter(
    (k) => r[k] !== null,
  );
  if (r.backend === 'sqlite') {
    if (r.store_tls)
      return { key: 'store_tls', why: 'TLS is for the postgresql, mysql and redis backends; sqlite is a local file' };
    if (files.length > 0)
      return { key: files[0]!, why: 'needs store_tls: true (and a postgresql, mysql or redis backend)' };
    return undefined;
  }
  if (!r.store_tls && files.length > 0) return { key: files[0]!, why: 'needs store_tls: true' };
  if ((r.store_tls_cert_file === null) !== (r.store_tls_key_file === null))
    return {
      key: r.store_tls_cert_file === null ? 'store_tls_key_file' : 'store_tls_cert_file',
      why: 'store_tls_cert_file and store_tls_key_file go together',
    };
  if (r.url === null) return undefined;
  if (/^rediss:/i.test(r.url)) return { key: 'url', why: `rediss:// is not taken: write redis:// and ${USE}` };
  let u: URL | undefined;
  try {
    u = new URL(r.url);
  } catch {
    /* not a URL: only a store_tls one must be (storeHost) */
  }
  for (const k of u?.searchParams.keys() ?? [])
    if (TLS_PARAM[r.backend].test(k))
      return { key: 'url', why: `TLS parameter ${k} is not taken in the URL: remove it and ${USE}` };
  if (!r.store_tls) return undefined;
  const h = storeHost(r.backend, r.url);
  if ('why' in h) return { key: 'url', why: `with store_tls, the URL ${h.why}` };
  // mysql2 sends no name for an IP address, and Node then checks the certificate against "localhost".
  if (r.backend === 'mysql' && isIP(h.host) !== 0)
    return {
      key: 'url',
      why: `with store_tls, a mysql URL needs the host name the certificate is for, not an IP address (${h.host}): mysql2 cannot check an address against the certificate`,
    };
  return undefined;
}
