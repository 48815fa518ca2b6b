// `weft relay`'s /metrics (Prometheus text format) read from a test: samples by name and labels.

/** Sample values keyed by `name` or `name{label="value"}` exactly as the relay prints them. */
export type RelayMetrics = Map<string, number>;

/** GETs http://HOST:PORT/metrics and parses every sample line. */
export async function fetchRelayMetrics(port: number, host = '127.0.0.1'): Promise<RelayMetrics> {
  const res = await fetch(`http://${host}:${port}/metrics`, { signal: AbortSignal.timeout(5_000) });
  if (!res.ok) throw new Error(`GET /metrics: HTTP ${res.status}`);
  const out: RelayMetrics = new Map();
  for (const line of (await res.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

/** weft_relay_open_streams for TCP and UDP (0 when the relay has not opened one of that type yet). */
export function relayOpenStreams(m: RelayMetrics): { tcp: number; udp: number } {
  return {
    tcp: m.get('weft_relay_open_streams{type="tcp"}') ?? 0,
    udp: m.get('weft_relay_open_streams{type="udp"}') ?? 0,
  };
}

/** weft_relay_streams_total for TCP and UDP. */
export function relayStreamsTotal(m: RelayMetrics): { tcp: number; udp: number } {
  return {
    tcp: m.get('weft_relay_streams_total{type="tcp"}') ?? 0,
    udp: m.get('weft_relay_streams_total{type="udp"}') ?? 0,
  };
}
