// SECURITY: the whole vocabulary between the unprivileged front and the root
// helper. Closed: four message types with fixed binary layouts; every field is
// range-checked on decode; missing or trailing bytes are refused. The helper
// treats any DecodeError as fatal and exits. All integers big-endian.
// Frame: u32 payload length, payload. Payload: u8 type, then:
//   HELLO        front -> helper  u16 version
//   HELLO_ACK    helper -> front  u16 version, u32 min_uid
//   QUOTA_QUERY  front -> helper  u32 seq, u8 n, n x u32 uid
//   QUOTA_REPLY  helper -> front  u32 seq, u8 n, n x (u32 uid, u8 status, u8 k, k x fs)
//     fs: u8 mount_len, mount (UTF-8), 8 x f64 in FsQuota field order

export const WIRE_VERSION = 1;
/** Users per query: one quota(1) run serves a whole batch; bounds its argv. */
export const MAX_BATCH = 32;
/** File systems per user: more than any real host mounts with quotas. */
export const MAX_FS = 32;
/** Mount point bytes: a u8 length; real mount points are far shorter. */
export const MAX_MOUNT_BYTES = 255;
/** Largest payload the front may send (a full QUOTA_QUERY: 6 + 32 x 4 = 134 bytes): all root buffers. */
export const MAX_QUERY_BYTES = 6 + MAX_BATCH * 4;
/**
 * Largest payload the helper sends: a QUOTA_REPLY for MAX_BATCH users, each (uid, status, k) with MAX_FS
 * rows of (mount length, mount, 8 x f64): 6 + 32 x (6 + 32 x (1 + 255 + 64)) = 327,878 bytes (~320 KiB).
 * Exact, not a guess: encode refuses more users or file systems, and the front buffers no more.
 */
export const MAX_REPLY_BYTES = 6 + MAX_BATCH * (6 + MAX_FS * (1 + MAX_MOUNT_BYTES + 8 * 8));
/** Highest uid: (uid_t)-1 and (uid_t)-2 are "no user" sentinels. */
export const MAX_UID = 0xfffffffd;
/** Queries outstanding at once; more is a protocol violation. */
export const MAX_INFLIGHT = 8;
/** Helper settings when root's command line names none (sudo mode). */
export const HELPER_DEFAULTS = { quotaPath: '/usr/bin/quota', timeoutMs: 5000, minUid: 1000 };

export const enum MsgType {
  Hello = 1,
  HelloAck = 2,
  QuotaQuery = 3,
  QuotaReply = 4,
}

/** Per-user outcome; only Ok carries numbers. */
export const enum QuotaStatus {
  Ok = 0,
  NoData = 1, // quota ran but reported no quota-enabled file system
  Timeout = 2, // quota did not finish within root's timeout
  ExecFailed = 3, // quota could not run, or exited with an unexpected status
  Unparsable = 4, // output did not match the strict grammar
  OutputTooLarge = 5, // output over the helper's cap
  Complained = 6, // quota wrote to stderr: its numbers may be incomplete
}
export const QUOTA_STATUS_NAMES = [
  'ok',
  'no_data',
  'timeout',
  'exec_failed',
  'unparsable',
  'output_too_large',
  'complained',
] as const;

/** One row of `quota -p`: blocks in KiB, grace as epoch seconds (0 = none). */
export interface FsQuota {
  mount: string;
  blocks: number;
  blockSoft: number;
  blockHard: number;
  blockGrace: number;
  files: number;
  fileSoft: number;
  fileHard: number;
  fileGrace: number;
}
export const FS_QUOTA_NUMBERS = [
  'blocks',
  'blockSoft',
  'blockHard',
  'blockGrace',
  'files',
  'fileSoft',
  'fileHard',
  'fileGrace',
] as const;

export interface UserQuota {
  uid: number;
  status: QuotaStatus;
  fs: FsQuota[];
}

export type Message =
  | { type: MsgType.Hello; version: number }
  | { type: MsgType.HelloAck; version: number; minUid: number }
  | { type: MsgType.QuotaQuery; seq: number; uids: number[] }
  | { type: MsgType.QuotaReply; seq: number; users: UserQuota[] };

export class DecodeError extends Error {
  override name = 'DecodeError';
}

export const isValidUid = (n: unknown): n is number =>
  typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= MAX_UID;

const WRITERS = { 1: 'writeUInt8', 2: 'writeUInt16BE', 4: 'writeUInt32BE', 8: 'writeDoubleBE' } as const;

export function encode(msg: Message): Buffer {
  const out: Buffer[] = [];
  const put = (size: keyof typeof WRITERS, v: number): void => {
    out.push(Buffer.alloc(size));
    out[out.length - 1]![WRITERS[size]](v); // throws RangeError when v does not fit
  };
  put(1, msg.type);
  if (msg.type === MsgType.Hello) put(2, msg.version);
  else if (msg.type === MsgType.HelloAck) {
    put(2, msg.version);
    put(4, msg.minUid);
  } else if (msg.type === MsgType.QuotaQuery) {
    if (msg.uids.length < 1 || msg.uids.length > MAX_BATCH || !msg.uids.every(isValidUid))
      throw new RangeError('bad query');
    put(4, msg.seq);
    put(1, msg.uids.length);
    for (const uid of msg.uids) put(4, uid);
  } else {
    if (msg.users.length > MAX_BATCH || msg.users.some((u) => u.fs.length > MAX_FS)) throw new RangeError('bad reply');
    put(4, msg.seq);
    put(1, msg.users.length);
    for (const u of msg.users) {
      put(4, u.uid);
      put(1, u.status);
      put(1, u.fs.length);
      for (const fs of u.fs) {
        const mount = Buffer.from(fs.mount);
        if (mount.length > MAX_MOUNT_BYTES) throw new RangeError('mount point too long');
        put(1, mount.length);
        out.push(mount);
        for (const k of FS_QUOTA_NUMBERS) put(8, fs[k]);
      }
    }
  }
  const payload = Buffer.concat(out);
  if (payload.length > MAX_REPLY_BYTES) throw new RangeError('frame too large');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(payload.length);
  return Buffer.concat([head, payload]);
}

/** Decodes one frame payload (without its length). Throws DecodeError. */
export function decode(p: Buffer): Message {
  let at = 0;
  // Cursor reads in the style of OpenSMTPD's m_get_*(): never past the end.
  const take = (n: number): number => {
    if (at + n > p.length) throw new DecodeError('short message');
    return (at += n) - n;
  };
  const u8 = (): number => p.readUInt8(take(1));
  const u16 = (): number => p.readUInt16BE(take(2));
  const u32 = (): number => p.readUInt32BE(take(4));
  const count = (min: number, max: number, what: string): number => {
    const n = u8();
    if (n < min || n > max) throw new DecodeError(`bad ${what}`);
    return n;
  };
  const type = u8();
  let msg: Message;
  if (type === MsgType.Hello) msg = { type, version: u16() };
  else if (type === MsgType.HelloAck) msg = { type, version: u16(), minUid: u32() };
  else if (type === MsgType.QuotaQuery) {
    const seq = u32();
    const uids = Array.from({ length: count(1, MAX_BATCH, 'batch size') }, u32);
    if (!uids.every(isValidUid)) throw new DecodeError('bad uid');
    msg = { type, seq, uids };
  } else if (type === MsgType.QuotaReply) {
    const seq = u32();
    const users = Array.from({ length: count(0, MAX_BATCH, 'batch size') }, (): UserQuota => {
      const uid = u32();
      const status = count(0, QUOTA_STATUS_NAMES.length - 1, 'status') as QuotaStatus;
      const fs = Array.from({ length: count(0, status === QuotaStatus.Ok ? MAX_FS : 0, 'fs count') }, (): FsQuota => {
        const s = take(count(0, MAX_MOUNT_BYTES, 'mount length'));
        const mount = p.toString('utf8', s, at);
        if (!mount.startsWith('/') || /[\0-\x1f\ufffd]/.test(mount)) throw new DecodeError('bad mount point');
        const row = { mount } as FsQuota;
        for (const k of FS_QUOTA_NUMBERS) {
          row[k] = p.readDoubleBE(take(8));
          if (!Number.isSafeInteger(row[k]) || row[k] < 0) throw new DecodeError('bad quota number');
        }
        return row;
      });
      return { uid, status, fs };
    });
    msg = { type, seq, users };
  } else throw new DecodeError(`unknown message type ${type}`);
  if (at !== p.length) throw new DecodeError('trailing bytes');
  return msg;
}

/** Splits a byte stream into payloads; a length of 0 or over maxBytes throws before buffering. */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  /** The helper reads queries (the default); the front reads replies (MAX_REPLY_BYTES). */
  constructor(private readonly maxBytes = MAX_QUERY_BYTES) {}
  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Buffer[] = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len === 0 || len > this.maxBytes) throw new DecodeError(`bad frame length ${len}`);
      if (this.buf.length < 4 + len) break;
      out.push(this.buf.subarray(4, 4 + len));
      this.buf = this.buf.subarray(4 + len);
    }
    return out;
  }
  get pending(): number {
    return this.buf.length;
  }
}
