// The CI-sized soak (test/soak/soak.ts; `npm run soak` runs the 10-minute one): two netns guests
// each make thousands of TCP connections (echo, HTTP, RST aborts, refused ports, a curl loop) and a
// hundred-odd UDP flows from distinct source ports, at the same time: one through
// `weft vm --upstream direct`, the other through `weft vm --upstream wisp://…` and a `weft relay`.
// 60 s of traffic after a 30 s warm-up (long enough for the warm-up's RSS peak to stand for the
// load's). Each weft process (both vms and the relay) must end with its fds back at their idle count
// and its RSS, heap and ArrayBuffer memory within 10% (plus slack) of its post-warm-up baseline;
// every flow must close by itself within 75 s of the end of traffic (UDP flows idle out after 60 s),
// and the relay's stream table must be empty. About 3.5 minutes in all.
//
// WEFT_SOAK_SECONDS changes the 60 s of traffic.

import { describe, expect, it } from 'vitest';
import { formatReport, runSoak, soakUnavailable } from '../soak/soak';
import { tcpConnections } from '../soak/soak-guest';

const TITLE = 'soak (short): thousands of guest TCP connections and UDP flows through weft vm --upstream direct and through weft relay';
const SECONDS = Number(process.env.WEFT_SOAK_SECONDS || 60);
const WARMUP = 30;
const DRAIN_MS = 75_000;

const why = soakUnavailable();
if (why) console.warn(`[skip] ${TITLE}: ${why}`);

describe.skipIf(why !== undefined)(TITLE, () => {
  it(
    `${SECONDS} s of traffic on both paths: fds, RSS, heap and buffers of each weft process back near its baseline, every flow and stream closed`,
    async () => {
      const report = await runSoak({
        seconds: SECONDS,
        warmupSeconds: WARMUP,
        sampleMs: 3_000,
        paths: ['direct', 'wisp'],
        tcpRate: 50,
        // Few UDP flows: they live 60 s after their last datagram, so the baseline (taken once the
        // warm-up's TCP connections have closed) still holds the warm-up's ~60 of them per path.
        udpRate: 2,
        drainBeforeBaseline: false,
        drainMs: DRAIN_MS,
      });
      console.log(`\n${formatReport(report)}\n`);
      expect(report.paths.map((p) => p.path)).toEqual(['direct', 'wisp']);
      for (const p of report.paths) {
        expect(tcpConnections(p.guest.soak), `the ${p.path} guest made thousands of TCP connections`).toBeGreaterThanOrEqual(1000);
        expect(p.guest.soak.udpFlows, `the ${p.path} guest made UDP flows`).toBeGreaterThanOrEqual(SECONDS);
      }
      expect(report.relay?.streamsTotal.tcp, "the relay carried the wisp guest's connections").toBeGreaterThanOrEqual(1000);
      for (const c of report.checks) expect.soft(c.ok, `${c.name}: ${c.detail}`).toBe(true);
    },
    (WARMUP + 40 + SECONDS + DRAIN_MS / 1000 + 90) * 1000,
  );
});
