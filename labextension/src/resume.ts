/**
 * Resume: continue a run in its notebook's kernel, where its activities and workflow code
 * live. The Jupyter server never runs user code (DESIGN.md §3), so the frontend opens the
 * notebook, loads durable_nb in its kernel and runs `%workflow resume RUN_ID` in a new cell
 * at the end, where the live view of the run appears.
 */

import { JupyterFrontEnd } from '@jupyterlab/application';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';

import { IRun } from './api';
import { serverPath } from './paths';

/** A reason Resume cannot go on, worded for the user. */
export class ResumeError extends Error {}

export function resumeCode(runId: string): string {
  return `%workflow resume ${runId}`;
}

/**
 * Open the run's notebook, make sure its kernel runs and has durable_nb loaded, then add
 * and run a `%workflow resume RUN_ID` cell at the end. Returns the notebook's path once the
 * cell is running; throws ResumeError when it cannot.
 */
export async function resumeInNotebook(
  app: JupyterFrontEnd,
  docManager: IDocumentManager,
  run: IRun,
  onProgress: (text: string) => void = () => undefined
): Promise<string> {
  const code = resumeCode(run.run_id);
  if (!run.notebook) {
    throw new ResumeError(
      `run ${run.run_id} has no notebook on record (it was not started from a notebook ` +
        `open in JupyterLab). Resume it from a notebook that defines its activities: ${code}`
    );
  }
  const path = serverPath(run.notebook);
  if (path === null) {
    throw new ResumeError(
      `the notebook of run ${run.run_id} (${run.notebook}) is outside this Jupyter ` +
        `server's root, so JupyterLab cannot open it. Run ${code} in a notebook there.`
    );
  }
  try {
    await app.serviceManager.contents.get(path, { content: false });
  } catch {
    throw new ResumeError(
      `the notebook of run ${run.run_id} (${path}) is not there any more. ` +
        `Run ${code} in a notebook that defines its activities.`
    );
  }

  const widget = docManager.openOrReveal(path, 'Notebook');
  if (!(widget instanceof NotebookPanel)) {
    throw new ResumeError(`${path} did not open as a notebook`);
  }
  await widget.context.ready;
  await widget.sessionContext.ready;
  app.shell.activateById(widget.id);

  onProgress(`Resuming ${run.run_id}: starting the kernel of ${path}…`);
  const kernel = await liveKernel(widget);
  onProgress(`Resuming ${run.run_id}: loading durable_nb in the kernel of ${path}…`);
  const reply = await kernel.requestExecute({
    code: '%load_ext durable_nb',
    silent: true,
    store_history: false
  }).done;
  if (reply.content.status !== 'ok') {
    const detail =
      reply.content.status === 'error'
        ? `${reply.content.ename}: ${reply.content.evalue}`
        : reply.content.status;
    throw new ResumeError(
      `%load_ext durable_nb failed in the kernel of ${path} (${detail}); ` +
        `is durable_nb installed in that kernel's environment?`
    );
  }

  const notebook = widget.content;
  notebook.deselectAll();
  notebook.activeCellIndex = notebook.widgets.length - 1;
  NotebookActions.insertBelow(notebook);
  if (notebook.activeCell?.model.type !== 'code') {
    NotebookActions.changeCellType(notebook, 'code');
  }
  const cell = notebook.activeCell;
  if (!cell) {
    throw new ResumeError(`could not add a cell to ${path}`);
  }
  cell.model.sharedModel.setSource(code);
  // Not awaited: the cell runs as long as the workflow does, and shows its live view.
  void NotebookActions.run(notebook, widget.sessionContext).catch(error =>
    console.warn(`durable_nb: running "${code}" in ${path} failed`, error)
  );
  void notebook.scrollToCell(cell);
  return path;
}

/** The notebook's kernel: started when it has none, restarted when it died. */
async function liveKernel(panel: NotebookPanel): Promise<Kernel.IKernelConnection> {
  const ctx = panel.sessionContext;
  let kernel = ctx.session?.kernel ?? null;
  if (kernel && kernel.status === 'dead') {
    await ctx.restartKernel();
    kernel = ctx.session?.kernel ?? null;
  }
  if (!kernel) {
    const name =
      ctx.kernelPreference.name ||
      (panel.context.model.getMetadata('kernelspec') as { name?: string } | undefined)?.name ||
      ctx.specsManager.specs?.default ||
      'python3';
    kernel = await ctx.changeKernel({ name });
  }
  if (!kernel) {
    throw new ResumeError(`could not start a kernel for ${panel.context.path}`);
  }
  return kernel;
}
