/**
 * A running step's latest heartbeat (`durable_nb.heartbeat(details)`): a bar and its count
 * when the details state progress (the server reads them: `heartbeat_progress`), the
 * details themselves, and how long ago the heartbeat came. The sidebar's steps table and
 * every run output show it.
 */

import * as React from 'react';

import { IHeartbeatProgress, IStep } from './api';
import { absoluteTime, relativeTime } from './format';

const RUNNING_SHOWN = 5; // running steps a run output lists before "and N more"

/** "epoch 3/10", "30/100". */
export function progressText(progress: IHeartbeatProgress): string {
  const count = `${formatCount(progress.done)}/${formatCount(progress.total)}`;
  return progress.unit ? `${progress.unit} ${count}` : count;
}

/** Between 0 and 1: a count past its total is a full bar. */
export function progressFraction(progress: IHeartbeatProgress): number {
  return Math.min(Math.max(progress.done / progress.total, 0), 1);
}

/** The details on one line: a string as it is (a pickled value's preview), else JSON. */
export function heartbeatText(json: string | null | undefined, max = 80): string {
  if (json === null || json === undefined) {
    return '';
  }
  let text = json;
  try {
    const value = JSON.parse(json);
    text = typeof value === 'string' ? value : JSON.stringify(value);
  } catch {
    // Keep the stored text as it is.
  }
  return text.length > max ? text.slice(0, max - 1) + '…' : text;
}

/** A step shows its heartbeat while it runs and has sent one. */
export function showsHeartbeat(step: IStep): boolean {
  return step.status === 'running' && !!step.heartbeat_at;
}

export function StepHeartbeat(props: { step: IStep; now: number }): JSX.Element | null {
  const { step, now } = props;
  if (!showsHeartbeat(step)) {
    return null;
  }
  const progress = step.heartbeat_progress ?? null;
  const count = step.heartbeats ?? 1;
  const title =
    `latest of ${count} ${count === 1 ? 'heartbeat' : 'heartbeats'}, at ` +
    `${absoluteTime(step.heartbeat_at ?? null, now)}: ${heartbeatText(step.heartbeat, 2000)}`;
  return (
    <div className="dnb-heartbeat" data-seq={step.seq} title={title}>
      {progress !== null && (
        <>
          <span
            className="dnb-heartbeat-bar"
            role="progressbar"
            aria-label={`step ${step.seq} progress`}
            aria-valuemin={0}
            aria-valuemax={progress.total}
            aria-valuenow={Math.min(progress.done, progress.total)}
          >
            <span
              className="dnb-heartbeat-fill"
              style={{ width: `${(progressFraction(progress) * 100).toFixed(1)}%` }}
            />
          </span>
          <span className="dnb-heartbeat-progress">{progressText(progress)}</span>
        </>
      )}
      <span className="dnb-heartbeat-details">{heartbeatText(step.heartbeat)}</span>
      <span className="dnb-heartbeat-age">{relativeTime(step.heartbeat_at ?? null, now)}</span>
    </div>
  );
}

/** The running steps of a run that sent heartbeats, one line each (a run output's view of
 * what is in flight). */
export function RunningHeartbeats(props: { steps: IStep[]; now: number }): JSX.Element | null {
  const beating = props.steps.filter(showsHeartbeat);
  if (beating.length === 0) {
    return null;
  }
  const shown = beating.slice(0, RUNNING_SHOWN);
  return (
    <div className="dnb-run-heartbeats">
      {shown.map(step => (
        <div key={step.seq} className="dnb-run-heartbeat-step" data-seq={step.seq}>
          <span className="dnb-run-heartbeat-name" title={step.name}>
            #{step.seq} {step.name}
          </span>
          <StepHeartbeat step={step} now={props.now} />
        </div>
      ))}
      {beating.length > shown.length && (
        <div className="dnb-empty">and {beating.length - shown.length} more running</div>
      )}
    </div>
  );
}

function formatCount(n: number): string {
  return Number.isInteger(n) ? String(n) : String(Number(n.toPrecision(4)));
}
