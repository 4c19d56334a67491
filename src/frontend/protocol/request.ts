// Encodes a policy request the way Postfix writes one: NAME=VALUE lines and an
// empty line. The one encoder for `quotapolicy query`, `check`, the benchmarks
// and the tests. A name holding "=" or a line break, or a value holding a line
// break or NUL, would change what the server reads; it is refused, not sent.
const BAD_NAME = /[=\n\r\0]/;
const BAD_VALUE = /[\n\r\0]/;

export function encodeRequest(attrs: Iterable<readonly [string, string]> | Record<string, string>): string {
  const pairs = Symbol.iterator in attrs ? attrs : Object.entries(attrs);
  let text = '';
  for (const [name, value] of pairs) {
    if (name === '' || BAD_NAME.test(name)) throw new RangeError(`policy attribute name ${JSON.stringify(name)}`);
    if (BAD_VALUE.test(value)) throw new RangeError(`policy attribute ${name}: value holds a line break or NUL`);
    text += `${name}=${value}\n`;
  }
  return `${text}\n`;
}
