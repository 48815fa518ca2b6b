// /etc/hosts for the relay's resolver. The relay resolves without getaddrinfo (see resolver.ts), so
// it reads the hosts file itself, as glibc's "files" source does: a name listed there gets every
// address the file gives it (in file order) and no DNS lookup; names are compared without case.

import { readFileSync, statSync } from 'node:fs';
import { parseIp, type IpAddress } from './ip-range';

export const HOSTS_PATH = '/etc/hosts';
/** How often, at most, the file's modification time is looked at again. */
const RECHECK_MS = 5_000;

/** name (lower case, no trailing dot) → addresses, in file order. */
export function parseHosts(text: string): Map<string, IpAddress[]> {
  const out = new Map<string, IpAddress[]>();
  for (const raw of text.split('\n')) {
    const [address, ...names] = raw.replace(/#.*$/, '').trim().split(/\s+/);
    const ip = address ? parseIp(address) : undefined;
    if (!ip) continue;
    for (const n of names) {
      const name = n.toLowerCase().replace(/\.$/, '');
      if (name === '') continue;
      const list = out.get(name) ?? [];
      if (!list.some((a) => a.family === ip.family && a.bytes.every((b, i) => b === ip.bytes[i]))) list.push(ip);
      out.set(name, list);
    }
  }
  return out;
}

/** The hosts file, re-read when it changes (checked at most every RECHECK_MS). */
export class HostsFile {
  private entries = new Map<string, IpAddress[]>();
  private mtimeMs = -1;
  private checkedAt = -Infinity;

  constructor(private readonly path: string = HOSTS_PATH) {}

  lookup(hostname: string, now: number): IpAddress[] | undefined {
    if (now - this.checkedAt >= RECHECK_MS) this.reload(now);
    return this.entries.get(hostname.toLowerCase().replace(/\.$/, ''));
  }

  private reload(now: number): void {
    this.checkedAt = now;
    try {
      const mtimeMs = statSync(this.path).mtimeMs;
      if (mtimeMs === this.mtimeMs) return;
      this.entries = parseHosts(readFileSync(this.path, 'utf8'));
      this.mtimeMs = mtimeMs;
    } catch {
      // No hosts file (or unreadable): names go to DNS only.
      this.entries = new Map();
      this.mtimeMs = -1;
    }
  }
}
