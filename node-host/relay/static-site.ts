// `weft relay --demo`: serves the built demo (demo/dist next to the package) at /, or a placeholder
// page that says how to build it. Only GET/HEAD of files inside that folder; nothing else.

import fs from 'node:fs';
import type http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

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

const PLACEHOLDER = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>weft relay</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 3em auto">
<h1>weft relay</h1>
<p>This relay speaks Wisp at <code>WISP_PATH</code>. The demo page has not been built yet
(<code>demo/dist</code> is missing); run <code>npm run build</code> and reload.</p>
<p>Health: <a href="/healthz">/healthz</a> · Metrics: <a href="/metrics">/metrics</a></p>
</body></html>
`;

/** dist/weft.js and node-host/relay/*.ts both find the package root by walking up to package.json. */
export function defaultDemoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return path.join(dir, 'demo', 'dist');
    dir = path.dirname(dir);
  }
  return path.resolve('demo', 'dist');
}

export class StaticSite {
  constructor(
    private readonly root: string,
    private readonly wispPath: string,
  ) {}

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
    const file = path.resolve(this.root, `.${rel}`);
    // Never leave the root, whatever the path says (.., encoded slashes, symlink-free resolve).
    if (file !== this.root && !file.startsWith(this.root + path.sep)) return false;
    let stat: fs.Stats | undefined;
    try {
      stat = fs.statSync(file);
    } catch {
      stat = undefined;
    }
    if (!stat?.isFile()) {
      if (rel !== '/index.html') return false;
      res.writeHead(200, { 'content-type': TYPES['.html'], 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : PLACEHOLDER.replace('WISP_PATH', this.wispPath));
      return true;
    }
    res.writeHead(200, {
      'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
      'content-length': stat.size,
      // The demo may use SharedArrayBuffer, which needs cross-origin isolation.
      'cross-origin-opener-policy': 'same-origin',
      'cross-origin-embedder-policy': 'require-corp',
    });
    if (req.method === 'HEAD') res.end();
    else fs.createReadStream(file).pipe(res);
    return true;
  }
}
