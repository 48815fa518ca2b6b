// The "Serve from the VM" card: a web server in the guest, reached three ways.
//   - "Start a web server in the VM" types one command line into the guest's serial console: it
//     writes a small index.html and runs `busybox httpd` on the port (clicking again rewrites the
//     page; the running server keeps serving it), then asks the guest's port whether it answers.
//   - "Preview" and "Open in a new tab" show it on this page's own origin: network.servePreview()
//     registers the preview Service Worker (/preview-sw.js: the package's web/preview-sw.ts, copied to the demo's root) for
//     PREVIEW_SCOPE, where `<scope><port>/` is the guest's port. A Service Worker needs a secure
//     context (https:, or http on localhost); elsewhere the buttons say so.
//   - "Publish through the relay" asks the relay to listen for the guest's port (network.publish),
//     which only a relay started with --publish-ports (and a token or password) does.

import { WeftError, type GuestPublication, type PreviewServer, type WeftNetwork } from '../web/index';

const PREVIEW_SCOPE = '/preview/';
const SERVICE_WORKER_URL = '/preview-sw.js';
/** Where the typed command writes its page. */
const WEB_ROOT = '/tmp/www';
/** How long "Start" keeps asking the guest's port whether it answers. */
const SERVE_CHECK_MS = 10_000;
/** How long "Publish" waits for the relay's answer. */
const PUBLISH_TIMEOUT_MS = 15_000;
/** The flags that make the demo relay publish, for the refusal's hint. */
const PUBLISH_FLAGS = '--token SECRET --publish-ports 20000-20099';

const q = <T extends HTMLElement>(root: HTMLElement, selector: string) => root.querySelector(selector) as T;

/**
 * The command line "Start" types: a page that says hello and when it was made, and httpd serving
 * it. httpd puts itself in the background; when the port is already taken (an earlier click) it
 * fails at once and the shell says so, with the page rewritten either way.
 */
export function serveCommand(port: number, dir = WEB_ROOT): string {
  const page =
    '<!doctype html><meta charset=utf-8><title>Hello from the VM</title>' +
    '<h1>Hello from the VM</h1>' +
    `<p>This page was made at $(date) in the Linux guest, and busybox httpd serves it on port ${port}.</p>`;
  return (
    `mkdir -p ${dir} && echo "${page}" > ${dir}/index.html && ` +
    `{ busybox httpd -p ${port} -h ${dir} 2>/dev/null && echo "Serving ${dir} on port ${port}" || echo "Port ${port} is taken (by an earlier click?); ${dir}/index.html was rewritten"; }\n`
  );
}

export class ServePanel {
  private readonly port: HTMLInputElement;
  private readonly status: HTMLElement;
  private readonly previewButton: HTMLButtonElement;
  private readonly openButton: HTMLButtonElement;
  private readonly publishButton: HTMLButtonElement;
  private readonly previewNote: HTMLElement;
  private readonly publishResult: HTMLElement;
  private readonly frameBox: HTMLElement;
  private readonly frameUrl: HTMLAnchorElement;
  private readonly iframe: HTMLIFrameElement;
  private preview: Promise<PreviewServer> | undefined;
  private publication: GuestPublication | undefined;
  /** Bumped by each "Start", so an older check stops reporting. */
  private startRound = 0;

  constructor(
    root: HTMLElement,
    private readonly network: WeftNetwork,
    /** Types into the guest's serial console; false while there is no guest to type to. */
    private readonly typeIntoConsole: (text: string) => boolean,
  ) {
    this.port = q(root, '#serve-port');
    this.status = q(root, '#serve-status');
    this.previewButton = q(root, '#serve-preview');
    this.openButton = q(root, '#serve-open');
    this.publishButton = q(root, '#serve-publish');
    this.previewNote = q(root, '#serve-preview-note');
    this.publishResult = q(root, '#serve-publish-result');
    this.frameBox = q(root, '#serve-frame');
    this.frameUrl = q(root, '#serve-frame-url');
    this.iframe = q(root, '#serve-iframe');

    q<HTMLButtonElement>(root, '#serve-start').addEventListener('click', () => void this.start());
    this.previewButton.addEventListener('click', () => void this.showPreview());
    this.openButton.addEventListener('click', () => void this.openTab());
    this.publishButton.addEventListener('click', () => void this.togglePublish());
    q<HTMLButtonElement>(root, '#serve-reload').addEventListener('click', () => this.reloadPreview());

    // Service Workers exist only in secure contexts (and not in every private window).
    if (!('serviceWorker' in navigator)) {
      this.previewButton.disabled = true;
      this.openButton.disabled = true;
      const why = isSecureContext
        ? 'this browser offers no Service Workers here (a private window may turn them off)'
        : `Service Workers need a secure context, and ${location.origin} is not one: open the page as https:, or as http://localhost:${location.port || 80}/ on the machine running the relay`;
      this.showNote(`Preview and new tab answer ${PREVIEW_SCOPE}PORT/ from the VM through a Service Worker, but ${why}.`);
    }
  }

  private guestPort(): number | undefined {
    const port = Number(this.port.value);
    if (Number.isInteger(port) && port >= 1 && port <= 65535) return port;
    this.setStatus(`"${this.port.value}" is not a port (1–65535).`);
    this.port.focus();
    return undefined;
  }

  private async start(): Promise<void> {
    const port = this.guestPort();
    if (port === undefined) return;
    // Ctrl-U first: whatever was half-typed at the prompt would spoil the command line.
    if (!this.typeIntoConsole(`\x15${serveCommand(port)}`)) {
      this.setStatus('The VM is not running yet: wait for its prompt.');
      return;
    }
    const round = ++this.startRound;
    this.setStatus(`Typed the command into the terminal; waiting for port ${port}…`);
    const deadline = performance.now() + SERVE_CHECK_MS;
    while (round === this.startRound) {
      try {
        const res = await this.network.fetch(`http://guest:${port}/`, { method: 'HEAD', signal: AbortSignal.timeout(2000) });
        if (round === this.startRound) this.setStatus(`The VM serves port ${port} (HTTP ${res.status}).`, 'serving');
        return;
      } catch {
        if (performance.now() > deadline) {
          if (round === this.startRound) this.setStatus(`Port ${port} does not answer yet: the terminal shows what happened.`);
          return;
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  /** servePreview once; a failure is shown and the next click tries again. */
  private startPreview(): Promise<PreviewServer> {
    this.preview ??= this.network.servePreview({ scope: PREVIEW_SCOPE, serviceWorkerUrl: SERVICE_WORKER_URL }).catch((e: unknown) => {
      this.preview = undefined;
      throw e;
    });
    return this.preview;
  }

  private async showPreview(): Promise<void> {
    const port = this.guestPort();
    if (port === undefined) return;
    try {
      const url = (await this.startPreview()).url(port);
      this.frameUrl.href = url;
      this.frameUrl.textContent = new URL(url).pathname;
      this.frameBox.hidden = false;
      this.iframe.src = url;
    } catch (e) {
      this.showNote(`No preview: ${messageOf(e)}`);
    }
  }

  private reloadPreview(): void {
    // Setting src again loads it again, whatever page the preview navigated to meanwhile.
    if (this.frameUrl.href) this.iframe.src = this.frameUrl.href;
  }

  private async openTab(): Promise<void> {
    const port = this.guestPort();
    if (port === undefined) return;
    try {
      const url = (await this.startPreview()).url(port);
      // noopener: the tab is a page of its own (this page's COOP would cut the link anyway).
      window.open(url, '_blank', 'noopener');
    } catch (e) {
      this.showNote(`No preview: ${messageOf(e)}`);
    }
  }

  private async togglePublish(): Promise<void> {
    if (this.publication) {
      const pub = this.publication;
      this.publication = undefined;
      this.publishButton.textContent = 'Publish through the relay';
      this.showPublishResult(`Stopped publishing port ${pub.guestPort}.`);
      await pub.close();
      return;
    }
    const port = this.guestPort();
    if (port === undefined) return;
    this.publishButton.disabled = true;
    this.showPublishResult(`Asking the relay to listen for port ${port}…`);
    try {
      const pub = await this.network.publish(port, { signal: AbortSignal.timeout(PUBLISH_TIMEOUT_MS) });
      this.publication = pub;
      this.publishButton.textContent = 'Stop publishing';
      const link = document.createElement('a');
      link.href = pub.url;
      link.target = '_blank';
      link.rel = 'noopener';
      link.textContent = pub.url;
      this.showPublishResult('Published: ', link, ` is the VM's port ${port} for anyone who can reach the relay's host, while this page is open.`);
    } catch (e) {
      const refused = e instanceof WeftError && e.code === 'ERR_WEFT_PUBLISH_REFUSED';
      const timedOut = e instanceof DOMException && e.name === 'TimeoutError';
      const hint = document.createElement('span');
      hint.className = 'muted';
      if (refused) {
        hint.append(
          ' This relay does not publish. Start it with ',
          code(`npm start -- ${PUBLISH_FLAGS}`),
          ' and open this page with ',
          code('?relay=ws://HOST/wisp/?token=SECRET'),
          '.',
        );
      }
      this.showPublishResult(timedOut ? `The relay did not answer within ${PUBLISH_TIMEOUT_MS / 1000} s.` : messageOf(e), hint);
      this.publishResult.dataset.state = 'failed';
    } finally {
      this.publishButton.disabled = false;
    }
  }

  private setStatus(text: string, state = ''): void {
    this.status.textContent = text;
    this.status.dataset.state = state;
  }

  private showNote(text: string): void {
    this.previewNote.textContent = text;
    this.previewNote.hidden = false;
  }

  private showPublishResult(...parts: Array<string | Node>): void {
    this.publishResult.replaceChildren(...parts);
    this.publishResult.dataset.state = '';
    this.publishResult.hidden = false;
  }
}

function code(text: string): HTMLElement {
  const el = document.createElement('code');
  el.textContent = text;
  return el;
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
