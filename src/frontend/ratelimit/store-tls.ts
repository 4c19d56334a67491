// The TLS files of store_tls, read by the front (the service user) each time
// a store is opened, so a renewed CA or certificate applies to the next
// connection. What each driver is then given: stores/*.ts.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { ConfigError } from '../../shared/config/load.js';
import type { RateConfig } from '../../shared/config/rate-schema.js';
import { StoreError } from './store.js';

export type StoreTlsConfig = Pick<
  RateConfig,
  'store_tls' | 'store_tls_ca_file' | 'store_tls_cert_file' | 'store_tls_key_file'
>;

/** No TLS: for a store opened by hand (tests, benchmarks); the daemon and the commands pass the rate_limit section. */
export const NO_STORE_TLS: StoreTlsConfig = Object.freeze({
  store_tls: false,
  store_tls_ca_file: null,
  store_tls_cert_file: null,
  store_tls_key_file: null,
});

/** What every driver verifies with: the CA(s) (none: Node's built-in list) and the client certificate, if any. */
export interface StoreTls {
  ca?: string[];
  cert?: string;
  key?: string;
}

/** A PEM file larger than this is not a CA bundle (Mozilla's whole list is about 220 KB). */
export const MAX_TLS_FILE_BYTES = 1024 * 1024;

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

function whoAmI(): string {
  try {
    return userInfo().username;
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`;
  }
}

function readPem(key: keyof StoreTlsConfig, path: string): string {
  let text: string;
  try {
    const b = readFileSync(path);
    if (b.length > MAX_TLS_FILE_BYTES)
      throw new StoreError(`rate_limit.${key} ${path}: larger than ${MAX_TLS_FILE_BYTES} bytes, not a PEM file`);
    text = b.toString('latin1');
  } catch (e) {
    if (e instanceof StoreError) throw e;
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    const who = whoAmI();
    throw new StoreError(
      `rate_limit.${key} ${path}: ${who} cannot read it (${code})${code === 'EACCES' ? `: the front reads it as ${who}; make it readable by ${who}` : ''}`,
    );
  }
  return text;
}

function certificates(key: keyof StoreTlsConfig, path: string): string[] {
  const pems = readPem(key, path).match(PEM_CERT) ?? [];
  if (pems.length === 0)
    throw new StoreError(`rate_limit.${key} ${path}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  for (const [i, pem] of pems.entries()) {
    try {
      new X509Certificate(pem);
    } catch (e) {
      throw new StoreError(`rate_limit.${key} ${path}: certificate ${i + 1} cannot be read: ${(e as Error).message}`);
    }
  }
  return pems;
}

/** The files read and checked now; undefined without store_tls. Throws StoreError (db_error_action at run time). */
export function readStoreTls(c: StoreTlsConfig): StoreTls | undefined {
  if (!c.store_tls) return undefined;
  const out: StoreTls = {};
  if (c.store_tls_ca_file !== null) out.ca = certificates('store_tls_ca_file', c.store_tls_ca_file);
  if (c.store_tls_cert_file !== null && c.store_tls_key_file !== null) {
    out.cert = certificates('store_tls_cert_file', c.store_tls_cert_file).join('\n');
    const key = readPem('store_tls_key_file', c.store_tls_key_file);
    try {
      createPrivateKey(key);
    } catch (e) {
      throw new StoreError(
        `rate_limit.store_tls_key_file ${c.store_tls_key_file}: holds no private key that can be read (PEM, unencrypted): ${(e as Error).message}`,
      );
    }
    out.key = key;
  }
  return out;
}

/** The same reading, as serve and check-config make it before anything else: a file that fails is a config error. */
export function checkStoreTlsFiles(c: StoreTlsConfig): void {
  try {
    readStoreTls(c);
  } catch (e) {
    throw e instanceof StoreError ? new ConfigError(e.message) : e;
  }
}

/** Node's codes for a server certificate that failed verification: retrying the same server cannot help. */
const CHAIN_CODES: readonly string[] = [
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
];

/**
 * A store error's text, with what store_tls found wrong with the server's
 * certificate said in its terms; undefined when e is no certificate failure.
 */
export function certificateFailure(e: unknown): string | undefined {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const msg = (e as Error | undefined)?.message ?? String(e);
  // mysql2 renames Node's TLS errors HANDSHAKE_SSL_ERROR; a name mismatch still carries the certificate it was checked against.
  const renamed = code === 'HANDSHAKE_SSL_ERROR';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID' || (renamed && (e as { cert?: unknown }).cert !== undefined))
    return `TLS: the server's certificate is not for the host in url (store_tls checks the name): ${msg}`;
  if (code !== undefined && CHAIN_CODES.includes(code))
    return `TLS: the server's certificate is not trusted (store_tls_ca_file, or the built-in CAs without it): ${msg}`;
  if (renamed)
    return `TLS: the handshake failed, or the server's certificate is not trusted (store_tls_ca_file, or the built-in CAs without it): ${msg}`;
  return undefined;
}
