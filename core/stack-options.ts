// What a host gives the Stack when it builds one. Defaults live in config.ts; the host's driver
// (platform/stack-timer.ts and its users) supplies the clock, randomness and the frame output.

import type { Clock, Instant } from './clock';
import type { NetworkConfig, StackLimits, TcpConfig, UdpConfig } from './config';
import type { RandomSource } from './random';
import type { DnsForwarder } from './services/dns-server';
import type { Upstream } from './upstream';
import type { Ipv4Address } from './wire/address';

export interface StackOptions {
  network?: Partial<NetworkConfig>;
  limits?: Partial<StackLimits>;
  tcp?: Partial<TcpConfig>;
  udp?: Partial<UdpConfig>;
  /** Where guest TCP and UDP flows go. Without one, they fail as unreachable. */
  upstream?: Upstream;
  /** The DNS server on the DNS address (UDP and TCP port 53). */
  dns?: StackDnsOptions;
  /**
   * Called when nextDeadline() moved earlier outside input()/poll() — an upstream event armed a
   * timer — so the driver re-arms its own timer.
   */
  wake?: (deadline: Instant) => void;
  /**
   * Coalesce ACKs: the ACKs that input() would send for in-order data wait until flush() (or the
   * next poll()), so a burst of segments read at once gets one ACK. The driver must then call
   * flush() after each burst of input() calls. Off by default (every ACK is sent at once).
   */
  batchAcks?: boolean;
  /**
   * The link takes TCP segments larger than the MTU and splits them itself (or the guest takes
   * them whole), like a NIC with TSO: data to the guest then goes out in segments of up to 64 KiB,
   * and those (only those) carry a partial checksum — the folded pseudo-header sum, as a driver
   * hands a NIC with checksum offload.
   */
  segmentationOffload?: boolean;
  clock: Clock;
  random: RandomSource;
  /**
   * Called synchronously with every frame the stack sends; the stack never touches it again. A
   * frame may be a view into a larger buffer (mind byteOffset; copy before transferring it).
   */
  output: (frame: Uint8Array) => void;
  /**
   * Takes a frame in two parts, `head` (from allocFrame, with every header) and `payload` after
   * it — a link that writes with writev sends both without joining them. Given this, the stack
   * sends long TCP payloads to a guest from its send buffers, not copied into frames. `payload`
   * is a view of those buffers, unchanged only until the guest acknowledges it (then its room is
   * refilled): send it, or copy it, in order with the frames before it. Not used while `capture`
   * is set.
   */
  outputGathered?: (head: Uint8Array, payload: Uint8Array) => void;
  /**
   * Where output frames are built (default: weft's own blocks). A link that writes frames out in
   * batches can hand out zero-filled room in its own write buffer, so a frame handed to output()
   * is already in place and needs no copy. Frames are not always sent in the order they were
   * allocated (some wait for ARP), and some are never sent. `zeroBytes`, when given: only the
   * first `zeroBytes` bytes need to be zero, because the stack writes every byte after them (the
   * payload of a TCP segment); at a 64 KiB MTU zeroing room that is then overwritten cost as much
   * as the copy itself.
   */
  allocFrame?: (length: number, zeroBytes?: number) => Uint8Array;
  /** Sees every frame in both directions (for pcap): input as received, output as sent. */
  capture?: (frame: Uint8Array, direction: 'in' | 'out', timeMs: number) => void;
}

export interface StackDnsOptions {
  /** Where names weft does not answer itself go; without one they get SERVFAIL. */
  forwarder?: DnsForwarder;
  /** Extra local names (lowercase, no trailing dot) → IPv4, beside gateway/host.weft.internal. */
  records?: ReadonlyMap<string, Ipv4Address>;
  /** Domains answered only locally (NXDOMAIN for unknown names); default ['weft.internal']. */
  localDomains?: string[];
}
