"""HTML for a run: header, step table, timeline picture, and the static summary.

Plain HTML and inline SVG, so the same markup serves the live widget (ipywidgets HTML)
and the summary saved in the notebook for viewers without a kernel (nbconvert, GitHub).
"""

from __future__ import annotations

import html
import time

from durable_nb.engine.progress import RunProgress, StepView, assign_lanes

MAX_ROWS = 50

COLORS = {
    "running": "#1f77b4", "retrying": "#ff7f0e", "waiting": "#9467bd", "completed": "#2ca02c",
    "failed": "#d62728", "interrupted": "#8c564b", "cancelled": "#7f7f7f",
    "cancelling": "#7f7f7f", "abandoned": "#bcbd22", "replayed": "#98df8a",
}

FIX_HINT = ("Fix the activity (re-run its cell), then re-run the workflow cell: recorded steps "
            "are replayed and this step runs again with the new code.")


def badge(status: str) -> str:
    color = COLORS.get(status, "#7f7f7f")
    return (f'<span class="dnb-badge dnb-{status}" style="background:{color};color:white;'
            f'border-radius:8px;padding:1px 8px;font-size:90%">{status}</span>')


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def progress_text(p: RunProgress) -> str:
    counts = p.counts()
    done = counts["completed"]
    text = f"{done} / {p.total} steps" if p.total else f"{done} step{'s' * (done != 1)} done"
    extras = [f"{counts['replayed']} replayed"] if counts["replayed"] else []
    extras += [f"{counts[k]} {k}" for k in ("running", "retrying", "failed") if counts[k]]
    return text + (f" ({', '.join(extras)})" if extras else "")


def header_html(p: RunProgress, now: float | None = None) -> str:
    esc = html.escape
    parts = [f"<b>{esc(p.workflow)}</b>", f"<code>{esc(p.run_id)}</code>", badge(p.badge),
             esc(duration_text(p.elapsed(now))), esc(progress_text(p))]
    line = " &nbsp;·&nbsp; ".join(parts)
    if p.forked_from:
        line += f" &nbsp;<i>forked from {esc(p.forked_from)}</i>"
    if p.error and p.status in ("failed", "interrupted", "cancelled"):
        line += f'<div style="color:{COLORS["failed"]}">{esc(p.error)}</div>'
    return f'<div class="dnb-header">{line}</div>'


def _status_cell(step: StepView) -> str:
    status = "replayed" if step.replayed else step.status
    return badge(status)


def steps_table_html(steps: list[StepView], limit: int = MAX_ROWS) -> str:
    """Most recent first, at most ``limit`` rows, and a count of the rows left out."""
    esc = html.escape
    shown = sorted(steps, key=lambda s: s.seq, reverse=True)[:limit]
    rows = []
    for s in shown:
        cells = [str(s.seq), esc(s.name), f"<code>{esc(s.args or '')}</code>",
                 f"<code>{esc(s.result or '')}</code>", str(s.attempts),
                 esc(duration_text(s.duration)), _status_cell(s)]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        if s.status in ("failed", "retrying") and s.error:
            detail = f'<div style="color:{COLORS["failed"]}"><b>{esc(s.error)}</b></div>'
            if s.traceback:
                detail += (f"<details><summary>traceback</summary><pre>{esc(s.traceback)}"
                           "</pre></details>")
            if s.status == "failed":
                detail += f"<div><i>{esc(FIX_HINT)}</i></div>"
            rows.append(f'<tr class="dnb-error"><td></td><td colspan="6">{detail}</td></tr>')
    hidden = len(steps) - len(shown)
    if hidden > 0:
        rows.append(f'<tr><td colspan="7"><i>{hidden} earlier step{"s" * (hidden != 1)} '
                    "not shown</i></td></tr>")
    head = "".join(f"<th>{h}</th>" for h in
                   ("seq", "activity", "args", "result", "attempts", "duration", "status"))
    return (f'<table class="dnb-steps" style="font-size:90%"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def timeline_svg(steps: list[StepView], now: float | None = None, width: int = 640) -> str:
    """Bars over time, one row per concurrent lane (a sweep of 200 steps at a glance)."""
    now = now or time.time()
    timed = [s for s in steps if s.started is not None]
    if not timed:
        return ""
    lanes = assign_lanes(timed, now)
    t0 = min(s.started for s in timed if s.started is not None)
    t1 = max(max((s.ended or now) for s in timed), t0 + 1e-3)
    scale = (width - 2) / (t1 - t0)
    row, gap = 10, 2
    bars = []
    for step, lane in zip(timed, lanes, strict=True):
        assert step.started is not None
        x = 1 + (step.started - t0) * scale
        w = max(1.5, ((step.ended or now) - step.started) * scale)
        color = COLORS["replayed" if step.replayed else step.status]
        title = html.escape(f"step {step.seq} {step.name}: {step.status}"
                            f" {duration_text(step.duration)}".rstrip())
        bars.append(f'<rect x="{x:.1f}" y="{lane * (row + gap)}" width="{w:.1f}" '
                    f'height="{row}" fill="{color}"><title>{title}</title></rect>')
    height = (max(lanes) + 1) * (row + gap)
    return (f'<svg class="dnb-timeline" width="{width}" height="{height}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(bars)}</svg>')


def summary_html(p: RunProgress, now: float | None = None) -> str:
    """Everything at once: what a saved notebook shows where the live widget cannot run."""
    _, steps = p.snapshot()
    return (f'<div class="dnb-run">{header_html(p, now)}{timeline_svg(steps, now)}'
            f"{steps_table_html(steps)}</div>")
