// "Guest image…": a dialog to pick the default image, a local file or a URL (and, less often, another
// relay). The choice is saved in IndexedDB and the page reloads to boot it: one emulator per page
// load keeps the page simple, and a reload is what a person expects after choosing another guest.

import { saveSettings } from '../web/index';
import { choiceToSetting, rememberFile, type ImageChoice } from './guest-image';

export interface ImageChooserOptions {
  dialog: HTMLDialogElement;
  openButton: HTMLButtonElement;
  current: ImageChoice;
  relayUrl: string;
  defaultRelayUrl: string;
  /** Called after the dialog closes without a new choice (the page gives focus back to the terminal). */
  onCancel: () => void;
}

export function setupImageChooser(o: ImageChooserOptions): void {
  const form = o.dialog.querySelector('form') as HTMLFormElement;
  const field = <T extends Element>(name: string) => form.elements.namedItem(name) as unknown as T;
  const fileInput = field<HTMLInputElement>('file');
  const urlInput = field<HTMLInputElement>('url');
  const relayInput = field<HTMLInputElement>('relay');
  const error = o.dialog.querySelector('.form-error') as HTMLElement;
  const pick = (kind: ImageChoice['kind']) => {
    for (const r of form.querySelectorAll<HTMLInputElement>('input[name="kind"]')) r.checked = r.value === kind;
  };

  o.openButton.addEventListener('click', () => {
    pick(o.current.kind);
    urlInput.value = o.current.kind === 'url' ? o.current.url : '';
    relayInput.value = o.relayUrl === o.defaultRelayUrl ? '' : o.relayUrl;
    relayInput.placeholder = o.defaultRelayUrl;
    error.textContent = '';
    o.dialog.showModal();
  });
  // Typing a URL or picking a file selects its option.
  fileInput.addEventListener('change', () => pick('file'));
  urlInput.addEventListener('input', () => pick('url'));
  // Cancel is a plain button, so Enter in a field submits "Boot it".
  form.querySelector('button[value="cancel"]')?.addEventListener('click', () => o.dialog.close('cancel'));
  o.dialog.addEventListener('close', () => {
    if (o.dialog.returnValue !== 'boot') o.onCancel();
  });

  form.addEventListener('submit', (e) => {
    if ((e.submitter as HTMLButtonElement | null)?.value !== 'boot') return;
    e.preventDefault();
    const kind = (form.querySelector<HTMLInputElement>('input[name="kind"]:checked')?.value ?? 'default') as ImageChoice['kind'];
    void (async () => {
      let choice: ImageChoice = { kind: 'default' };
      if (kind === 'file') {
        const file = fileInput.files?.[0];
        if (!file) return void (error.textContent = 'Choose a file first.');
        await rememberFile(file);
        choice = { kind: 'file', name: file.name };
      } else if (kind === 'url') {
        let url: URL;
        try {
          url = new URL(urlInput.value.trim(), location.href);
        } catch {
          return void (error.textContent = 'That is not a URL.');
        }
        choice = { kind: 'url', url: url.href };
      }
      const relay = relayInput.value.trim();
      if (relay && !/^wss?:\/\//.test(relay)) return void (error.textContent = 'The relay URL starts with ws:// or wss://.');
      await saveSettings({ lastImage: choiceToSetting(choice), relayUrl: relay || undefined });
      o.dialog.close('boot');
      location.reload();
    })().catch((err: unknown) => (error.textContent = `Could not save the choice: ${(err as Error).message}`));
  });
}
