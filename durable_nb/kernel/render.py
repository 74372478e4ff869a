"""HTML for a run: header, step table, timeline picture, and the static summary.

Plain HTML and inline SVG, so the same markup serves the live widget (ipywidgets HTML)
and the summary saved in the notebook for viewers without a kernel (nbconvert, GitHub).
"""

from __future__ import annotations

import html
import time

from durable_nb.engine.progress import RunProgress, StepView, assign_lanes
from durable_nb.journal.text import shortened

MAX_ROWS = 50

# Badge and bar colours. Each badge's text has a contrast of at least 4.5:1 (WCAG AA)
# against its background, whatever the theme: white on the dark ones, dark green on the
# light "replayed" tint (see tests/kernel/test_render.py).
COLORS = {
    "running": "#1f77b4", "retrying": "#b35900", "waiting": "#7b4ea3", "completed": "#217a21",
    "failed": "#c42121", "interrupted": "#8c564b", "cancelled": "#666666",
    "cancelling": "#666666", "abandoned": "#6b6b00", "replayed": "#d7f0cf",
}
TEXT_COLORS = {"replayed": "#1e5c1e"}  # else white
REPLAYED_BAR = "#98df8a"  # a bar needs no text contrast: the lighter green reads as "old"

# Inline styles, so the saved summary reads the same in JupyterLab, Notebook 7, VS Code and
# nbconvert HTML (whose table CSS right-aligns cells in equal-width fixed columns), with
# theme colours where the page has them; GitHub drops them and the plain table still reads.
TABLE_STYLE = ("border-collapse:collapse;table-layout:auto;width:auto;margin:4px 0 0 0;"
               "font-size:90%;color:var(--jp-content-font-color1,inherit)")
CELL_STYLE = ("text-align:left;vertical-align:top;padding:2px 12px 2px 0;border:none;"
              "border-bottom:1px solid var(--jp-border-color2,#e0e0e0);white-space:nowrap")
WRAP_STYLE = CELL_STYLE.replace("white-space:nowrap",
                                "white-space:pre-wrap;overflow-wrap:anywhere;max-width:36em")
ERROR_COLOR = "var(--jp-error-color1,#c42121)"

HEARTBEAT_CHARS = 60
HEARTBEAT_BAR_STYLE = ("display:inline-block;width:80px;height:6px;border-radius:3px;"
                       "background:var(--jp-layout-color3,#e0e0e0);vertical-align:middle;"
                       "overflow:hidden;margin-right:2px")

FIX_HINT = ("Fix the activity (re-run its cell), then re-run the workflow cell: recorded steps "
            "are replayed and this step runs again with the new code.")


def badge(status: str) -> str:
    color = COLORS.get(status, COLORS["cancelled"])
    text = TEXT_COLORS.get(status, "#ffffff")
    return (f'<span class="dnb-badge dnb-{status}" style="background:{color};color:{text};'
            f'border-radius:8px;padding:1px 8px;font-size:90%;white-space:nowrap">'
            f"{status}</span>")


def contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two ``#rrggbb`` colours (1 to 21)."""
    def luminance(color: str) -> float:
        channels = [int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
                   for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b
    light, dark = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


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


def age_text(seconds: float) -> str:
    """How long ago: "4 s ago", "3m 05s ago"."""
    seconds = max(0.0, seconds)
    return f"{int(seconds)} s ago" if seconds < 60 else f"{duration_text(seconds)} ago"


def heartbeat_html(step: StepView, now: float | None = None) -> str:
    """A running step's latest heartbeat: a bar and its count when the details state
    progress (``{"epoch": 3, "of": 10}``), the details, and how long ago it came."""
    if step.status != "running" or step.heartbeat_at is None:
        return ""
    esc = html.escape
    now = now or time.time()
    parts = []
    if step.progress is not None:
        parts.append(f'<span class="dnb-heartbeat-bar" style="{HEARTBEAT_BAR_STYLE}">'
                     f'<span style="display:block;height:100%;background:{COLORS["running"]};'
                     f'width:{step.progress.fraction * 100:.1f}%"></span></span>')
        parts.append(f"<b>{esc(step.progress.text)}</b>")
    if step.heartbeat:
        parts.append(f"<code>{esc(shortened(step.heartbeat, HEARTBEAT_CHARS))}</code>")
    parts.append(esc(age_text(now - step.heartbeat_at)))
    count = f"latest of {step.heartbeats} heartbeat{'s' * (step.heartbeats != 1)}"
    return (f'<div class="dnb-heartbeat" title="{esc(count)}">'
            f'{" ".join(parts)}</div>')


def progress_text(p: RunProgress) -> str:
    counts = p.counts()
    done = counts["completed"]
    text = f"{done} / {p.total} steps" if p.total else f"{done} step{'s' * (done != 1)} done"
    extras = [f"{counts['replayed']} replayed"] if counts["replayed"] else []
    extras += [f"{counts[k]} {k}" for k in ("running", "retrying", "failed") if counts[k]]
    text += f" ({', '.join(extras)})" if extras else ""
    return text + (f" — saved {duration_text(p.saved())}" if counts["replayed"] else "")


def header_html(p: RunProgress, now: float | None = None) -> str:
    esc = html.escape
    parts = [f"<b>{esc(p.workflow)}</b>", f"<code>{esc(p.run_id)}</code>", badge(p.badge),
             esc(duration_text(p.elapsed(now))), esc(progress_text(p))]
    line = " &nbsp;·&nbsp; ".join(parts)
    if p.forked_from:
        line += f" &nbsp;<i>forked from {esc(p.forked_from)}</i>"
    if p.error and p.status in ("failed", "interrupted", "cancelled"):
        line += f'<div style="color:{ERROR_COLOR}">{esc(p.error)}</div>'
    return f'<div class="dnb-header">{line}</div>'


def _status_cell(step: StepView) -> str:
    status = "replayed" if step.replayed else step.status
    return badge(status)


def steps_table_html(steps: list[StepView], limit: int = MAX_ROWS,
                     now: float | None = None) -> str:
    """Most recent first, at most ``limit`` rows, and a count of the rows left out; a
    running step's result cell holds its latest heartbeat."""
    esc = html.escape
    shown = sorted(steps, key=lambda s: s.seq, reverse=True)[:limit]
    rows = []
    for s in shown:
        result = heartbeat_html(s, now) or f"<code>{esc(s.result or '')}</code>"
        cells = [str(s.seq), esc(s.name), f"<code>{esc(s.args or '')}</code>",
                 result, str(s.attempts),
                 esc(duration_text(s.duration)), _status_cell(s)]
        rows.append("<tr>" + "".join(
            f'<td style="{WRAP_STYLE if i in (2, 3) else CELL_STYLE}">{c}</td>'
            for i, c in enumerate(cells)) + "</tr>")
        if s.status in ("failed", "retrying") and s.error:
            detail = f'<div style="color:{ERROR_COLOR}"><b>{esc(s.error)}</b></div>'
            if s.traceback:
                detail += (f"<details><summary>traceback</summary><pre>{esc(s.traceback)}"
                           "</pre></details>")
            if s.status == "failed":
                detail += f"<div><i>{esc(FIX_HINT)}</i></div>"
            rows.append(f'<tr class="dnb-error"><td style="{CELL_STYLE}"></td>'
                        f'<td colspan="6" style="{WRAP_STYLE}">{detail}</td></tr>')
    hidden = len(steps) - len(shown)
    if hidden > 0:
        rows.append(f'<tr><td colspan="7" style="{CELL_STYLE}"><i>{hidden} earlier '
                    f'step{"s" * (hidden != 1)} not shown</i></td></tr>')
    head = "".join(f'<th style="{CELL_STYLE}">{h}</th>' for h in
                   ("seq", "activity", "args", "result", "attempts", "duration", "status"))
    return (f'<table class="dnb-steps" style="{TABLE_STYLE}"><thead><tr>{head}</tr></thead>'
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
        color = REPLAYED_BAR if step.replayed else COLORS.get(step.status, COLORS["cancelled"])
        beat = (f", {step.progress.text}" if step.status == "running"
                and step.progress is not None else "")
        title = html.escape(f"step {step.seq} {step.name}: {step.status}"
                            f" {duration_text(step.duration)}".rstrip() + beat)
        bars.append(f'<rect x="{x:.1f}" y="{lane * (row + gap)}" width="{w:.1f}" '
                    f'height="{row}" fill="{color}"><title>{title}</title></rect>')
    height = (max(lanes) + 1) * (row + gap)
    return (f'<svg class="dnb-timeline" width="{width}" height="{height}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(bars)}</svg>')


def summary_html(p: RunProgress, now: float | None = None) -> str:
    """Everything at once: what a saved notebook shows where the live widget cannot run."""
    _, steps = p.snapshot()
    return (f'<div class="dnb-run">{header_html(p, now)}{timeline_svg(steps, now)}'
            f"{steps_table_html(steps, now=now)}</div>")
