/** The list view: status filter, search, one page of runs, pager. */

import * as React from 'react';

import { IRun } from './api';
import { baseName, formatDuration, relativeTime, runDuration } from './format';
import { PAGE_SIZE, RUN_STATUSES, RunsModel } from './model';
import { notebookLabel } from './paths';

export function StatusBadge(props: { status: string; of: 'run' | 'step' }): JSX.Element {
  return (
    <span
      className={`dnb-${props.of}-status dnb-badge dnb-status-${props.status}`}
      data-status={props.status}
    >
      {props.status}
    </span>
  );
}

export function RunList(props: { model: RunsModel }): JSX.Element {
  const { model } = props;
  const page = model.page;
  const now = Date.now();
  return (
    <div className="dnb-run-list">
      <div className="dnb-list-toolbar">
        <div className="dnb-filters">
          <select
            className="dnb-status-filter"
            aria-label="Status filter"
            value={model.status}
            onChange={e => model.setStatus(e.target.value)}
          >
            <option value="">all statuses</option>
            {RUN_STATUSES.map(s => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
          <SearchBox model={model} />
        </div>
        {page !== null && <Pager model={model} total={page.total} shown={page.runs.length} />}
      </div>
      {model.listError !== null && (
        <div className="dnb-error" role="alert">
          Could not load runs: {model.listError}
        </div>
      )}
      {page === null && model.listError === null && <div className="dnb-empty">Loading runs…</div>}
      {page !== null && page.runs.length === 0 && (
        <div className="dnb-empty">
          {model.status || model.query
            ? 'No run matches.'
            : 'No runs yet: run a %%workflow cell in a notebook.'}
        </div>
      )}
      {page !== null && page.runs.length > 0 && (
        <ul className="dnb-runs" aria-label="Runs">
          {page.runs.map(run => (
            <RunRow key={run.run_id} run={run} now={now} onOpen={() => model.select(run.run_id)} />
          ))}
        </ul>
      )}
    </div>
  );
}

function SearchBox(props: { model: RunsModel }): JSX.Element {
  // Local state: the model applies the search after a pause, the input must not lag.
  const [text, setText] = React.useState(props.model.query);
  return (
    <input
      className="dnb-search"
      type="search"
      aria-label="Search runs"
      placeholder="Search run id or workflow"
      value={text}
      onChange={e => {
        setText(e.target.value);
        props.model.setQuery(e.target.value.trim());
      }}
    />
  );
}

function RunRow(props: { run: IRun; now: number; onOpen: () => void }): JSX.Element {
  const { run, now } = props;
  return (
    <li
      className="dnb-run-row"
      data-run-id={run.run_id}
      data-status={run.status}
      tabIndex={0}
      role="button"
      aria-label={`Run ${run.run_id}, ${run.status}`}
      onClick={props.onOpen}
      onKeyDown={e => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          props.onOpen();
        }
      }}
    >
      <div className="dnb-run-line">
        <span className="dnb-run-workflow" title={run.workflow}>
          {run.workflow}
        </span>
        <span className="dnb-run-id" title={run.run_id}>
          {run.run_id}
        </span>
        <StatusBadge status={run.status} of="run" />
      </div>
      <div className="dnb-run-line dnb-run-meta">
        <span className="dnb-run-progress" title="steps completed">
          {run.steps_completed} {run.steps_completed === 1 ? 'step' : 'steps'}
        </span>
        <span className="dnb-run-started" title={run.started_at ?? ''}>
          {relativeTime(run.started_at, now)}
        </span>
        <span className="dnb-run-duration">{formatDuration(runDuration(run, now))}</span>
        <span className="dnb-run-notebook" title={notebookLabel(run.notebook)}>
          {baseName(run.notebook)}
        </span>
      </div>
    </li>
  );
}

function Pager(props: { model: RunsModel; total: number; shown: number }): JSX.Element {
  const { model, total, shown } = props;
  const first = total === 0 ? 0 : model.offset + 1;
  const last = model.offset + shown;
  return (
    <div className="dnb-pager">
      <button
        className="jp-Button jp-mod-minimal dnb-button"
        disabled={model.offset === 0}
        onClick={() => model.setOffset(model.offset - PAGE_SIZE)}
      >
        ‹ Newer
      </button>
      <span className="dnb-page-range">
        {first}–{last} of {total.toLocaleString()}
      </span>
      <button
        className="jp-Button jp-mod-minimal dnb-button"
        disabled={last >= total}
        onClick={() => model.setOffset(model.offset + PAGE_SIZE)}
      >
        Older ›
      </button>
    </div>
  );
}
