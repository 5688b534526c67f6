// The "Key Vault" sidebar. Plain DOM with textContent only: nothing from the server is parsed as HTML.
import { Dialog, InputDialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import { ISignal, Signal } from '@lumino/signaling';

import {
  AccessToken,
  ApiError,
  Credential,
  KeyVaultApi,
  ProviderInfo,
  Status,
  vaultUnavailable
} from './api';

type Attrs = Record<string, string>;

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') {
      node.className = value;
    } else {
      node.setAttribute(key, value);
    }
  }
  for (const child of children) {
    node.append(child);
  }
  return node;
}

function button(
  label: string,
  cls: string,
  onClick: () => void,
  aria?: string
): HTMLButtonElement {
  const b = el(
    'button',
    { type: 'button', class: `jp-Button kv-button ${cls}` },
    label
  );
  if (aria) {
    b.setAttribute('aria-label', aria);
  }
  b.addEventListener('click', onClick);
  return b;
}

function when(iso: string | null | undefined): string {
  if (!iso) {
    return 'never';
  }
  const date = new Date(iso);
  return isNaN(date.getTime()) ? iso : date.toLocaleString();
}

/** metadata.notebooks: the globs of the notebooks allowed to use a credential (none: every notebook). */
function notebookGlobs(item: Credential): string[] {
  const globs = item.metadata?.notebooks;
  return Array.isArray(globs)
    ? globs.filter((glob): glob is string => typeof glob === 'string')
    : [];
}

function message(error: unknown): string {
  return error instanceof ApiError ? error.message : String(error);
}

let uid = 0;
function nextId(prefix: string): string {
  uid += 1;
  return `${prefix}-${uid}`;
}

export class KeyVaultPanel extends Widget {
  private status: Status | null = null;
  private credentials: Credential[] = [];
  private tokens: AccessToken[] | null = null;
  private refreshGeneration = 0;
  private readonly statusChanged_ = new Signal<this, Status | null>(this);

  private readonly protectionBox = el('section', {
    class: 'kv-protection',
    'aria-label': 'Vault protection'
  });
  private readonly messageBox = el('div', {
    class: 'kv-message',
    role: 'status',
    'aria-live': 'polite'
  });
  private readonly listBox = el('section', {
    class: 'kv-list',
    'aria-label': 'Stored credentials'
  });
  private readonly oauthBox = el('section', {
    class: 'kv-oauth',
    'aria-label': 'Connect an account'
  });
  private readonly tokensBox = el('details', { class: 'kv-tokens' });
  private readonly form: HTMLFormElement;
  private readonly nameInput: HTMLInputElement;
  private readonly providerSelect: HTMLSelectElement;
  private readonly providerHint: HTMLElement;
  private readonly valueInput: HTMLInputElement;
  private readonly sessionInput: HTMLInputElement;
  private readonly formTitle: HTMLElement;
  private replacing: Credential | null = null;

  constructor(readonly api: KeyVaultApi) {
    super();
    this.id = 'jupyter-keyvault-sidebar';
    this.addClass('kv-panel');
    this.title.caption = 'Key Vault';

    const nameId = nextId('kv-name');
    const providerId = nextId('kv-provider');
    const valueId = nextId('kv-value');
    const hintId = nextId('kv-hint');
    this.nameInput = el('input', {
      id: nameId,
      class: 'jp-mod-styled kv-name',
      type: 'text',
      autocomplete: 'off',
      spellcheck: 'false',
      placeholder: 'e.g. OPENAI_API_KEY',
      required: '',
      pattern: '[A-Za-z_][A-Za-z0-9_]{0,63}'
    });
    this.providerSelect = el('select', {
      id: providerId,
      class: 'jp-mod-styled kv-provider'
    });
    this.providerHint = el('div', { id: hintId, class: 'kv-hint' });
    this.valueInput = el('input', {
      id: valueId,
      class: 'jp-mod-styled kv-value',
      type: 'password',
      autocomplete: 'new-password',
      spellcheck: 'false',
      required: '',
      'aria-describedby': hintId
    });
    const sessionId = nextId('kv-session');
    this.sessionInput = el('input', {
      id: sessionId,
      class: 'kv-session',
      type: 'checkbox'
    });
    this.formTitle = el('h3', { class: 'kv-form-title' }, 'Add a key');
    const cancel = button('Cancel', 'kv-cancel', () => this.resetForm());
    this.form = el(
      'form',
      { class: 'kv-form', 'aria-label': 'Add or replace a key' },
      this.formTitle,
      el('label', { for: nameId }, 'Name'),
      this.nameInput,
      el('label', { for: providerId }, 'Provider'),
      this.providerSelect,
      this.providerHint,
      el('label', { for: valueId }, 'Value (never shown again)'),
      this.valueInput,
      el(
        'div',
        {
          class: 'kv-session-row',
          title:
            "Kept in the server's memory only, never written to disk; gone when the server stops"
        },
        this.sessionInput,
        el('label', { for: sessionId }, 'Only for this session')
      ),
      el(
        'div',
        { class: 'kv-row' },
        el(
          'button',
          {
            type: 'submit',
            class: 'jp-Button kv-button jp-mod-accept kv-save'
          },
          'Save'
        ),
        cancel
      )
    );
    this.form.addEventListener('submit', event => {
      event.preventDefault();
      void this.submit();
    });
    this.providerSelect.addEventListener('change', () => this.showHint());
    this.nameInput.addEventListener('change', () => this.guessProvider());

    this.tokensBox.hidden = true;
    const header = el(
      'header',
      { class: 'kv-header' },
      el('h2', {}, 'Key Vault'),
      button(
        'Refresh',
        'kv-refresh',
        () => void this.refresh(),
        'Refresh the key list'
      )
    );
    this.node.append(
      header,
      this.protectionBox,
      this.messageBox,
      this.listBox,
      this.oauthBox,
      this.form,
      this.tokensBox
    );
  }

  get statusChanged(): ISignal<this, Status | null> {
    return this.statusChanged_;
  }

  say(text: string, kind: 'ok' | 'error' | 'info' = 'info'): void {
    this.messageBox.textContent = text;
    this.messageBox.dataset.kind = kind;
  }

  async refresh(): Promise<void> {
    // Refreshes overlap (a click, an action's own refresh): only the newest may render.
    const generation = ++this.refreshGeneration;
    try {
      const [status, listed] = await Promise.all([
        this.api.status(),
        this.api.credentials().catch((error: unknown) => error as Error)
      ]);
      if (generation !== this.refreshGeneration) {
        return;
      }
      // An unopenable vault still answers status (with the reason); its listing is a 503.
      const unavailable = vaultUnavailable(status);
      if (listed instanceof Error && !unavailable) {
        throw listed;
      }
      const credentials = listed instanceof Error ? [] : listed;
      this.status = status;
      this.credentials = credentials;
      this.statusChanged_.emit(status);
    } catch (error) {
      this.say(`Could not load the vault: ${message(error)}`, 'error');
      this.statusChanged_.emit(null);
      return;
    }
    let tokens: AccessToken[] | null;
    try {
      tokens = await this.api.tokens();
    } catch {
      tokens = null; // the token list failed: the section stays hidden
    }
    if (generation !== this.refreshGeneration) {
      return;
    }
    this.tokens = tokens;
    this.render();
  }

  private providers(): ProviderInfo[] {
    return this.status?.providers ?? [];
  }

  private render(): void {
    this.renderProtection();
    this.renderList();
    this.renderOAuth();
    this.renderProviders();
    this.renderTokens();
  }

  private renderProtection(): void {
    const box = this.protectionBox;
    box.replaceChildren();
    if (!this.status) {
      return;
    }
    const p = this.status.protection;
    box.dataset.strong = String(p.strong);
    if (vaultUnavailable(this.status)) {
      box.dataset.unavailable = 'true';
      box.append(
        el('div', { class: 'kv-protection-source' }, 'Vault not available'),
        el('div', { class: 'kv-protection-detail' }, p.detail ?? '')
      );
      return;
    }
    delete box.dataset.unavailable;
    box.append(
      el(
        'div',
        { class: 'kv-protection-source' },
        `${p.strong ? 'Protected' : 'Weak protection'}: master key from ${p.source}`
      )
    );
    if (p.detail) {
      box.append(el('div', { class: 'kv-protection-detail' }, p.detail));
    }
    const isolation = this.status.isolation;
    box.append(
      el(
        'div',
        {
          class: 'kv-isolation',
          'data-enforced': String(isolation.enforced),
          title: isolation.detail
        },
        isolation.enforced
          ? 'Kernels isolated: notebook code cannot read the vault'
          : `Kernels NOT isolated (${isolation.mode}): notebook code can read the vault`
      )
    );
    const warnings = [
      ...(this.status.warnings ?? []),
      ...(this.status.notebook_warnings ?? [])
    ];
    if (warnings.length) {
      box.append(
        el(
          'ul',
          { class: 'kv-warnings', 'aria-label': 'Warnings' },
          ...warnings.map(w => el('li', {}, w))
        )
      );
    }
  }

  private renderList(): void {
    const box = this.listBox;
    box.replaceChildren();
    if (this.status && vaultUnavailable(this.status)) {
      box.append(
        el(
          'p',
          { class: 'kv-empty' },
          'Keys cannot be listed or changed until the vault opens again.'
        )
      );
      return;
    }
    if (!this.credentials.length) {
      box.append(el('p', { class: 'kv-empty' }, 'No keys yet. Add one below.'));
      return;
    }
    // One column: the sidebar is narrow; name first, then provider, presence and last use.
    const table = el(
      'table',
      { class: 'kv-table' },
      el(
        'thead',
        {},
        el(
          'tr',
          {},
          el('th', { scope: 'col' }, 'Name · provider · stored · last used')
        )
      )
    );
    const body = el('tbody');
    for (const item of this.credentials) {
      body.append(...this.renderItem(item));
    }
    table.append(body);
    box.append(table);
  }

  private renderItem(item: Credential): HTMLElement[] {
    const shared = item.source === 'shared';
    const nameCell = el(
      'th',
      { scope: 'row', class: 'kv-item-name' },
      item.name
    );
    if (shared) {
      nameCell.append(
        el(
          'span',
          {
            class: 'kv-badge kv-badge-shared',
            title: 'Shared by your administrator (read-only)'
          },
          'shared'
        )
      );
    }
    if (item.type === 'oauth2') {
      nameCell.append(
        el('span', { class: 'kv-badge kv-badge-oauth' }, 'OAuth')
      );
    }
    nameCell.append(...lifetimeBadges(item));
    const globs = notebookGlobs(item);
    if (globs.length) {
      nameCell.append(
        el(
          'span',
          {
            class: 'kv-badge kv-badge-scoped',
            title: `Only: ${globs.join(', ')}`
          },
          'limited'
        )
      );
    }
    nameCell.append(
      el(
        'div',
        { class: 'kv-item-meta' },
        `${item.oauth?.provider ?? item.provider ?? 'no provider'} · ${item.present ? 'stored' : 'missing'} · last used ${when(item.last_used_at)}`
      )
    );
    const row = el(
      'tr',
      { class: 'kv-item', 'data-name': item.name },
      nameCell
    );
    const result = el('div', {
      class: 'kv-test-result',
      role: 'status',
      'aria-live': 'polite'
    });
    const actions = el(
      'div',
      { class: 'kv-actions' },
      button(
        'Test',
        'kv-test',
        () => void this.test(item, result),
        `Test ${item.name}`
      )
    );
    if (item.type === 'oauth2' && item.oauth) {
      // openapi.json allows a null provider: then there is nothing to reconnect to.
      const oauthProvider = item.oauth.provider;
      if (item.oauth.needs_reauth && oauthProvider) {
        actions.append(
          button(
            'Reconnect',
            'kv-reconnect',
            () => this.connect(oauthProvider, item.name),
            `Reconnect ${item.name}`
          )
        );
      }
      result.textContent = item.oauth.needs_reauth
        ? 'Needs to be reconnected'
        : item.oauth.expires_at
          ? `Token expires ${when(item.oauth.expires_at)}`
          : '';
    }
    if (!shared) {
      if (item.type !== 'oauth2') {
        actions.append(
          button(
            'Replace',
            'kv-replace',
            () => this.startReplace(item),
            `Replace ${item.name}`
          )
        );
      }
      actions.append(
        button(
          'Access',
          'kv-access',
          () => this.toggleAccess(item, accessBox),
          `Notebooks allowed to use ${item.name}`
        ),
        button(
          'Delete',
          'jp-mod-warn kv-delete',
          () => void this.remove(item),
          `Delete ${item.name}`
        )
      );
    }
    const accessBox = el('div', { class: 'kv-access-editor' });
    accessBox.hidden = true;
    const detail = el(
      'tr',
      { class: 'kv-item-detail', 'data-name': item.name },
      el('td', {}, actions, result, accessBox)
    );
    return [row, detail];
  }

  private toggleAccess(item: Credential, box: HTMLElement): void {
    if (!box.hidden) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    const id = nextId('kv-globs');
    const input = el('input', {
      id,
      class: 'jp-mod-styled kv-globs',
      type: 'text',
      spellcheck: 'false',
      placeholder: 'course/*.ipynb, projects/**'
    });
    input.value = notebookGlobs(item).join(', ');
    const form = el(
      'form',
      { class: 'kv-access-form' },
      el(
        'label',
        { for: id },
        'Notebooks allowed (globs, comma-separated; empty = all)'
      ),
      input,
      el(
        'button',
        {
          type: 'submit',
          class: 'jp-Button kv-button jp-mod-accept kv-access-save'
        },
        'Save access'
      )
    );
    form.addEventListener('submit', event => {
      event.preventDefault();
      const globs = input.value
        .split(',')
        .map(g => g.trim())
        .filter(Boolean);
      const metadata: Record<string, unknown> = {
        ...item.metadata,
        notebooks: globs
      };
      delete metadata.hint;
      this.api.updateMetadata(item.name, metadata).then(
        () => {
          this.say(
            globs.length
              ? `${item.name}: only ${globs.join(', ')}`
              : `${item.name}: every notebook`,
            'ok'
          );
          void this.refresh();
        },
        error =>
          this.say(
            `Could not change access of ${item.name}: ${message(error)}`,
            'error'
          )
      );
    });
    box.replaceChildren(form);
    box.hidden = false;
    input.focus();
  }

  private renderOAuth(): void {
    const box = this.oauthBox;
    box.replaceChildren();
    const providers = this.status?.oauth_providers ?? [];
    if (!providers.length) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    box.append(el('h3', {}, 'Connect an account'));
    for (const p of providers) {
      box.append(
        button(
          `Connect ${p.display_name}`,
          'kv-connect',
          () => void this.askAndConnect(p.id, p.display_name),
          `Connect a ${p.display_name} account`
        )
      );
    }
  }

  private async askAndConnect(
    providerId: string,
    displayName: string
  ): Promise<void> {
    const answer = await InputDialog.getText({
      title: `Connect ${displayName}`,
      label: 'Name of the credential (letters, digits, _)',
      text: `${providerId.toUpperCase()}_TOKEN`,
      okLabel: 'Connect'
    });
    const name = (answer.value ?? '').trim();
    if (answer.button.accept && name) {
      this.connect(providerId, name);
    }
  }

  private connect(providerId: string, name: string): void {
    // Back to the same page, without a ?token= the user may have arrived with.
    const params = new URLSearchParams(window.location.search);
    params.delete('token');
    const query = params.toString();
    const next = window.location.pathname + (query ? `?${query}` : '');
    window.location.assign(this.api.oauthStartUrl(providerId, name, next));
  }

  private renderProviders(): void {
    const current = this.providerSelect.value;
    this.providerSelect.replaceChildren(
      el('option', { value: '' }, 'Detect from name or key')
    );
    for (const p of this.providers()) {
      this.providerSelect.append(el('option', { value: p.id }, p.label));
    }
    this.providerSelect.value = current;
    this.showHint();
  }

  private showHint(): void {
    const p = this.providers().find(x => x.id === this.providerSelect.value);
    this.providerHint.textContent = p
      ? [
          p.key_hint ? `Format: ${p.key_hint}` : '',
          p.env_var ? `Usual name: ${p.env_var}` : ''
        ]
          .filter(Boolean)
          .join(' · ')
      : 'The provider is guessed from the name (OPENAI_API_KEY, …) or the key.';
  }

  private guessProvider(): void {
    if (this.providerSelect.value) {
      return;
    }
    const p = this.providers().find(
      x => x.env_var === this.nameInput.value.trim()
    );
    if (p) {
      this.providerSelect.value = p.id;
      this.showHint();
    }
  }

  private startReplace(item: Credential): void {
    this.replacing = item;
    this.formTitle.textContent = `Replace ${item.name}`;
    this.nameInput.value = item.name;
    this.nameInput.readOnly = true;
    this.providerSelect.value = item.provider ?? '';
    this.showHint();
    this.valueInput.value = '';
    this.valueInput.focus();
  }

  private resetForm(): void {
    this.replacing = null;
    this.formTitle.textContent = 'Add a key';
    this.nameInput.readOnly = false;
    this.nameInput.value = '';
    this.providerSelect.value = '';
    this.showHint();
    this.valueInput.value = '';
    this.sessionInput.checked = false;
  }

  /** Read the value, clear the input at once (before the request, so also on failure), send it. */
  private async submit(): Promise<void> {
    const value = this.valueInput.value;
    this.valueInput.value = '';
    const name = this.nameInput.value.trim();
    // The options are the server's providers; '' (detect) matches none and sends null.
    const provider =
      this.providers().find(p => p.id === this.providerSelect.value)?.id ??
      null;
    const metadata: Record<string, unknown> = {
      ...(this.replacing?.metadata ?? {})
    };
    delete metadata.hint;
    if (!value) {
      this.say('Enter a value to store.', 'error');
      return;
    }
    const verb = this.replacing ? 'Replaced' : 'Saved';
    const session = this.sessionInput.checked;
    try {
      await this.api.save(name, value, provider, metadata, session);
      this.resetForm();
      await this.refresh();
      this.say(
        `${verb} ${name}${session ? ' for this session only' : ''}.`,
        'ok'
      );
    } catch (error) {
      this.say(`Could not save ${name}: ${message(error)}`, 'error');
    }
  }

  private async test(item: Credential, result: HTMLElement): Promise<void> {
    result.textContent = 'Testing…';
    result.dataset.kind = 'info';
    try {
      const outcome = await this.api.test(item.name);
      result.textContent = outcome.ok
        ? `OK: ${outcome.detail ?? ''}`
        : `Failed: ${outcome.error ?? ''}`;
      result.dataset.kind = outcome.ok ? 'ok' : 'error';
    } catch (error) {
      result.textContent = `Failed: ${message(error)}`;
      result.dataset.kind = 'error';
    }
  }

  private async remove(item: Credential): Promise<void> {
    const answer = await showDialog({
      title: `Delete ${item.name}?`,
      body: 'The stored value is erased from the vault. Notebooks that use it will stop working.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (!answer.button.accept) {
      return;
    }
    // The message comes after the list is redrawn, so "Deleted" never shows next to the old row.
    try {
      await this.api.remove(item.name);
    } catch (error) {
      await this.refresh();
      this.say(`Could not delete ${item.name}: ${message(error)}`, 'error');
      return;
    }
    await this.refresh();
    this.say(`Deleted ${item.name}.`, 'ok');
  }

  // ------------------------------------------------------------------ access tokens

  private renderTokens(): void {
    const box = this.tokensBox;
    if (this.tokens === null) {
      box.hidden = true;
      return;
    }
    const wasOpen = box.open;
    box.hidden = false;
    box.replaceChildren(
      el('summary', {}, `Access tokens (${this.tokens.length})`)
    );
    box.open = wasOpen;
    const list = el('ul', { class: 'kv-token-list' });
    for (const t of this.tokens) {
      list.append(
        el(
          'li',
          { class: 'kv-token', 'data-id': t.id },
          el('span', { class: 'kv-token-name' }, t.name),
          el(
            'span',
            { class: 'kv-token-meta' },
            ` scopes: ${t.credentials.join(', ')} · expires ${when(t.expires_at)} · used ${when(t.last_used_at)} `
          ),
          button(
            'Revoke',
            'jp-mod-warn kv-token-delete',
            () => void this.revokeToken(t),
            `Revoke token ${t.name}`
          )
        )
      );
    }
    box.append(list);
    const nameId = nextId('kv-token-name');
    const daysId = nextId('kv-token-days');
    const name = el('input', {
      id: nameId,
      class: 'jp-mod-styled',
      type: 'text',
      required: ''
    });
    const days = el('input', {
      id: daysId,
      class: 'jp-mod-styled',
      type: 'number',
      min: '1',
      value: '30'
    });
    const choices = el(
      'fieldset',
      { class: 'kv-token-credentials' },
      el('legend', {}, 'Credentials')
    );
    // A token grants use of keys and OAuth accounts, never of the client secrets behind OAuth.
    // (Vault tokens themselves are never listed: the server hides records of type vault_token.)
    for (const c of this.credentials.filter(
      c => c.type !== 'oauth_client_secret'
    )) {
      const id = nextId('kv-token-cred');
      choices.append(
        el(
          'div',
          {},
          el('input', { id, type: 'checkbox', value: c.name }),
          el('label', { for: id }, c.name)
        )
      );
    }
    const form = el(
      'form',
      { class: 'kv-token-form', 'aria-label': 'Create an access token' },
      el('label', { for: nameId }, 'Token name'),
      name,
      choices,
      el('label', { for: daysId }, 'Expires in days'),
      days,
      el(
        'button',
        { type: 'submit', class: 'jp-Button kv-button jp-mod-accept' },
        'Create token'
      )
    );
    form.addEventListener('submit', event => {
      event.preventDefault();
      const picked = [
        ...choices.querySelectorAll<HTMLInputElement>('input:checked')
      ].map(i => i.value);
      const n = parseInt(days.value, 10);
      void this.createToken(name.value.trim(), picked, isNaN(n) ? null : n);
    });
    box.append(form);
  }

  private async createToken(
    name: string,
    credentials: string[],
    days: number | null
  ): Promise<void> {
    let created: { token: string; name: string };
    try {
      created = await this.api.createToken(name, credentials, days);
    } catch (error) {
      this.say(`Could not create the token: ${message(error)}`, 'error');
      return;
    }
    await this.refresh();
    // Shown once; removed from the DOM when dismissed.
    const shown = el(
      'div',
      { class: 'kv-token-once', role: 'alert' },
      el(
        'p',
        {},
        `Token ${created.name} — copy it now, it is not shown again:`
      ),
      el('code', { class: 'kv-token-value' }, created.token)
    );
    const copy = button('Copy', 'kv-token-copy', () => {
      void navigator.clipboard
        ?.writeText(created.token)
        .then(() => this.say('Token copied.', 'ok'));
    });
    const dismiss = button('Dismiss', 'kv-token-dismiss', () => {
      shown.remove();
      created.token = '';
    });
    shown.append(copy, dismiss);
    this.tokensBox.open = true;
    this.tokensBox.append(shown);
    dismiss.focus();
  }

  private async revokeToken(token: AccessToken): Promise<void> {
    const answer = await showDialog({
      title: `Revoke token ${token.name}?`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Revoke' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await this.api.deleteToken(token.id);
    } catch (error) {
      await this.refresh();
      this.say(`Could not revoke ${token.name}: ${message(error)}`, 'error');
      return;
    }
    await this.refresh();
    this.say(`Revoked ${token.name}.`, 'ok');
  }
}

/** Badges for a credential's lifetime: session-only, expired or expiring, stale (due for rotation). */
function lifetimeBadges(item: Credential): HTMLElement[] {
  const badges: HTMLElement[] = [];
  if (item.lifetime === 'session') {
    badges.push(
      el(
        'span',
        {
          class: 'kv-badge kv-badge-session',
          title: "Kept in the server's memory only; gone when it stops"
        },
        'session'
      )
    );
  }
  if (item.expired) {
    badges.push(
      el(
        'span',
        {
          class: 'kv-badge kv-badge-expired',
          title: `Expired ${when(item.expires_at ?? null)}: refused until replaced`
        },
        'expired'
      )
    );
  } else if (item.expires_at) {
    badges.push(
      el(
        'span',
        {
          class: 'kv-badge kv-badge-expires',
          title: 'Refused after this time'
        },
        `until ${when(item.expires_at)}`
      )
    );
  }
  if (item.stale) {
    badges.push(
      el(
        'span',
        {
          class: 'kv-badge kv-badge-stale',
          title: `Set ${item.age_days ?? '?'} days ago: rotate it`
        },
        'stale'
      )
    );
  }
  return badges;
}
