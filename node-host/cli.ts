// The `weft` command: the entry point esbuild bundles into dist/weft.js. It runs main() on import.

import fs from 'node:fs';
import { NotImplementedError, UsageError } from './cli-errors';
import { runRelayCommand } from './relay/relay-command';
import { RELAY_HELP } from './relay/relay-options';
import { runStartCommand, START_HELP } from './start-command';
import { runVmCommand, VM_HELP } from './vm-command';
import { wantsHelp } from './cli-values';

const HELP = `Usage: weft <command> [options]

weft is a user-mode network stack that gives virtual machines networking.

Commands:
  vm       Run the stack in Node for a QEMU guest or a Linux TAP (weft vm --help)
  relay    A Wisp server for guests in web pages: TCP and UDP through this host (weft relay --help)
  start    The demo ("npm start"): weft relay --demo on http://127.0.0.1:8080/ (weft start --help)

Options:
  -h, --help      Show this help; "weft <command> --help" shows a command's flags
  -V, --version   Print weft's version
`;

function version(): string {
  // dist/weft.js and node-host/cli.ts both sit one level below the package root.
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Runs the command line; resolves with the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case undefined:
        process.stderr.write(HELP);
        return 2;
      case '-h':
      case '--help':
      case 'help':
        process.stdout.write(HELP);
        return 0;
      case '-V':
      case '--version':
        process.stdout.write(`weft ${version()}\n`);
        return 0;
      case 'vm':
        if (wantsHelp(rest)) {
          process.stdout.write(VM_HELP);
          return 0;
        }
        return await runVmCommand(rest);
      case 'relay':
        if (wantsHelp(rest)) {
          process.stdout.write(RELAY_HELP);
          return 0;
        }
        return await runRelayCommand(rest);
      case 'start':
        if (wantsHelp(rest)) {
          process.stdout.write(START_HELP);
          return 0;
        }
        return await runStartCommand(rest);
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)} (commands: vm, relay, start)`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      const sub = command === 'vm' || command === 'relay' || command === 'start' ? ` ${command}` : '';
      process.stderr.write(`weft${sub}: ${e.message}\nRun "weft${sub} --help" for usage.\n`);
      return e.exitCode;
    }
    if (e instanceof NotImplementedError) {
      process.stderr.write(`weft: ${e.message}\n`);
      return e.exitCode;
    }
    throw e;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`weft: unexpected error: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);
