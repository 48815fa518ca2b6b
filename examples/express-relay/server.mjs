// One Express server for a weft page: it serves the site and mounts a Wisp relay on the same port,
// so the page's network connects to ws://<its own host>/wisp/ — no second port, no CORS.
//
//   node server.mjs [SITE_DIR]        (or SITE_DIR=…; default ./public)
//
// Environment: PORT (default 8080; 0 picks a free one), HOST (default 127.0.0.1),
// ALLOW_LOOPBACK=1 lets guests reach this machine's own services at 10.0.2.2,
// ORIGIN=http://127.0.0.1:8080[,…] accepts relay clients only from these pages.
import http from 'node:http';
import path from 'node:path';
import express from 'express';
import { createRelay } from 'weft-net/relay';

const site = path.resolve(process.argv[2] ?? process.env.SITE_DIR ?? 'public');
const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 8080);

// The options are `weft relay`'s flags in camelCase; the policy is safe by default (no loopback,
// no private ranges). With loopback allowed, set ORIGIN too, or any site you visit could use it.
const relay = createRelay({
  path: '/wisp/',
  allowLoopback: process.env.ALLOW_LOOPBACK === '1',
  origin: process.env.ORIGIN?.split(','),
});

const app = express();
// Cross-origin isolation (COOP + COEP) gives the page SharedArrayBuffer: weft then moves frames
// between v86 and its worker through shared rings instead of messages.
app.use((_req, res, next) => {
  res.set({
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Embedder-Policy': 'require-corp',
    'Cross-Origin-Resource-Policy': 'same-origin',
  });
  next();
});
app.get('/metrics', (_req, res) => res.type('text/plain').send(relay.metrics()));
app.use(express.static(site));

const server = http.createServer(app);
server.on('upgrade', (req, socket, head) => relay.handleUpgrade(req, socket, head));
server.listen(port, host, () => {
  const url = `http://${host}:${server.address().port}/`;
  console.log(`serving ${site} at ${url} (Wisp relay at ${url.replace('http', 'ws')}wisp/)`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    await relay.close();
    server.close();
    server.closeAllConnections();
  });
}
