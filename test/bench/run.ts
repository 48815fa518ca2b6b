// `npm run bench [-- SUITE…]`: runs the named benchmark suites (default: all) and prints tables.
// Suites that compare weft with a peer run both in the same process run and print weft / peer.
import { runStackBench } from './stack-bench';
import { dnsBenchUnavailable, runDnsBench } from './dns-bench';
import { runRelayBench } from './relay-bench';
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
    console.log('\ntcp — netns guest ↔ iperf3 on host loopback, side by side with slirp4netns (Mbit/s)');
    const why = tcpBenchUnavailable();
    if (why) {
      console.log(`skipped: ${why}`);
      return;
    }
    console.log(`${'MTU'.padEnd(6)} ${'peer'.padEnd(14)} ${'upload'.padStart(9)} ${'download'.padStart(9)}`);
    for (const mtu of [1500, 65520]) {
      const [weft, slirp] = await runTcpBench(mtu);
      for (const r of [weft, slirp]) console.log(`${String(mtu).padEnd(6)} ${r.peer.padEnd(14)} ${fmt(r.uploadMbit).padStart(9)} ${fmt(r.downloadMbit).padStart(9)}`);
      console.log(`${String(mtu).padEnd(6)} ${'weft / slirp'.padEnd(14)} ${fmt(weft.uploadMbit / slirp.uploadMbit, 2).padStart(9)} ${fmt(weft.downloadMbit / slirp.downloadMbit, 2).padStart(9)}`);
    }
  },
  relay: runRelayBench,
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
    console.log(`${'weft / dnsmasq'.padEnd(16)} ${fmt(weft.cachedQps / dnsmasq.cachedQps, 2).padStart(9)} ${fmt(weft.forwardedQps / dnsmasq.forwardedQps, 2).padStart(10)}`);
  },
};

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const unknown = wanted.filter((w) => !(w in suites));
if (unknown.length > 0) {
  console.error(`bench: unknown suite(s) ${unknown.join(', ')}; available: ${Object.keys(suites).join(', ')}`);
  process.exit(2);
}
for (const name of wanted.length > 0 ? wanted : Object.keys(suites)) await suites[name]();
