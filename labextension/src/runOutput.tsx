/**
 * The output of a `%%workflow` cell in JupyterLab: the run's *current* state, read from the
 * REST API, whatever became of the kernel that displayed it. The kernel's display bundle
 * carries `application/vnd.durable-nb.run+json` (`{run_id, workflow, status}`) beside its
 * widget and HTML summary; this renderer is ranked above both, so an output is true after a
 * reload, a kernel death or a resume elsewhere, and never shows a broken widget. When the
 * API cannot answer it shows the HTML of the bundle with a note.
 */

import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { ReactWidget } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { ApiError, DurableApi, IRunDetail } from './api';
import { RunFollower } from './follow';
import { formatDuration, runDuration } from './format';
import { RunningHeartbeats } from './heartbeat';
import { messageOf, OVER_STATUSES } from './model';
import { StatusBadge } from './runList';
import { Timeline } from './timeline';

export const RUN_MIME = 'application/vnd.durable-nb.run+json';
/** Lower is preferred; the ipywidgets view is -10, the HTML 50. */
export const RUN_OUTPUT_RANK = -20;
/** A running run is re-read every second; an unfinished one (it may be resumed elsewhere)
 * every five; a completed or cancelled one never again. */
export const RUNNING_POLL_MS = 1000;
export const UNFINISHED_POLL_MS = 5000;

/** What the kernel put in the bundle: enough to find the run and to say what it was. */
interface IRunRef {
  run_id: string;
  workflow: string;
  status: string;
}

export function runOutputFactory(api: DurableApi): IRenderMime.IRendererFactory {
  return {
    safe: true, // it renders text from the API, and the bundle's HTML only sanitized
    mimeTypes: [RUN_MIME],
    defaultRank: RUN_OUTPUT_RANK,
    createRenderer: options => new RunOutput(api, options)
  };
}

export class RunOutput extends ReactWidget implements IRenderMime.IRenderer {
  constructor(
    private readonly api: DurableApi,
    private readonly options: IRenderMime.IRendererOptions
  ) {
    super();
    this.addClass('dnb-run-output');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const ref = model.data[RUN_MIME] as unknown as IRunRef | undefined;
    const html = model.data['text/html'];
    const plain = model.data['text/plain'];
    this._fallback =
      typeof html === 'string'
        ? { html: model.trusted ? html : this.options.sanitizer.sanitize(html) }
        : { text: typeof plain === 'string' ? plain : '' };
    this._ref = ref && typeof ref.run_id === 'string' ? ref : null;
    if (this._ref === null) {
      this._error = 'the output names no run';
    } else if (this._follower?.runId !== this._ref.run_id) {
      this._follower = new RunFollower(this.api, this._ref.run_id);
      this._error = null;
      window.clearTimeout(this._timer);
      await this._read();
    }
    this.update();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    const status = this._follower?.detail?.run.status;
    if (this._follower !== null && status !== undefined && !OVER_STATUSES.includes(status)) {
      window.clearTimeout(this._timer);
      void this._read();
    }
  }

  dispose(): void {
    window.clearTimeout(this._timer);
    this._follower = null;
    super.dispose();
  }

  render(): JSX.Element {
    const ref = this._ref;
    const detail = this._follower?.detail ?? null;
    if (ref === null || (detail === null && this._error !== null)) {
      return (
        <RunFallback
          fallback={this._fallback}
          note={ref === null ? 'the output names no run' : this._errorNote}
          error={this._error}
        />
      );
    }
    return (
      <RunState
        refStatus={ref.status}
        runId={ref.run_id}
        workflow={ref.workflow}
        detail={detail}
        error={this._error}
        cancelling={this._cancelling}
        onCancel={() => void this._cancel()}
      />
    );
  }

  /** Read the run, then schedule the next read by its status. */
  private async _read(): Promise<void> {
    const follower = this._follower;
    if (follower === null || this.isDisposed) {
      return;
    }
    let next: number | null = RUNNING_POLL_MS;
    // Unseen (a hidden tab or browser page), an output only keeps its timer; it reads the
    // run again when it shows. The first read always happens.
    const seen = document.visibilityState !== 'hidden' && this.isVisible;
    if (seen || follower.detail === null) {
      try {
        await follower.read();
        this._error = null;
      } catch (error) {
        this._error = messageOf(error);
        this._errorNote = shortNote(error);
        // Gone (deleted, or no extension on this server): nothing will come back.
        next = error instanceof ApiError && error.status === 404 ? null : UNFINISHED_POLL_MS;
      }
    }
    if (follower !== this._follower || this.isDisposed) {
      return;
    }
    const status = follower.detail?.run.status;
    if (status !== undefined && this._error === null) {
      next = OVER_STATUSES.includes(status)
        ? null
        : status === 'running'
          ? RUNNING_POLL_MS
          : UNFINISHED_POLL_MS;
    }
    this.update();
    window.clearTimeout(this._timer);
    if (next !== null) {
      this._timer = window.setTimeout(() => void this._read(), next);
    }
  }

  private async _cancel(): Promise<void> {
    const follower = this._follower;
    if (follower === null) {
      return;
    }
    this._cancelling = true;
    this.update();
    try {
      await this.api.cancel(follower.runId);
    } catch (error) {
      this._error = `Cancel: ${messageOf(error)}`;
    }
    this._cancelling = false;
    window.clearTimeout(this._timer);
    await this._read();
  }

  private _ref: IRunRef | null = null;
  private _fallback: IFallback = { text: '' };
  private _follower: RunFollower | null = null;
  private _error: string | null = null;
  private _errorNote = '';
  private _cancelling = false;
  private _timer = 0;
}

interface IFallback {
  html?: string;
  text?: string;
}

/** Why the API could not say, in a few words (the whole message is the note's title). */
function shortNote(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 404) {
      return error.message.includes('server extension')
        ? 'the durable_nb server extension does not answer on this server'
        : 'the run is no longer in the journal';
    }
    if (error.status === 0) {
      return 'the Jupyter server did not answer';
    }
  }
  return 'the journal could not be read';
}

function RunFallback(props: {
  fallback: IFallback;
  note: string;
  error: string | null;
}): JSX.Element {
  const { fallback } = props;
  return (
    <div className="dnb-run-fallback">
      <div className="dnb-run-output-note" role="status" title={props.error ?? ''}>
        The current state of this run is not available ({props.note}); this is what the
        kernel showed last.
      </div>
      {fallback.html !== undefined ? (
        <div
          className="dnb-run-fallback-html"
          dangerouslySetInnerHTML={{ __html: fallback.html }}
        />
      ) : (
        <pre className="dnb-run-fallback-text">{fallback.text}</pre>
      )}
    </div>
  );
}

function RunState(props: {
  runId: string;
  workflow: string;
  refStatus: string;
  detail: IRunDetail | null;
  error: string | null;
  cancelling: boolean;
  onCancel: () => void;
}): JSX.Element {
  const { detail } = props;
  const run = detail?.run ?? null;
  const status = run?.status ?? props.refStatus;
  const now = Date.now();
  const recorded = detail?.steps.length ?? 0;
  const done = run?.steps_completed ?? 0;
  const replayed = run?.replayed_steps ?? 0;
  return (
    <div className="dnb-run-state" data-run-id={props.runId} data-status={status}>
      <div className="dnb-run-line">
        <span className="dnb-run-workflow">{run?.workflow ?? props.workflow}</span>
        <code className="dnb-run-id" title={props.runId}>
          {props.runId}
        </code>
        <StatusBadge status={status} of="run" />
        {run !== null && (
          <>
            <span className="dnb-run-duration" title="time since the run started">
              {formatDuration(runDuration(run, now))}
            </span>
            <span className="dnb-run-progress">
              {done} / {recorded} {recorded === 1 ? 'step' : 'steps'} completed
            </span>
            {replayed > 0 && (
              <span
                className="dnb-badge dnb-status-replayed dnb-run-replayed"
                title="steps completed before the latest resume, taken from the journal"
              >
                {replayed} replayed — saved {formatDuration(run?.saved_s ?? 0)}
              </span>
            )}
          </>
        )}
        {status === 'running' && (
          <button
            className="jp-Button jp-mod-styled dnb-button dnb-action-cancel"
            disabled={props.cancelling}
            title="Mark the run cancelled: it stops at its next step"
            onClick={props.onCancel}
          >
            Cancel
          </button>
        )}
      </div>
      {detail === null && <div className="dnb-empty">Loading…</div>}
      {run?.error && <pre className="dnb-run-error">{run.error}</pre>}
      {detail !== null && (
        <Timeline
          steps={detail.steps}
          runStart={detail.run.started_at}
          runEnd={detail.run.ended_at}
          now={now}
        />
      )}
      {detail !== null && status === 'running' && (
        <RunningHeartbeats steps={detail.steps} now={now} />
      )}
      {props.error !== null && (
        <div className="dnb-run-output-note dnb-error" role="alert">
          {props.error}
        </div>
      )}
    </div>
  );
}
