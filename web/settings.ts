// Settings a page wants to keep between visits (relay URL, network, last guest image), in
// IndexedDB through idb. Nothing here is required: a page that does not call it keeps nothing.

import { openDB, type IDBPDatabase } from 'idb';

export interface StoredSettings {
  relayUrl?: string;
  network?: { network?: string; prefixLength?: number; gateway?: string; dns?: string; firstLease?: string };
  mtu?: number;
  dohUrl?: string;
  /** The guest image last chosen: 'default', a URL, or the name of a file the user picked. */
  lastImage?: string;
}

const DB = 'weft';
const STORE = 'settings';
const KEY = 'current';

let db: Promise<IDBPDatabase> | undefined;

function open(): Promise<IDBPDatabase> {
  db ??= openDB(DB, 1, {
    upgrade(d) {
      if (!d.objectStoreNames.contains(STORE)) d.createObjectStore(STORE);
      if (!d.objectStoreNames.contains('images')) d.createObjectStore('images');
    },
  });
  return db;
}

export async function loadSettings(): Promise<StoredSettings> {
  return ((await (await open()).get(STORE, KEY)) as StoredSettings | undefined) ?? {};
}

export async function saveSettings(update: Partial<StoredSettings>): Promise<StoredSettings> {
  const d = await open();
  const next = { ...(((await d.get(STORE, KEY)) as StoredSettings | undefined) ?? {}), ...update };
  await d.put(STORE, next, KEY);
  return next;
}

/** Caches a guest image (e.g. one the user picked) under `name`. */
export async function saveImage(name: string, data: Blob): Promise<void> {
  await (await open()).put('images', data, name);
}

export async function loadImage(name: string): Promise<Blob | undefined> {
  return (await (await open()).get('images', name)) as Blob | undefined;
}

/** Offers `blob` as a download named `filename` (e.g. a pcap from stopCapture()). */
export function downloadBlob(blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
