/** How times, durations and stored JSON values read in the sidebar. */

/** Epoch milliseconds of an ISO 8601 timestamp of the API, or null. */
export function parseTime(iso: string | null | undefined): number | null {
  if (!iso) {
    return null;
  }
  // DuckDB may answer "2026-01-02 10:11:12.123456+00:00": a space and microseconds, which
  // not every Date parser accepts. Normalise to "2026-01-02T10:11:12.123+00:00".
  const normal = iso
    .trim()
    .replace(' ', 'T')
    .replace(/(\.\d{3})\d+/, '$1');
  const ms = Date.parse(normal);
  return Number.isNaN(ms) ? null : ms;
}

/** "12 s ago", "3 min ago", "2 h ago", "5 d ago"; the date beyond a month. */
export function relativeTime(iso: string | null, now: number = Date.now()): string {
  const ms = parseTime(iso);
  if (ms === null) {
    return '';
  }
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) {
    return `${s} s ago`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)} min ago`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)} h ago`;
  }
  if (s < 30 * 86400) {
    return `${Math.floor(s / 86400)} d ago`;
  }
  return new Date(ms).toLocaleDateString();
}

/** Local time "10:53:43" today, else local "2026-11-24 10:53". */
export function absoluteTime(iso: string | null, now: number = Date.now()): string {
  const ms = parseTime(iso);
  if (ms === null) {
    return '';
  }
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, '0');
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (d.toDateString() === new Date(now).toDateString()) {
    return `${time}:${pad(d.getSeconds())}`;
  }
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

/** "0.31 s", "12.4 s", "3m 05s", "2h 01m". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) {
    return '';
  }
  if (seconds < 10) {
    return `${seconds.toFixed(2)} s`;
  }
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const pad = (n: number) => String(n).padStart(2, '0');
  return h > 0 ? `${h}h ${pad(m)}m` : `${m}m ${pad(s)}s`;
}

/**
 * Seconds a run has taken: the API's duration when it ended, else time since its start
 * (so a running run's duration grows between polls).
 */
export function runDuration(
  run: { duration_s: number | null; started_at: string | null; ended_at: string | null },
  now: number = Date.now()
): number | null {
  if (run.duration_s !== null && run.duration_s !== undefined) {
    return run.duration_s;
  }
  const start = parseTime(run.started_at);
  if (start === null) {
    return null;
  }
  const end = parseTime(run.ended_at) ?? now;
  return Math.max(0, (end - start) / 1000);
}

/**
 * Seconds of a step's last attempt and since its first start, or null when those are the
 * same (one attempt, nothing lost with a dead kernel) or not known yet.
 */
export function twoTimes(step: {
  duration_s: number | null;
  attempt_s?: number | null;
}): [number, number] | null {
  const attempt = step.attempt_s ?? null;
  const total = step.duration_s;
  if (attempt === null || total === null || Math.abs(total - attempt) < 0.05) {
    return null;
  }
  return [attempt, total];
}

/** A step's time; both, labelled, when its last attempt is not the whole story. */
export function stepTimes(step: { duration_s: number | null; attempt_s?: number | null }): string {
  const times = twoTimes(step);
  if (times === null) {
    return formatDuration(step.duration_s);
  }
  const [attempt, total] = times.map(formatDuration);
  return `${attempt} (last attempt) · ${total} since first start`;
}

/** A stored JSON value on one line, cut to `max` characters. */
export function preview(json: string | null | undefined, max = 60): string {
  if (json === null || json === undefined) {
    return '';
  }
  let text = json;
  try {
    text = JSON.stringify(JSON.parse(json));
  } catch {
    // Keep the stored text as it is.
  }
  return text.length > max ? text.slice(0, max - 1) + '…' : text;
}

/** The last path component: "runs/sweep.ipynb" -> "sweep.ipynb". */
export function baseName(path: string | null): string {
  if (!path) {
    return '';
  }
  const parts = path.split(/[\\/]/);
  return parts[parts.length - 1] || path;
}
