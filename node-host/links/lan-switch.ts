// The learning switch of a LAN in `weft vm` (several links, or several QEMU clients on one socket),
// with its bounds, and what the stopped line says about its table.

import { DEFAULT_NETWORK } from '../../core/config';
import { LearningSwitch } from '../../core/link/learning-switch';
import type { Ipv4Address, MacAddress } from '../../core/wire/address';
import { monotonicClock } from '../../platform/stack-timer';

/** weft on the LAN: its MAC and the addresses only it may speak for (gateway, DNS). */
export interface RouterAddresses {
  /** Fixed to the router port: a guest sending from it is dropped. */
  mac: MacAddress;
  /** Only the router port may announce these (ARP) or send from them (IPv4). */
  ips: readonly Ipv4Address[];
}

/** `weft vm`'s: the default network's gateway MAC, gateway and DNS addresses. */
export const DEFAULT_ROUTER: RouterAddresses = { mac: DEFAULT_NETWORK.gatewayMac, ips: [DEFAULT_NETWORK.gateway, DEFAULT_NETWORK.dns] };

/** MACs the switch remembers, and for how long (a Linux bridge's default ageing time). */
const MAX_MACS = 4096;
const AGING_MS = 300_000;
/**
 * MACs one guest may hold in the table: a VM has one per NIC, a few dozen with containers bridged
 * inside; past this a guest flooding random source MACs evicts only its own.
 */
const MAX_MACS_PER_PORT = 256;

/** A new switch for one LAN. */
export function lanSwitch(): LearningSwitch {
  return new LearningSwitch({ maxMacs: MAX_MACS, maxMacsPerPort: MAX_MACS_PER_PORT, agingMs: AGING_MS, now: () => monotonicClock.now() });
}

/** The switch's table, for the stopped line: how full it is and how many MACs a flood pushed out. */
export function switchStats(sw: LearningSwitch): Record<string, number> {
  return { macsLearned: sw.macsLearned, macsEvicted: sw.macsEvicted };
}
