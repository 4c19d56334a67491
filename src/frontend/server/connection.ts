// One Postfix policy connection: many requests, answered in order even when
// pipelined; a half-closed connection still gets its replies; idle connections
// are closed; bad input closes the connection without a reply, logged once.
//
// Every buffer is bounded, whatever the peer does. Input: the parser holds the
// last read and one unfinished request (parser.ts); while it holds unread bytes
// the socket is paused, so Node holds at most its readable high-water mark
// more. Output: requests are taken from the input only while the replies not
// yet taken by the kernel are under MAX_UNSENT_BYTES and fewer than
// MAX_PIPELINED answers are awaited; a peer that never reads stops being read,
// and is read again on 'drain'. Fairness: MAX_REQUESTS_PER_TURN at a time,
// then the other connections get their turn.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { PolicyParser, ProtocolError } from '../protocol/parser.js';
import type { PolicyRequest } from '../protocol/parser.js';
import { formatReply, type Reply } from '../protocol/reply.js';
import type { Idle } from './admission.js';

/** Requests read ahead of their replies (answers awaited from the helper or the store); past this we stop reading. */
export const MAX_PIPELINED = 64;
/**
 * Reply bytes written and not yet taken by the kernel (socket.writableLength),
 * with the replies gathered in this turn; past this we stop reading until
 * 'drain'. Postfix reads each reply before it sends its next request, so it
 * never comes near: 16 KiB is over 1,000 DUNNOs or 30 of the longest replies
 * (MAX_ACTION_LENGTH). Never below the socket's writable high-water mark
 * (16 KiB on Node 20, 64 KiB on 22): only a write at or past that mark is
 * followed by 'drain'.
 */
export const MAX_UNSENT_BYTES = 16 * 1024;
/**
 * Requests answered from one connection before the others get a turn. A
 * connection pipelining thousands of tiny requests in one read would otherwise
 * hold the event loop for tens of milliseconds; 64 take well under one.
 */
export const MAX_REQUESTS_PER_TURN = 16;

export interface ConnectionOptions {
  idleTimeoutMs: number;
  /** A request begun must be complete within this (Postfix sends one in a single write). */
  requestTimeoutMs: number;
  /** Never throws or rejects: the action to answer (with attributes only for a dry query), synchronously when it is at hand. */
  answer(req: PolicyRequest): Reply | Promise<Reply>;
  log: Logger;
  onProtocolError?(reason: string): void;
}

export interface Connection {
  /** Stop after the requests already begun are answered (SIGTERM). */
  drain(): void;
  /** Its idleness if it may be closed to admit another connection (admission.ts); undefined while a request is in progress. */
  idle(): Idle | undefined;
  /** Closes it now, without waiting for anything (to admit another connection). */
  close(): void;
}

/** Numbers connections in log lines: peers (ports) are reused, this is not. */
let connections = 0;
/** The clock of Idle.since: one tick per reply written or connection opened. */
let activity = 0;

export function serveConnection(socket: Socket, opts: ConnectionOptions): Connection {
  const parser = new PolicyParser();
  const conn = ++connections;
  const peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix';
  const unsentCap = Math.max(MAX_UNSENT_BYTES, socket.writableHighWaterMark);
  let tail: Promise<void> = Promise.resolve();
  let pending = 0;
  let readEnded = false;
  let draining = false;
  let reading = true;
  let turnScheduled = false;
  let lastActive = ++activity;
  let answered = 0;
  let requestTimer: NodeJS.Timeout | undefined;

  const outputFull = (): boolean => socket.writableLength >= unsentCap;
  const blocked = (): boolean => pending >= MAX_PIPELINED || outputFull();

  const maybeFinish = (): void => {
    if ((readEnded || (draining && !parser.midRequest)) && pending === 0 && parser.unread === 0 && !socket.destroyed)
      socket.end();
  };

  const nextTurn = (): void => {
    turnScheduled = false;
    pump();
  };

  /** Answers what has been read, as far as the caps allow; then reads on, or waits for 'drain', an answer or the next turn. */
  const pump = (): void => {
    if (socket.destroyed) return;
    let budget = MAX_REQUESTS_PER_TURN;
    // Replies at hand are gathered and written once per turn. With nothing queued on the socket (the usual
    // case) the string goes straight to the socket, whose native side copies whatever bytes the kernel does
    // not take at once: no Buffer is made for it. Behind earlier writes it would wait in Node's write queue
    // as a JS string, a rope of the replies joined (a peer that does not read would hold ~5 times their
    // bytes), so there it goes as one Buffer.
    let out = '';
    try {
      // Counted against the cap with what the socket has not sent yet (replies are ASCII: a character is a byte).
      while (budget > 0 && pending < MAX_PIPELINED && socket.writableLength + out.length < unsentCap) {
        const req = parser.next();
        if (req === undefined) break;
        budget--;
        const answer = opts.answer(req);
        // Nothing queued ahead and the answer is at hand: reply in order, now.
        if (pending === 0 && !(answer instanceof Promise)) {
          out += formatReply(answer);
          lastActive = ++activity;
          answered++;
          continue;
        }
        // Written after this turn's gathered replies: the chain runs once pump has returned.
        pending++;
        tail = tail.then(async () => {
          const action = await answer;
          pending--;
          if (socket.destroyed) return;
          socket.write(formatReply(action));
          lastActive = ++activity;
          answered++;
          pump();
        });
      }
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      opts.log.warn({ conn, peer, reason: e.message }, 'bad policy request, closing connection without a reply');
      opts.onProtocolError?.(e.message);
      socket.destroy();
      return;
    } finally {
      if (out !== '' && !socket.destroyed) socket.write(socket.writableLength === 0 ? out : Buffer.from(out));
    }
    // A slow sender (1 byte/s) resets the idle timer forever; this deadline does not move.
    if (parser.midRequest && requestTimer === undefined) {
      requestTimer = setTimeout(() => {
        opts.log.warn(
          { conn, peer, timeout_ms: opts.requestTimeoutMs },
          'request not completed in time, closing connection without a reply',
        );
        opts.onProtocolError?.('request timeout');
        socket.destroy();
      }, opts.requestTimeoutMs);
    } else if (!parser.midRequest && requestTimer !== undefined) {
      clearTimeout(requestTimer);
      requestTimer = undefined;
    }
    const held = parser.unread > 0;
    if (held || blocked()) {
      if (reading) {
        socket.pause();
        reading = false;
      }
      // Out of turn only: when blocked, 'drain' or an answer calls pump again.
      if (held && !blocked() && !turnScheduled) {
        turnScheduled = true;
        setImmediate(nextTurn);
      }
    } else if (!reading) {
      socket.resume();
      reading = true;
    }
    if (readEnded || draining) maybeFinish();
  };

  socket.setTimeout(opts.idleTimeoutMs, () => {
    if (pending > 0) return;
    opts.log.debug({ peer }, 'closing idle policy connection');
    socket.destroy();
  });
  socket.on('data', (chunk: Buffer) => {
    parser.feed(chunk);
    pump();
  });
  socket.on('drain', pump);
  socket.on('end', () => {
    readEnded = true;
    if (parser.midRequest) opts.log.warn({ conn, peer }, 'connection closed in the middle of a request');
    maybeFinish();
  });
  socket.on('error', (e) => opts.log.debug({ peer, err: e.message }, 'policy connection error'));
  socket.on('close', () => clearTimeout(requestTimer));
  return {
    drain: () => {
      draining = true;
      maybeFinish();
    },
    // A peer not reading its replies is not being served: it may go even with requests unanswered.
    idle: () =>
      outputFull() || (pending === 0 && !parser.midRequest && parser.unread === 0)
        ? { answered, since: lastActive }
        : undefined,
    close: () => socket.destroy(),
  };
}
