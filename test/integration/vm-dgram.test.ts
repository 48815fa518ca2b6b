// `weft vm --dgram LPORT:RPORT` with a real Linux guest: dgram-bridge.py carries frames between the
// namespace's TAP and UDP on 127.0.0.1, as QEMU's `-netdev dgram` would.
import { spawn } from 'node:child_process';
import { describeGuestOverLink } from '../harness/guest-scenario';
import { DGRAM_BRIDGE, waitForStdout } from '../harness/netns';
import { spawnWeft } from '../harness/weft-process';
import { freeUdpPorts } from '../support/test-servers';

describeGuestOverLink('weft vm --dgram with a Linux guest in a netns', 'dgram', async (ns, weftArgs) => {
  const [weftPort, bridgePort] = await freeUdpPorts(2);
  const weft = spawnWeft(['vm', '--dgram', `${weftPort}:${bridgePort}`, ...weftArgs]);
  ns.track(weft.child);
  const ready = await weft.waitForEvent('ready');
  if (ready.local !== `127.0.0.1:${weftPort}`) throw new Error(`unexpected ready line ${JSON.stringify(ready)}`);

  const bridge = ns.track(
    spawn('python3', [DGRAM_BRIDGE, '--netns', ns.name, '--tap', 'tap0', '--local', String(bridgePort), '--remote', String(weftPort)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  await waitForStdout(bridge, /^ready$/);
  await ns.bringUpTap('tap0');

  const stopCarrier = async () => {
    const exited = new Promise<number | null>((resolve) => {
      if (bridge.exitCode !== null) resolve(bridge.exitCode);
      else bridge.once('exit', (code) => resolve(code));
    });
    if (bridge.exitCode === null) process.kill(bridge.pid!, 'SIGTERM');
    const code = await exited;
    if (code !== 0) throw new Error(`dgram-bridge exited with ${code}`);
  };
  return { weft, stopCarrier };
});
