// One Postfix policy connection: many requests, answered in order even when
// pipelined; a half-closed connection still gets its replies; idle connections
// are closed; bad input closes the connection without a reply, logged once.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { PolicyParser, ProtocolError, type PolicyRequest } from '../protocol/parser.js';
import { formatReply } from '../protocol/reply.js';

/** Requests read ahead of their replies; past this we stop reading (backpressure). */
export const MAX_PIPELINED = 64;

export interface ConnectionOptions {
  idleTimeoutMs: number;
  /** A request begun must be complete within this (Postfix sends one in a single write). */
  requestTimeoutMs: number;
  /** Never throws or rejects: the action to answer, synchronously when it is at hand. */
  answer(req: PolicyRequest): string | Promise<string>;
  log: Logger;
  onProtocolError?(reason: string): void;
}

export interface Connection {
  /** Stop after the requests already begun are answered (SIGTERM). */
  drain(): void;
}

/** Numbers connections in log lines: peers (ports) are reused, this is not. */
let connections = 0;

export function serveConnection(socket: Socket, opts: ConnectionOptions): Connection {
  const parser = new PolicyParser();
  const conn = ++connections;
  const peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix';
  let tail: Promise<void> = Promise.resolve();
  let pending = 0;
  let readEnded = false;
  let draining = false;
  let requestTimer: NodeJS.Timeout | undefined;

  const maybeFinish = (): void => {
    if ((readEnded || (draining && !parser.midRequest)) && pending === 0 && !socket.destroyed) socket.end();
  };

  socket.setTimeout(opts.idleTimeoutMs, () => {
    if (pending > 0) return;
    opts.log.debug({ peer }, 'closing idle policy connection');
    socket.destroy();
  });
  socket.on('data', (chunk: Buffer) => {
    let requests: PolicyRequest[];
    try {
      requests = parser.push(chunk);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      opts.log.warn({ conn, peer, reason: e.message }, 'bad policy request, closing connection without a reply');
      opts.onProtocolError?.(e.message);
      socket.destroy();
      return;
    }
    // A slow sender (1 byte/s) resets the idle timer forever; this deadline does not move.
    if (parser.midRequest && requestTimer === undefined) {
      requestTimer = setTimeout(() => {
        opts.log.warn({ conn, peer, timeout_ms: opts.requestTimeoutMs }, 'request not completed in time, closing connection without a reply');
        opts.onProtocolError?.('request timeout');
        socket.destroy();
      }, opts.requestTimeoutMs);
    } else if (!parser.midRequest && requestTimer !== undefined) {
      clearTimeout(requestTimer);
      requestTimer = undefined;
    }
    // Replies to one read go out in one write (pipelined requests, or a burst).
    if (requests.length > 1) socket.cork();
    for (const req of requests) {
      const answer = opts.answer(req);
      // Nothing queued ahead and the answer is at hand: reply now, in order.
      if (pending === 0 && typeof answer === 'string') {
        socket.write(formatReply(answer));
        continue;
      }
      pending++;
      if (pending >= MAX_PIPELINED) socket.pause();
      tail = tail.then(async () => {
        const action = await answer;
        pending--;
        if (socket.destroyed) return;
        socket.write(formatReply(action));
        if (pending < MAX_PIPELINED && socket.isPaused()) socket.resume();
        maybeFinish();
      });
    }
    if (requests.length > 1) socket.uncork();
    if (draining) maybeFinish();
  });
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
  };
}
