// Guest TCP and UDP through `weft vm --upstream wisp://…` and a real `weft relay` on this host:
// the same real-guest checks as the direct path, every flow carried as a Wisp stream. Sizes are
// smaller than the direct run by default (WEFT_BIG_BYTES / WEFT_PARALLEL_CONNS raise them).
import { describeGuestTraffic } from '../harness/guest-traffic';
import { spawnWeft } from '../harness/weft-process';

describeGuestTraffic('guest TCP/UDP through weft vm --upstream wisp:// and weft relay', 'relay', {
  upstream: async () => {
    const relay = spawnWeft(['relay', '--listen', '127.0.0.1:0', '--allow-loopback', '--rate', '0', '--max-streams-per-client', '4096']);
    const ready = await relay.waitForEvent('ready');
    return {
      weftArgs: ['--upstream', String(ready.wisp), '--allow-host-loopback'],
      stop: async () => {
        relay.kill('SIGTERM');
        await relay.waitForExit(6_000).catch(() => relay.kill('SIGKILL'));
      },
    };
  },
  bigBytes: 256 << 20,
  parallel: 200,
});
