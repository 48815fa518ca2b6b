// The issue-8 fault matrix (test/harness/fault-wire-matrix.ts) through the relay path: the guest's
// link loses, duplicates, reorders (with delay) and corrupts frames, as in faults-direct.test.ts,
// while `weft vm --upstream wisp://127.0.0.1:PORT/wisp/` carries every flow as a Wisp stream to a
// `weft relay --allow-loopback` started here. Downloads and uploads must arrive byte-exact (sha256);
// the throughput under each fault is printed. The relay must stay up, carry one stream per guest
// connection, close every one of them once the guest's connections are over (its /metrics and its
// stream-close lines agree), and stop cleanly.
//
// Sizes are those of the direct run (the faults are on the guest's link, where weft's TCP sender is
// the slow part under loss and reordering); WEFT_FAULT_BYTES, WEFT_FAULT_SEED and WEFT_FAULT_PCAP
// work as there.

import { describeFaultMatrix, issueFaults, type FaultUpstream } from '../harness/fault-wire-matrix';
import { fetchRelayMetrics, relayOpenStreams, relayStreamsTotal, type RelayMetrics } from '../harness/relay-metrics';
import { spawnWeft } from '../harness/weft-process';

/** How long the relay gets to close its streams after weft has closed the guest's connections. */
const RELAY_DRAIN_MS = 10_000;

async function relayUpstream(): Promise<FaultUpstream> {
  const relay = spawnWeft(['relay', '--listen', '127.0.0.1:0', '--allow-loopback', '--rate', '0']);
  const ready = await relay.waitForEvent('ready').catch((e: unknown) => {
    relay.kill('SIGKILL');
    throw e;
  });
  const port = ready.port as number;
  const streamCloses = () => relay.events.filter((e) => e.event === 'stream-close');
  const logged = (names: string[]) => relay.events.filter((e) => names.includes(e.event)).map((e) => JSON.stringify(e));
  let stopProblems: string[] | undefined;
  return {
    weftArgs: ['--upstream', `wisp://127.0.0.1:${port}/wisp/`],
    problems: () => [
      ...(relay.exit ? [`weft relay exited (${JSON.stringify(relay.exit)}): ${relay.stderr.slice(-2000)}`] : []),
      ...logged(['error', 'warning', 'client-close']),
    ],
    async drain(connections) {
      const start = performance.now();
      let m: RelayMetrics;
      for (;;) {
        m = await fetchRelayMetrics(port);
        const open = relayOpenStreams(m);
        if ((open.tcp === 0 && open.udp === 0) || performance.now() - start > RELAY_DRAIN_MS) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      const open = relayOpenStreams(m);
      const total = relayStreamsTotal(m);
      const closes = streamCloses();
      const reasons: Record<string, number> = {};
      for (const e of closes) reasons[String(e.reason)] = (reasons[String(e.reason)] ?? 0) + 1;
      const summary =
        `weft relay: ${total.tcp} TCP streams (${connections} guest connections), ${open.tcp} open after ` +
        `${((performance.now() - start) / 1000).toFixed(1)} s, ${closes.length} stream-close lines ${JSON.stringify(reasons)}, ` +
        `${((m.get('weft_relay_bytes_total{direction="upload"}') ?? 0) / 1e6).toFixed(0)} MB up / ` +
        `${((m.get('weft_relay_bytes_total{direction="download"}') ?? 0) / 1e6).toFixed(0)} MB down`;
      const wrong: string[] = [];
      if (open.tcp !== 0 || open.udp !== 0)
        wrong.push(`streams still open ${RELAY_DRAIN_MS / 1000} s after weft closed the connections: ${JSON.stringify(open)}`);
      if (total.tcp !== connections || total.udp !== 0) wrong.push(`one TCP stream per guest connection expected: ${JSON.stringify(total)}`);
      if (closes.length !== total.tcp + total.udp) wrong.push(`stream-close lines ${closes.length} ≠ streams ${total.tcp + total.udp}`);
      if (wrong.length > 0) throw new Error(`${wrong.join('; ')}\n${summary}`);
      return summary;
    },
    async stop() {
      if (stopProblems) return stopProblems;
      relay.kill('SIGTERM');
      const exit = await relay.waitForExit(6_000).catch(() => {
        relay.kill('SIGKILL');
        return undefined;
      });
      stopProblems = [
        ...(exit?.code === 0 ? [] : [`weft relay did not exit 0 on SIGTERM: ${JSON.stringify(exit ?? 'no exit within 6 s')}`]),
        ...logged(['error', 'warning']),
      ];
      return stopProblems;
    },
  };
}

describeFaultMatrix({
  title: 'guest transfers through weft vm --upstream wisp:// and weft relay on a faulty link',
  path: 'weft vm --upstream wisp:// + weft relay',
  upstream: relayUpstream,
  faults: issueFaults({ baseline: 50_000_000, loss: 30_000_000, duplication: 50_000_000, reordering: 30_000_000, corruption: 50_000_000 }),
});
