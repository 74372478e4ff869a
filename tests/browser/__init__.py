"""Real-browser end-to-end tests: a real ``jupyter lab`` driven by Debian's Chromium.

What runs
---------
Each test gets its own JupyterLab server (``lab_server`` fixture, ~2 s to start) with a
private Jupyter config/data/runtime directory, a private IPython directory and its own
journal home (``DURABLE_NB_HOME``), so kernels started from the page, the durable_nb journal
server they spawn and any Jupyter server extension all use that home. Prebuilt lab extensions
of the venv (``<sys.prefix>/share/jupyter/labextensions``, e.g. jupyterlab_widgets) stay on
the path, so ipywidgets render; the durable_nb sidebar is the build of this checkout
(``durable_nb/labextension``, linked through ``JUPYTER_PATH``) when there is one, else the
venv's. The server runs with ``--LabApp.expose_app_in_browser=True``:
the page has ``window.jupyterapp`` and the helpers drive JupyterLab through its own commands
(what a menu item or shortcut would run), which is far less flaky than keyboard focus.

Chromium is ``/usr/bin/chromium`` (``make browser`` installs it with apt on Debian; set
``DURABLE_NB_CHROMIUM`` to use another binary). Playwright never downloads a browser here.

Writing a test
--------------
::

    from tests.browser.lab import cell_output, open_notebook, run_all, write_notebook

    def test_something(lab_server, page, artifacts):
        write_notebook(lab_server.root_dir / "t.ipynb", ["print(40 + 2)"])
        open_notebook(page, lab_server, "t.ipynb")
        assert run_all(page)                         # True: every cell ran without error
        expect(cell_output(page, 0)).to_contain_text("42")
        page.screenshot(path=artifacts / "t.png")

Fixtures (``conftest.py``): ``lab_server`` (a :class:`tests.browser.lab.LabServer`: ``.url``,
``.token``, ``.root_dir``, ``.journal_home``, ``.log_path``, ``.get(path)`` for the REST API),
``page`` (Playwright sync ``Page``, 1400x900, 60 s default timeout, screenshot
``failure.png`` + ``console.log`` into the artifacts directory when the test fails), and
``artifacts`` (``test-artifacts/<test name>/`` at the repo root, emptied at the start of the
test; the server log is copied there when the test fails).

Helpers (``lab.py``): ``write_notebook``, ``open_notebook``, ``wait_kernel_idle``,
``run_cell``, ``run_all``, ``cell``, ``cell_output``, ``restart_kernel``,
``execute_command``. Wait on real conditions (``expect(...)``, ``wait_kernel_idle``), never on
fixed sleeps. Every test here is marked ``browser``: ``pytest -m "not browser"`` skips them.
"""
