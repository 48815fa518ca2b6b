// What the Stack tells its host: typed events as things happen (Stack.on), and counters when asked
// (Stack.counters()). The demo, the worker's events, /metrics and `weft vm`'s log read these.

import type { DnsServerCounters } from './services/dns-server';
import type { TcpFlowEvent } from './tcp/tcp-flow-table';
import type { UdpFlowEvent } from './udp/udp-nat';
import type { Ipv4Address, MacAddress } from './wire/address';
import type { DropReason } from './wire/parse-result';

export interface LeaseEvent {
  mac: MacAddress;
  ip: Ipv4Address;
  hostname?: string;
  expiresAt: number;
}

export interface DropEvent {
  reason: DropReason;
  count: number;
}

export type FlowEvent = TcpFlowEvent | UdpFlowEvent;

export interface StackEvents {
  lease: LeaseEvent;
  drop: DropEvent;
  'flow-open': FlowEvent;
  'flow-close': FlowEvent;
}

export interface StackCounters {
  framesIn: number;
  framesOut: number;
  /** Of framesOut, those sent in two parts, the TCP payload not copied (StackOptions.outputGathered). */
  framesGathered: number;
  bytesIn: number;
  bytesOut: number;
  /** Frames (or fragments) dropped, keyed by reason. */
  drops: Partial<Record<DropReason, number>>;
  datagramsReassembled: number;
  fragmentsSent: number;
  arpCacheEntries: number;
  reassemblyBytesHeld: number;
  tcpConnections: Record<string, number>;
  tcpConnectionsOpened: number;
  tcpBufferedBytes: number;
  udpFlows: number;
  dns: DnsServerCounters;
}
