"""The saved run summary, as nbconvert's HTML shows it in Chromium, light and dark: cells
left-aligned and in order, nothing overlapping or clipped, readable badges and text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from playwright.sync_api import Page

from durable_nb.kernel.render import contrast

pytestmark = pytest.mark.browser

CELLS = [
    "%load_ext durable_nb",
    "%%activity\nimport time\ndef fit(cfg, notes):\n    time.sleep(0.02)\n"
    "    return {'lr': cfg['lr'], 'loss': round(1 / cfg['lr'], 3), 'layers': cfg['layers']}",
    "grid = [0.1, 0.03, 0.01, 0.003]",
    "%%workflow saved\n"
    "results = [fit({'lr': lr, 'layers': [256, 128, 64, 32], 'dropout': 0.25,\n"
    "                'optimizer': 'adamw', 'schedule': 'cosine'},\n"
    "               notes='a long free-text note that wider cells must wrap, ' * 3)\n"
    "           for lr in grid]",
]

# Per table row: each cell's box, alignment and whether its content fits, and every badge's
# text and background colours (its own: badges carry an explicit background).
MEASURE = """() => {
  const table = document.querySelector('table.dnb-steps');
  const rows = [...table.querySelectorAll('tbody tr:not(.dnb-error)')].map(tr =>
    [...tr.children].map(td => {
      const r = td.getBoundingClientRect(), s = getComputedStyle(td);
      return {left: r.left, right: r.right, align: s.textAlign,
              fits: td.scrollWidth <= td.clientWidth + 1};
    }));
  const badges = [...document.querySelectorAll('.dnb-badge')].map(b => {
    const s = getComputedStyle(b);
    return {fg: s.color, bg: s.backgroundColor, text: b.textContent};
  });
  let node = table, bg = 'rgba(0, 0, 0, 0)';
  while (node && (bg === 'rgba(0, 0, 0, 0)' || bg === 'transparent')) {
    bg = getComputedStyle(node).backgroundColor; node = node.parentElement;
  }
  const cell = table.querySelector('tbody td');
  const box = table.getBoundingClientRect();
  const area = table.closest('.jp-OutputArea-output, .output_html, body').getBoundingClientRect();
  return {rows, badges, page_bg: bg, text: getComputedStyle(cell).color,
          table_left: box.left - area.left, table_right: box.right, page_width: innerWidth};
}"""


def _hex(css: str) -> str:
    """``rgb(1, 2, 3)`` / ``rgba(1, 2, 3, 1)`` -> ``#010203``."""
    parts = css[css.index("(") + 1: css.index(")")].split(",")[:3]
    return "#" + "".join(f"{int(float(p)):02x}" for p in parts)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> nbformat.NotebookNode:
    """The notebook above, executed by nbclient in a real kernel with its own journal."""
    import os

    from tests.conftest import stop_server

    base = tmp_path_factory.mktemp("saved")
    home = base / "home"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    old = os.environ.get("DURABLE_NB_HOME")
    os.environ["DURABLE_NB_HOME"] = str(home)  # the kernel inherits it
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(base)}}).execute()
    finally:
        if old is None:
            os.environ.pop("DURABLE_NB_HOME", None)
        else:
            os.environ["DURABLE_NB_HOME"] = old
        stop_server(home)
    return nb


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_saved_summary_reads_well_in_nbconvert_html(
        executed: nbformat.NotebookNode, theme: str, page: Page, artifacts: Path):
    html_outputs = [o for o in executed.cells[-1].outputs if "text/html" in o.get("data", {})]
    assert html_outputs, executed.cells[-1].outputs
    assert "saved-1" in html_outputs[-1]["data"]["text/html"]

    exporter = HTMLExporter(template_name="lab", theme=theme)
    body, _ = exporter.from_notebook_node(executed)
    path = artifacts / f"saved-{theme}.html"
    path.write_text(body)
    page.goto(path.as_uri())
    page.locator("table.dnb-steps").wait_for()
    page.locator("table.dnb-steps").screenshot(path=artifacts / f"saved-{theme}.png")
    got: dict[str, Any] = page.evaluate(MEASURE)

    assert len(got["rows"]) == 4
    for row in got["rows"]:
        assert [c["align"] for c in row] == ["left"] * 7, row
        for a, b in zip(row, row[1:], strict=False):
            assert a["right"] <= b["left"] + 0.5, f"cells overlap: {a} {b}"
        assert all(c["fits"] for c in row), f"a cell's text is clipped: {row}"
    assert got["table_left"] < 8, "the table is not left-aligned in its output"
    assert got["table_right"] <= got["page_width"], "the table runs off the page"

    assert {b["text"] for b in got["badges"]} >= {"completed"}
    for b in got["badges"]:
        assert contrast(_hex(b["fg"]), _hex(b["bg"])) >= 4.5, b
    # The table text follows the theme: readable on the page's own background.
    assert contrast(_hex(got["text"]), _hex(got["page_bg"])) >= 4.5, got
