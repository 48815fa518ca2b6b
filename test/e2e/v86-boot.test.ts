// The v86 guest boots in Debian's Chromium, without networking (weft is not attached here): the NIC
// driver binds (ne2k-pci, then virtio_net), and the serial shell answers. Builds the guest image
// first when it is missing (`npm run guest-image`), and reports boot times.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, type ExpectStatic } from 'vitest';
import {
  bootV86,
  bootV86Snapshot,
  chromiumMissing,
  guestImageFor,
  launchChromium,
  saveGuestState,
  serveStatic,
  stateName,
  v86ServeOptions,
  type ChromiumSession,
  type GuestImage,
  type StaticServer,
  type V86Guest,
} from './v86-harness';

const SUITE = 'v86 guest boots in Chromium';
const missing = process.platform !== 'linux' ? 'needs Linux' : chromiumMissing();
if (missing) console.warn(`[skip] ${SUITE}: ${missing}`);

describe.skipIf(missing !== undefined)(SUITE, () => {
  let image: GuestImage | undefined;
  let skipReason: string | undefined;
  let session: ChromiumSession | undefined;
  let server: StaticServer | undefined;
  const guests: V86Guest[] = [];

  beforeAll(async () => {
    const built = await guestImageFor(SUITE);
    if (built.skipReason !== undefined) {
      skipReason = built.skipReason;
      return;
    }
    image = built.image;
    console.log(`[v86-boot] kernel ${image.kernelPackage}`);
    server = await serveStatic(v86ServeOptions(image));
    session = await launchChromium();
  }, 15 * 60_000);

  afterAll(async () => {
    for (const g of guests) await g.close();
    await session?.close();
    await server?.close();
  });

  async function bootAndCheck(nic: 'ne2k' | 'virtio', driver: string, expect: ExpectStatic): Promise<V86Guest> {
    const guest = await bootV86(session!, server!, image!, { nic, dhcpAtBoot: false });
    guests.push(guest);
    const boot = await guest.waitForBoot();
    expect(boot).toMatchObject({ nic: driver, kernel: image!.kernelRelease });
    expect(boot.mac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    const shellMs = await guest.waitForShell();
    expect(await guest.run('echo hello')).toEqual({ output: 'hello', status: 0 });
    const flags = await guest.run('cat /sys/class/net/eth0/flags; false');
    expect(flags.status).toBe(1);
    expect(Number(flags.output) & 1, 'eth0 is up (IFF_UP)').toBe(1);
    console.log(
      `[v86-boot] ${nic}: WEFT-BOOT-OK after ${(boot.msSinceStart / 1000).toFixed(1)} s ` +
        `(guest uptime ${boot.uptime} s), shell after ${(shellMs / 1000).toFixed(1)} s`,
    );
    expect(guest.pageErrors).toEqual([]);
    return guest;
  }

  // The two boots run side by side (each page is its own renderer process).
  it.concurrent('boots with ne2k: ne2k-pci drives eth0 and the serial shell answers', async ({ expect, skip }) => {
    if (skipReason) skip(skipReason);
    const guest = await bootAndCheck('ne2k', 'ne2k-pci', expect);
    // Keep this boot as the saved state the restore test (and other e2e tests) start from.
    if (!existsSync(join(image!.dir, 'states', stateName(image!, { nic: 'ne2k' })))) await saveGuestState(guest, image!);
    await guest.close();
  }, 180_000);

  it.concurrent('boots with virtio: virtio_net drives eth0 and the serial shell answers', async ({ expect, skip }) => {
    if (skipReason) skip(skipReason);
    const guest = await bootAndCheck('virtio', 'virtio_net', expect);
    await guest.close();
  }, 180_000);

  it('restores a saved state to a working shell', async ({ skip }) => {
    if (skipReason) skip(skipReason);
    const t0 = performance.now();
    const { guest, restored } = await bootV86Snapshot(session!, server!, image!, { nic: 'ne2k' });
    guests.push(guest);
    expect(await guest.run('echo restored')).toEqual({ output: 'restored', status: 0 });
    const ms = performance.now() - t0;
    console.log(`[v86-boot] ${restored ? 'restored the saved state' : 'booted and saved a state'}: working shell in ${(ms / 1000).toFixed(1)} s`);
    expect(await guest.run('test -e /sys/class/net/eth0 && ! grep -q nameserver /etc/resolv.conf')).toMatchObject({ status: 0 });
    expect(guest.pageErrors).toEqual([]);
    await guest.close();
  }, 180_000);
});
