// SECURITY: this is the whole vocabulary between the unprivileged front and
// the root helper. It is closed: four message types, fixed binary layouts,
// every field range-checked on decode, trailing or missing bytes rejected.
// The helper treats any DecodeError as fatal and exits.
//
// Frame: u32 big-endian payload length, then the payload. Payload: u8 type,
// then the body for that type. All integers big-endian.
//   HELLO        front -> helper  u16 version
//   HELLO_ACK    helper -> front  u16 version, u32 min_uid
//   QUOTA_QUERY  front -> helper  u32 seq, u8 n, n x u32 uid
//   QUOTA_REPLY  helper -> front  u32 seq, u8 n, n x user
//     user: u32 uid, u8 status, u8 fs_count, fs_count x fs
//     fs:   u8 mount_len, mount (UTF-8), 8 x f64 (see QuotaNumbers)

export const WIRE_VERSION = 1;
/** A reply for MAX_BATCH users on MAX_FS file systems fits well below this. */
export const MAX_FRAME_BYTES = 64 * 1024;
/** Users per query: one `quota` run serves a whole batch; bounds argv length. */
export const MAX_BATCH = 32;
/** File systems reported per user: more than any real host mounts with quotas. */
export const MAX_FS = 32;
/** Mount point bytes: PATH_MAX would be 4096, but 255 keeps a reply small. */
export const MAX_MOUNT_BYTES = 255;
/** Highest uid accepted: (uid_t)-1 and (uid_t)-2 are "no user" sentinels. */
export const MAX_UID = 0xfffffffd;
/** Queries the front may have outstanding; more is a protocol violation. */
export const MAX_INFLIGHT = 8;

/** Helper settings when root's command line names none (sudo mode). */
export const HELPER_DEFAULTS = { quotaPath: '/usr/bin/quota', timeoutMs: 5000, minUid: 1000 };

export const enum MsgType {
  Hello = 1,
  HelloAck = 2,
  QuotaQuery = 3,
  QuotaReply = 4,
}

/** Per-user outcome. Anything but Ok carries no numbers. */
export const enum QuotaStatus {
  Ok = 0,
  /** quota ran but reported no quota-enabled file system. */
  NoData = 1,
  /** quota did not finish within the root's configured timeout. */
  Timeout = 2,
  /** quota could not be run, or exited with an unexpected status. */
  ExecFailed = 3,
  /** quota's output did not match the strict grammar. */
  Unparsable = 4,
  /** quota printed more than the helper's output cap. */
  OutputTooLarge = 5,
  /** quota wrote to stderr: its numbers may be incomplete. */
  Complained = 6,
}
export const QUOTA_STATUS_NAMES = ['ok', 'no_data', 'timeout', 'exec_failed', 'unparsable', 'output_too_large', 'complained'] as const;

/** One file system row of `quota -p`: blocks in KiB, grace as epoch s (0 = none). */
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
const NUMBER_FIELDS = ['blocks', 'blockSoft', 'blockHard', 'blockGrace', 'files', 'fileSoft', 'fileHard', 'fileGrace'] as const;

export interface UserQuota { uid: number; status: QuotaStatus; fs: FsQuota[] }

export type Message =
  | { type: MsgType.Hello; version: number }
  | { type: MsgType.HelloAck; version: number; minUid: number }
  | { type: MsgType.QuotaQuery; seq: number; uids: number[] }
  | { type: MsgType.QuotaReply; seq: number; users: UserQuota[] };

export class DecodeError extends Error {
  override name = 'DecodeError';
}

export function isValidUid(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= MAX_UID;
}

/** Accumulates big-endian fields; frame() prefixes the length. */
class Writer {
  private parts: Buffer[] = [];
  private put(size: number, fill: (b: Buffer) => void): this { const b = Buffer.alloc(size); fill(b); this.parts.push(b); return this; }
  u8(v: number): this { return this.put(1, (b) => b.writeUInt8(v)); }
  u16(v: number): this { return this.put(2, (b) => b.writeUInt16BE(v)); }
  u32(v: number): this { return this.put(4, (b) => b.writeUInt32BE(v)); }
  f64(v: number): this { return this.put(8, (b) => b.writeDoubleBE(v)); }
  bytes(v: Buffer): this { this.parts.push(v); return this; }
  frame(): Buffer {
    const payload = Buffer.concat(this.parts);
    if (payload.length > MAX_FRAME_BYTES) throw new RangeError('frame too large');
    return Buffer.concat([new Writer().u32(payload.length).parts[0]!, payload]);
  }
}

/** Cursor reader in the style of OpenSMTPD's m_get_*()/m_end(). */
class Reader {
  private at = 0;
  constructor(private readonly buf: Buffer) {}
  private need(n: number): number {
    if (this.at + n > this.buf.length) throw new DecodeError('short message');
    const start = this.at;
    this.at += n;
    return start;
  }
  u8(): number { return this.buf.readUInt8(this.need(1)); }
  u16(): number { return this.buf.readUInt16BE(this.need(2)); }
  u32(): number { return this.buf.readUInt32BE(this.need(4)); }
  f64(): number { return this.buf.readDoubleBE(this.need(8)); }
  bytes(n: number): Buffer { const s = this.need(n); return this.buf.subarray(s, s + n); }
  end(): void { if (this.at !== this.buf.length) throw new DecodeError('trailing bytes'); }
}

export function encode(msg: Message): Buffer {
  const w = new Writer().u8(msg.type);
  switch (msg.type) {
    case MsgType.Hello: return w.u16(msg.version).frame();
    case MsgType.HelloAck: return w.u16(msg.version).u32(msg.minUid).frame();
    case MsgType.QuotaQuery:
      if (msg.uids.length < 1 || msg.uids.length > MAX_BATCH || !msg.uids.every(isValidUid)) throw new RangeError('bad query');
      w.u32(msg.seq).u8(msg.uids.length);
      for (const uid of msg.uids) w.u32(uid);
      return w.frame();
    case MsgType.QuotaReply:
      w.u32(msg.seq).u8(msg.users.length);
      for (const u of msg.users) {
        w.u32(u.uid).u8(u.status).u8(u.fs.length);
        for (const fs of u.fs) {
          const mount = Buffer.from(fs.mount);
          if (mount.length > MAX_MOUNT_BYTES) throw new RangeError('mount point too long');
          w.u8(mount.length).bytes(mount);
          for (const k of NUMBER_FIELDS) w.f64(fs[k]);
        }
      }
      return w.frame();
  }
}

function decodeFs(r: Reader): FsQuota {
  const len = r.u8();
  const mount = new TextDecoder('utf-8', { fatal: true }).decode(r.bytes(len));
  if (!mount.startsWith('/') || /[\0-\x1f]/.test(mount)) throw new DecodeError('bad mount point');
  const fs = { mount } as FsQuota;
  for (const k of NUMBER_FIELDS) {
    const v = r.f64();
    if (!Number.isSafeInteger(v) || v < 0) throw new DecodeError('bad quota number');
    fs[k] = v;
  }
  return fs;
}

/** Decode one frame payload (without its length prefix). Throws DecodeError. */
export function decode(payload: Buffer): Message {
  const r = new Reader(payload);
  const type = r.u8();
  let msg: Message;
  switch (type) {
    case MsgType.Hello:
      msg = { type, version: r.u16() };
      break;
    case MsgType.HelloAck:
      msg = { type, version: r.u16(), minUid: r.u32() };
      break;
    case MsgType.QuotaQuery: {
      const seq = r.u32();
      const n = r.u8();
      if (n < 1 || n > MAX_BATCH) throw new DecodeError('bad batch size');
      const uids: number[] = [];
      for (let i = 0; i < n; i++) uids.push(r.u32());
      if (!uids.every(isValidUid)) throw new DecodeError('bad uid');
      msg = { type, seq, uids };
      break;
    }
    case MsgType.QuotaReply: {
      const seq = r.u32();
      const n = r.u8();
      if (n > MAX_BATCH) throw new DecodeError('bad batch size');
      const users: UserQuota[] = [];
      for (let i = 0; i < n; i++) {
        const uid = r.u32();
        const status = r.u8();
        if (status >= QUOTA_STATUS_NAMES.length) throw new DecodeError('bad status');
        const count = r.u8();
        if (count > MAX_FS || (status !== QuotaStatus.Ok && count !== 0)) throw new DecodeError('bad fs count');
        const fs: FsQuota[] = [];
        for (let j = 0; j < count; j++) fs.push(decodeFs(r));
        users.push({ uid, status, fs });
      }
      msg = { type, seq, users };
      break;
    }
    default:
      throw new DecodeError(`unknown message type ${type}`);
  }
  r.end();
  return msg;
}

/**
 * Splits a byte stream into frame payloads. push() returns the complete
 * payloads so far; a length of 0 or over MAX_FRAME_BYTES throws DecodeError
 * before any of that frame is buffered.
 */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Buffer[] = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len === 0 || len > MAX_FRAME_BYTES) throw new DecodeError(`bad frame length ${len}`);
      if (this.buf.length < 4 + len) break;
      out.push(this.buf.subarray(4, 4 + len));
      this.buf = this.buf.subarray(4 + len);
    }
    return out;
  }
  get pending(): number { return this.buf.length; }
}
