"""The saved summary's markup: readable badges in any theme, left-aligned cells that wrap,
and what durability saved."""

from __future__ import annotations

import re

import pytest

from durable_nb.engine.progress import RunProgress
from durable_nb.kernel import render


@pytest.mark.parametrize("status", sorted(render.COLORS))
def test_every_badge_has_text_contrast_of_at_least_4_5(status: str):
    html = render.badge(status)
    bg = re.search(r"background:(#[0-9a-f]{6})", html)
    fg = re.search(r";color:(#[0-9a-f]{6})", html)
    assert bg and fg, html
    assert render.contrast(fg.group(1), bg.group(1)) >= 4.5, (status, fg.group(1), bg.group(1))


def test_contrast_matches_the_wcag_formula_at_its_ends():
    assert render.contrast("#ffffff", "#000000") == pytest.approx(21.0)
    assert render.contrast("#777777", "#777777") == pytest.approx(1.0)
    assert render.contrast("#ffffff", "#98df8a") < 2  # the old white-on-light-green badge


def _replayed_run() -> RunProgress:
    p = RunProgress("sweep-2", "sweep", started=0.0)
    # Step 0 first started at 0, its kernel died, and the attempt that completed it ran
    # from 100 to 102: the saving is the 2 s attempt, not the 102 s with the dead kernel.
    p.apply({"kind": "step_replayed", "seq": 0, "name": "train", "attempt": 2,
             "args": '{"cfg":{"lr":0.1,"layers":[64,64,64]},"notes":"' + "x" * 200 + '"}',
             "result": "1", "started": 0.0, "attempt_started": 100.0, "ended": 102.0})
    p.apply({"kind": "step_replayed", "seq": 1, "name": "train", "attempt": 1, "args": "{}",
             "result": "2", "started": 102.0, "ended": 103.5})
    p.apply({"kind": "step_started", "seq": 2, "name": "train", "attempt": 1, "args": "{}",
             "ts": 200.0})
    return p


def test_the_summary_says_how_many_steps_replayed_and_the_run_time_they_saved():
    p = _replayed_run()
    assert p.saved() == pytest.approx(3.5)
    assert render.progress_text(p) == "2 steps done (2 replayed, 1 running) — saved 3.5 s"
    fresh = RunProgress("sweep-1", "sweep", started=0.0)
    fresh.apply({"kind": "step_started", "seq": 0, "name": "t", "attempt": 1, "ts": 0.0})
    assert "saved" not in render.progress_text(fresh)


def test_table_cells_are_left_aligned_auto_width_and_long_args_wrap():
    html = render.summary_html(_replayed_run(), now=201.0)
    table = re.search(r'<table class="dnb-steps" style="([^"]*)"', html)
    assert table and "table-layout:auto" in table.group(1)
    cells = re.findall(r"<t[dh] (?:colspan=\"\d+\" )?style=\"([^\"]*)\"", html)
    assert cells and all("text-align:left" in c for c in cells)
    assert re.search(r'<td style="[^"]*white-space:pre-wrap[^"]*"><code>\{&quot;cfg', html)
    # Theme colours where the page defines them, with a fallback where it does not.
    assert "var(--jp-border-color2,#e0e0e0)" in html
    assert "var(--jp-content-font-color1,inherit)" in html
    # Without styles (GitHub strips them) the same rows and headers remain.
    plain = re.sub(r' style="[^"]*"', "", html)
    assert "<th>args</th>" in plain and "replayed</span>" in plain
