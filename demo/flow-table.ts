// The live table of the guest's connections: one row per flow (guest port → destination host:port,
// protocol, state, bytes each way, age). Rows come from flow-open/flow-close events and a once-a-second poll of
// network.flows() for the byte counts; closed flows stay a minute (greyed, with why they closed) so a
// short download is still there to look at after it finished.

import type { FlowSummary } from '../web/index';
import type { LanFlow } from './lan-flows';

/** A row: a flow of weft's router, or one switched between two of this page's guests. */
export type TableFlow = FlowSummary | LanFlow;

const KEEP_CLOSED_MS = 60_000;
const MAX_ROWS = 100;

interface Row {
  flow: TableFlow;
  closedAt?: number;
}

/** What a flow-close reason means, in words (the stack's reasons are `upstream-<kind>` and a few more). */
export function describeCloseReason(reason: string | undefined): string {
  switch (reason) {
    case undefined:
    case '':
      return 'closed';
    case 'upstream-blocked':
      return 'refused by relay policy';
    case 'upstream-refused':
      return 'connection refused';
    case 'upstream-unreachable':
      return 'unreachable';
    case 'upstream-timeout':
      return 'connect timed out';
    case 'upstream-throttled':
      return 'throttled by relay';
    case 'upstream-reset':
      return 'reset by server';
    default:
      return reason.replace(/-/g, ' ');
  }
}

export function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} MB`;
  if (n >= 10 * 1024) return `${Math.round(n / 1024)} KB`;
  return `${n} B`;
}

function formatAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

export class FlowTable {
  private readonly rows = new Map<string, Row>();

  constructor(
    private readonly body: HTMLTableSectionElement,
    private readonly summary: HTMLElement,
    /** A name for an address (from DNS answers the guest received), if one is known. */
    private readonly nameOf: (ip: string) => string | undefined,
  ) {}

  opened(flow: TableFlow): void {
    const row = this.rows.get(flow.id);
    if (row?.closedAt === undefined) this.rows.set(flow.id, { flow });
  }

  closed(flow: TableFlow): void {
    this.rows.set(flow.id, { flow, closedAt: Date.now() });
  }

  /** Live flows from network.flows(): fresher byte counts and states. */
  update(live: TableFlow[]): void {
    for (const flow of live) {
      const row = this.rows.get(flow.id);
      if (row?.closedAt === undefined) this.rows.set(flow.id, { flow });
    }
  }

  render(): void {
    const now = Date.now();
    for (const [id, row] of this.rows) {
      if (row.closedAt !== undefined && now - row.closedAt > KEEP_CLOSED_MS) this.rows.delete(id);
    }
    const sorted = [...this.rows.values()].sort((a, b) => b.flow.openedAt - a.flow.openedAt).slice(0, MAX_ROWS);
    const open = sorted.filter((r) => r.closedAt === undefined).length;
    this.summary.textContent = `${open} open · ${sorted.length - open} recently closed`;
    if (sorted.length === 0) {
      const tr = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = 6;
      td.className = 'empty';
      td.textContent = 'No connections yet. Try wget or nslookup in the terminal.';
      tr.append(td);
      this.body.replaceChildren(tr);
      return;
    }
    // A hundred rows at most, once a second: rebuilding them is cheaper than diffing.
    this.body.replaceChildren(...sorted.map((r) => this.renderRow(r, now)));
  }

  private renderRow({ flow, closedAt }: Row, now: number): HTMLTableRowElement {
    const tr = document.createElement('tr');
    tr.dataset.flowId = flow.id;
    tr.dataset.target = flow.target;
    const [targetIp, targetPort] = splitHostPort(flow.target);
    const name = this.nameOf(targetIp);
    const blocked = flow.reason === 'upstream-blocked';
    const lan = 'lan' in flow;
    tr.className = [closedAt === undefined ? '' : blocked ? 'closed refused' : 'closed', lan ? 'lan' : ''].join(' ').trim();
    if (lan) tr.dataset.lan = 'true';
    const state = closedAt === undefined ? (flow.state ?? 'open') : describeCloseReason(flow.reason);
    const destination = flow.protocol === 'icmp' ? (name ?? flow.target) : name ? `${name}:${targetPort}` : flow.target;
    const from = flow.protocol === 'icmp' ? `${splitHostPort(flow.guest)[0]} ping` : lan ? flow.guest : `:${splitHostPort(flow.guest)[1]}`;
    const how = lan ? ' (guest to guest: switched in this page, not through weft’s router)' : '';
    const cells: Array<[string, string?]> = [
      [`${from} → ${destination}`, `${flow.guest} → ${flow.target}${how}`],
      [flow.protocol.toUpperCase()],
      [state, flow.reason],
      [formatBytes(flow.bytesFromGuest)],
      [formatBytes(flow.bytesToGuest)],
      [formatAge((closedAt ?? now) - flow.openedAt)],
    ];
    for (const [text, title] of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      if (title) td.title = title;
      tr.append(td);
    }
    return tr;
  }
}

export function splitHostPort(endpoint: string): [string, string] {
  const i = endpoint.lastIndexOf(':');
  return i < 0 ? [endpoint, ''] : [endpoint.slice(0, i), endpoint.slice(i + 1)];
}
