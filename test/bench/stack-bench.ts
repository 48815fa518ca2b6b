// In-process Stack throughput: how many frames per second the core turns around, with no I/O.
// The baseline later work (TCP, relay) is compared against.
import { randomFillSync } from 'node:crypto';
import { Stack } from '../../core/stack';
import { ARP_REQUEST } from '../../core/wire/arp';
import { ZERO_MAC } from '../../core/wire/address';
import { arpFrame, GATEWAY_IP, GUEST_IP, GUEST_MAC, pingFrame } from '../support/frames';
import { instant } from '../../core/clock';

export interface BenchResult {
  name: string;
  framesPerSecond: number;
  mbitPerSecond: number;
}

function measure(name: string, frame: Uint8Array, minMs = 1500): BenchResult {
  let replies = 0;
  const stack = new Stack({ clock: { now: () => instant(performance.now()) }, random: (b) => randomFillSync(b), output: () => replies++ });
  // Warm up so the JIT has compiled the hot path before timing.
  for (let i = 0; i < 20_000; i++) stack.input(frame);
  let n = 0;
  const start = performance.now();
  let elapsed = 0;
  while (elapsed < minMs) {
    for (let i = 0; i < 10_000; i++) stack.input(frame);
    n += 10_000;
    elapsed = performance.now() - start;
  }
  if (replies !== n + 20_000) throw new Error(`${name}: expected a reply per frame, got ${replies} for ${n + 20_000}`);
  const fps = (n / elapsed) * 1000;
  return { name, framesPerSecond: fps, mbitPerSecond: (fps * frame.length * 8) / 1e6 };
}

export function runStackBench(): BenchResult[] {
  return [
    measure('arp request → reply', arpFrame({ operation: ARP_REQUEST, senderMac: GUEST_MAC, senderIp: GUEST_IP, targetMac: ZERO_MAC, targetIp: GATEWAY_IP })),
    measure('icmp echo 64 B', pingFrame(GATEWAY_IP, 64 - 28)),
    measure('icmp echo 1400 B', pingFrame(GATEWAY_IP, 1400 - 28)),
  ];
}
