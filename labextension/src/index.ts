/**
 * @durable-nb/labextension: the "Durable runs" sidebar of durable_nb, and the renderer of
 * `%%workflow` cell outputs (runOutput.tsx).
 *
 * Both read the journal through the REST API of the durable_nb Jupyter server extension
 * (docs/rest-api.md), so they work after a browser reload or a kernel death.
 */

import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';

import { RunActions } from './actions';
import { DurableApi } from './api';
import { durableIcon } from './icon';
import { RunsModel } from './model';
import { RunsPanel } from './panel';
import { RUN_OUTPUT_RANK, runOutputFactory } from './runOutput';

export const PANEL_ID = 'durable-nb-runs';
export const OPEN_COMMAND = 'durable-nb:open-runs';

const plugin: JupyterFrontEndPlugin<void> = {
  id: '@durable-nb/labextension:sidebar',
  description: 'The "Durable runs" sidebar: runs, their steps, and actions on them.',
  autoStart: true,
  requires: [IDocumentManager],
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    docManager: IDocumentManager,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const model = new RunsModel(new DurableApi(app.serviceManager.serverSettings));
    const panel = new RunsPanel(model, new RunActions(model, app, docManager));
    panel.id = PANEL_ID;
    panel.title.icon = durableIcon;
    panel.title.caption = 'Durable runs';
    app.shell.add(panel, 'left', { rank: 650 });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }
    app.commands.addCommand(OPEN_COMMAND, {
      label: 'Show Durable Runs',
      caption: 'Open the Durable runs sidebar',
      execute: () => app.shell.activateById(PANEL_ID)
    });
    if (palette) {
      palette.addItem({ command: OPEN_COMMAND, category: 'Durable runs' });
    }
  }
};

/** Run outputs (`application/vnd.durable-nb.run+json`) drawn from the run's current state. */
const runOutputPlugin: JupyterFrontEndPlugin<void> = {
  id: '@durable-nb/labextension:run-output',
  description: "A %%workflow cell's output: the run's current state, read from the journal.",
  autoStart: true,
  requires: [IRenderMimeRegistry],
  activate: (app: JupyterFrontEnd, rendermime: IRenderMimeRegistry) => {
    const api = new DurableApi(app.serviceManager.serverSettings);
    rendermime.addFactory(runOutputFactory(api), RUN_OUTPUT_RANK);
  }
};

export default [plugin, runOutputPlugin];
