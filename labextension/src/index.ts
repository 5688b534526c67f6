import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { KeyVaultApi, Status, vaultUnavailable } from './api';
import { KeyVaultPanel } from './panel';

const KEY_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path class="jp-icon3" fill="#616161" ' +
  'd="M7 14a2 2 0 1 1 0-4 2 2 0 0 1 0 4zm5.65-4A6 6 0 1 0 12.65 14H17v4h4v-4h2v-4z"/></svg>';

export const keyIcon = new LabIcon({
  name: 'jupyter-keyvault:key',
  svgstr: KEY_SVG
});

const OPEN = 'keyvault:open';

function protectionText(status: Status | null): [string, string, string] {
  if (!status) {
    return [
      'Key Vault: unavailable',
      'unavailable',
      'The Key Vault server extension did not answer'
    ];
  }
  const p = status.protection;
  if (vaultUnavailable(status)) {
    return ['Key Vault: not available', 'unavailable', p.detail ?? ''];
  }
  const warn = !p.strong || (status.warnings ?? []).length > 0;
  return [
    `Key Vault: ${p.strong ? 'protected' : 'WEAK'} (${p.source})`,
    warn ? 'warn' : 'ok',
    [p.detail, ...(status.warnings ?? [])].filter(Boolean).join('\n')
  ];
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-keyvault:sidebar',
  description:
    'A sidebar to manage API keys kept encrypted by the jupyter-keyvault server extension.',
  autoStart: true,
  requires: [ILabShell],
  optional: [ICommandPalette, IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    shell: ILabShell,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null
  ) => {
    const panel = new KeyVaultPanel(new KeyVaultApi());
    panel.title.icon = keyIcon;
    shell.add(panel, 'left', { rank: 850 });

    app.commands.addCommand(OPEN, {
      label: 'Key Vault: Manage API Keys',
      caption: 'Open the Key Vault sidebar',
      icon: keyIcon,
      execute: () => {
        shell.activateById(panel.id);
        void panel.refresh();
      }
    });
    palette?.addItem({ command: OPEN, category: 'Key Vault' });

    if (statusBar) {
      const item = new Widget();
      item.addClass('kv-statusbar');
      const text = document.createElement('button');
      text.type = 'button';
      text.className = 'kv-statusbar-button';
      item.node.append(text);
      text.addEventListener('click', () => void app.commands.execute(OPEN));
      const show = (status: Status | null) => {
        const [label, kind, detail] = protectionText(status);
        text.textContent = label;
        text.title = detail || label;
        text.setAttribute('aria-label', `${label}. Open the Key Vault sidebar`);
        item.node.dataset.kind = kind;
      };
      show(null);
      panel.statusChanged.connect((_, status) => show(status));
      statusBar.registerStatusItem('jupyter-keyvault:protection', {
        item,
        align: 'left',
        rank: 10
      });
    }

    // Refresh when the panel is shown: last-used times change while notebooks run.
    void panel.refresh();
    shell.layoutModified.connect(() => {
      if (panel.isVisible && !panel.node.dataset.seen) {
        panel.node.dataset.seen = '1';
        void panel.refresh();
      }
      if (!panel.isVisible) {
        delete panel.node.dataset.seen;
      }
    });
  }
};

export default plugin;
