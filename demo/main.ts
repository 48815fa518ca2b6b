// The demo page: a Linux VM (v86) in this tab whose network card is wired to weft, and a panel that
// shows what weft does with its traffic. The order of things:
//   1. createNetwork(): the stack starts in a worker and connects to the relay that served this page;
//   2. the guest image is resolved (default / local file / URL) and v86 is loaded from /v86/;
//   3. attachV86() wires the card to the network through a frame tap (packet log, chart);
//   4. the emulator runs; its serial console is the terminal.
// Everything a person might need to act on (relay down, destination refused, no image) becomes a
// notice with what to do.

import '@xterm/xterm/css/xterm.css';
import 'uplot/dist/uPlot.min.css';
import './style.css';

import type { V86 } from 'v86';
import { attachV86, createNetwork, downloadBlob, loadSettings, type FlowSummary, type V86Attachment, type V86Emulator, type WeftNetwork } from '../web/index';
import { BootProgress } from './boot-progress';
import { describeCloseReason, FlowTable, formatBytes, splitHostPort } from './flow-table';
import { mac, summarizeFrame } from './frame-summary';
import { tapFrames } from './frame-tap';
import { GuestConsole } from './guest-console';
import { LanFlows } from './lan-flows';
import { choiceFromSetting, describeChoice, GuestImageError, planGuest, type GuestPlan } from './guest-image';
import { setupImageChooser } from './image-chooser';
import { Notices } from './notices';
import { PacketLog } from './packet-log';
import { ServePanel } from './serve-panel';
import { ThroughputChart } from './throughput-chart';

/** The page's pcap keeps at most this much (older parts are dropped first). */
const MAX_CAPTURE_BYTES = 64 * 1024 * 1024;
const PCAP_HEADER_BYTES = 24;
const NO_OUTPUT_WARNING_S = 30;
const BOOT_WARNING_S = 120;

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

declare global {
  interface Window {
    /** For tests and for poking around in devtools. */
    weftDemo: {
      network: WeftNetwork;
      emulator?: V86;
      attachment?: V86Attachment;
      /** VM `vm`'s terminal (default VM 1), one string per line. */
      terminalLines(vm?: number): string[];
      vmCount(): number;
    };
  }
}

const notices = new Notices($('notices'));
const consoleView = new GuestConsole($('terminal'));
const chart = new ThroughputChart($('chart'), $('rates'));
const packets = new PacketLog($('packets'), $<HTMLButtonElement>('packets-pause'), $('packets-status'));
/** Names the guest looked up, by address (from the DNS answers it received). */
const names = new Map<string, string>();
const flows = new FlowTable($<HTMLTableSectionElement>('flows-body'), $('flows-summary'), (ip) => names.get(ip));

const settings = await loadSettings().catch(() => ({}) as Awaited<ReturnType<typeof loadSettings>>);
const params = new URLSearchParams(location.search);
const defaultRelayUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/wisp/`;
const relayUrl = params.get('relay') ?? settings.relayUrl ?? defaultRelayUrl;
const choice = choiceFromSetting(params.get('image') ?? settings.lastImage);

$('relay-url').textContent = relayUrl;
$('image-name').textContent = describeChoice(choice);
if (!crossOriginIsolated) $('isolation').textContent = 'not cross-origin isolated (no COOP/COEP headers): frames go by postMessage';

setupImageChooser({
  dialog: $<HTMLDialogElement>('image-dialog'),
  openButton: $<HTMLButtonElement>('image-button'),
  current: choice,
  relayUrl,
  defaultRelayUrl,
  onCancel: () => (selected?.console ?? consoleView).focus(),
});
// Keyboard focus belongs to the terminal: on load, and when the VM's side of the page is clicked.
consoleView.focus();
$('vm').addEventListener('click', (e) => {
  if (!(e.target as HTMLElement).closest('button, a, input, select')) (selected?.console ?? consoleView).focus();
});

// ---------------------------------------------------------------------------------------------
// 1. The network

// The gateway address also reaches the relay host's own loopback (10.0.2.2:PORT → 127.0.0.1:PORT)
// when the relay allows it (`--allow-loopback`); by default the relay refuses, and the page says so.
const network = createNetwork({ relayUrl, allowHostLoopback: true });
window.weftDemo = {
  network,
  terminalLines: (vm = 1) => (vms[vm - 1]?.console ?? consoleView).lines(),
  vmCount: () => vms.length,
};
// "Serve from the VM": a web server in the guest, previewed on this origin or published by the relay.
// It types into the VM that leased last: network.fetch's and the preview's `guest` is that VM.
new ServePanel($('serve'), network, (text) => (latestLease?.console ?? consoleView).send(text));
let latestLease: { console: GuestConsole } | undefined;

function setPill(id: string, state: string, text: string): void {
  const el = $(id);
  el.dataset.state = state;
  el.querySelector('.detail')!.textContent = text;
}

let relayWasConnected = false;
network.on('relay', (e) => {
  $('relay-state').textContent = e.state;
  $('relay-state').dataset.state = e.state;
  setPill('pill-relay', e.state, e.state === 'connected' ? 'connected' : e.state);
  const url = e.url ?? relayUrl;
  const why = e.message ? `${e.message}. ` : '';
  if (e.state === 'connected') {
    relayWasConnected = true;
    notices.clear('relay');
  } else if (e.state === 'reconnecting') {
    notices.show(
      'relay',
      'warn',
      relayWasConnected ? `Lost the relay at ${url}; reconnecting…` : `Cannot reach the relay at ${url}; retrying…`,
      `${why}Is \`npm start\` still running? The guest's connections fail until the relay is back.`,
    );
  } else if (e.state === 'failed') {
    notices.show(
      'relay',
      'error',
      `Cannot reach the relay at ${url}`,
      `${why}Start it with \`npm start\` (or \`weft relay --demo\`) on this machine and reload the page. The VM runs without it, but its connections fail.`,
    );
  }
});

network.on('lease', (e) => {
  lanFlows.addGuest(e.ip);
  // Whose lease: the VM whose card sent from that MAC (VM 1 before the others have sent anything).
  const vm = vms.find((v) => v.mac === e.mac.toLowerCase()) ?? vms[0];
  if (!vm) return;
  vm.lease.textContent = `${e.ip} · ${e.mac}${e.hostname ? ` · ${e.hostname}` : ''}`;
  vm.lease.dataset.ip = e.ip;
  latestLease = vm;
  if (vm.number === 1) setPill('pill-guest', 'connected', e.ip);
});

network.on('flow-open', (e) => flows.opened(e.flow));
network.on('flow-close', (e) => {
  flows.closed(e.flow);
  explainClose(e.flow);
});
network.on('error', (e) => notices.show(`error:${e.message}`, 'error', e.message));
network.ready.then(
  () => {
    setPill('pill-stack', 'connected', 'running');
    return network.startCapture();
  },
  (e: unknown) => {
    setPill('pill-stack', 'failed', 'failed');
    notices.show('stack', 'error', `weft could not start: ${(e as Error).message}`, 'Reload the page; if it persists, the browser console has details.');
  },
);

/** A refused or failed connection, said in words with what would fix it. */
function explainClose(flow: FlowSummary): void {
  const [ip, port] = splitHostPort(flow.target);
  const dest = `${names.get(ip) ? `${names.get(ip)} (${ip})` : ip} port ${port}`;
  const proto = flow.protocol.toUpperCase();
  const key = `close:${flow.protocol}:${flow.target}`;
  switch (flow.reason) {
    case 'upstream-blocked': {
      const hint =
        ip === '10.0.2.2'
          ? "10.0.2.2 is the relay host's own loopback (127.0.0.1). The relay refuses loopback unless it runs with --allow-loopback (`npm start -- --allow-loopback`), and its --deny and --ports rules apply as well."
          : /^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.)/.test(ip)
            ? 'Private addresses are refused by default. Restart the relay with `--allow-private` or `--allow CIDR` to allow them.'
            : "The relay's policy refused it (its --deny, --ports or built-in rules for loopback, link-local and reserved ranges). See `weft relay --help`.";
      notices.show(key, 'warn', `The relay refused ${proto} to ${dest}: blocked by its policy.`, hint);
      break;
    }
    case 'upstream-throttled':
      notices.show(
        key,
        'warn',
        `The relay throttled ${proto} to ${dest}.`,
        'Too many new connections at once (`--rate`, `--max-streams-per-client`); try again in a moment.',
      );
      break;
    case 'upstream-unreachable':
    case 'upstream-timeout':
      notices.show(
        key,
        'warn',
        `${proto} to ${dest}: ${describeCloseReason(flow.reason)}.`,
        'The relay could not reach it. Does the machine running the relay have internet access (and working DNS)?',
      );
      break;
    case 'upstream-refused':
      notices.show(key, 'info', `${dest} refused the ${proto} connection.`, 'Nothing is listening on that port there.');
      break;
    default:
  }
}

// ---------------------------------------------------------------------------------------------
// 2.–4. The guests: VM 1 boots at once; "Add a VM" boots another on the same LAN (the network's
// switch puts each attached card on one Ethernet segment with weft's router, DHCP and DNS).

/** VMs the page boots at most: each takes 128 MiB of guest memory. */
const MAX_VMS = 4;

interface DemoVm {
  number: number;
  console: GuestConsole;
  tab: HTMLButtonElement;
  panel: HTMLElement;
  lease: HTMLElement;
  /** The card's MAC (from its first frame), to tell whose a lease is. */
  mac?: string;
  emulator?: V86;
  attachment?: V86Attachment;
}

const vms: DemoVm[] = [];
let selected: DemoVm | undefined;
const addVmButton = $<HTMLButtonElement>('add-vm');

function selectVm(vm: DemoVm): void {
  selected = vm;
  for (const v of vms) {
    v.tab.setAttribute('aria-selected', String(v === vm));
    v.panel.hidden = v !== vm;
  }
  vm.console.focus();
}

/** The tab, terminal and status line of VM `number` (VM 1's are in the page from the start). */
function createVm(number: number): DemoVm {
  let tab: HTMLButtonElement;
  let panel: HTMLElement;
  let lease: HTMLElement;
  if (number === 1) {
    tab = $<HTMLButtonElement>('vm-tab-1');
    panel = $('terminal');
    lease = $('lease');
  } else {
    tab = document.createElement('button');
    tab.type = 'button';
    tab.id = `vm-tab-${number}`;
    tab.setAttribute('role', 'tab');
    tab.textContent = `VM ${number}`;
    addVmButton.before(tab);
    panel = document.createElement('div');
    panel.id = `terminal-${number}`;
    panel.className = 'terminal';
    panel.setAttribute('role', 'tabpanel');
    $('terminals').append(panel);
    const dt = document.createElement('dt');
    dt.textContent = `VM ${number}`;
    lease = document.createElement('dd');
    lease.id = `lease-${number}`;
    lease.textContent = 'booting';
    $('lease').after(dt, lease);
    $('lease').previousElementSibling!.textContent = 'VM 1';
  }
  tab.setAttribute('aria-controls', panel.id);
  const vm: DemoVm = { number, console: number === 1 ? consoleView : new GuestConsole(panel), tab, panel, lease };
  tab.addEventListener('click', () => selectVm(vm));
  vms.push(vm);
  return vm;
}

// Guest-to-guest connections never reach weft's router: the frame taps show them to the flow table.
const lanFlows = new LanFlows(
  (flow) => flows.opened(flow),
  (flow) => flows.closed(flow),
);

/** The tap of one VM's card: the packet log, the chart, its MAC and the LAN's flows see every frame. */
function tapFor(vm: DemoVm): Pick<WeftNetwork, 'attach'> {
  return tapFrames(network, (frame, direction) => {
    chart.count(frame.length, direction === 'to-guest');
    const s = summarizeFrame(frame);
    if (s.dnsAnswers) for (const [ip, name] of s.dnsAnswers) names.set(ip, name);
    packets.add(direction, vms.length > 1 ? `[VM ${vm.number}] ${s.text}` : s.text);
    if (direction === 'from-guest') {
      if (vm.mac === undefined && frame.length >= 12) vm.mac = mac(frame, 6);
      lanFlows.fromGuest(frame);
    }
  });
}

async function bootGuest(vm: DemoVm): Promise<void> {
  let plan: GuestPlan;
  let progress = new BootProgress($('boot'), $<HTMLProgressElement>('boot-bar'), $('boot-text'), choice.kind === 'default');
  $('boot').dataset.vm = String(vm.number);
  try {
    plan = await planGuest(choice);
  } catch (e) {
    const hint = e instanceof GuestImageError ? e.hint : 'Choose another image with "Guest image…".';
    progress.fail((e as Error).message);
    notices.show('image', 'error', (e as Error).message, hint);
    vm.console.term.write(`\r\n\x1b[31m${(e as Error).message}\x1b[0m\r\n${hint.replace(/`/g, '')}\r\n`);
    if (vm.number === 1) setPill('pill-guest', 'failed', 'no image');
    return;
  }
  progress = new BootProgress($('boot'), $<HTMLProgressElement>('boot-bar'), $('boot-text'), plan.markers);
  $('image-name').textContent = plan.label;

  // v86 is served beside the page (/v86/ is node_modules/v86/build); a URL held in a variable keeps
  // esbuild from trying to bundle it.
  const v86Module = '/v86/libv86.mjs';
  const { V86: V86Class } = (await import(v86Module)) as typeof import('v86');
  // The default image takes its hostname from the command line and sends it with DHCP: the VMs
  // find each other as vm1.weft.internal, vm2.weft.internal, …
  const cmdline = plan.markers && plan.options.cmdline ? { cmdline: `${plan.options.cmdline} weft.hostname=vm${vm.number}` } : {};
  const emulator = new V86Class({
    wasm_path: '/v86/v86.wasm',
    memory_size: 128 * 1024 * 1024,
    vga_memory_size: 2 * 1024 * 1024,
    ...plan.options,
    ...cmdline,
    net_device: { type: plan.nic },
    autostart: false,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
  });
  vm.emulator = emulator;
  if (vm.number === 1) window.weftDemo.emulator = emulator;
  emulator.add_listener('download-progress', (e) => progress.download(e));
  await new Promise<void>((resolve, reject) => {
    emulator.add_listener('download-error', (e) =>
      reject(new GuestImageError(`The emulator could not load ${e.file_name}.`, 'Is the relay still running? Reload to try again, or choose another image.')),
    );
    emulator.add_listener('emulator-loaded', () => resolve());
  }).catch((e: GuestImageError) => {
    progress.fail(e.message);
    notices.show('image', 'error', e.message, e.hint);
    throw e;
  });

  // v86's own V86 type lacks `bus` (net0-receive goes there) and types add_listener per event, so
  // it does not match the library's V86Emulator shape; the object itself is what attachV86 wants.
  vm.attachment = attachV86(emulator as unknown as V86Emulator, tapFor(vm));
  if (vm.number === 1) window.weftDemo.attachment = vm.attachment;
  let sawOutput = false;
  vm.console.connect(emulator, (text) => {
    sawOutput = true;
    progress.text(text);
    if (progress.stage === 'ready') notices.clear('boot');
  });
  progress.started();
  await emulator.run();
  if (vm.number === 1) setPill('pill-guest', 'connecting', 'booting');
  if (vm === selected) vm.console.focus();

  // A guest that stays silent, or never reaches its prompt, gets a notice that says what may be wrong.
  setTimeout(() => {
    if (!sawOutput) {
      notices.show(
        'boot',
        'warn',
        `The guest has printed nothing on its serial console for ${NO_OUTPUT_WARNING_S} s.`,
        'This page shows the serial console (ttyS0) only: the image must use it (Linux: `console=ttyS0`). Otherwise it may have failed to boot; choose another image with "Guest image…".',
      );
    }
  }, NO_OUTPUT_WARNING_S * 1000);
  if (plan.markers) {
    setTimeout(() => {
      if (progress.stage === 'booting') {
        notices.show(
          'boot',
          'warn',
          `The guest has not reached its prompt after ${BOOT_WARNING_S} s.`,
          'The terminal shows how far it got. Reload to boot again; a slow machine may just need longer.',
        );
      }
    }, BOOT_WARNING_S * 1000);
  }
}

function startVm(vm: DemoVm): Promise<void> {
  return bootGuest(vm).catch((e: unknown) => {
    if (!(e instanceof GuestImageError))
      notices.show('image', 'error', `The guest could not start: ${(e as Error).message}`, 'Reload to try again, or choose another image with "Guest image…".');
  });
}

selectVm(createVm(1));
let booting = startVm(vms[0]);

addVmButton.addEventListener('click', () => {
  if (vms.length >= MAX_VMS) return;
  addVmButton.disabled = true;
  const vm = createVm(vms.length + 1);
  selectVm(vm);
  // One boot at a time: the progress line above the terminals is shared.
  booting = booting.then(() => startVm(vm));
  void booting.finally(() => {
    addVmButton.disabled = vms.length >= MAX_VMS;
    addVmButton.title = vms.length >= MAX_VMS ? `At most ${MAX_VMS} VMs in one page (each takes 128 MiB)` : addVmButton.title;
  });
  const first = vms[0];
  notices.show(
    'lan',
    'info',
    `VM ${vm.number} is booting on the same LAN as VM 1.`,
    `Once it has an address, try \`ping vm1\` (or \`ping ${first.lease.dataset.ip ?? '10.0.2.15'}\`) in it, or \`nc -l -p 7000\` in one VM and \`echo hi | nc ADDRESS 7000\` in the other. Guest-to-guest connections show in the flow table as LAN rows: the page switches them, weft's router never sees them.`,
  );
});

// ---------------------------------------------------------------------------------------------
// Once a second: the chart, the flow table, the drop counters.

let polling = false;
setInterval(() => {
  chart.sample();
  if (polling) return;
  polling = true;
  lanFlows.sweep();
  Promise.all([network.stats(), network.flows()])
    .then(([stats, live]) => {
      flows.update([...live, ...lanFlows.live()]);
      flows.render();
      const nicDrops = vms.reduce((n, vm) => n + (vm.attachment?.dropped ?? 0), 0);
      renderDrops({ ...stats.drops, ...(nicDrops ? { 'nic-queue-full (page → v86)': nicDrops } : {}) });
      $('counters').textContent = `${stats.framesIn} frames in · ${stats.framesOut} out · ${formatBytes(stats.bytesIn)} / ${formatBytes(stats.bytesOut)}`;
    })
    .catch(() => flows.render()) // not started yet (or stopped): still age the rows
    .finally(() => (polling = false));
}, 1000);

function renderDrops(drops: Record<string, number>): void {
  const entries = Object.entries(drops)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1]);
  const list = $('drops');
  if (entries.length === 0) {
    list.textContent = 'No frames dropped.';
    return;
  }
  list.replaceChildren(
    ...entries.map(([reason, n]) => {
      const li = document.createElement('li');
      li.dataset.reason = reason;
      li.textContent = `${reason}: ${n}`;
      return li;
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Download pcap: everything since the page loaded (the capture restarts after each download, and
// the parts are joined: a pcap file is one header followed by records).

const captureParts: Blob[] = [];
$<HTMLButtonElement>('pcap').addEventListener('click', () => {
  void (async () => {
    const part = await network.stopCapture();
    await network.startCapture();
    captureParts.push(captureParts.length === 0 ? part : part.slice(PCAP_HEADER_BYTES));
    let total = captureParts.reduce((n, b) => n + b.size, 0);
    while (total > MAX_CAPTURE_BYTES && captureParts.length > 1) {
      // Keep the newest parts; the oldest part's header moves to the new first part.
      total -= captureParts.shift()!.size;
      captureParts[0] = new Blob([part.slice(0, PCAP_HEADER_BYTES), captureParts[0]]);
    }
    const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
    downloadBlob(new Blob(captureParts, { type: 'application/vnd.tcpdump.pcap' }), `weft-${stamp}.pcap`);
  })().catch((e: unknown) => notices.show('pcap', 'error', `Could not get the capture: ${(e as Error).message}`));
});

// Leaving the page: stop the stack so the relay sees a clean close.
addEventListener('pagehide', () => void network.close());
