// Who gets a slot at max_connections. Postfix keeps policy connections open
// between SMTP sessions, so idle connections (Postfix's own, or anyone's) can
// fill every slot; refusing new ones then would leave mail unanswered while
// nothing is being served. So an idle connection is closed instead: Postfix
// finds its connection closed on its next request and reconnects and resends
// (smtpd_policy_service_try_limit), as after idle_timeout_ms. Only when every
// connection has a request in progress is the new one refused. Pure: the
// caller does the closing.

/** A connection that may be closed: no request in progress, or a peer that does not read its replies. */
export interface Idle {
  /** Requests answered on it so far. */
  answered: number;
  /** When it last answered, or opened: a clock shared by all connections, where only the order matters. */
  since: number;
}

export type Admission<K> = { admit: true; close?: K } | { admit: false };

/**
 * The first to go: one that never sent a request (Postfix sends its request as
 * soon as it connects, so this is a flood or a forgotten client), the oldest
 * first; then the longest idle. A flood of new connections thus replaces its
 * own, not the connections in use.
 */
export function closesFirst(a: Idle, b: Idle): boolean {
  if ((a.answered === 0) !== (b.answered === 0)) return a.answered === 0;
  return a.since < b.since;
}

/**
 * @param open connections open now
 * @param max max_connections
 * @param idle each open connection with its idleness (undefined: busy); read only at the cap
 */
export function admit<K>(
  open: number,
  max: number,
  idle: () => Iterable<readonly [K, Idle | undefined]>,
): Admission<K> {
  if (open < max) return { admit: true };
  let victim: K | undefined;
  let first: Idle | undefined;
  for (const [k, i] of idle()) {
    if (i !== undefined && (first === undefined || closesFirst(i, first))) {
      first = i;
      victim = k;
    }
  }
  return first === undefined ? { admit: false } : { admit: true, close: victim as K };
}
