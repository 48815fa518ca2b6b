// The reference deployment, deploy/nginx/weft-relay.conf, run by Debian's nginx for a test: its two
// upstream servers point at two relays on 127.0.0.1, it listens with TLS (a self-signed certificate
// made here) on a free loopback port, and everything it writes stays in a temporary folder.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from './repo-root';

export interface NginxSite {
  /** Where nginx listens (TLS) on 127.0.0.1. */
  readonly port: number;
  /** Stops nginx (printing its error log if it logged an emergency or alert) and removes its folder. */
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

function listening(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/** Starts nginx with the reference site in front of the relays on `relayPorts`; resolves once it listens. */
export async function startNginxSite(relayPorts: readonly [number, number]): Promise<NginxSite> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-nginx-'));
  chmodSync(dir, 0o755);
  let nginx: ChildProcess | undefined;
  const stop = async () => {
    if (nginx?.pid !== undefined && nginx.exitCode === null) {
      nginx.kill('SIGTERM');
      await new Promise((r) => nginx?.once('exit', r));
    }
    try {
      const log = readFileSync(join(dir, 'error.log'), 'utf8');
      if (log.includes('[emerg]') || log.includes('[alert]')) console.log(`nginx error.log:\n${log}`);
    } catch {
      // nginx never started
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const cert = join(dir, 'relay.pem');
    const key = join(dir, 'relay.key');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-days', '1', '-keyout', key, '-out', cert], {
      stdio: 'ignore',
    });
    const port = await freePort();
    const site = readFileSync(join(REPO_ROOT, 'deploy/nginx/weft-relay.conf'), 'utf8')
      .replace('server 127.0.0.1:8081', `server 127.0.0.1:${relayPorts[0]}`)
      .replace('server 127.0.0.1:8082', `server 127.0.0.1:${relayPorts[1]}`)
      .replace(/listen 443 ssl;/, `listen 127.0.0.1:${port} ssl;`)
      .replace(/\n\s*listen \[::\]:443 ssl;/, '')
      .replace('/etc/ssl/certs/weft-relay.pem', cert)
      .replace('/etc/ssl/private/weft-relay.key', key);
    // The test must run the file as shipped, with only these places changed.
    for (const needed of [`127.0.0.1:${relayPorts[0]}`, `127.0.0.1:${relayPorts[1]}`, `listen 127.0.0.1:${port} ssl;`, cert, key]) {
      if (!site.includes(needed)) throw new Error(`deploy/nginx/weft-relay.conf no longer has the line the test changes to ${needed}`);
    }
    writeFileSync(join(dir, 'weft-relay.conf'), site);
    const temp = join(dir, 'temp');
    mkdirSync(temp, { mode: 0o777 });
    chmodSync(temp, 0o777);
    writeFileSync(
      join(dir, 'nginx.conf'),
      `daemon off;
worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${temp}/body;
  proxy_temp_path ${temp}/proxy;
  fastcgi_temp_path ${temp}/fastcgi;
  uwsgi_temp_path ${temp}/uwsgi;
  scgi_temp_path ${temp}/scgi;
  include ${join(dir, 'weft-relay.conf')};
}
`,
    );
    execFileSync('nginx', ['-t', '-q', '-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: 'pipe' });
    nginx = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: 'ignore' });
    const deadline = performance.now() + 10_000;
    while (!(await listening(port))) {
      if (performance.now() > deadline) throw new Error('timed out: nginx listening');
      await new Promise((r) => setTimeout(r, 50));
    }
    return { port, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
