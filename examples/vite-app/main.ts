import { V86 } from 'v86';
import v86Wasm from 'v86/build/v86.wasm?url';
import { attachV86, createNetwork } from 'weft-net/web';

// What to boot comes from the query string; the defaults are weft's test guest copied into
// public/guest/ (see README):
//   ?bios=…&vgabios=…&bzimage=…&initrd=…&cmdline=…   or   ?cdrom=…
//   &nic=ne2k|virtio   &memory=MiB   &relay=wss://…/wisp/   &hostLoopback (guest reaches the relay host at 10.0.2.2)
const query = new URLSearchParams(location.search);
const image = (name: string, fallback?: string) => {
  const url = query.get(name) ?? fallback;
  return url ? { url } : undefined;
};
const bootsCdrom = query.has('cdrom');

const byId = (id: string) => document.getElementById(id)!;
const logEvent = (line: string) => byId('events').append(`${new Date().toLocaleTimeString()} ${line}\n`);
// Shown on the page, and as data-relay / data-lease on <body> for scripts and tests.
const show = (name: 'relay' | 'lease', value: string) => {
  byId(name).textContent = value;
  document.body.dataset[name] = value;
};

// The relay is mounted on the server this page came from (examples/express-relay, or Vite's proxy).
const relayUrl = query.get('relay') ?? new URL('/wisp/', location.href).href.replace(/^http/, 'ws');
const network = createNetwork({ relayUrl, allowHostLoopback: query.has('hostLoopback') });
network.on('relay', (e) => {
  show('relay', e.state);
  logEvent(`relay ${e.state}${e.message ? `: ${e.message}` : ''}`);
});
network.on('lease', (e) => {
  show('lease', e.ip);
  logEvent(`lease ${e.ip} for ${e.mac}`);
});
network.on('error', (e) => logEvent(`error: ${e.message}`));

const emulator = new V86({
  wasm_path: query.get('wasm') ?? v86Wasm,
  memory_size: Number(query.get('memory') ?? 128) * 1024 * 1024,
  vga_memory_size: 8 * 1024 * 1024,
  screen_container: byId('screen'),
  bios: image('bios', '/guest/bios.bin'),
  vga_bios: image('vgabios', '/guest/vgabios.bin'),
  cdrom: image('cdrom'),
  bzimage: bootsCdrom ? undefined : image('bzimage', '/guest/bzImage'),
  initrd: bootsCdrom ? undefined : image('initrd', '/guest/initrd.img'),
  cmdline: bootsCdrom ? undefined : (query.get('cmdline') ?? 'console=ttyS0 quiet cryptomgr.notests noisapnp'),
  // No relay_url: v86 then makes no network of its own, and weft is the card's only peer.
  net_device: { type: query.get('nic') === 'virtio' ? 'virtio' : 'ne2k' },
  autostart: true,
});
// Before the guest boots, so a virtio card is offered weft's segmentation offload.
attachV86(emulator, network);

// The guest's serial console (ttyS0), batched so the page is not redrawn per byte.
let pending = '';
const flush = () => {
  byId('serial').append(pending);
  pending = '';
};
emulator.add_listener('serial0-output-byte', (byte: number) => {
  if (pending === '') setTimeout(flush, 20);
  pending += String.fromCharCode(byte);
});

// For the devtools console: emulator.serial0_send('ip addr\n'), await network.stats().
Object.assign(window, { emulator, network });
