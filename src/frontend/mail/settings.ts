// The rate-limit section's mail settings as the SMTP client takes them: one
// reading for the daily report (`quotapolicy clean`) and the daemon's alerts.
import { readFileSync } from 'node:fs';
import type { RateConfig } from '../../shared/config/rate-schema.js';
import type { SmtpOptions } from './smtp.js';

/** smtp_server, smtp_starttls, smtp_credentials and the CA file (read now, so a change applies to the next mail). */
export function smtpOptions(c: RateConfig): SmtpOptions {
  const ca = c.smtp_tls_ca_file === null ? undefined : readFileSync(c.smtp_tls_ca_file);
  return {
    host: c.smtp_server[0],
    port: c.smtp_server[1] ?? 25,
    starttls: c.smtp_starttls,
    credentials: c.smtp_credentials,
    ...(ca ? { ca } : {}),
  };
}

/** report_to, one address or several (the config check requires it wherever mail is sent). */
export const reportRecipients = (c: RateConfig): string[] => [c.report_to!].flat();
