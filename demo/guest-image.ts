// Which guest to boot: the default image that `npm run guest-image` built and the relay serves at
// /guest/, a local file the person picked (kept in IndexedDB, since a page cannot reopen a file by
// name later), or a URL. The choice itself is kept with the network settings (`lastImage`).
// A file or URL is booted by what it is: a Linux bzImage (header magic "HdrS"), an ISO 9660 CD
// ("CD001"), or else a hard-disk image.

import type { V86Options } from 'v86';
import { loadImage, saveImage } from '../web/index';

export type ImageChoice = { kind: 'default' } | { kind: 'file'; name: string } | { kind: 'url'; url: string };

/** What v86 needs to boot the chosen guest, and how the page should watch it boot. */
export interface GuestPlan {
  label: string;
  options: Pick<V86Options, 'bios' | 'vga_bios' | 'bzimage' | 'initrd' | 'cmdline' | 'cdrom' | 'hda'>;
  nic: 'ne2k' | 'virtio';
  /** The default image prints WEFT-* progress markers on its serial console. */
  markers: boolean;
}

/** A problem with the image, with what the person can do about it. */
export class GuestImageError extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = 'GuestImageError';
  }
}

const GUEST = '/guest/';

export function choiceFromSetting(value: string | undefined): ImageChoice {
  if (!value || value === 'default') return { kind: 'default' };
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? { kind: 'url', url: value } : { kind: 'file', name: value };
}

export function choiceToSetting(choice: ImageChoice): string {
  return choice.kind === 'default' ? 'default' : choice.kind === 'url' ? choice.url : choice.name;
}

export function describeChoice(choice: ImageChoice): string {
  return choice.kind === 'default' ? 'default image (busybox Linux)' : choice.kind === 'url' ? choice.url : `local file ${choice.name}`;
}

/** Keeps a picked file for the next visit. */
export async function rememberFile(file: File): Promise<void> {
  await saveImage(file.name, file);
}

interface Manifest {
  cmdline: string;
  kernelRelease?: string;
  files: Record<'bzimage' | 'initrd' | 'bios' | 'vgaBios', { path: string }>;
}

const BUILD_HINT =
  'Build it on the machine running the relay with `npm run guest-image` (Debian or Ubuntu; apt and root, one time) and reload. ' +
  'Or boot your own: "Guest image…" takes a local file or a URL (a Linux bzImage, an ISO or a disk image whose console is ttyS0).';

async function fetchManifest(): Promise<Manifest | undefined> {
  const r = await fetch(`${GUEST}manifest.json`, { cache: 'no-cache' });
  if (r.status === 404) return undefined;
  if (!r.ok) throw new GuestImageError(`The server answered HTTP ${r.status} for ${GUEST}manifest.json`, BUILD_HINT);
  return (await r.json()) as Manifest;
}

async function exists(url: string): Promise<boolean> {
  return (await fetch(url, { method: 'HEAD', cache: 'no-cache' })).ok;
}

/** Resolves the choice into v86 options; throws GuestImageError with a hint when it cannot. */
export async function planGuest(choice: ImageChoice): Promise<GuestPlan> {
  const manifest = await fetchManifest();
  if (choice.kind === 'default') {
    if (!manifest) throw new GuestImageError('There is no default guest image on this server.', BUILD_HINT);
    const at = (f: keyof Manifest['files']) => ({ url: GUEST + manifest.files[f].path });
    return {
      label: `default image${manifest.kernelRelease ? ` (Linux ${manifest.kernelRelease}, busybox)` : ''}`,
      // virtio-net: the faster card; weft.nic tells the image's init not to probe ne2k first.
      options: { bios: at('bios'), vga_bios: at('vgaBios'), bzimage: at('bzimage'), initrd: at('initrd'), cmdline: `${manifest.cmdline} weft.nic=virtio` },
      nic: 'virtio',
      markers: true,
    };
  }

  // Other guests still need a BIOS: the one that came with the default image.
  const bios = manifest ? { url: GUEST + manifest.files.bios.path } : (await exists(`${GUEST}bios.bin`)) ? { url: `${GUEST}bios.bin` } : undefined;
  const vga = manifest ? { url: GUEST + manifest.files.vgaBios.path } : (await exists(`${GUEST}vgabios.bin`)) ? { url: `${GUEST}vgabios.bin` } : undefined;
  if (!bios || !vga) {
    throw new GuestImageError(
      'v86 needs a BIOS, and this server has none.',
      '`npm run guest-image` puts SeaBIOS into the guest folder (.cache/guest/). Without it, copy bios.bin and ' +
        "vgabios-stdvga.bin (as vgabios.bin) from Debian's seabios package (/usr/share/seabios/) there, and reload.",
    );
  }

  let blob: Blob;
  if (choice.kind === 'file') {
    const cached = await loadImage(choice.name);
    if (!cached) throw new GuestImageError(`The file "${choice.name}" is no longer in this browser's storage.`, 'Choose it again with "Guest image…".');
    blob = cached;
  } else {
    let r: Response;
    try {
      r = await fetch(choice.url);
    } catch (e) {
      throw new GuestImageError(
        `Could not download ${choice.url}: ${(e as Error).message}`,
        'The server must allow this page to fetch it (CORS: Access-Control-Allow-Origin), or download the file and choose it as a local file.',
      );
    }
    if (!r.ok) throw new GuestImageError(`Downloading ${choice.url} failed: HTTP ${r.status}`, 'Check the URL, or choose another image.');
    blob = await r.blob();
  }
  const buffer = await blob.arrayBuffer();
  const bytes = new Uint8Array(buffer);
  const label = choice.kind === 'file' ? choice.name : choice.url;
  const magic = (at: number, text: string) => bytes.length >= at + text.length && String.fromCharCode(...bytes.subarray(at, at + text.length)) === text;
  if (magic(0x202, 'HdrS')) return { label, options: { bios, vga_bios: vga, bzimage: { buffer }, cmdline: 'console=ttyS0' }, nic: 'ne2k', markers: false };
  if (magic(0x8001, 'CD001')) return { label, options: { bios, vga_bios: vga, cdrom: { buffer } }, nic: 'ne2k', markers: false };
  if (bytes.length < 512)
    throw new GuestImageError(`${label} is ${bytes.length} bytes: too small to be a guest image.`, 'Choose a Linux bzImage, an ISO or a disk image.');
  return { label, options: { bios, vga_bios: vga, hda: { buffer } }, nic: 'ne2k', markers: false };
}
