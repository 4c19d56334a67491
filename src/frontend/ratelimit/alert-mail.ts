// alert_mail: a rate-limit alert mailed to report_to as it happens, from
// the front (the report itself is mailed by `quotapolicy clean`). Never
// holds up an answer: the mail goes out after the reply, and its outcome
// is logged.
import type { RateConfig } from '../../shared/config/rate-schema.js';
import { sendMail } from '../mail/smtp.js';
import { reportRecipients, smtpOptions } from '../mail/settings.js';
import { shownKey } from '../mail/shown.js';

/**
 * Alert mails being sent at once, at most. Alerts come at most once per key
 * and window length, but many ids refused together (a botnet, a spam run
 * from many accounts) would each open an SMTP session; past this many, an
 * alert is only logged, and the log says it was not mailed.
 */
export const MAX_ALERT_MAILS_IN_FLIGHT = 4;

export const ALERT_SUBJECT = 'quotapolicy rate limit alert';

export type MailOutcome = { sent: true } | { sent: false; reason: string };

export class AlertMailer {
  private inFlight = 0;
  constructor(private readonly send: typeof sendMail = sendMail) {}

  /** Mails one alert; resolves with what happened, never rejects. */
  async mail(c: RateConfig, alert: string): Promise<MailOutcome> {
    if (this.inFlight >= MAX_ALERT_MAILS_IN_FLIGHT)
      return { sent: false, reason: `${MAX_ALERT_MAILS_IN_FLIGHT} alert mails already being sent` };
    this.inFlight++;
    try {
      await this.send(
        smtpOptions(c),
        c.report_from!,
        reportRecipients(c),
        ALERT_SUBJECT,
        // The key is whatever a client sent: one escaped line, nothing it can add to the mail.
        `${shownKey(alert)}\n`,
      );
      return { sent: true };
    } catch (e) {
      return { sent: false, reason: (e as Error).message };
    } finally {
      this.inFlight--;
    }
  }
}
