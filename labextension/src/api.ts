/**
 * Client of the durable_nb REST API (docs/rest-api.md) served by the Jupyter server
 * extension under `/durable-nb/api/`. Requests go through ServerConnection, which adds the
 * token and the XSRF header like every JupyterLab request.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** A row of the `runs` view, plus `duration_s`. */
export interface IRun {
  run_id: string;
  workflow: string;
  status: string;
  started_at: string | null;
  ended_at: string | null;
  notebook: string | null;
  steps_completed: number;
  error: string | null;
  duration_s: number | null;
}

/** `GET runs/{id}` also says whether a live process executes the run, how many steps its
 * latest execution took from the journal (those completed before its latest resume) and
 * their recorded attempt time: what durability saved it. */
export interface IRunDetailRun extends IRun {
  executing?: boolean;
  replayed_steps?: number;
  saved_s?: number;
}

/** What a step's latest heartbeat says of its progress: `done` of `total` (`unit` is
 * "epoch" or "step" when the details counted those). */
export interface IHeartbeatProgress {
  done: number;
  total: number;
  unit: string | null;
}

/** A row of the `steps` view, plus `traceback`, `attempt_s` (the last attempt's duration;
 * `duration_s` counts from the first start) and `heartbeat_progress`. `args`, `result` and
 * `heartbeat` (the latest heartbeat's details) are JSON text. */
export interface IStep {
  run_id: string;
  seq: number;
  name: string;
  status: string;
  attempts: number | null;
  started_at: string | null;
  ended_at: string | null;
  duration_s: number | null;
  args: string | null;
  result: string | null;
  error: string | null;
  traceback: string | null;
  attempt_s?: number | null;
  heartbeat?: string | null;
  heartbeat_at?: string | null;
  heartbeats?: number;
  heartbeat_progress?: IHeartbeatProgress | null;
}

export interface IRunPage {
  runs: IRun[];
  total: number;
}

export interface IRunDetail {
  run: IRunDetailRun;
  steps: IStep[];
}

export interface IEventPage {
  events: Array<{ id: number; kind: string }>;
  last_id: number;
}

export interface IRunQuery {
  status?: string;
  workflow?: string;
  notebook?: string;
  q?: string;
  limit: number;
  offset: number;
}

export interface IForkAnswer {
  run_id: string;
  parent_run_id: string;
  at: number;
  steps_copied: number;
}

/** An answer of the API that is not a success, with the server's message when it sent one. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The REST API of one Jupyter server. */
export class DurableApi {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  listRuns(query: IRunQuery): Promise<IRunPage> {
    const params: Record<string, string> = {
      limit: String(query.limit),
      offset: String(query.offset)
    };
    for (const key of ['status', 'workflow', 'notebook', 'q'] as const) {
      const value = query[key];
      if (value) {
        params[key] = value;
      }
    }
    return this.request<IRunPage>('runs' + URLExt.objectToQueryString(params));
  }

  getRun(runId: string): Promise<IRunDetail> {
    return this.request<IRunDetail>(runPath(runId));
  }

  eventsSince(runId: string, since: number): Promise<IEventPage> {
    return this.request<IEventPage>(`${runPath(runId)}/events?since=${since}`);
  }

  cancel(runId: string): Promise<{ status: string; previous_status: string }> {
    return this.request(`${runPath(runId)}/cancel`, { method: 'POST' });
  }

  signal(runId: string, name: string, value: unknown): Promise<unknown> {
    return this.request(`${runPath(runId)}/signal`, {
      method: 'POST',
      body: JSON.stringify({ name, value })
    });
  }

  fork(runId: string, at: number): Promise<IForkAnswer> {
    return this.request<IForkAnswer>(`${runPath(runId)}/fork`, {
      method: 'POST',
      body: JSON.stringify({ at })
    });
  }

  remove(runId: string): Promise<void> {
    return this.request<void>(runPath(runId), { method: 'DELETE' });
  }

  private async request<T>(path: string, init: RequestInit = {}): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'durable-nb/api', path);
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (error) {
      throw new ApiError(`the Jupyter server did not answer (${String(error)})`, 0);
    }
    const text = await response.text();
    if (!response.ok) {
      throw new ApiError(errorMessage(response, text, init.method ?? 'GET'), response.status);
    }
    if (!text) {
      return undefined as T;
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError(`${url} answered something that is not JSON`, response.status);
    }
  }
}

function runPath(runId: string): string {
  return `runs/${encodeURIComponent(runId)}`;
}

function errorMessage(response: Response, text: string, method: string): string {
  try {
    const body = JSON.parse(text);
    if (body && typeof body.message === 'string' && body.message) {
      return body.message;
    }
  } catch {
    // Not JSON: an HTML error page of the Jupyter server, handled below.
  }
  if (response.status === 404 && !text.trimStart().startsWith('{')) {
    // Tornado's own 404 page: no handler answers under /durable-nb/api/.
    return (
      'the durable_nb server extension does not answer on this Jupyter server ' +
      '(is durable_nb installed in the environment that runs `jupyter lab`?)'
    );
  }
  return `${method} ${response.url} failed: ${response.status} ${response.statusText}`;
}
