/**
 * State of the sidebar: the page of runs shown (filter, search, offset), the run opened in
 * the detail view, the last notice, and the polling that keeps them fresh while visible.
 *
 * Only what is on screen is fetched: one page of runs (server-side paging, so 10,000 runs
 * cost what 50 do), or the open run. The open run is re-read when its events move on
 * (`events?since`), so a finished run costs one small request per tick.
 */

import { ISignal, Signal } from '@lumino/signaling';

import { ApiError, DurableApi, IRunDetail, IRunPage } from './api';
import { RunFollower } from './follow';

export const PAGE_SIZE = 50;
export const POLL_INTERVAL_MS = 1000;
const SEARCH_DEBOUNCE_MS = 250;
const INFO_NOTICE_MS = 10_000;

export const RUN_STATUSES = ['running', 'completed', 'failed', 'interrupted', 'cancelled'];
/** Statuses of a run that is over: it takes no more work, cancels or signals. */
export const OVER_STATUSES = ['completed', 'cancelled'];

export interface INotice {
  kind: 'error' | 'info';
  text: string;
}

export class RunsModel {
  /** Run statuses of the filter ('' for all). */
  status = '';
  /** Search text (run id or workflow), applied after a short pause in typing. */
  query = '';
  offset = 0;
  page: IRunPage | null = null;
  listError: string | null = null;
  /** The run of the detail view, or null for the list. */
  selected: string | null = null;
  detail: IRunDetail | null = null;
  detailError: string | null = null;
  notice: INotice | null = null;
  /** When the data on screen was last read from the server (epoch ms). */
  updatedAt = 0;

  constructor(
    readonly api: DurableApi,
    readonly interval: number = POLL_INTERVAL_MS
  ) {}

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Poll every `interval` ms, at once first; the panel calls it when it is shown. */
  start(): void {
    if (this._active) {
      return;
    }
    this._active = true;
    void this._tick();
  }

  /** Stop polling; the panel calls it when it is hidden. */
  stop(): void {
    this._active = false;
    window.clearTimeout(this._timer);
  }

  dispose(): void {
    this.stop();
    window.clearTimeout(this._searchTimer);
    window.clearTimeout(this._noticeTimer);
    Signal.clearData(this);
  }

  setStatus(status: string): void {
    this.status = status;
    this.offset = 0;
    this._emit();
    void this.refresh();
  }

  setQuery(query: string): void {
    window.clearTimeout(this._searchTimer);
    this._searchTimer = window.setTimeout(() => {
      if (query !== this.query) {
        this.query = query;
        this.offset = 0;
        this._emit();
        void this.refresh();
      }
    }, SEARCH_DEBOUNCE_MS);
  }

  setOffset(offset: number): void {
    this.offset = Math.max(0, offset);
    this._emit();
    void this.refresh();
  }

  /** Open a run in the detail view (null: back to the list). */
  select(runId: string | null): void {
    if (runId === this.selected) {
      return;
    }
    this.selected = runId;
    this.detail = null;
    this.detailError = null;
    this._follower = runId === null ? null : new RunFollower(this.api, runId);
    this._emit();
    void this.refresh();
  }

  notify(kind: INotice['kind'], text: string): void {
    window.clearTimeout(this._noticeTimer);
    this.notice = { kind, text };
    if (kind === 'info') {
      this._noticeTimer = window.setTimeout(() => this.dismissNotice(), INFO_NOTICE_MS);
    }
    this._emit();
  }

  dismissNotice(): void {
    window.clearTimeout(this._noticeTimer);
    this.notice = null;
    this._emit();
  }

  /** Read what is on screen now; concurrent calls share one request, then run once more. */
  refresh(): Promise<void> {
    if (this._inFlight) {
      this._again = true;
      return this._inFlight;
    }
    this._inFlight = this._fetch().finally(() => {
      this._inFlight = null;
      if (this._again) {
        this._again = false;
        void this.refresh();
      }
    });
    return this._inFlight;
  }

  private async _tick(): Promise<void> {
    window.clearTimeout(this._timer);
    if (!this._active) {
      return;
    }
    if (document.visibilityState !== 'hidden') {
      await this.refresh();
    }
    if (this._active) {
      window.clearTimeout(this._timer);
      this._timer = window.setTimeout(() => void this._tick(), this.interval);
    }
  }

  private async _fetch(): Promise<void> {
    const runId = this.selected;
    if (runId === null) {
      await this._fetchList();
    } else {
      await this._fetchDetail(runId);
    }
    this.updatedAt = Date.now();
    this._emit();
  }

  private async _fetchList(): Promise<void> {
    const key = this._listKey();
    try {
      const page = await this.api.listRuns({
        status: this.status,
        q: this.query,
        limit: PAGE_SIZE,
        offset: this.offset
      });
      if (key !== this._listKey()) {
        return; // the filter changed meanwhile: the next fetch reads the new page
      }
      if (page.runs.length === 0 && this.offset > 0 && page.total > 0) {
        // Runs were deleted under the last page: step back to the last page there is.
        this.offset = Math.floor((page.total - 1) / PAGE_SIZE) * PAGE_SIZE;
        this._again = true;
      }
      this.page = page;
      this.listError = null;
    } catch (error) {
      if (key === this._listKey()) {
        this.listError = messageOf(error);
      }
    }
  }

  private async _fetchDetail(runId: string): Promise<void> {
    const follower = this._follower;
    try {
      if (follower === null || follower.runId !== runId) {
        return;
      }
      await follower.read();
      if (runId !== this.selected) {
        return;
      }
      this.detail = follower.detail;
      this.detailError = null;
    } catch (error) {
      if (runId !== this.selected) {
        return;
      }
      if (error instanceof ApiError && error.status === 404 && this.detail !== null) {
        // The run went away (deleted elsewhere): say so and go back to the list.
        this.notify('info', `run ${runId} no longer exists`);
        this.select(null);
        return;
      }
      this.detailError = messageOf(error);
    }
  }

  private _listKey(): string {
    return JSON.stringify([this.selected, this.status, this.query, this.offset]);
  }

  private _emit(): void {
    this._changed.emit();
  }

  private _changed = new Signal<this, void>(this);
  private _active = false;
  private _timer = 0;
  private _searchTimer = 0;
  private _noticeTimer = 0;
  private _inFlight: Promise<void> | null = null;
  private _again = false;
  private _follower: RunFollower | null = null;
}

export function messageOf(error: unknown): string {
  if (error instanceof ApiError) {
    return error.message;
  }
  return error instanceof Error ? error.message : String(error);
}
