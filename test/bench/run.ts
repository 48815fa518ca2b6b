// `npm run bench [-- SUITE…]`: runs the named benchmark suites (default: all) and prints tables.
// Suites that compare weft with a peer run both in the same process run and print weft / peer.
import { BrowserBenchUnavailable, runBrowserBench } from './browser-bench';
import { runStackBench } from './stack-bench';
import { dnsBenchUnavailable, runDnsBench } from './dns-bench';
import { faultsBenchUnavailable, runFaultsBench } from './faults-bench';
import { runRelayBench } from './relay-bench';
import { runRelayLoadBench } from './relay-load-bench';
import { qemuBenchUnavailable, runQemuBench, runQemuProfile, type PeerName } from './qemu-bench';
import { runTcpBench, tcpBenchUnavailable } from './tcp-bench';

const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

const suites: Record<string, () => Promise<void>> = {
  async stack() {
    console.log('\nstack — in-process core, no I/O (frames turned around per second)');
    console.log(`${'workload'.padEnd(24)} ${'frames/s'.padStart(12)} ${'Mbit/s in'.padStart(10)}`);
    for (const r of runStackBench()) {
      console.log(`${r.name.padEnd(24)} ${fmt(r.framesPerSecond).padStart(12)} ${fmt(r.mbitPerSecond).padStart(10)}`);
    }
  },
  async tcp() {
    console.log('\ntcp — netns guest ↔ iperf3 on host loopback; weft side by side with slirp4netns and pasta (Gbit/s; CPU s of the stack process)');
    const why = tcpBenchUnavailable();
    if (why) {
      console.log(`skipped: ${why}`);
      return;
    }
    console.log(`${'MTU'.padEnd(6)} ${'stack'.padEnd(22)} ${'upload'.padStart(7)} ${'download'.padStart(9)} ${'CPU s'.padStart(6)}`);
    for (const mtu of [1500, 65520]) {
      const rows = await runTcpBench(mtu);
      for (const r of rows) {
        console.log(
          `${String(mtu).padEnd(6)} ${r.peer.padEnd(22)} ${fmt(r.uploadMbit / 1000, 2).padStart(7)} ${fmt(r.downloadMbit / 1000, 2).padStart(9)} ${fmt(r.cpuSeconds, 1).padStart(6)}`,
        );
      }
      for (const w of rows.filter((r) => r.peer.startsWith('weft'))) {
        for (const p of rows.filter((r) => !r.peer.startsWith('weft'))) {
          const label = `${w.peer} / ${p.peer}`;
          console.log(
            `${String(mtu).padEnd(6)} ${label.padEnd(22)} ${fmt(w.uploadMbit / p.uploadMbit, 2).padStart(7)} ${fmt(w.downloadMbit / p.downloadMbit, 2).padStart(9)}`,
          );
        }
      }
    }
  },
  relay: runRelayBench,
  // WEFT_RELAY_LOAD_CLIENTS, _SECONDS, _IDLE, _GENERATORS, _PARTS=busy,idle; WEFT_BENCH_ROUNDS.
  'relay-load': runRelayLoadBench,
  async browser() {
    try {
      // The same VM (virtio-net, MTU 1500) through both, in rounds; then weft with the card's MTU
      // raised to 65520, which v86's own adapter cannot use (its downloads stall at that MTU).
      // WEFT_BENCH_ROUNDS sets the rounds; WEFT_BENCH_PCAP=FILE.pcap keeps weft's capture of each download (FILE-1.pcap, …).
      const rounds = Number(process.env.WEFT_BENCH_ROUNDS ?? 3);
      const same = await runBrowserBench({ rounds, ...(process.env.WEFT_BENCH_PCAP ? { capturePath: process.env.WEFT_BENCH_PCAP } : {}) });
      const jumbo = await runBrowserBench({ mtu: 65520, withV86: false, rounds: 1 });
      if (same.v86) console.log(`weft at MTU 65520 / v86 adapter at MTU 1500 (median): ${fmt(jumbo.weft.mbPerSecond / same.v86.mbPerSecond, 2)}`);
    } catch (e) {
      if (!(e instanceof BrowserBenchUnavailable)) throw e;
      console.log(`\nbrowser — v86 guest in Chromium, weft worker vs v86's own Wisp adapter\nskipped: ${e.message}`);
    }
  },
  async dns() {
    console.log('\ndns — netns guest → resolver, dnsperf, side by side with dnsmasq as the forwarder (queries/s)');
    const why = dnsBenchUnavailable();
    if (why) {
      console.log(`skipped: ${why}`);
      return;
    }
    const [weft, dnsmasq] = await runDnsBench();
    console.log(`${'peer'.padEnd(16)} ${'cached'.padStart(9)} ${'forwarded'.padStart(10)}`);
    for (const r of [weft, dnsmasq]) console.log(`${r.peer.padEnd(16)} ${fmt(r.cachedQps).padStart(9)} ${fmt(r.forwardedQps).padStart(10)}`);
    console.log(
      `${'weft / dnsmasq'.padEnd(16)} ${fmt(weft.cachedQps / dnsmasq.cachedQps, 2).padStart(9)} ${fmt(weft.forwardedQps / dnsmasq.forwardedQps, 2).padStart(10)}`,
    );
  },
  async faults() {
    console.log("\nfaults — netns guest behind the fault wire ↔ weft vm --upstream direct: weft's TCP sending vs the guest kernel's, same faults both ways");
    const why = faultsBenchUnavailable();
    if (why) {
      console.log(`skipped: ${why}`);
      return;
    }
    // WEFT_FAULTS_CELLS=loss5,combined runs a subset; WEFT_FAULTS_SEED sets the wire's seed.
    const cells = process.env.WEFT_FAULTS_CELLS?.split(',')
      .map((c) => c.trim())
      .filter((c) => c !== '');
    await runFaultsBench({
      bytes: Number(process.env.WEFT_FAULTS_BYTES ?? 33554432),
      rounds: Number(process.env.WEFT_BENCH_ROUNDS ?? 3),
      seed: Number(process.env.WEFT_FAULTS_SEED ?? 1),
      ...(cells && cells.length > 0 ? { cells } : {}),
    });
  },
  async qemu() {
    console.log(
      '\nqemu — a QEMU guest through weft vm --qemu (stream) and --dgram, QEMU -netdev user and passt, side by side (MB/s; CPU s of the stack process)',
    );
    const why = qemuBenchUnavailable();
    if (why) {
      console.log(`skipped: ${why}`);
      return;
    }
    // WEFT_QEMU_BENCH_MIB sets the size of each transfer; WEFT_QEMU_BENCH_PER_BOOT the measured transfers
    // each way per boot; WEFT_QEMU_BENCH_PROFILE=1 profiles weft on the stream link instead of comparing.
    const bytes = Number(process.env.WEFT_QEMU_BENCH_MIB ?? 128) * 1048576;
    // WEFT_QEMU_BENCH_STACKS=stream,passt runs a subset (stream, dgram, user, passt).
    const names: Record<string, PeerName> = { stream: 'weft stream', dgram: 'weft dgram', user: 'user', passt: 'passt' };
    const stacks = process.env.WEFT_QEMU_BENCH_STACKS?.split(',').map((s) => {
      const name = names[s.trim()];
      if (!name) throw new Error(`WEFT_QEMU_BENCH_STACKS: unknown stack "${s}"; available: ${Object.keys(names).join(', ')}`);
      return name;
    });
    if (process.env.WEFT_QEMU_BENCH_PROFILE === '1') {
      await runQemuProfile({ bytes });
      return;
    }
    await runQemuBench({
      bytes,
      rounds: Number(process.env.WEFT_BENCH_ROUNDS ?? 5),
      // WEFT_QEMU_BENCH_WARMUP_ROUNDS (default 1): boots per stack run first and not counted.
      warmUpRounds: Number(process.env.WEFT_QEMU_BENCH_WARMUP_ROUNDS ?? 1),
      perBoot: Number(process.env.WEFT_QEMU_BENCH_PER_BOOT ?? 1),
      ...(stacks && stacks.length > 0 ? { stacks } : {}),
    });
  },
};

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const unknown = wanted.filter((w) => !(w in suites));
if (unknown.length > 0) {
  console.error(`bench: unknown suite(s) ${unknown.join(', ')}; available: ${Object.keys(suites).join(', ')}`);
  process.exit(2);
}
for (const name of wanted.length > 0 ? wanted : Object.keys(suites)) await suites[name]();
