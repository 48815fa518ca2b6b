// `weft relay --demo`: serves the built demo page (dist/demo in the package) at /, v86's build
// (libv86.mjs, v86.wasm) at /v86/, and the default guest image (`npm run guest-image`, in
// .cache/guest or $WEFT_GUEST_DIR) at /guest/. Until the demo is built, / is a placeholder page
// that says how to build it. Only GET/HEAD of files inside those folders; nothing else.

import fs from 'node:fs';
import type http from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { etagMatches, fileEtag, parseRange } from './http-range';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.map': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
};

/** The demo needs SharedArrayBuffer-capable pages: cross-origin isolation on every response. */
const ISOLATION = {
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
  'cross-origin-resource-policy': 'same-origin',
};

const PLACEHOLDER = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>weft relay</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 3em auto">
<h1>weft relay</h1>
<p>This relay speaks Wisp at <code>WISP_PATH</code>. The demo page has not been built yet
(<code>dist/demo</code> is missing); run <code>npm run build</code> and reload.</p>
<p>Health: <a href="/healthz">/healthz</a> · Metrics: <a href="/metrics">/metrics</a></p>
</body></html>
`;

/** dist/weft.js and node-host/relay/*.ts both find the package root by walking up to package.json. */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    dir = path.dirname(dir);
  }
  return path.resolve('.');
}

export function defaultDemoRoot(): string {
  return path.join(packageRoot(), 'dist', 'demo');
}

/** Where `npm run guest-image` puts the default guest (the same rule as its build script). */
export function defaultGuestDir(): string {
  return process.env.WEFT_GUEST_DIR ? path.resolve(process.env.WEFT_GUEST_DIR) : path.join(packageRoot(), '.cache', 'guest');
}

/** URL prefix → folder, besides the demo root at "/". */
export function defaultDemoMounts(): Record<string, string> {
  return {
    '/v86/': path.join(packageRoot(), 'node_modules', 'v86', 'build'),
    '/guest/': defaultGuestDir(),
  };
}

export class StaticSite {
  private readonly mounts: Array<[prefix: string, dir: string]>;

  constructor(
    private readonly root: string,
    private readonly wispPath: string,
    mounts: Record<string, string> = defaultDemoMounts(),
  ) {
    // Longest prefix first, so /guest/states/ could be mounted apart from /guest/.
    this.mounts = Object.entries(mounts)
      .map(([prefix, dir]): [string, string] => [prefix, path.resolve(dir)])
      .sort((a, b) => b[0].length - a[0].length);
  }

  /** Answers the request; false if it is not a GET/HEAD this site serves. */
  handle(req: http.IncomingMessage, res: http.ServerResponse, pathname: string): boolean {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    let rel: string;
    try {
      rel = decodeURIComponent(pathname);
    } catch {
      return false;
    }
    if (rel.endsWith('/')) rel += 'index.html';
    const mount = this.mounts.find(([prefix]) => rel.startsWith(prefix));
    const base = mount ? mount[1] : path.resolve(this.root);
    const file = path.resolve(base, `.${mount ? rel.slice(mount[0].length - 1) : rel}`);
    // Never leave the folder, whatever the path says (.., encoded slashes) — nor through a symlink
    // inside it: the real path must be inside the folder's real path too.
    if (!inside(file, base)) return false;
    let stat: fs.Stats | undefined;
    try {
      stat = fs.statSync(file);
      if (!inside(fs.realpathSync(file), fs.realpathSync(base))) return false;
    } catch {
      stat = undefined;
    }
    if (!stat?.isFile()) {
      if (rel !== '/index.html') return false;
      res.writeHead(200, { 'content-type': TYPES['.html'], 'cache-control': 'no-store', ...ISOLATION });
      res.end(req.method === 'HEAD' ? undefined : PLACEHOLDER.replace('WISP_PATH', this.wispPath));
      return true;
    }
    const etag = fileEtag(stat.size, stat.mtimeMs);
    const common = {
      etag,
      'last-modified': stat.mtime.toUTCString(),
      // The page and its bundles change with every build, and the guest image with every
      // `npm run guest-image`: revalidate (cheaply, by ETag) rather than run yesterday's copy.
      'cache-control': 'no-cache',
      ...ISOLATION,
    };
    if (etagMatches(req.headers['if-none-match'], etag)) {
      res.writeHead(304, common);
      res.end();
      return true;
    }
    // If-Range: a range only of the copy the client already has part of; otherwise the whole file.
    const ifRange = req.headers['if-range'];
    const range = ifRange === undefined || ifRange === etag ? parseRange(req.headers.range, stat.size) : ({ kind: 'whole' } as const);
    const type = TYPES[path.extname(file)] ?? 'application/octet-stream';
    if (range.kind === 'unsatisfiable') {
      res.writeHead(416, { ...common, 'content-range': `bytes */${stat.size}` });
      res.end();
      return true;
    }
    const { start, end } = range.kind === 'part' ? range : { start: 0, end: stat.size - 1 };
    res.writeHead(range.kind === 'part' ? 206 : 200, {
      ...common,
      'content-type': type,
      'content-length': Math.max(0, end - start + 1),
      'accept-ranges': 'bytes',
      ...(range.kind === 'part' ? { 'content-range': `bytes ${start}-${end}/${stat.size}` } : {}),
    });
    if (req.method === 'HEAD' || end < start) res.end();
    // A read error (EIO, a file replaced during a build) ends this response, not the relay.
    else pipeline(fs.createReadStream(file, { start, end }), res, () => {});
    return true;
  }
}

function inside(file: string, dir: string): boolean {
  return file === dir || file.startsWith(dir + path.sep);
}
