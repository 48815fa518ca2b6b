// The one spelling of a destination name a client asks for. The relay matches --allow/--deny
// against it and resolves it — the same string both times. Clients once got past the rules with
// spellings the two sides read differently: `localhost\0.example.com` matched `.example.com` while
// the system resolver stopped at the NUL and looked up `localhost`; fullwidth letters and the
// ideographic full stop (`ｄｅｎｉｅｄ.test`, `sub。denied.test`) passed a deny rule the resolver then
// mapped onto. Names are normalised once, as browsers do (WHATWG URL host parsing: UTS-46 mapping,
// lower case, punycode), with a trailing dot dropped.

import { domainToASCII } from 'node:url';
import { parseIp } from './ip-range';

/** Longest name DNS can carry (253 characters, with room for brackets around an IPv6 literal). */
const MAX_NAME = 255;

/**
 * The normalised name, or undefined when no host can be called so (bytes no hostname has — NUL,
 * controls, spaces — or what UTS-46 rejects): the client then gets 0x41.
 */
export function normalizeHostname(name: string): string | undefined {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control bytes are exactly what this refuses
  if (name.length === 0 || name.length > MAX_NAME || /[\u0000-\u0020\u007f]/.test(name)) return undefined;
  if (parseIp(name)) return name.toLowerCase();
  const ascii = domainToASCII(name).replace(/\.$/, '');
  return ascii === '' ? undefined : ascii;
}
