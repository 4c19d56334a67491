// Postfix policy protocol, write side: exactly "action=TEXT\n\n". CR and LF in
// the text would end the reply early or inject a second one, so they go.
export function formatReply(action: string): string {
  return `action=${/[\r\n]/.test(action) ? action.replace(/[\r\n]+/g, ' ') : action}\n\n`;
}
