/** The detail view of one run: header, actions, timeline and the steps table. */

import * as React from 'react';

import { IRun, IRunDetail, IRunDetailRun, IStep } from './api';
import { absoluteTime, formatDuration, preview, runDuration, stepTimes, twoTimes } from './format';
import { StepHeartbeat } from './heartbeat';
import { OVER_STATUSES } from './model';
import { notebookLabel } from './paths';
import { StatusBadge } from './runList';
import { Timeline } from './timeline';

/** What the detail view's buttons do (they need dialogs, the app and the API). */
export interface IRunActions {
  cancel(run: IRun): Promise<void>;
  signal(run: IRun): Promise<void>;
  fork(run: IRun): Promise<void>;
  remove(run: IRun): Promise<void>;
  resume(run: IRun): Promise<void>;
}

const STEPS_SHOWN = 200; // rows rendered before "Show all"

export function RunDetail(props: {
  runId: string;
  detail: IRunDetail | null;
  error: string | null;
  actions: IRunActions;
  onBack: () => void;
}): JSX.Element {
  const { detail, error } = props;
  const now = Date.now();
  return (
    <div className="dnb-run-detail" data-run-id={props.runId}>
      <div className="dnb-detail-nav">
        <button className="jp-Button jp-mod-minimal dnb-button dnb-back" onClick={props.onBack}>
          ‹ Runs
        </button>
        <span className="dnb-detail-title" title={props.runId}>
          {props.runId}
        </span>
      </div>
      {error !== null && (
        <div className="dnb-error" role="alert">
          Could not load run {props.runId}: {error}
        </div>
      )}
      {detail === null && error === null && <div className="dnb-empty">Loading…</div>}
      {detail !== null && (
        <>
          <RunHeader run={detail.run} now={now} />
          <ActionBar run={detail.run} actions={props.actions} />
          <Timeline
            steps={detail.steps}
            runStart={detail.run.started_at}
            runEnd={detail.run.ended_at}
            now={now}
          />
          <StepsTable steps={detail.steps} now={now} />
        </>
      )}
    </div>
  );
}

function RunHeader(props: { run: IRunDetailRun; now: number }): JSX.Element {
  const { run } = props;
  return (
    <div className="dnb-detail-header">
      <div className="dnb-run-line">
        <span className="dnb-run-workflow" title={run.workflow}>
          {run.workflow}
        </span>
        <StatusBadge status={run.status} of="run" />
      </div>
      <dl className="dnb-facts">
        <dt>run</dt>
        <dd className="dnb-detail-run-id" title={run.run_id}>
          {run.run_id}
        </dd>
        <dt>notebook</dt>
        <dd className="dnb-detail-notebook" title={run.notebook ?? ''}>
          {notebookLabel(run.notebook) || '—'}
        </dd>
        <dt>steps</dt>
        <dd className="dnb-run-progress">{run.steps_completed} completed</dd>
        {(run.replayed_steps ?? 0) > 0 && (
          <>
            <dt>replayed</dt>
            <dd
              className="dnb-run-saved"
              title="steps the latest resume took from the journal, and their recorded run time"
            >
              {run.replayed_steps} {run.replayed_steps === 1 ? 'step' : 'steps'} — saved{' '}
              {formatDuration(run.saved_s ?? 0)}
            </dd>
          </>
        )}
        <dt>started</dt>
        <dd title={run.started_at ?? ''}>{absoluteTime(run.started_at)}</dd>
        <dt>ended</dt>
        <dd title={run.ended_at ?? ''}>{absoluteTime(run.ended_at) || '—'}</dd>
        <dt>duration</dt>
        <dd>{formatDuration(runDuration(run, props.now))}</dd>
      </dl>
      {run.error && <pre className="dnb-run-error">{run.error}</pre>}
    </div>
  );
}

/** Why Resume cannot apply to the run, or null when it can. */
export function resumeBlocked(run: IRunDetailRun): string | null {
  if (run.status === 'completed') {
    return 'The run completed: there is nothing left to resume';
  }
  if (run.status === 'cancelled') {
    return 'A cancelled run cannot be resumed (re-running its cell starts a new run)';
  }
  if (run.status === 'running' && run.executing) {
    return 'A live process is executing this run: wait for it, or cancel it';
  }
  return null;
}

/** Why Cancel cannot apply to the run, or null when it can. */
export function cancelBlocked(run: IRun): string | null {
  return OVER_STATUSES.includes(run.status)
    ? `The run is ${run.status}: there is nothing to cancel`
    : null;
}

function ActionBar(props: { run: IRunDetailRun; actions: IRunActions }): JSX.Element {
  const { run, actions } = props;
  const [busy, setBusy] = React.useState(false);
  const act = (fn: (run: IRun) => Promise<void>) => async () => {
    setBusy(true);
    try {
      await fn.call(actions, run);
    } finally {
      setBusy(false);
    }
  };
  const over = OVER_STATUSES.includes(run.status);
  /** A button, disabled with the reason as its title when `blocked` says why. */
  const button = (
    label: string,
    fn: (run: IRun) => Promise<void>,
    blocked: string | null,
    title: string
  ) => (
    <button
      className={`jp-Button jp-mod-styled dnb-button dnb-action-${label.toLowerCase()}`}
      disabled={busy || blocked !== null}
      title={blocked ?? title}
      onClick={act(fn)}
    >
      {label}
    </button>
  );
  return (
    <div className="dnb-actions">
      {button(
        'Resume',
        actions.resume,
        resumeBlocked(run),
        'Continue the run in its notebook (%workflow resume)'
      )}
      {button(
        'Cancel',
        actions.cancel,
        cancelBlocked(run),
        'Stop the run; it cannot be resumed afterwards'
      )}
      {button(
        'Signal',
        actions.signal,
        over ? `The run is ${run.status}: it takes no more signals` : null,
        'Send a named JSON value to the run'
      )}
      {button('Fork', actions.fork, null, 'Start a new run that keeps the steps before N')}
      {button('Delete', actions.remove, null, 'Delete the run and its steps from the journal')}
    </div>
  );
}

function StepsTable(props: { steps: IStep[]; now: number }): JSX.Element {
  const [all, setAll] = React.useState(false);
  const steps = all ? props.steps : props.steps.slice(0, STEPS_SHOWN);
  if (props.steps.length === 0) {
    return <div className="dnb-empty">No steps recorded yet.</div>;
  }
  return (
    <div className="dnb-steps-box">
      <table className="dnb-steps">
        <thead>
          <tr>
            <th className="dnb-num">#</th>
            <th className="dnb-step-main">activity</th>
            <th className="dnb-num" title="attempts">
              att.
            </th>
            <th className="dnb-num">time</th>
            <th>status</th>
          </tr>
        </thead>
        <tbody>
          {steps.map(step => (
            <StepRows key={step.seq} step={step} now={props.now} />
          ))}
        </tbody>
      </table>
      {steps.length < props.steps.length && (
        <button className="jp-Button jp-mod-minimal dnb-button" onClick={() => setAll(true)}>
          Show all {props.steps.length} steps
        </button>
      )}
    </div>
  );
}

/** Under the activity: both times, labelled, when they differ (the row's time column has
 * room for one). */
function StepTimes(props: { times: [number, number] }): JSX.Element {
  const [attempt, total] = props.times;
  return (
    <div className="dnb-step-times">
      <span className="dnb-step-attempt">{formatDuration(attempt)} (last attempt)</span>
      {' · '}
      <span className="dnb-step-since-first">{formatDuration(total)} since first start</span>
    </div>
  );
}

/** A step on one row: the activity over its args and result (full text on hover), and
 * while it runs its latest heartbeat. */
function StepRows(props: { step: IStep; now: number }): JSX.Element {
  const { step } = props;
  const times = twoTimes(step);
  return (
    <>
      <tr className="dnb-step-row" data-seq={step.seq} data-status={step.status}>
        <td className="dnb-num">{step.seq}</td>
        <td className="dnb-step-main">
          <div className="dnb-step-name" title={step.name}>
            {step.name}
          </div>
          <div
            className="dnb-step-io"
            title={step.result === null ? step.args ?? '' : `${step.args ?? ''} → ${step.result}`}
          >
            <span className="dnb-step-args" title={step.args ?? ''}>
              {preview(step.args)}
            </span>
            {step.result !== null && (
              <>
                {' → '}
                <span className="dnb-step-result" title={step.result}>
                  {preview(step.result)}
                </span>
              </>
            )}
          </div>
          <StepHeartbeat step={step} now={props.now} />
          {times && <StepTimes times={times} />}
        </td>
        <td className="dnb-num">{step.attempts ?? ''}</td>
        <td
          className="dnb-num dnb-step-time"
          title={
            times ? stepTimes(step) : 'time of the step (one attempt, from its start to its end)'
          }
        >
          {formatDuration(times ? times[0] : step.duration_s)}
        </td>
        <td>
          <StatusBadge status={step.status} of="step" />
        </td>
      </tr>
      {step.error && (
        <tr className="dnb-step-error-row" data-seq={step.seq}>
          <td />
          <td colSpan={4}>
            <details className="dnb-step-error">
              <summary>{step.error}</summary>
              <pre className="dnb-traceback">{step.traceback || 'no traceback recorded'}</pre>
            </details>
          </td>
        </tr>
      )}
    </>
  );
}
