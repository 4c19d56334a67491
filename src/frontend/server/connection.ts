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
  /** Never rejects: returns the action to answer. */
  answer(req: PolicyRequest): Promise<string>;
  log: Logger;
  onProtocolError?(reason: string): void;
}

export interface Connection {
  /** Stop after the requests already begun are answered (SIGTERM). */
  drain(): void;
}

export function serveConnection(socket: Socket, opts: ConnectionOptions): Connection {
  const parser = new PolicyParser();
  const peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix';
  let tail: Promise<void> = Promise.resolve();
  let pending = 0;
  let readEnded = false;
  let draining = false;

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
      opts.log.warn({ peer, reason: e.message }, 'bad policy request, closing connection without a reply');
      opts.onProtocolError?.(e.message);
      socket.destroy();
      return;
    }
    if (draining && requests.length === 0) maybeFinish();
    for (const req of requests) {
      const answer = opts.answer(req);
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
  });
  socket.on('end', () => {
    readEnded = true;
    if (parser.midRequest) opts.log.warn({ peer }, 'connection closed in the middle of a request');
    maybeFinish();
  });
  socket.on('error', (e) => opts.log.debug({ peer, err: e.message }, 'policy connection error'));
  return {
    drain: () => {
      draining = true;
      maybeFinish();
    },
  };
}
