// `npm run bench [-- SUITE…]`: runs the named benchmark suites (default: all) and prints a table.
// Suites that compare weft with a peer print the ratio weft / peer from the same run.
import { runStackBench } from './stack-bench';

const suites: Record<string, () => void> = {
  stack() {
    console.log('\nstack (in-process core, no I/O; frames turned around per second)');
    console.log(`${'workload'.padEnd(24)} ${'frames/s'.padStart(12)} ${'Mbit/s in'.padStart(10)}`);
    for (const r of runStackBench()) {
      console.log(`${r.name.padEnd(24)} ${Math.round(r.framesPerSecond).toLocaleString('en-US').padStart(12)} ${r.mbitPerSecond.toFixed(0).padStart(10)}`);
    }
  },
};

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const unknown = wanted.filter((w) => !(w in suites));
if (unknown.length > 0) {
  console.error(`bench: unknown suite(s) ${unknown.join(', ')}; available: ${Object.keys(suites).join(', ')}`);
  process.exit(2);
}
for (const name of wanted.length > 0 ? wanted : Object.keys(suites)) suites[name]();
