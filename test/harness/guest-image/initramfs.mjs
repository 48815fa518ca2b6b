// What goes into a test guest's initramfs, independent of the guest: kernel modules resolved to a
// load order from their own .modinfo (dependencies first), and the newc cpio format the kernel
// unpacks. build.mjs uses them for both targets (v86 and QEMU).

import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const EXIT_FAILED = 1;
export const EXIT_UNSUPPORTED = 3;

export class GuestImageError extends Error {
  /** @param {string} message @param {number} exitCode */
  constructor(message, exitCode = EXIT_FAILED) {
    super(message);
    this.name = 'GuestImageError';
    this.exitCode = exitCode;
  }
}

export function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

// ---------------------------------------------------------------------------------------------
// kernel modules

/** name (with `_` for `-`) → { path, file } for every module in the kernel package's tree. */
export function moduleIndex(modRoot) {
  const index = new Map();
  const walk = (dir) => {
    for (const ent of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, ent.name);
      if (ent.isDirectory()) walk(p);
      else if (/\.ko(\.xz|\.zst|\.gz)?$/.test(ent.name)) {
        index.set(ent.name.replace(/\.ko(\.xz|\.zst|\.gz)?$/, '').replace(/-/g, '_'), { path: p, file: ent.name });
      }
    }
  };
  walk(join(modRoot, 'kernel'));
  return index;
}

function readModule(path) {
  if (path.endsWith('.ko')) return readFileSync(path);
  const tool = path.endsWith('.xz') ? 'xz' : path.endsWith('.zst') ? 'zstd' : 'gzip';
  if (!have(tool)) throw new GuestImageError(`${path} is compressed; install ${tool} to unpack it`);
  return execFileSync(tool, ['-dc', path], { maxBuffer: 64 << 20 });
}

/** The `depends=` list from a module's .modinfo strings. */
function moduleDepends(bytes) {
  const m = /(?:^|\0)depends=([^\0]*)\0/.exec(bytes.toString('latin1'));
  return m?.[1]
    ? m[1]
        .split(',')
        .filter(Boolean)
        .map((d) => d.replace(/-/g, '_'))
    : [];
}

/** Resolves a set's roots to a load order (dependencies first); built-in modules are skipped. */
export function resolveModuleSet(roots, index, builtin, cache) {
  const order = [];
  const seen = new Set();
  const visit = (raw, via) => {
    const name = raw.replace(/-/g, '_');
    if (seen.has(name)) return;
    seen.add(name);
    if (builtin.has(name)) return;
    const mod = index.get(name);
    if (!mod) throw new GuestImageError(`kernel module ${raw} (needed by ${via}) is not in the kernel package`);
    if (!cache.has(name)) cache.set(name, readModule(mod.path));
    for (const dep of moduleDepends(cache.get(name))) visit(dep, name);
    order.push(name);
  };
  for (const r of roots) visit(r, 'the image');
  return order;
}

// ---------------------------------------------------------------------------------------------
// newc cpio (the initramfs format the kernel unpacks)

export class CpioWriter {
  constructor() {
    this.chunks = [];
    this.length = 0;
    this.ino = 1;
    this.dirs = new Set(['']);
  }

  push(buf) {
    this.chunks.push(buf);
    this.length += buf.length;
  }

  pad() {
    const n = (4 - (this.length % 4)) % 4;
    if (n) this.push(Buffer.alloc(n));
  }

  entry(name, mode, data = Buffer.alloc(0), { rdevMajor = 0, rdevMinor = 0, nlink = 1 } = {}) {
    const nameBuf = Buffer.from(`${name}\0`);
    const fields = [this.ino++, mode, 0, 0, nlink, 0, data.length, 0, 0, rdevMajor, rdevMinor, nameBuf.length, 0];
    this.push(Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`, 'ascii'));
    this.push(nameBuf);
    this.pad();
    this.push(data);
    this.pad();
  }

  /** Adds `path`'s parent directories (each once), so the kernel can create what follows. */
  parents(path) {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) this.dir(parts.slice(0, i).join('/'));
  }

  dir(path, mode = 0o755) {
    if (this.dirs.has(path)) return;
    this.parents(path);
    this.dirs.add(path);
    this.entry(path, 0o040000 | mode, undefined, { nlink: 2 });
  }

  file(path, data, mode = 0o644) {
    this.parents(path);
    this.entry(path, 0o100000 | mode, Buffer.isBuffer(data) ? data : Buffer.from(data));
  }

  symlink(path, target) {
    this.parents(path);
    this.entry(path, 0o120777, Buffer.from(target));
  }

  charDev(path, major, minor, mode = 0o600) {
    this.parents(path);
    this.entry(path, 0o020000 | mode, undefined, { rdevMajor: major, rdevMinor: minor });
  }

  finish() {
    this.entry('TRAILER!!!', 0);
    const n = (512 - (this.length % 512)) % 512;
    if (n) this.push(Buffer.alloc(n));
    return Buffer.concat(this.chunks);
  }
}
