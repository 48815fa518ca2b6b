// Messages a person can act on (the relay is unreachable, a destination was refused, the image is
// missing), above the network panel. Each has a key, so a repeated cause updates its notice instead
// of stacking copies, and a cause that went away (the relay is back) can clear its own notice.

export type NoticeLevel = 'error' | 'warn' | 'info';

export class Notices {
  private readonly items = new Map<string, HTMLElement>();

  constructor(private readonly container: HTMLElement) {}

  show(key: string, level: NoticeLevel, title: string, hint?: string): void {
    let el = this.items.get(key);
    if (!el) {
      el = document.createElement('div');
      el.setAttribute('role', level === 'error' ? 'alert' : 'status');
      this.items.set(key, el);
      this.container.prepend(el);
    }
    el.className = `notice ${level}`;
    el.dataset.key = key;
    el.replaceChildren();
    const close = document.createElement('button');
    close.className = 'dismiss';
    close.title = 'Dismiss';
    close.textContent = '×';
    close.addEventListener('click', () => this.clear(key));
    const head = document.createElement('strong');
    head.textContent = title;
    el.append(close, head);
    if (hint) {
      const p = document.createElement('p');
      // Hints name commands in `backticks`: show those as code.
      for (const [i, part] of hint.split('`').entries()) {
        if (i % 2) {
          const code = document.createElement('code');
          code.textContent = part;
          p.append(code);
        } else {
          p.append(part);
        }
      }
      el.append(p);
    }
  }

  clear(key: string): void {
    this.items.get(key)?.remove();
    this.items.delete(key);
  }
}
