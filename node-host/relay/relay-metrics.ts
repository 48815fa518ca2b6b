// The relay's counters, rendered in the Prometheus text format at /metrics, with the process's own
// pressure gauges (memory, open fds, CPU, event-loop lag), so an operator sees a squeeze coming.

import { readdirSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';

const CONNECT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class RelayMetrics {
  /** Whether the LAN series are rendered (only with --lan). */
  lanEnabled = false;
  clients = 0;
  connectionsTotal = 0;
  readonly openStreams = { tcp: 0, udp: 0 };
  readonly streamsTotal = { tcp: 0, udp: 0 };
  /** upload: client → destination; download: destination → client. */
  readonly bytes = { upload: 0, download: 0 };
  readonly refusals = new Map<string, number>();
  /** Ports listened on for clients now (publish extension). */
  publishedPorts = 0;
  /** Connections accepted on published ports since start. */
  publishedConnections = 0;
  /** Refusal log lines skipped by the per-IP log throttle. */
  logLinesSuppressed = 0;
  readonly connectionErrors = new Map<string, number>();
  /** LAN rooms (--lan): rooms and members now, joins refused by cause, frames and bytes switched, frames dropped by reason. */
  readonly lan = {
    rooms: 0,
    members: 0,
    roomsTotal: 0,
    joinsTotal: 0,
    refusedJoins: new Map<string, number>(),
    frames: { in: 0, out: 0 },
    bytes: { in: 0, out: 0 },
    dropped: new Map<string, number>(),
  };
  readonly rejectedUpgrades = new Map<string, number>();
  private readonly connectCounts = new Array<number>(CONNECT_BUCKETS.length).fill(0);
  private connectSum = 0;
  private connectCount = 0;
  private loopDelay: ReturnType<typeof monitorEventLoopDelay> | undefined;

  /** Starts sampling event-loop delay (a 20 ms resolution timer; unref'd by Node). */
  watchEventLoop(): void {
    this.loopDelay ??= monitorEventLoopDelay({ resolution: 20 });
    this.loopDelay.enable();
  }

  stop(): void {
    this.loopDelay?.disable();
  }

  refused(reason: string): void {
    this.refusals.set(reason, (this.refusals.get(reason) ?? 0) + 1);
  }

  connectionError(code: string): void {
    this.connectionErrors.set(code, (this.connectionErrors.get(code) ?? 0) + 1);
  }

  upgradeRejected(why: string): void {
    this.rejectedUpgrades.set(why, (this.rejectedUpgrades.get(why) ?? 0) + 1);
  }

  lanDropped(reason: string, n = 1): void {
    this.lan.dropped.set(reason, (this.lan.dropped.get(reason) ?? 0) + n);
  }

  lanRefused(cause: string): void {
    this.lan.refusedJoins.set(cause, (this.lan.refusedJoins.get(cause) ?? 0) + 1);
  }

  connectLatency(seconds: number): void {
    this.connectSum += seconds;
    this.connectCount++;
    for (let i = 0; i < CONNECT_BUCKETS.length; i++) if (seconds <= CONNECT_BUCKETS[i]) this.connectCounts[i]++;
  }

  render(): string {
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string) => lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    const labelled = (name: string, label: string, values: Map<string, number> | Record<string, number>) => {
      const entries = values instanceof Map ? [...values] : Object.entries(values);
      for (const [k, v] of entries) lines.push(`${name}{${label}="${k}"} ${v}`);
    };
    /** A metric with one value. */
    const single = (name: string, type: string, help: string, value: number) => {
      metric(name, type, help);
      lines.push(`${name} ${value}`);
    };
    /** A metric with a value per label. */
    const family = (name: string, type: string, help: string, label: string, values: Map<string, number> | Record<string, number>) => {
      metric(name, type, help);
      labelled(name, label, values);
    };
    single('weft_relay_clients', 'gauge', 'WebSocket clients connected now.', this.clients);
    single('weft_relay_connections_total', 'counter', 'WebSocket clients accepted since start.', this.connectionsTotal);
    family('weft_relay_open_streams', 'gauge', 'Wisp streams open now, by type.', 'type', this.openStreams);
    family('weft_relay_streams_total', 'counter', 'Wisp streams requested since start, by type.', 'type', this.streamsTotal);
    family('weft_relay_bytes_total', 'counter', 'Payload bytes relayed (upload: client to destination).', 'direction', this.bytes);
    family('weft_relay_refusals_total', 'counter', 'Streams refused or failed before connecting, by close reason.', 'reason', this.refusals);
    single('weft_relay_published_ports', 'gauge', 'Ports listened on for clients now (weft publish extension).', this.publishedPorts);
    single('weft_relay_published_connections_total', 'counter', 'Connections accepted on published ports since start.', this.publishedConnections);
    single('weft_relay_log_lines_suppressed_total', 'counter', 'Refusal log lines not written because one client IP caused too many.', this.logLinesSuppressed);
    family('weft_relay_connection_errors_total', 'counter', 'Clients disconnected for a protocol error, by code.', 'code', this.connectionErrors);
    family('weft_relay_rejected_upgrades_total', 'counter', 'WebSocket upgrades refused, by cause.', 'cause', this.rejectedUpgrades);
    if (this.lanEnabled) {
      const l = this.lan;
      single('weft_relay_lan_rooms', 'gauge', 'LAN rooms open now (--lan).', l.rooms);
      single('weft_relay_lan_members', 'gauge', 'Members of LAN rooms now.', l.members);
      single('weft_relay_lan_rooms_total', 'counter', 'LAN rooms opened since start.', l.roomsTotal);
      single('weft_relay_lan_joins_total', 'counter', 'Members that joined a LAN room since start.', l.joinsTotal);
      family('weft_relay_lan_refused_joins_total', 'counter', 'Joins refused, by cause.', 'cause', l.refusedJoins);
      family('weft_relay_lan_frames_total', 'counter', 'Frames from members (in) and to members (out).', 'direction', l.frames);
      family('weft_relay_lan_bytes_total', 'counter', 'Frame bytes from members (in) and to members (out).', 'direction', l.bytes);
      family('weft_relay_lan_frames_dropped_total', 'counter', 'Frames of LAN rooms dropped, by reason.', 'reason', l.dropped);
    }
    metric('weft_relay_connect_seconds', 'histogram', 'Time from CONNECT to a connected destination socket.');
    CONNECT_BUCKETS.forEach((le, i) => {
      lines.push(`weft_relay_connect_seconds_bucket{le="${le}"} ${this.connectCounts[i]}`);
    });
    lines.push(`weft_relay_connect_seconds_bucket{le="+Inf"} ${this.connectCount}`);
    lines.push(`weft_relay_connect_seconds_sum ${this.connectSum}`);
    lines.push(`weft_relay_connect_seconds_count ${this.connectCount}`);
    const mem = process.memoryUsage();
    single('weft_relay_process_resident_memory_bytes', 'gauge', 'Resident set size of the relay process.', mem.rss);
    single('weft_relay_process_heap_used_bytes', 'gauge', 'JavaScript heap in use.', mem.heapUsed);
    single('weft_relay_process_open_fds', 'gauge', 'File descriptors open (sockets included).', openFds());
    const cpu = process.cpuUsage();
    single('weft_relay_process_cpu_seconds_total', 'counter', 'CPU time used, user and system.', (cpu.user + cpu.system) / 1e6);
    if (this.loopDelay) {
      metric('weft_relay_event_loop_lag_seconds', 'gauge', 'Event-loop delay since the last scrape: mean and max.');
      lines.push(`weft_relay_event_loop_lag_seconds{stat="mean"} ${(Number.isNaN(this.loopDelay.mean) ? 0 : this.loopDelay.mean) / 1e9}`);
      lines.push(`weft_relay_event_loop_lag_seconds{stat="max"} ${this.loopDelay.max / 1e9}`);
      this.loopDelay.reset();
    }
    return `${lines.join('\n')}\n`;
  }
}

/** Entries of /proc/self/fd (Linux); -1 where there is no such folder. */
function openFds(): number {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return -1;
  }
}
