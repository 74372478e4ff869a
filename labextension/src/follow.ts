/**
 * Following one run through the REST API: each read asks for the run's new events and
 * re-reads the run and its steps only when there are some (or every few reads, to catch up
 * with what events do not show, such as a process that died), so a run that does not move
 * costs one small request per read. The sidebar's detail view and every run output use it.
 */

import { DurableApi, IRunDetail } from './api';

const FULL_DETAIL_EVERY_READS = 10;

export class RunFollower {
  detail: IRunDetail | null = null;

  constructor(
    readonly api: DurableApi,
    readonly runId: string
  ) {}

  /** Bring `detail` up to date; true when it changed. Throws the API's errors. */
  async read(): Promise<boolean> {
    const events = await this.api.eventsSince(this.runId, this._since);
    const moved = events.last_id !== this._since;
    this._reads += 1;
    if (!moved && this.detail !== null && this._reads < FULL_DETAIL_EVERY_READS) {
      return false;
    }
    this.detail = await this.api.getRun(this.runId);
    this._since = events.last_id;
    this._reads = 0;
    return true;
  }

  private _since = 0;
  private _reads = 0;
}
