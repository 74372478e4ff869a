/**
 * The detail view's actions. Cancel, Signal, Fork and Delete only touch the journal and go
 * through the REST API; Resume needs user code, so it runs in the notebook's kernel
 * (resume.ts). Every outcome, good or bad, is a notice in the panel.
 */

import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, InputDialog, showDialog } from '@jupyterlab/apputils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { Widget } from '@lumino/widgets';

import { IRun } from './api';
import { messageOf, RunsModel } from './model';
import { IRunActions } from './runDetail';
import { resumeInNotebook } from './resume';

export class RunActions implements IRunActions {
  constructor(
    private readonly model: RunsModel,
    private readonly app: JupyterFrontEnd,
    private readonly docManager: IDocumentManager
  ) {}

  async cancel(run: IRun): Promise<void> {
    await this.attempt(`Cancel ${run.run_id}`, async () => {
      const answer = await this.model.api.cancel(run.run_id);
      this.model.notify('info', `${run.run_id} cancelled (it was ${answer.previous_status})`);
    });
  }

  async signal(run: IRun): Promise<void> {
    const result = await showDialog({
      title: `Signal ${run.run_id}`,
      body: new SignalForm(),
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Send' })],
      focusNodeSelector: 'input'
    });
    if (!result.button.accept || !result.value) {
      return;
    }
    const { name, text } = result.value;
    if (!name) {
      this.model.notify('error', 'Signal: the signal needs a name');
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(text || 'null');
    } catch (error) {
      this.model.notify('error', `Signal: the value is not JSON (${messageOf(error)})`);
      return;
    }
    await this.attempt(`Signal ${run.run_id}`, async () => {
      await this.model.api.signal(run.run_id, name, value);
      this.model.notify('info', `signal ${name} sent to ${run.run_id}`);
    });
  }

  async fork(run: IRun): Promise<void> {
    const result = await InputDialog.getNumber({
      title: `Fork ${run.run_id}`,
      label: 'Fork at step N (steps before N are kept, the rest runs again):',
      value: run.steps_completed
    });
    if (!result.button.accept || result.value === null) {
      return;
    }
    const at = result.value;
    if (!Number.isInteger(at) || at < 0) {
      this.model.notify('error', `Fork: the step must be a whole number ≥ 0, not ${at}`);
      return;
    }
    await this.attempt(`Fork ${run.run_id}`, async () => {
      const answer = await this.model.api.fork(run.run_id, at);
      this.model.select(answer.run_id);
      this.model.notify(
        'info',
        `forked ${run.run_id} at step ${at} as ${answer.run_id} ` +
          `(${answer.steps_copied} steps kept); Resume runs the rest`
      );
    });
  }

  async remove(run: IRun): Promise<void> {
    const result = await showDialog({
      title: `Delete ${run.run_id}?`,
      body: `Delete run ${run.run_id} (${run.workflow}, ${run.status}) and its steps from the journal? This cannot be undone.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (!result.button.accept) {
      return;
    }
    await this.attempt(`Delete ${run.run_id}`, async () => {
      await this.model.api.remove(run.run_id);
      this.model.select(null);
      this.model.notify('info', `${run.run_id} deleted`);
    });
  }

  async resume(run: IRun): Promise<void> {
    if (run.status === 'running') {
      // Resume is enabled for a running run only when no live process executes it (its
      // kernel died a moment ago); if one took it meanwhile, `%workflow resume` refuses.
      const result = await showDialog({
        title: `Resume ${run.run_id}?`,
        body:
          `${run.run_id} is marked running. If a kernel is still executing it, resuming ` +
          'it elsewhere is refused; resume it if nothing executes it any more.',
        buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Resume' })]
      });
      if (!result.button.accept) {
        return;
      }
    }
    await this.attempt(`Resume ${run.run_id}`, async () => {
      const path = await resumeInNotebook(this.app, this.docManager, run, text =>
        this.model.notify('info', text)
      );
      this.model.notify('info', `resuming ${run.run_id} in ${path}`);
    });
  }

  /** Run an action; its failure becomes an error notice in the panel, never a throw. */
  private async attempt(what: string, action: () => Promise<void>): Promise<void> {
    try {
      await action();
    } catch (error) {
      this.model.notify('error', `${what}: ${messageOf(error)}`);
    }
    void this.model.refresh();
  }
}

/** The Signal dialog's body: a name and a JSON value. */
class SignalForm extends Widget implements Dialog.IBodyWidget<{ name: string; text: string }> {
  constructor() {
    super({ node: SignalForm.createNode() });
    this.addClass('dnb-signal-form');
  }

  getValue(): { name: string; text: string } {
    const name = this.node.querySelector<HTMLInputElement>('input')?.value.trim() ?? '';
    const text = this.node.querySelector<HTMLTextAreaElement>('textarea')?.value.trim() ?? '';
    return { name, text };
  }

  private static createNode(): HTMLElement {
    const node = document.createElement('div');
    const nameLabel = document.createElement('label');
    nameLabel.textContent = 'Signal name';
    const name = document.createElement('input');
    name.className = 'jp-mod-styled';
    name.setAttribute('aria-label', 'Signal name');
    nameLabel.appendChild(name);
    const valueLabel = document.createElement('label');
    valueLabel.textContent = 'Value (JSON)';
    const value = document.createElement('textarea');
    value.className = 'jp-mod-styled';
    value.rows = 3;
    value.placeholder = 'null';
    value.setAttribute('aria-label', 'Signal value (JSON)');
    valueLabel.appendChild(value);
    node.append(nameLabel, valueLabel);
    return node;
  }
}
