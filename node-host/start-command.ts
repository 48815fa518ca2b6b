// `weft start` (what `npm start` runs after building): makes sure the default guest image exists
// (running the `npm run guest-image` script when it is missing), then runs `weft relay --demo` as a
// child process and prints the page's URL. Ctrl-C stops both. The relay runs as its own process so
// its drain-on-signal behaviour and its logs are exactly those of `weft relay`.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { defaultDemoRoot, defaultGuestDir } from './relay/static-site';

export const START_HELP = `Usage: weft start [relay flags]        (from the repository: npm start -- [relay flags])

Runs the demo: a Linux VM in a web page whose network is weft. It prepares the default guest image
when it is missing (npm run guest-image; needs Debian/Ubuntu apt and root), then runs
"weft relay --demo" on http://127.0.0.1:8080/ (the page at /, Wisp at /wisp/) and prints the URL.
Ctrl-C stops it.

Every flag is passed to weft relay (see weft relay --help). The relay's policy is the safe default:
the guest reaches the internet, not this machine's loopback or private networks. For example:
  --listen 127.0.0.1:9000     serve on another port
  --allow-loopback            let the guest reach this host's loopback services at 10.0.2.2
                              (e.g. a local test server: wget http://10.0.2.2:8000/)

Environment:
  WEFT_GUEST_DIR=DIR          where the default guest image is (default: .cache/guest)
  WEFT_NO_GUEST_BUILD=1       do not try to build a missing guest image
`;

/** The guest-image manifest and the four files it names, as `npm run guest-image` leaves them. */
function guestImageReady(dir: string): boolean {
  try {
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { files: Record<string, { path: string }> };
    return Object.values(manifest.files).every((f) => fs.existsSync(path.join(dir, f.path)));
  } catch {
    return false;
  }
}

function packageFile(...parts: string[]): string {
  // The demo root is <package>/dist/demo.
  return path.join(defaultDemoRoot(), '..', '..', ...parts);
}

/** Runs a child to completion with this terminal; Ctrl-C reaches it through the process group. */
function runChild(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { stdio: 'inherit', env });
    child.once('error', () => resolve(1));
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 130 : 1)));
  });
}

async function prepareGuestImage(write: (s: string) => void): Promise<void> {
  const dir = defaultGuestDir();
  if (guestImageReady(dir)) return;
  const script = packageFile('test', 'harness', 'guest-image', 'build.mjs');
  if (process.env.WEFT_NO_GUEST_BUILD || !fs.existsSync(script)) {
    write(`weft start: no guest image in ${dir}; the page explains how to supply one (or run "npm run guest-image").\n`);
    return;
  }
  write(`weft start: the default guest image is missing; building it (npm run guest-image) into ${dir} …\n`);
  const code = await runChild([script], { ...process.env, WEFT_GUEST_DIR: dir });
  if (code !== 0) {
    write(
      `weft start: the guest image could not be built here (exit ${code}; the message above says why).\n` +
        '            The demo still starts: its page lets you boot a local file or a URL instead.\n',
    );
  }
}

/** Runs the demo until a signal; resolves with the exit code. */
export async function runStartCommand(argv: readonly string[]): Promise<number> {
  const out = (s: string) => process.stdout.write(s);
  const relayArgs = argv[0] === '--' ? argv.slice(1) : [...argv];
  if (!fs.existsSync(path.join(defaultDemoRoot(), 'index.html'))) {
    out(`weft start: the demo page is not built (${defaultDemoRoot()} is missing): run "npm run build" first.\n`);
  }

  // Ctrl-C during the image build ends the build (same process group) and then us.
  let interrupted = false;
  const onEarlySignal = () => (interrupted = true);
  process.on('SIGINT', onEarlySignal);
  process.on('SIGTERM', onEarlySignal);
  try {
    await prepareGuestImage(out);
  } finally {
    process.off('SIGINT', onEarlySignal);
    process.off('SIGTERM', onEarlySignal);
  }
  if (interrupted) return 130;

  const listen = relayArgs.some((a) => a === '--listen' || a.startsWith('--listen=')) ? [] : ['--listen', '127.0.0.1:8080'];
  // --expose-gc, as bin/weft.js gives it: the relay gives memory back after stream bursts.
  const child = spawn(process.execPath, ['--expose-gc', process.argv[1], 'relay', '--demo', ...listen, ...relayArgs], {
    stdio: ['ignore', 'inherit', 'pipe'],
  });

  // The relay logs JSON lines on stderr: pass them through, and announce the URL when it is ready.
  let partial = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    process.stderr.write(chunk);
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.includes('"event":"ready"')) continue;
      try {
        const ready = JSON.parse(line) as { event: string; url: string; wisp: string; policy: { allowLoopback: boolean } };
        if (ready.event !== 'ready') continue;
        out(
          `\n  weft demo: ${ready.url}\n\n` +
            `  Open it in a browser; the VM boots in the page and reaches the network through the Wisp relay at ${ready.wisp}.\n` +
            (ready.policy.allowLoopback
              ? "  The relay lets guests reach this host's loopback: 10.0.2.2:PORT in the guest is 127.0.0.1:PORT here.\n"
              : '  To let the guest reach servers on this machine (10.0.2.2:PORT), run: npm start -- --allow-loopback\n') +
            '  Ctrl-C stops it.\n\n',
        );
      } catch {
        // not the line we thought
      }
    }
  });

  return new Promise<number>((resolve) => {
    // Forward as SIGTERM: the relay handles SIGINT and SIGTERM once each, so a terminal's Ctrl-C
    // (SIGINT to the whole process group) plus this forward still means one orderly drain.
    const forward = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    };
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    child.once('error', (e) => {
      out(`weft start: could not start the relay: ${e.message}\n`);
      resolve(1);
    });
    // 'close', not 'exit': the relay's last log lines (draining, stopped) are still in the pipe at exit.
    child.once('close', (code, signal) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      resolve(code ?? (signal ? 130 : 1));
    });
  });
}
