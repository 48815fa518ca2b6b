// The guest's cookies in the preview. Both the Service Worker (with CookieStore) and the serving
// page (without it) read Set-Cookie fields the same way; the page's jar is the fallback for
// browsers without CookieStore, kept in memory for as long as the page stays open.

export interface ParsedCookie {
  name: string;
  value: string;
  /** The path on the guest (the request's directory when the field names none). */
  path: string;
  /** Epoch ms; absent for a session cookie. */
  expires?: number;
  sameSite?: 'strict' | 'lax' | 'none';
}

/** Reads a Set-Cookie field (RFC 6265 §5.2, the attributes the preview keeps); undefined for one without a name. */
export function parseSetCookie(field: string, requestPath: string, now = Date.now()): ParsedCookie | undefined {
  const [pair, ...attributes] = field.split(';');
  const eq = pair.indexOf('=');
  if (eq <= 0) return undefined;
  const name = pair.slice(0, eq).trim();
  const value = pair.slice(eq + 1).trim();
  const dir = requestPath.split('?')[0].replace(/\/[^/]*$/, '');
  let path = dir === '' ? '/' : dir;
  let expires: number | undefined;
  let maxAge: number | undefined;
  let sameSite: ParsedCookie['sameSite'];
  for (const a of attributes) {
    const i = a.indexOf('=');
    const key = (i < 0 ? a : a.slice(0, i)).trim().toLowerCase();
    const v = i < 0 ? '' : a.slice(i + 1).trim();
    if (key === 'path' && v.startsWith('/')) path = v;
    else if (key === 'max-age' && /^-?\d+$/.test(v)) maxAge = Number(v);
    else if (key === 'expires' && !Number.isNaN(Date.parse(v))) expires = Date.parse(v);
    else if (key === 'samesite' && /^(strict|lax|none)$/i.test(v)) sameSite = v.toLowerCase() as ParsedCookie['sameSite'];
  }
  // Max-Age wins over Expires.
  if (maxAge !== undefined) expires = now + maxAge * 1000;
  return { name, value, path, ...(expires !== undefined ? { expires } : {}), ...(sameSite ? { sameSite } : {}) };
}

/** Cookies per guest port, held by the page when the browser has no CookieStore (bounded). */
export class PageCookieJar {
  private readonly ports = new Map<number, Map<string, ParsedCookie>>();

  constructor(private readonly maxPerPort = 50) {}

  /** The Cookie header for a request to `path` on `port` (undefined: no cookie applies). */
  cookieFor(port: number, path: string, now = Date.now()): string | undefined {
    const jar = this.ports.get(port);
    if (!jar) return undefined;
    const p = path.split('?')[0];
    const out: string[] = [];
    for (const [key, c] of jar) {
      if (c.expires !== undefined && c.expires <= now) {
        jar.delete(key);
        continue;
      }
      if (p === c.path || p.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`)) out.push(`${c.name}=${c.value}`);
    }
    return out.length > 0 ? out.join('; ') : undefined;
  }

  /** Keeps (or, expired, removes) what a response's Set-Cookie fields say. */
  store(port: number, requestPath: string, fields: string[], now = Date.now()): void {
    let jar = this.ports.get(port);
    for (const field of fields) {
      const c = parseSetCookie(field, requestPath, now);
      if (!c) continue;
      jar ??= this.ports.set(port, new Map()).get(port) as Map<string, ParsedCookie>;
      const key = `${c.path}\0${c.name}`;
      jar.delete(key);
      if (c.expires !== undefined && c.expires <= now) continue;
      jar.set(key, c);
      // The bound: the oldest cookie goes.
      if (jar.size > this.maxPerPort) jar.delete(jar.keys().next().value as string);
    }
  }
}
