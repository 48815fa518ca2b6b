import { defineConfig } from 'vite';

// Cross-origin isolation (COOP + COEP) gives the page SharedArrayBuffer: weft then moves frames
// between v86 and its worker through shared rings instead of messages. Serve the built site with
// these headers too (examples/express-relay does).
const headers = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};
// `npm run dev` / `npm run preview`: the page's /wisp/ goes to a relay beside it (`npx weft relay`).
const proxy = { '/wisp/': { target: 'ws://127.0.0.1:8080', ws: true } };

export default defineConfig({
  server: { headers, proxy },
  preview: { headers, proxy },
});
