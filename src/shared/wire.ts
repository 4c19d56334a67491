// SECURITY: the whole vocabulary between the unprivileged front and the root
// helper. Closed: four message types with fixed binary layouts; every field is
// range-checked on decode; missing or trailing bytes are refused. The helper
// treats any DecodeError as fatal and exits. All integers big-endian. This
// file holds what both sides share and root's half (decode what the front
// sends, encode replies); the front's half is src/frontend/quota/wire-front.ts.
// Frame: u32 payload length, payload. Payload: u8 type, then:
//   HELLO        front -> helper  u16 version
//   HELLO_ACK    helper -> front  u16 version, u32 min_uid
//   QUOTA_QUERY  front -> helper  u32 seq, u8 kind, u8 n, n x u32 id
//   QUOTA_REPLY  helper -> front  u32 seq, u8 kind, u8 n, n x (u32 id, u8 status, u8 k, k x fs)
//     kind: 0 user (uid), 1 group (gid), 2 project (project id); one kind per query
//     fs: u8 mount_len, mount (UTF-8), 8 x f64 in FsQuota field order

/** 2: queries and replies carry the quota kind (version 1 knew user quotas only). */
export const WIRE_VERSION = 2;
/** Users per query: one quota(1) run serves a whole batch; bounds its argv. */
export const MAX_BATCH = 32;
/** File systems per user: more than any real host mounts with quotas. */
export const MAX_FS = 32;
/** Mount point bytes: a u8 length; real mount points are far shorter. */
export const MAX_MOUNT_BYTES = 255;
/** Largest payload the front may send (a full QUOTA_QUERY: 7 + 32 x 4 = 135 bytes): all root buffers. */
export const MAX_QUERY_BYTES = 7 + MAX_BATCH * 4;
/**
 * Largest payload the helper sends: a QUOTA_REPLY for MAX_BATCH users, each (uid, status, k) with MAX_FS
 * rows of (mount length, mount, 8 x f64): 7 + 32 x (6 + 32 x (1 + 255 + 64)) = 327,879 bytes (~320 KiB).
 * Exact, not a guess: encode refuses more users or file systems, and the front buffers no more.
 */
export const MAX_REPLY_BYTES = 7 + MAX_BATCH * (6 + MAX_FS * (1 + MAX_MOUNT_BYTES + 8 * 8));
/** Highest id (uid, gid, project id): (uid_t)-1 and (uid_t)-2 are "no user" sentinels. */
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

/** Whose quota: the kernel checks all three on every write (quota(1)'s -u, -g, -P). */
export const enum QuotaKind {
  User = 0,
  Group = 1,
  Project = 2,
}
export const QUOTA_KIND_NAMES = ['user', 'group', 'project'] as const;

/** Per-id outcome; only Ok carries numbers. */
export const enum QuotaStatus {
  Ok = 0,
  NoData = 1, // quota ran but reported no quota-enabled file system
  Timeout = 2, // quota did not finish within root's timeout
  ExecFailed = 3, // quota could not run, or exited with an unexpected status
  Unparsable = 4, // output did not match the strict grammar
  OutputTooLarge = 5, // output over the helper's cap
  Complained = 6, // quota wrote to stderr: its numbers may be incomplete
}

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

/** One id's answer; `uid` is the id of the query's kind (a uid, a gid or a project id). */
export interface UserQuota {
  uid: number;
  status: QuotaStatus;
  fs: FsQuota[];
}

export type Message =
  | { type: MsgType.Hello; version: number }
  | { type: MsgType.HelloAck; version: number; minUid: number }
  | { type: MsgType.QuotaQuery; seq: number; kind: QuotaKind; uids: number[] }
  | { type: MsgType.QuotaReply; seq: number; kind: QuotaKind; users: UserQuota[] };

export class DecodeError extends Error {
  override name = 'DecodeError';
}

export const isValidUid = (n: unknown): n is number =>
  typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= MAX_UID;

/** Front-bound and helper-bound messages: each side decodes only what the other may send. */
export type ToHelper = Extract<Message, { type: MsgType.Hello | MsgType.QuotaQuery }>;
export type ToFront = Extract<Message, { type: MsgType.HelloAck | MsgType.QuotaReply }>;

const WRITERS = { 1: 'writeUInt8', 2: 'writeUInt16BE', 4: 'writeUInt32BE', 8: 'writeDoubleBE' } as const;

/** Collects big-endian fields; `frame()` prefixes the length. Throws RangeError when a value does not fit. */
export class FrameWriter {
  private out: Buffer[] = [];
  put(size: keyof typeof WRITERS, v: number): this {
    const b = Buffer.alloc(size);
    b[WRITERS[size]](v);
    this.out.push(b);
    return this;
  }
  bytes(b: Buffer): this {
    this.out.push(b);
    return this;
  }
  frame(max: number): Buffer {
    const payload = Buffer.concat(this.out);
    if (payload.length > max) throw new RangeError('frame too large');
    return Buffer.concat([new FrameWriter().put(4, payload.length).out[0]!, payload]);
  }
}

/** Cursor reads in the style of OpenSMTPD's m_get_*(): never past the end; end() refuses trailing bytes. */
export class FrameCursor {
  private at = 0;
  constructor(readonly p: Buffer) {}
  take(n: number): number {
    if (this.at + n > this.p.length) throw new DecodeError('short message');
    return (this.at += n) - n;
  }
  u8 = (): number => this.p.readUInt8(this.take(1));
  u16 = (): number => this.p.readUInt16BE(this.take(2));
  u32 = (): number => this.p.readUInt32BE(this.take(4));
  count(min: number, max: number, what: string): number {
    const n = this.u8();
    if (n < min || n > max) throw new DecodeError(`bad ${what}`);
    return n;
  }
  end<T>(msg: T): T {
    if (this.at !== this.p.length) throw new DecodeError('trailing bytes');
    return msg;
  }
}

/** The helper's replies. */
export function encodeToFront(msg: ToFront): Buffer {
  const w = new FrameWriter().put(1, msg.type);
  if (msg.type === MsgType.HelloAck) return w.put(2, msg.version).put(4, msg.minUid).frame(MAX_REPLY_BYTES);
  if (msg.users.length > MAX_BATCH || msg.users.some((u) => u.fs.length > MAX_FS)) throw new RangeError('bad reply');
  w.put(4, msg.seq).put(1, msg.kind).put(1, msg.users.length);
  for (const u of msg.users) {
    w.put(4, u.uid).put(1, u.status).put(1, u.fs.length);
    for (const fs of u.fs) {
      const mount = Buffer.from(fs.mount);
      if (mount.length > MAX_MOUNT_BYTES) throw new RangeError('mount point too long');
      w.put(1, mount.length).bytes(mount);
      for (const k of FS_QUOTA_NUMBERS) w.put(8, fs[k]);
    }
  }
  return w.frame(MAX_REPLY_BYTES);
}

/**
 * What root decodes: HELLO and QUOTA_QUERY only. Any other type, the reply
 * types included, is refused before its body is read: root never parses the
 * front-bound layouts (src/frontend/quota/wire-front.ts decodes those).
 */
export function decodeFromFront(p: Buffer): ToHelper {
  const c = new FrameCursor(p);
  const type = c.u8();
  if (type === MsgType.Hello) return c.end({ type, version: c.u16() });
  if (type !== MsgType.QuotaQuery) throw new DecodeError(`unknown message type ${type}`);
  const seq = c.u32();
  const kind = c.count(0, QUOTA_KIND_NAMES.length - 1, 'quota kind') as QuotaKind;
  const uids = Array.from({ length: c.count(1, MAX_BATCH, 'batch size') }, c.u32);
  if (!uids.every(isValidUid)) throw new DecodeError('bad id');
  return c.end({ type, seq, kind, uids });
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
