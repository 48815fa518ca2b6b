// The weft worker script. Started as a dedicated Worker (createNetwork()), it runs one page's stack
// (dedicated-session.ts); started as a SharedWorker (createNetwork({ lan: name }), named after the
// LAN), it runs the LAN the tabs that connect to it share (lan-host.ts), each tab with its own
// control session. One file either way, so the package ships one worker. Control calls go through
// comlink; frames over a MessagePort the page hands over.

import * as Comlink from 'comlink';
import { DedicatedOrRoomSession } from './room-session';
import { LanHost, LanTab } from './lan-host';

interface SharedWorkerScope {
  onconnect: ((e: MessageEvent) => void) | null;
}

const sharedScope = (globalThis as { SharedWorkerGlobalScope?: abstract new () => unknown }).SharedWorkerGlobalScope;

if (sharedScope !== undefined && globalThis instanceof sharedScope) {
  const lan = new LanHost();
  (globalThis as unknown as SharedWorkerScope).onconnect = (e: MessageEvent) => {
    const port = e.ports[0];
    if (port) Comlink.expose(new LanTab(lan), port);
  };
} else {
  // A page's own stack, or with lan: { room, key } its bridge to a relay's LAN room (room-session.ts).
  Comlink.expose(new DedicatedOrRoomSession());
}
