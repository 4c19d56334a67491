// The rate-limit report (policyd-rate-limit's `report`): who hit a reported
// window since the last clean, as a table, mailed on `quotapolicy clean`.
import type { HitRow } from '../../frontend/ratelimit/store.js';
import type { RateConfig } from '../../shared/config/rate-schema.js';
import { sendMail } from '../../frontend/mail/smtp.js';
import { reportRecipients, smtpOptions } from '../../frontend/mail/settings.js';
import { shownKey } from '../../frontend/mail/shown.js';

export function reportText(hits: readonly HitRow[]): string {
  if (hits.length === 0) return 'No id hit a limit since the last cleanup.\n';
  const rows = hits.map((h) => [shownKey(h.key), String(h.seconds), String(h.hits)]);
  const head = ['id', 'window (s)', 'hits'];
  const w = head.map((_, i) => Math.max(head[i]!.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join(' | ');
  return [
    'Ids that hit a limit since the last cleanup:',
    '',
    line(head),
    w.map((n) => '-'.repeat(n)).join('-+-'),
    ...rows.map(line),
    '',
  ].join('\n');
}

/** Sends the report if there is one to send; returns whether it was sent. */
export async function sendReport(c: RateConfig, hits: readonly HitRow[]): Promise<boolean> {
  const reported = hits.filter((h) => c.report_limits.includes(h.seconds));
  if (c.report_only_if_needed && reported.length === 0) return false;
  await sendMail(smtpOptions(c), c.report_from!, reportRecipients(c), c.report_subject, reportText(reported));
  return true;
}
