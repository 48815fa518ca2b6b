// The CI-sized soak (test/soak/soak.ts; `npm run soak` runs the 10-minute one): a netns guest makes
// thousands of TCP connections (echo, HTTP, RST aborts, refused ports, a curl loop) and a hundred-odd
// UDP flows from distinct source ports through `weft vm --upstream direct` for 60 s, after a 30 s
// warm-up. weft's fds must return to their idle count, its RSS, heap and ArrayBuffer memory must end
// within 10% (plus slack) of the post-warm-up baseline, and every flow must close by itself within
// 75 s of the end of traffic (UDP flows idle out after 60 s). About 3.5 minutes in all.
//
// WEFT_SOAK_SECONDS changes the 60 s of traffic.

import { describe, expect, it } from 'vitest';
import { formatReport, runSoak, soakUnavailable } from '../soak/soak';

const TITLE = 'soak (short): thousands of guest TCP connections and UDP flows through weft vm --upstream direct';
const SECONDS = Number(process.env.WEFT_SOAK_SECONDS || 60);
const WARMUP = 20;
const DRAIN_MS = 75_000;

const why = soakUnavailable();
if (why) console.warn(`[skip] ${TITLE}: ${why}`);

describe.skipIf(why !== undefined)(TITLE, () => {
  it(`${SECONDS} s of traffic: fds, RSS, heap and buffers back near the baseline, every flow closed`, async () => {
    const report = await runSoak({
      seconds: SECONDS,
      warmupSeconds: WARMUP,
      sampleMs: 3_000,
      // Few UDP flows: they live 60 s after their last datagram, so the baseline (taken once the
      // warm-up's TCP connections have closed) still holds the warm-up's ~60 of them.
      udpRate: 2,
      drainBeforeBaseline: false,
      drainMs: DRAIN_MS,
    });
    console.log(`\n${formatReport(report)}\n`);
    const soakTcp = report.guest.soak.tcpAttempts + report.guest.soak.curlOk;
    expect(soakTcp, 'the guest made thousands of TCP connections').toBeGreaterThanOrEqual(1000);
    expect(report.guest.soak.udpFlows, 'the guest made UDP flows').toBeGreaterThanOrEqual(SECONDS);
    for (const c of report.checks) expect.soft(c.ok, `${c.name}: ${c.detail}`).toBe(true);
  }, (WARMUP + 40 + SECONDS + DRAIN_MS / 1000 + 90) * 1000);
});
