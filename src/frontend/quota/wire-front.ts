// The front's half of the wire contract (src/shared/wire.ts has the layouts
// and root's half): encode HELLO and QUOTA_QUERY, decode HELLO_ACK and
// QUOTA_REPLY. Root never loads this file.
import {
  DecodeError,
  FrameCursor,
  FrameWriter,
  FS_QUOTA_NUMBERS,
  isValidUid,
  MAX_BATCH,
  MAX_FS,
  MAX_MOUNT_BYTES,
  MAX_QUERY_BYTES,
  MsgType,
  QUOTA_KIND_NAMES,
  QuotaStatus,
  type QuotaKind,
  type FsQuota,
  type ToFront,
  type ToHelper,
  type UserQuota,
} from '../../shared/wire.js';

/** Status names for logs and reasons, in QuotaStatus order (front only: root sends the number). */
export const QUOTA_STATUS_NAMES = [
  'ok',
  'no_data',
  'timeout',
  'exec_failed',
  'unparsable',
  'output_too_large',
  'complained',
] as const;

export function encodeToHelper(msg: ToHelper): Buffer {
  const w = new FrameWriter().put(1, msg.type);
  if (msg.type === MsgType.Hello) return w.put(2, msg.version).frame(MAX_QUERY_BYTES);
  if (msg.uids.length < 1 || msg.uids.length > MAX_BATCH || !msg.uids.every(isValidUid)) {
    throw new RangeError('bad query');
  }
  w.put(4, msg.seq).put(1, msg.kind).put(1, msg.uids.length);
  for (const uid of msg.uids) w.put(4, uid);
  return w.frame(MAX_QUERY_BYTES);
}

/** Decodes one payload from the helper. Throws DecodeError. */
export function decodeFromHelper(p: Buffer): ToFront {
  const c = new FrameCursor(p);
  const type = c.u8();
  if (type === MsgType.HelloAck) return c.end({ type, version: c.u16(), minUid: c.u32() });
  if (type !== MsgType.QuotaReply) throw new DecodeError(`unknown message type ${type}`);
  const seq = c.u32();
  const kind = c.count(0, QUOTA_KIND_NAMES.length - 1, 'quota kind') as QuotaKind;
  const fsRow = (): FsQuota => {
    const len = c.count(0, MAX_MOUNT_BYTES, 'mount length');
    const start = c.take(len);
    const mount = p.toString('utf8', start, start + len);
    if (!mount.startsWith('/') || /[\0-\x1f\ufffd]/.test(mount)) throw new DecodeError('bad mount point');
    const row = { mount } as FsQuota;
    for (const k of FS_QUOTA_NUMBERS) {
      row[k] = p.readDoubleBE(c.take(8));
      if (!Number.isSafeInteger(row[k]) || row[k] < 0) throw new DecodeError('bad quota number');
    }
    return row;
  };
  const users = Array.from({ length: c.count(0, MAX_BATCH, 'batch size') }, (): UserQuota => {
    const uid = c.u32();
    const status = c.count(0, QUOTA_STATUS_NAMES.length - 1, 'status') as QuotaStatus;
    const fs = Array.from({ length: c.count(0, status === QuotaStatus.Ok ? MAX_FS : 0, 'fs count') }, fsRow);
    return { uid, status, fs };
  });
  return c.end({ type, seq, kind, users });
}
